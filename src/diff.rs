//! Differences between two snapshots: which streams changed, and for tar streams which members
//! were added, removed or modified.
//!
//! The cost grows with what differs, not with the size of the streams. A member index is a
//! stream like any other, stored as a content-defined tree, and its encoding holds no absolute
//! offsets, so equal subtrees of two indexes are equal runs of member records. The two trees are
//! walked together: at each step the sequences of subtrees are aligned by id (patience style:
//! ids that occur once on each side, longest increasing run, then equal neighbours), aligned
//! subtrees are skipped, and only the unaligned stretches are opened further, down to data
//! blobs. What remains are a few "hunks": byte ranges where the indexes differ.
//!
//! Records are not aligned with blobs, so decoding a hunk starts at a record boundary found in
//! the shared bytes just before it: the first position from which records decode as a
//! consistent chain (tag, minimal varints, block-aligned offsets, sizes that agree) on both
//! sides. Decoding goes on past the hunk until both sides reach a record boundary at the same
//! distance past it, after which the bytes, and so the records, are the same again. Records
//! decoded in the shared context appear on both sides and cancel out. If anything looks wrong,
//! the diff falls back to decoding from the start of the index (slower, still exact).
//!
//! Decoded records are then matched by path (tar order may differ between snapshots: `docker
//! export` is not sorted), so a moved member is not reported as removed and added.
//!
//! Only metadata is compared (type, mode, owner, mtime, size, link target, device numbers), as
//! the index records it: a file rewritten with the same size and mtime is not reported.

use crate::browse::{BlobCache, MemberIter, NodeCache, StreamReader, normalize_path, take_failure};
use crate::error::{Error, Result};
use crate::format::manifest::{Manifest, MembersRef, StreamEntry};
use crate::id::Id;
use crate::members::{MAGIC, MemberIndexDecoder, MemberIndexEncoder, MemberIndexError};
use crate::repo::Repo;
use crate::tarscan::{Member, MemberKind};
use crate::tree::NodeSource;
use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

/// A gap of shared bytes up to this size is decoded through rather than resynchronized.
const CONTINUE_LIMIT: u64 = 16 << 10;
/// First look this far back into the shared bytes for a record boundary...
const LOOKBACK: u64 = 4 << 10;
/// ...and widen up to this far before decoding from the last known boundary instead.
const MAX_LOOKBACK: u64 = 1 << 20;
/// Bytes past the start of a hunk that a candidate boundary must decode through.
const PROBE: u64 = 4 << 10;
/// Records a candidate boundary must yield (unless it reaches the end of the index).
const MIN_CHAIN: usize = 3;
/// Blobs kept for re-reading (the shared blob before a hunk is read by both sides).
const CACHE_BLOBS: usize = 16;
/// Tree nodes kept likewise (the top of both trees, read again by every reader).
const CACHE_NODES: usize = 64;

/// Where the diff reads from: blobs and nodes through small caches.
struct Sources<'r> {
    repo: &'r Repo,
    nodes: &'r NodeCache<'r>,
    cache: Arc<BlobCache>,
}

/// A member present in both snapshots with different metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Modified {
    pub old: Member,
    pub new: Member,
    /// Names of the fields that differ: "type", "mode", "uid", "gid", "mtime", "size",
    /// "link_target", "device", "sparse".
    pub changes: Vec<&'static str>,
}

/// How much work a member diff did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DiffStats {
    /// Byte ranges where the two indexes differ.
    pub hunks: u64,
    /// Tree nodes opened while aligning the two indexes.
    pub nodes_read: u64,
    /// Member records decoded (both sides).
    pub records_decoded: u64,
    /// True when the fast path gave up and both indexes were decoded from their start.
    pub full_decode: bool,
}

/// Members added, removed and modified between two member indexes, each sorted by path.
/// Paths in the members are as recorded; compare them with [`normalize_path`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberDiff {
    pub added: Vec<Member>,
    pub removed: Vec<Member>,
    pub modified: Vec<Modified>,
    pub stats: DiffStats,
}

