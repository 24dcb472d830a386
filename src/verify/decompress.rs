//! The decoder for a layer's compression: gzip (every member, as `gzip -d` and the Go
//! runtimes read it), zstd (every frame; windows up to libzstd's default 128 MiB), or none.

use std::io::{self, BufRead, BufReader, Read};

use super::Compression;

/// Input buffer for a source that has none of its own. At most 64 KiB: a larger
/// allocation lands in its own mmap, 16 bytes past a page boundary, where copying into
/// it is several times slower.
const INPUT_BUFFER: usize = 64 * 1024;

/// A reader of the decompressed stream. The decoders inflate straight out of the
/// source's buffers (a download's chunks, as they arrived). An uncompressed stream is
/// read unbuffered: the tar walk's own 32 KiB reads then copy each byte once.
pub fn decoder<'a, R: BufRead + Send + 'a>(
    compression: Compression,
    compressed: R,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(compressed),
        Compression::Gzip => Box::new(super::igzip::IgzipDecoder::new(compressed)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(compressed)?),
    })
}

/// Decompress `compressed` with the decoder a layer check uses and count the
/// bytes, nothing else: the inflate limit the benchmark compares against.
pub fn decompressed_len<R: Read + Send>(compression: Compression, compressed: R) -> io::Result<u64> {
    let mut decoder = decoder(compression, BufReader::with_capacity(INPUT_BUFFER, compressed))?;
    let mut scratch = vec![0u8; INPUT_BUFFER];
    let mut total = 0u64;
    loop {
        match decoder.read(&mut scratch) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
