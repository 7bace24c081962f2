//! Unpacking tar streams into a directory: the tar crate's extractor plus what it leaves out.
//!
//! `tar::Entry::unpack_in` refuses members that would land outside the target (`..`, absolute
//! paths, paths through symlinks), and restores modes, owners (as root), mtimes and xattrs. It
//! does not create FIFOs or device nodes (it would write empty regular files) and it cannot give
//! directories their mtimes (writing their contents changes them). Both are handled here: special
//! files with `mknod` after the same containment checks, directory mtimes once everything else is
//! in place, deepest first.
//!
//! Nor does it understand GNU's PAX sparse members (`--format=pax --sparse`): it would write
//! them under their placeholder name (`GNUSparseFile.N/NAME`), as the packed regions (and, for
//! format 1.0, the map) without the holes. Those are unpacked here, from the `GNU.sparse.*`
//! records, with the maps parsed by `browse::sparse`.

use crate::browse::sparse::{
    DATA_SHORT, MAX_MAP_BYTES, MapError, Parsed, PaxSparse, check_regions, parse_decimal_map,
};
use crate::error::{Error, Result};
use crate::tarscan::BLOCK_LEN;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
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

/// The member's `GNU.sparse.*` records, if its PAX header has any.
fn pax_sparse_records<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Option<PaxSparse>> {
    let Some(records) = entry.pax_extensions()? else {
        return Ok(None);
    };
    let mut sparse = PaxSparse::default();
    let mut any = false;
    // Malformed records are skipped, as the tar crate does for the records it reads.
    for record in records.flatten() {
        if record.key_bytes().starts_with(b"GNU.sparse.") {
            any = true;
            sparse.record(record.key_bytes(), record.value_bytes());
        }
    }
    Ok(any.then_some(sparse))
}

/// Unpacks a PAX sparse member (formats 0.0, 0.1 and 1.0) under its real name, holes as holes,
/// with the mode, mtime, xattrs and (as root) owner a regular member gets. Members whose name
/// has `..` are skipped, as `unpack_in` skips them; a damaged map is an error naming the member.
fn unpack_pax_sparse<R: Read>(
    dir: &Path,
    entry: &mut tar::Entry<'_, R>,
    mut records: PaxSparse,
    as_root: bool,
) -> io::Result<()> {
    let name = match records.name.take() {
        Some(name) => PathBuf::from(OsStr::from_bytes(&name)),
        None => entry.path()?.into_owned(),
    };
    let Some(rel) = contained(&name) else {
        return Ok(());
    };
    let header = entry.header().clone();
    let target = write_sparse_file(dir, &rel, entry, records).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("sparse member {:?}: {e}", name.to_string_lossy()),
        )
    })?;
    set_xattrs(entry, &target)?;
    if as_root {
        restore_owner(&target, &header)?;
    }
    Ok(())
}

/// Creates `dir/rel` from the member's map and data, and gives it the header's mtime and mode
/// (as the tar crate does for regular files). Returns its path.
fn write_sparse_file<R: Read>(
    dir: &Path,
    rel: &Path,
    entry: &mut tar::Entry<'_, R>,
    records: PaxSparse,
) -> io::Result<PathBuf> {
    let stored = entry.size();
    // Without a size record the file ends where the stored data does (as `cat` assumes).
    let size = records.real_size.unwrap_or(stored);
    let DataMap {
        regions,
        map_len,
        read_ahead,
    } = match records.into_parsed() {
        Some(Parsed::Map(regions)) => DataMap {
            regions,
            map_len: 0,
            read_ahead: Vec::new(),
        },
        Some(Parsed::MapInData) => read_decimal_map(entry, stored)?,
        None => return Err(damaged("its GNU.sparse records hold no sparse map")),
    };
    let data_len = check_regions(&regions, size).map_err(damaged)?;
    if data_len > stored - map_len {
        return Err(damaged(DATA_SHORT));
    }
    // Validated before anything is created, so a damaged member leaves no file behind.
    let target = prepare_parent(dir, rel)?;
    let mut file = create_fresh(&target)?;
    let mut data = io::Cursor::new(read_ahead).chain(entry);
    write_regions(&mut file, &regions, &mut data, size)?;
    let header = data.into_inner().1.header();
    if let Ok(mtime) = header.mtime() {
        // The tar crate turns a zero mtime into 1 for regular files; so do we, to match.
        let secs = i64::try_from(mtime.max(1)).unwrap_or(i64::MAX);
        let t = filetime::FileTime::from_unix_time(secs, 0);
        filetime::set_file_handle_times(&file, Some(t), Some(t))?;
    }
    if let Ok(mode) = header.mode() {
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777))?;
    }
    Ok(target)
}

