//! Reading streams back: parallel, verified, in bounded memory.
//!
//! The tree is walked in order and cut into windows of about `WINDOW_BYTES`. The calling thread
//! walks and locates the blobs of one window after another; each located window is handed to the
//! rayon pool, which groups its blobs by pack into regions read with one `pread` each and
//! decompresses and verifies them in parallel straight into their place in the window buffer.
//! A consumer thread takes filled windows back in stream order (hash + write). Up to
//! `WINDOWS_IN_FLIGHT` windows exist at once, so walking, filling and consuming overlap and
//! memory stays bounded.

use crate::blobs::PackFiles;
use crate::error::{Error, Result};
use crate::format::BlobKind;
use crate::format::manifest::StreamEntry;
use crate::format::tree::TreeNode;
use crate::id::Id;
use crate::index::{BlobLocation, BlobLocator};
use crate::pack::{frame_slice, unpack_blob, unpack_frame_into};
use crate::progress::Progress;
use crate::repo::Repo;
use crate::tree::{Leaf, LeafWalker, NodeSource};
use rayon::prelude::*;
use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::panic::AssertUnwindSafe;

/// 8 windows of 8 MiB rather than 4 of 16 MiB (the same memory): with more, smaller windows the
/// pool keeps both cores busy while the sink lags for a moment, and the last window, filled
/// while little else runs, is shorter.
const WINDOW_BYTES: u64 = 8 << 20;
/// Windows being filled, waiting or being consumed at once (each holds `WINDOW_BYTES`).
const WINDOWS_IN_FLIGHT: usize = 8;
/// A region (one read) never spans more than this...
const REGION_MAX: u64 = 2 << 20;
/// ...nor skips more than this between two wanted blobs.
const REGION_GAP: u64 = 256 << 10;

/// Restores a whole stream to `out`, verifying every blob and the stream's digest.
pub fn restore_stream(
    repo: &Repo,
    stream: &StreamEntry,
    out: &mut (dyn Write + Send),
    progress: &dyn Progress,
) -> Result<()> {
    let mut hasher = blake3::Hasher::new();
    let mut written: u64 = 0;
    read_range_in_windows(
        repo,
        &stream.root,
        (0, stream.length),
        WINDOW_BYTES,
        &mut |bytes: &[u8], backlog: Backlog| {
            // Hashing on the pool costs more CPU (rayon splits the work into small jobs) and
            // waits behind pool threads busy filling windows; it pays only when they are idle,
            // waiting for this sink (a slow pipe, tar extraction): then it halves the wall time
            // of a restore into a pipe.
            if bytes.len() >= 1 << 20 && backlog.fillers_idle() {
                hasher.update_rayon(bytes);
            } else {
                hasher.update(bytes);
            }
            written += bytes.len() as u64;
            out.write_all(bytes)
                .map_err(|e| Error::Invalid(format!("writing output: {e}")))?;
            progress.advance(bytes.len() as u64);
            Ok(())
        },
    )?;
    if written != stream.length {
        return Err(Error::corrupt(
            format!("stream {:?}", stream.name),
            format!(
                "tree holds {written} bytes, manifest says {}",
                stream.length
            ),
        ));
    }
    let actual = Id::from(hasher.finalize());
    if actual != stream.digest {
        return Err(Error::DigestMismatch {
            name: stream.name.clone(),
            expected: stream.digest,
            actual,
        });
    }
    Ok(())
}

type Sink<'s> = dyn FnMut(&[u8]) -> Result<()> + Send + 's;
/// A sink that is also told how far filling is ahead of it.
type WindowSink<'s> = dyn FnMut(&[u8], Backlog) -> Result<()> + Send + 's;

/// How many windows were filled and waiting for the sink when it was handed the current one.
#[derive(Clone, Copy)]
struct Backlog {
    ready: usize,
}

impl Backlog {
    /// Every other window is filled: the pool has nothing to do until the sink frees one.
    fn fillers_idle(self) -> bool {
        self.ready + 1 >= WINDOWS_IN_FLIGHT
    }
}

