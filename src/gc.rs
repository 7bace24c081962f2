//! Garbage collection: delete or repack packs that hold blobs no snapshot reaches.
//!
//! Under an exclusive lock: (1) index any pack file the index does not know (a crash can leave
//! such packs, and a pack is never deleted on the index's word alone); (2) mark everything the
//! snapshots reach (`mark`); (3) refuse to go on if a reachable blob is not indexed; (4) copy the
//! live blobs of mostly-dead packs into new packs and make those durable; (5) commit the index
//! (new locations in, old packs out) in one transaction; (6) only then delete old pack files.
//! A kill at any point leaves every snapshot restorable; the next gc finishes the job, since
//! leftover packs are either unindexed (adopted, found dead, deleted) or still indexed.

use crate::error::{Error, Result};
use crate::format::{BlobKind, Compression};
use crate::id::Id;
use crate::index::BlobLocation;
use crate::lock::{LockKind, RepoLock};
use crate::pack::{FinishedPack, PackWriter, frame_slice, unpack_blob, unpack_frame};
use crate::progress::Progress;
use crate::repo::Repo;
use rusqlite::params;
use std::collections::HashSet;
use std::fs;

#[derive(Clone, Debug)]
pub struct GcOptions {
    pub dry_run: bool,
    /// Repack a pack when more than this percentage of it is unused.
    pub max_unused_percent: f64,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            dry_run: false,
            max_unused_percent: 10.0,
        }
    }
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub snapshots: u64,
    pub packs_before: u64,
    pub packs_adopted: u64,
    pub packs_deleted: u64,
    pub packs_rewritten: u64,
    pub packs_written: u64,
    pub live_blobs: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub bytes_freed: u64,
}

struct PackUse {
    pack_no: i64,
    id: Id,
    size: u64,
    /// Entries in the pack's table (indexed or not).
    entries: u64,
    live_blobs: u64,
    live_bytes: u64,
}

impl PackUse {
    /// Bytes of blobs nobody needs: everything but live blobs, header, table and trailer.
    fn unused_bytes(&self) -> u64 {
        let overhead = crate::format::pack::HEADER_LEN
            + self.entries * crate::format::pack::ENTRY_LEN as u64
            + crate::format::pack::TRAILER_LEN as u64;
        self.size.saturating_sub(self.live_bytes + overhead)
    }
}

pub fn gc(repo: &Repo, opts: &GcOptions, progress: &dyn Progress) -> Result<GcReport> {
    let _lock = RepoLock::acquire(&repo.layout, LockKind::Exclusive, "gc", repo.lock_wait)?;
    let mut report = GcReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let on_disk = repo.layout.list_packs()?;
    report.packs_before = on_disk.len() as u64;
    report.bytes_before = on_disk.iter().map(|(_, len)| len).sum();
    report.packs_adopted = adopt_unindexed_packs(repo, &on_disk)?;
    let present: HashSet<Id> = on_disk.iter().map(|(id, _)| *id).collect();

    // Mark.
    crate::mark::reset(repo)?;
    let snapshots = repo.snapshots()?;
    report.snapshots = snapshots.len() as u64;
    let mut stats = crate::mark::MarkStats::default();
    progress.start("gc: marking", None);
    // One transaction for the whole walk: SQLite then takes its locks once, not once per
    // lookup and once per insert into the live set.
    repo.index.in_read_transaction(|| {
        for (sid, m) in &snapshots {
            for root in crate::mark::roots(m) {
                crate::mark::mark_tree(repo, root, &mut stats, &mut |node, e| {
                    Err(Error::corrupt(
                        format!("snapshot {sid}"),
                        format!(
                            "tree node {node} cannot be read ({e}); gc stopped, nothing deleted: run `cairn repo check`"
                        ),
                    ))
                })?;
            }
        }
        Ok(())
    })?;
    report.live_blobs = stats.tree_nodes + stats.data_blobs;
    let missing = crate::mark::unindexed_live(repo, 5)?;
    if let Some(first) = missing.first() {
        return Err(Error::corrupt(
            "repository",
            format!(
                "blob {first} is referenced by a snapshot but not indexed; gc stopped, nothing deleted: run `cairn repo check`"
            ),
        ));
    }

    // Plan.
    let uses = pack_usage(repo)?;
    let mut delete: Vec<&PackUse> = Vec::new();
    let mut repack: Vec<&PackUse> = Vec::new();
    for u in &uses {
        if u.live_blobs > 0 && !present.contains(&u.id) {
            return Err(Error::corrupt(
                format!("pack {}", u.id),
                "missing but holds blobs snapshots need; gc stopped: run `cairn repo check`",
            ));
        }
        if u.live_blobs == 0 {
            delete.push(u);
        } else {
            let unused = u.unused_bytes() as f64 / u.size.max(1) as f64;
            if unused * 100.0 > opts.max_unused_percent {
                repack.push(u);
            }
        }
    }
    report.packs_deleted = delete.len() as u64;
    report.packs_rewritten = repack.len() as u64;
    let old_bytes: u64 = delete.iter().chain(&repack).map(|u| u.size).sum();
    if opts.dry_run {
        let kept: u64 = repack.iter().map(|u| u.size - u.unused_bytes()).sum();
        report.bytes_freed = old_bytes.saturating_sub(kept);
        report.bytes_after = report.bytes_before - report.bytes_freed;
        return Ok(report);
    }

    // Copy live blobs of mostly-dead packs into new, durable packs.
    progress.start(
        "gc: repacking",
        Some(repack.iter().map(|u| u.live_bytes).sum()),
    );
    let new_packs = rewrite(repo, &repack, progress)?;
    report.packs_written = new_packs.len() as u64;

    // One transaction: old packs out of the index, new packs in.
    let old: Vec<&PackUse> = delete.iter().chain(&repack).copied().collect();
    {
        let tx = repo.index.conn().unchecked_transaction()?;
        for u in &old {
            tx.execute("DELETE FROM blobs WHERE pack_no = ?1", [u.pack_no])?;
            tx.execute("DELETE FROM packs WHERE pack_no = ?1", [u.pack_no])?;
        }
        for p in &new_packs {
            crate::index::insert_pack(&tx, &p.id, p.size, &p.entries)?;
        }
        tx.commit()?;
    }

    // Last: delete the old files. Packs are named by content, so a rewrite can reproduce the name
    // of a pack being deleted (e.g. redoing the work of a gc killed before its index commit):
    // such a file is the new pack and must stay.
    let written: HashSet<Id> = new_packs.iter().map(|p| p.id).collect();
    let mut dirs = HashSet::new();
    for u in old.iter().filter(|u| !written.contains(&u.id)) {
        let path = repo.layout.pack(&u.id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(path, e)),
        }
        dirs.insert(repo.layout.pack_dir(&u.id));
    }
    for d in dirs {
        crate::store::fsync_dir(&d)?;
    }
    clean_tmp(repo)?;
    let after: u64 = repo.layout.list_packs()?.iter().map(|(_, l)| l).sum();
    report.bytes_after = after;
    report.bytes_freed = report.bytes_before.saturating_sub(after);
    progress.finish();
    Ok(report)
}