fn damaged(detail: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, detail.to_string())
}

/// A sparse member's map and where in its data the region bytes begin.
#[derive(Debug)]
struct DataMap {
    /// (offset in the file, length), in file order.
    regions: Vec<(u64, u64)>,
    /// The map's padded length in the data (0 when the map is in the PAX records).
    map_len: u64,
    /// Region bytes read past the map while looking for its end.
    read_ahead: Vec<u8>,
}

/// Reads the PAX 1.0 map at the start of a member's data. The prefix read doubles until the map
/// is complete (keeping the parsing linear) but never exceeds `MAX_MAP_BYTES`.
fn read_decimal_map(data: &mut impl Read, stored: u64) -> io::Result<DataMap> {
    let limit = stored.min(MAX_MAP_BYTES);
    let mut head = Vec::new();
    let mut want = BLOCK_LEN.min(limit);
    loop {
        let missing = want - head.len() as u64;
        if data.by_ref().take(missing).read_to_end(&mut head)? as u64 != missing {
            return Err(damaged("the archive ends inside the sparse map"));
        }
        match parse_decimal_map(&head) {
            Ok((regions, map_len)) if map_len <= stored => {
                let past_map = usize::try_from(map_len).map_or(head.len(), |n| n.min(head.len()));
                let skip = map_len - past_map as u64;
                if io::copy(&mut data.by_ref().take(skip), &mut io::sink())? != skip {
                    return Err(damaged("the archive ends inside the sparse map"));
                }
                return Ok(DataMap {
                    regions,
                    map_len,
                    read_ahead: head.split_off(past_map),
                });
            }
            Ok(_) => return Err(damaged("the sparse map is longer than the member's data")),
            Err(MapError::Invalid) => {
                return Err(damaged("the sparse map is not a list of decimal numbers"));
            }
            Err(MapError::Incomplete) if want == stored => {
                return Err(damaged("the sparse map is longer than the member's data"));
            }
            Err(MapError::Incomplete) if want == limit => {
                return Err(damaged("the sparse map is longer than the 16 MiB allowed"));
            }
            Err(MapError::Incomplete) => want = want.saturating_mul(2).min(limit),
        }
    }
}

/// Opens a new, empty file at `path`, replacing (not following) whatever non-directory is there,
/// as the tar crate does for regular members.
fn create_fresh(path: &Path) -> io::Result<File> {
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match std::fs::remove_file(path) {
            Ok(()) => open(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => open(),
            Err(e) => Err(e),
        },
        opened => opened,
    }
    .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", path.display())))
}

/// Writes each region's bytes (taken from `data` in order) at its offset and sizes the file;
/// seeking over the gaps leaves them as holes. The regions must have passed `check_regions`.
fn write_regions(
    file: &mut File,
    regions: &[(u64, u64)],
    data: &mut impl Read,
    size: u64,
) -> io::Result<()> {
    for &(offset, len) in regions {
        file.seek(SeekFrom::Start(offset))?;
        if io::copy(&mut data.by_ref().take(len), file)? != len {
            return Err(damaged("the archive ends inside the sparse file's data"));
        }
    }
    file.set_len(size)
}

