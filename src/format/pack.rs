//! Pack file layout.
//!
//! ```text
//! header   8 bytes   b"CAIRNPK" + version (2; version 1 is read too)
//! blobs    the stored bytes of each blob or shared frame, back to back, in table order
//! table    entry_count × 42 bytes:
//!            id [32] | kind u8 | storage u8 | stored_len u32 LE | raw_len u32 LE
//! trailer  48 bytes:
//!            entry_count u32 LE | reserved u32 (0) | BLAKE3(table) [32] | b"CAIRNPT" + version
//! ```
//! Offsets are implicit: an entry starts at 8 + Σ stored_len of the entries before it, and the
//! blob region must end exactly where the table starts, so a pack alone says what it holds and
//! any truncation or table damage is detected. The pack's file name is the BLAKE3 of all its
//! bytes.
//!
//! Small blobs (page-aligned database blocks, small files) compress badly one by one, so a
//! writer may compress a run of them as one zstd frame: the first entry of the run opens the
//! frame (storage 2, stored_len = the frame's length) and the others continue it (storage 3,
//! stored_len 0). A blob in a frame is the slice of the decompressed frame after the raw bytes
//! of the entries before it in the same frame.

use super::{BlobKind, Compression, FormatError};
use crate::id::Id;

/// The version this binary writes; version 1 (no shared frames) is still read.
pub const VERSION: u8 = 2;
pub const HEADER: [u8; 8] = *b"CAIRNPK\x02";
pub const TRAILER_MAGIC: [u8; 8] = *b"CAIRNPT\x02";
pub const HEADER_LEN: u64 = 8;
pub const ENTRY_LEN: usize = 42;
pub const TRAILER_LEN: usize = 48;
/// A pack never holds more entries than this; bounds what a damaged trailer can make us allocate.
pub const MAX_ENTRIES: u32 = 1 << 22;
/// A shared frame never decompresses to more than this; bounds what a damaged table can make a
/// reader allocate.
pub const MAX_FRAME_RAW: u32 = 16 << 20;

const STORAGE_RAW: u8 = 0;
const STORAGE_ZSTD: u8 = 1;
const STORAGE_FRAME_OPEN: u8 = 2;
const STORAGE_FRAME_CONTINUE: u8 = 3;

/// Where a blob sits inside a zstd frame it shares with its neighbours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Raw bytes of the frame before this blob.
    pub skip: u32,
    /// Raw length of the whole frame.
    pub raw_len: u32,
}

/// One row of a pack's table, with its offset resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackEntry {
    pub id: Id,
    pub kind: BlobKind,
    /// `Zstd` for every blob in a shared frame.
    pub compression: Compression,
    /// Where the blob's stored bytes (or its frame) start in the pack.
    pub offset: u64,
    /// Bytes to read at `offset`: the blob's, or its whole frame's.
    pub stored_len: u32,
    pub raw_len: u32,
    pub frame: Option<Frame>,
}

impl PackEntry {
    /// The part of the pack's bytes this blob accounts for: its stored length, or for a blob in
    /// a shared frame its share of the frame in proportion to raw bytes (the shares of a frame's
    /// blobs add up to the frame's length exactly).
    pub fn stored_share(&self) -> u64 {
        stored_share(self.stored_len, self.raw_len, self.frame)
    }
}

/// See `PackEntry::stored_share`.
pub fn stored_share(stored_len: u32, raw_len: u32, frame: Option<Frame>) -> u64 {
    match frame {
        None => u64::from(stored_len),
        Some(f) if f.raw_len == 0 => 0,
        Some(f) => {
            let at = |raw: u64| u64::from(stored_len) * raw / u64::from(f.raw_len);
            let skip = u64::from(f.skip);
            at(skip + u64::from(raw_len)) - at(skip)
        }
    }
}