/// Indexes pack files the index does not know. Unreadable ones are left alone for `repo check`.
fn adopt_unindexed_packs(repo: &Repo, on_disk: &[(Id, u64)]) -> Result<u64> {
    let indexed: HashSet<Id> = repo.index.packs()?.into_iter().map(|(id, _)| id).collect();
    let mut adopted = 0;
    for (id, len) in on_disk {
        if indexed.contains(id) {
            continue;
        }
        let path = repo.layout.pack(id);
        let Ok(file) = fs::File::open(&path) else {
            continue;
        };
        if let Ok(entries) = crate::pack::read_table(&file, *len, id) {
            repo.index.add_pack(id, *len, &entries)?;
            adopted += 1;
        }
    }
    Ok(adopted)
}

fn pack_usage(repo: &Repo) -> Result<Vec<PackUse>> {
    let mut stmt = repo.index.conn().prepare(
        "SELECT p.pack_no, p.id, p.size, p.blob_count, count(l.id), coalesce(sum(CASE WHEN l.id IS NULL THEN 0 ELSE b.stored_len END), 0)
         FROM packs p
         LEFT JOIN blobs b ON b.pack_no = p.pack_no
         LEFT JOIN temp.live l ON l.id = b.id
         GROUP BY p.pack_no",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, i64>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (pack_no, id, size, entries, live_blobs, live_bytes) = row?;
        out.push(PackUse {
            pack_no,
            id: Id::from_slice(&id).ok_or_else(|| Error::corrupt("index", "bad pack id"))?,
            size: u64::try_from(size).unwrap_or(0),
            entries: u64::try_from(entries).unwrap_or(0),
            live_blobs: u64::try_from(live_blobs).unwrap_or(0),
            live_bytes: u64::try_from(live_bytes).unwrap_or(0),
        });
    }
    Ok(out)
}

