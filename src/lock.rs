//! Repository locks: shared (snapshot, restore, forget, check) and exclusive (gc, rebuild-index,
//! repair).
//!
//! A lock is a small JSON file in `locks/` naming its holder: host, pid, the process's start
//! time (so a recycled pid is not mistaken for the holder), the operation, and when it was taken.
//! While held, a background thread refreshes the file's mtime every `HEARTBEAT`. A lock is
//! stale when its heartbeat is older than `STALE_AFTER`, or at once when it was taken on this
//! host by a process that no longer exists (same pid and start time). PIDs alone are never
//! trusted: inside containers they are meaningless across hosts and namespaces.
//!
//! Taking a lock: write our file first, then list the others; if one conflicts (any exclusive
//! lock for us, or any lock at all when we want exclusive), remove ours and retry later. Since
//! every process writes before it looks, two conflicting processes cannot both proceed.

use crate::error::{Error, Result};
use crate::store::{Layout, fsync_dir};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

pub const HEARTBEAT: Duration = Duration::from_secs(30);
pub const STALE_AFTER: Duration = Duration::from_secs(300);
const RETRY: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    Shared,
    Exclusive,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub kind: LockKind,
    pub operation: String,
    pub host: String,
    pub pid: u32,
    /// Start time of the process in clock ticks since boot (Linux /proc), with the boot id, so
    /// that the same host can tell a live holder from a recycled pid.
    pub process_start: String,
    pub created: String,
}

/// A held lock; released (file removed) on drop.
pub struct RepoLock {
    path: PathBuf,
    /// Dropping it wakes the heartbeat thread at once, so releasing a lock costs no wait.
    stop: Option<crossbeam_channel::Sender<()>>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
}

impl RepoLock {
    /// Takes a lock, waiting up to `wait` for conflicting locks to go away.
    pub fn acquire(
        layout: &Layout,
        kind: LockKind,
        operation: &str,
        wait: Duration,
    ) -> Result<RepoLock> {
        let me = LockInfo {
            kind,
            operation: operation.to_string(),
            host: crate::ingest::hostname(),
            pid: std::process::id(),
            process_start: process_start(std::process::id()).unwrap_or_default(),
            created: crate::time::now_rfc3339(),
        };
        let dir = layout.locks();
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let name = format!("{}-{}", std::process::id(), unique_suffix());
        let path = dir.join(&name);
        let bytes = serde_json::to_vec_pretty(&me).map_err(|e| Error::Invalid(e.to_string()))?;
        let deadline = SystemTime::now() + wait;
        loop {
            write_lock_file(&dir, &name, &bytes)?;
            let conflicts: Vec<LockInfo> = list(layout)?
                .into_iter()
                .filter(|(p, info, stale)| {
                    p != &path
                        && !stale
                        && (kind == LockKind::Exclusive || info.kind == LockKind::Exclusive)
                })
                .map(|(_, info, _)| info)
                .collect();
            if conflicts.is_empty() {
                return Ok(RepoLock::held(path));
            }
            let _ = fs::remove_file(&path);
            if SystemTime::now() >= deadline {
                let who: Vec<String> = conflicts.iter().map(describe).collect();
                return Err(Error::Locked(format!(
                    "repository is locked by {} (a stale lock is removed with `cairn repo unlock`)",
                    who.join("; ")
                )));
            }
            // Random jitter so that two waiting processes do not keep colliding.
            let jitter = Duration::from_millis(u64::from(unique_suffix() as u16 % 200));
            std::thread::sleep(RETRY + jitter);
        }
    }

    fn held(path: PathBuf) -> RepoLock {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let p = path.clone();
        let heartbeat = std::thread::spawn(move || {
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(HEARTBEAT)
            {
                let _ = filetime::set_file_mtime(&p, filetime::FileTime::now());
            }
        });
        RepoLock {
            path,
            stop: Some(stop),
            heartbeat: Some(heartbeat),
        }
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        self.stop = None;
        if let Some(t) = self.heartbeat.take() {
            let _ = t.join();
        }
        let _ = fs::remove_file(&self.path);
    }
}

pub fn describe(info: &LockInfo) -> String {
    format!(
        "{} lock for {} by pid {} on {} since {}",
        match info.kind {
            LockKind::Shared => "shared",
            LockKind::Exclusive => "exclusive",
        },
        info.operation,
        info.pid,
        info.host,
        info.created
    )
}

