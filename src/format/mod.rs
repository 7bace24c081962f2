//! On-disk structures: encoding and decoding only, no I/O.
//!
//! Every decoder here reads bytes that may be damaged or hostile; each validates lengths and
//! bounds and returns `FormatError`, never panics. `format-spec/` documents each layout.

pub mod config;
pub mod manifest;
pub mod pack;
pub mod tree;
pub mod varint;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct FormatError(pub String);

impl FormatError {
    pub fn new(msg: impl Into<String>) -> FormatError {
        FormatError(msg.into())
    }
}

/// What a blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BlobKind {
    /// Bytes of a stream.
    Data = 0,
    /// A tree node: an ordered list of child references.
    Tree = 1,
}

impl BlobKind {
    pub fn from_u8(v: u8) -> Result<BlobKind, FormatError> {
        match v {
            0 => Ok(BlobKind::Data),
            1 => Ok(BlobKind::Tree),
            other => Err(FormatError(format!("unknown blob kind {other}"))),
        }
    }
}

/// How a blob's bytes are stored in its pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Compression {
    /// Stored as is (used when compression does not shrink the blob).
    None = 0,
    /// One zstd frame.
    Zstd = 1,
}

impl Compression {
    pub fn from_u8(v: u8) -> Result<Compression, FormatError> {
        match v {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Zstd),
            other => Err(FormatError(format!("unknown compression {other}"))),
        }
    }
}
