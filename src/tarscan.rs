//! Streaming tar header scanner.
//!
//! cairn stores every stream bit-exact. While a stream is ingested this scanner watches its bytes
//! go by, in chunks of any size, and when they form a tar archive it records where each member's
//! headers and data lie, so that `ls`, `cat` and `diff` work without reading the whole stream.
//! The result is only ever a hint and never needed to restore, so the scanner tolerates anything:
//! it never panics, keeps memory bounded (extension headers larger than [`MAX_EXTENSION_LEN`]
//! stop the scan) and, when the bytes stop looking like tar, stops and says so in [`ScanStatus`].
//!
//! Understood: POSIX ustar (prefix + name), GNU (long name `L`, long link `K`, old sparse `S` with
//! its extension blocks, dump directory `D`), PAX per-file headers (`x`, and Solaris' `X`) with
//! `path`, `linkpath`, `size`, `mtime`, `uid`, `gid` and GNU's PAX sparse keys (formats 0.0, 0.1
//! and 1.0), PAX global headers (`g`, content ignored), base-256 numeric fields and V7 headers.
//!
//! Sparse members (`Member::sparse`): `data_offset..data_offset + data_len` is the data as stored
//! in the archive (only the non-hole regions), not the file. The sparse map is in the header
//! blocks (`header_offset..data_offset`) for GNU `S` and PAX 0.x members, and at the start of the
//! stored data (decimal text padded to 512 bytes) for PAX 1.0 members.

use crate::chunker::CutHint;
use crate::pages;
use std::mem;
use std::ops::Range;

/// Size of a tar block: headers are one block and data is padded to a multiple of it.
pub const BLOCK_LEN: u64 = 512;
const BLOCK: usize = 512;

/// Largest GNU long name/link or PAX extended header the scanner buffers. A larger one stops the
/// scan (as `Invalid`) instead of letting hostile input make us allocate without bound.
pub const MAX_EXTENSION_LEN: u64 = 1 << 20;

// Header field positions. V7, ustar and GNU headers share everything up to the magic.
const NAME: Range<usize> = 0..100;
const MODE: Range<usize> = 100..108;
const UID: Range<usize> = 108..116;
const GID: Range<usize> = 116..124;
const SIZE: Range<usize> = 124..136;
const MTIME: Range<usize> = 136..148;
const CHECKSUM: Range<usize> = 148..156;
const TYPEFLAG: usize = 156;
const LINKNAME: Range<usize> = 157..257;
const MAGIC: Range<usize> = 257..263;
const DEV_MAJOR: Range<usize> = 329..337;
const DEV_MINOR: Range<usize> = 337..345;
const USTAR_PREFIX: Range<usize> = 345..500;
const GNU_IS_EXTENDED: usize = 482;
const GNU_REAL_SIZE: Range<usize> = 483..495;
/// In a GNU sparse extension block, the flag saying another extension block follows.
const SPARSE_EXT_IS_EXTENDED: usize = 504;

const USTAR_MAGIC: &[u8] = b"ustar\0";
const GNU_MAGIC: &[u8] = b"ustar ";

/// What a tar member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberKind {
    File,
    Dir,
    Symlink,
    HardLink,
    CharDev,
    BlockDev,
    Fifo,
    /// A typeflag none of the named kinds stands for (for example GNU's `V` volume label).
    Other(u8),
}

impl MemberKind {
    /// The tar typeflag byte standing for this kind (`Other` keeps its own byte).
    pub fn code(self) -> u8 {
        match self {
            MemberKind::File => b'0',
            MemberKind::HardLink => b'1',
            MemberKind::Symlink => b'2',
            MemberKind::CharDev => b'3',
            MemberKind::BlockDev => b'4',
            MemberKind::Dir => b'5',
            MemberKind::Fifo => b'6',
            MemberKind::Other(code) => code,
        }
    }

