//! Making a damaged repository consistent again without losing anything intact.
//!
//! Under an exclusive lock: every pack is read in full (see `pack_scan`) and verified. From a
//! damaged pack, the blobs that still verify are copied into new, durable packs; then the damaged
//! pack is moved to `quarantine/packs/` (never deleted). Manifests that do not verify are moved
//! to `quarantine/snapshots/`. The index is rebuilt from what remains, and every snapshot that can
//! no longer be restored in full is moved aside too, so that what `snapshots` lists restores.

use crate::error::{Error, Result};
use crate::format::BlobKind;
use crate::id::Id;
use crate::lock::{LockKind, RepoLock};
use crate::pack::{PackWriter, unpack_one};
use crate::pack_scan::scan_pack;
use crate::progress::Progress;
use crate::repo::Repo;
use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::FileExt;

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RepairReport {
    pub dry_run: bool,
    /// Damaged packs moved to quarantine/packs (or that would be).
    pub quarantined_packs: Vec<Id>,
    /// Intact blobs copied out of damaged packs.
    pub salvaged_blobs: u64,
    pub lost_blobs: u64,
    /// Manifests that do not verify, moved to quarantine/snapshots.
    pub quarantined_manifests: Vec<Id>,
    /// Snapshots that can no longer be restored in full, moved to quarantine/snapshots.
    pub incomplete_snapshots: Vec<Id>,
}

