//! Renders a host directory tree as a deterministic tar stream (`cairn snapshot dir PATH`).
//!
//! Two runs over an unchanged tree produce the same bytes, so their snapshot digests are equal,
//! and an unchanged subtree produces the same run of bytes wherever it sits, which is what lets
//! content-defined chunking deduplicate it.
//!
//! # Archive layout
//!
//! * Member names are relative to the root and start with `./`. The root itself is the first
//!   member, `./`, so that an extractor that honours it (GNU tar does) restores the root's mode,
//!   owner and mtime too; the `tar` crate skips it harmlessly. Directory names end in `/`, as GNU
//!   tar writes them. No name starts with `/`.
//! * Members come depth first: a directory, then its children in ascending byte order of their
//!   names (raw `OsStr` bytes, not locale order), each child directory's subtree complete before
//!   the next sibling. So `./a/`, `./a/c`, `./a-b` (not a full-path sort, which would put `./a-b`
//!   before `./a/`).
//! * Headers are GNU format. A name or link target of 100 bytes or more travels in a GNU `L` or
//!   `K` member (raw bytes, so non-UTF-8 names survive without any charset conversion); the header
//!   field holds its first 100 bytes. Sizes of 8 GiB and more, and uids/gids beyond 2097151, use
//!   GNU base-256 numbers.
//! * A PAX extended header (`x`, named `././@PaxHeader`) precedes a member only when needed:
//!   - `mtime` with the exact value when the mtime has a sub-second part or is before 1970, since
//!     the header holds whole non-negative seconds. GNU tar and Go's archive/tar (hence Docker)
//!     restore it; the `tar` crate restores whole seconds. It costs 1 KiB per member on file
//!     systems with nanosecond timestamps; it is kept because it is still a pure function of the
//!     metadata, and dropping it would make restores lossy.
//!   - `SCHILY.xattr.<name>` for each extended attribute (any namespace the caller may read,
//!     including `security.*` and `system.posix_acl_*` as raw values), names in byte order.
//! * Owners are numeric; user and group names are left empty, because the name database of the
//!   host is not part of the tree. atime and ctime are not recorded: reading the tree changes
//!   them.
//!
//! # Entry types
//!
//! Regular files, directories, symlinks (target stored verbatim, never followed), char and block
//! devices and FIFOs (with major/minor), and hard links: a non-directory inode with several links
//! is stored in full at its first path in archive order, and each later path becomes a hard-link
//! member naming that first path. Sockets are skipped, since tar cannot represent them (the
//! program that listens on one recreates it).
//!
//! # Consistency and safety
//!
//! The tree is walked through directory file descriptors (`openat`/`fstatat` with
//! `O_NOFOLLOW`), so renaming a directory or swapping in a symlink while the walk runs cannot make
//! it read outside `root`. The root itself may be a symlink to a directory. A regular file is read
//! for exactly the size its header announces: if it grew meanwhile, the excess is ignored; if it
//! shrank, or was replaced between listing and opening, writing fails with
//! "file changed while being read: PATH". Nothing is skipped on error: an unreadable entry fails
//! the whole write with an error naming its path. Extended attributes of symlinks, devices and
//! FIFOs are read by path, which is the one place a concurrent rename could be observed.
//!
//! # Memory
//!
//! File data goes through one fixed buffer. Each directory is listed in full and sorted, its names
//! packed into one buffer; the listings (and one open descriptor each) of the directories on the
//! current path are kept until their subtrees are done, so the depth of the tree is bounded by the
//! open-file limit. Hard-link bookkeeping holds one record per multiply-linked inode until all its
//! links have been seen.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::ffi::{CStr, CString, OsStr};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};
use xattr::FileExt;

/// What [`write_dir_as_tar`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirTarSummary {
    /// Archive members, the root and hard links included, extension headers not.
    pub entries: u64,
    /// Bytes of regular file content copied into the archive (padding not included).
    pub bytes_of_file_data: u64,
}

/// Writes the tree under `root` to `out` as a tar archive whose bytes depend only on the tree's
/// content and metadata. See the module documentation for the exact layout.
///
/// `out` is buffered internally; pass `&mut w` to keep the writer. On error, what was written is
/// a truncated archive and must be discarded.
pub fn write_dir_as_tar<W: Write>(root: &Path, out: W) -> io::Result<DirTarSummary> {
    let root_dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(root)
        .map_err(|e| with_path(root, e))?;
    let mut writer = TarWriter::new(out);
    writer.write_tree(root, root_dir)?;
    writer.finish()
}

const BLOCK_LEN: usize = 512;
/// Length of the name and linkname fields of a tar header.
const NAME_FIELD_LEN: usize = 100;
const COPY_BUFFER_LEN: usize = 128 * 1024;
/// Largest value the 8-byte octal device fields can hold.
const MAX_DEVICE_NUMBER: u32 = 0o7_777_777;
const LONG_NAME_MEMBER_NAME: &[u8] = b"././@LongLink";
const PAX_MEMBER_NAME: &[u8] = b"././@PaxHeader";
const XATTR_PAX_PREFIX: &[u8] = b"SCHILY.xattr.";
const ROOT_NAME: &[u8] = b"./";

struct TarWriter<W: Write> {
    out: BufWriter<W>,
    copy_buf: Vec<u8>,
    hard_links: HashMap<(u64, u64), FirstLink>,
    summary: DirTarSummary,
}

/// The archive name under which a multiply-linked inode was stored in full.
struct FirstLink {
    archive_name: Vec<u8>,
    links_not_yet_seen: u64,
}

/// A directory whose children are being written.
struct DirCursor {
    dir: File,
    host_path: PathBuf,
    archive_prefix: Vec<u8>,
    names: SortedNames,
    next: usize,
}

impl DirCursor {
    fn next_name(&mut self) -> Option<Vec<u8>> {
        let name = self.names.get(self.next)?.to_vec();
        self.next += 1;
        Some(name)
    }
}

impl<W: Write> TarWriter<W> {
    fn new(out: W) -> Self {
        TarWriter {
            out: BufWriter::with_capacity(COPY_BUFFER_LEN, out),
            copy_buf: vec![0; COPY_BUFFER_LEN],
            hard_links: HashMap::new(),
            summary: DirTarSummary::default(),
        }
    }