/// The leaves of one window with their locations, ready to be filled.
struct WindowPlan {
    seq: u64,
    leaves: Vec<Leaf>,
    locs: Vec<BlobLocation>,
    len: usize,
    /// The part of the window inside the requested range.
    from: usize,
    to: usize,
}

/// A window's verified bytes; `buf[from..to]` goes to the sink.
struct FilledWindow {
    seq: u64,
    buf: Vec<u8>,
    from: usize,
    to: usize,
}

/// Passes bytes `[start, end)` of the stream rooted at `root` to `sink`, in order. Every blob is
/// verified against its id; the whole-stream digest is the caller's business.
///
/// This thread walks the tree and locates the blobs of each window, then hands the window to
/// the rayon pool to be read, decompressed and verified, while it plans the next one. Up to
/// `WINDOWS_IN_FLIGHT` windows are being filled or consumed at once (that bounds memory); a
/// consumer thread takes them back in stream order. (This thread is never a pool thread: `Repo`
/// is not `Sync`, so it cannot be moved into one, and blocking here never starves the pool.)
pub fn read_range(repo: &Repo, root: &Id, start: u64, end: u64, sink: &mut Sink<'_>) -> Result<()> {
    read_range_in_windows(repo, root, (start, end), WINDOW_BYTES, &mut |bytes, _| {
        sink(bytes)
    })
}

/// `read_range` with windows of about `window_bytes` (tests use small ones).
fn read_range_in_windows(
    repo: &Repo,
    root: &Id,
    (start, end): (u64, u64),
    window_bytes: u64,
    sink: &mut WindowSink<'_>,
) -> Result<()> {
    let nodes = IndexedNodes {
        packs: &repo.packs,
        locator: RefCell::new(repo.index().locator()?),
    };
    let mut walker = LeafWalker::new(&nodes, root, start, end)?;
    let (free_tx, free_rx) = crossbeam_channel::bounded::<Vec<u8>>(WINDOWS_IN_FLIGHT);
    for _ in 0..WINDOWS_IN_FLIGHT {
        let _ = free_tx.send(Vec::new());
    }
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<Result<FilledWindow>>();
    std::thread::scope(|scope| -> Result<()> {
        let consumer = scope.spawn(move || consume_in_order(&done_rx, &free_tx, sink));
        let produced = rayon::in_place_scope(|tasks| -> Result<()> {
            let mut seq = 0;
            let index = repo.index();
            while let Some(plan) = index.in_read_transaction(|| {
                plan_window(&mut walker, &nodes, seq, (start, end), window_bytes)
            })? {
                let Ok(buf) = free_rx.recv() else {
                    // The consumer failed; its error is reported below.
                    return Ok(());
                };
                let done_tx = done_tx.clone();
                let packs = &repo.packs;
                tasks.spawn(move |_| {
                    // A panic must still report this window, or the consumer would wait for it
                    // forever while holding the buffers the producer waits for.
                    let filled = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        fill_window(packs, plan, buf)
                    }))
                    .unwrap_or_else(|_| Err(Error::Invalid("restore worker panicked".into())));
                    let _ = done_tx.send(filled);
                });
                seq += 1;
            }
            Ok(())
        });
        drop(done_tx);
        let consumed = consumer
            .join()
            .map_err(|_| Error::Invalid("output thread panicked".into()))?;
        produced.and(consumed)
    })
}

/// Walks the next window's leaves and locates them; `None` at the end of the range.
fn plan_window(
    walker: &mut LeafWalker<'_>,
    nodes: &IndexedNodes<'_>,
    seq: u64,
    (start, end): (u64, u64),
    window_bytes: u64,
) -> Result<Option<WindowPlan>> {
    let mut leaves = Vec::new();
    let mut len = 0u64;
    while len < window_bytes {
        match walker.next_leaf()? {
            Some(leaf) => {
                len += leaf.len;
                leaves.push(leaf);
            }
            None => break,
        }
    }
    let Some(first) = leaves.first() else {
        return Ok(None);
    };
    let from = start.saturating_sub(first.offset);
    let to = end.min(first.offset + len) - first.offset;
    let locs = leaves
        .iter()
        .map(|l| nodes.locate_data(l))
        .collect::<Result<Vec<_>>>()?;
    let as_usize = |v: u64| {
        usize::try_from(v).map_err(|_| Error::Invalid("window does not fit in memory".into()))
    };
    Ok(Some(WindowPlan {
        seq,
        leaves,
        locs,
        len: as_usize(len)?,
        from: as_usize(from)?,
        to: as_usize(to)?,
    }))
}

