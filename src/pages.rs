//! Recognising files made of fixed-size pages, so that their chunks can follow page boundaries.
//!
//! A database changes a scattered few percent of its pages between two snapshots; content-defined
//! chunks of 64 KiB almost all contain one of them, so every snapshot would store nearly the
//! whole file again. Cutting at page boundaries (relative to the start of the file's data) makes
//! every unchanged page a chunk already stored, and keeps pages that merely moved by whole pages
//! (a checkpoint with pages inserted) aligned too.
//!
//! Detection looks at the member's path, length and first bytes. Nothing here is trusted for
//! correctness: a wrong guess changes only where chunks are cut, never the bytes stored, so it
//! costs at most some deduplication. See format-spec/tree.md ("Page-aligned members").

/// Bytes of a member's data the detector needs to see.
pub const PROBE_LEN: usize = 64;

/// Chunks of page-aligned members are never smaller than this (pages smaller than it are
/// grouped): below it, per-chunk metadata (tree entry, pack table row, index row; ~120 bytes)
/// stops being small next to the compressed block.
pub const MIN_BLOCK: u32 = 4096;

/// What kind of paged file a member is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageFormat {
    Sqlite,
    Postgres,
    InnoDb,
    CriuPages,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagedFile {
    pub format: PageFormat,
    pub page_size: u32,
}

impl PagedFile {
    /// The size of the chunks to cut this file into: one page, or several small pages.
    pub fn block_size(&self) -> u32 {
        self.page_size.max(MIN_BLOCK)
    }
}

/// Decides whether a member of `len` bytes at `path`, whose data begins with `head` (its first
/// `PROBE_LEN` bytes, fewer only if the member is shorter), is a paged file worth aligning.
pub fn detect(path: &[u8], len: u64, head: &[u8]) -> Option<PagedFile> {
    let found = sqlite(head)
        .or_else(|| postgres(path, head))
        .or_else(|| innodb(path, head))
        .or_else(|| criu_pages(path))?;
    // Aligning pays only with a whole number of blocks, at least two of them.
    let block = u64::from(found.block_size());
    (len >= 2 * block && len.is_multiple_of(u64::from(found.page_size))).then_some(found)
}

fn sqlite(head: &[u8]) -> Option<PagedFile> {
    // https://sqlite.org/fileformat.html: magic, page size (1 means 65536), and payload
    // fractions that the format fixes at 64, 32, 32.
    if head.len() < 24 || &head[..16] != b"SQLite format 3\0" || head[21..24] != [64, 32, 32] {
        return None;
    }
    let page_size = match u16::from_be_bytes([head[16], head[17]]) {
        1 => 65536,
        n => u32::from(n),
    };
    power_of_two_in(page_size, 512, 65536).map(|page_size| PagedFile {
        format: PageFormat::Sqlite,
        page_size,
    })
}

fn postgres(path: &[u8], head: &[u8]) -> Option<PagedFile> {
    let parts: Vec<&[u8]> = path
        .split(|&b| b == b'/')
        .filter(|p| !p.is_empty())
        .collect();
    let [.., dir, name] = parts.as_slice() else {
        return None;
    };
    let parent = parts.len().checked_sub(3).and_then(|i| parts.get(i));
    let relation = relation_file_name(name)
        && (*dir == b"global" || (parent == Some(&&b"base"[..]) && all_digits(dir)));
    if relation {
        return postgres_page(head);
    }
    // WAL segments: 24 hex digits, 8 KiB pages whose headers start with the WAL magic 0xD1xx.
    let wal = *dir == b"pg_wal"
        && name.len() == 24
        && name.iter().all(u8::is_ascii_hexdigit)
        && head.len() >= 2
        && head[1] == 0xD1;
    wal.then_some(PagedFile {
        format: PageFormat::Postgres,
        page_size: 8192,
    })
}

