//! The order of discovered tags: which ones are "the newest".
