//! The library's one public error type.
//!
//! Layering rule: every module below `repo` returns `Error` (or a small module error converted
//! into it with context); messages are one line, name the file, blob, pack or snapshot concerned,
//! and never expose a panic. The CLI maps `Error` kinds to exit codes.

use crate::id::Id;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    IoPlain(#[from] std::io::Error),
    #[error("{0} is not a cairn repository (no config file); create one with `cairn repo init`")]
    NotARepository(PathBuf),
    #[error("repository {path} already exists")]
    AlreadyExists { path: PathBuf },
    #[error(
        "repository format version {found} is newer than this cairn supports ({supported}); upgrade cairn"
    )]
    NewerFormat { found: u32, supported: u32 },
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("blob {blob} in pack {pack} is damaged: {detail}")]
    DamagedBlob { blob: Id, pack: Id, detail: String },
    #[error(
        "blob {0} is not in the index (repository damaged or index stale; run `cairn repo check`)"
    )]
    MissingBlob(Id),
    #[error("pack {0} is missing")]
    MissingPack(Id),
    #[error("no snapshot matches {0:?}")]
    NoSuchSnapshot(String),
    #[error("snapshot id prefix {0:?} is ambiguous ({1} snapshots match)")]
    AmbiguousSnapshot(String, usize),
    #[error(
        "stream {name:?} digest mismatch: manifest says {expected}, restored bytes hash to {actual}"
    )]
    DigestMismatch {
        name: String,
        expected: Id,
        actual: Id,
    },
    #[error("index: {0}")]
    Index(#[from] rusqlite::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Locked(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Error {
        Error::Corrupt {
            what: what.into(),
            detail: detail.into(),
        }
    }

    /// True when the error means data in the repository is damaged (as opposed to bad input or
    /// an environment problem).
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            Error::Corrupt { .. }
                | Error::DamagedBlob { .. }
                | Error::MissingBlob(_)
                | Error::MissingPack(_)
                | Error::DigestMismatch { .. }
        )
    }
}

/// Attaches a path to I/O errors.
pub trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
