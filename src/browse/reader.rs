//! Sequential reading of part of a stream, one data blob at a time, for consumers that need a
//! `Read` (the member index decoder) rather than the parallel windows of [`crate::restore`].

use crate::error::{Error, Result};
use crate::format::BlobKind;
use crate::format::tree::TreeNode;
use crate::id::Id;
use crate::repo::Repo;
use crate::tree::{LeafWalker, NodeSource};
use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};

/// A few recently read blobs, shared by readers that revisit the same bytes (diff reads the
/// blob before a changed region while looking for a record boundary, then again to decode it,
/// and a blob both snapshots share only once for both).
pub struct BlobCache {
    capacity: usize,
    entries: Mutex<VecDeque<(Id, Arc<Vec<u8>>)>>,
}

impl BlobCache {
    pub fn new(capacity: usize) -> BlobCache {
        BlobCache {
            capacity,
            entries: Mutex::new(VecDeque::new()),
        }
    }

    /// The verified bytes of data blob `id`, which the tree says holds `len` bytes.
    pub fn get(&self, repo: &Repo, id: &Id, len: u64) -> Result<Arc<Vec<u8>>> {
        {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, bytes)) = entries.iter().find(|(i, _)| i == id) {
                return Ok(bytes.clone());
            }
        }
        let loc = repo.locate(id)?;
        if loc.kind != BlobKind::Data || u64::from(loc.raw_len) != len {
            return Err(Error::corrupt(
                format!("blob {id}"),
                "index entry does not match the tree (kind or length)",
            ));
        }
        let bytes = Arc::new(repo.packs().read_blob(id, &loc)?);
        if self.capacity > 0 {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if entries.len() >= self.capacity {
                entries.pop_front();
            }
            entries.push_back((*id, bytes.clone()));
        }
        Ok(bytes)
    }
}

/// Tree nodes read through a small cache: readers opened one after another over the same tree
/// (diff opens several) would otherwise read its top nodes again each time.
pub struct NodeCache<'r> {
    repo: &'r Repo,
    capacity: usize,
    entries: Mutex<VecDeque<(Id, TreeNode)>>,
}

impl<'r> NodeCache<'r> {
    pub fn new(repo: &'r Repo, capacity: usize) -> NodeCache<'r> {
        NodeCache {
            repo,
            capacity,
            entries: Mutex::new(VecDeque::new()),
        }
    }
}

impl NodeSource for NodeCache<'_> {
    fn read_node(&self, id: &Id) -> Result<TreeNode> {
        {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, node)) = entries.iter().find(|(i, _)| i == id) {
                return Ok(node.clone());
            }
        }
        let node = self.repo.read_node(id)?;
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity {
            entries.pop_front();
        }
        if self.capacity > 0 {
            entries.push_back((*id, node.clone()));
        }
        Ok(node)
    }
}

/// Where a reader leaves the repository error behind an `io::Error`, so that callers can report
/// damage as damage (exit code 3) rather than as an I/O problem.
pub type FailureSlot = Arc<Mutex<Option<Error>>>;

/// Takes the repository error a reader stored, or wraps the I/O error.
pub fn take_failure(slot: &FailureSlot, io_error: io::Error) -> Error {
    slot.lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .unwrap_or(Error::IoPlain(io_error))
}

/// Bytes `[start, end)` of a stream as a `Read`, reading only the blobs that cover them.
pub struct StreamReader<'r> {
    repo: &'r Repo,
    cache: Arc<BlobCache>,
    walker: LeafWalker<'r>,
    pos: u64,
    end: u64,
    blob: Arc<Vec<u8>>,
    blob_pos: usize,
    blob_end: usize,
    failure: FailureSlot,
}

impl<'r> StreamReader<'r> {
    /// Reads tree nodes from `nodes` (the repository itself, or a [`NodeCache`] over it).
    pub fn new(
        repo: &'r Repo,
        nodes: &'r dyn NodeSource,
        root: &Id,
        start: u64,
        end: u64,
        cache: Arc<BlobCache>,
    ) -> Result<StreamReader<'r>> {
        Ok(StreamReader {
            repo,
            cache,
            walker: LeafWalker::new(nodes, root, start, end)?,
            pos: start,
            end,
            blob: Arc::new(Vec::new()),
            blob_pos: 0,
            blob_end: 0,
            failure: Arc::new(Mutex::new(None)),
        })
    }

    /// The slot where a failed `read` leaves its repository error.
    pub fn failure_slot(&self) -> FailureSlot {
        self.failure.clone()
    }

    fn next_blob(&mut self) -> Result<()> {
        let leaf = self.walker.next_leaf()?.ok_or_else(|| {
            Error::corrupt(
                "stream tree",
                format!("ends before byte {} that its length promises", self.end),
            )
        })?;
        if leaf.offset > self.pos {
            return Err(Error::corrupt("stream tree", "leaves are not contiguous"));
        }
        let blob = self.cache.get(self.repo, &leaf.id, leaf.len)?;
        // Both differences are below the blob's length, which fits in memory.
        self.blob_pos = (self.pos - leaf.offset) as usize;
        self.blob_end = (self.end.min(leaf.offset + leaf.len) - leaf.offset) as usize;
        self.blob = blob;
        Ok(())
    }
}

impl Read for StreamReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.blob_pos < self.blob_end {
                let n = buf.len().min(self.blob_end - self.blob_pos);
                buf[..n].copy_from_slice(&self.blob[self.blob_pos..self.blob_pos + n]);
                self.blob_pos += n;
                self.pos += n as u64;
                return Ok(n);
            }
            if self.pos >= self.end || buf.is_empty() {
                return Ok(0);
            }
            if let Err(e) = self.next_blob() {
                let message = e.to_string();
                *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                return Err(io::Error::other(message));
            }
        }
    }
}

/// Reads `[start, end)` of a stream into memory; for small ranges (headers, sparse maps).
pub fn read_small(repo: &Repo, root: &Id, start: u64, end: u64, limit: u64) -> Result<Vec<u8>> {
    let len = end.saturating_sub(start);
    if len > limit {
        return Err(Error::Invalid(format!(
            "refusing to buffer {len} bytes of metadata (limit {limit})"
        )));
    }
    let mut reader = StreamReader::new(repo, repo, root, start, end, Arc::new(BlobCache::new(0)))?;
    let slot = reader.failure_slot();
    let mut out = Vec::with_capacity(len as usize);
    reader
        .read_to_end(&mut out)
        .map_err(|e| take_failure(&slot, e))?;
    Ok(out)
}
