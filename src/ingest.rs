//! Snapshot ingest: read → chunk → hash → dedup → compress → pack → index → manifest.
//!
//! A pipeline of 8 MiB batches: a reader thread fills buffers (and runs the tar scan), a cutter
//! thread cuts them into chunks (FastCDC, sequential by nature), a hashing thread hashes each
//! batch's chunks and the whole stream in parallel (rayon), and the calling thread looks the
//! chunk ids up, has only the new ones compressed in parallel, and appends them to the open
//! pack; a batch is compressed while the one before it is packed. All stages overlap. Memory is
//! bounded by a few batch buffers plus one open pack's table.

use crate::chunker::{Batch, BatchCutter, Block, BlockReader, Chunker};
use crate::error::{Error, IoContext, Result};
use crate::format::manifest::{self, AddedStats, Manifest, MembersRef, StreamEntry};
use crate::format::tree::{ChildRef, TreeNode};
use crate::format::{BlobKind, Compression};
use crate::id::Id;
use crate::members_ingest::{MemberRecorder, Recorded};
use crate::pack::{FinishedPack, PackWriter, SealedPack};
use crate::progress::Progress;
use crate::repo::Repo;
use crate::store;
use crate::tree::{NodeSink, TreeBuilder};
use rayon::prelude::*;
use std::collections::{HashSet, VecDeque};
use std::io::Read;
use std::sync::Arc;

/// Bytes per batch handed from the reader thread to the hashing/compression stage.
const BATCH_SIZE: usize = 8 << 20;
/// Batches in flight between the cutter and the processing stage.
const BATCHES_IN_FLIGHT: usize = 2;
/// Batches handed to the pool for compression while an earlier one is packed. More than one,
/// so that the pool still has work queued while the packing thread writes and indexes.
const COMPRESS_AHEAD: usize = 2;
/// Batch buffers in circulation: one being read, one waiting for the cutter, one being cut,
/// one waiting for the hasher, one being hashed, `BATCHES_IN_FLIGHT` waiting,
/// `COMPRESS_AHEAD` being compressed and one being packed. Beyond that the reader allocates
/// (and drops what comes back when the pool is full), so memory stays bounded either way.
const BUFFERS: usize = BATCHES_IN_FLIGHT + COMPRESS_AHEAD + 6;

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
    /// Logical bytes cut at page boundaries (paged files: databases, checkpoint memory).
    pub page_aligned_bytes: u64,
    /// Of `stored_bytes`, those that are not stream data: tree nodes, pack headers and tables.
    pub metadata_bytes: u64,
}

/// New chunks that content-defined chunking did not make (page-aligned blocks; chunks shorter
/// than the chunker's minimum: groups of small tar members, file and stream tails) no larger than
/// this are compressed together with such chunks after them in one shared frame: on their own,
/// 4–16 KiB chunks lose much of their compression (figures in format-spec/measurements.md).
/// Content-defined chunks are compressed alone, so reading a large file never decompresses its
/// neighbours.
const FRAME_BLOB_MAX: usize = 16 << 10;
/// A shared frame is closed once it holds this many raw bytes: as much context as one average
/// content-defined chunk has, and a bound on what reading one small blob must decompress.
const FRAME_TARGET: usize = 64 << 10;

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
    finisher: Finisher,
    /// Blobs in this session's open packs (not yet in the index), or claimed for them.
    pending: HashSet<Id>,
    pub(crate) stats: IngestStats,
}