    fn write_tree(&mut self, root: &Path, root_dir: File) -> io::Result<()> {
        let root_cursor = self.write_directory(root_dir, root.to_path_buf(), ROOT_NAME.to_vec())?;
        let mut stack = vec![root_cursor];
        while let Some(cursor) = stack.last_mut() {
            let Some(name) = cursor.next_name() else {
                stack.pop();
                continue;
            };
            let host_path = cursor.host_path.join(OsStr::from_bytes(&name));
            let mut archive_name = cursor.archive_prefix.clone();
            archive_name.extend_from_slice(&name);
            let c_name = c_name(&name, &host_path)?;
            let inode = stat_at(&cursor.dir, &c_name).map_err(|e| with_path(&host_path, e))?;
            if inode.kind == Kind::Directory {
                let dir = open_dir_at(&cursor.dir, &c_name, &inode, &host_path)?;
                archive_name.push(b'/');
                let child = self.write_directory(dir, host_path, archive_name)?;
                stack.push(child);
            } else {
                let parent = &cursor.dir;
                self.write_non_directory(parent, &c_name, &inode, &host_path, &archive_name)?;
            }
        }
        Ok(())
    }

    /// Writes the directory's own member and returns the cursor over its children.
    fn write_directory(
        &mut self,
        dir: File,
        host_path: PathBuf,
        archive_name: Vec<u8>,
    ) -> io::Result<DirCursor> {
        let inode = stat_fd(&dir).map_err(|e| with_path(&host_path, e))?;
        let header = metadata_header(&inode, EntryType::Directory);
        let pax = pax_records(&inode, XattrSource::Fd(&dir), &host_path)?;
        self.write_member(header, &archive_name, None, &pax)?;
        let names = list_dir(&dir).map_err(|e| with_path(&host_path, e))?;
        Ok(DirCursor {
            dir,
            host_path,
            archive_prefix: archive_name,
            names,
            next: 0,
        })
    }

    fn write_non_directory(
        &mut self,
        parent: &File,
        name: &CStr,
        inode: &Inode,
        host_path: &Path,
        archive_name: &[u8],
    ) -> io::Result<()> {
        if inode.kind == Kind::Socket {
            return Ok(());
        }
        if let Some(first) = self.earlier_link_to(inode, archive_name) {
            let header = metadata_header(inode, EntryType::Link);
            return self.write_member(header, archive_name, Some(&first), &[]);
        }
        match inode.kind {
            Kind::Regular => self.write_regular_file(parent, name, inode, host_path, archive_name),
            Kind::Symlink => {
                let target = read_link_at(parent, name).map_err(|e| with_path(host_path, e))?;
                let header = metadata_header(inode, EntryType::Symlink);
                let pax = pax_records(inode, XattrSource::Path(host_path), host_path)?;
                self.write_member(header, archive_name, Some(&target), &pax)
            }
            Kind::Fifo | Kind::CharDevice | Kind::BlockDevice => {
                self.write_special(inode, host_path, archive_name)
            }
            Kind::Directory | Kind::Socket => Ok(()),
        }
    }

    /// Returns the first archive name of `inode` if it was already stored under another name.
    fn earlier_link_to(&mut self, inode: &Inode, archive_name: &[u8]) -> Option<Vec<u8>> {
        if inode.nlink < 2 {
            return None;
        }
        match self.hard_links.entry((inode.dev, inode.ino)) {
            Entry::Vacant(slot) => {
                slot.insert(FirstLink {
                    archive_name: archive_name.to_vec(),
                    links_not_yet_seen: inode.nlink - 1,
                });
                None
            }
            Entry::Occupied(mut slot) => {
                let first = slot.get_mut();
                first.links_not_yet_seen = first.links_not_yet_seen.saturating_sub(1);
                // Once every link has been seen no later path can refer to it: free the record.
                if first.links_not_yet_seen == 0 {
                    Some(slot.remove().archive_name)
                } else {
                    Some(first.archive_name.clone())
                }
            }
        }
    }

    fn write_regular_file(
        &mut self,
        parent: &File,
        name: &CStr,
        listed: &Inode,
        host_path: &Path,
        archive_name: &[u8],
    ) -> io::Result<()> {
        let mut file = open_regular_file_at(parent, name, listed, host_path)?;
        let inode = stat_fd(&file).map_err(|e| with_path(host_path, e))?;
        let mut header = metadata_header(&inode, EntryType::Regular);
        header.set_size(inode.size);
        let pax = pax_records(&inode, XattrSource::Fd(&file), host_path)?;
        self.write_member(header, archive_name, None, &pax)?;
        copy_exactly(
            &mut file,
            inode.size,
            &mut self.out,
            &mut self.copy_buf,
            host_path,
        )?;
        write_padding(&mut self.out, inode.size)?;
        self.summary.bytes_of_file_data += inode.size;
        Ok(())
    }

    fn write_special(
        &mut self,
        inode: &Inode,
        host_path: &Path,
        archive_name: &[u8],
    ) -> io::Result<()> {
        let entry_type = match inode.kind {
            Kind::CharDevice => EntryType::Char,
            Kind::BlockDevice => EntryType::Block,
            _ => EntryType::Fifo,
        };
        let mut header = metadata_header(inode, entry_type);
        let (major, minor) = (libc::major(inode.rdev), libc::minor(inode.rdev));
        if major > MAX_DEVICE_NUMBER || minor > MAX_DEVICE_NUMBER {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: device number {major}:{minor} does not fit in a tar header",
                    host_path.display()
                ),
            ));
        }
        header.set_device_major(major)?;
        header.set_device_minor(minor)?;
        let pax = pax_records(inode, XattrSource::Path(host_path), host_path)?;
        self.write_member(header, archive_name, None, &pax)
    }

    /// Writes one member's header, preceded by whatever extension members its name, link target
    /// and PAX records need. The caller writes the data, if any.
    fn write_member(
        &mut self,
        mut header: Header,
        name: &[u8],
        link_target: Option<&[u8]>,
        pax: &[u8],
    ) -> io::Result<()> {
        if !pax.is_empty() {
            self.write_extension(PAX_MEMBER_NAME, EntryType::XHeader, pax)?;
        }
        if let Some(target) = link_target {
            if target.len() >= NAME_FIELD_LEN {
                self.write_long_name(EntryType::GNULongLink, target)?;
            }
            copy_truncated(&mut header.as_old_mut().linkname, target);
        }
        if name.len() >= NAME_FIELD_LEN {
            self.write_long_name(EntryType::GNULongName, name)?;
        }
        copy_truncated(&mut header.as_old_mut().name, name);
        header.set_cksum();
        self.out.write_all(header.as_bytes())?;
        self.summary.entries += 1;
        Ok(())
    }

    fn write_long_name(&mut self, entry_type: EntryType, name: &[u8]) -> io::Result<()> {
        let mut data = Vec::with_capacity(name.len() + 1);
        data.extend_from_slice(name);
        // GNU tar NUL-terminates the name and counts the NUL in the size.
        data.push(0);
        self.write_extension(LONG_NAME_MEMBER_NAME, entry_type, &data)
    }

    fn write_extension(
        &mut self,
        member_name: &[u8],
        entry_type: EntryType,
        data: &[u8],
    ) -> io::Result<()> {
        let mut header = Header::new_gnu();
        copy_truncated(&mut header.as_old_mut().name, member_name);
        header.set_entry_type(entry_type);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(data.len() as u64);
        header.set_cksum();
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(data)?;
        write_padding(&mut self.out, data.len() as u64)
    }

    fn finish(mut self) -> io::Result<DirTarSummary> {
        self.out.write_all(&[0; 2 * BLOCK_LEN])?;
        self.out.flush()?;
        Ok(self.summary)
    }
}

