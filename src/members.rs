//! Member index encoding, format version 1.
//!
//! The member index of a tar stream (one record per member, see [`crate::tarscan`]) is stored
//! as a byte stream of its own, content-defined-chunked like any other stream. So that a change
//! early in the tar (a file growing) does not change the encoding of every later record, no
//! absolute stream offset is stored: each record says how far its header starts after the end of
//! the previous member's padded data, and a decoder rebuilds absolute offsets as it goes.
//!
//! ```text
//! index   = magic record*                       the index ends where its stream ends
//! magic   = "CRNMIDX" 0x01                      8 bytes; the last one is the format version
//! record  = tag:u8 member                       tag 1 = member; 0 and 2..=255 are reserved
//! member  = gap:uvar header_len:uvar kind:u8 mode:uvar uid:uvar gid:uvar mtime:svar
//!           size:uvar data_len:uvar flags:uvar dev_major:uvar dev_minor:uvar
//!           path:bytes link_target:bytes
//! uvar    = unsigned LEB128: 7 value bits per byte, least significant group first, high bit
//!           set on every byte but the last; at most 10 bytes, value < 2^64, no redundant
//!           trailing zero groups (the encoding of a value is unique)
//! svar    = uvar holding the zigzag form of a signed 64-bit n: (n << 1) ^ (n >> 63)
//! bytes   = len:uvar, then len raw bytes; len <= 1 MiB (1048576)
//! ```
//!
//! Field meanings:
//! - `gap`: `header_offset - end`, where `end` is 0 before the first record and afterwards the
//!   previous record's `data_offset + round_up(data_len, 512)`. A decoder computes
//!   `header_offset = end + gap`, `data_offset = header_offset + header_len` and the new
//!   `end = data_offset + round_up(data_len, 512)`; any of these overflowing u64 is an error.
//!   `gap` is 0 for consecutive members; it covers what is not part of a member (a leading PAX
//!   global header, for instance).
//! - `header_len`: `data_offset - header_offset`, all header blocks of the member (its GNU long
//!   name/link, PAX extended and GNU sparse extension blocks included).
//! - `kind`: the tar typeflag byte: `'0'` file, `'1'` hard link, `'2'` symlink, `'3'` character
//!   device, `'4'` block device, `'5'` directory, `'6'` FIFO; any other byte is another kind
//!   carrying that typeflag.
//! - `mode`, `dev_major`, `dev_minor`: at most 2^32 - 1. `uid`, `gid`: as in the archive.
//! - `mtime`: whole seconds since the Unix epoch, may be negative.
//! - `size`: logical file size; `data_len`: bytes of data stored in the archive, before padding
//!   (they differ for sparse files).
//! - `flags`: bit 0 = sparse; every other bit must be 0.
//! - `path`, `link_target`: raw bytes as in the archive (not necessarily UTF-8); `link_target`
//!   is empty unless the member is a link.

use std::io::{self, BufReader, Read};

use crate::tarscan::{MAX_EXTENSION_LEN, Member, MemberKind, padded_len};

/// Magic and format version at the start of every member index.
pub const MAGIC: [u8; 8] = *b"CRNMIDX\x01";

const RECORD_MEMBER: u8 = 1;
const FLAG_SPARSE: u64 = 1;
const MAX_VARINT_LEN: usize = 10;
/// Paths come from the scanner, which never buffers a name longer than this.
const MAX_BYTES_LEN: u64 = MAX_EXTENSION_LEN;

#[derive(thiserror::Error, Debug)]
pub enum MemberIndexError {
    #[error("reading member index: {0}")]
    Io(#[from] io::Error),
    #[error("not a member index (bad magic)")]
    BadMagic,
    #[error("member index format version {0} is not supported (this build reads version 1)")]
    UnsupportedVersion(u8),
    #[error("member index record {record}: unknown record tag {tag}")]
    UnknownRecordTag { record: u64, tag: u8 },
    #[error("member index ends in the middle of record {record}")]
    Truncated { record: u64 },
    #[error("member index record {record}: malformed varint in field {field}")]
    BadVarint { record: u64, field: &'static str },
    #[error("member index record {record}: field {field} out of range")]
    OutOfRange { record: u64, field: &'static str },
    #[error("member index record {record}: unknown flag bits {flags:#x}")]
    UnknownFlags { record: u64, flags: u64 },
    #[error("member index record {record}: stream offsets overflow")]
    OffsetOverflow { record: u64 },
    #[error(
        "member {record} does not start after the previous member's data, or starts its data before its header"
    )]
    NotSequential { record: u64 },
}

/// Streaming encoder: records must be given in stream order.
#[derive(Debug)]
pub struct MemberIndexEncoder {
    /// End of the previous member's padded data.
    end: u64,
    records: u64,
}

impl MemberIndexEncoder {
    /// Starts an index, writing its magic to `out`.
    pub fn new(out: &mut Vec<u8>) -> Self {
        out.extend_from_slice(&MAGIC);
        MemberIndexEncoder { end: 0, records: 0 }
    }

