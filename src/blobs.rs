//! Reading blobs from packs, with a small cache of open pack files.

use crate::error::{Error, Result};
use crate::format::tree::TreeNode;
use crate::id::Id;
use crate::index::BlobLocation;
use crate::pack::unpack_one;
use crate::store::Layout;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const MAX_OPEN_PACKS: usize = 128;

/// Open pack files shared between restore threads.
pub struct PackFiles {
    layout: Layout,
    open: Mutex<HashMap<Id, Arc<File>>>,
    bytes_read: AtomicU64,
}

impl PackFiles {
    pub fn new(layout: Layout) -> PackFiles {
        PackFiles {
            layout,
            open: Mutex::new(HashMap::new()),
            bytes_read: AtomicU64::new(0),
        }
    }

    pub fn get(&self, pack: &Id) -> Result<Arc<File>> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = open.get(pack) {
            return Ok(f.clone());
        }
        let path = self.layout.pack(pack);
        let file = match File::open(&path) {
            Ok(f) => Arc::new(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::MissingPack(*pack));
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        if open.len() >= MAX_OPEN_PACKS {
            open.clear();
        }
        open.insert(*pack, file.clone());
        Ok(file)
    }

    /// Reads `len` bytes at `offset` of a pack; a short read means the pack is damaged.
    pub fn read_at(&self, pack: &Id, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_into(pack, offset, len, &mut buf)?;
        Ok(buf)
    }

    /// `read_at` into a buffer the caller reuses: `buf` becomes exactly the `len` bytes read,
    /// and keeps its capacity for the next read.
    pub fn read_into(&self, pack: &Id, offset: u64, len: usize, buf: &mut Vec<u8>) -> Result<()> {
        let file = self.get(pack)?;
        // Only growth is zero-filled; what is kept is overwritten by the read or it fails.
        buf.resize(len, 0);
        file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::corrupt(format!("pack {pack}"), "truncated")
            } else {
                Error::io(self.layout.pack(pack), e)
            }
        })?;
        self.bytes_read.fetch_add(len as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Total bytes read from packs so far (lets tests show that partial reads stay partial).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// Reads, decompresses and verifies one blob.
    pub fn read_blob(&self, id: &Id, loc: &BlobLocation) -> Result<Vec<u8>> {
        let stored = self.read_at(&loc.pack, loc.offset, loc.stored_len as usize)?;
        unpack_one(
            &stored,
            loc.compression,
            loc.raw_len,
            loc.frame,
            id,
            &loc.pack,
        )
    }

    pub fn read_node(&self, id: &Id, loc: &BlobLocation) -> Result<TreeNode> {
        let bytes = self.read_blob(id, loc)?;
        TreeNode::decode(&bytes).map_err(|e| Error::corrupt(format!("tree node {id}"), e.0))
    }
}
