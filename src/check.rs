//! Integrity checks.
//!
//! Structure: manifests parse and match their ids; every indexed pack exists with its indexed
//! size and a table that agrees with the index rows; every blob reachable from a snapshot is
//! indexed and every reachable tree node decodes; each stream's tree covers its length.
//! Data (`--read-data`, or a subset): every byte of every selected pack is read, the pack's
//! BLAKE3 compared with its name, and every blob decompressed and re-hashed (see `pack_scan`).
//! The report names every damaged pack and every snapshot that can no longer be restored in full.

use crate::error::{Error, Result};
use crate::format::pack::PackEntry;
use crate::id::Id;
use crate::lock::LockKind;
use crate::pack_scan::{PackScan, scan_pack};
use crate::progress::Progress;
use crate::repo::Repo;
use rayon::prelude::*;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;

/// Which packs `--read-data` reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReadData {
    None,
    All,
    /// Slice `n` (1-based) of `m`: m runs with n = 1..=m together read every pack once.
    Slice {
        n: u64,
        m: u64,
    },
    /// A random fraction, in percent.
    Percent(f64),
}

impl std::str::FromStr for ReadData {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<ReadData, String> {
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.parse().map_err(|_| format!("bad percentage {s:?}"))?;
            if !(0.0..=100.0).contains(&p) {
                return Err(format!("percentage {s:?} out of range"));
            }
            return Ok(ReadData::Percent(p));
        }
        let (n, m) = s
            .split_once('/')
            .ok_or_else(|| format!("subset {s:?}: use n/m (e.g. 2/7) or a percentage (e.g. 5%)"))?;
        let n: u64 = n.parse().map_err(|_| format!("bad subset {s:?}"))?;
        let m: u64 = m.parse().map_err(|_| format!("bad subset {s:?}"))?;
        if m == 0 || n == 0 || n > m {
            return Err(format!("subset {s:?}: need 1 <= n <= m"));
        }
        Ok(ReadData::Slice { n, m })
    }
}

impl ReadData {
    fn selects(&self, pack: &Id, salt: u64) -> bool {
        let key = u64::from_le_bytes(pack.0[..8].try_into().unwrap_or([0; 8]));
        match *self {
            ReadData::None => false,
            ReadData::All => true,
            ReadData::Slice { n, m } => key % m == n - 1,
            ReadData::Percent(p) => {
                let h = blake3::hash(&[pack.0.as_slice(), &salt.to_le_bytes()].concat());
                let r = u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap_or([0; 8]));
                (r as f64 / u64::MAX as f64) * 100.0 < p
            }
        }
    }
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub ok: bool,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub damaged_snapshots: Vec<Id>,
    pub damaged_packs: Vec<Id>,
    pub snapshots: u64,
    pub packs: u64,
    pub packs_read: u64,
    pub blobs_read: u64,
    pub bytes_read: u64,
}

/// What check has found so far.
#[derive(Default)]
struct Findings {
    report: CheckReport,
    /// Blob ids that cannot be read; snapshots reaching any of them are damaged.
    bad_ids: HashSet<Id>,
    damaged_snaps: BTreeSet<Id>,
    damaged_packs: BTreeSet<Id>,
}

/// The packs, with their sizes: on disk, and as the index has them.
struct Packs {
    disk_packs: HashMap<Id, u64>,
    indexed: Vec<(Id, u64)>,
}

/// What the structural phase learnt that the later phases need.
struct Inventory {
    packs: Packs,
    snapshots: Vec<(Id, crate::format::manifest::Manifest)>,
}

pub fn check(repo: &Repo, read_data: ReadData, progress: &dyn Progress) -> Result<CheckReport> {
    let _lock = repo.lock(LockKind::Shared, "check")?;
    let mut f = Findings::default();
    // One read transaction for the whole walk: SQLite then takes its locks once, and the
    // live-set inserts share one transaction of the temp database instead of one each.
    let inventory = repo
        .index
        .in_read_transaction(|| check_structure(repo, &mut f, progress))?;
    if read_data != ReadData::None {
        check_data(repo, read_data, &inventory.packs, &mut f, progress)?;
    }
    progress.finish();

    if !f.bad_ids.is_empty() {
        repo.index.in_read_transaction(|| {
            for (sid, m) in &inventory.snapshots {
                if reaches_any(repo, m, &f.bad_ids)? {
                    f.damaged_snaps.insert(*sid);
                }
            }
            Ok(())
        })?;
    }
    let mut r = f.report;
    r.damaged_snapshots = f.damaged_snaps.into_iter().collect();
    r.damaged_packs = f.damaged_packs.into_iter().collect();
    r.ok = r.errors.is_empty();
    Ok(r)
}

/// Manifests, packs against the index, and everything snapshots reach.
fn check_structure(repo: &Repo, f: &mut Findings, progress: &dyn Progress) -> Result<Inventory> {
    check_manifests(repo, f)?;
    let packs = check_packs(repo, f, progress)?;
    let snapshots = repo.snapshots()?;
    check_reachability(repo, &snapshots, f, progress)?;
    Ok(Inventory { packs, snapshots })
}