    /// Inverse of [`MemberKind::code`].
    pub fn from_code(code: u8) -> Self {
        match code {
            b'0' => MemberKind::File,
            b'1' => MemberKind::HardLink,
            b'2' => MemberKind::Symlink,
            b'3' => MemberKind::CharDev,
            b'4' => MemberKind::BlockDev,
            b'5' => MemberKind::Dir,
            b'6' => MemberKind::Fifo,
            other => MemberKind::Other(other),
        }
    }

    fn from_typeflag(typeflag: u8, path: &[u8]) -> Self {
        match typeflag {
            // V7 had no directory type: old archivers mark directories with a trailing slash.
            b'\0' | b'0' if path.ends_with(b"/") => MemberKind::Dir,
            // '\0' is V7's regular file, '7' a contiguous file, 'S' a GNU sparse file.
            b'\0' | b'7' | b'S' => MemberKind::File,
            // A GNU dump directory: a directory whose data lists its contents.
            b'D' => MemberKind::Dir,
            other => MemberKind::from_code(other),
        }
    }
}

/// One member of a tar stream: its metadata and where its headers and data lie in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Raw bytes (may be non-UTF-8), from the PAX path, GNU long name or ustar prefix + name.
    pub path: Vec<u8>,
    /// For symlinks and hard links; empty otherwise.
    pub link_target: Vec<u8>,
    pub kind: MemberKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Whole seconds since the epoch (fractional PAX times are rounded down).
    pub mtime: i64,
    /// Logical file size (PAX size, GNU sparse real size, or the header's size).
    pub size: u64,
    /// Stream offset of the first header block of this member, including its `L`/`K`/`x` blocks.
    pub header_offset: u64,
    /// Stream offset of the member's data.
    pub data_offset: u64,
    /// Bytes of data stored in the archive, before padding.
    pub data_len: u64,
    pub sparse: bool,
    pub dev_major: u32,
    pub dev_minor: u32,
}

impl Member {
    /// Stream offset just past this member's padded data, where the next header may start.
    /// `None` only for offsets no scanner produces (they would overflow `u64`).
    pub fn padded_end(&self) -> Option<u64> {
        self.data_offset.checked_add(padded_len(self.data_len)?)
    }
}

/// `len` rounded up to a whole number of tar blocks.
pub fn padded_len(len: u64) -> Option<u64> {
    Some(len.checked_add(BLOCK_LEN - 1)? & !(BLOCK_LEN - 1))
}

/// How a scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanStatus {
    /// Saw the end-of-archive zero block, or the stream ended cleanly on a member boundary after
    /// at least one member (as some writers emit), or the stream held only zero bytes (an empty
    /// archive).
    Complete,
    /// The stream ended in the middle of a member; the members reported are the complete ones.
    Truncated,
    /// The first header is not a tar header (or the stream is shorter than one block).
    NotTar,
    /// The header block at `at_offset` failed its checksum or could not be followed (unparsable
    /// size, oversized extension, offsets overflowing); the members before it are valid.
    Invalid { at_offset: u64 },
}

/// What the scanner is doing with the next bytes.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Gathering a header block.
    Header,
    /// Gathering a GNU sparse extension block, which sits between an `S` header and its data.
    SparseMap,
    /// Passing over data and padding; then the current member (if any) is complete.
    Skip { remaining: u64 },
    /// Buffering the content of an extension header, then passing over its padding.
    Collect {
        remaining: u64,
        padding: u64,
        extension: Extension,
    },
    /// Only zero blocks so far: an empty archive if the rest is zeros too, else not a tar.
    LeadingZeros,
    /// The scan is over; the rest of the stream is ignored.
    Done(ScanStatus),
}

#[derive(Debug, Clone, Copy)]
enum Extension {
    LongName,
    LongLink,
    Pax,
}

/// Extension headers seen since the last member, applying to the next member header.
#[derive(Debug, Default)]
struct PendingExtensions {
    header_offset: Option<u64>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: PaxOverrides,
}