    /// Appends the record of `member` to `out`. On error nothing is written.
    pub fn encode(&mut self, member: &Member, out: &mut Vec<u8>) -> Result<(), MemberIndexError> {
        let record = self.records;
        let not_sequential = MemberIndexError::NotSequential { record };
        let gap = member
            .header_offset
            .checked_sub(self.end)
            .ok_or(not_sequential)?;
        let header_len = member
            .data_offset
            .checked_sub(member.header_offset)
            .ok_or(MemberIndexError::NotSequential { record })?;
        let end = member
            .padded_end()
            .ok_or(MemberIndexError::OffsetOverflow { record })?;
        for (field, bytes) in [("path", &member.path), ("link_target", &member.link_target)] {
            if bytes.len() as u64 > MAX_BYTES_LEN {
                return Err(MemberIndexError::OutOfRange { record, field });
            }
        }

        out.push(RECORD_MEMBER);
        write_uvar(out, gap);
        write_uvar(out, header_len);
        out.push(member.kind.code());
        write_uvar(out, u64::from(member.mode));
        write_uvar(out, member.uid);
        write_uvar(out, member.gid);
        write_uvar(out, zigzag(member.mtime));
        write_uvar(out, member.size);
        write_uvar(out, member.data_len);
        write_uvar(out, if member.sparse { FLAG_SPARSE } else { 0 });
        write_uvar(out, u64::from(member.dev_major));
        write_uvar(out, u64::from(member.dev_minor));
        write_bytes(out, &member.path);
        write_bytes(out, &member.link_target);

        self.end = end;
        self.records += 1;
        Ok(())
    }
}

/// Streaming decoder. Yields members with absolute offsets; after the first error it ends.
#[derive(Debug)]
pub struct MemberIndexDecoder<R: Read> {
    reader: BufReader<R>,
    magic_checked: bool,
    finished: bool,
    end: u64,
    records: u64,
}

impl<R: Read> MemberIndexDecoder<R> {
    pub fn new(reader: R) -> Self {
        MemberIndexDecoder {
            reader: BufReader::new(reader),
            magic_checked: false,
            finished: false,
            end: 0,
            records: 0,
        }
    }