impl MemberDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.modified.is_empty()
    }
}

/// What happened to one stream between two snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamChange {
    Added,
    Removed,
    Modified,
    Unchanged,
}

#[derive(Clone, Debug)]
pub struct StreamDiff {
    pub name: String,
    pub change: StreamChange,
    pub old: Option<StreamEntry>,
    pub new: Option<StreamEntry>,
    /// For a modified stream that has a member index on both sides.
    pub members: Option<MemberDiff>,
}

/// Compares the streams of two snapshots (only `only` when given). Two single-stream snapshots
/// are compared with each other whatever their stream names.
pub fn diff_snapshots(
    repo: &Repo,
    a: &Manifest,
    b: &Manifest,
    only: Option<&str>,
) -> Result<Vec<StreamDiff>> {
    let pairs: Vec<(String, Option<&StreamEntry>, Option<&StreamEntry>)> = match only {
        Some(name) => {
            let old = a.streams.iter().find(|s| s.name == name);
            let new = b.streams.iter().find(|s| s.name == name);
            if old.is_none() && new.is_none() {
                return Err(Error::Invalid(format!(
                    "neither snapshot has a stream {name:?}"
                )));
            }
            vec![(name.to_string(), old, new)]
        }
        None if a.streams.len() == 1 && b.streams.len() == 1 => {
            vec![(
                b.streams[0].name.clone(),
                Some(&a.streams[0]),
                Some(&b.streams[0]),
            )]
        }
        None => {
            let mut pairs: Vec<_> = a
                .streams
                .iter()
                .map(|s| {
                    let new = b.streams.iter().find(|n| n.name == s.name);
                    (s.name.clone(), Some(s), new)
                })
                .collect();
            for s in &b.streams {
                if !a.streams.iter().any(|o| o.name == s.name) {
                    pairs.push((s.name.clone(), None, Some(s)));
                }
            }
            pairs
        }
    };
    pairs
        .into_iter()
        .map(|(name, old, new)| diff_stream(repo, name, old, new))
        .collect()
}

fn diff_stream(
    repo: &Repo,
    name: String,
    old: Option<&StreamEntry>,
    new: Option<&StreamEntry>,
) -> Result<StreamDiff> {
    let (change, members) = match (old, new) {
        (None, _) => (StreamChange::Added, None),
        (_, None) => (StreamChange::Removed, None),
        (Some(o), Some(n)) if o.digest == n.digest => (StreamChange::Unchanged, None),
        (Some(o), Some(n)) => {
            let members = match (&o.members, &n.members) {
                (Some(a), Some(b)) => Some(diff_members(repo, a, b)?),
                _ => None,
            };
            (StreamChange::Modified, members)
        }
    };
    Ok(StreamDiff {
        name,
        change,
        old: old.cloned(),
        new: new.cloned(),
        members,
    })
}

/// Compares two member indexes, reading only the parts that differ.
pub fn diff_members(repo: &Repo, a: &MembersRef, b: &MembersRef) -> Result<MemberDiff> {
    let mut stats = DiffStats::default();
    if a.root == b.root {
        return Ok(MemberDiff::default());
    }
    let nodes = NodeCache::new(repo, CACHE_NODES);
    let mut aligner = Aligner {
        nodes: &nodes,
        nodes_read: 0,
    };
    let mut hunks = Vec::new();
    aligner.diff_items(
        vec![Item::root(a.root, a.length)],
        (0, a.length),
        vec![Item::root(b.root, b.length)],
        (0, b.length),
        &mut hunks,
    )?;
    stats.hunks = hunks.len() as u64;
    stats.nodes_read = aligner.nodes_read;
    let cache = Arc::new(BlobCache::new(CACHE_BLOBS));
    let sources = Sources {
        repo,
        nodes: &nodes,
        cache,
    };
    let decoded = match decode_hunks(&sources, a, b, &hunks, true) {
        Ok(decoded) => decoded,
        Err(e) if !e.is_damage() => return Err(e),
        Err(_) => {
            stats.full_decode = true;
            decode_hunks(&sources, a, b, &hunks, false)?
        }
    };
    stats.records_decoded = (decoded.0.len() + decoded.1.len()) as u64;
    let mut diff = match_by_path(decoded.0, decoded.1);
    diff.stats = stats;
    Ok(diff)
}