#[derive(Debug, Default)]
struct PaxOverrides {
    path: Option<Vec<u8>>,
    link_path: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<i64>,
    sparse_name: Option<Vec<u8>>,
    sparse_real_size: Option<u64>,
    sparse: bool,
}

/// Streaming, non-failing tar scanner: feed it the stream's bytes in order, then `finish`.
#[derive(Debug)]
pub struct TarScanner {
    phase: Phase,
    /// Stream offset of the next byte to be fed.
    offset: u64,
    block: [u8; BLOCK],
    block_fill: usize,
    extension_buf: Vec<u8>,
    pending: PendingExtensions,
    /// The member whose data is being passed over; reported once its padding is complete.
    current: Option<Member>,
    saw_header: bool,
    members_emitted: u64,
    /// Where chunks should be cut: members' first header blocks, as soon as that block has been
    /// read, and paged files, as soon as their first bytes have been read. Chunking uses them
    /// before the member is complete.
    hints: Vec<CutHint>,
    /// The first bytes of the current member's data, while deciding whether it is a paged file.
    probe: Option<Vec<u8>>,
    /// Whether to look for paged files at all.
    detect_pages: bool,
}

impl Default for TarScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl TarScanner {
    pub fn new() -> Self {
        TarScanner {
            phase: Phase::Header,
            offset: 0,
            block: [0; BLOCK],
            block_fill: 0,
            extension_buf: Vec::new(),
            pending: PendingExtensions::default(),
            current: None,
            saw_header: false,
            members_emitted: 0,
            hints: Vec::new(),
            probe: None,
            detect_pages: true,
        }
    }

    /// Whether paged files are reported as aligned regions (on by default).
    pub fn detecting_pages(mut self, on: bool) -> Self {
        self.detect_pages = on;
        self
    }

    /// Moves the cut hints found since the last call into `out`, in stream order. A member
    /// start is known once the member's first 512-byte header block has been fed, a paged file
    /// once `pages::PROBE_LEN` bytes of its data have (both within `HINT_LOOKAHEAD`).
    pub fn drain_cut_hints(&mut self, out: &mut Vec<CutHint>) {
        out.append(&mut self.hints);
    }

