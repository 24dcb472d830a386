//! Writes OCI and Docker images in code: tar layers, compression, config, manifests, indexes.
