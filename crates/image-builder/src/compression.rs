//! How a layer's tar is compressed into its blob: gzip, zstd or not at all, as one
//! gzip member / zstd frame or split across several.
//!
//! Splitting happens every `split_every` uncompressed bytes (anywhere, even in
//! the middle of a file) and always right before the tar's end-of-archive
//! blocks, so any layer with at least one entry has two members or frames or
//! more. Encoders are configured so the output is the same on every run.

use std::io::{self, Write};

use flate2::GzBuilder;

/// The compression of a layer blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerCompression {
    /// The plain tar.
    None,
    /// One gzip member.
    Gzip,
    /// Several gzip members, concatenated (as `pigz` or `cat a.gz b.gz` produce).
    GzipMultiMember { split_every: u64 },
    /// One zstd frame.
    Zstd,
    /// Several zstd frames, concatenated.
    ZstdMultiFrame { split_every: u64 },
}

impl LayerCompression {
    /// The default split for the multi-member forms.
    pub const DEFAULT_SPLIT_EVERY: u64 = 1 << 20;

    pub fn gzip_multi_member() -> Self {
        LayerCompression::GzipMultiMember { split_every: Self::DEFAULT_SPLIT_EVERY }
    }

    pub fn zstd_multi_frame() -> Self {
        LayerCompression::ZstdMultiFrame { split_every: Self::DEFAULT_SPLIT_EVERY }
    }

    /// The decompression a reader needs, as the media type tells it.
    pub fn compression(self) -> Compression {
        match self {
            LayerCompression::None => Compression::None,
            LayerCompression::Gzip | LayerCompression::GzipMultiMember { .. } => Compression::Gzip,
            LayerCompression::Zstd | LayerCompression::ZstdMultiFrame { .. } => Compression::Zstd,
        }
    }

    fn split_every(self) -> Option<u64> {
        match self {
            LayerCompression::GzipMultiMember { split_every } | LayerCompression::ZstdMultiFrame { split_every } => {
                Some(split_every.max(1))
            }
            _ => None,
        }
    }
}

/// The decompression a layer needs: what its media type says, whatever the split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Compression effort. `Fast` keeps a several-hundred-megabyte test layer to seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CompressionLevel {
    #[default]
    Fast,
    /// What `gzip` and `zstd` do without options (gzip 6, zstd 3).
    Default,
    Best,
}

impl CompressionLevel {
    fn gzip(self) -> flate2::Compression {
        match self {
            CompressionLevel::Fast => flate2::Compression::fast(),
            CompressionLevel::Default => flate2::Compression::new(6),
            CompressionLevel::Best => flate2::Compression::best(),
        }
    }

    fn zstd(self) -> i32 {
        match self {
            CompressionLevel::Fast => 1,
            CompressionLevel::Default => 3,
            CompressionLevel::Best => 19,
        }
    }
}

enum Encoder<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

/// A writer that compresses into `W`, starting a new member or frame when told or when a split is due.
pub(crate) struct Compressor<W: Write> {
    encoder: Option<Encoder<W>>,
    compression: LayerCompression,
    level: CompressionLevel,
    in_member: u64,
}

impl<W: Write> Compressor<W> {
    pub(crate) fn new(inner: W, compression: LayerCompression, level: CompressionLevel) -> io::Result<Self> {
        Ok(Compressor { encoder: Some(start(inner, compression, level)?), compression, level, in_member: 0 })
    }

    /// In the multi-member forms, close the current member (if it holds anything) and start another.
    pub(crate) fn split_here(&mut self) -> io::Result<()> {
        if self.compression.split_every().is_some() && self.in_member > 0 {
            let inner = finish(self.encoder.take())?;
            self.encoder = Some(start(inner, self.compression, self.level)?);
            self.in_member = 0;
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> io::Result<W> {
        finish(self.encoder.take())
    }
}

fn start<W: Write>(inner: W, compression: LayerCompression, level: CompressionLevel) -> io::Result<Encoder<W>> {
    Ok(match compression.compression() {
        Compression::None => Encoder::Plain(inner),
        // GzBuilder writes mtime 0 and OS "unknown": the same header on every machine.
        Compression::Gzip => Encoder::Gzip(GzBuilder::new().write(inner, level.gzip())),
        Compression::Zstd => {
            let mut encoder = zstd::stream::write::Encoder::new(inner, level.zstd())?;
            encoder.include_checksum(true)?;
            Encoder::Zstd(encoder)
        }
    })
}

fn finish<W: Write>(encoder: Option<Encoder<W>>) -> io::Result<W> {
    match encoder {
        Some(Encoder::Plain(w)) => Ok(w),
        Some(Encoder::Gzip(e)) => e.finish(),
        Some(Encoder::Zstd(e)) => e.finish(),
        None => Err(io::Error::other("compressor used after a failed split")),
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut len = buf.len();
        if let Some(split_every) = self.compression.split_every() {
            if self.in_member >= split_every {
                self.split_here()?;
            }
            len = len.min((split_every - self.in_member) as usize);
        }
        let n = match &mut self.encoder {
            Some(Encoder::Plain(w)) => w.write(&buf[..len])?,
            Some(Encoder::Gzip(e)) => e.write(&buf[..len])?,
            Some(Encoder::Zstd(e)) => e.write(&buf[..len])?,
            None => return Err(io::Error::other("compressor used after a failed split")),
        };
        self.in_member += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.encoder {
            Some(Encoder::Plain(w)) => w.flush(),
            Some(Encoder::Gzip(e)) => e.flush(),
            Some(Encoder::Zstd(e)) => e.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn compress(data: &[u8], compression: LayerCompression) -> Vec<u8> {
        let mut c = Compressor::new(Vec::new(), compression, CompressionLevel::Fast).unwrap();
        c.write_all(data).unwrap();
        c.finish().unwrap()
    }

    fn gzip_members(data: &[u8]) -> usize {
        // A member starts with the magic 1f 8b 08; count headers that decode from the start of a member.
        let mut members = 0;
        let mut rest = data;
        while !rest.is_empty() {
            let mut decoder = flate2::bufread::GzDecoder::new(rest);
            std::io::copy(&mut decoder, &mut std::io::sink()).unwrap();
            rest = decoder.into_inner();
            members += 1;
        }
        members
    }

    #[test]
    fn multi_member_gzip_splits_and_decodes_whole() {
        let data: Vec<u8> = (0..10_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let one = compress(&data, LayerCompression::Gzip);
        let many = compress(&data, LayerCompression::GzipMultiMember { split_every: 16_000 });
        assert_eq!(gzip_members(&one), 1);
        assert_eq!(gzip_members(&many), 3);
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&many[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        // A single-member decoder stops after the first member: the trap the prober must avoid.
        let mut first = Vec::new();
        flate2::read::GzDecoder::new(&many[..]).read_to_end(&mut first).unwrap();
        assert_eq!(first.len(), 16_000);
    }

    #[test]
    fn multi_frame_zstd_decodes_whole_and_is_reproducible() {
        let data = vec![42u8; 100_000];
        let many = compress(&data, LayerCompression::ZstdMultiFrame { split_every: 30_000 });
        assert_eq!(zstd::decode_all(&many[..]).unwrap(), data);
        assert_eq!(many, compress(&data, LayerCompression::ZstdMultiFrame { split_every: 30_000 }));
        let one = compress(&data, LayerCompression::Zstd);
        assert!(one.len() < many.len());
        assert_eq!(compress(&data, LayerCompression::None), data);
    }
}