fn check_manifests(repo: &Repo, f: &mut Findings) -> Result<()> {
    let on_disk = repo.layout.list_snapshots()?;
    f.report.snapshots = on_disk.len() as u64;
    for id in &on_disk {
        if let Err(e) = repo.read_manifest(id) {
            f.report.errors.push(format!("snapshot {id}: {e}"));
            f.damaged_snaps.insert(*id);
        }
    }
    Ok(())
}

/// Every indexed pack exists with its indexed size and a table that agrees with the index.
fn check_packs(repo: &Repo, f: &mut Findings, progress: &dyn Progress) -> Result<Packs> {
    let r = &mut f.report;
    let disk_packs: HashMap<Id, u64> = repo.layout.list_packs()?.into_iter().collect();
    let indexed = repo.index.packs()?;
    r.packs = disk_packs.len() as u64;
    let indexed_ids: HashSet<Id> = indexed.iter().map(|(id, _)| *id).collect();
    for id in disk_packs.keys() {
        if !indexed_ids.contains(id) {
            r.warnings.push(format!(
                "pack {id} is not in the index (left by an interrupted write; `repo gc` reclaims or adopts it)"
            ));
        }
    }
    progress.start("check: packs", Some(indexed.len() as u64));
    for (id, size) in &indexed {
        progress.advance(1);
        let rows = pack_rows(repo, id)?;
        let Some(&actual) = disk_packs.get(id) else {
            r.errors.push(format!(
                "pack {id} is missing ({} indexed blobs lost)",
                rows.len()
            ));
            f.damaged_packs.insert(*id);
            f.bad_ids.extend(rows.iter().map(|e| e.id));
            continue;
        };
        if actual != *size {
            r.errors.push(format!(
                "pack {id} is {actual} bytes, the index says {size}"
            ));
            f.damaged_packs.insert(*id);
        }
        let path = repo.layout.pack(id);
        let table = fs::File::open(&path)
            .map_err(|e| Error::io(&path, e))
            .and_then(|file| crate::pack::read_table(&file, actual, id));
        match table {
            Err(e) => {
                r.errors.push(format!("pack {id}: table unreadable: {e}"));
                f.damaged_packs.insert(*id);
            }
            Ok(entries) => {
                let by_id: HashMap<Id, &PackEntry> = entries.iter().map(|e| (e.id, e)).collect();
                for row in &rows {
                    if by_id.get(&row.id).is_none_or(|e| *e != row) {
                        r.errors.push(format!(
                            "index row for blob {} does not match pack {id}'s table (stale index: run `cairn repo rebuild-index`)",
                            row.id
                        ));
                        f.bad_ids.insert(row.id);
                    }
                }
            }
        }
    }
    Ok(Packs {
        disk_packs,
        indexed,
    })
}

/// Each stream's tree covers its length; every reachable tree node decodes and every reachable
/// blob is indexed.
fn check_reachability(
    repo: &Repo,
    snapshots: &[(Id, crate::format::manifest::Manifest)],
    f: &mut Findings,
    progress: &dyn Progress,
) -> Result<()> {
    crate::mark::reset(repo)?;
    let mut stats = crate::mark::MarkStats::default();
    progress.start("check: snapshots", Some(snapshots.len() as u64));
    for (sid, m) in snapshots {
        progress.advance(1);
        for s in &m.streams {
            match crate::tree::NodeSource::read_node(repo, &s.root) {
                Ok(node) if node.total_len() != s.length => {
                    f.report.errors.push(format!(
                        "snapshot {sid} stream {:?}: tree covers {} bytes, manifest says {}",
                        s.name,
                        node.total_len(),
                        s.length
                    ));
                    f.damaged_snaps.insert(*sid);
                }
                _ => {}
            }
        }
        for root in crate::mark::roots(m) {
            crate::mark::mark_tree(repo, root, &mut stats, &mut |node, e| {
                f.report.errors.push(format!("tree node {node}: {e}"));
                f.bad_ids.insert(node);
                Ok(())
            })?;
        }
    }
    for id in crate::mark::unindexed_live(repo, usize::MAX)? {
        f.report
            .errors
            .push(format!("blob {id} is referenced but not indexed"));
        f.bad_ids.insert(id);
    }
    Ok(())
}

/// What reading one pack found, without its table (which only counts).
struct PackVerdict {
    id: Id,
    hash_ok: bool,
    blobs: u64,
    bad_blobs: Vec<(Id, String)>,
    bytes: u64,
}

impl From<PackScan> for PackVerdict {
    fn from(s: PackScan) -> PackVerdict {
        PackVerdict {
            id: s.id,
            hash_ok: s.hash_ok,
            blobs: s.entries.map_or(0, |e| e.len() as u64),
            bad_blobs: s.bad_blobs,
            bytes: s.bytes,
        }
    }
}