impl<'r> BlobWriter<'r> {
    pub(crate) fn new(repo: &'r Repo) -> BlobWriter<'r> {
        BlobWriter {
            repo,
            data: None,
            tree: None,
            finisher: Finisher::new(repo.layout.clone()),
            pending: HashSet::new(),
            stats: IngestStats::default(),
        }
    }

    pub(crate) fn known(&self, id: &Id) -> Result<bool> {
        Ok(self.pending.contains(id) || self.repo.index.contains(id)?)
    }

    /// Counts `id` as known from now on, ahead of the `put` that stores it in this session.
    fn claim(&mut self, id: Id) {
        self.pending.insert(id);
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
        let writer = self.open_pack(kind)?;
        let before = writer.len();
        match stored {
            Some(c) => writer.add(id, kind, Compression::Zstd, raw_len, c)?,
            None => writer.add(id, kind, Compression::None, raw_len, raw)?,
        }
        let added = writer.len() - before;
        self.count_added(kind, added);
        self.pending.insert(id);
        self.close_if_full(kind)
    }

    /// Appends blobs that share one compressed frame (`members`: ids and raw lengths, in the
    /// order of their bytes in the frame).
    pub(crate) fn put_frame(
        &mut self,
        kind: BlobKind,
        members: &[(Id, u32)],
        stored: &[u8],
    ) -> Result<()> {
        let writer = self.open_pack(kind)?;
        let before = writer.len();
        writer.add_frame(kind, members, stored)?;
        let added = writer.len() - before;
        self.count_added(kind, added);
        self.pending.extend(members.iter().map(|(id, _)| *id));
        self.close_if_full(kind)
    }

    fn open_pack(&mut self, kind: BlobKind) -> Result<&mut PackWriter> {
        let slot = match kind {
            BlobKind::Data => &mut self.data,
            BlobKind::Tree => &mut self.tree,
        };
        if slot.is_none() {
            let writer = PackWriter::new(&self.repo.layout)?;
            self.stats.stored_bytes += writer.len();
            self.stats.metadata_bytes += writer.len();
            *slot = Some(writer);
        }
        slot.as_mut()
            .ok_or_else(|| Error::Invalid("no open pack".into()))
    }

    fn count_added(&mut self, kind: BlobKind, bytes: u64) {
        self.stats.stored_bytes += bytes;
        if kind == BlobKind::Tree {
            self.stats.metadata_bytes += bytes;
        }
    }

    fn close_if_full(&mut self, kind: BlobKind) -> Result<()> {
        let slot = match kind {
            BlobKind::Data => &self.data,
            BlobKind::Tree => &self.tree,
        };
        if slot
            .as_ref()
            .is_some_and(|w| w.len() >= self.repo.config.pack_size)
        {
            self.close_pack(kind)?;
        }
        Ok(())
    }

    /// Closes the open pack of `kind` and hands it to the finisher thread.
    fn close_pack(&mut self, kind: BlobKind) -> Result<()> {
        let slot = match kind {
            BlobKind::Data => &mut self.data,
            BlobKind::Tree => &mut self.tree,
        };
        let Some(writer) = slot.take() else {
            return Ok(());
        };
        let before = writer.len();
        let sealed = writer.seal()?;
        self.finisher.submit(sealed)?;
        self.index_finished(false)?;
        // Table and trailer are part of what this session added.
        let table = self.finisher.last_sealed_growth(before);
        self.stats.stored_bytes += table;
        self.stats.metadata_bytes += table;
        Ok(())
    }

    /// Indexes packs the finisher has made durable (packs before index); with `wait`, all.
    /// The commits are deferred (no fsync each): `flush` makes them durable at once.
    fn index_finished(&mut self, wait: bool) -> Result<()> {
        for done in self.finisher.collect(wait)? {
            self.repo
                .index
                .add_pack_deferred(&done.id, done.size, &done.entries)?;
            for e in &done.entries {
                self.pending.remove(&e.id);
            }
        }
        Ok(())
    }

    /// Makes every pack of this session durable and indexed, and the index durable: after
    /// this, a manifest may refer to any blob this session wrote or found in the index (which
    /// may have been another process's deferred commit, hence the sync even when this session
    /// wrote nothing).
    pub(crate) fn flush(&mut self) -> Result<()> {
        self.close_pack(BlobKind::Data)?;
        self.close_pack(BlobKind::Tree)?;
        self.index_finished(true)?;
        self.repo.index.sync()
    }
}

/// Makes sealed packs durable on a background thread, so that fsync does not stall hashing and
/// compression. Packs come back in submission order once durable; only then are they indexed.
struct Finisher {
    tx: Option<crossbeam_channel::Sender<SealedPack>>,
    rx: crossbeam_channel::Receiver<Result<FinishedPack>>,
    thread: Option<std::thread::JoinHandle<()>>,
    in_flight: usize,
    last_size: u64,
}

/// Sealed packs waiting for fsync; bounds how far ingest may run ahead of the disk.
const PACKS_IN_FLIGHT: usize = 2;

impl Finisher {
    fn new(layout: crate::store::Layout) -> Finisher {
        let (tx, job_rx) = crossbeam_channel::bounded::<SealedPack>(PACKS_IN_FLIGHT);
        let (done_tx, rx) = crossbeam_channel::unbounded();
        let thread = std::thread::spawn(move || {
            for sealed in job_rx.iter() {
                if done_tx.send(sealed.commit(&layout)).is_err() {
                    return;
                }
            }
        });
        Finisher {
            tx: Some(tx),
            rx,
            thread: Some(thread),
            in_flight: 0,
            last_size: 0,
        }
    }