/// A header carrying everything about `inode` except names, link target and size.
fn metadata_header(inode: &Inode, entry_type: EntryType) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode(inode.permissions);
    header.set_uid(inode.uid.into());
    header.set_gid(inode.gid.into());
    // Times before 1970 do not fit the unsigned field; the PAX `mtime` record carries them.
    header.set_mtime(u64::try_from(inode.mtime_secs).unwrap_or(0));
    header.set_size(0);
    header
}

fn copy_truncated(field: &mut [u8], bytes: &[u8]) {
    let len = bytes.len().min(field.len());
    field[..len].copy_from_slice(&bytes[..len]);
}

fn write_padding(out: &mut impl Write, data_len: u64) -> io::Result<()> {
    let used = (data_len % BLOCK_LEN as u64) as usize;
    if used == 0 {
        return Ok(());
    }
    out.write_all(&[0; BLOCK_LEN][used..])
}

/// Copies exactly `size` bytes: the header already promised that many, so a file that grew is
/// cut at `size` and one that shrank is an error rather than a corrupt archive.
fn copy_exactly(
    src: &mut impl Read,
    size: u64,
    dst: &mut impl Write,
    buf: &mut [u8],
    path: &Path,
) -> io::Result<()> {
    let mut left = size;
    while left > 0 {
        let want = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
        let read = match src.read(&mut buf[..want]) {
            Ok(0) => return Err(changed_while_read(path)),
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(with_path(path, e)),
        };
        dst.write_all(&buf[..read])?;
        left -= read as u64;
    }
    Ok(())
}

fn changed_while_read(path: &Path) -> io::Error {
    io::Error::other(format!("file changed while being read: {}", path.display()))
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {}", path.display(), e))
}

enum XattrSource<'a> {
    Fd(&'a File),
    Path(&'a Path),
}

impl XattrSource<'_> {
    fn names(&self) -> io::Result<Vec<Vec<u8>>> {
        let listed = match self {
            XattrSource::Fd(file) => file.list_xattr(),
            XattrSource::Path(path) => xattr::list(path),
        };
        match listed {
            Ok(names) => Ok(names.map(|name| name.as_bytes().to_vec()).collect()),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    fn value(&self, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let name = OsStr::from_bytes(name);
        match self {
            XattrSource::Fd(file) => file.get_xattr(name),
            XattrSource::Path(path) => xattr::get(path, name),
        }
    }
}

/// The PAX records for one member: precise mtime when the header cannot hold it, then the
/// extended attributes. Empty when neither is needed.
fn pax_records(inode: &Inode, xattrs: XattrSource<'_>, host_path: &Path) -> io::Result<Vec<u8>> {
    let mut records = Vec::new();
    if let Some(mtime) = precise_mtime(inode.mtime_secs, inode.mtime_nanos) {
        push_pax_record(&mut records, b"mtime", mtime.as_bytes());
    }
    let mut attributes = read_xattrs(&xattrs, host_path)?;
    // Name order, except that values containing a newline go last: the `tar` crate splits PAX
    // data at newlines and loses every record after such a value. GNU tar and Go read them all.
    attributes.sort_unstable_by(|(a_name, a_value), (b_name, b_value)| {
        (a_value.contains(&b'\n'), a_name).cmp(&(b_value.contains(&b'\n'), b_name))
    });
    for (name, value) in attributes {
        let mut key = XATTR_PAX_PREFIX.to_vec();
        key.extend_from_slice(&name);
        push_pax_record(&mut records, &key, &value);
    }
    Ok(records)
}

fn read_xattrs(xattrs: &XattrSource<'_>, host_path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let names = xattrs.names().map_err(|e| with_path(host_path, e))?;
    let mut attributes = Vec::with_capacity(names.len());
    for name in names {
        // A PAX record ends its keyword at the first '='; such a name would be misread.
        if name.contains(&b'=') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: extended attribute name {:?} contains '=', which tar cannot record",
                    host_path.display(),
                    String::from_utf8_lossy(&name)
                ),
            ));
        }
        // An attribute removed since the listing is simply absent now.
        if let Some(value) = xattrs.value(&name).map_err(|e| with_path(host_path, e))? {
            attributes.push((name, value));
        }
    }
    Ok(attributes)
}

/// The exact mtime as a PAX decimal, or `None` when the whole-second header field holds it.
fn precise_mtime(secs: i64, nanos: i64) -> Option<String> {
    if nanos == 0 && secs >= 0 {
        return None;
    }
    let total = i128::from(secs) * 1_000_000_000 + i128::from(nanos);
    let sign = if total < 0 { "-" } else { "" };
    let (whole, fraction) = (total.abs() / 1_000_000_000, total.abs() % 1_000_000_000);
    if fraction == 0 {
        return Some(format!("{sign}{whole}"));
    }
    let digits = format!("{fraction:09}");
    Some(format!("{sign}{whole}.{}", digits.trim_end_matches('0')))
}

/// Appends `"<len> <key>=<value>\n"`, where `len` counts the whole record including itself.
fn push_pax_record(records: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = 1 + key.len() + 1 + value.len() + 1;
    let mut len = rest;
    // Adding the length's own digits can add a digit to it; iterate to the fixed point.
    loop {
        let with_digits = rest + decimal_digits(len);
        if with_digits == len {
            break;
        }
        len = with_digits;
    }
    records.extend_from_slice(format!("{len} ").as_bytes());
    records.extend_from_slice(key);
    records.push(b'=');
    records.extend_from_slice(value);
    records.push(b'\n');
}