/// Hands filled windows to `sink` in stream order and returns their buffers for reuse.
fn consume_in_order(
    done: &crossbeam_channel::Receiver<Result<FilledWindow>>,
    free: &crossbeam_channel::Sender<Vec<u8>>,
    sink: &mut WindowSink<'_>,
) -> Result<()> {
    // Windows finish out of order; at most `WINDOWS_IN_FLIGHT` wait here.
    let mut waiting: BTreeMap<u64, FilledWindow> = BTreeMap::new();
    let mut next = 0u64;
    for filled in done.iter() {
        let window = filled?;
        waiting.insert(window.seq, window);
        while let Some(window) = waiting.remove(&next) {
            let backlog = Backlog {
                ready: waiting.len() + done.len(),
            };
            sink(&window.buf[window.from..window.to], backlog)?;
            let _ = free.send(window.buf);
            next += 1;
        }
    }
    Ok(())
}

/// Reads, decompresses and verifies every blob of a window into `buf`, reused from an earlier
/// window without clearing: the leaves partition `buf[..len]` and each blob is written in full
/// before it is verified (`unpack_blob` and `frame_slice` check its length and id), so no stale
/// byte can reach the sink.
fn fill_window(packs: &PackFiles, plan: WindowPlan, mut buf: Vec<u8>) -> Result<FilledWindow> {
    if buf.len() < plan.len {
        // Only the growth is zero-filled; the buffer never shrinks.
        buf.resize(plan.len, 0);
    }
    fill_blobs(packs, &plan.leaves, &plan.locs, &mut buf[..plan.len])?;
    Ok(FilledWindow {
        seq: plan.seq,
        buf,
        from: plan.from,
        to: plan.to,
    })
}

/// Tree nodes and blob locations through one `BlobLocator` (the walk and the lookups of a
/// restore run on the same thread).
struct IndexedNodes<'r> {
    packs: &'r PackFiles,
    locator: RefCell<BlobLocator<'r>>,
}

impl IndexedNodes<'_> {
    fn locate(&self, id: &Id) -> Result<BlobLocation> {
        self.locator
            .borrow_mut()
            .locate(id)?
            .ok_or(Error::MissingBlob(*id))
    }

    fn locate_data(&self, leaf: &Leaf) -> Result<BlobLocation> {
        let loc = self.locate(&leaf.id)?;
        if loc.kind != BlobKind::Data || u64::from(loc.raw_len) != leaf.len {
            return Err(Error::corrupt(
                format!("blob {}", leaf.id),
                "index entry does not match the tree (kind or length)",
            ));
        }
        Ok(loc)
    }
}

impl NodeSource for IndexedNodes<'_> {
    fn read_node(&self, id: &Id) -> Result<TreeNode> {
        let loc = self.locate(id)?;
        self.packs.read_node(id, &loc)
    }
}

/// One distinct blob of a window and every place in the window where it goes.
struct Wanted<'w> {
    id: Id,
    loc: BlobLocation,
    targets: Vec<&'w mut [u8]>,
}

