//! Snapshot ingest: read → chunk → hash → dedup → compress → pack → index → manifest.
//!
//! A reader thread fills buffers and cuts chunks (sequential by nature); the calling thread
//! hashes each batch's chunks and the whole stream in parallel (rayon), looks the chunk ids up,
//! compresses only the new ones in parallel, and appends them to the open pack. Reading the next
//! batch overlaps with processing the current one. Memory is bounded by a few batch buffers plus
//! one open pack's table.

use crate::chunker::{Batch, BatchReader, Chunker};
use crate::error::{Error, IoContext, Result};
use crate::format::manifest::{self, AddedStats, Manifest, MembersRef, StreamEntry};
use crate::format::tree::{ChildRef, TreeNode};
use crate::format::{BlobKind, Compression};
use crate::id::Id;
use crate::members_ingest::{MemberRecorder, Recorded};
use crate::pack::PackWriter;
use crate::progress::Progress;
use crate::repo::Repo;
use crate::store;
use crate::tree::{NodeSink, TreeBuilder};
use rayon::prelude::*;
use std::collections::HashSet;
use std::io::Read;

/// Bytes per batch handed from the reader thread to the hashing/compression stage.
const BATCH_SIZE: usize = 8 << 20;
/// Batches in flight between the reader and the processing stage.
const BATCHES_IN_FLIGHT: usize = 2;

/// One stream to store in a snapshot.
pub struct StreamInput<'a> {
    pub name: String,
    /// "tar" (parse for a member index), "data" or "json".
    pub role: String,
    pub reader: Box<dyn Read + Send + 'a>,
}

/// What a snapshot is of.
#[derive(Clone, Debug, Default)]
pub struct SnapshotSpec {
    pub kind: String,
    pub source: String,
    pub tags: Vec<String>,
    pub note: Option<String>,
    pub meta: serde_json::Value,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct IngestStats {
    /// Logical bytes read.
    pub bytes: u64,
    pub chunks: u64,
    pub new_chunks: u64,
    /// Raw bytes of data chunks the repository did not have.
    pub new_bytes: u64,
    /// Bytes added to pack files (blobs, headers and tables).
    pub stored_bytes: u64,
}

pub struct SnapshotOutcome {
    pub id: Id,
    pub manifest: Manifest,
    pub stats: IngestStats,
}

/// Writes blobs into packs for one writing session, deduplicating against the index and the
/// blobs of this session's packs that are not yet indexed.
pub(crate) struct BlobWriter<'r> {
    repo: &'r Repo,
    data: Option<PackWriter>,
    tree: Option<PackWriter>,
    /// Blobs in this session's open packs (not yet in the index).
    pending: HashSet<Id>,
    pub(crate) stats: IngestStats,
}

impl<'r> BlobWriter<'r> {
    pub(crate) fn new(repo: &'r Repo) -> BlobWriter<'r> {
        BlobWriter {
            repo,
            data: None,
            tree: None,
            pending: HashSet::new(),
            stats: IngestStats::default(),
        }
    }

    pub(crate) fn known(&self, id: &Id) -> Result<bool> {
        Ok(self.pending.contains(id) || self.repo.index.contains(id)?)
    }

    /// Appends a blob whose stored form is already computed.
    pub(crate) fn put(
        &mut self,
        id: Id,
        kind: BlobKind,
        raw_len: usize,
        stored: Option<&[u8]>,
        raw: &[u8],
    ) -> Result<()> {
        let raw_len =
            u32::try_from(raw_len).map_err(|_| Error::Invalid("blob larger than 4 GiB".into()))?;
        let slot = match kind {
            BlobKind::Data => &mut self.data,
            BlobKind::Tree => &mut self.tree,
        };
        if slot.is_none() {
            *slot = Some(PackWriter::new(&self.repo.layout)?);
        }
        let Some(writer) = slot.as_mut() else {
            return Err(Error::Invalid("no open pack".into()));
        };
        let before = writer.len();
        match stored {
            Some(c) => writer.add(id, kind, Compression::Zstd, raw_len, c)?,
            None => writer.add(id, kind, Compression::None, raw_len, raw)?,
        }
        self.stats.stored_bytes += writer.len() - before;
        self.pending.insert(id);
        if writer.len() >= self.repo.config.pack_size {
            self.flush_kind(kind)?;
        }
        Ok(())
    }

    /// Makes the open pack of `kind` durable and indexes it.
    fn flush_kind(&mut self, kind: BlobKind) -> Result<()> {
        let slot = match kind {
            BlobKind::Data => &mut self.data,
            BlobKind::Tree => &mut self.tree,
        };
        let Some(writer) = slot.take() else {
            return Ok(());
        };
        let before = writer.len();
        let done = writer.finish(&self.repo.layout)?;
        self.stats.stored_bytes += done.size - before;
        // The pack is durable: now its blobs may be indexed (packs before index).
        self.repo.index.add_pack(&done.id, done.size, &done.entries)?;
        for e in &done.entries {
            self.pending.remove(&e.id);
        }
        Ok(())
    }

    pub(crate) fn flush(&mut self) -> Result<()> {
        self.flush_kind(BlobKind::Data)?;
        self.flush_kind(BlobKind::Tree)
    }
}

impl NodeSink for BlobWriter<'_> {
    fn store_node(&mut self, node: &TreeNode) -> Result<Id> {
        let bytes = node.encode();
        let id = Id::of(&bytes);
        if !self.known(&id)? {
            let level = self.repo.config.compression.level;
            let stored = crate::compress::compress(&bytes, level)
                .map_err(|e| Error::Invalid(format!("zstd: {e}")))?;
            self.put(id, BlobKind::Tree, bytes.len(), stored.as_deref(), &bytes)?;
        }
        Ok(id)
    }
}

