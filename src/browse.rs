//! Browsing tar streams through their member index: `ls`, `cat` and selective extraction.
//!
//! Everything here reads the member index (a small stream of its own, see [`crate::members`])
//! and then only the parts of the tar stream it needs, so looking at one file of a 100 GB volume
//! reads the index plus that file's chunks.
//!
//! Paths are compared in normalized form ([`normalize_path`]): `./etc//passwd`, `/etc/passwd`
//! and `etc/passwd/` all name `etc/passwd`, as tar extraction would treat them.

mod extract;
mod glob;
mod reader;
pub(crate) mod sparse;

pub use extract::{ExtractSummary, extract_filtered};
pub use glob::{PathFilter, Pattern};
pub use reader::{BlobCache, FailureSlot, NodeCache, StreamReader, read_small, take_failure};

use crate::error::{Error, Result};
use crate::format::manifest::{MembersRef, StreamEntry};
use crate::members::{MAGIC, MemberIndexDecoder, MemberIndexError};
use crate::repo::Repo;
use crate::tarscan::{Member, MemberKind};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::sync::Arc;

/// Hard links pointing at hard links are followed at most this far (a loop is damage).
const MAX_LINK_HOPS: usize = 32;

/// `raw` as tar extraction sees it: empty and `.` components dropped (so leading `./` and `/`
/// go), no trailing slash. `..` components are kept: they are shown, and refused on extraction.
pub fn normalize_path(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    for part in raw.split(|&b| b == b'/') {
        if part.is_empty() || part == b"." {
            continue;
        }
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(part);
    }
    out
}

/// True when a normalized path stays inside the directory it is extracted to.
pub fn is_contained(normalized: &[u8]) -> bool {
    !normalized.split(|&b| b == b'/').any(|part| part == b"..")
}

/// Short name of a member kind, as used in listings and JSON.
pub fn kind_name(kind: MemberKind) -> &'static str {
    match kind {
        MemberKind::File => "file",
        MemberKind::Dir => "dir",
        MemberKind::Symlink => "symlink",
        MemberKind::HardLink => "hardlink",
        MemberKind::CharDev => "chardev",
        MemberKind::BlockDev => "blockdev",
        MemberKind::Fifo => "fifo",
        MemberKind::Other(_) => "other",
    }
}

/// The member index of `stream`, or a clear error when it has none.
pub fn member_index(stream: &StreamEntry) -> Result<&MembersRef> {
    stream.members.as_ref().ok_or_else(|| {
        Error::Invalid(format!(
            "stream {:?} (role {:?}) has no tar member index; restore it with --output instead",
            stream.name, stream.role
        ))
    })
}

/// Decoded members of a stream's index, in stream order.
pub struct MemberIter<'r> {
    decoder: MemberIndexDecoder<std::io::Chain<&'static [u8], StreamReader<'r>>>,
    failure: FailureSlot,
    what: String,
}

impl<'r> MemberIter<'r> {
    /// Decodes the index stream from byte `start`, which must be 0 or the start of a record.
    pub fn open(
        repo: &'r Repo,
        nodes: &'r dyn crate::tree::NodeSource,
        index: &MembersRef,
        start: u64,
        cache: Arc<BlobCache>,
    ) -> Result<MemberIter<'r>> {
        let reader = StreamReader::new(repo, nodes, &index.root, start, index.length, cache)?;
        let failure = reader.failure_slot();
        // Past the magic the decoder still expects one, so it is supplied from memory.
        let prefix: &'static [u8] = if start == 0 { &[] } else { &MAGIC };
        Ok(MemberIter {
            decoder: MemberIndexDecoder::new(prefix.chain(reader)),
            failure,
            what: format!("member index {}", index.root),
        })
    }
}

impl Iterator for MemberIter<'_> {
    type Item = Result<Member>;

    fn next(&mut self) -> Option<Result<Member>> {
        Some(self.decoder.next()?.map_err(|e| match e {
            MemberIndexError::Io(io) => take_failure(&self.failure, io),
            other => Error::corrupt(self.what.clone(), other.to_string()),
        }))
    }
}

