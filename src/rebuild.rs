//! Recreating the index from pack tables and manifests alone.

use crate::error::{Error, Result};
use crate::format::config::Config;
use crate::index::Index;
use crate::store::Layout;
use std::fs::{self, File};

#[derive(Debug, Default, serde::Serialize)]
pub struct RebuildReport {
    pub packs: u64,
    pub blobs: u64,
    pub snapshots: u64,
    /// Packs whose table could not be read, with the reason; their blobs are not indexed.
    pub unreadable_packs: Vec<String>,
    /// Manifests that did not verify; they are not indexed.
    pub unreadable_snapshots: Vec<String>,
}

/// Recreates the index from pack tables and manifests, in place and in one transaction (see
/// `Index::refill`): processes that have the index open are never left writing to a file that
/// was replaced. Only a file that is not a usable SQLite database is deleted and recreated.
/// Unless `force`, an index another process completed in the meantime is kept.
pub fn rebuild_index(layout: &Layout, cfg: &Config, force: bool) -> Result<RebuildReport> {
    let path = layout.index();
    let index = match Index::open_any(&path, &cfg.id).and_then(|i| i.is_complete().map(|_| i)) {
        Ok(index) => index,
        Err(_) => {
            remove_db_files(&path)?;
            Index::open_any(&path, &cfg.id)?
        }
    };
    let mut report = RebuildReport::default();
    let packs = layout.list_packs()?;
    let snapshots = layout.list_snapshots()?;
    index.refill(&cfg.id, force, |index| {
        for (pack, len) in &packs {
            let path = layout.pack(pack);
            let table = File::open(&path)
                .map_err(|e| Error::io(&path, e))
                .and_then(|f| crate::pack::read_table(&f, *len, pack));
            match table {
                Ok(entries) => {
                    report.packs += 1;
                    report.blobs += entries.len() as u64;
                    index.add_pack(pack, *len, &entries)?;
                }
                Err(e) => report.unreadable_packs.push(format!("{pack}: {e}")),
            }
        }
        for id in &snapshots {
            let path = layout.snapshot(id);
            let parsed = fs::read(&path)
                .map_err(|e| Error::io(&path, e))
                .and_then(|bytes| {
                    let m = crate::repo::decode_manifest(id, &bytes)?;
                    crate::repo::snapshot_row(*id, &m, bytes)
                });
            match parsed {
                Ok(row) => {
                    report.snapshots += 1;
                    index.add_snapshot(&row)?;
                }
                Err(e) => report.unreadable_snapshots.push(format!("{id}: {e}")),
            }
        }
        Ok(())
    })?;
    Ok(report)
}

fn remove_db_files(db: &std::path::Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(std::path::PathBuf::from(p), e)),
        }
    }
    Ok(())
}

/// `repo rebuild-index`: works whatever state index.sqlite is in (missing, empty, truncated,
/// corrupt), since it only reads the config, the packs and the manifests.
pub fn rebuild_repository_index(path: &std::path::Path) -> Result<RebuildReport> {
    let layout = Layout::new(path);
    let config_path = layout.config();
    let bytes = match fs::read(&config_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotARepository(path.to_path_buf()));
        }
        Err(e) => return Err(Error::io(config_path, e)),
    };
    let cfg =
        match crate::format::config::decode(&bytes).map_err(|e| Error::corrupt("config", e.0))? {
            crate::format::config::Decoded::Ok(c) => c,
            crate::format::config::Decoded::Newer { found } => {
                return Err(Error::NewerFormat {
                    found,
                    supported: crate::format::config::VERSION,
                });
            }
        };
    let _lock = crate::lock::RepoLock::acquire(
        &layout,
        crate::lock::LockKind::Exclusive,
        "rebuild-index",
        crate::repo::DEFAULT_LOCK_WAIT,
    )?;
    rebuild_index(&layout, &cfg, true)
}
