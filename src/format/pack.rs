//! Pack file layout.
//!
//! ```text
//! header   8 bytes   b"CAIRNPK" + version (1)
//! blobs    the stored bytes of each blob, back to back, in table order
//! table    entry_count × 42 bytes:
//!            id [32] | kind u8 | compression u8 | stored_len u32 LE | raw_len u32 LE
//! trailer  48 bytes:
//!            entry_count u32 LE | reserved u32 (0) | BLAKE3(table) [32] | b"CAIRNPT" + version (1)
//! ```
//! Offsets are implicit: blob i starts at 8 + Σ stored_len of the blobs before it, and the blob
//! region must end exactly where the table starts, so a pack alone says what it holds and any
//! truncation or table damage is detected. The pack's file name is the BLAKE3 of all its bytes.

use super::{BlobKind, Compression, FormatError};
use crate::id::Id;

pub const VERSION: u8 = 1;
pub const HEADER: [u8; 8] = *b"CAIRNPK\x01";
pub const TRAILER_MAGIC: [u8; 8] = *b"CAIRNPT\x01";
pub const HEADER_LEN: u64 = 8;
pub const ENTRY_LEN: usize = 42;
pub const TRAILER_LEN: usize = 48;
/// A pack never holds more entries than this; bounds what a damaged trailer can make us allocate.
pub const MAX_ENTRIES: u32 = 1 << 22;

/// One row of a pack's table, with its offset resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackEntry {
    pub id: Id,
    pub kind: BlobKind,
    pub compression: Compression,
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
}

/// Encodes the table and trailer that close a pack.
pub fn encode_table(entries: &[PackEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_LEN + TRAILER_LEN);
    for e in entries {
        out.extend_from_slice(e.id.as_bytes());
        out.push(e.kind as u8);
        out.push(e.compression as u8);
        out.extend_from_slice(&e.stored_len.to_le_bytes());
        out.extend_from_slice(&e.raw_len.to_le_bytes());
    }
    let table_hash = blake3::hash(&out);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(table_hash.as_bytes());
    out.extend_from_slice(&TRAILER_MAGIC);
    out
}

/// The parsed trailer: how long the table before it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    pub entry_count: u32,
    pub table_hash: [u8; 32],
}

impl Trailer {
    pub fn table_len(&self) -> u64 {
        u64::from(self.entry_count) * ENTRY_LEN as u64
    }
}

pub fn decode_trailer(bytes: &[u8]) -> Result<Trailer, FormatError> {
    if bytes.len() != TRAILER_LEN {
        return Err(FormatError::new("pack trailer has the wrong length"));
    }
    if bytes[40..48] != TRAILER_MAGIC {
        if bytes[40..47] == TRAILER_MAGIC[..7] {
            return Err(FormatError(format!(
                "pack format version {} is not supported",
                bytes[47]
            )));
        }
        return Err(FormatError::new(
            "pack trailer magic missing (truncated or not a pack)",
        ));
    }
    let entry_count = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if entry_count > MAX_ENTRIES {
        return Err(FormatError(format!("pack claims {entry_count} entries")));
    }
    let mut table_hash = [0u8; 32];
    table_hash.copy_from_slice(&bytes[8..40]);
    Ok(Trailer {
        entry_count,
        table_hash,
    })
}

/// Decodes a pack's table given the trailer that precedes it and the pack's total size, checking
/// the table's checksum and that the blobs exactly fill the space between header and table.
pub fn decode_table(
    table: &[u8],
    trailer: &Trailer,
    pack_len: u64,
) -> Result<Vec<PackEntry>, FormatError> {
    if table.len() as u64 != trailer.table_len() {
        return Err(FormatError::new("pack table has the wrong length"));
    }
    if blake3::hash(table).as_bytes() != &trailer.table_hash {
        return Err(FormatError::new("pack table checksum mismatch"));
    }
    let blob_region_end = pack_len
        .checked_sub(TRAILER_LEN as u64 + trailer.table_len())
        .filter(|end| *end >= HEADER_LEN)
        .ok_or_else(|| FormatError::new("pack shorter than its table"))?;
    let mut entries = Vec::with_capacity(trailer.entry_count as usize);
    let mut offset = HEADER_LEN;
    for row in table.chunks_exact(ENTRY_LEN) {
        let id = Id::from_slice(&row[..32]).ok_or_else(|| FormatError::new("bad id"))?;
        let kind = BlobKind::from_u8(row[32])?;
        let compression = Compression::from_u8(row[33])?;
        let stored_len = u32::from_le_bytes([row[34], row[35], row[36], row[37]]);
        let raw_len = u32::from_le_bytes([row[38], row[39], row[40], row[41]]);
        if compression == Compression::None && stored_len != raw_len {
            return Err(FormatError(format!(
                "blob {} stored raw but lengths differ",
                id.short()
            )));
        }
        entries.push(PackEntry {
            id,
            kind,
            compression,
            offset,
            stored_len,
            raw_len,
        });
        offset += u64::from(stored_len);
    }
    if offset != blob_region_end {
        return Err(FormatError(format!(
            "pack blobs end at {offset} but the table starts at {blob_region_end}"
        )));
    }
    Ok(entries)
}

pub fn check_header(bytes: &[u8]) -> Result<(), FormatError> {
    if bytes.len() >= 8 && bytes[..7] == HEADER[..7] {
        if bytes[7] != VERSION {
            return Err(FormatError(format!(
                "pack format version {} is not supported",
                bytes[7]
            )));
        }
        return Ok(());
    }
    Err(FormatError::new("pack header magic missing"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8, stored: u32, raw: u32, offset: u64) -> PackEntry {
        PackEntry {
            id: Id::of(&[n]),
            kind: BlobKind::Data,
            compression: if stored == raw {
                Compression::None
            } else {
                Compression::Zstd
            },
            offset,
            stored_len: stored,
            raw_len: raw,
        }
    }

    #[test]
    fn table_round_trip_and_damage_detection() {
        let entries = vec![entry(1, 10, 10, 8), entry(2, 5, 40, 18)];
        let encoded = encode_table(&entries);
        let pack_len = 8 + 15 + encoded.len() as u64;
        let (table, trailer) = encoded.split_at(encoded.len() - TRAILER_LEN);
        let t = decode_trailer(trailer).unwrap();
        assert_eq!(decode_table(table, &t, pack_len).unwrap(), entries);
        // A pack one byte longer or shorter than its table says is rejected.
        assert!(decode_table(table, &t, pack_len + 1).is_err());
        assert!(decode_table(table, &t, pack_len - 1).is_err());
        // Any flipped table byte fails the checksum.
        for i in 0..table.len() {
            let mut damaged = table.to_vec();
            damaged[i] ^= 1;
            assert!(decode_table(&damaged, &t, pack_len).is_err(), "byte {i}");
        }
        let mut bad = trailer.to_vec();
        bad[47] = 9;
        assert!(decode_trailer(&bad).unwrap_err().0.contains("version 9"));
    }
}