/// Reads the selected packs: every byte against the pack's name, every blob against its id.
fn check_data(
    repo: &Repo,
    read_data: ReadData,
    packs: &Packs,
    f: &mut Findings,
    progress: &dyn Progress,
) -> Result<()> {
    let salt = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let selected: Vec<Id> = packs
        .indexed
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| packs.disk_packs.contains_key(id) && read_data.selects(id, salt))
        .collect();
    let total: u64 = selected
        .iter()
        .filter_map(|id| packs.disk_packs.get(id))
        .sum();
    progress.start("check: reading data", Some(total));
    let layout = &repo.layout;
    // Packs in parallel, and each pack's segments in parallel too (see `pack_scan`), so the
    // pool stays busy to the last pack.
    let verdicts: Vec<Result<PackVerdict>> = selected
        .par_iter()
        .map(|id| scan_pack(layout, id, progress).map(PackVerdict::from))
        .collect();
    let r = &mut f.report;
    for verdict in verdicts {
        let v = verdict?;
        r.packs_read += 1;
        r.bytes_read += v.bytes;
        r.blobs_read += v.blobs;
        for (_, why) in &v.bad_blobs {
            r.errors.push(format!("pack {}: {why}", v.id));
        }
        if !v.bad_blobs.is_empty() || !v.hash_ok {
            if v.bad_blobs.is_empty() {
                r.errors
                    .push(format!("pack {}: contents do not match its name", v.id));
            }
            f.damaged_packs.insert(v.id);
        }
        // A blob is lost only if the index points at the damaged copy.
        for (blob, _) in v.bad_blobs {
            if repo.index.locate(&blob)?.is_some_and(|l| l.pack == v.id) {
                f.bad_ids.insert(blob);
            }
        }
    }
    Ok(())
}

/// Index rows of one pack, as table entries.
pub(crate) fn pack_rows(repo: &Repo, pack: &Id) -> Result<Vec<PackEntry>> {
    let mut stmt = repo.index.conn().prepare_cached(&format!(
        "SELECT b.id, {} FROM blobs b JOIN packs p ON p.pack_no = b.pack_no WHERE p.id = ?1",
        crate::index::LOCATION_COLUMNS
    ))?;
    let mut rows = stmt.query([&pack.0[..]])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let id = Id::from_slice(&row.get::<_, Vec<u8>>(0)?)
            .ok_or_else(|| Error::corrupt("index", format!("bad blob row in pack {pack}")))?;
        let loc = crate::index::blob_location(row, 1, *pack, &id)?;
        out.push(PackEntry {
            id,
            kind: loc.kind,
            compression: loc.compression,
            offset: loc.offset,
            stored_len: loc.stored_len,
            raw_len: loc.raw_len,
            frame: loc.frame,
        });
    }
    Ok(out)
}

/// True when any blob a snapshot needs is in `bad`, is not indexed, or cannot be read while
/// walking.
pub(crate) fn reaches_any(
    repo: &Repo,
    m: &crate::format::manifest::Manifest,
    bad: &HashSet<Id>,
) -> Result<bool> {
    let mut seen: HashSet<Id> = HashSet::new();
    for root in crate::mark::roots(m) {
        let mut stack = vec![root];
        while let Some(id) = stack.pop() {
            if bad.contains(&id) {
                return Ok(true);
            }
            if !seen.insert(id) {
                continue;
            }
            let node = match crate::tree::NodeSource::read_node(repo, &id) {
                Ok(n) => n,
                Err(_) => return Ok(true),
            };
            for c in &node.children {
                if node.level > 0 {
                    stack.push(c.id);
                } else if bad.contains(&c.id) || !repo.index.contains(&c.id)? {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct StreamVerdict {
    pub name: String,
    pub bytes: u64,
    pub ok: bool,
    pub error: Option<String>,
}

/// Reassembles every stream of a snapshot without writing it and checks each digest.
pub fn verify_snapshot(
    repo: &Repo,
    manifest: &crate::format::manifest::Manifest,
    progress: &dyn Progress,
) -> Result<Vec<StreamVerdict>> {
    let _lock = repo.lock(LockKind::Shared, "verify")?;
    let mut out = Vec::new();
    for s in &manifest.streams {
        progress.start(&format!("verify {}", s.name), Some(s.length));
        let res = crate::restore::restore_stream(repo, s, &mut std::io::sink(), progress).and_then(
            |()| match &s.members {
                Some(mr) => {
                    crate::restore::read_range(repo, &mr.root, 0, mr.length, &mut |_| Ok(()))
                }
                None => Ok(()),
            },
        );
        out.push(StreamVerdict {
            name: s.name.clone(),
            bytes: s.length,
            ok: res.is_ok(),
            error: res.err().map(|e| e.to_string()),
        });
    }
    progress.finish();
    Ok(out)
}
