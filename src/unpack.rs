//! Unpacking tar streams into a directory: the tar crate's extractor plus what it leaves out.
//!
//! `tar::Entry::unpack_in` refuses members that would land outside the target (`..`, absolute
//! paths, paths through symlinks), and restores modes, owners (as root), mtimes and xattrs. It
//! does not create FIFOs or device nodes (it would write empty regular files) and it cannot give
//! directories their mtimes (writing their contents changes them). Both are handled here: special
//! files with `mknod` after the same containment checks, directory mtimes once everything else is
//! in place, deepest first.
//!
//! Nor does it understand GNU's PAX sparse members (`--format=pax --sparse`): `sparse` unpacks
//! those.

mod sparse;

use crate::error::{Error, Result};
use sparse::{pax_sparse_records, unpack_pax_sparse};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Runs `feed` (which writes a tar stream) against an extractor unpacking into `dir`. Damage met
/// by `feed` wins over the extractor's error, since it is the cause.
pub fn unpack_fed(
    dir: &Path,
    name: &str,
    feed: impl FnOnce(&mut (dyn Write + Send)) -> Result<()>,
) -> Result<()> {
    // The archive's `./` entry may give the directory its mode and owner only if the directory
    // is this restore's own: changing an existing, non-empty directory such as /tmp would be a
    // surprise (GNU tar does it; we do not).
    let owns_dir = std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none());
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let (writer, reader) = crate::pipe::pipe(4);
    std::thread::scope(|scope| -> Result<()> {
        let unpacker = scope.spawn(move || unpack_archive(reader, dir, owns_dir));
        let mut writer = writer;
        let fed = feed(&mut writer);
        match &fed {
            Ok(()) => {
                let _ = writer.close();
            }
            Err(e) => writer.fail(io::Error::other(e.to_string())),
        }
        let unpacked = unpacker
            .join()
            .map_err(|_| Error::Invalid("tar extraction panicked".into()))?
            .map_err(|e| Error::Invalid(format!("extracting {name:?}: {e}")));
        match fed {
            Err(e) if e.is_damage() => Err(e),
            Err(e) => unpacked.and(Err(e)),
            Ok(()) => unpacked,
        }
    })
}

fn unpack_archive<R: Read>(reader: R, dir: &Path, owns_dir: bool) -> io::Result<()> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    let as_root = is_root();
    // Ownership is restored below, member by member: the tar crate refuses a whole archive when
    // a uid/gid field is empty, which GNU tar accepts.
    archive.set_preserve_ownerships(false);
    archive.set_overwrite(true);
    let mut dir_times: Vec<(PathBuf, u64)> = Vec::new();
    // The archive's own `./` entry describes `dir` itself (a database directory must keep its
    // 0700 and owner); applied last, so that a read-only mode cannot stop the extraction.
    let mut root_header: Option<tar::Header> = None;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if kind.is_dir() && is_root_entry(&entry.path()?) {
            root_header = owns_dir.then(|| entry.header().clone());
            continue;
        }
        if kind.is_fifo() || kind.is_character_special() || kind.is_block_special() {
            make_special(dir, &entry, as_root)?;
            continue;
        }
        if (kind.is_file() || kind.is_contiguous())
            && let Some(records) = pax_sparse_records(&mut entry)?
        {
            unpack_pax_sparse(dir, &mut entry, records, as_root)?;
            continue;
        }
        let mtime = entry.header().mtime().ok();
        let header = entry.header().clone();
        let rel = entry.path()?.into_owned();
        let unpacked = entry.unpack_in(dir)?;
        if unpacked
            && as_root
            && let Some(safe) = contained(&rel)
        {
            restore_owner(&dir.join(safe), &header)?;
        }
        if unpacked
            && kind.is_dir()
            && let (Some(mtime), Some(safe)) = (mtime, contained(&rel))
        {
            dir_times.push((dir.join(safe), mtime));
        }
    }
    // Drain padding after the end-of-archive marker so the producer is not cut short.
    io::copy(&mut archive.into_inner(), &mut io::sink())?;
    if let Some(header) = root_header {
        if as_root {
            restore_owner(dir, &header)?;
        }
        if let Ok(mode) = header.mode() {
            std::fs::set_permissions(
                dir,
                std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777),
            )?;
        }
        if let Ok(mtime) = header.mtime() {
            dir_times.push((dir.to_path_buf(), mtime));
        }
    }
    dir_times.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (path, mtime) in dir_times {
        let t = filetime::FileTime::from_unix_time(i64::try_from(mtime).unwrap_or(i64::MAX), 0);
        // A directory a later member replaced (e.g. by a symlink) is not ours to touch.
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            set_mtime(&path, t)?;
        }
    }
    Ok(())
}