/// A subtree or data blob of an index stream, placed in the stream.
#[derive(Clone, Copy, Debug)]
struct Item {
    id: Id,
    offset: u64,
    len: u64,
    /// A tree node (to be opened) rather than a data blob.
    node: bool,
}

impl Item {
    fn root(id: Id, len: u64) -> Item {
        Item {
            id,
            offset: 0,
            len,
            node: true,
        }
    }
}

/// A stretch where the indexes differ: `[a.0, a.1)` of one against `[b.0, b.1)` of the other.
/// The bytes between two hunks are the same on both sides (and equally long).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Hunk {
    a: (u64, u64),
    b: (u64, u64),
}

struct Aligner<'r> {
    nodes: &'r NodeCache<'r>,
    nodes_read: u64,
}

impl Aligner<'_> {
    /// Aligns two contiguous item sequences covering `span_a` and `span_b` and collects the
    /// hunks of their unaligned stretches, opening nodes until hunks are made of data blobs.
    fn diff_items(
        &mut self,
        a: Vec<Item>,
        span_a: (u64, u64),
        b: Vec<Item>,
        span_b: (u64, u64),
        hunks: &mut Vec<Hunk>,
    ) -> Result<()> {
        let anchors = align(&a, &b);
        let (mut ia, mut ib) = (0usize, 0usize);
        let sentinel = (a.len(), b.len());
        for (x, y) in anchors.into_iter().chain(std::iter::once(sentinel)) {
            if ia < x || ib < y {
                let range_a = segment_range(&a, ia, x, span_a.1);
                let range_b = segment_range(&b, ib, y, span_b.1);
                self.hunk(&a[ia..x], range_a, &b[ib..y], range_b, hunks)?;
            }
            ia = x + 1;
            ib = y + 1;
        }
        Ok(())
    }

    fn hunk(
        &mut self,
        a: &[Item],
        range_a: (u64, u64),
        b: &[Item],
        range_b: (u64, u64),
        hunks: &mut Vec<Hunk>,
    ) -> Result<()> {
        let all_blobs = a.iter().chain(b).all(|i| !i.node);
        // Against nothing, or with nothing left to open, the whole stretch has to be decoded.
        if a.is_empty() || b.is_empty() || all_blobs {
            hunks.push(Hunk {
                a: range_a,
                b: range_b,
            });
            return Ok(());
        }
        let opened_a = self.open(a)?;
        let opened_b = self.open(b)?;
        self.diff_items(opened_a, range_a, opened_b, range_b, hunks)
    }

    fn open(&mut self, items: &[Item]) -> Result<Vec<Item>> {
        let mut out = Vec::new();
        for item in items {
            if !item.node {
                out.push(*item);
                continue;
            }
            let node = self.nodes.read_node(&item.id)?;
            self.nodes_read += 1;
            if node.total_len() != item.len {
                return Err(Error::corrupt(
                    format!("tree node {}", item.id),
                    format!(
                        "covers {} bytes, parent says {}",
                        node.total_len(),
                        item.len
                    ),
                ));
            }
            let mut offset = item.offset;
            for child in &node.children {
                out.push(Item {
                    id: child.id,
                    offset,
                    len: child.len,
                    node: node.level > 0,
                });
                offset += child.len;
            }
        }
        Ok(out)
    }
}

/// Byte range of `items[from..to]`; an empty segment is the point where it would be.
fn segment_range(items: &[Item], from: usize, to: usize, span_end: u64) -> (u64, u64) {
    let at = |i: usize| items.get(i).map_or(span_end, |item| item.offset);
    (at(from), at(to))
}

