//! cairn: a content-addressed, deduplicating snapshot repository for Docker workloads.

pub mod docker;