    fn check_magic(&mut self) -> Result<(), MemberIndexError> {
        let mut magic = [0u8; MAGIC.len()];
        let mut filled = 0;
        while filled < magic.len() {
            match self.reader.read(&mut magic[filled..]) {
                Ok(0) => return Err(MemberIndexError::BadMagic),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        if magic[..7] != MAGIC[..7] {
            return Err(MemberIndexError::BadMagic);
        }
        if magic[7] != MAGIC[7] {
            return Err(MemberIndexError::UnsupportedVersion(magic[7]));
        }
        Ok(())
    }

    fn next_record(&mut self) -> Result<Option<Member>, MemberIndexError> {
        if !self.magic_checked {
            self.check_magic()?;
            self.magic_checked = true;
        }
        let Some(tag) = self.read_byte()? else {
            return Ok(None);
        };
        let record = self.records;
        if tag != RECORD_MEMBER {
            return Err(MemberIndexError::UnknownRecordTag { record, tag });
        }
        let member = self.read_member(record)?;
        self.records += 1;
        Ok(Some(member))
    }

    fn read_member(&mut self, record: u64) -> Result<Member, MemberIndexError> {
        let gap = self.uvar(record, "gap")?;
        let header_len = self.uvar(record, "header_len")?;
        let kind = MemberKind::from_code(self.byte(record)?);
        let mode = self.u32_field(record, "mode")?;
        let uid = self.uvar(record, "uid")?;
        let gid = self.uvar(record, "gid")?;
        let mtime = unzigzag(self.uvar(record, "mtime")?);
        let size = self.uvar(record, "size")?;
        let data_len = self.uvar(record, "data_len")?;
        let flags = self.uvar(record, "flags")?;
        if flags & !FLAG_SPARSE != 0 {
            return Err(MemberIndexError::UnknownFlags { record, flags });
        }
        let dev_major = self.u32_field(record, "dev_major")?;
        let dev_minor = self.u32_field(record, "dev_minor")?;
        let path = self.bytes(record, "path")?;
        let link_target = self.bytes(record, "link_target")?;

        let overflow = MemberIndexError::OffsetOverflow { record };
        let header_offset = self.end.checked_add(gap).ok_or(overflow)?;
        let data_offset = header_offset
            .checked_add(header_len)
            .ok_or(MemberIndexError::OffsetOverflow { record })?;
        let end = padded_len(data_len)
            .and_then(|padded| data_offset.checked_add(padded))
            .ok_or(MemberIndexError::OffsetOverflow { record })?;
        self.end = end;
        Ok(Member {
            path,
            link_target,
            kind,
            mode,
            uid,
            gid,
            mtime,
            size,
            header_offset,
            data_offset,
            data_len,
            sparse: flags & FLAG_SPARSE != 0,
            dev_major,
            dev_minor,
        })
    }

    /// The next byte, or `None` at a clean end of stream.
    fn read_byte(&mut self) -> Result<Option<u8>, MemberIndexError> {
        let mut byte = [0u8; 1];
        loop {
            match self.reader.read(&mut byte) {
                Ok(0) => return Ok(None),
                Ok(_) => return Ok(Some(byte[0])),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A byte inside a record, where the end of the stream means truncation.
    fn byte(&mut self, record: u64) -> Result<u8, MemberIndexError> {
        self.read_byte()?
            .ok_or(MemberIndexError::Truncated { record })
    }

    fn uvar(&mut self, record: u64, field: &'static str) -> Result<u64, MemberIndexError> {
        let mut value = 0u64;
        for index in 0..MAX_VARINT_LEN {
            let byte = self.byte(record)?;
            let group = u64::from(byte & 0x7f);
            let shift = 7 * index as u32;
            let is_last = byte & 0x80 == 0;
            let overflows = index == MAX_VARINT_LEN - 1 && (group > 1 || !is_last);
            let redundant = is_last && index > 0 && group == 0;
            if overflows || redundant {
                return Err(MemberIndexError::BadVarint { record, field });
            }
            value |= group << shift;
            if is_last {
                return Ok(value);
            }
        }
        Err(MemberIndexError::BadVarint { record, field })
    }

    fn u32_field(&mut self, record: u64, field: &'static str) -> Result<u32, MemberIndexError> {
        let value = self.uvar(record, field)?;
        u32::try_from(value).map_err(|_| MemberIndexError::OutOfRange { record, field })
    }

    fn bytes(&mut self, record: u64, field: &'static str) -> Result<Vec<u8>, MemberIndexError> {
        let len = self.uvar(record, field)?;
        if len > MAX_BYTES_LEN {
            return Err(MemberIndexError::OutOfRange { record, field });
        }
        // Read through `take` so that a short, hostile input never makes us allocate `len`.
        let mut bytes = Vec::new();
        (&mut self.reader).take(len).read_to_end(&mut bytes)?;
        if (bytes.len() as u64) < len {
            return Err(MemberIndexError::Truncated { record });
        }
        Ok(bytes)
    }
}

impl<R: Read> Iterator for MemberIndexDecoder<R> {
    type Item = Result<Member, MemberIndexError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        match self.next_record() {
            Ok(Some(member)) => Some(Ok(member)),
            Ok(None) => {
                self.finished = true;
                None
            }
            Err(error) => {
                self.finished = true;
                Some(Err(error))
            }
        }
    }
}

/// Decodes a whole index held in memory.
pub fn decode_all(bytes: &[u8]) -> Result<Vec<Member>, MemberIndexError> {
    MemberIndexDecoder::new(bytes).collect()
}

fn write_uvar(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_uvar(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

#[cfg(test)]
mod tests;