/// `<relfilenode>[_fsm|_vm|_init][.<segment>]`
fn relation_file_name(name: &[u8]) -> bool {
    let (stem, segment) = match name.iter().position(|&b| b == b'.') {
        Some(dot) => (&name[..dot], Some(&name[dot + 1..])),
        None => (name, None),
    };
    let node = [&b"_fsm"[..], b"_vm", b"_init"]
        .iter()
        .find_map(|fork| stem.strip_suffix(*fork))
        .unwrap_or(stem);
    all_digits(node) && segment.is_none_or(all_digits)
}

/// The page header of a PostgreSQL page (bufpage.h): an all-zero page is valid (new pages are
/// written as zeros); otherwise the size in `pd_pagesize_version` and ordered
/// `pd_lower ≤ pd_upper ≤ pd_special ≤ page size`.
fn postgres_page(head: &[u8]) -> Option<PagedFile> {
    if head.len() < 24 {
        return None;
    }
    if head[..24].iter().all(|&b| b == 0) {
        return Some(PagedFile {
            format: PageFormat::Postgres,
            page_size: 8192,
        });
    }
    let le = |at: usize| u32::from(u16::from_le_bytes([head[at], head[at + 1]]));
    let (lower, upper, special) = (le(12), le(14), le(16));
    let page_size = power_of_two_in(le(18) & 0xFF00, 1024, 32768)?;
    (24 <= lower && lower <= upper && upper <= special && special <= page_size).then_some(
        PagedFile {
            format: PageFormat::Postgres,
            page_size,
        },
    )
}

fn innodb(path: &[u8], head: &[u8]) -> Option<PagedFile> {
    let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    let named =
        name.ends_with(b".ibd") || name.starts_with(b"ibdata") || name.starts_with(b"undo_");
    if !named || head.len() < 58 {
        return None;
    }
    let be32 = |at: usize| u32::from_be_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
    // Page 0 is the file-space header page: page number 0, page type FSP_HDR (8).
    if be32(4) != 0 || u16::from_be_bytes([head[24], head[25]]) != 8 {
        return None;
    }
    // FSP flags (at 38 + 16): PAGE_SSIZE in bits 6..10; 0 means the default 16 KiB.
    let ssize = (be32(54) >> 6) & 0xF;
    let page_size = if ssize == 0 { 16384 } else { 512u32 << ssize };
    power_of_two_in(page_size, 4096, 65536).map(|page_size| PagedFile {
        format: PageFormat::InnoDb,
        page_size,
    })
}

/// CRIU's `pages-<n>.img`: raw memory pages, nothing to check in the content.
fn criu_pages(path: &[u8]) -> Option<PagedFile> {
    let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    let n = name.strip_prefix(b"pages-")?.strip_suffix(b".img")?;
    all_digits(n).then_some(PagedFile {
        format: PageFormat::CriuPages,
        page_size: 4096,
    })
}

fn all_digits(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(u8::is_ascii_digit)
}

