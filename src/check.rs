//! Integrity checks.
//!
//! Structure: manifests parse and match their ids; every indexed pack exists with its indexed
//! size and a table that agrees with the index rows; every blob reachable from a snapshot is
//! indexed and every reachable tree node decodes; each stream's tree covers its length.
//! Data (`--read-data`, or a subset): every selected pack is read whole, its BLAKE3 compared with
//! its name, and every blob decompressed and re-hashed.
//! The report names every damaged pack and every snapshot that can no longer be restored in full.

use crate::error::{Error, Result};
use crate::format::pack::PackEntry;
use crate::id::Id;
use crate::lock::LockKind;
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

/// What a full read of one pack found.
pub(crate) struct PackScan {
    pub id: Id,
    pub hash_ok: bool,
    pub entries: std::result::Result<Vec<PackEntry>, String>,
    /// Blobs whose bytes are damaged, with the reason.
    pub bad_blobs: Vec<(Id, String)>,
    pub bytes: u64,
}

/// Reads a pack whole and verifies everything in it.
pub(crate) fn scan_pack(layout: &crate::store::Layout, id: &Id) -> Result<PackScan> {
    let path = layout.pack(id);
    let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let hash_ok = Id::of(&bytes) == *id;
    let len = bytes.len() as u64;
    let file = fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
    let entries = crate::pack::read_table(&file, len, id).map_err(|e| e.to_string());
    let mut bad_blobs = Vec::new();
    if let Ok(entries) = &entries {
        crate::pack::for_each_blob(&bytes, entries, id, |e, blob| {
            if let Err(err) = blob {
                bad_blobs.push((e.id, err.to_string()));
            }
            Ok(())
        })?;
    }
    Ok(PackScan {
        id: *id,
        hash_ok,
        entries,
        bad_blobs,
        bytes: len,
    })
}

pub fn check(repo: &Repo, read_data: ReadData, progress: &dyn Progress) -> Result<CheckReport> {
    let _lock = repo.lock(LockKind::Shared, "check")?;
    let mut r = CheckReport::default();
    // Blob ids that cannot be read; snapshots reaching any of them are damaged.
    let mut bad_ids: HashSet<Id> = HashSet::new();
    let mut damaged_snaps: BTreeSet<Id> = BTreeSet::new();
    let mut damaged_packs: BTreeSet<Id> = BTreeSet::new();

    // Manifests.
    let on_disk = repo.layout.list_snapshots()?;
    r.snapshots = on_disk.len() as u64;
    for id in &on_disk {
        if let Err(e) = repo.read_manifest(id) {
            r.errors.push(format!("snapshot {id}: {e}"));
            damaged_snaps.insert(*id);
        }
    }

    // Packs against the index.
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
            damaged_packs.insert(*id);
            bad_ids.extend(rows.iter().map(|e| e.id));
            continue;
        };
        if actual != *size {
            r.errors.push(format!(
                "pack {id} is {actual} bytes, the index says {size}"
            ));
            damaged_packs.insert(*id);
        }
        let path = repo.layout.pack(id);
        let table = fs::File::open(&path)
            .map_err(|e| Error::io(&path, e))
            .and_then(|f| crate::pack::read_table(&f, actual, id));
        match table {
            Err(e) => {
                r.errors.push(format!("pack {id}: table unreadable: {e}"));
                damaged_packs.insert(*id);
            }
            Ok(entries) => {
                let by_id: HashMap<Id, &PackEntry> = entries.iter().map(|e| (e.id, e)).collect();
                for row in &rows {
                    if by_id.get(&row.id).is_none_or(|e| *e != row) {
                        r.errors.push(format!(
                            "index row for blob {} does not match pack {id}'s table (stale index: run `cairn repo rebuild-index`)",
                            row.id
                        ));
                        bad_ids.insert(row.id);
                    }
                }
            }
        }
    }

    // Reachability.
    crate::mark::reset(repo)?;
    let snapshots = repo.snapshots()?;
    let mut stats = crate::mark::MarkStats::default();
    progress.start("check: snapshots", Some(snapshots.len() as u64));
    for (sid, m) in &snapshots {
        progress.advance(1);
        for s in &m.streams {
            match crate::tree::NodeSource::read_node(repo, &s.root) {
                Ok(node) if node.total_len() != s.length => {
                    r.errors.push(format!(
                        "snapshot {sid} stream {:?}: tree covers {} bytes, manifest says {}",
                        s.name,
                        node.total_len(),
                        s.length
                    ));
                    damaged_snaps.insert(*sid);
                }
                _ => {}
            }
        }
        for root in crate::mark::roots(m) {
            crate::mark::mark_tree(repo, root, &mut stats, &mut |node, e| {
                r.errors.push(format!("tree node {node}: {e}"));
                bad_ids.insert(node);
                Ok(())
            })?;
        }
    }
    for id in crate::mark::unindexed_live(repo, usize::MAX)? {
        r.errors
            .push(format!("blob {id} is referenced but not indexed"));
        bad_ids.insert(id);
    }

    // Data.
    if read_data != ReadData::None {
        let salt = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let selected: Vec<Id> = indexed
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| disk_packs.contains_key(id) && read_data.selects(id, salt))
            .collect();
        let total: u64 = selected.iter().filter_map(|id| disk_packs.get(id)).sum();
        progress.start("check: reading data", Some(total));
        let layout = &repo.layout;
        let scans: Vec<Result<PackScan>> = selected
            .par_iter()
            .map(|id| {
                let s = scan_pack(layout, id);
                if let Ok(s) = &s {
                    progress.advance(s.bytes);
                }
                s
            })
            .collect();
        for scan in scans {
            let s = scan?;
            r.packs_read += 1;
            r.bytes_read += s.bytes;
            if let Ok(entries) = &s.entries {
                r.blobs_read += entries.len() as u64;
            }
            for (blob, why) in &s.bad_blobs {
                r.errors.push(format!("pack {}: {why}", s.id));
                let _ = blob;
            }
            if !s.bad_blobs.is_empty() || !s.hash_ok {
                if s.bad_blobs.is_empty() {
                    r.errors
                        .push(format!("pack {}: contents do not match its name", s.id));
                }
                damaged_packs.insert(s.id);
            }
            // A blob is lost only if the index points at the damaged copy.
            for (blob, _) in s.bad_blobs {
                if repo.index.locate(&blob)?.is_some_and(|l| l.pack == s.id) {
                    bad_ids.insert(blob);
                }
            }
        }
    }
    progress.finish();

    if !bad_ids.is_empty() {
        for (sid, m) in &snapshots {
            if reaches_any(repo, m, &bad_ids)? {
                damaged_snaps.insert(*sid);
            }
        }
    }
    r.damaged_snapshots = damaged_snaps.into_iter().collect();
    r.damaged_packs = damaged_packs.into_iter().collect();
    r.ok = r.errors.is_empty();
    Ok(r)
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