    /// Feeds the next bytes of the stream. Completed member records are appended to `out`.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<Member>) {
        while !bytes.is_empty() {
            let used = self.step(bytes, out);
            bytes = bytes.get(used..).unwrap_or_default();
        }
    }

    /// True once the scan has stopped: further bytes are ignored, so a caller may stop feeding.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done(_))
    }

    /// Call at end of stream.
    pub fn finish(self) -> ScanStatus {
        match self.phase {
            Phase::Done(status) => status,
            Phase::LeadingZeros => ScanStatus::Complete,
            Phase::Header
                if self.block_fill == 0
                    && self.pending.header_offset.is_none()
                    && self.members_emitted > 0 =>
            {
                ScanStatus::Complete
            }
            _ if !self.saw_header => ScanStatus::NotTar,
            _ => ScanStatus::Truncated,
        }
    }

    /// Consumes a prefix of `bytes` (at least one byte) and returns its length.
    fn step(&mut self, bytes: &[u8], out: &mut Vec<Member>) -> usize {
        match self.phase {
            Phase::Done(_) => bytes.len(),
            Phase::LeadingZeros => {
                if bytes.iter().any(|&b| b != 0) {
                    self.phase = Phase::Done(ScanStatus::NotTar);
                }
                bytes.len()
            }
            Phase::Header | Phase::SparseMap => self.fill_block(bytes, out),
            Phase::Skip { remaining } => {
                let used = prefix_len(remaining, bytes.len());
                if self.probe.is_some() {
                    self.probe_data(&bytes[..used]);
                }
                self.advance(used);
                let remaining = remaining - used as u64;
                if remaining == 0 {
                    self.complete_member(out);
                } else {
                    self.phase = Phase::Skip { remaining };
                }
                used
            }
            Phase::Collect {
                remaining,
                padding,
                extension,
            } => {
                let used = prefix_len(remaining, bytes.len());
                self.extension_buf.extend_from_slice(&bytes[..used]);
                self.advance(used);
                let remaining = remaining - used as u64;
                if remaining == 0 {
                    self.finish_extension(extension, padding, out);
                } else {
                    self.phase = Phase::Collect {
                        remaining,
                        padding,
                        extension,
                    };
                }
                used
            }
        }
    }

    fn advance(&mut self, len: usize) {
        self.offset = self.offset.saturating_add(len as u64);
    }

    fn fill_block(&mut self, bytes: &[u8], out: &mut Vec<Member>) -> usize {
        let used = (BLOCK - self.block_fill).min(bytes.len());
        self.block[self.block_fill..self.block_fill + used].copy_from_slice(&bytes[..used]);
        self.block_fill += used;
        self.advance(used);
        if self.block_fill == BLOCK {
            self.block_fill = 0;
            match self.phase {
                Phase::SparseMap => self.on_sparse_map_block(out),
                _ => self.on_header_block(out),
            }
        }
        used
    }

    fn on_header_block(&mut self, out: &mut Vec<Member>) {
        let start = self.offset.saturating_sub(BLOCK_LEN);
        if self.block.iter().all(|&b| b == 0) {
            self.phase = if !self.saw_header {
                Phase::LeadingZeros
            } else if self.pending.header_offset.is_some() {
                // Extension headers with no member after them.
                Phase::Done(ScanStatus::Invalid { at_offset: start })
            } else {
                // GNU tar also stops at a lone zero block, so one is enough.
                Phase::Done(ScanStatus::Complete)
            };
            return;
        }
        let followed = checksum_matches(&self.block)
            && match self.block[TYPEFLAG] {
                b'L' => self.start_extension(start, Extension::LongName, out),
                b'K' => self.start_extension(start, Extension::LongLink, out),
                b'x' | b'X' => self.start_extension(start, Extension::Pax, out),
                b'g' => self.skip_global_header(out),
                _ => self.start_member(start, out),
            }
            .is_some();
        if followed {
            self.saw_header = true;
        } else {
            self.stop_at_bad_header(start);
        }
    }

    fn stop_at_bad_header(&mut self, at_offset: u64) {
        self.phase = Phase::Done(if self.saw_header {
            ScanStatus::Invalid { at_offset }
        } else {
            ScanStatus::NotTar
        });
    }

    fn start_extension(
        &mut self,
        start: u64,
        extension: Extension,
        out: &mut Vec<Member>,
    ) -> Option<()> {
        let len = parse_unsigned(&self.block[SIZE])?;
        if len > MAX_EXTENSION_LEN {
            return None;
        }
        let padding = padded_len(len)? - len;
        if self.pending.header_offset.is_none() {
            self.hints.push(CutHint::MemberStart(start));
        }
        self.pending.header_offset.get_or_insert(start);
        self.extension_buf.clear();
        if len == 0 {
            self.finish_extension(extension, padding, out);
        } else {
            self.phase = Phase::Collect {
                remaining: len,
                padding,
                extension,
            };
        }
        Some(())
    }

    fn finish_extension(&mut self, extension: Extension, padding: u64, out: &mut Vec<Member>) {
        let content = mem::take(&mut self.extension_buf);
        match extension {
            Extension::LongName => self.pending.long_name = Some(until_nul(&content).to_vec()),
            Extension::LongLink => self.pending.long_link = Some(until_nul(&content).to_vec()),
            Extension::Pax => apply_pax_records(&content, &mut self.pending.pax),
        }
        self.extension_buf = content;
        self.extension_buf.clear();
        self.enter_skip(padding, out);
    }

    /// Global PAX headers set defaults for the whole archive; the index ignores them.
    fn skip_global_header(&mut self, out: &mut Vec<Member>) -> Option<()> {
        let len = padded_len(parse_unsigned(&self.block[SIZE])?)?;
        self.enter_skip(len, out);
        Some(())
    }

    fn start_member(&mut self, start: u64, out: &mut Vec<Member>) -> Option<()> {
        let block = &self.block;
        let typeflag = block[TYPEFLAG];
        let stored_len = match self.pending.pax.size {
            Some(size) => size,
            None => parse_unsigned(&block[SIZE])?,
        };
        // Like Go's archive/tar (which writes docker's tars): these types never carry data,
        // whatever their size field says.
        let data_len = if matches!(typeflag, b'1'..=b'6') {
            0
        } else {
            stored_len
        };
        let skip = padded_len(data_len)?;
        let data_offset = self.offset;
        data_offset.checked_add(skip)?;

        if self.pending.header_offset.is_none() {
            self.hints.push(CutHint::MemberStart(start));
        }
        let block = &self.block;
        let pending = mem::take(&mut self.pending);
        let path = member_path(block, &pending);
        let kind = MemberKind::from_typeflag(typeflag, &path);
        let link_target = match kind {
            MemberKind::Symlink | MemberKind::HardLink => pending
                .pax
                .link_path
                .or(pending.long_link)
                .unwrap_or_else(|| until_nul(&block[LINKNAME]).to_vec()),
            _ => Vec::new(),
        };
        let gnu_sparse = typeflag == b'S';
        let size = if gnu_sparse {
            parse_unsigned(&block[GNU_REAL_SIZE]).unwrap_or(stored_len)
        } else {
            pending.pax.sparse_real_size.unwrap_or(stored_len)
        };
        let (dev_major, dev_minor) = match kind {
            MemberKind::CharDev | MemberKind::BlockDev => device_numbers(block),
            _ => (0, 0),
        };
        let member = Member {
            path,
            link_target,
            kind,
            mode: parse_unsigned(&block[MODE])
                .and_then(|mode| u32::try_from(mode).ok())
                .unwrap_or(0),
            uid: pending
                .pax
                .uid
                .or_else(|| parse_unsigned(&block[UID]))
                .unwrap_or(0),
            gid: pending
                .pax
                .gid
                .or_else(|| parse_unsigned(&block[GID]))
                .unwrap_or(0),
            mtime: pending
                .pax
                .mtime
                .or_else(|| parse_signed(&block[MTIME]))
                .unwrap_or(0),
            size,
            header_offset: pending.header_offset.unwrap_or(start),
            data_offset,
            data_len,
            sparse: gnu_sparse || pending.pax.sparse,
            dev_major,
            dev_minor,
        };
        let has_sparse_map_blocks = gnu_sparse && block[GNU_IS_EXTENDED] != 0;
        // Only plain files store their data as they are; a sparse member's data is packed.
        let may_be_paged = self.detect_pages
            && member.kind == MemberKind::File
            && !member.sparse
            && member.data_len >= 2 * u64::from(pages::MIN_BLOCK);
        self.probe = may_be_paged.then(|| Vec::with_capacity(pages::PROBE_LEN));
        self.current = Some(member);
        if has_sparse_map_blocks {
            self.phase = Phase::SparseMap;
        } else {
            self.enter_skip(skip, out);
        }
        Some(())
    }

    fn on_sparse_map_block(&mut self, out: &mut Vec<Member>) {
        if self.block[SPARSE_EXT_IS_EXTENDED] != 0 {
            return;
        }
        let data_offset = self.offset;
        let skip = self.current.as_mut().and_then(|member| {
            member.data_offset = data_offset;
            let skip = padded_len(member.data_len)?;
            data_offset.checked_add(skip)?;
            Some(skip)
        });
        match skip {
            Some(skip) => self.enter_skip(skip, out),
            None => {
                let at_offset = self.current.as_ref().map_or(0, |m| m.header_offset);
                self.phase = Phase::Done(ScanStatus::Invalid { at_offset });
            }
        }
    }

    /// Collects the first bytes of the current member's data (`bytes` continue it) and, once
    /// there are enough, reports the member as an aligned region if it is a paged file.
    fn probe_data(&mut self, bytes: &[u8]) {
        let Some(head) = self.probe.as_mut() else {
            return;
        };
        let take = (pages::PROBE_LEN - head.len()).min(bytes.len());
        head.extend_from_slice(&bytes[..take]);
        if head.len() < pages::PROBE_LEN {
            return;
        }
        let head = self.probe.take().unwrap_or_default();
        let Some(m) = self.current.as_ref() else {
            return;
        };
        if let Some(paged) = pages::detect(&m.path, m.data_len, &head)
            && let Some(end) = m.data_offset.checked_add(m.data_len)
        {
            self.hints.push(CutHint::Aligned {
                start: m.data_offset,
                end,
                block: paged.block_size(),
            });
        }
    }

    fn enter_skip(&mut self, len: u64, out: &mut Vec<Member>) {
        if len == 0 {
            self.complete_member(out);
        } else {
            self.phase = Phase::Skip { remaining: len };
        }
    }

    fn complete_member(&mut self, out: &mut Vec<Member>) {
        self.probe = None;
        if let Some(member) = self.current.take() {
            out.push(member);
            self.members_emitted += 1;
        }
        self.phase = Phase::Header;
    }
}