/// All lock files with their contents and whether they are stale. Unreadable lock files count
/// as stale only once their mtime is old (they may be being written).
pub fn list(layout: &Layout) -> Result<Vec<(PathBuf, LockInfo, bool)>> {
    let dir = layout.locks();
    let mut out = Vec::new();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let me = crate::ingest::hostname();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
        if entry.file_name().as_encoded_bytes().starts_with(b".") {
            continue; // being written
        }
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        let age = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or(Duration::ZERO);
        // A lock file we cannot read is treated as a live exclusive lock until its mtime goes
        // stale: ignoring it could let two conflicting processes proceed.
        let info = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<LockInfo>(&b).ok())
            .unwrap_or_else(|| LockInfo {
                kind: LockKind::Exclusive,
                operation: format!("unknown (unreadable lock file {})", path.display()),
                host: String::new(),
                pid: 0,
                process_start: String::new(),
                created: String::new(),
            });
        let dead_here = info.host == me
            && !info.process_start.is_empty()
            && process_start(info.pid).as_deref() != Some(info.process_start.as_str());
        let stale = age > STALE_AFTER || dead_here;
        out.push((path, info, stale));
    }
    Ok(out)
}

/// Writes a lock file crash-safely. It is staged inside `locks/` (as a dot file, which readers
/// skip) rather than in `tmp/`, because a process taking a lock holds none yet, so gc may be
/// clearing `tmp/` at that very moment.
fn write_lock_file(dir: &std::path::Path, name: &str, bytes: &[u8]) -> Result<()> {
    let staged = dir.join(format!(".{name}.tmp"));
    let dest = dir.join(name);
    let mut f = fs::File::create(&staged).map_err(|e| Error::io(&staged, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(&staged, e))?;
    fs::rename(&staged, &dest).map_err(|e| Error::io(&dest, e))?;
    fsync_dir(dir)
}

/// Removes stale locks (or all locks with `all`); returns what was removed.
pub fn unlock(layout: &Layout, all: bool) -> Result<Vec<LockInfo>> {
    let mut removed = Vec::new();
    for (path, info, stale) in list(layout)? {
        if stale || all {
            fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            removed.push(info);
        }
    }
    fsync_dir(&layout.locks())?;
    Ok(removed)
}

/// "<boot id>:<start ticks>" for a pid on this host, from /proc; None when the process is gone.
fn process_start(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let start = after.split_whitespace().nth(19)?;
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    Some(format!("{}:{start}", boot.trim()))
}

fn unique_suffix() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let h = blake3::hash(
        &[
            nanos.to_le_bytes().as_slice(),
            &std::process::id().to_le_bytes(),
        ]
        .concat(),
    );
    u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap_or([0; 8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::new(dir.path());
        l.create_dirs().unwrap();
        (dir, l)
    }

    #[test]
    fn shared_locks_coexist_exclusive_excludes() {
        let (_d, l) = layout();
        let a = RepoLock::acquire(&l, LockKind::Shared, "a", Duration::ZERO).unwrap();
        let _b = RepoLock::acquire(&l, LockKind::Shared, "b", Duration::ZERO).unwrap();
        let err = RepoLock::acquire(&l, LockKind::Exclusive, "gc", Duration::ZERO)
            .err()
            .unwrap();
        assert!(err.to_string().contains("shared lock for a"), "{err}");
        drop(a);
        drop(_b);
        let x = RepoLock::acquire(&l, LockKind::Exclusive, "gc", Duration::ZERO).unwrap();
        assert!(RepoLock::acquire(&l, LockKind::Shared, "s", Duration::ZERO).is_err());
        drop(x);
        assert_eq!(
            fs::read_dir(l.locks()).unwrap().count(),
            0,
            "locks removed on drop"
        );
    }

    #[test]
    fn lock_of_dead_process_is_stale_and_unlockable() {
        let (_d, l) = layout();
        let info = LockInfo {
            kind: LockKind::Exclusive,
            operation: "gc".into(),
            host: crate::ingest::hostname(),
            pid: std::process::id(),
            process_start: "not-this-process".into(),
            created: crate::time::now_rfc3339(),
        };
        fs::write(l.locks().join("dead"), serde_json::to_vec(&info).unwrap()).unwrap();
        // A stale lock does not block...
        drop(RepoLock::acquire(&l, LockKind::Shared, "s", Duration::ZERO).unwrap());
        // ...and unlock removes it.
        assert_eq!(unlock(&l, false).unwrap().len(), 1);
        assert_eq!(fs::read_dir(l.locks()).unwrap().count(), 0);
    }

    #[test]
    fn old_heartbeat_is_stale_even_on_another_host() {
        let (_d, l) = layout();
        let info = LockInfo {
            kind: LockKind::Exclusive,
            operation: "gc".into(),
            host: "elsewhere".into(),
            pid: 1,
            process_start: "x".into(),
            created: crate::time::now_rfc3339(),
        };
        let p = l.locks().join("remote");
        fs::write(&p, serde_json::to_vec(&info).unwrap()).unwrap();
        assert!(
            RepoLock::acquire(&l, LockKind::Shared, "s", Duration::ZERO).is_err(),
            "fresh remote lock holds"
        );
        let old = filetime::FileTime::from_system_time(
            SystemTime::now() - STALE_AFTER - Duration::from_secs(5),
        );
        filetime::set_file_mtime(&p, old).unwrap();
        assert!(RepoLock::acquire(&l, LockKind::Shared, "s", Duration::ZERO).is_ok());
    }
}