fn fill_blobs(
    packs: &PackFiles,
    leaves: &[Leaf],
    locs: &[BlobLocation],
    buf: &mut [u8],
) -> Result<()> {
    let mut wanted: Vec<Wanted<'_>> = Vec::new();
    let mut by_id: HashMap<Id, usize> = HashMap::new();
    let mut rest = buf;
    for (leaf, loc) in leaves.iter().zip(locs) {
        let (target, tail) = std::mem::take(&mut rest).split_at_mut(leaf.len as usize);
        rest = tail;
        match by_id.entry(leaf.id) {
            Entry::Occupied(e) => wanted[*e.get()].targets.push(target),
            Entry::Vacant(v) => {
                v.insert(wanted.len());
                wanted.push(Wanted {
                    id: leaf.id,
                    loc: *loc,
                    targets: vec![target],
                });
            }
        }
    }
    wanted.sort_by_key(|w| (w.loc.pack, w.loc.offset, w.loc.frame.map(|f| f.skip)));
    let mut regions: Vec<Vec<Wanted<'_>>> = Vec::new();
    for w in wanted {
        let joins = regions.last().is_some_and(|r| {
            let first = &r[0].loc;
            let last = &r[r.len() - 1].loc;
            let last_end = last.offset + u64::from(last.stored_len);
            let same_frame = last.frame.is_some() && last.offset == w.loc.offset;
            first.pack == w.loc.pack && same_frame
                || first.pack == w.loc.pack
                    && w.loc.offset >= last_end
                    && w.loc.offset - last_end <= REGION_GAP
                    && w.loc.offset + u64::from(w.loc.stored_len) - first.offset <= REGION_MAX
        });
        match regions.last_mut() {
            Some(r) if joins => r.push(w),
            _ => regions.push(vec![w]),
        }
    }
    regions
        .into_par_iter()
        .try_for_each(|region| read_region(packs, region))
}

fn read_region(packs: &PackFiles, mut region: Vec<Wanted<'_>>) -> Result<()> {
    let Some(first) = region.first() else {
        return Ok(());
    };
    let pack = first.loc.pack;
    let start = first.loc.offset;
    let end = region
        .iter()
        .map(|w| w.loc.offset + u64::from(w.loc.stored_len))
        .max()
        .unwrap_or(start);
    READ_BUF.with(|cell| {
        let mut bytes = cell.borrow_mut();
        packs.read_into(&pack, start, (end - start) as usize, &mut bytes)?;
        unpack_region(&pack, start, &bytes, &mut region)
    })
}