/// How many of `available` bytes belong to a region with `remaining` bytes left.
fn prefix_len(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}

fn member_path(block: &[u8; BLOCK], pending: &PendingExtensions) -> Vec<u8> {
    let extended = pending
        .pax
        .sparse_name
        .as_ref()
        .or(pending.pax.path.as_ref())
        .or(pending.long_name.as_ref());
    match extended {
        Some(path) => path.clone(),
        None => header_path(block),
    }
}

fn header_path(block: &[u8; BLOCK]) -> Vec<u8> {
    let name = until_nul(&block[NAME]);
    let prefix = if &block[MAGIC] == USTAR_MAGIC {
        until_nul(&block[USTAR_PREFIX])
    } else {
        &[]
    };
    if prefix.is_empty() {
        return name.to_vec();
    }
    let mut path = Vec::with_capacity(prefix.len() + 1 + name.len());
    path.extend_from_slice(prefix);
    path.push(b'/');
    path.extend_from_slice(name);
    path
}

fn device_numbers(block: &[u8; BLOCK]) -> (u32, u32) {
    let magic = &block[MAGIC];
    if magic != USTAR_MAGIC && magic != GNU_MAGIC {
        return (0, 0);
    }
    let number = |field: Range<usize>| {
        parse_unsigned(&block[field])
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0)
    };
    (number(DEV_MAJOR), number(DEV_MINOR))
}