/// A snapshot being written. Streams are added one by one; `commit` writes the manifest.
/// Dropping a session without committing leaves at most unreferenced packs for gc.
pub struct SnapshotSession<'r> {
    repo: &'r Repo,
    blobs: BlobWriter<'r>,
    streams: Vec<StreamEntry>,
    progress: &'r dyn Progress,
}

impl Repo {
    pub fn begin_snapshot<'r>(&'r self, progress: &'r dyn Progress) -> Result<SnapshotSession<'r>> {
        Ok(SnapshotSession {
            repo: self,
            blobs: BlobWriter::new(self),
            streams: Vec::new(),
            progress,
        })
    }

    /// Convenience: one snapshot of the given streams.
    pub fn snapshot(
        &self,
        spec: SnapshotSpec,
        inputs: Vec<StreamInput<'_>>,
        progress: &dyn Progress,
    ) -> Result<SnapshotOutcome> {
        let mut session = self.begin_snapshot(progress)?;
        for input in inputs {
            session.add_stream(input)?;
        }
        session.commit(spec)
    }
}

/// The result of storing one byte stream.
pub(crate) struct StoredStream {
    pub root: ChildRef,
    pub digest: Id,
}

impl<'r> SnapshotSession<'r> {
    pub fn add_stream(&mut self, input: StreamInput<'_>) -> Result<&StreamEntry> {
        if self.streams.iter().any(|s| s.name == input.name) {
            return Err(Error::Invalid(format!("duplicate stream name {:?}", input.name)));
        }
        let mut role = input.role;
        let mut recorder = if role == "tar" {
            Some(MemberRecorder::new(&self.repo.layout)?)
        } else {
            None
        };
        let stored = {
            let mut observe = recorder.as_mut().map(|r| move |b: &[u8]| r.observe(b));
            store_stream(
                &mut self.blobs,
                self.repo,
                input.reader,
                observe.as_mut().map(|o| o as &mut (dyn FnMut(&[u8]) + Send)),
                self.progress,
            )?
        };
        let mut members_ref: Option<MembersRef> = None;
        if let Some(rec) = recorder {
            // The member index is stored like any stream, but the counters describe what was
            // read: only the bytes it adds to packs are counted.
            let before = self.blobs.stats;
            let blobs = &mut self.blobs;
            let repo = self.repo;
            let recorded = rec.finish(|reader| {
                let s = store_stream(blobs, repo, reader, None, &crate::progress::Silent)?;
                Ok((s.root.id, s.root.len))
            })?;
            self.blobs.stats = IngestStats {
                stored_bytes: self.blobs.stats.stored_bytes,
                ..before
            };
            match recorded {
                Recorded::Index(m) => members_ref = Some(m),
                // Stored bit-exact all the same; it just cannot be listed or extracted.
                Recorded::NotTar => role = "data".into(),
            }
        }
        self.streams.push(StreamEntry {
            name: input.name,
            role,
            root: stored.root.id,
            length: stored.root.len,
            digest: stored.digest,
            members: members_ref,
        });
        Ok(&self.streams[self.streams.len() - 1])
    }

