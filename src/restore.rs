//! Reading streams back: parallel, verified, in bounded memory.
//!
//! The tree is walked in order and cut into windows of about `WINDOW_BYTES`. For each window the
//! blob locations are looked up, blobs are grouped by pack into regions read with one `pread`
//! each, and regions are decompressed and verified in parallel straight into their place in the
//! window buffer. Filled windows go, in order, to a consumer thread (hash + write) while the next
//! window is being filled.

use crate::blobs::PackFiles;
use crate::error::{Error, Result};
use crate::format::BlobKind;
use crate::format::manifest::StreamEntry;
use crate::id::Id;
use crate::index::BlobLocation;
use crate::pack::{frame_slice, unpack_blob, unpack_frame};
use crate::progress::Progress;
use crate::repo::Repo;
use crate::tree::{Leaf, LeafWalker};
use rayon::prelude::*;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::Write;

const WINDOW_BYTES: u64 = 32 << 20;
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
    read_range(
        repo,
        &stream.root,
        0,
        stream.length,
        &mut |bytes: &[u8]| {
            if bytes.len() >= 1 << 20 {
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

/// Passes bytes `[start, end)` of the stream rooted at `root` to `sink`, in order. Every blob is
/// verified against its id; the whole-stream digest is the caller's business.
pub fn read_range(repo: &Repo, root: &Id, start: u64, end: u64, sink: &mut Sink<'_>) -> Result<()> {
    let mut walker = LeafWalker::new(repo, root, start, end)?;
    let (win_tx, win_rx) = crossbeam_channel::bounded::<(Vec<u8>, usize, usize)>(1);
    let (recycle_tx, recycle_rx) = crossbeam_channel::bounded::<Vec<u8>>(2);
    std::thread::scope(|scope| -> Result<()> {
        let consumer = scope.spawn(move || -> Result<()> {
            for (buf, from, to) in win_rx.iter() {
                sink(&buf[from..to])?;
                let _ = recycle_tx.try_send(buf);
            }
            Ok(())
        });
        let produced = (|| -> Result<()> {
            let mut leaves = Vec::new();
            loop {
                leaves.clear();
                let mut window_len = 0u64;
                while window_len < WINDOW_BYTES {
                    match walker.next_leaf()? {
                        Some(leaf) => {
                            window_len += leaf.len;
                            leaves.push(leaf);
                        }
                        None => break,
                    }
                }
                let Some(first) = leaves.first() else {
                    return Ok(());
                };
                let locs = leaves
                    .iter()
                    .map(|l| locate_data(repo, l))
                    .collect::<Result<Vec<_>>>()?;
                let mut buf = recycle_rx.try_recv().unwrap_or_default();
                buf.clear();
                buf.resize(window_len as usize, 0);
                fill_window(&repo.packs, &leaves, &locs, &mut buf)?;
                let from = start.saturating_sub(first.offset) as usize;
                let to = (end.min(first.offset + window_len) - first.offset) as usize;
                if win_tx.send((buf, from, to)).is_err() {
                    // The consumer failed; its error is reported below.
                    return Ok(());
                }
            }
        })();
        drop(win_tx);
        let consumed = consumer
            .join()
            .map_err(|_| Error::Invalid("output thread panicked".into()))?;
        produced.and(consumed)
    })
}

fn locate_data(repo: &Repo, leaf: &Leaf) -> Result<BlobLocation> {
    let loc = repo.locate(&leaf.id)?;
    if loc.kind != BlobKind::Data || u64::from(loc.raw_len) != leaf.len {
        return Err(Error::corrupt(
            format!("blob {}", leaf.id),
            "index entry does not match the tree (kind or length)",
        ));
    }
    Ok(loc)
}

/// One distinct blob of a window and every place in the window where it goes.
struct Wanted<'w> {
    id: Id,
    loc: BlobLocation,
    targets: Vec<&'w mut [u8]>,
}

fn fill_window(
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
    let bytes = packs.read_at(&pack, start, (end - start) as usize)?;
    // Blobs of one shared frame are adjacent here: decompress the frame once for all of them.
    for unit in region.chunk_by_mut(|a, b| a.loc.frame.is_some() && a.loc.offset == b.loc.offset) {
        let from = (unit[0].loc.offset - start) as usize;
        let stored = &bytes[from..from + unit[0].loc.stored_len as usize];
        let frame = match unit[0].loc.frame {
            Some(f) => Some(unpack_frame(stored, f.raw_len, &unit[0].id, &pack)?),
            None => None,
        };
        for w in unit.iter_mut() {
            let Some((head, others)) = w.targets.split_first_mut() else {
                continue;
            };
            match (&frame, w.loc.frame) {
                (Some(frame), Some(f)) => {
                    head.copy_from_slice(frame_slice(frame, f, w.loc.raw_len, &w.id, &pack)?);
                }
                _ => unpack_blob(stored, w.loc.compression, w.loc.raw_len, &w.id, &pack, head)?,
            }
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