fn power_of_two_in(n: u32, min: u32, max: u32) -> Option<u32> {
    (n.is_power_of_two() && (min..=max).contains(&n)).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite_head(page: u16) -> Vec<u8> {
        let mut h = b"SQLite format 3\0".to_vec();
        h.extend_from_slice(&page.to_be_bytes());
        h.extend_from_slice(&[1, 1, 0, 64, 32, 32]);
        h.resize(PROBE_LEN, 0);
        h
    }

    fn pg_head() -> Vec<u8> {
        let mut h = vec![0u8; PROBE_LEN];
        h[12..14].copy_from_slice(&40u16.to_le_bytes());
        h[14..16].copy_from_slice(&8000u16.to_le_bytes());
        h[16..18].copy_from_slice(&8192u16.to_le_bytes());
        h[18..20].copy_from_slice(&(8192u16 | 4).to_le_bytes());
        h
    }

    #[test]
    fn sqlite_by_content_whatever_the_name() {
        let f = detect(b"data/app.db", 1 << 20, &sqlite_head(4096)).unwrap();
        assert_eq!(
            (f.format, f.page_size, f.block_size()),
            (PageFormat::Sqlite, 4096, 4096)
        );
        // 1 means 65536; small pages are grouped into 4 KiB blocks.
        assert_eq!(
            detect(b"x", 1 << 20, &sqlite_head(1)).unwrap().page_size,
            65536
        );
        assert_eq!(
            detect(b"x", 1 << 20, &sqlite_head(1024))
                .unwrap()
                .block_size(),
            4096
        );
        // Not a whole number of pages, too short, bad page size, bad fractions, a text file.
        assert!(detect(b"x", (1 << 20) + 1, &sqlite_head(4096)).is_none());
        assert!(detect(b"x", 4096, &sqlite_head(4096)).is_none());
        assert!(detect(b"x", 1 << 20, &sqlite_head(3000)).is_none());
        let mut h = sqlite_head(4096);
        h[21] = 65;
        assert!(detect(b"x", 1 << 20, &h).is_none());
        assert!(detect(b"x", 1 << 20, b"SQLite format 3 is what this text says").is_none());
    }

    #[test]
    fn postgres_relations_and_wal_by_path_and_page_header() {
        for path in [
            &b"var/lib/postgresql/15/main/base/16384/2619"[..],
            b"./main/base/1/2619_fsm",
            b"base/5/16397.1",
            b"pgdata/global/1262",
            b"pgdata/global/1262_vm",
        ] {
            let f = detect(path, 16384, &pg_head());
            assert_eq!(
                f.map(|f| f.page_size),
                Some(8192),
                "{}",
                String::from_utf8_lossy(path)
            );
        }
        // Zero pages are valid PostgreSQL pages.
        assert!(detect(b"base/5/16397", 16384, &[0u8; PROBE_LEN]).is_some());
        // Wrong place or name, or a header that is not a page header.
        assert!(detect(b"base/16397", 16384, &pg_head()).is_none());
        assert!(detect(b"base/5/notes.txt", 16384, &pg_head()).is_none());
        assert!(detect(b"base/x5/16397", 16384, &pg_head()).is_none());
        let mut h = pg_head();
        h[14..16].copy_from_slice(&10u16.to_le_bytes()); // upper below lower
        assert!(detect(b"base/5/16397", 16384, &h).is_none());
        let mut wal = vec![0u8; PROBE_LEN];
        wal[..2].copy_from_slice(&0xD110u16.to_le_bytes());
        let seg = b"pg_wal/000000010000000000000001";
        assert_eq!(detect(seg, 16 << 20, &wal).unwrap().page_size, 8192);
        assert!(detect(seg, 16 << 20, &pg_head()).is_none());
    }

    #[test]
    fn innodb_tablespaces() {
        let mut h = vec![0u8; PROBE_LEN];
        h[24..26].copy_from_slice(&8u16.to_be_bytes());
        assert_eq!(
            detect(b"mysql/db/t.ibd", 1 << 20, &h).unwrap().page_size,
            16384
        );
        assert_eq!(
            detect(b"mysql/ibdata1", 1 << 20, &h).unwrap().page_size,
            16384
        );
        // PAGE_SSIZE 3 = 4 KiB pages.
        h[54..58].copy_from_slice(&(3u32 << 6).to_be_bytes());
        assert_eq!(detect(b"t.ibd", 1 << 20, &h).unwrap().page_size, 4096);
        // Not page 0 of a tablespace, or not named like one.
        h[4..8].copy_from_slice(&7u32.to_be_bytes());
        assert!(detect(b"t.ibd", 1 << 20, &h).is_none());
        h[4..8].copy_from_slice(&0u32.to_be_bytes());
        assert!(detect(b"t.dat", 1 << 20, &h).is_none());
    }

    #[test]
    fn criu_page_images_by_name() {
        assert_eq!(
            detect(b"ckpt/pages-12.img", 1 << 20, b"anything")
                .unwrap()
                .format,
            PageFormat::CriuPages
        );
        assert!(detect(b"ckpt/pages-12.img", 4096 * 3 + 1, b"").is_none());
        assert!(detect(b"ckpt/pagemap-12.img", 1 << 20, b"").is_none());
        assert!(detect(b"ckpt/pages-.img", 1 << 20, b"").is_none());
    }
}