/// Pairs of indexes `(i, j)` with `a[i].id == b[j].id`, increasing in both.
fn align(a: &[Item], b: &[Item]) -> Vec<(usize, usize)> {
    // (count in a, index in a, count in b, index in b)
    let mut seen: HashMap<Id, (u32, usize, u32, usize)> = HashMap::new();
    for (i, item) in a.iter().enumerate() {
        let e = seen.entry(item.id).or_insert((0, i, 0, 0));
        e.0 += 1;
    }
    for (j, item) in b.iter().enumerate() {
        if let Some(e) = seen.get_mut(&item.id) {
            e.2 += 1;
            e.3 = j;
        }
    }
    let mut unique: Vec<(usize, usize)> = seen
        .values()
        .filter(|e| e.0 == 1 && e.2 == 1)
        .map(|e| (e.1, e.3))
        .collect();
    unique.sort_unstable();
    let anchors = longest_increasing(&unique);
    extend_anchors(a, b, &anchors)
}

/// The longest subsequence of `pairs` (sorted by `.0`) whose `.1` increases.
fn longest_increasing(pairs: &[(usize, usize)]) -> Vec<(usize, usize)> {
    // tails[k]: index in `pairs` of the smallest `.1` ending an increasing run of length k + 1.
    let mut tails: Vec<usize> = Vec::new();
    let mut previous: Vec<Option<usize>> = vec![None; pairs.len()];
    for (i, &(_, y)) in pairs.iter().enumerate() {
        let k = tails.partition_point(|&t| pairs[t].1 < y);
        previous[i] = k.checked_sub(1).map(|k| tails[k]);
        if k == tails.len() {
            tails.push(i);
        } else {
            tails[k] = i;
        }
    }
    let mut out = Vec::with_capacity(tails.len());
    let mut cursor = tails.last().copied();
    while let Some(i) = cursor {
        out.push(pairs[i]);
        cursor = previous[i];
    }
    out.reverse();
    out
}

/// Adds equal items next to the anchors (ids that repeat cannot be anchors themselves).
fn extend_anchors(a: &[Item], b: &[Item], anchors: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(anchors.len());
    let (mut ia, mut ib) = (0usize, 0usize);
    let sentinel = (a.len(), b.len());
    for &(x, y) in anchors.iter().chain(std::iter::once(&sentinel)) {
        let (mut lo_a, mut lo_b) = (ia, ib);
        while lo_a < x && lo_b < y && a[lo_a].id == b[lo_b].id {
            out.push((lo_a, lo_b));
            lo_a += 1;
            lo_b += 1;
        }
        let (mut hi_a, mut hi_b) = (x, y);
        let mut tail = Vec::new();
        while hi_a > lo_a && hi_b > lo_b && a[hi_a - 1].id == b[hi_b - 1].id {
            hi_a -= 1;
            hi_b -= 1;
            tail.push((hi_a, hi_b));
        }
        out.extend(tail.into_iter().rev());
        if (x, y) != sentinel {
            out.push((x, y));
        }
        ia = x + 1;
        ib = y + 1;
    }
    out
}

/// Member records decoded from a position on, with the byte range each came from.
struct RecordIter<'r> {
    members: MemberIter<'r>,
    encoder: MemberIndexEncoder,
    scratch: Vec<u8>,
    pos: u64,
}

