//! Image references: `host[:port]/repo[:tag][@digest]`, with Docker Hub normalisation.
