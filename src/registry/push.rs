//! Pushing blobs and manifests through the registry upload API.