/// Gives an unpacked member the owner its header names (when the fields parse), then its mode
/// again, since changing the owner of a file clears its setuid and setgid bits.
fn restore_owner(path: &Path, header: &tar::Header) -> io::Result<()> {
    let (Ok(uid), Ok(gid)) = (header.uid(), header.gid()) else {
        return Ok(());
    };
    let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
        return Ok(());
    };
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.file_type().is_symlink()
        && let Ok(mode) = header.mode()
    {
        std::fs::set_permissions(
            path,
            std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777),
        )?;
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// True for `.`, `./` and the like (the tar crate may hand these over as an empty path): the
/// member that stands for the extraction directory.
fn is_root_entry(path: &Path) -> bool {
    path.components()
        .all(|c| matches!(c, Component::CurDir | Component::RootDir))
}

/// The member path with a leading `/` and `.` components removed, or None if it has `..`.
fn contained(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Creates a FIFO or device node, refusing paths that leave `dir` (through `..` or a symlinked
/// parent), as `unpack_in` does for other members.
fn make_special<R: Read>(dir: &Path, entry: &tar::Entry<'_, R>, as_root: bool) -> io::Result<()> {
    let header = entry.header();
    let rel = entry.path()?;
    let Some(rel) = contained(&rel) else {
        return Ok(()); // skipped, like unpack_in skips such members
    };
    let target = prepare_parent(dir, &rel)?;
    let mode = header.mode().unwrap_or(0o644) & 0o7777;
    let kind = header.entry_type();
    let (fmt, dev) = if kind.is_fifo() {
        (libc::S_IFIFO, 0)
    } else {
        let major = header.device_major().ok().flatten().unwrap_or(0);
        let minor = header.device_minor().ok().flatten().unwrap_or(0);
        let fmt = if kind.is_character_special() {
            libc::S_IFCHR
        } else {
            libc::S_IFBLK
        };
        (fmt, libc::makedev(major, minor))
    };
    if !as_root && fmt != libc::S_IFIFO {
        return Ok(()); // only root may create device nodes; GNU tar skips them likewise
    }
    let _ = std::fs::remove_file(&target);
    let c_path = std::ffi::CString::new(target.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("path contains a NUL byte"))?;
    // SAFETY: c_path is a valid NUL-terminated path; mknod has no other preconditions.
    let rc = unsafe { libc::mknod(c_path.as_ptr(), fmt | mode, dev) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // mknod applies the umask; set the exact mode, owner and mtime from the header.
    std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    if as_root {
        let uid = header.uid().ok().and_then(|u| u32::try_from(u).ok());
        let gid = header.gid().ok().and_then(|g| u32::try_from(g).ok());
        std::os::unix::fs::lchown(&target, uid, gid)?;
    }
    if let Ok(mtime) = header.mtime() {
        let t = filetime::FileTime::from_unix_time(i64::try_from(mtime).unwrap_or(i64::MAX), 0);
        set_mtime(&target, t)?;
    }
    Ok(())
}

/// `dir/rel`, once its missing parent directories exist: each is created only after its own
/// parent is found (canonically) inside `dir`, so a symlink planted by an earlier member cannot
/// lead the creation outside. `rel` must be `contained`.
fn prepare_parent(dir: &Path, rel: &Path) -> io::Result<PathBuf> {
    let target = dir.join(rel);
    let parent = target.parent().unwrap_or(dir);
    let root = dir.canonicalize()?;
    let mut missing = Vec::new();
    let mut ancestor = parent;
    while ancestor.symlink_metadata().is_err() {
        missing.push(ancestor);
        match ancestor.parent() {
            Some(up) => ancestor = up,
            None => break,
        }
    }
    for new_dir in missing.into_iter().rev() {
        check_inside(&root, new_dir.parent().unwrap_or(dir), rel)?;
        std::fs::create_dir(new_dir).or_else(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => Ok(()),
            _ => Err(e),
        })?;
    }
    check_inside(&root, parent, rel)?;
    Ok(target)
}

fn check_inside(root: &Path, dir: &Path, rel: &Path) -> io::Result<()> {
    if dir.canonicalize()?.starts_with(root) {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{}: refusing to create a file outside the target directory",
        rel.display()
    )))
}