/// Applies the member's `SCHILY.xattr.*` records, as the tar crate does for other members.
fn set_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>, path: &Path) -> io::Result<()> {
    let Some(records) = entry.pax_extensions()? else {
        return Ok(());
    };
    for record in records.flatten() {
        if let Some(name) = record.key_bytes().strip_prefix(b"SCHILY.xattr.") {
            xattr::set(path, OsStr::from_bytes(name), record.value_bytes()).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("setting extended attributes on {}: {e}", path.display()),
                )
            })?;
        }
    }
    Ok(())
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

    /// A PAX record: its length prefix counts itself.
    fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
        let body_len = key.len() + value.len() + 3; // ' ', '=', '\n'
        let mut len = body_len + 1;
        while len != body_len + len.to_string().len() {
            len = body_len + len.to_string().len();
        }
        let mut out = format!("{len} {key}=").into_bytes();
        out.extend_from_slice(value);
        out.push(b'\n');
        out
    }

    /// An archive of one member: a PAX header with `records`, then `name` holding `data`.
    fn pax_member(records: &[(&str, &[u8])], name: &str, data: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let pax: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        let mut x = tar::Header::new_ustar();
        x.set_entry_type(tar::EntryType::XHeader);
        x.set_size(pax.len() as u64);
        b.append_data(&mut x, "PaxHeaders/member", &pax[..])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o640);
        h.set_mtime(1_500_000_000);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).unwrap();
        b.into_inner().unwrap()
    }

    /// A PAX 1.0 member's data: the decimal map padded to a block, then the regions' bytes.
    fn map_then_data(regions: &[(u64, u64)], bytes: &[u8]) -> Vec<u8> {
        let mut out = format!("{}\n", regions.len()).into_bytes();
        for (offset, len) in regions {
            out.extend_from_slice(format!("{offset}\n{len}\n").as_bytes());
        }
        out.resize(out.len().div_ceil(512) * 512, 0);
        out.extend_from_slice(bytes);
        out
    }

    const SIZE: u64 = 10 << 20;
    const REGIONS: [(u64, u64); 3] = [(1 << 20, 5), (5 << 20, 3), (SIZE, 0)];

    fn pax_1_0(name: &str, map: &[u8]) -> Vec<u8> {
        pax_member(
            &[
                ("GNU.sparse.major", b"1"),
                ("GNU.sparse.minor", b"0"),
                ("GNU.sparse.name", name.as_bytes()),
                ("GNU.sparse.realsize", SIZE.to_string().as_bytes()),
            ],
            "./GNUSparseFile.7/real.img",
            map,
        )
    }

    fn unpack_into_temp(archive: &[u8]) -> (tempfile::TempDir, PathBuf, io::Result<()>) {
        let dir = tempfile::tempdir().unwrap();
        let dst = dir.path().join("out");
        std::fs::create_dir(&dst).unwrap();
        let result = unpack_archive(archive, &dst, true);
        (dir, dst, result)
    }

    fn assert_rebuilt(path: &Path) {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = std::fs::metadata(path).unwrap();
        assert_eq!(meta.len(), SIZE);
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
        assert_eq!(meta.mtime(), 1_500_000_000);
        assert!(
            meta.blocks() * 512 < 1 << 20,
            "holes were written as data: {} blocks",
            meta.blocks()
        );
        let content = std::fs::read(path).unwrap();
        let mut expected = vec![0u8; SIZE as usize];
        expected[1 << 20..(1 << 20) + 5].copy_from_slice(b"hello");
        expected[5 << 20..(5 << 20) + 3].copy_from_slice(b"abc");
        assert!(content == expected, "regions misplaced");
    }

    #[test]
    fn pax_1_0_sparse_member_gets_its_real_name_size_and_holes() {
        let archive = pax_1_0("./dir/real.img", &map_then_data(&REGIONS, b"helloabc"));
        let (_tmp, dst, result) = unpack_into_temp(&archive);
        result.unwrap();
        assert_rebuilt(&dst.join("dir/real.img"));
        assert_eq!(
            std::fs::read_dir(&dst).unwrap().count(),
            1,
            "only dir/, no GNUSparseFile.N placeholder"
        );
    }

    #[test]
    fn pax_0_x_sparse_members_are_rebuilt_too() {
        let size = SIZE.to_string();
        let zero_one = pax_member(
            &[
                ("GNU.sparse.size", size.as_bytes()),
                ("GNU.sparse.name", b"real.img"),
                ("GNU.sparse.map", b"1048576,5,5242880,3"),
            ],
            "./GNUSparseFile.7/real.img",
            b"helloabc",
        );
        let zero_zero = pax_member(
            &[
                ("GNU.sparse.size", size.as_bytes()),
                ("GNU.sparse.offset", b"1048576"),
                ("GNU.sparse.numbytes", b"5"),
                ("GNU.sparse.offset", b"5242880"),
                ("GNU.sparse.numbytes", b"3"),
            ],
            "real.img",
            b"helloabc",
        );
        for archive in [zero_one, zero_zero] {
            let (_tmp, dst, result) = unpack_into_temp(&archive);
            result.unwrap();
            assert_rebuilt(&dst.join("real.img"));
        }
    }

    #[test]
    fn a_sparse_member_replaces_a_symlink_instead_of_following_it() {
        let dir = tempfile::tempdir().unwrap();
        let dst = dir.path().join("out");
        std::fs::create_dir(&dst).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, dst.join("real.img")).unwrap();
        let archive = pax_1_0("real.img", &map_then_data(&REGIONS, b"helloabc"));
        unpack_archive(&archive[..], &dst, true).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_rebuilt(&dst.join("real.img"));
    }

    #[test]
    fn damaged_sparse_maps_fail_cleanly_and_create_nothing() {
        let padded = |text: &str| {
            let mut v = text.as_bytes().to_vec();
            v.resize(512, 0);
            v.extend_from_slice(b"helloabc");
            v
        };
        let past_end = format!("1\n{}\n1\n", SIZE);
        let cases: [(Vec<u8>, &str); 7] = [
            (
                padded("2\n1048576\n5\nx242880\n3\n"),
                "not a list of decimal numbers",
            ),
            (
                padded("2\n1048576\n-5\n5242880\n3\n"),
                "not a list of decimal numbers",
            ),
            (padded(&past_end), "past the end of the file"),
            (padded("2\n0\n5\n4\n3\n"), "overlap or are out of order"),
            (
                padded("2\n5242880\n3\n1048576\n5\n"),
                "overlap or are out of order",
            ),
            (padded("2\n0\n5\n100\n30\n"), "more data than is stored"),
            (b"3\n0\n1\n2\n".to_vec(), "longer than the member's data"),
        ];
        for (data, message) in cases {
            let (_tmp, dst, result) = unpack_into_temp(&pax_1_0("real.img", &data));
            let err = result.expect_err(message).to_string();
            assert!(err.contains(message), "{message:?} not in {err:?}");
            assert!(err.contains("sparse member \"real.img\""), "{err}");
            assert_eq!(std::fs::read_dir(&dst).unwrap().count(), 0, "{message}");
        }
        let no_map = pax_member(&[("GNU.sparse.name", b"real.img")], "x", b"");
        let (_tmp, _, result) = unpack_into_temp(&no_map);
        assert!(result.unwrap_err().to_string().contains("no sparse map"));
    }

    #[test]
    fn sparse_member_names_cannot_leave_the_target() {
        let data = map_then_data(&REGIONS, b"helloabc");
        let (tmp, dst, result) = unpack_into_temp(&pax_1_0("../escape.img", &data));
        result.unwrap();
        assert!(!tmp.path().join("escape.img").exists());
        assert_eq!(std::fs::read_dir(&dst).unwrap().count(), 0);
        let (_tmp, dst, result) = unpack_into_temp(&pax_1_0("/abs/real.img", &data));
        result.unwrap();
        assert_rebuilt(&dst.join("abs/real.img"));
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
    fn a_long_decimal_map_is_read_in_growing_steps() {
        let regions: Vec<(u64, u64)> = (0..300).map(|i| (i * 4096, 7)).collect();
        let bytes: Vec<u8> = (0..300 * 7).map(|i| (i % 251) as u8).collect();
        let data = map_then_data(&regions, &bytes);
        let stored = data.len() as u64;
        let mut reader = &data[..];
        let map = read_decimal_map(&mut reader, stored).unwrap();
        assert_eq!(map.regions, regions);
        assert_eq!(map.map_len, stored - bytes.len() as u64);
        let mut rest = map.read_ahead;
        rest.extend_from_slice(reader);
        assert_eq!(rest, bytes);
        let cut = &data[..700];
        assert!(
            read_decimal_map(&mut &cut[..], stored)
                .unwrap_err()
                .to_string()
                .contains("archive ends inside")
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn decimal_maps_round_trip(
            gaps in proptest::collection::vec((0u64..1 << 40, 0u64..2000), 0..200),
        ) {
            let mut regions = Vec::new();
            let mut end = 0u64;
            for (gap, len) in gaps {
                regions.push((end + gap, len));
                end += gap + len;
            }
            let total: u64 = regions.iter().map(|r| r.1).sum();
            let bytes = vec![0xa5u8; total as usize];
            let data = map_then_data(&regions, &bytes);
            let mut reader = &data[..];
            let map = read_decimal_map(&mut reader, data.len() as u64).unwrap();
            proptest::prop_assert_eq!(&map.regions, &regions);
            proptest::prop_assert_eq!(map.map_len + total, data.len() as u64);
            proptest::prop_assert_eq!(map.read_ahead.len() + reader.len(), total as usize);
            proptest::prop_assert_eq!(check_regions(&map.regions, end), Ok(total));
        }
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