impl<'r> RecordIter<'r> {
    fn open(sources: &Sources<'r>, index: &MembersRef, pos: u64) -> Result<RecordIter<'r>> {
        let mut scratch = Vec::new();
        // Fresh on both sides: the decoder's offsets start from zero here, so re-encoding a
        // record reproduces its bytes, whose length tells where the next record starts.
        let encoder = MemberIndexEncoder::new(&mut scratch);
        Ok(RecordIter {
            members: MemberIter::open(
                sources.repo,
                sources.nodes,
                index,
                pos,
                sources.cache.clone(),
            )?,
            encoder,
            scratch,
            pos,
        })
    }

    fn next_record(&mut self) -> Result<Option<Member>> {
        let Some(member) = self.members.next().transpose()? else {
            return Ok(None);
        };
        self.scratch.clear();
        self.encoder
            .encode(&member, &mut self.scratch)
            .map_err(|e| Error::corrupt("member index", e.to_string()))?;
        self.pos += self.scratch.len() as u64;
        Ok(Some(member))
    }
}

/// Decodes the records around every hunk on both sides.
fn decode_hunks<'r>(
    sources: &Sources<'r>,
    a: &MembersRef,
    b: &MembersRef,
    hunks: &[Hunk],
    lookback: bool,
) -> Result<(Vec<Member>, Vec<Member>)> {
    let magic = MAGIC.len() as u64;
    if a.length < magic || b.length < magic {
        return Err(Error::corrupt("member index", "shorter than its magic"));
    }
    let mut out_a = Vec::new();
    let mut out_b = Vec::new();
    // Record boundaries at the same distance past the last hunk on both sides.
    let mut synced = (magic, magic);
    let mut iters: Option<(RecordIter<'r>, RecordIter<'r>)> = None;
    for hunk in hunks {
        let (start_a, start_b) = (hunk.a.0.max(magic), hunk.b.0.max(magic));
        let behind = start_a.saturating_sub(synced.0);
        if behind > CONTINUE_LIMIT || iters.is_none() {
            let from = if lookback && behind > CONTINUE_LIMIT {
                find_boundary(sources, a, b, (start_a, start_b), behind)?.unwrap_or(synced)
            } else {
                synced
            };
            let reopen = iters.as_ref().is_none_or(|(ia, _)| ia.pos != from.0);
            if reopen {
                iters = Some((
                    RecordIter::open(sources, a, from.0)?,
                    RecordIter::open(sources, b, from.1)?,
                ));
            }
        }
        let Some((iter_a, iter_b)) = iters.as_mut() else {
            continue;
        };
        decode_until(iter_a, hunk.a.1, &mut out_a)?;
        decode_until(iter_b, hunk.b.1, &mut out_b)?;
        // Past the hunk, step whichever side is nearer until both stand equally far past it.
        loop {
            let past_a = iter_a.pos - hunk.a.1;
            let past_b = iter_b.pos - hunk.b.1;
            let (iter, out) = match past_a.cmp(&past_b) {
                std::cmp::Ordering::Equal => break,
                std::cmp::Ordering::Less => (&mut *iter_a, &mut out_a),
                std::cmp::Ordering::Greater => (&mut *iter_b, &mut out_b),
            };
            match iter.next_record()? {
                Some(m) => out.push(m),
                None => {
                    return Err(Error::corrupt(
                        "member index",
                        "the two indexes do not end the same way after a change",
                    ));
                }
            }
        }
        synced = (iter_a.pos, iter_b.pos);
    }
    Ok((out_a, out_b))
}

fn decode_until(iter: &mut RecordIter<'_>, end: u64, out: &mut Vec<Member>) -> Result<()> {
    while iter.pos < end {
        match iter.next_record()? {
            Some(m) => out.push(m),
            None => {
                return Err(Error::corrupt(
                    "member index",
                    "ends in the middle of a record",
                ));
            }
        }
    }
    Ok(())
}

/// A record boundary shortly before `start` (the same distance before it on both sides, in
/// bytes both sides share), looking back at most `shared` bytes.
fn find_boundary(
    sources: &Sources<'_>,
    a: &MembersRef,
    b: &MembersRef,
    start: (u64, u64),
    shared: u64,
) -> Result<Option<(u64, u64)>> {
    let mut window = LOOKBACK;
    loop {
        let back = window.min(shared);
        let bytes_a = read_cached(sources, a, start.0 - back, start.0 + PROBE)?;
        let bytes_b = read_cached(sources, b, start.1 - back, start.1 + PROBE)?;
        let ends_a = start.0 + PROBE >= a.length;
        let ends_b = start.1 + PROBE >= b.length;
        for i in 0..back as usize {
            if chain_decodes(&bytes_a[i..], ends_a) && chain_decodes(&bytes_b[i..], ends_b) {
                let i = i as u64;
                return Ok(Some((start.0 - back + i, start.1 - back + i)));
            }
        }
        if back == shared || window >= MAX_LOOKBACK {
            return Ok(None);
        }
        window *= 4;
    }
}

