//! Discovery: the probes that find their images instead of naming one.
//! `image:` with `tags:` pulls the newest matching tags of a repository,
//! `catalog:` a rotating sample of the registry's repositories, and
//! `kubernetes:` the images a cluster's workloads use. Each yields a bounded
//! set of image references; each is then pulled and verified like a listed one.

pub mod catalog;
pub mod kubernetes;
pub mod order;
pub mod tags;
