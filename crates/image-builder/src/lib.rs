//! Writes OCI and Docker images in code: tar layers, compression, config,
//! manifests, indexes, attestations, artifacts and OCI image layouts — for
//! pullprobe's integration tests, its demo and its benchmarks. The prober
//! never calls it, and it depends on nothing of the prober: it has its own
//! [`Digest`], [`Platform`] and [`media_types`], so test data is never written
//! by the code it checks.
//!
//! Everything is deterministic (same input, same digests) and streamed: a layer
//! of several hundred megabytes goes from a content generator through tar and a
//! compressor into a blob file without being held in memory. What was built
//! lists its [`Parts`]: push them through a registry's upload API, or write
//! them into a [`Layout`] for skopeo.
//!
//! ```no_run
//! use image_builder::{Format, GeneratedContent, ImageBuilder, LayerBuilder, LayerCompression, Layout};
//! # fn main() -> std::io::Result<()> {
//! let dir = std::path::Path::new("/tmp/images");
//! let layer = LayerBuilder::new()
//!     .file("etc/app.conf", "key = value\n")
//!     .file("srv/big.bin", GeneratedContent::random(1, 300 << 20))
//!     .write(dir, LayerCompression::Gzip)?;
//! let image = ImageBuilder::new(Format::Oci).layer(layer).build(dir)?;
//! let mut layout = Layout::new(dir)?;
//! layout.add(&image, "latest")?;
//! layout.finish()?;
//! println!("{}", image.digest());
//! # Ok(())
//! # }
//! ```

mod artifact;
mod blob;
mod compression;
mod content;
mod digest;
mod image;
mod index;
mod layer;
mod layout;
mod manifest;
pub mod media_types;
mod parts;
mod platform;

pub use artifact::{
    Artifact, ArtifactBlob, ArtifactBuilder, ArtifactData, IN_TOTO_PREDICATE_TYPE_ANNOTATION, attestation,
    in_toto_statement,
};
pub use blob::{Blob, SMALL_BLOB_BYTES, blob_path, write_blob};
pub use compression::{Compression, CompressionLevel, LayerCompression};
pub use content::{ContentKind, ContentReader, GeneratedContent};
pub use digest::{Digest, DigestHasher, DigestParseError};
pub use image::{DEFAULT_CREATED, Image, ImageBuilder};
pub use index::{ATTESTATION_MANIFEST, Index, IndexBuilder, REFERENCE_DIGEST_ANNOTATION, REFERENCE_TYPE_ANNOTATION};
pub use layer::{DEFAULT_MTIME, Entry, EntryKind, FileContent, Layer, LayerBuilder};
pub use layout::{Layout, REF_NAME_ANNOTATION};
pub use manifest::{Descriptor, Format, ImageConfig, ImageManifest, IndexManifest, ManifestBytes, RootFs};
pub use parts::Parts;
pub use platform::Platform;