fn read_cached(sources: &Sources<'_>, index: &MembersRef, start: u64, end: u64) -> Result<Vec<u8>> {
    let end = end.min(index.length);
    let mut reader = StreamReader::new(
        sources.repo,
        sources.nodes,
        &index.root,
        start,
        end,
        sources.cache.clone(),
    )?;
    let slot = reader.failure_slot();
    let mut out = Vec::new();
    reader
        .read_to_end(&mut out)
        .map_err(|e| take_failure(&slot, e))?;
    Ok(out)
}

/// True when `bytes` start with a chain of plausible records running to their end (cut off
/// by the end of the buffer, or ending exactly there when the buffer ends the index).
fn chain_decodes(bytes: &[u8], ends_index: bool) -> bool {
    if bytes.first() != Some(&1) {
        return false;
    }
    let mut records = 0usize;
    for result in MemberIndexDecoder::new(MAGIC.chain(bytes)) {
        match result {
            Ok(member) if plausible(&member) => records += 1,
            Ok(_) => return false,
            Err(MemberIndexError::Truncated { .. }) => return !ends_index && records >= MIN_CHAIN,
            Err(_) => return false,
        }
    }
    records >= MIN_CHAIN || (ends_index && records > 0)
}

/// What every record a tar scan produces satisfies (offsets are block aligned, a member has a
/// path and at least one header block, and stored length agrees with size).
fn plausible(m: &Member) -> bool {
    let header_len = m.data_offset - m.header_offset;
    let code = m.kind.code();
    let is_link = matches!(m.kind, MemberKind::Symlink | MemberKind::HardLink);
    let stored_ok = m.sparse
        || if (b'1'..=b'6').contains(&code) {
            m.data_len == 0
        } else {
            m.data_len == m.size
        };
    m.header_offset.is_multiple_of(512)
        && header_len.is_multiple_of(512)
        && header_len >= 512
        && !m.path.is_empty()
        && (0x20..0x7f).contains(&code)
        && (is_link || m.link_target.is_empty())
        && stored_ok
}

fn match_by_path(a: Vec<Member>, b: Vec<Member>) -> MemberDiff {
    let mut old: HashMap<Vec<u8>, Member> = HashMap::new();
    for m in a {
        old.insert(normalize_path(&m.path), m);
    }
    let mut new: HashMap<Vec<u8>, Member> = HashMap::new();
    for m in b {
        new.insert(normalize_path(&m.path), m);
    }
    let mut diff = MemberDiff::default();
    let mut added: Vec<(Vec<u8>, Member)> = Vec::new();
    let mut modified: Vec<(Vec<u8>, Modified)> = Vec::new();
    for (path, n) in new {
        match old.remove(&path) {
            None => added.push((path, n)),
            Some(o) => {
                let changes = changed_fields(&o, &n);
                if !changes.is_empty() {
                    modified.push((
                        path,
                        Modified {
                            old: o,
                            new: n,
                            changes,
                        },
                    ));
                }
            }
        }
    }
    let mut removed: Vec<(Vec<u8>, Member)> = old.into_iter().collect();
    added.sort_by(|x, y| x.0.cmp(&y.0));
    removed.sort_by(|x, y| x.0.cmp(&y.0));
    modified.sort_by(|x, y| x.0.cmp(&y.0));
    diff.added = added.into_iter().map(|(_, m)| m).collect();
    diff.removed = removed.into_iter().map(|(_, m)| m).collect();
    diff.modified = modified.into_iter().map(|(_, m)| m).collect();
    diff
}