    /// Makes everything durable in order — packs, index rows, then the manifest — and indexes
    /// the snapshot. Only after this returns does the snapshot exist.
    pub fn commit(mut self, spec: SnapshotSpec) -> Result<SnapshotOutcome> {
        self.blobs.flush()?;
        let stats = self.blobs.stats;
        let m = Manifest {
            format: manifest::FORMAT_NAME.into(),
            version: manifest::VERSION,
            time: crate::time::now_rfc3339(),
            kind: spec.kind,
            source: spec.source,
            host: hostname(),
            tags: spec.tags,
            note: spec.note,
            meta: spec.meta,
            streams: self.streams,
            added: AddedStats {
                chunks: stats.chunks,
                new_chunks: stats.new_chunks,
                new_bytes: stats.new_bytes,
                stored_bytes: stats.stored_bytes,
            },
        };
        let bytes = manifest::encode(&m);
        let id = Id::of(&bytes);
        let layout = &self.repo.layout;
        store::write_atomic(layout, &layout.snapshot(&id), &bytes)?;
        self.repo
            .index
            .add_snapshot(&crate::repo::snapshot_row(id, &m, bytes)?)?;
        Ok(SnapshotOutcome {
            id,
            manifest: m,
            stats,
        })
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Stores one stream and returns its tree root and digest. `observe` sees every byte in order
/// (on the reader thread), e.g. to build a tar member index.
pub(crate) fn store_stream(
    blobs: &mut BlobWriter<'_>,
    repo: &Repo,
    reader: Box<dyn Read + Send + '_>,
    mut observe: Option<&mut (dyn FnMut(&[u8]) + Send + '_)>,
    progress: &dyn Progress,
) -> Result<StoredStream> {
    let chunker = Chunker::new(&repo.config.chunker);
    let level = repo.config.compression.level;
    let mut tree = TreeBuilder::new();
    let mut digest = blake3::Hasher::new();
    let (batch_tx, batch_rx) = crossbeam_channel::bounded::<std::io::Result<Batch>>(BATCHES_IN_FLIGHT);
    let (recycle_tx, recycle_rx) = crossbeam_channel::bounded::<Vec<u8>>(BATCHES_IN_FLIGHT + 1);

    std::thread::scope(|scope| -> Result<()> {
        let reader_thread = scope.spawn(move || {
            let mut batches = BatchReader::new(reader, chunker, BATCH_SIZE);
            loop {
                let recycled = recycle_rx.try_recv().ok();
                match batches.next_batch(recycled) {
                    Ok(Some(batch)) => {
                        if let Some(obs) = observe.as_mut() {
                            obs(&batch.data);
                        }
                        if batch_tx.send(Ok(batch)).is_err() {
                            return; // the consumer failed and stopped listening
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let _ = batch_tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        let result = (|| -> Result<()> {
            for batch in batch_rx.iter() {
                let batch = batch.map_err(|e| Error::Invalid(format!("reading input: {e}")))?;
                process_batch(&batch, blobs, &mut tree, &mut digest, level)?;
                progress.advance(batch.data.len() as u64);
                let _ = recycle_tx.try_send(batch.data);
            }
            Ok(())
        })();
        // On failure, stop the reader: dropping the receiver makes its next send fail.
        drop(batch_rx);
        if reader_thread.join().is_err() {
            return Err(Error::Invalid("reader thread panicked".into()));
        }
        result
    })?;
    let root = tree.finish(blobs)?;
    Ok(StoredStream {
        root,
        digest: Id::from(digest.finalize()),
    })
}

fn process_batch(
    batch: &Batch,
    blobs: &mut BlobWriter<'_>,
    tree: &mut TreeBuilder,
    digest: &mut blake3::Hasher,
    level: i32,
) -> Result<()> {
    let chunks: Vec<&[u8]> = batch.chunks().collect();
    let (ids, ()) = rayon::join(
        || chunks.par_iter().map(|c| Id::of(c)).collect::<Vec<Id>>(),
        || {
            digest.update(&batch.data);
        },
    );
    // Decide which chunks are new, once per distinct id.
    let mut new_in_batch: HashSet<Id> = HashSet::new();
    let mut new_idx: Vec<usize> = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        if !new_in_batch.contains(id) && !blobs.known(id)? {
            new_in_batch.insert(*id);
            new_idx.push(i);
        }
    }
    let compressed: Vec<std::io::Result<Option<Vec<u8>>>> = new_idx
        .par_iter()
        .map(|&i| crate::compress::compress(chunks[i], level))
        .collect();
    for (&i, stored) in new_idx.iter().zip(compressed) {
        let stored = stored.map_err(|e| Error::Invalid(format!("zstd: {e}")))?;
        blobs.put(ids[i], BlobKind::Data, chunks[i].len(), stored.as_deref(), chunks[i])?;
        blobs.stats.new_chunks += 1;
        blobs.stats.new_bytes += chunks[i].len() as u64;
    }
    for (id, chunk) in ids.iter().zip(&chunks) {
        tree.push(
            ChildRef {
                id: *id,
                len: chunk.len() as u64,
            },
            blobs,
        )?;
    }
    blobs.stats.chunks += chunks.len() as u64;
    blobs.stats.bytes += batch.data.len() as u64;
    Ok(())
}

/// Opens a file for `snapshot tar FILE`, with a clear error.
pub fn open_input(path: &std::path::Path) -> Result<std::fs::File> {
    std::fs::File::open(path).at(path)
}
