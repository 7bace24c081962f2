//! cairn: a content-addressed, deduplicating snapshot repository for Docker workloads.
//!
//! Layers, top to bottom (dependencies point down only):
//! - operations: [`ingest`] (snapshot), [`restore`], [`rebuild`], [`browse`] (ls, cat, filtered
//!   extract), [`diff`], [`accounting`] (space per series)
//! - [`repo`]: opening a repository, resolving snapshots, reading blobs
//! - storage: [`pack`], [`index`] (SQLite), [`store`] (layout, atomic writes), [`blobs`]
//! - primitives: [`format`] (on-disk encodings, no I/O), [`chunker`], [`tree`], [`id`]

pub mod accounting;
pub mod blobs;
pub mod browse;
pub mod check;
pub mod chunker;
pub mod compress;
pub mod diff;
pub mod docker;
pub mod error;
pub mod forget;
pub mod format;
pub mod gc;
pub mod id;
pub mod index;
pub mod ingest;
pub mod lock;
pub mod mark;
pub mod members;
pub mod members_ingest;
pub mod pack;
pub mod pack_scan;
pub mod pages;
pub mod pipe;
pub mod progress;
pub mod rebuild;
pub mod repair;
pub mod repo;
pub mod restore;
pub mod segment_hash;
pub mod source;
pub mod store;
pub mod tarscan;
pub mod time;
pub mod tree;
pub mod unpack;

pub use error::{Error, Result};
pub use id::Id;
pub use ingest::{IngestStats, SnapshotOutcome, SnapshotSpec, StreamInput};
pub use repo::{InitOptions, Repo};