fn until_nul(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|&b| b == 0) {
        Some(end) => &bytes[..end],
        None => bytes,
    }
}

/// Header checksum: the byte sum with the checksum field read as spaces. Some old archivers
/// summed signed chars, so either sum is accepted.
fn checksum_matches(block: &[u8; BLOCK]) -> bool {
    let Some(stored) = parse_octal(&block[CHECKSUM]) else {
        return false;
    };
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &byte) in block.iter().enumerate() {
        let byte = if CHECKSUM.contains(&i) { b' ' } else { byte };
        unsigned += u64::from(byte);
        signed += i64::from(byte as i8);
    }
    stored == unsigned || i64::try_from(stored) == Ok(signed)
}

fn parse_unsigned(field: &[u8]) -> Option<u64> {
    u64::try_from(parse_numeric(field)?).ok()
}

fn parse_signed(field: &[u8]) -> Option<i64> {
    i64::try_from(parse_numeric(field)?).ok()
}

/// A numeric header field: octal text, or GNU/star base-256 when the high bit of the first byte
/// is set (a big-endian two's-complement number in the remaining bits, so negative times work).
fn parse_numeric(field: &[u8]) -> Option<i128> {
    let (&first, rest) = field.split_first()?;
    if first & 0x80 == 0 {
        return parse_octal(field).map(i128::from);
    }
    // 12 bytes carry at most 95 value bits, so an i128 cannot overflow.
    if field.len() > 12 {
        return None;
    }
    let mut value = i128::from(first & 0x7f);
    if first & 0x40 != 0 {
        value -= 0x80;
    }
    for &byte in rest {
        value = value * 256 + i128::from(byte);
    }
    Some(value)
}

