//! Progress reporting. The library reports; the CLI decides whether and how to show it.

/// Receives progress from long operations. Implementations must be cheap: `advance` is called
/// once per batch (megabytes), not per byte.
pub trait Progress: Sync {
    /// Announces a phase and, when known, its total size in bytes.
    fn start(&self, _what: &str, _total: Option<u64>) {}
    fn advance(&self, _bytes: u64) {}
    fn finish(&self) {}
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {}
