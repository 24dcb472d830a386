//! The decoder for a layer's compression: gzip (every member, as `gzip -d` and the Go
//! runtimes read it), zstd (every frame; windows up to libzstd's default 128 MiB), or none.

use std::io::{self, BufReader, Read};

use super::Compression;

/// Input buffer of the decoders. At most 64 KiB: a larger allocation lands in its own
/// mmap, 16 bytes past a page boundary, where copying into it is several times slower.
const INPUT_BUFFER: usize = 64 * 1024;

/// A reader of the decompressed stream. An uncompressed stream is read unbuffered: the
/// tar walk's own 32 KiB reads then copy each byte once.
pub(super) fn decoder<'a, R: Read + 'a>(compression: Compression, compressed: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(compressed),
        Compression::Gzip => {
            let input = BufReader::with_capacity(INPUT_BUFFER, compressed);
            Box::new(flate2::bufread::MultiGzDecoder::new(input))
        }
        Compression::Zstd => {
            let input = BufReader::with_capacity(INPUT_BUFFER, compressed);
            Box::new(zstd::stream::read::Decoder::with_buffer(input)?)
        }
    })
}