fn changed_fields(o: &Member, n: &Member) -> Vec<&'static str> {
    let mut changes = Vec::new();
    let checks: [(&'static str, bool); 9] = [
        ("type", o.kind != n.kind),
        ("mode", o.mode != n.mode),
        ("uid", o.uid != n.uid),
        ("gid", o.gid != n.gid),
        ("mtime", o.mtime != n.mtime),
        ("size", o.size != n.size),
        ("link_target", o.link_target != n.link_target),
        (
            "device",
            (o.dev_major, o.dev_minor) != (n.dev_major, n.dev_minor),
        ),
        ("sparse", o.sparse != n.sparse),
    ];
    for (name, differs) in checks {
        if differs {
            changes.push(name);
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(ids: &[u8]) -> Vec<Item> {
        ids.iter()
            .enumerate()
            .map(|(i, &n)| Item {
                id: Id::of(&[n]),
                offset: i as u64 * 10,
                len: 10,
                node: false,
            })
            .collect()
    }

    #[test]
    fn alignment_skips_what_is_shared() {
        let a = items(&[1, 2, 3, 4, 5, 6]);
        let b = items(&[1, 2, 9, 4, 5, 6, 7]);
        assert_eq!(align(&a, &b), vec![(0, 0), (1, 1), (3, 3), (4, 4), (5, 5)]);
        // Repeated ids next to anchors are still aligned.
        let a = items(&[1, 7, 7, 2]);
        let b = items(&[1, 7, 7, 3, 2]);
        assert_eq!(align(&a, &b), vec![(0, 0), (1, 1), (2, 2), (3, 4)]);
        // Moved blocks: only an order-preserving subset is aligned.
        let a = items(&[1, 2, 3]);
        let b = items(&[3, 1, 2]);
        assert_eq!(align(&a, &b), vec![(0, 1), (1, 2)]);
    }

    #[test]
    fn longest_increasing_run() {
        let pairs = [(0, 5), (1, 1), (2, 2), (3, 9), (4, 3)];
        assert_eq!(longest_increasing(&pairs), vec![(1, 1), (2, 2), (4, 3)]);
        assert!(longest_increasing(&[]).is_empty());
    }

    #[test]
    fn segments_of_empty_stretches_are_points() {
        let a = items(&[1, 2, 3]);
        assert_eq!(segment_range(&a, 1, 2, 30), (10, 20));
        assert_eq!(segment_range(&a, 3, 3, 30), (30, 30));
        assert_eq!(segment_range(&a, 1, 1, 30), (10, 10));
    }

    fn member(path: &str, size: u64, header_offset: u64) -> Member {
        Member {
            path: path.as_bytes().to_vec(),
            link_target: Vec::new(),
            kind: MemberKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1,
            size,
            header_offset,
            data_offset: header_offset + 512,
            data_len: size,
            sparse: false,
            dev_major: 0,
            dev_minor: 0,
        }
    }

    #[test]
    fn chains_are_found_only_at_record_boundaries() {
        let mut bytes = Vec::new();
        let mut enc = MemberIndexEncoder::new(&mut bytes);
        let mut offset = 0;
        let mut starts = Vec::new();
        for i in 0..20u64 {
            let m = member(&format!("dir/file-{i}"), i * 7, offset);
            offset = m.padded_end().unwrap();
            starts.push(bytes.len());
            enc.encode(&m, &mut bytes).unwrap();
        }
        let body = &bytes[MAGIC.len()..];
        let starts: Vec<usize> = starts.iter().map(|s| s - MAGIC.len()).collect();
        for i in 0..body.len() - 200 {
            assert_eq!(
                chain_decodes(&body[i..body.len() - 10], false),
                starts.contains(&i),
                "offset {i}"
            );
        }
        assert!(chain_decodes(&body[starts[18]..], true));
    }

    #[test]
    fn matching_by_path_ignores_order() {
        let a = vec![
            member("./x", 1, 0),
            member("y", 2, 1024),
            member("z", 3, 2048),
        ];
        let b = vec![
            member("z", 3, 0),
            member("x", 5, 1024),
            member("w", 1, 2048),
        ];
        let d = match_by_path(a, b);
        assert_eq!(d.added.len(), 1);
        assert_eq!(d.added[0].path, b"w");
        assert_eq!(d.removed[0].path, b"y");
        assert_eq!(d.modified.len(), 1);
        assert_eq!(d.modified[0].changes, vec!["size"]);
    }
}