fn decimal_digits(n: usize) -> usize {
    n.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// One directory's child names, sorted by bytes, packed into one buffer to keep huge
/// directories affordable.
#[derive(Default)]
struct SortedNames {
    bytes: Vec<u8>,
    spans: Vec<(usize, usize)>,
}

impl SortedNames {
    fn push(&mut self, name: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(name);
        self.spans.push((start, name.len()));
    }

    fn sort(&mut self) {
        let bytes = &self.bytes;
        self.spans
            .sort_unstable_by(|a, b| bytes[a.0..a.0 + a.1].cmp(&bytes[b.0..b.0 + b.1]));
        self.bytes.shrink_to_fit();
        self.spans.shrink_to_fit();
    }

    fn get(&self, index: usize) -> Option<&[u8]> {
        let &(start, len) = self.spans.get(index)?;
        self.bytes.get(start..start + len)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Regular,
    Directory,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

/// The subset of `struct stat` the archive records or the walk needs.
#[derive(Debug, Clone)]
struct Inode {
    kind: Kind,
    permissions: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime_secs: i64,
    mtime_nanos: i64,
    dev: u64,
    ino: u64,
    nlink: u64,
    rdev: libc::dev_t,
}

impl Inode {
    // Field types of `struct stat` differ between architectures, so some conversions are
    // identities on one target and needed on another.
    #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
    fn from_stat(st: &libc::stat) -> io::Result<Inode> {
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => Kind::Regular,
            libc::S_IFDIR => Kind::Directory,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFCHR => Kind::CharDevice,
            libc::S_IFBLK => Kind::BlockDevice,
            libc::S_IFSOCK => Kind::Socket,
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unknown file type {other:#o}"),
                ));
            }
        };
        Ok(Inode {
            kind,
            permissions: (st.st_mode & 0o7777) as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime_secs: i64::from(st.st_mtime),
            mtime_nanos: i64::from(st.st_mtime_nsec),
            dev: u64::from(st.st_dev),
            ino: u64::from(st.st_ino),
            nlink: u64::from(st.st_nlink),
            rdev: st.st_rdev,
        })
    }
}

fn c_name(name: &[u8], host_path: &Path) -> io::Result<CString> {
    CString::new(name)
        .map_err(|e| with_path(host_path, io::Error::new(io::ErrorKind::InvalidData, e)))
}

fn stat_at(dir: &File, name: &CStr) -> io::Result<Inode> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `dir` is an open descriptor, `name` is NUL-terminated and `st` is writable
    // storage of the right type; fstatat initialises it when it returns 0.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatat returned 0, so it filled `st`.
    Inode::from_stat(unsafe { st.assume_init_ref() })
}