/// All members of a tar stream, in stream order.
pub fn members<'r>(repo: &'r Repo, stream: &StreamEntry) -> Result<MemberIter<'r>> {
    MemberIter::open(
        repo,
        repo,
        member_index(stream)?,
        0,
        Arc::new(BlobCache::new(0)),
    )
}

/// One line of a listing: a member under its normalized path, or a directory that only shows
/// in the paths of its contents (`implied`, with zero metadata).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: Vec<u8>,
    pub member: Member,
    pub implied: bool,
}

/// Lists the members under directory `dir` (normalized; empty for the top): its direct children,
/// sorted by path, or with `recursive` everything below it in stream order. When `dir` names a
/// non-directory member, that member is listed. Returns how many entries were visited; a `dir`
/// that names nothing in the stream is an error.
pub fn list(
    repo: &Repo,
    stream: &StreamEntry,
    dir: &[u8],
    recursive: bool,
    visit: &mut dyn FnMut(&Entry) -> Result<()>,
) -> Result<u64> {
    let dir = normalize_path(dir);
    let mut found = dir.is_empty();
    let mut visited = 0u64;
    let mut children: Vec<Entry> = Vec::new();
    let mut explicit: HashSet<Vec<u8>> = HashSet::new();
    let mut implied: Vec<Vec<u8>> = Vec::new();
    let mut implied_seen: HashSet<Vec<u8>> = HashSet::new();
    for member in members(repo, stream)? {
        let member = member?;
        let path = normalize_path(&member.path);
        if path.is_empty() {
            continue;
        }
        let rest = if dir.is_empty() {
            &path[..]
        } else if path == dir {
            found = true;
            if member.kind == MemberKind::Dir {
                continue;
            }
            visit(&Entry {
                path: path.clone(),
                member,
                implied: false,
            })?;
            visited += 1;
            continue;
        } else if path.len() > dir.len() && path.starts_with(&dir) && path[dir.len()] == b'/' {
            found = true;
            &path[dir.len() + 1..]
        } else {
            continue;
        };
        if recursive {
            visit(&Entry {
                path: path.clone(),
                member,
                implied: false,
            })?;
            visited += 1;
            continue;
        }
        match rest.iter().position(|&b| b == b'/') {
            None => {
                explicit.insert(rest.to_vec());
                children.push(Entry {
                    path: path.clone(),
                    member,
                    implied: false,
                });
            }
            Some(slash) => {
                let child = &rest[..slash];
                if implied_seen.insert(child.to_vec()) {
                    implied.push(child.to_vec());
                }
            }
        }
    }
    if !found {
        return Err(Error::Invalid(format!(
            "{:?}: no such file or directory in stream {:?}",
            String::from_utf8_lossy(&dir),
            stream.name
        )));
    }
    for child in implied {
        if explicit.contains(&child) {
            continue;
        }
        let path = if dir.is_empty() {
            child
        } else {
            [&dir[..], b"/", &child[..]].concat()
        };
        children.push(Entry {
            member: implied_dir(&path),
            path,
            implied: true,
        });
    }
    children.sort_by(|a, b| a.path.cmp(&b.path));
    for entry in &children {
        visit(entry)?;
        visited += 1;
    }
    Ok(visited)
}

fn implied_dir(path: &[u8]) -> Member {
    Member {
        path: path.to_vec(),
        link_target: Vec::new(),
        kind: MemberKind::Dir,
        mode: 0,
        uid: 0,
        gid: 0,
        mtime: 0,
        size: 0,
        header_offset: 0,
        data_offset: 0,
        data_len: 0,
        sparse: false,
        dev_major: 0,
        dev_minor: 0,
    }
}

/// The last member (the one extraction would leave in place) whose normalized path is `path`
/// and whose headers start before `before`.
pub fn find_member(
    repo: &Repo,
    stream: &StreamEntry,
    path: &[u8],
    before: u64,
) -> Result<Option<Member>> {
    let mut last = None;
    for member in members(repo, stream)? {
        let member = member?;
        if member.header_offset >= before {
            break;
        }
        if normalize_path(&member.path) == path {
            last = Some(member);
        }
    }
    Ok(last)
}

