//! Extracting only some members of a tar stream (`restore --extract --include/--exclude`).
//!
//! The member index says where each selected member's headers and data lie; only those byte
//! ranges are read (in parallel batches of blobs) and fed, followed by an end-of-archive marker,
//! to the tar crate's extractor, whose `unpack_in` refuses members that would land outside the
//! target (`..`, absolute paths, paths through symlinks, hard links to outside files). Members
//! with `..` in their path are also dropped here, before the extractor sees them.
//!
//! A selected hard link whose target is not selected is written as a regular file holding the
//! target's data, so that a filtered restore never fails for want of a link target.

use super::{PathFilter, is_contained, normalize_path};
use crate::error::{Error, Result};
use crate::format::BlobKind;
use crate::format::manifest::StreamEntry;
use crate::index::BlobLocation;
use crate::progress::Progress;
use crate::repo::Repo;
use crate::tarscan::{BLOCK_LEN, Member, MemberKind, padded_len};
use crate::tree::{Leaf, LeafWalker};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;

/// Blobs read in parallel before their bytes are written out in order.
const BATCH_BYTES: u64 = 16 << 20;

/// What a filtered extraction did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExtractSummary {
    /// Members fed to the extractor.
    pub members: u64,
    /// Stream bytes (headers and data) fed to the extractor.
    pub bytes: u64,
    /// Selected members dropped because their path or link target leaves the target directory.
    pub unsafe_skipped: u64,
    /// Hard links written as regular files because their target was not selected.
    pub links_as_files: u64,
}

/// What the first pass over the index chose.
struct Selection {
    /// Byte ranges of the selected members, sorted, adjacent ones merged.
    ranges: Vec<(u64, u64)>,
    orphans: Vec<OrphanLink>,
    summary: ExtractSummary,
}

/// A selected hard link whose target was filtered out.
struct OrphanLink {
    link: Member,
    target: Vec<u8>,
}

/// Extracts the members of `stream` that `filter` selects into `dir`.
pub fn extract_filtered(
    repo: &Repo,
    stream: &StreamEntry,
    dir: &Path,
    filter: &PathFilter,
    progress: &dyn Progress,
) -> Result<ExtractSummary> {
    if stream.role != "tar" {
        return Err(Error::Invalid(format!(
            "stream {:?} is not a tar archive (role {:?}); use --output to restore its bytes",
            stream.name, stream.role
        )));
    }
    let Selection {
        ranges,
        orphans,
        mut summary,
    } = select(repo, stream, filter)?;
    let orphans = resolve_orphans(repo, stream, orphans)?;
    summary.links_as_files = orphans.len() as u64;
    summary.bytes += orphans
        .iter()
        .map(|(_, target)| padded_len(target.data_len).unwrap_or(0) + BLOCK_LEN)
        .sum::<u64>();
    progress.start(&format!("extract {}", stream.name), Some(summary.bytes));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    crate::unpack::unpack_fed(dir, &stream.name, |out| {
        copy_ranges(repo, &stream.root, &ranges, out, progress)?;
        for (link, target) in &orphans {
            write_link_as_file(repo, stream, link, target, out)?;
        }
        out.write_all(&[0u8; 2 * BLOCK_LEN as usize])
            .map_err(Error::IoPlain)
    })?;
    progress.finish();
    Ok(summary)
}

/// First pass over the index: the byte ranges of selected members (adjacent ones merged) and
/// the selected hard links whose targets are not selected.
fn select(repo: &Repo, stream: &StreamEntry, filter: &PathFilter) -> Result<Selection> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut orphans = Vec::new();
    let mut summary = ExtractSummary::default();
    for member in super::members(repo, stream)? {
        let member = member?;
        let path = normalize_path(&member.path);
        if path.is_empty() || !filter.selects(&path) {
            continue;
        }
        if !is_contained(&path) {
            summary.unsafe_skipped += 1;
            continue;
        }
        if member.kind == MemberKind::HardLink {
            let target = normalize_path(&member.link_target);
            if !is_contained(&target) || target.is_empty() {
                summary.unsafe_skipped += 1;
                continue;
            }
            if !filter.selects(&target) {
                orphans.push(OrphanLink {
                    link: member,
                    target,
                });
                continue;
            }
        }
        let end = member
            .padded_end()
            .filter(|&end| end <= stream.length)
            .ok_or_else(|| {
                Error::corrupt(
                    format!("member index of stream {:?}", stream.name),
                    "a member lies beyond the end of the stream",
                )
            })?;
        summary.members += 1;
        summary.bytes += end - member.header_offset;
        match ranges.last_mut() {
            Some(last) if last.1 == member.header_offset => last.1 = end,
            _ => ranges.push((member.header_offset, end)),
        }
    }
    Ok(Selection {
        ranges,
        orphans,
        summary,
    })
}

/// Second pass, only when needed: the regular file each orphaned hard link points to (the last
/// member of that path before the link). Links to anything else are dropped.
fn resolve_orphans(
    repo: &Repo,
    stream: &StreamEntry,
    orphans: Vec<OrphanLink>,
) -> Result<Vec<(Member, Member)>> {
    if orphans.is_empty() {
        return Ok(Vec::new());
    }
    let wanted: HashSet<&[u8]> = orphans.iter().map(|o| &o.target[..]).collect();
    let mut latest: HashMap<Vec<u8>, Member> = HashMap::new();
    let mut pending = orphans.iter().peekable();
    let mut resolved = Vec::new();
    for member in super::members(repo, stream)? {
        let member = member?;
        while let Some(orphan) = pending.next_if(|o| o.link.header_offset <= member.header_offset) {
            if let Some(target) = latest.get(&orphan.target) {
                resolved.push((orphan.link.clone(), target.clone()));
            }
        }
        if pending.peek().is_none() {
            break;
        }
        let path = normalize_path(&member.path);
        if wanted.contains(&path[..]) {
            if member.kind == MemberKind::File && !member.sparse && member.data_len == member.size {
                latest.insert(path, member);
            } else {
                latest.remove(&path);
            }
        }
    }
    Ok(resolved)
}