thread_local! {
    /// Each pool thread reads its regions into one buffer instead of allocating one per read.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// ...and decompresses shared frames into one (a fresh zeroed buffer per 64 KiB frame cost
    /// an allocation and a memset for every few small blobs).
    static FRAME_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Decompresses and verifies the blobs of `region` from its stored bytes, read at `start`.
fn unpack_region(pack: &Id, start: u64, bytes: &[u8], region: &mut [Wanted<'_>]) -> Result<()> {
    let pack = *pack;
    // Blobs of one shared frame are adjacent here: decompress the frame once for all of them.
    for unit in region.chunk_by_mut(|a, b| a.loc.frame.is_some() && a.loc.offset == b.loc.offset) {
        let from = (unit[0].loc.offset - start) as usize;
        let stored = &bytes[from..from + unit[0].loc.stored_len as usize];
        match unit[0].loc.frame {
            Some(f) => FRAME_BUF.with(|cell| {
                let mut frame = cell.borrow_mut();
                unpack_frame_into(stored, f.raw_len, &unit[0].id, &pack, &mut frame)?;
                let frame = &frame[..f.raw_len as usize];
                fill_targets(unit, |id, loc, out| {
                    let f = loc.frame.unwrap_or(f);
                    out.copy_from_slice(frame_slice(frame, f, loc.raw_len, id, &pack)?);
                    Ok(())
                })
            })?,
            None => fill_targets(unit, |id, loc, out| {
                unpack_blob(stored, loc.compression, loc.raw_len, id, &pack, out)
            })?,
        }
    }
    Ok(())
}

/// Fills each wanted blob's first place with `unpack` (which verifies it) and copies it to the
/// others.
fn fill_targets(
    unit: &mut [Wanted<'_>],
    unpack: impl Fn(&Id, &BlobLocation, &mut [u8]) -> Result<()>,
) -> Result<()> {
    for Wanted { id, loc, targets } in unit.iter_mut() {
        if let Some((head, others)) = targets.split_first_mut() {
            unpack(id, loc, head)?;
            for t in others {
                t.copy_from_slice(head);
            }
        }
    }
    Ok(())
}

/// Restores a stream into `path`. A regular file is written to a temporary file beside it and
/// renamed into place only once every byte is verified, so a failed restore never leaves a file
/// that looks done. Anything else that already exists there (`/dev/null`, a FIFO, a device) is
/// written to directly: renaming over it would replace the device node itself.
pub fn restore_to_file(
    repo: &Repo,
    stream: &StreamEntry,
    path: &std::path::Path,
    progress: &dyn Progress,
) -> Result<()> {
    if let Ok(meta) = std::fs::metadata(path)
        && !meta.is_file()
    {
        if meta.is_dir() {
            return Err(Error::Invalid(format!(
                "{} is a directory; give a file name, or use --extract",
                path.display()
            )));
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        return restore_stream(repo, stream, &mut out, progress);
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".cairn-restore-")
        .tempfile_in(&dir)
        .map_err(|e| Error::io(&dir, e))?;
    restore_stream(repo, stream, tmp.as_file_mut(), progress)?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Unpacks a tar stream into `dir`. Member paths that would leave `dir` (`..`, absolute paths,
/// paths through symlinks) are refused by the tar crate's `unpack_in` checks.
pub fn extract_stream(
    repo: &Repo,
    stream: &StreamEntry,
    dir: &std::path::Path,
    progress: &dyn Progress,
) -> Result<()> {
    if stream.role != "tar" {
        return Err(Error::Invalid(format!(
            "stream {:?} is not a tar archive (role {:?}); use --output to restore its bytes",
            stream.name, stream.role
        )));
    }
    crate::unpack::unpack_fed(dir, &stream.name, |out| {
        restore_stream(repo, stream, out, progress)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;

    #[test]
    fn fillers_are_idle_only_when_every_other_window_waits_for_the_sink() {
        let idle = |ready| Backlog { ready }.fillers_idle();
        assert!(!idle(0));
        assert!(!idle(WINDOWS_IN_FLIGHT - 2));
        assert!(idle(WINDOWS_IN_FLIGHT - 1));
    }

    /// Noise (stored raw), text (compressed) and a block repeated so that identical chunks
    /// share a window.
    fn mixed_data() -> Vec<u8> {
        let mut data = Vec::new();
        let mut x: u64 = 7;
        for _ in 0..1_200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.push(x as u8);
        }
        let text: Vec<u8> = (0..900_000u32)
            .flat_map(|i| format!("line {} of some text\n", i % 977).into_bytes())
            .take(900_000)
            .collect();
        data.extend_from_slice(&text);
        let block = data[100_000..400_000].to_vec();
        for _ in 0..4 {
            data.extend_from_slice(&block);
        }
        data
    }

    fn repo_with(data: &[u8]) -> (tempfile::TempDir, Repo, StreamEntry) {
        let dir = tempfile::tempdir().unwrap();
        let opts = crate::InitOptions {
            // Several packs, so that windows read from more than one.
            pack_size: 512 << 10,
            ..crate::InitOptions::default()
        };
        let repo = Repo::init(&dir.path().join("r"), &opts).unwrap();
        let outcome = repo
            .snapshot(
                crate::SnapshotSpec {
                    kind: "t".into(),
                    source: "s".into(),
                    ..Default::default()
                },
                vec![crate::StreamInput {
                    name: "s".into(),
                    role: "data".into(),
                    reader: Box::new(std::io::Cursor::new(data.to_vec())),
                }],
                &Silent,
            )
            .unwrap();
        let stream = outcome.manifest.streams[0].clone();
        (dir, repo, stream)
    }

    fn read_windows(
        repo: &Repo,
        stream: &StreamEntry,
        range: (u64, u64),
        window: u64,
    ) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        read_range_in_windows(repo, &stream.root, range, window, &mut |b: &[u8], _| {
            out.extend_from_slice(b);
            Ok(())
        })?;
        Ok(out)
    }

    fn all_leaves(repo: &Repo, stream: &StreamEntry) -> Vec<Leaf> {
        let mut walker = LeafWalker::new(repo, &stream.root, 0, stream.length).unwrap();
        let mut leaves = Vec::new();
        while let Some(leaf) = walker.next_leaf().unwrap() {
            leaves.push(leaf);
        }
        leaves
    }

    #[test]
    fn windows_of_any_size_give_every_byte_in_order() {
        let data = mixed_data();
        let (_dir, repo, stream) = repo_with(&data);
        let len = data.len() as u64;
        let leaves = all_leaves(&repo, &stream);
        let ids: std::collections::HashSet<Id> = leaves.iter().map(|l| l.id).collect();
        let packs: std::collections::HashSet<Id> =
            ids.iter().map(|id| repo.locate(id).unwrap().pack).collect();
        assert!(ids.len() < leaves.len(), "some chunks repeat");
        assert!(packs.len() > 2, "blobs spread over packs");
        // One leaf per window, windows of varying length that reuse each other's buffers, and
        // one window for everything.
        for window in [1, 100_000, 300_000, 64 << 20] {
            let out = read_windows(&repo, &stream, (0, len), window).unwrap();
            assert!(out == data, "window {window}");
        }
        let mut whole = Vec::new();
        restore_stream(&repo, &stream, &mut whole, &Silent).unwrap();
        assert!(whole == data);
    }

    #[test]
    fn ranges_across_windows() {
        let data = mixed_data();
        let (_dir, repo, stream) = repo_with(&data);
        let len = data.len() as u64;
        for (start, end) in [
            (0, 0),
            (5, 6),
            (70_000, 70_001),
            (123_456, 1_654_321),
            (1_000_000, len),
            (len - 1, len),
        ] {
            let out = read_windows(&repo, &stream, (start, end), 200_000).unwrap();
            assert!(
                out[..] == data[start as usize..end as usize],
                "{start}..{end}"
            );
        }
    }

    #[test]
    fn a_damaged_blob_in_a_later_window_fails_the_read() {
        let data = mixed_data();
        let (_dir, repo, stream) = repo_with(&data);
        let len = data.len() as u64;
        let leaves = all_leaves(&repo, &stream);
        let victim = leaves[leaves.len() * 2 / 3];
        let loc = repo.locate(&victim.id).unwrap();
        let path = repo.layout.pack(&loc.pack);
        let mut pack = std::fs::read(&path).unwrap();
        pack[(loc.offset + u64::from(loc.stored_len) / 2) as usize] ^= 0x55;
        std::fs::write(&path, pack).unwrap();

        for window in [1, 150_000, 64 << 20] {
            let err = read_windows(&repo, &stream, (0, len), window).unwrap_err();
            assert!(
                matches!(err, Error::DamagedBlob { blob, .. } if blob == victim.id),
                "window {window}: {err}"
            );
        }
        let err = restore_stream(&repo, &stream, &mut Vec::new(), &Silent).unwrap_err();
        assert!(matches!(err, Error::DamagedBlob { .. }), "{err}");
        // Bytes before the damaged blob still read.
        let before = read_windows(&repo, &stream, (0, victim.offset), 150_000).unwrap();
        assert!(before[..] == data[..victim.offset as usize]);
    }

    #[test]
    fn a_failing_sink_stops_the_read_with_its_error() {
        let data = mixed_data();
        let (_dir, repo, stream) = repo_with(&data);
        let mut calls = 0;
        let err = read_range_in_windows(
            &repo,
            &stream.root,
            (0, data.len() as u64),
            100_000,
            &mut |_: &[u8], _| {
                calls += 1;
                if calls == 2 {
                    Err(Error::Invalid("sink refused".into()))
                } else {
                    Ok(())
                }
            },
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::Invalid(m) if m == "sink refused"),
            "{err}"
        );
        assert_eq!(calls, 2, "nothing more is handed over after the failure");
    }
}
