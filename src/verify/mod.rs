//! Streaming verification of layers: digest, size, decompression, diff_id and tar walk. Knows nothing about HTTP.