fn write_link_as_file(
    repo: &Repo,
    stream: &StreamEntry,
    link: &Member,
    target: &Member,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    out.write_all(&file_headers(&link.path, target)?)
        .map_err(Error::IoPlain)?;
    super::copy_data(repo, stream, target.data_offset, target.data_len, out)?;
    let padding = padded_len(target.data_len).unwrap_or(0) - target.data_len;
    out.write_all(&vec![0u8; padding as usize])
        .map_err(Error::IoPlain)
}

/// Tar headers (a GNU long-name block when needed) for a regular file named `path` with the
/// metadata and size of `target`.
fn file_headers(path: &[u8], target: &Member) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut header = tar::Header::new_gnu();
    if path.len() >= 100 {
        let mut long = tar::Header::new_gnu();
        long.as_gnu_mut()
            .ok_or_else(|| Error::Invalid("tar header".into()))?
            .name[..13]
            .copy_from_slice(b"././@LongLink");
        long.set_entry_type(tar::EntryType::GNULongName);
        long.set_mode(0o644);
        long.set_size(path.len() as u64 + 1);
        long.set_cksum();
        out.extend_from_slice(long.as_bytes());
        out.extend_from_slice(path);
        out.push(0);
        out.resize(padded_len(out.len() as u64).unwrap_or(0) as usize, 0);
    }
    let name = &mut header
        .as_gnu_mut()
        .ok_or_else(|| Error::Invalid("tar header".into()))?
        .name;
    let short = path.len().min(name.len());
    name[..short].copy_from_slice(&path[..short]);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(target.mode);
    header.set_uid(target.uid);
    header.set_gid(target.gid);
    header.set_mtime(u64::try_from(target.mtime).unwrap_or(0));
    header.set_size(target.data_len);
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    Ok(out)
}

/// Writes the bytes of `ranges` (sorted, disjoint) of the stream to `out`, reading only the
/// blobs that overlap them, a batch at a time in parallel.
fn copy_ranges(
    repo: &Repo,
    root: &crate::Id,
    ranges: &[(u64, u64)],
    out: &mut (dyn Write + Send),
    progress: &dyn Progress,
) -> Result<()> {
    let (Some(first), Some(last)) = (ranges.first(), ranges.last()) else {
        return Ok(());
    };
    let mut walker = LeafWalker::new(repo, root, first.0, last.1)?;
    let mut cursor = RangeCursor::default();
    let mut emitter = RangeCursor::default();
    let mut batch: Vec<Leaf> = Vec::new();
    let mut batch_bytes = 0u64;
    let mut written = 0u64;
    loop {
        let leaf = walker.next_leaf()?;
        if let Some(leaf) = leaf
            && cursor.overlaps(ranges, leaf.offset, leaf.offset + leaf.len)
        {
            batch_bytes += leaf.len;
            batch.push(leaf);
        }
        if leaf.is_none() || batch_bytes >= BATCH_BYTES {
            written += write_batch(repo, &batch, ranges, &mut emitter, out)?;
            progress.advance(batch_bytes);
            batch.clear();
            batch_bytes = 0;
        }
        if leaf.is_none() {
            break;
        }
    }
    let wanted: u64 = ranges.iter().map(|r| r.1 - r.0).sum();
    if written != wanted {
        return Err(Error::corrupt(
            "stream tree",
            format!("holds {written} of the {wanted} bytes the member index points at"),
        ));
    }
    Ok(())
}

/// The first range that may still overlap the next leaf (leaves come in stream order).
#[derive(Default)]
struct RangeCursor {
    next: usize,
}

impl RangeCursor {
    fn skip_before(&mut self, ranges: &[(u64, u64)], start: u64) {
        while self.next < ranges.len() && ranges[self.next].1 <= start {
            self.next += 1;
        }
    }

    fn overlaps(&mut self, ranges: &[(u64, u64)], start: u64, end: u64) -> bool {
        self.skip_before(ranges, start);
        self.next < ranges.len() && ranges[self.next].0 < end
    }
}

fn write_batch(
    repo: &Repo,
    batch: &[Leaf],
    ranges: &[(u64, u64)],
    emitter: &mut RangeCursor,
    out: &mut dyn Write,
) -> Result<u64> {
    // The index is not shared between threads: look up first, then read in parallel.
    let locations = batch
        .iter()
        .map(|leaf| locate_data(repo, leaf))
        .collect::<Result<Vec<_>>>()?;
    let packs = repo.packs();
    let blobs = batch
        .par_iter()
        .zip(&locations)
        .map(|(leaf, loc)| packs.read_blob(&leaf.id, loc))
        .collect::<Result<Vec<_>>>()?;
    let mut written = 0u64;
    for (leaf, blob) in batch.iter().zip(&blobs) {
        let leaf_end = leaf.offset + leaf.len;
        emitter.skip_before(ranges, leaf.offset);
        for &(start, end) in ranges[emitter.next..].iter().take_while(|r| r.0 < leaf_end) {
            let from = start.max(leaf.offset);
            let to = end.min(leaf_end);
            if from >= to {
                continue;
            }
            let slice = &blob[(from - leaf.offset) as usize..(to - leaf.offset) as usize];
            out.write_all(slice).map_err(Error::IoPlain)?;
            written += to - from;
        }
    }
    Ok(written)
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