/// Sets a path's mtime (keeping its atime) without opening it: opening a FIFO would block until
/// a writer appears.
fn set_mtime(path: &Path, mtime: filetime::FileTime) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    let atime = filetime::FileTime::from_last_access_time(&meta);
    filetime::set_symlink_file_times(path, atime, mtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contained_rejects_parent_components() {
        assert_eq!(contained(Path::new("/a/./b")), Some(PathBuf::from("a/b")));
        assert_eq!(contained(Path::new("a/../b")), None);
        assert_eq!(contained(Path::new("./")), None);
    }

    #[test]
    fn the_root_entry_gives_the_target_directory_its_mode_and_mtime() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mut b = tar::Builder::new(Vec::new());
        let mut root = tar::Header::new_gnu();
        root.set_entry_type(tar::EntryType::Directory);
        root.set_mode(0o700);
        root.set_mtime(1_234_567);
        root.set_size(0);
        b.append_data(&mut root, "./", std::io::empty()).unwrap();
        let mut f = tar::Header::new_gnu();
        f.set_mode(0o600);
        f.set_size(2);
        b.append_data(&mut f, "./PG_VERSION", &b"15"[..]).unwrap();
        let archive = b.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("data");
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        unpack_archive(&archive[..], &target, true).unwrap();
        let meta = std::fs::metadata(&target).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o700);
        assert_eq!(meta.mtime(), 1_234_567);
        assert_eq!(std::fs::read(target.join("PG_VERSION")).unwrap(), b"15");
        // A directory that was not the restore's own keeps its mode.
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        unpack_archive(&archive[..], &shared, false).unwrap();
        assert_eq!(std::fs::metadata(&shared).unwrap().mode() & 0o7777, 0o755);
        assert!(is_root_entry(Path::new(".")) && !is_root_entry(Path::new("./a")));
        assert!(!is_root_entry(Path::new("a/..")));
    }

    #[test]
    fn parents_are_not_created_through_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let dst = dir.path().join("out");
        let outside = dir.path().join("outside");
        std::fs::create_dir(&dst).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, dst.join("link")).unwrap();
        assert!(prepare_parent(&dst, Path::new("link/new/file")).is_err());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        let made = prepare_parent(&dst, Path::new("a/b/file")).unwrap();
        assert_eq!(made, dst.join("a/b/file"));
        assert!(dst.join("a/b").is_dir());
    }

    #[test]
    fn fifos_and_directory_mtimes_are_restored() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_mtime(1_000_000);
        h.set_size(0);
        b.append_data(&mut h, "d/", std::io::empty()).unwrap();
        let mut f = tar::Header::new_gnu();
        f.set_mode(0o644);
        f.set_mtime(2_000_000);
        f.set_size(2);
        b.append_data(&mut f, "d/file", &b"hi"[..]).unwrap();
        let mut p = tar::Header::new_gnu();
        p.set_entry_type(tar::EntryType::Fifo);
        p.set_mode(0o600);
        p.set_size(0);
        b.append_data(&mut p, "d/pipe", std::io::empty()).unwrap();
        let mut evil = tar::Header::new_gnu();
        evil.set_entry_type(tar::EntryType::Fifo);
        evil.set_size(0);
        evil.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
        evil.set_cksum();
        b.append(&evil, std::io::empty()).unwrap();
        let bytes = b.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dst = dir.path().join("out");
        std::fs::create_dir(&dst).unwrap();
        unpack_archive(&bytes[..], &dst, true).unwrap();
        use std::os::unix::fs::FileTypeExt;
        let pipe = std::fs::symlink_metadata(dst.join("d/pipe")).unwrap();
        assert!(pipe.file_type().is_fifo());
        let d = std::fs::metadata(dst.join("d")).unwrap();
        assert_eq!(
            filetime::FileTime::from_last_modification_time(&d).unix_seconds(),
            1_000_000
        );
        assert!(!dir.path().join("escape").exists());
    }
}
