//! What a registry or an OCI layout must hold for something built: every blob
//! once, every manifest, and the descriptor that names the whole.

use crate::blob::Blob;
use crate::manifest::{Descriptor, ManifestBytes};

/// The parts of a built image, index or artifact, in the order they can be stored.
pub trait Parts {
    /// Every blob (configs, layers), each once.
    fn blobs(&self) -> Vec<&Blob>;
    /// Every manifest, children before the manifests that list them; the last one is what a tag names.
    fn manifests(&self) -> Vec<&ManifestBytes>;
    /// The descriptor of the last manifest, as an index lists it (with the platform of an image).
    fn descriptor(&self) -> Descriptor;
}