/// Encodes the table and trailer that close a pack.
pub fn encode_table(entries: &[PackEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_LEN + TRAILER_LEN);
    for e in entries {
        let (storage, stored_len) = match (e.frame, e.compression) {
            (Some(f), _) if f.skip == 0 => (STORAGE_FRAME_OPEN, e.stored_len),
            (Some(_), _) => (STORAGE_FRAME_CONTINUE, 0),
            (None, Compression::None) => (STORAGE_RAW, e.stored_len),
            (None, Compression::Zstd) => (STORAGE_ZSTD, e.stored_len),
        };
        out.extend_from_slice(e.id.as_bytes());
        out.push(e.kind as u8);
        out.push(storage);
        out.extend_from_slice(&stored_len.to_le_bytes());
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
    pub version: u8,
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
    if bytes[40..47] != TRAILER_MAGIC[..7] {
        return Err(FormatError::new(
            "pack trailer magic missing (truncated or not a pack)",
        ));
    }
    let version = bytes[47];
    if !(1..=VERSION).contains(&version) {
        return Err(FormatError(format!(
            "pack format version {version} is not supported"
        )));
    }
    let entry_count = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if entry_count > MAX_ENTRIES {
        return Err(FormatError(format!("pack claims {entry_count} entries")));
    }
    let mut table_hash = [0u8; 32];
    table_hash.copy_from_slice(&bytes[8..40]);
    Ok(Trailer {
        version,
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
    let mut entries: Vec<PackEntry> = Vec::with_capacity(trailer.entry_count as usize);
    let mut offset = HEADER_LEN;
    // The frame being continued: index of its first entry and raw bytes so far.
    let mut open_frame: Option<(usize, u32)> = None;
    for row in table.chunks_exact(ENTRY_LEN) {
        let id = Id::from_slice(&row[..32]).ok_or_else(|| FormatError::new("bad id"))?;
        let kind = BlobKind::from_u8(row[32])?;
        let storage = row[33];
        let stored_len = u32::from_le_bytes([row[34], row[35], row[36], row[37]]);
        let raw_len = u32::from_le_bytes([row[38], row[39], row[40], row[41]]);
        let framed = matches!(storage, STORAGE_FRAME_OPEN | STORAGE_FRAME_CONTINUE);
        if framed && trailer.version < 2 {
            return Err(FormatError(format!(
                "storage {storage} is not defined in pack format version {}",
                trailer.version
            )));
        }
        if framed && raw_len == 0 {
            // Every blob of a frame after the first starts after a non-empty predecessor, which
            // is what tells a continuation from an opener (and keeps encoding one-to-one).
            return Err(FormatError(format!(
                "empty blob {} in a shared frame",
                id.short()
            )));
        }
        if storage != STORAGE_FRAME_CONTINUE {
            close_frame(&mut entries, open_frame.take());
        }
        let entry = match storage {
            STORAGE_RAW | STORAGE_ZSTD => {
                let compression = Compression::from_u8(storage)?;
                if compression == Compression::None && stored_len != raw_len {
                    return Err(FormatError(format!(
                        "blob {} stored raw but lengths differ",
                        id.short()
                    )));
                }
                let e = PackEntry {
                    id,
                    kind,
                    compression,
                    offset,
                    stored_len,
                    raw_len,
                    frame: None,
                };
                offset += u64::from(stored_len);
                e
            }
            STORAGE_FRAME_OPEN => {
                if stored_len == 0 {
                    return Err(FormatError(format!(
                        "frame of blob {} is empty",
                        id.short()
                    )));
                }
                open_frame = Some((entries.len(), 0));
                let e = PackEntry {
                    id,
                    kind,
                    compression: Compression::Zstd,
                    offset,
                    stored_len,
                    raw_len,
                    frame: Some(Frame {
                        skip: 0,
                        raw_len: 0,
                    }),
                };
                offset += u64::from(stored_len);
                e
            }
            STORAGE_FRAME_CONTINUE => {
                let Some((first, _)) = open_frame else {
                    return Err(FormatError(format!(
                        "blob {} continues a frame that was not opened",
                        id.short()
                    )));
                };
                let opener = &entries[first];
                if stored_len != 0 || opener.kind != kind {
                    return Err(FormatError(format!(
                        "blob {} does not fit the frame it continues",
                        id.short()
                    )));
                }
                PackEntry {
                    id,
                    kind,
                    compression: Compression::Zstd,
                    offset: opener.offset,
                    stored_len: opener.stored_len,
                    raw_len,
                    frame: Some(Frame {
                        skip: 0,
                        raw_len: 0,
                    }),
                }
            }
            other => return Err(FormatError(format!("unknown storage {other}"))),
        };
        if let Some((first, raw_so_far)) = open_frame.as_mut() {
            let skip = *raw_so_far;
            *raw_so_far = raw_so_far
                .checked_add(raw_len)
                .filter(|&n| n <= MAX_FRAME_RAW)
                .ok_or_else(|| {
                    FormatError(format!(
                        "frame at entry {first} decompresses to more than {MAX_FRAME_RAW} bytes"
                    ))
                })?;
            entries.push(PackEntry {
                frame: Some(Frame { skip, raw_len: 0 }),
                ..entry
            });
        } else {
            entries.push(entry);
        }
    }
    close_frame(&mut entries, open_frame.take());
    if offset != blob_region_end {
        return Err(FormatError(format!(
            "pack blobs end at {offset} but the table starts at {blob_region_end}"
        )));
    }
    Ok(entries)
}

/// Records the frame's total raw length in each of its entries, now that it is known.
fn close_frame(entries: &mut [PackEntry], frame: Option<(usize, u32)>) {
    let Some((first, raw_len)) = frame else {
        return;
    };
    for e in entries.iter_mut().skip(first) {
        if let Some(f) = e.frame.as_mut() {
            f.raw_len = raw_len;
        }
    }
}

/// The version in a pack header, if this binary reads it.
pub fn check_header(bytes: &[u8]) -> Result<u8, FormatError> {
    if bytes.len() >= 8 && bytes[..7] == HEADER[..7] {
        if !(1..=VERSION).contains(&bytes[7]) {
            return Err(FormatError(format!(
                "pack format version {} is not supported",
                bytes[7]
            )));
        }
        return Ok(bytes[7]);
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
            frame: None,
        }
    }

    fn framed(
        n: u8,
        raw: u32,
        offset: u64,
        frame_len: u32,
        skip: u32,
        frame_raw: u32,
    ) -> PackEntry {
        PackEntry {
            id: Id::of(&[n]),
            kind: BlobKind::Data,
            compression: Compression::Zstd,
            offset,
            stored_len: frame_len,
            raw_len: raw,
            frame: Some(Frame {
                skip,
                raw_len: frame_raw,
            }),
        }
    }

    fn decode_all(encoded: &[u8], pack_len: u64) -> Result<Vec<PackEntry>, FormatError> {
        let (table, trailer) = encoded.split_at(encoded.len() - TRAILER_LEN);
        decode_table(table, &decode_trailer(trailer)?, pack_len)
    }

    #[test]
    fn shared_frames_round_trip() {
        // raw blob, a frame of three, a zstd blob, a frame of one.
        let entries = vec![
            entry(1, 10, 10, 8),
            framed(2, 100, 18, 50, 0, 260),
            framed(3, 60, 18, 50, 100, 260),
            framed(4, 100, 18, 50, 160, 260),
            entry(5, 5, 40, 68),
            framed(6, 30, 73, 20, 0, 30),
        ];
        let encoded = encode_table(&entries);
        let pack_len = 93 + encoded.len() as u64;
        assert_eq!(decode_all(&encoded, pack_len).unwrap(), entries);
        // Shares of a frame add up to its length.
        let shares: u64 = entries[1..4].iter().map(PackEntry::stored_share).sum();
        assert_eq!(shares, 50);
        assert_eq!(entries[0].stored_share(), 10);
    }

    #[test]
    fn malformed_frames_are_rejected() {
        let rehash = |table: &mut Vec<u8>, n: usize| {
            let body = n * ENTRY_LEN;
            let h = blake3::hash(&table[..body]);
            table[body + 8..body + 40].copy_from_slice(h.as_bytes());
        };
        // A continuation with no frame open.
        let mut t = encode_table(&[entry(1, 10, 10, 8), entry(2, 10, 10, 18)]);
        t[ENTRY_LEN + 33] = STORAGE_FRAME_CONTINUE;
        t[ENTRY_LEN + 34..ENTRY_LEN + 38].copy_from_slice(&0u32.to_le_bytes());
        rehash(&mut t, 2);
        let err = decode_all(&t, 18 + t.len() as u64).unwrap_err();
        assert!(
            err.0.contains("not fit") || err.0.contains("not opened"),
            "{err}"
        );
        // A continuation of a tree frame by a data blob.
        let mut a = framed(1, 10, 8, 5, 0, 20);
        a.kind = BlobKind::Tree;
        let b = framed(2, 10, 8, 5, 10, 20);
        let t = encode_table(&[a, b]);
        assert!(decode_all(&t, 13 + t.len() as u64).is_err());
        // Frames in a version-1 pack.
        let mut t = encode_table(&[framed(1, 10, 8, 5, 0, 10)]);
        let n = t.len();
        t[n - 1] = 1;
        assert!(
            decode_all(&t, 13 + n as u64)
                .unwrap_err()
                .0
                .contains("version 1")
        );
        // An empty blob in a frame (it would make a continuation look like an opener).
        let t = encode_table(&[framed(1, 0, 8, 5, 0, 10), framed(2, 10, 8, 5, 0, 10)]);
        assert!(
            decode_all(&t, 13 + t.len() as u64)
                .unwrap_err()
                .0
                .contains("empty")
        );
        // A frame claiming to decompress to more than the limit.
        let big = [
            framed(1, MAX_FRAME_RAW, 8, 5, 0, 0),
            framed(2, 1, 8, 5, MAX_FRAME_RAW, 0),
        ];
        let t = encode_table(&big);
        assert!(decode_all(&t, 13 + t.len() as u64).is_err());
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
