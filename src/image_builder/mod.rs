//! Writes OCI and Docker images in code: tar layers, compression, config,
//! manifests, indexes, attestations and artifacts — for the integration tests,
//! the demo and the benchmark. Not used by the prober itself.
//!
//! Everything is deterministic (same input, same digests) and streamed: a layer
//! of several hundred megabytes goes from a content generator through tar and a
//! compressor into a blob file without being held in memory. Push the result
//! with [`crate::registry::push::push_image`].
//!
//! ```no_run
//! use pullprobe::image_builder::{Format, GeneratedContent, ImageBuilder, LayerBuilder, LayerCompression};
//! # fn main() -> std::io::Result<()> {
//! let dir = std::path::Path::new("/tmp/images");
//! let layer = LayerBuilder::new()
//!     .file("etc/app.conf", "key = value\n")
//!     .file("srv/big.bin", GeneratedContent::random(1, 300 << 20))
//!     .write(dir, LayerCompression::Gzip)?;
//! let image = ImageBuilder::new(Format::Oci).layer(layer).build(dir)?;
//! println!("{}", image.digest());
//! # Ok(())
//! # }
//! ```

mod artifact;
mod blob;
mod compression;
mod content;
mod image;
mod index;
mod layer;
mod manifest;

pub use artifact::{
    Artifact, ArtifactBlob, ArtifactBuilder, ArtifactData, IN_TOTO_PREDICATE_TYPE_ANNOTATION, attestation,
    in_toto_statement,
};
pub use blob::{Blob, SMALL_BLOB_BYTES, blob_path, write_blob};
pub use compression::{CompressionLevel, LayerCompression};
pub use content::{ContentKind, ContentReader, GeneratedContent};
pub use image::{DEFAULT_CREATED, Image, ImageBuilder};
pub use index::{ATTESTATION_MANIFEST, Index, IndexBuilder, REFERENCE_DIGEST_ANNOTATION, REFERENCE_TYPE_ANNOTATION};
pub use layer::{DEFAULT_MTIME, Entry, EntryKind, FileContent, Layer, LayerBuilder};
pub use manifest::{Descriptor, Format, ImageConfig, ImageManifest, IndexManifest, ManifestBytes, Platform, RootFs};