/// The member holding the content of the file at `path`, following hard links to the member
/// that carries the data. Directories, symlinks and devices have no content and are errors.
pub fn resolve_file(repo: &Repo, stream: &StreamEntry, path: &[u8]) -> Result<Member> {
    let wanted = normalize_path(path);
    let shown = String::from_utf8_lossy(path).into_owned();
    if wanted.is_empty() {
        return Err(Error::Invalid(format!("{shown:?} is a directory")));
    }
    let mut member = find_member(repo, stream, &wanted, u64::MAX)?.ok_or_else(|| {
        Error::Invalid(format!(
            "{shown:?}: no such file in stream {:?}",
            stream.name
        ))
    })?;
    for _ in 0..MAX_LINK_HOPS {
        match member.kind {
            MemberKind::File => return Ok(member),
            MemberKind::HardLink => {
                let target = normalize_path(&member.link_target);
                member = find_member(repo, stream, &target, member.header_offset)?.ok_or_else(
                    || {
                        Error::corrupt(
                            format!("stream {:?}", stream.name),
                            format!(
                                "hard link {shown:?} points to {:?}, which is not an earlier member",
                                String::from_utf8_lossy(&member.link_target)
                            ),
                        )
                    },
                )?;
            }
            MemberKind::Symlink => {
                return Err(Error::Invalid(format!(
                    "{shown:?} is a symbolic link to {:?}; cat the target instead",
                    String::from_utf8_lossy(&member.link_target)
                )));
            }
            MemberKind::Dir => return Err(Error::Invalid(format!("{shown:?} is a directory"))),
            other => {
                return Err(Error::Invalid(format!(
                    "{shown:?} is a {} and has no content",
                    kind_name(other)
                )));
            }
        }
    }
    Err(Error::corrupt(
        format!("stream {:?}", stream.name),
        format!("hard links from {shown:?} go round in a loop"),
    ))
}

/// Writes the content of the file at `path` to `out`, reading only the chunks that cover it.
/// Sparse files are rebuilt from their sparse map (holes written as zeros). Returns the bytes
/// written.
pub fn cat(
    repo: &Repo,
    stream: &StreamEntry,
    path: &[u8],
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    let member = resolve_file(repo, stream, path)?;
    if member.sparse {
        return sparse::write_sparse(repo, stream, &member, out);
    }
    if member.data_len != member.size {
        return Err(Error::corrupt(
            format!("member index of stream {:?}", stream.name),
            "a file's stored length differs from its size",
        ));
    }
    copy_data(repo, stream, member.data_offset, member.data_len, out)?;
    Ok(member.size)
}

/// Copies `len` stream bytes from `offset` to `out`.
pub(crate) fn copy_data(
    repo: &Repo,
    stream: &StreamEntry,
    offset: u64,
    len: u64,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let end = offset
        .checked_add(len)
        .filter(|&end| end <= stream.length)
        .ok_or_else(|| {
            Error::corrupt(
                format!("member index of stream {:?}", stream.name),
                "a member lies beyond the end of the stream",
            )
        })?;
    crate::restore::read_range(repo, &stream.root, offset, end, &mut |bytes: &[u8]| {
        out.write_all(bytes).map_err(Error::IoPlain)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_extraction() {
        for (raw, want) in [
            (&b"./etc//passwd"[..], &b"etc/passwd"[..]),
            (b"/etc/passwd/", b"etc/passwd"),
            (b"./", b""),
            (b".", b""),
            (b"a/./b/../c", b"a/b/../c"),
            (b"\xff name", b"\xff name"),
        ] {
            assert_eq!(normalize_path(raw), want, "{raw:?}");
        }
        assert!(is_contained(b"a/b..c/d"));
        assert!(!is_contained(b"a/../b"));
        assert!(!is_contained(b".."));
    }
}