fn stat_fd(file: &File) -> io::Result<Inode> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `file` is an open descriptor and `st` is writable storage of the right type.
    let rc = unsafe { libc::fstat(file.as_raw_fd(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat returned 0, so it filled `st`.
    Inode::from_stat(unsafe { st.assume_init_ref() })
}

fn open_at(dir: &File, name: &CStr, flags: libc::c_int) -> io::Result<File> {
    // SAFETY: `dir` is an open descriptor and `name` is NUL-terminated.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat just returned this descriptor and nothing else owns it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn same_inode(a: &Inode, b: &Inode) -> bool {
    (a.dev, a.ino, a.kind) == (b.dev, b.ino, b.kind)
}

/// Opens the directory listed as `listed`, refusing a symlink or a different directory swapped
/// in since the listing.
fn open_dir_at(parent: &File, name: &CStr, listed: &Inode, host_path: &Path) -> io::Result<File> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
    let dir = open_at(parent, name, flags).map_err(|e| with_path(host_path, e))?;
    let opened = stat_fd(&dir).map_err(|e| with_path(host_path, e))?;
    if !same_inode(listed, &opened) {
        return Err(changed_while_read(host_path));
    }
    Ok(dir)
}

/// Opens the regular file listed as `listed`. O_NONBLOCK keeps a FIFO swapped in since the
/// listing from blocking the open; it is cleared once the file is known to be the listed one.
fn open_regular_file_at(
    parent: &File,
    name: &CStr,
    listed: &Inode,
    host_path: &Path,
) -> io::Result<File> {
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
    let file = open_at(parent, name, flags).map_err(|e| with_path(host_path, e))?;
    let opened = stat_fd(&file).map_err(|e| with_path(host_path, e))?;
    if !same_inode(listed, &opened) {
        return Err(changed_while_read(host_path));
    }
    clear_nonblocking(&file).map_err(|e| with_path(host_path, e))?;
    Ok(file)
}

fn clear_nonblocking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on an open descriptor touch no memory.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn read_link_at(dir: &File, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: `buf` is writable for `buf.len()` bytes; readlinkat writes at most that many.
        let len = unsafe {
            libc::readlinkat(
                dir.as_raw_fd(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        let Ok(len) = usize::try_from(len) else {
            return Err(io::Error::last_os_error());
        };
        // A full buffer may mean a truncated target: retry larger.
        if len < buf.len() {
            buf.truncate(len);
            return Ok(buf);
        }
        let larger = buf.len() * 2;
        buf.resize(larger, 0);
    }
}

/// Closes a `DIR*` stream on every exit path.
struct DirStream(*mut libc::DIR);

impl Drop for DirStream {
    fn drop(&mut self) {
        // SAFETY: the pointer came from a successful fdopendir and is closed only here.
        unsafe { libc::closedir(self.0) };
    }
}

fn list_dir(dir: &File) -> io::Result<SortedNames> {
    // fdopendir takes ownership of its descriptor, so give it a duplicate; `dir` stays open for
    // the *at calls on the children.
    let fd: RawFd = dir.try_clone()?.into_raw_fd();
    // SAFETY: `fd` is an open directory descriptor that we own.
    let stream = unsafe { libc::fdopendir(fd) };
    if stream.is_null() {
        let err = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so `fd` is still ours to close.
        unsafe { libc::close(fd) };
        return Err(err);
    }
    let stream = DirStream(stream);
    let mut names = SortedNames::default();
    loop {
        // readdir reports errors only through errno, so clear it first.
        // SAFETY: __errno_location returns this thread's errno slot.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `stream.0` is a valid open DIR*.
        let entry = unsafe { libc::readdir(stream.0) };
        if entry.is_null() {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(0) {
                break;
            }
            return Err(err);
        }
        // SAFETY: readdir returned a valid dirent whose d_name is NUL-terminated; it stays
        // valid until the next readdir call on this stream, and we copy it before that.
        let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) }.to_bytes();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use filetime::FileTime;
    use std::collections::BTreeMap;
    use std::fs;
    use std::os::unix::ffi::OsStringExt;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::process::Command;

    const XATTR_NAME: &str = "user.cairn.test";
    const XATTR_VALUE: &[u8] = b"value\0with\x01binary=";
    /// The `tar` crate splits PAX records at newlines, so it cannot restore this one; GNU tar can.
    const NEWLINE_XATTR_NAME: &str = "user.cairn.newline";
    const NEWLINE_XATTR_VALUE: &[u8] = b"line 1\n12 fake=record\n";

    fn archive_of(root: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        write_dir_as_tar(root, &mut out).unwrap();
        out
    }

    fn set_mtime(path: &Path, secs: i64, nanos: u32) {
        let t = FileTime::from_unix_time(secs, nanos);
        filetime::set_symlink_file_times(path, t, t).unwrap();
    }

    fn mkfifo(path: &Path) {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o640) }, 0);
    }

    fn xattrs_supported(dir: &Path) -> bool {
        let probe = dir.join("xattr-probe");
        fs::write(&probe, b"").unwrap();
        let ok = xattr::set(&probe, XATTR_NAME, b"x").is_ok();
        fs::remove_file(&probe).unwrap();
        ok
    }

    fn non_utf8_name() -> std::ffi::OsString {
        std::ffi::OsString::from_vec(b"caf\xe9-\xff.bin".to_vec())
    }

    fn long_dir_parts() -> [String; 3] {
        ["d".repeat(70), "e".repeat(70), "f".repeat(70)]
    }

    fn long_symlink_target() -> String {
        format!("../{}/{}", "t".repeat(90), "u".repeat(40))
    }

    /// Builds a tree exercising every entry type and awkward name the writer must handle.
    /// Returns whether the xattr was set.
    fn build_fixture(root: &Path) -> bool {
        fs::write(root.join("a.txt"), b"hello\n").unwrap();
        fs::set_permissions(root.join("a.txt"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(root.join("empty"), b"").unwrap();
        fs::write(root.join("setuid-bin"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(root.join("setuid-bin"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::create_dir_all(root.join("nested/deeper")).unwrap();
        let big: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        fs::write(root.join("nested/deeper/leaf.bin"), &big).unwrap();
        fs::create_dir(root.join("empty-dir")).unwrap();
        fs::create_dir(root.join("sticky")).unwrap();
        fs::set_permissions(root.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("link-to-a")).unwrap();
        std::os::unix::fs::symlink("does/not//exist/..", root.join("dangling")).unwrap();
        std::os::unix::fs::symlink(long_symlink_target(), root.join("long-link")).unwrap();
        fs::write(root.join("hard1"), b"shared inode").unwrap();
        fs::hard_link(root.join("hard1"), root.join("nested/hard2")).unwrap();
        fs::hard_link(root.join("hard1"), root.join("nested/deeper/hard3")).unwrap();
        mkfifo(&root.join("fifo"));
        let [l1, l2, l3] = long_dir_parts();
        let long_dir = root.join(&l1).join(&l2).join(&l3);
        fs::create_dir_all(&long_dir).unwrap();
        fs::write(long_dir.join("long-file-name.txt"), b"deep").unwrap();
        fs::write(root.join(non_utf8_name()), b"latin-1 name").unwrap();
        fs::write(root.join("owned"), b"owned by someone else").unwrap();
        std::os::unix::fs::chown(root.join("owned"), Some(1234), Some(5678)).unwrap();
        let xattr_ok = xattrs_supported(root);
        if xattr_ok {
            xattr::set(root.join("a.txt"), XATTR_NAME, XATTR_VALUE).unwrap();
            xattr::set(root.join("a.txt"), NEWLINE_XATTR_NAME, NEWLINE_XATTR_VALUE).unwrap();
            xattr::set(root.join("nested"), XATTR_NAME, b"on a dir").unwrap();
        }
        // Times last, deepest first, because creating children touches a directory's mtime.
        let mut paths = walk(root);
        paths.reverse();
        for (i, (rel, _)) in paths.iter().enumerate() {
            let nanos = if i % 2 == 0 { 0 } else { 123_456_789 };
            set_mtime(&root.join(rel), 1_600_000_000 + i as i64 * 1000, nanos);
        }
        set_mtime(root, 1_500_000_000, 987_000_000);
        xattr_ok
    }

    /// All paths under `root` (relative, root excluded) in depth-first byte order, with lstat.
    fn walk(root: &Path) -> Vec<(PathBuf, fs::Metadata)> {
        let mut out = Vec::new();
        let mut names: Vec<_> = fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let path = root.join(&name);
            let meta = fs::symlink_metadata(&path).unwrap();
            out.push((PathBuf::from(&name), meta.clone()));
            if meta.is_dir() {
                for (child, child_meta) in walk(&path) {
                    out.push((PathBuf::from(&name).join(child), child_meta));
                }
            }
        }
        out
    }

    fn archive_names(archive: &[u8]) -> Vec<Vec<u8>> {
        let mut ar = tar::Archive::new(archive);
        ar.entries()
            .unwrap()
            .map(|e| e.unwrap().path_bytes().into_owned())
            .collect()
    }

    fn unpack_with_tar_crate(archive: &[u8], dest: &Path) {
        let mut ar = tar::Archive::new(archive);
        ar.set_preserve_permissions(true);
        ar.set_preserve_mtime(true);
        ar.set_unpack_xattrs(true);
        ar.set_preserve_ownerships(true);
        ar.unpack(dest).unwrap();
    }

    #[derive(Debug, PartialEq)]
    enum Seen {
        File { content: Vec<u8> },
        Dir,
        Symlink { target: PathBuf },
        Fifo,
    }

    fn describe(path: &Path, meta: &fs::Metadata) -> Seen {
        use std::os::unix::fs::FileTypeExt;
        let ft = meta.file_type();
        if ft.is_dir() {
            Seen::Dir
        } else if ft.is_symlink() {
            Seen::Symlink {
                target: fs::read_link(path).unwrap(),
            }
        } else if ft.is_fifo() {
            Seen::Fifo
        } else {
            Seen::File {
                content: fs::read(path).unwrap(),
            }
        }
    }

    struct Compare {
        whole_second_mtimes: bool,
        dir_mtimes_and_xattrs: bool,
        fifos: bool,
        xattr_names: &'static [&'static str],
    }

    /// Asserts that `dest` holds the same tree as `src`, within what the extractor restores.
    fn assert_same_tree(src: &Path, dest: &Path, what: &Compare) {
        let src_entries = walk(src);
        let dest_entries = walk(dest);
        let src_names: Vec<_> = src_entries.iter().map(|(p, _)| p.clone()).collect();
        let dest_names: Vec<_> = dest_entries.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(src_names, dest_names);
        let mut inode_groups: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for ((rel, s), (_, d)) in src_entries.iter().zip(&dest_entries) {
            let (sp, dp) = (src.join(rel), dest.join(rel));
            let (seen_src, seen_dest) = (describe(&sp, s), describe(&dp, d));
            if seen_src == Seen::Fifo && !what.fifos {
                continue;
            }
            assert_eq!(seen_src, seen_dest, "{}", rel.display());
            if !s.is_symlink() {
                assert_eq!(s.mode(), d.mode(), "mode of {}", rel.display());
            }
            assert_eq!(
                (s.uid(), s.gid()),
                (d.uid(), d.gid()),
                "owner of {}",
                rel.display()
            );
            if !s.is_dir() {
                assert_eq!(s.len(), d.len(), "size of {}", rel.display());
            }
            if !s.is_dir() || what.dir_mtimes_and_xattrs {
                assert_eq!(s.mtime(), d.mtime(), "mtime of {}", rel.display());
                if !what.whole_second_mtimes {
                    assert_eq!(
                        s.mtime_nsec(),
                        d.mtime_nsec(),
                        "mtime ns of {}",
                        rel.display()
                    );
                }
            }
            if !s.is_symlink() && (s.is_file() || what.dir_mtimes_and_xattrs) {
                for name in what.xattr_names {
                    assert_eq!(
                        xattr::get(&sp, name).unwrap(),
                        xattr::get(&dp, name).unwrap(),
                        "xattr {name} of {}",
                        rel.display()
                    );
                }
            }
            if s.nlink() > 1 && !s.is_dir() {
                inode_groups.entry(s.ino()).or_default().push(d.ino());
            }
        }
        assert!(!inode_groups.is_empty());
        for dest_inos in inode_groups.values() {
            assert!(dest_inos.len() > 1);
            assert!(
                dest_inos.iter().all(|i| *i == dest_inos[0]),
                "hard links split: {dest_inos:?}"
            );
        }
    }

    #[test]
    fn same_tree_gives_identical_bytes() {
        let dir = tempfile::tempdir().unwrap();
        build_fixture(dir.path());
        let first = archive_of(dir.path());
        let second = archive_of(dir.path());
        assert!(first == second, "two runs differ");
        assert_eq!(first.len() % BLOCK_LEN, 0);
    }

    #[test]
    fn identical_trees_in_different_places_give_identical_bytes() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        build_fixture(a.path());
        build_fixture(b.path());
        assert!(archive_of(a.path()) == archive_of(b.path()));
    }

    #[test]
    fn round_trip_through_tar_crate_restores_the_tree() {
        let src = tempfile::tempdir().unwrap();
        let xattr_ok = build_fixture(src.path());
        let archive = archive_of(src.path());
        let dest = tempfile::tempdir().unwrap();
        unpack_with_tar_crate(&archive, dest.path());
        // The tar crate restores whole-second mtimes, no directory mtimes, and writes FIFOs as
        // plain files; everything else must come back.
        let what = Compare {
            whole_second_mtimes: true,
            dir_mtimes_and_xattrs: false,
            fifos: false,
            xattr_names: if xattr_ok { &[XATTR_NAME] } else { &[] },
        };
        assert_same_tree(src.path(), dest.path(), &what);
    }

    #[test]
    fn summary_counts_members_and_file_bytes() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), b"12345").unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        fs::write(dir.path().join("d/b"), vec![7u8; 1000]).unwrap();
        fs::hard_link(dir.path().join("a"), dir.path().join("d/a2")).unwrap();
        let mut out = Vec::new();
        let summary = write_dir_as_tar(dir.path(), &mut out).unwrap();
        assert_eq!(
            summary,
            DirTarSummary {
                entries: 5,
                bytes_of_file_data: 1005
            }
        );
    }

    #[test]
    fn entries_are_depth_first_in_byte_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("a/c")).unwrap();
        fs::write(root.join("a/c/z"), b"").unwrap();
        fs::write(root.join("a/B"), b"").unwrap();
        fs::write(root.join("a-b"), b"").unwrap();
        fs::write(root.join("Z"), b"").unwrap();
        fs::write(root.join(OsStr::from_bytes(b"\xffhigh")), b"").unwrap();
        fs::write(root.join("_"), b"").unwrap();
        let expected: Vec<&[u8]> = vec![
            b"./",
            b"./Z",
            b"./_",
            b"./a/",
            b"./a/B",
            b"./a/c/",
            b"./a/c/z",
            b"./a-b",
            b"./\xffhigh",
        ];
        assert_eq!(archive_names(&archive_of(root)), expected);
    }

    #[test]
    fn headers_record_types_links_and_metadata_verbatim() {
        let src = tempfile::tempdir().unwrap();
        let xattr_ok = build_fixture(src.path());
        let archive = archive_of(src.path());
        let mut pax_per_member = pax_records_per_member(&archive).into_iter();
        let mut ar = tar::Archive::new(&archive[..]);
        let mut by_name = BTreeMap::new();
        for entry in ar.entries().unwrap() {
            let entry = entry.unwrap();
            let name = entry.path_bytes().into_owned();
            let header = entry.header().clone();
            let link = entry.link_name_bytes().map(|l| l.into_owned());
            by_name.insert(name, (header, link, pax_per_member.next().unwrap()));
        }
        assert!(pax_per_member.next().is_none());
        let get = |n: &[u8]| {
            by_name
                .get(n)
                .unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(n)))
        };

        let (h, _, _) = get(b"./fifo");
        assert_eq!(h.entry_type(), EntryType::Fifo);
        let (h, link, _) = get(b"./dangling");
        assert_eq!(h.entry_type(), EntryType::Symlink);
        assert_eq!(link.as_deref(), Some(&b"does/not//exist/.."[..]));
        let (_, link, _) = get(b"./long-link");
        assert_eq!(link.as_deref(), Some(long_symlink_target().as_bytes()));
        let (h, _, _) = get(b"./hard1");
        assert_eq!(h.entry_type(), EntryType::Regular);
        for later in [&b"./nested/hard2"[..], b"./nested/deeper/hard3"] {
            let (h, link, _) = get(later);
            assert_eq!(h.entry_type(), EntryType::Link);
            assert_eq!(link.as_deref(), Some(&b"./hard1"[..]));
        }
        let (h, _, _) = get(b"./setuid-bin");
        assert_eq!(h.mode().unwrap(), 0o4755);
        let (h, _, _) = get(b"./sticky/");
        assert_eq!(h.entry_type(), EntryType::Directory);
        assert_eq!(h.mode().unwrap(), 0o1777);
        let (h, _, _) = get(b"./owned");
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (1234, 5678));
        assert_eq!(h.username_bytes(), Some(&b""[..]));
        let (h, _, pax) = get(b"./");
        assert_eq!(h.mtime().unwrap(), 1_500_000_000);
        assert!(pax.contains(&(b"mtime".to_vec(), b"1500000000.987".to_vec())));
        let mut non_utf8 = b"./".to_vec();
        non_utf8.extend_from_slice(non_utf8_name().as_bytes());
        assert!(by_name.contains_key(&non_utf8));
        let [l1, l2, l3] = long_dir_parts();
        let long = format!("./{l1}/{l2}/{l3}/long-file-name.txt");
        assert!(long.len() > 200);
        assert!(by_name.contains_key(long.as_bytes()));
        if xattr_ok {
            let (_, _, pax) = get(b"./a.txt");
            let key = format!("SCHILY.xattr.{XATTR_NAME}").into_bytes();
            assert!(pax.contains(&(key, XATTR_VALUE.to_vec())));
            let key = format!("SCHILY.xattr.{NEWLINE_XATTR_NAME}").into_bytes();
            assert!(pax.contains(&(key.clone(), NEWLINE_XATTR_VALUE.to_vec())));
            let names: Vec<_> = pax.iter().map(|(k, _)| k.clone()).collect();
            assert_eq!(names.last(), Some(&key), "newline values must come last");
        }
    }

    type PaxRecords = Vec<(Vec<u8>, Vec<u8>)>;

    /// The PAX records preceding each member, parsed by their declared lengths (the `tar`
    /// crate's parser splits at newlines, which binary values may contain).
    fn pax_records_per_member(archive: &[u8]) -> Vec<PaxRecords> {
        let mut ar = tar::Archive::new(archive);
        let entries = ar.entries().unwrap().raw(true);
        let mut per_member = Vec::new();
        let mut pending = Vec::new();
        for entry in entries {
            let mut entry = entry.unwrap();
            match entry.header().entry_type() {
                EntryType::XHeader => {
                    let mut data = Vec::new();
                    entry.read_to_end(&mut data).unwrap();
                    pending = parse_pax(&data);
                }
                EntryType::GNULongName | EntryType::GNULongLink => {}
                _ => per_member.push(std::mem::take(&mut pending)),
            }
        }
        per_member
    }

    fn parse_pax(mut data: &[u8]) -> PaxRecords {
        let mut records = Vec::new();
        while !data.is_empty() {
            let space = data.iter().position(|b| *b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&data[..space])
                .unwrap()
                .parse()
                .unwrap();
            let record = &data[space + 1..len - 1];
            assert_eq!(data[len - 1], b'\n');
            let eq = record.iter().position(|b| *b == b'=').unwrap();
            records.push((record[..eq].to_vec(), record[eq + 1..].to_vec()));
            data = &data[len..];
        }
        records
    }

    #[test]
    fn devices_carry_major_and_minor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("null-like");
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        let dev = libc::makedev(1, 3);
        // SAFETY: valid NUL-terminated path.
        if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, dev) } != 0 {
            eprintln!("skipping: mknod not permitted here");
            return;
        }
        let archive = archive_of(dir.path());
        let mut ar = tar::Archive::new(&archive[..]);
        let entry = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.path_bytes().as_ref() == b"./null-like")
            .unwrap();
        let h = entry.header();
        assert_eq!(h.entry_type(), EntryType::Char);
        assert_eq!(
            (h.device_major().unwrap(), h.device_minor().unwrap()),
            (Some(1), Some(3))
        );
    }

    #[test]
    fn sockets_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(dir.path().join("sock")).unwrap();
        fs::write(dir.path().join("file"), b"x").unwrap();
        let names = archive_names(&archive_of(dir.path()));
        assert_eq!(names, vec![b"./".to_vec(), b"./file".to_vec()]);
    }

    #[test]
    fn content_and_mtime_changes_change_the_output() {
        let dir = tempfile::tempdir().unwrap();
        build_fixture(dir.path());
        let before = archive_of(dir.path());
        let leaf = dir.path().join("nested/deeper/leaf.bin");
        let meta = fs::symlink_metadata(&leaf).unwrap();
        let original_mtime = FileTime::from_last_modification_time(&meta);

        filetime::set_file_mtime(&leaf, FileTime::from_unix_time(meta.mtime() + 1, 0)).unwrap();
        assert!(archive_of(dir.path()) != before, "mtime change not visible");

        let mut content = fs::read(&leaf).unwrap();
        content[150_000] ^= 1;
        fs::write(&leaf, &content).unwrap();
        filetime::set_file_mtime(&leaf, original_mtime).unwrap();
        let after_edit = archive_of(dir.path());
        assert_eq!(after_edit.len(), before.len());
        assert!(after_edit != before, "one-byte edit not visible");

        content[150_000] ^= 1;
        fs::write(&leaf, &content).unwrap();
        filetime::set_file_mtime(&leaf, original_mtime).unwrap();
        assert!(
            archive_of(dir.path()) == before,
            "restoring the byte must restore the output"
        );
    }

    #[test]
    fn root_that_is_not_a_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        fs::write(&file, b"x").unwrap();
        let err = write_dir_as_tar(&file, io::sink()).unwrap_err();
        assert!(err.to_string().contains(&*file.to_string_lossy()), "{err}");
        let missing = dir.path().join("missing");
        let err = write_dir_as_tar(&missing, io::sink()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(
            err.to_string().contains(&*missing.to_string_lossy()),
            "{err}"
        );
    }

    #[test]
    fn root_may_be_a_symlink_to_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("real")).unwrap();
        fs::write(dir.path().join("real/f"), b"x").unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("alias")).unwrap();
        assert!(archive_of(&dir.path().join("alias")) == archive_of(&dir.path().join("real")));
    }

    #[test]
    fn a_shrunken_file_is_an_error_and_a_grown_one_is_cut() {
        let path = Path::new("/some/where/file");
        let mut buf = vec![0u8; 4];
        let mut out = Vec::new();
        let err = copy_exactly(&mut &b"short"[..], 10, &mut out, &mut buf, path).unwrap_err();
        assert_eq!(
            err.to_string(),
            "file changed while being read: /some/where/file"
        );

        let mut out = Vec::new();
        copy_exactly(
            &mut &b"longer than announced"[..],
            6,
            &mut out,
            &mut buf,
            path,
        )
        .unwrap();
        assert_eq!(out, b"longer");
    }

    #[test]
    fn unreadable_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("f"), b"x").unwrap();
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o000)).unwrap();
        let result = write_dir_as_tar(dir.path(), io::sink());
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o755)).unwrap();
        match result {
            // Root (CAP_DAC_OVERRIDE) reads it anyway; nothing to assert then.
            Ok(_) => {}
            Err(err) => assert!(err.to_string().contains(&*sub.to_string_lossy()), "{err}"),
        }
    }

    #[test]
    fn pax_record_lengths_count_themselves() {
        for value_len in 0..1100 {
            let mut rec = Vec::new();
            push_pax_record(&mut rec, b"SCHILY.xattr.user.k", &vec![b'v'; value_len]);
            let space = rec.iter().position(|b| *b == b' ').unwrap();
            let declared: usize = std::str::from_utf8(&rec[..space]).unwrap().parse().unwrap();
            assert_eq!(declared, rec.len(), "value length {value_len}");
            assert_eq!(rec.last(), Some(&b'\n'));
        }
        let mut rec = Vec::new();
        push_pax_record(&mut rec, b"mtime", b"1.5");
        assert_eq!(rec, b"13 mtime=1.5\n");
    }

    #[test]
    fn precise_mtime_only_when_the_header_cannot_hold_it() {
        assert_eq!(precise_mtime(1_600_000_000, 0), None);
        assert_eq!(precise_mtime(0, 0), None);
        assert_eq!(precise_mtime(5, 120_000_000).as_deref(), Some("5.12"));
        assert_eq!(precise_mtime(5, 1).as_deref(), Some("5.000000001"));
        assert_eq!(precise_mtime(-1, 0).as_deref(), Some("-1"));
        assert_eq!(precise_mtime(-2, 500_000_000).as_deref(), Some("-1.5"));
    }

    #[test]
    fn sorted_names_sort_by_bytes() {
        let mut names = SortedNames::default();
        for n in [&b"b"[..], b"\xff", b"a-b", b"a", b"A"] {
            names.push(n);
        }
        names.sort();
        let got: Vec<&[u8]> = (0..5).map(|i| names.get(i).unwrap()).collect();
        assert_eq!(got, vec![&b"A"[..], b"a", b"a-b", b"b", b"\xff"]);
        assert_eq!(names.get(5), None);
    }

    fn gnu_tar() -> Option<&'static str> {
        Path::new("/usr/bin/tar").exists().then_some("/usr/bin/tar")
    }

    #[test]
    fn gnu_tar_lists_the_expected_names() {
        let Some(tar) = gnu_tar() else {
            eprintln!("skipping: no /usr/bin/tar");
            return;
        };
        let src = tempfile::tempdir().unwrap();
        build_fixture(src.path());
        let work = tempfile::tempdir().unwrap();
        let archive_path = work.path().join("out.tar");
        fs::write(&archive_path, archive_of(src.path())).unwrap();
        let output = Command::new(tar)
            .args(["--numeric-owner", "-tvf"])
            .arg(&archive_path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let listing = String::from_utf8_lossy(&output.stdout);
        let [l1, l2, l3] = long_dir_parts();
        let expected_lines = [
            "./a.txt".to_string(),
            "./nested/deeper/leaf.bin".to_string(),
            "./fifo".to_string(),
            "./link-to-a -> a.txt".to_string(),
            format!("./long-link -> {}", long_symlink_target()),
            "./nested/hard2 link to ./hard1".to_string(),
            format!("./{l1}/{l2}/{l3}/long-file-name.txt"),
            "1234/5678".to_string(),
        ];
        for expected in expected_lines {
            assert!(
                listing.contains(&expected),
                "missing {expected:?} in\n{listing}"
            );
        }
        assert!(
            !listing.contains("PaxHeader") && !listing.contains("LongLink"),
            "{listing}"
        );
        assert_eq!(listing.lines().count(), walk(src.path()).len() + 1);
    }

    #[test]
    fn round_trip_through_gnu_tar_restores_everything() {
        let Some(tar) = gnu_tar() else {
            eprintln!("skipping: no /usr/bin/tar");
            return;
        };
        let src = tempfile::tempdir().unwrap();
        let xattr_ok = build_fixture(src.path());
        let work = tempfile::tempdir().unwrap();
        let archive_path = work.path().join("out.tar");
        fs::write(&archive_path, archive_of(src.path())).unwrap();
        let dest = work.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let output = Command::new(tar)
            .args(["--numeric-owner", "--same-owner", "-xpf"])
            .arg(&archive_path)
            .args(["--xattrs", "--xattrs-include=user.*", "-C"])
            .arg(&dest)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let what = Compare {
            whole_second_mtimes: false,
            dir_mtimes_and_xattrs: true,
            fifos: true,
            xattr_names: if xattr_ok {
                &[XATTR_NAME, NEWLINE_XATTR_NAME]
            } else {
                &[]
            },
        };
        assert_same_tree(src.path(), &dest, &what);
        let (s, d) = (
            fs::metadata(src.path()).unwrap(),
            fs::metadata(&dest).unwrap(),
        );
        assert_eq!(
            (s.mode(), s.mtime(), s.mtime_nsec()),
            (d.mode(), d.mtime(), d.mtime_nsec())
        );
    }

    /// Slow (reads 9 GiB of a sparse file): run with `--ignored`.
    #[test]
    #[ignore]
    fn files_over_8_gib_round_trip_their_size() {
        let dir = tempfile::tempdir().unwrap();
        let size = 9 * 1024 * 1024 * 1024u64;
        let f = File::create(dir.path().join("huge")).unwrap();
        f.set_len(size).unwrap();
        f.sync_all().unwrap();

        struct HeadAndCount {
            head: Vec<u8>,
            total: u64,
        }
        impl Write for HeadAndCount {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                let room = (16 * BLOCK_LEN)
                    .saturating_sub(self.head.len())
                    .min(buf.len());
                self.head.extend_from_slice(&buf[..room]);
                self.total += buf.len() as u64;
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut sink = HeadAndCount {
            head: Vec::new(),
            total: 0,
        };
        let summary = write_dir_as_tar(dir.path(), &mut sink).unwrap();
        assert_eq!(summary.bytes_of_file_data, size);
        // The first 16 blocks hold both members' headers with their PAX extensions.
        let mut ar = tar::Archive::new(&sink.head[..]);
        let mut entries = ar.entries().unwrap();
        entries.next().unwrap().unwrap();
        let huge = entries.next().unwrap().unwrap();
        assert_eq!(huge.path_bytes().as_ref(), b"./huge");
        assert_eq!(huge.header().size().unwrap(), size);
        assert!(sink.total > size);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn name() -> impl Strategy<Value = Vec<u8>> {
            proptest::collection::vec(
                prop_oneof![
                    Just(b'a'),
                    Just(b'B'),
                    Just(b'-'),
                    Just(b'.'),
                    Just(0xe9u8),
                    Just(0xffu8)
                ],
                1..6,
            )
            .prop_filter("not . or ..", |n| n != b"." && n != b"..")
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(24))]
            #[test]
            fn random_trees_round_trip_and_are_deterministic(
                files in proptest::collection::btree_map(
                    proptest::collection::vec(name(), 1..4),
                    proptest::collection::vec(any::<u8>(), 0..2000),
                    1..12,
                )
            ) {
                let src = tempfile::tempdir().unwrap();
                let mut written = BTreeMap::new();
                for (components, content) in &files {
                    let mut path = src.path().to_path_buf();
                    for c in components {
                        path.push(OsStr::from_bytes(c));
                    }
                    // Skip paths whose prefix is already a file, or that already are a directory.
                    if path.parent().is_some_and(|p| fs::create_dir_all(p).is_err()) || path.is_dir() {
                        continue;
                    }
                    fs::write(&path, content).unwrap();
                    written.insert(path, content.clone());
                }
                let archive = archive_of(src.path());
                prop_assert!(archive == archive_of(src.path()));
                let dest = tempfile::tempdir().unwrap();
                unpack_with_tar_crate(&archive, dest.path());
                for (path, content) in &written {
                    let rel = path.strip_prefix(src.path()).unwrap();
                    prop_assert_eq!(&fs::read(dest.path().join(rel)).unwrap(), content);
                }
                prop_assert_eq!(walk(src.path()).len(), walk(dest.path()).len());
            }
        }
    }
}