/// Octal text with optional leading spaces, ended by a space, NUL or the field's end. A field
/// with no digits at all (all spaces or NULs) reads as zero.
fn parse_octal(field: &[u8]) -> Option<u64> {
    let start = field.iter().position(|&b| b != b' ').unwrap_or(field.len());
    let digits = &field[start..];
    let digit_count = digits
        .iter()
        .position(|b| !(b'0'..=b'7').contains(b))
        .unwrap_or(digits.len());
    match digits.get(digit_count) {
        None | Some(b' ') | Some(b'\0') => {}
        Some(_) => return None,
    }
    if digit_count == 0 {
        return digits.iter().all(|&b| b == 0 || b == b' ').then_some(0);
    }
    digits[..digit_count]
        .iter()
        .try_fold(0u64, |value, &digit| {
            value.checked_mul(8)?.checked_add(u64::from(digit - b'0'))
        })
}

/// Applies the records of a PAX extended header (`"<len> <key>=<value>\n"` each). Malformed
/// records end the parse: what came before them still applies.
fn apply_pax_records(mut records: &[u8], pax: &mut PaxOverrides) {
    while let Some((key, value, rest)) = next_pax_record(records) {
        apply_pax_record(key, value, pax);
        records = rest;
    }
}

fn next_pax_record(input: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let space = input.iter().take(21).position(|&b| b == b' ')?;
    let len = usize::try_from(parse_decimal(&input[..space])?).ok()?;
    if len <= space + 1 || len > input.len() {
        return None;
    }
    let record = input[space + 1..len].strip_suffix(b"\n")?;
    let equals = record.iter().position(|&b| b == b'=')?;
    Some((&record[..equals], &record[equals + 1..], &input[len..]))
}

fn apply_pax_record(key: &[u8], value: &[u8], pax: &mut PaxOverrides) {
    // An empty value removes the keyword, letting the header field apply again.
    let text = (!value.is_empty()).then_some(value);
    match key {
        b"path" => pax.path = text.map(<[u8]>::to_vec),
        b"linkpath" => pax.link_path = text.map(<[u8]>::to_vec),
        b"size" => pax.size = text.and_then(parse_decimal),
        b"uid" => pax.uid = text.and_then(parse_decimal),
        b"gid" => pax.gid = text.and_then(parse_decimal),
        b"mtime" => pax.mtime = text.and_then(parse_pax_time),
        b"GNU.sparse.name" => {
            pax.sparse = true;
            pax.sparse_name = text.map(<[u8]>::to_vec);
        }
        b"GNU.sparse.realsize" | b"GNU.sparse.size" => {
            pax.sparse = true;
            pax.sparse_real_size = text.and_then(parse_decimal);
        }
        _ if key.starts_with(b"GNU.sparse.") => pax.sparse = true,
        _ => {}
    }
}

fn parse_decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0u64, |value, &digit| {
        if !digit.is_ascii_digit() {
            return None;
        }
        value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

/// A PAX time such as `1700000000.123456789` or `-1.5`, rounded down to whole seconds.
fn parse_pax_time(text: &[u8]) -> Option<i64> {
    let (negative, magnitude) = match text.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = match magnitude.iter().position(|&b| b == b'.') {
        Some(dot) => (&magnitude[..dot], &magnitude[dot + 1..]),
        None => (magnitude, &[][..]),
    };
    if !fraction.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let seconds = i64::try_from(parse_decimal(whole)?).ok()?;
    if !negative {
        return Some(seconds);
    }
    let has_fraction = fraction.iter().any(|&d| d != b'0');
    (-seconds).checked_sub(i64::from(has_fraction))
}

#[cfg(test)]
mod tests;