pub fn repair(
    path: &std::path::Path,
    dry_run: bool,
    progress: &dyn Progress,
) -> Result<RepairReport> {
    let mut report = RepairReport {
        dry_run,
        ..Default::default()
    };
    // Opening may itself rebuild a missing or foreign index; a corrupt one is rebuilt here.
    let repo = match Repo::open(path) {
        Ok(r) => r,
        Err(e) if e.is_damage() || matches!(e, Error::Index(_)) => {
            if dry_run {
                return Err(Error::Invalid(format!(
                    "{e}; the index must be rebuilt before a plan can be made (run without --dry-run, or `cairn repo rebuild-index`)"
                )));
            }
            crate::rebuild::rebuild_repository_index(path)?;
            Repo::open(path)?
        }
        Err(e) => return Err(e),
    };
    let lock = RepoLock::acquire(&repo.layout, LockKind::Exclusive, "repair", repo.lock_wait)?;
    let layout = repo.layout.clone();

    // 1. Packs.
    let packs = layout.list_packs()?;
    progress.start(
        "repair: reading packs",
        Some(packs.iter().map(|(_, l)| l).sum()),
    );
    let mut salvage_writer: [Option<PackWriter>; 2] = [None, None];
    let mut salvaged: HashSet<Id> = HashSet::new();
    for (id, len) in &packs {
        progress.advance(*len);
        let scan = scan_pack(&layout, id, &crate::progress::Silent)?;
        let intact = scan.hash_ok && scan.entries.is_ok() && scan.bad_blobs.is_empty();
        if intact {
            continue;
        }
        report.quarantined_packs.push(*id);
        // Which blobs can be read: from the table when it is intact, otherwise from the index.
        let candidates: Vec<crate::format::pack::PackEntry> = match &scan.entries {
            Ok(entries) => entries.clone(),
            Err(_) => index_rows(&repo, id)?,
        };
        let bad: HashSet<Id> = scan.bad_blobs.iter().map(|(b, _)| *b).collect();
        let file = fs::File::open(layout.pack(id)).map_err(|e| Error::io(layout.pack(id), e))?;
        for e in candidates {
            if bad.contains(&e.id) || salvaged.contains(&e.id) {
                report.lost_blobs += u64::from(bad.contains(&e.id));
                continue;
            }
            let mut stored = vec![0u8; e.stored_len as usize];
            let raw = file
                .read_exact_at(&mut stored, e.offset)
                .map_err(Error::IoPlain)
                .and_then(|()| unpack_one(&stored, e.compression, e.raw_len, e.frame, &e.id, id));
            let Ok(raw) = raw else {
                report.lost_blobs += 1;
                continue;
            };
            salvaged.insert(e.id);
            report.salvaged_blobs += 1;
            if dry_run {
                continue;
            }
            let slot = &mut salvage_writer[usize::from(e.kind == BlobKind::Tree)];
            if slot.is_none() {
                *slot = Some(PackWriter::new(&layout)?);
            }
            if let Some(w) = slot.as_mut() {
                if e.frame.is_none() {
                    w.add(e.id, e.kind, e.compression, e.raw_len, &stored)?;
                } else {
                    // Its frame is damaged elsewhere: store the good blob on its own.
                    w.add_compressed(e.id, e.kind, &raw, repo.config.compression.level)?;
                }
            }
        }
    }
    if !dry_run {
        // New packs are durable before anything is moved away.
        for w in salvage_writer.into_iter().flatten() {
            w.finish(&layout)?;
        }
        let qdir = layout.quarantine().join("packs");
        fs::create_dir_all(&qdir).map_err(|e| Error::io(&qdir, e))?;
        for id in &report.quarantined_packs {
            let dest = qdir.join(id.to_hex());
            fs::rename(layout.pack(id), &dest).map_err(|e| Error::io(&dest, e))?;
        }
        crate::store::fsync_dir(&qdir)?;
    }

    // 2. Manifests that do not verify.
    for id in layout.list_snapshots()? {
        if repo.read_manifest(&id).is_err() {
            report.quarantined_manifests.push(id);
        }
    }
    if !dry_run {
        quarantine_manifests(&layout, &report.quarantined_manifests)?;
    }

    // 3. Rebuild the index from what is left, then find snapshots that lost blobs.
    let lost: HashSet<Id> = if dry_run {
        lost_if_quarantined(&repo, &report.quarantined_packs, &salvaged)?
    } else {
        crate::rebuild::rebuild_index(&layout, &repo.config, true)?;
        HashSet::new()
    };
    drop(repo);
    let repo = Repo::open_unlocked_for_repair(path)?;
    for (sid, m) in repo.snapshots()? {
        if report.quarantined_manifests.contains(&sid) {
            continue;
        }
        if crate::check::reaches_any(&repo, &m, &lost)? {
            report.incomplete_snapshots.push(sid);
        }
    }
    if !dry_run {
        quarantine_manifests(&layout, &report.incomplete_snapshots)?;
        for id in report
            .incomplete_snapshots
            .iter()
            .chain(&report.quarantined_manifests)
        {
            repo.index.remove_snapshot(id)?;
        }
    }
    progress.finish();
    drop(lock);
    Ok(report)
}

/// Blobs that would be gone after quarantining `packs`: their indexed copies sit there and they
/// were not salvaged.
fn lost_if_quarantined(repo: &Repo, packs: &[Id], salvaged: &HashSet<Id>) -> Result<HashSet<Id>> {
    let mut lost = HashSet::new();
    for p in packs {
        for e in index_rows(repo, p)? {
            if !salvaged.contains(&e.id) {
                lost.insert(e.id);
            }
        }
    }
    Ok(lost)
}

fn index_rows(repo: &Repo, pack: &Id) -> Result<Vec<crate::format::pack::PackEntry>> {
    crate::check::pack_rows(repo, pack)
}

fn quarantine_manifests(layout: &crate::store::Layout, ids: &[Id]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let qdir = layout.quarantine().join("snapshots");
    fs::create_dir_all(&qdir).map_err(|e| Error::io(&qdir, e))?;
    for id in ids {
        let dest = qdir.join(id.to_hex());
        match fs::rename(layout.snapshot(id), &dest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(dest, e)),
        }
    }
    crate::store::fsync_dir(&layout.snapshots())?;
    crate::store::fsync_dir(&qdir)
}