    fn submit(&mut self, sealed: SealedPack) -> Result<()> {
        self.last_size = sealed.size();
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| Error::Invalid("pack finisher stopped".into()))?;
        tx.send(sealed)
            .map_err(|_| Error::Invalid("pack finisher stopped".into()))?;
        self.in_flight += 1;
        Ok(())
    }

    /// Bytes the last sealed pack grew by when its table was written.
    fn last_sealed_growth(&self, len_before_seal: u64) -> u64 {
        self.last_size.saturating_sub(len_before_seal)
    }

    fn collect(&mut self, wait: bool) -> Result<Vec<FinishedPack>> {
        let mut out = Vec::new();
        while self.in_flight > 0 {
            let next = if wait {
                self.rx
                    .recv()
                    .map_err(|_| Error::Invalid("pack finisher stopped".into()))?
            } else {
                match self.rx.try_recv() {
                    Ok(r) => r,
                    Err(_) => break,
                }
            };
            self.in_flight -= 1;
            out.push(next?);
        }
        Ok(out)
    }
}

impl Drop for Finisher {
    fn drop(&mut self) {
        // Let queued packs finish (they become unreferenced packs for gc if the session failed)
        // rather than leave the thread writing after we return.
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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
    /// Keeps gc from deleting blobs this snapshot dedups against until the manifest is written.
    /// Declared last so it is released after the pack finisher has stopped.
    _lock: crate::lock::RepoLock,
}

impl Repo {
    pub fn begin_snapshot<'r>(&'r self, progress: &'r dyn Progress) -> Result<SnapshotSession<'r>> {
        Ok(SnapshotSession {
            _lock: self.lock(crate::lock::LockKind::Shared, "snapshot")?,
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
            return Err(Error::Invalid(format!(
                "duplicate stream name {:?}",
                input.name
            )));
        }
        let mut role = input.role;
        let mut recorder = if role == "tar" {
            let page_align = self.repo.config.chunker.page_align;
            Some(MemberRecorder::new(&self.repo.layout, page_align)?)
        } else {
            None
        };
        let stored = {
            let mut observe = recorder.as_mut().map(|r| {
                move |b: &[u8], hints: &mut Vec<crate::chunker::CutHint>| r.observe(b, hints)
            });
            store_stream(
                &mut self.blobs,
                self.repo,
                input.reader,
                observe
                    .as_mut()
                    .map(|o| o as &mut crate::chunker::ScanHook<'_>),
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
            // The member index is metadata: everything it adds counts as such.
            let index_bytes = self.blobs.stats.stored_bytes - before.stored_bytes;
            self.blobs.stats = IngestStats {
                stored_bytes: self.blobs.stats.stored_bytes,
                metadata_bytes: before.metadata_bytes + index_bytes,
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
                page_aligned_bytes: stats.page_aligned_bytes,
                metadata_bytes: stats.metadata_bytes,
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

pub fn hostname() -> String {
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
    mut observe: Option<&mut crate::chunker::ScanHook<'_>>,
    progress: &dyn Progress,
) -> Result<StoredStream> {
    let chunker = Chunker::new(&repo.config.chunker);
    let level = repo.config.compression.level;
    let mut tree = TreeBuilder::new();
    let mut cutter = BatchCutter::new(chunker);
    let mut blocks = BlockReader::new(reader, BATCH_SIZE, cutter.headroom());
    let (block_tx, block_rx) = crossbeam_channel::bounded::<std::io::Result<Block>>(1);
    let (batch_tx, batch_rx) = crossbeam_channel::bounded::<std::io::Result<Batch>>(1);
    let (hashed_tx, hashed_rx) =
        crossbeam_channel::bounded::<std::io::Result<(Batch, Vec<Id>)>>(BATCHES_IN_FLIGHT);
    let (recycle_tx, recycle_rx) = crossbeam_channel::bounded::<Vec<u8>>(BUFFERS);

    let digest = std::thread::scope(|scope| -> Result<Id> {
        // Four stages, each on its own thread, so that they overlap: reading (a copy out of
        // the page cache) and the tar scan; cutting (FastCDC, the one stage that cannot be
        // spread over cores, alone on its thread); hashing the chunks and the stream (on the
        // rayon pool); and, here, lookups, compression and packing.
        let reader_thread = scope.spawn(move || {
            loop {
                let recycled = recycle_rx.try_recv().ok();
                let block = match blocks.next_block(recycled, observe.as_deref_mut()) {
                    Ok(Some(block)) => Ok(block),
                    Ok(None) => return,
                    Err(e) => Err(e),
                };
                let failed = block.is_err();
                if block_tx.send(block).is_err() || failed {
                    return; // the cutter stopped listening, or the input failed
                }
            }
        });
        let cutter_thread = scope.spawn(move || {
            for block in block_rx.iter() {
                let batch = match block {
                    Ok(block) => match cutter.cut(block) {
                        Some(batch) => Ok(batch),
                        None => return,
                    },
                    Err(e) => Err(e),
                };
                let failed = batch.is_err();
                if batch_tx.send(batch).is_err() || failed {
                    return; // the hasher stopped listening, or the input failed
                }
            }
        });
        let hasher_thread = scope.spawn(move || {
            let mut digest = blake3::Hasher::new();
            for batch in batch_rx.iter() {
                let hashed = batch.map(|batch| {
                    let ids = hash_batch(&batch, &mut digest);
                    (batch, ids)
                });
                let failed = hashed.is_err();
                if hashed_tx.send(hashed).is_err() || failed {
                    break; // the consumer failed and stopped listening, or the input did
                }
            }
            Id::from(digest.finalize())
        });
        let result = (|| -> Result<()> {
            // Up to `COMPRESS_AHEAD` batches are compressed on the pool while the one before
            // them is packed here.
            let mut compressing: VecDeque<Classified> = VecDeque::with_capacity(COMPRESS_AHEAD + 1);
            // Compression output buffers, back from packed batches.
            let mut outputs: Vec<Vec<u8>> = Vec::with_capacity(COMPRESS_AHEAD + 1);
            let mut store = |c: Classified,
                             blobs: &mut BlobWriter<'_>,
                             outputs: &mut Vec<Vec<u8>>|
             -> Result<()> {
                let (batch, output) = store_batch(c, blobs, &mut tree)?;
                outputs.extend(output);
                progress.advance(batch.data().len() as u64);
                if let Ok(batch) = Arc::try_unwrap(batch) {
                    let _ = recycle_tx.try_send(batch.into_buffer());
                }
                Ok(())
            };
            for hashed in hashed_rx.iter() {
                let (batch, ids) =
                    hashed.map_err(|e| Error::Invalid(format!("reading input: {e}")))?;
                let output = outputs.pop().unwrap_or_default();
                compressing.push_back(classify(batch, ids, blobs, level, output)?);
                if compressing.len() > COMPRESS_AHEAD
                    && let Some(oldest) = compressing.pop_front()
                {
                    store(oldest, blobs, &mut outputs)?;
                }
            }
            while let Some(oldest) = compressing.pop_front() {
                store(oldest, blobs, &mut outputs)?;
            }
            Ok(())
        })();
        // On failure, stop the other threads: dropping the receiver makes the hasher's next
        // send fail, the hasher's end the cutter's, and the cutter's the reader's.
        drop(hashed_rx);
        let digest = hasher_thread.join();
        let cutter_joined = cutter_thread.join();
        if reader_thread.join().is_err() || cutter_joined.is_err() {
            return Err(Error::Invalid("reader thread panicked".into()));
        }
        let digest = digest.map_err(|_| Error::Invalid("hashing thread panicked".into()))?;
        result.map(|()| digest)
    })?;
    let root = tree.finish(blobs)?;
    Ok(StoredStream { root, digest })
}

/// The ids of a batch's chunks, while the batch is added to the stream digest.
fn hash_batch(batch: &Batch, digest: &mut blake3::Hasher) -> Vec<Id> {
    let (ids, ()) = rayon::join(
        || {
            batch
                .chunks()
                .collect::<Vec<_>>()
                .par_iter()
                .map(|c| Id::of(c))
                .collect()
        },
        || {
            digest.update(batch.data());
        },
    );
    ids
}

/// Compressed forms of a batch's new units, side by side in one buffer that is reused from
/// batch to batch (a fresh allocation per blob cost ~55k page faults per GiB ingested).
struct Compressed {
    buffer: Vec<u8>,
    /// Per unit, in the order of `Classified::units`: where its compressed bytes lie in
    /// `buffer`, or `None` to store it raw.
    units: Vec<std::io::Result<Option<std::ops::Range<usize>>>>,
}

/// A batch whose new chunks are decided and being compressed on the pool.
struct Classified {
    batch: Arc<Batch>,
    ids: Vec<Id>,
    units: Arc<Vec<Vec<usize>>>,
    /// The results to come, or (nothing new to compress) the output buffer, unused.
    compressed: std::result::Result<crossbeam_channel::Receiver<Compressed>, Vec<u8>>,
}

/// Decides which chunks of a batch are new (once per distinct id, in one read transaction)
/// and starts compressing them on the pool, so that the previous batch can be packed
/// meanwhile. The new ids count as known from here on (`BlobWriter::claim`): a later batch
/// looked up before this one is packed must not store them again.
fn classify(
    batch: Batch,
    ids: Vec<Id>,
    blobs: &mut BlobWriter<'_>,
    level: i32,
    output: Vec<u8>,
) -> Result<Classified> {
    let mut new_idx: Vec<usize> = Vec::new();
    blobs.repo.index.in_read_transaction(|| {
        for (i, id) in ids.iter().enumerate() {
            if !blobs.known(id)? {
                blobs.claim(*id);
                new_idx.push(i);
            }
        }
        Ok(())
    })?;
    let chunks: Vec<&[u8]> = batch.chunks().collect();
    let min_chunk = blobs.repo.config.chunker.min_size as usize;
    let units = Arc::new(frame_units(&new_idx, &chunks, &batch.aligned, min_chunk));
    drop(chunks);
    let batch = Arc::new(batch);
    if units.is_empty() {
        return Ok(Classified {
            batch,
            ids,
            units,
            compressed: Err(output),
        });
    }
    let compressed = {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let (batch, units) = (batch.clone(), units.clone());
        rayon::spawn(move || {
            let mut output = output;
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                compress_units(&batch, &units, level, &mut output)
            }))
            .unwrap_or_else(|_| vec![Err(std::io::Error::other("compression panicked"))]);
            let out = Compressed {
                buffer: output,
                units: out,
            };
            // Let go of the batch before reporting, so that its buffer can be reused.
            drop(batch);
            let _ = tx.send(out);
        });
        Ok(rx)
    };
    Ok(Classified {
        batch,
        ids,
        units,
        compressed,
    })
}

/// Compresses each unit into its own slice of `output` (as long as the unit's raw bytes: a
/// unit that does not shrink is stored raw anyway). `output` only grows, so a reused buffer
/// is neither zeroed nor faulted in again.
fn compress_units(
    batch: &Batch,
    units: &[Vec<usize>],
    level: i32,
    output: &mut Vec<u8>,
) -> Vec<std::io::Result<Option<std::ops::Range<usize>>>> {
    let chunks: Vec<&[u8]> = batch.chunks().collect();
    let unit_len = |unit: &Vec<usize>| unit.iter().map(|&i| chunks[i].len()).sum::<usize>();
    let total: usize = units.iter().map(unit_len).sum();
    if output.len() < total {
        output.resize(total, 0);
    }
    let mut slots: Vec<(usize, &mut [u8])> = Vec::with_capacity(units.len());
    let mut rest: &mut [u8] = output;
    let mut start = 0;
    for unit in units {
        let len = unit_len(unit);
        let (slot, tail) = rest.split_at_mut(len);
        slots.push((start, slot));
        rest = tail;
        start += len;
    }
    units
        .par_iter()
        .zip(slots)
        .map(|(unit, (start, slot))| {
            let n = match unit.as_slice() {
                [single] => crate::compress::compress_into(chunks[*single], level, slot)?,
                // Consecutive chunks are adjacent in the batch: compress them where they lie.
                [first, .., last] if last - first + 1 == unit.len() => {
                    crate::compress::compress_into(batch.span(*first, *last), level, slot)?
                }
                members => JOINED.with(|cell| {
                    let mut joined = cell.borrow_mut();
                    joined.clear();
                    for &i in members {
                        joined.extend_from_slice(chunks[i]);
                    }
                    crate::compress::compress_into(&joined, level, slot)
                })?,
            };
            Ok(n.map(|n| start..start + n))
        })
        .collect()
}

thread_local! {
    /// Each pool thread joins the members of a shared frame in one reused buffer (a frame is
    /// at most `FRAME_TARGET` plus one member).
    static JOINED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Packs a classified batch's new chunks once compressed and adds all its chunks to the tree;
/// returns the batch for its buffer.
fn store_batch(
    c: Classified,
    blobs: &mut BlobWriter<'_>,
    tree: &mut TreeBuilder,
) -> Result<(Arc<Batch>, Option<Vec<u8>>)> {
    let Classified {
        batch,
        ids,
        units,
        compressed,
    } = c;
    let chunks: Vec<&[u8]> = batch.chunks().collect();
    let compressed = match compressed {
        Ok(rx) => rx
            .recv()
            .map_err(|_| Error::Invalid("compression stopped".into()))?,
        Err(unused) => Compressed {
            buffer: unused,
            units: Vec::new(),
        },
    };
    if compressed.units.len() != units.len() {
        // Only a panic in compression gives another count; its error is in the results.
        for stored in compressed.units {
            stored.map_err(|e| Error::Invalid(format!("zstd: {e}")))?;
        }
        return Err(Error::Invalid("zstd: results lost".into()));
    }
    let output = &compressed.buffer;
    for (unit, stored) in units.iter().zip(compressed.units) {
        let stored = stored
            .map_err(|e| Error::Invalid(format!("zstd: {e}")))?
            .and_then(|range| output.get(range));
        match (unit.as_slice(), stored) {
            ([_, _, ..], Some(frame)) => {
                let members: Vec<(Id, u32)> = unit
                    .iter()
                    .map(|&i| (ids[i], chunks[i].len() as u32))
                    .collect();
                blobs.put_frame(BlobKind::Data, &members, frame)?;
            }
            // One blob, or a run that does not compress: each on its own.
            (_, stored) => {
                for &i in unit {
                    let own = if unit.len() == 1 { stored } else { None };
                    blobs.put(ids[i], BlobKind::Data, chunks[i].len(), own, chunks[i])?;
                }
            }
        }
        for &i in unit {
            blobs.stats.new_chunks += 1;
            blobs.stats.new_bytes += chunks[i].len() as u64;
        }
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
    blobs.stats.bytes += batch.data().len() as u64;
    blobs.stats.page_aligned_bytes += batch.aligned_bytes;
    drop(chunks);
    let buffer = (compressed.buffer.capacity() > 0).then_some(compressed.buffer);
    Ok((batch, buffer))
}

/// Splits the new chunks (indices in stream order) into what is compressed as one unit: most
/// chunks alone, small page-aligned blocks and chunks shorter than `min_chunk` together with the
/// ones after them until a frame holds `FRAME_TARGET` bytes.
fn frame_units(
    new_idx: &[usize],
    chunks: &[&[u8]],
    aligned: &[bool],
    min_chunk: usize,
) -> Vec<Vec<usize>> {
    let mut units = Vec::new();
    let mut frame: Vec<usize> = Vec::new();
    let mut frame_bytes = 0;
    for &i in new_idx {
        let len = chunks[i].len();
        let aligned = aligned.get(i).copied().unwrap_or(false);
        if len > FRAME_BLOB_MAX || !(aligned || len < min_chunk) {
            units.push(vec![i]);
            continue;
        }
        frame.push(i);
        frame_bytes += len;
        if frame_bytes >= FRAME_TARGET {
            units.push(std::mem::take(&mut frame));
            frame_bytes = 0;
        }
    }
    if !frame.is_empty() {
        units.push(frame);
    }
    units
}

/// Opens a file for `snapshot tar FILE`, with a clear error.
pub fn open_input(path: &std::path::Path) -> Result<std::fs::File> {
    std::fs::File::open(path).at(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;
    use crate::tree::LeafWalker;

    fn noise(len: usize, seed: u8) -> Vec<u8> {
        let mut v = vec![0u8; len];
        blake3::Hasher::new()
            .update(&[seed])
            .finalize_xof()
            .fill(&mut v);
        v
    }

    #[test]
    fn small_chunks_share_frames_and_content_defined_chunks_stand_alone() {
        let sizes = [5 << 10, 5 << 10, 20 << 10, 16 << 10, 4 << 10, 12 << 10];
        let data: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![7u8; n]).collect();
        let chunks: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let aligned = [false, false, false, false, true, false];
        let all: Vec<usize> = (0..chunks.len()).collect();
        // 20 KiB: too big for a frame; 16 KiB: a content-defined chunk (not below the minimum).
        assert_eq!(
            frame_units(&all, &chunks, &aligned, 16 << 10),
            vec![vec![2], vec![3], vec![0, 1, 4, 5]]
        );
        // Only new chunks are framed, and a frame closes once it holds FRAME_TARGET bytes.
        let many: Vec<&[u8]> = vec![&data[0][..]; 20];
        let units = frame_units(&(0..20).collect::<Vec<_>>(), &many, &[false; 20], 16 << 10);
        assert_eq!(units.len(), 2);
        assert_eq!(units[0].len(), FRAME_TARGET.div_ceil(5 << 10));
        assert_eq!(
            frame_units(&[1, 3], &chunks, &aligned, 16 << 10),
            vec![vec![3], vec![1]]
        );
    }

    /// A unit's compressed bytes decompress to its members' bytes in order, whether the
    /// members lie side by side in the batch (compressed in place) or not (joined first).
    #[test]
    fn units_compress_to_their_members_in_order() {
        let params = crate::format::config::ChunkerParams {
            min_size: 256,
            avg_size: 1024,
            max_size: 4096,
            member_group: None,
            ..crate::repo::DEFAULT_CHUNKER
        };
        let text = b"words and more words, ".repeat(2000);
        let mut reader =
            crate::chunker::BatchReader::new(&text[..], Chunker::new(&params), 1 << 20);
        let batch = reader.next_batch(None).unwrap().expect("a batch");
        let chunks: Vec<&[u8]> = batch.chunks().collect();
        assert!(chunks.len() > 6);
        let units = vec![vec![0, 1, 2], vec![3, 5], vec![4]];
        let mut output = Vec::new();
        let results = compress_units(&batch, &units, 3, &mut output);
        for (unit, result) in units.iter().zip(results) {
            let expected: Vec<u8> = unit.iter().flat_map(|&i| chunks[i].to_vec()).collect();
            let range = result.unwrap().expect("text compresses");
            let mut back = vec![0u8; expected.len()];
            crate::compress::decompress_into(&output[range], &mut back).unwrap();
            assert_eq!(back, expected, "unit {unit:?}");
        }
    }

    /// A block repeated in later batches is looked up before the batch that first holds it
    /// is packed (batches are classified one ahead of packing): it must still be stored once.
    #[test]
    fn chunks_repeated_across_batches_are_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::init(&dir.path().join("r"), &crate::InitOptions::default()).unwrap();
        let block = noise(3 << 20, 1);
        let mut data = Vec::new();
        for i in 0..4u8 {
            data.extend_from_slice(&block);
            data.extend_from_slice(&noise(BATCH_SIZE - (1 << 20), 10 + i));
        }
        let input = StreamInput {
            name: "s".into(),
            role: "data".into(),
            reader: Box::new(std::io::Cursor::new(data.clone())),
        };
        let outcome = repo
            .snapshot(SnapshotSpec::default(), vec![input], &Silent)
            .unwrap();
        let stream = &outcome.manifest.streams[0];
        let mut walker = LeafWalker::new(&repo, &stream.root, 0, stream.length).unwrap();
        let mut leaves = Vec::new();
        while let Some(leaf) = walker.next_leaf().unwrap() {
            leaves.push(leaf);
        }
        let distinct: HashSet<Id> = leaves.iter().map(|l| l.id).collect();
        assert!(
            distinct.len() + 20 < leaves.len(),
            "the block's chunks repeat"
        );
        assert_eq!(outcome.stats.chunks, leaves.len() as u64);
        assert_eq!(outcome.stats.new_chunks, distinct.len() as u64);
        let unique: u64 = distinct
            .iter()
            .map(|id| u64::from(repo.locate(id).unwrap().raw_len))
            .sum();
        assert_eq!(outcome.stats.new_bytes, unique);
        assert_eq!(repo.index.totals().unwrap().chunks, distinct.len() as u64);
        let mut back = Vec::new();
        crate::restore::restore_stream(&repo, stream, &mut back, &Silent).unwrap();
        assert!(back == data);
        assert_eq!(stream.digest, Id::of(&data));
    }
}