/// Copies the live blobs of `packs` into new packs, verifying each on the way (a damaged blob
/// stops gc rather than being copied), and makes the new packs durable. A shared frame whose
/// blobs are all live is copied as it is; the live blobs of a partly dead frame are compressed
/// again as a frame of their own.
fn rewrite(repo: &Repo, packs: &[&PackUse], progress: &dyn Progress) -> Result<Vec<FinishedPack>> {
    let mut out = Rewriter {
        repo,
        writers: [None, None],
        done: Vec::new(),
    };
    let mut copied: HashSet<Id> = HashSet::new();
    for u in packs {
        let mut stmt = repo.index.conn().prepare(&format!(
            "SELECT b.id, {} FROM blobs b JOIN temp.live l ON l.id = b.id
             WHERE b.pack_no = ?1 ORDER BY b.offset, b.frame_skip",
            crate::index::LOCATION_COLUMNS
        ))?;
        let mut rows = stmt.query(params![u.pack_no])?;
        let mut live: Vec<(Id, BlobLocation)> = Vec::new();
        while let Some(row) = rows.next()? {
            let id = Id::from_slice(&row.get::<_, Vec<u8>>(0)?)
                .ok_or_else(|| Error::corrupt("index", format!("bad row in pack {}", u.id)))?;
            if copied.insert(id) {
                live.push((id, crate::index::blob_location(row, 1, u.id, &id)?));
            }
        }
        // Consecutive rows at one offset are the live blobs of one shared frame.
        for run in live.chunk_by(|a, b| a.1.frame.is_some() && a.1.offset == b.1.offset) {
            let (first_id, first) = &run[0];
            let stored = repo
                .packs
                .read_at(&u.id, first.offset, first.stored_len as usize)?;
            match first.frame {
                None => {
                    let mut raw = vec![0u8; first.raw_len as usize];
                    unpack_blob(
                        &stored,
                        first.compression,
                        first.raw_len,
                        first_id,
                        &u.id,
                        &mut raw,
                    )?;
                    out.writer(first.kind)?.add(
                        *first_id,
                        first.kind,
                        first.compression,
                        first.raw_len,
                        &stored,
                    )?;
                }
                Some(f) => {
                    let frame = unpack_frame(&stored, f.raw_len, first_id, &u.id)?;
                    let mut members = Vec::with_capacity(run.len());
                    let mut joined = Vec::new();
                    for (id, loc) in run {
                        let frame_info = loc.frame.ok_or_else(|| {
                            Error::corrupt("index", format!("blob {id}: frame rows disagree"))
                        })?;
                        let bytes = frame_slice(&frame, frame_info, loc.raw_len, id, &u.id)?;
                        joined.extend_from_slice(bytes);
                        members.push((*id, loc.raw_len));
                    }
                    let w = out.writer(first.kind)?;
                    if joined.len() == frame.len() {
                        w.add_frame(first.kind, &members, &stored)?;
                    } else {
                        add_regrouped(
                            w,
                            first.kind,
                            &members,
                            &joined,
                            repo.config.compression.level,
                        )?;
                    }
                }
            }
            out.close_if_full(first.kind)?;
            progress.advance(stored.len() as u64);
        }
    }
    out.finish()
}

/// Stores blobs that shared a frame as a new, smaller frame, or one by one when that does not
/// compress.
fn add_regrouped(
    w: &mut PackWriter,
    kind: BlobKind,
    members: &[(Id, u32)],
    joined: &[u8],
    level: i32,
) -> Result<()> {
    if let Some(c) = crate::compress::compress(joined, level)
        .map_err(|e| Error::Invalid(format!("zstd: {e}")))?
    {
        return w.add_frame(kind, members, &c);
    }
    let mut at = 0usize;
    for &(id, len) in members {
        let bytes = joined
            .get(at..at + len as usize)
            .ok_or_else(|| Error::Invalid("regrouped frame shorter than its blobs".into()))?;
        w.add(id, kind, Compression::None, len, bytes)?;
        at += len as usize;
    }
    Ok(())
}

/// The new packs a gc writes: one open pack per blob kind.
struct Rewriter<'r> {
    repo: &'r Repo,
    writers: [Option<PackWriter>; 2],
    done: Vec<FinishedPack>,
}

impl Rewriter<'_> {
    fn writer(&mut self, kind: BlobKind) -> Result<&mut PackWriter> {
        let slot = &mut self.writers[usize::from(kind == BlobKind::Tree)];
        if slot.is_none() {
            *slot = Some(PackWriter::new(&self.repo.layout)?);
        }
        slot.as_mut()
            .ok_or_else(|| Error::Invalid("no open pack".into()))
    }

    fn close_if_full(&mut self, kind: BlobKind) -> Result<()> {
        let slot = &mut self.writers[usize::from(kind == BlobKind::Tree)];
        if slot
            .as_ref()
            .is_some_and(|w| w.len() >= self.repo.config.pack_size)
            && let Some(full) = slot.take()
        {
            self.done.push(full.finish(&self.repo.layout)?);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<FinishedPack>> {
        for w in self.writers.into_iter().flatten() {
            self.done.push(w.finish(&self.repo.layout)?);
        }
        Ok(self.done)
    }
}

/// Removes leftovers of interrupted writers; safe only under the exclusive lock.
fn clean_tmp(repo: &Repo) -> Result<()> {
    let dir = repo.layout.tmp();
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let _ = fs::remove_file(e.path());
    }
    Ok(())
}
