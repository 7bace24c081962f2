//! The pack table decoders (`check_header`, `decode_trailer`, `decode_table`) on arbitrary
//! bytes and an arbitrary pack length, and `pack::read_table` on the same bytes laid out as a
//! real (sparse) pack file, which must agree with the in-memory decoders.
//!
//! Input: `flags:u8 | pack_len:u64 LE | table ++ trailer`.
//! - flags bit 0: re-seal the trailer (entry count and BLAKE3 of the table), so that inputs get
//!   past the checksum to the row parsing the fuzzer could not reach otherwise;
//! - flags bit 1: ignore `pack_len` and use the length the rows imply (blobs exactly fill the
//!   space between header and table), to reach the success path.
#![no_main]

use cairn::Id;
use cairn::format::pack::{self as fmt, ENTRY_LEN, HEADER, HEADER_LEN, TRAILER_LEN};
use libfuzzer_sys::fuzz_target;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

const RESEAL: u8 = 1;
const NATURAL_LEN: u8 = 2;
/// Larger packs are not written to the temp file: `read_table` reads (and allocates) a table of
/// up to `MAX_ENTRIES` rows when the file is large enough to hold it, and 176 MB per input would
/// slow the fuzzer to a crawl. The in-memory decoders still see every length.
const MAX_FILE_LEN: u64 = 1 << 22;

fuzz_target!(|data: &[u8]| {
    let header_ok = fmt::check_header(data).is_ok();
    assert_eq!(
        header_ok,
        data.len() >= 8 && data[..7] == HEADER[..7] && (1..=fmt::VERSION).contains(&data[7])
    );
    if data.len() < 9 {
        return;
    }
    let flags = data[0];
    let fuzzed_len = u64::from_le_bytes(data[1..9].try_into().unwrap());
    let mut tail = data[9..].to_vec();
    if tail.len() < TRAILER_LEN {
        assert!(fmt::decode_trailer(&tail).is_err());
        return;
    }
    if flags & RESEAL != 0 {
        reseal(&mut tail);
    }
    let (table, trailer_bytes) = tail.split_at(tail.len() - TRAILER_LEN);
    let pack_len = if flags & NATURAL_LEN != 0 {
        natural_len(table)
    } else {
        fuzzed_len
    };
    let decoded = fmt::decode_trailer(trailer_bytes)
        .and_then(|trailer| fmt::decode_table(table, &trailer, pack_len).map(|e| (trailer, e)));
    if let Ok((trailer, entries)) = &decoded {
        check_entries(table, trailer_bytes, trailer, entries, pack_len);
    }
    if let Some(file) = write_pack(&tail, pack_len) {
        let read = cairn::pack::read_table(file, pack_len, &Id::of(&tail));
        // The file holds what the trailer says is the table: compare with the in-memory decoder
        // on those same bytes, when they are all ours (not the hole or header before `tail`).
        if let Some(expected) = decode_as_file(table, trailer_bytes, pack_len) {
            match (&expected, &read) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                _ => panic!("read_table {read:?} disagrees with decode_table {expected:?}"),
            }
        }
    }
});

/// What `decode_table` says about the table the trailer points at, if it lies within `table`.
fn decode_as_file(
    table: &[u8],
    trailer_bytes: &[u8],
    pack_len: u64,
) -> Option<Result<Vec<fmt::PackEntry>, cairn::format::FormatError>> {
    let trailer = match fmt::decode_trailer(trailer_bytes) {
        Ok(t) => t,
        Err(e) => return Some(Err(e)),
    };
    let start = table
        .len()
        .checked_sub(usize::try_from(trailer.table_len()).ok()?)?;
    Some(fmt::decode_table(&table[start..], &trailer, pack_len))
}

/// Cuts the table to whole rows and rewrites the trailer to describe it.
fn reseal(tail: &mut Vec<u8>) {
    let trailer_at = tail.len() - TRAILER_LEN;
    let rows = (trailer_at / ENTRY_LEN).min(fmt::MAX_ENTRIES as usize);
    let mut trailer: Vec<u8> = tail[trailer_at..].to_vec();
    tail.truncate(rows * ENTRY_LEN);
    trailer[..4].copy_from_slice(&(rows as u32).to_le_bytes());
    trailer[8..40].copy_from_slice(blake3::hash(tail).as_bytes());
    tail.extend_from_slice(&trailer);
}

fn natural_len(table: &[u8]) -> u64 {
    let blobs: u64 = table
        .chunks_exact(ENTRY_LEN)
        .map(|row| u64::from(u32::from_le_bytes(row[34..38].try_into().unwrap())))
        .sum();
    HEADER_LEN + blobs + (table.len() + TRAILER_LEN) as u64
}

fn check_entries(
    table: &[u8],
    trailer_bytes: &[u8],
    trailer: &fmt::Trailer,
    entries: &[fmt::PackEntry],
    pack_len: u64,
) {
    assert_eq!(entries.len() as u64, u64::from(trailer.entry_count));
    let mut offset = HEADER_LEN;
    let mut frame_at = None;
    for e in entries {
        match e.frame {
            // A blob continuing a shared frame starts where its frame does and adds no bytes.
            Some(f) if f.skip > 0 => assert_eq!(Some(e.offset), frame_at),
            _ => {
                assert_eq!(e.offset, offset, "blob offsets are not consecutive");
                frame_at = Some(e.offset);
                offset += u64::from(e.stored_len);
            }
        }
        if e.compression == cairn::format::Compression::None {
            assert_eq!(e.stored_len, e.raw_len);
        }
        if let Some(f) = e.frame {
            assert!(f.skip + e.raw_len <= f.raw_len && f.raw_len <= fmt::MAX_FRAME_RAW);
        }
    }
    assert_eq!(offset + (table.len() + TRAILER_LEN) as u64, pack_len);
    // Re-encoding gives back the bytes, except the reserved field, which readers ignore.
    let mut expected = table.to_vec();
    expected.extend_from_slice(trailer_bytes);
    expected[table.len() + 4..table.len() + 8].fill(0);
    // Writers write the current version; a version-1 table re-encodes to the same rows.
    let last = expected.len() - 1;
    expected[last] = fmt::VERSION;
    assert_eq!(fmt::encode_table(entries), expected);
}

/// Lays the bytes out as a pack of `pack_len` bytes: header, a hole for the blobs, then `tail`.
/// One file per process, rewritten for each input.
fn write_pack(tail: &[u8], pack_len: u64) -> Option<&'static File> {
    static FILE: OnceLock<File> = OnceLock::new();
    let tail_at = pack_len.checked_sub(tail.len() as u64)?;
    if tail_at < HEADER_LEN || pack_len > MAX_FILE_LEN {
        return None;
    }
    let file = FILE.get_or_init(|| {
        // In RAM when possible: the file is rewritten for every input.
        tempfile::tempfile_in("/dev/shm")
            .or_else(|_| tempfile::tempfile())
            .expect("temp file")
    });
    file.set_len(0).expect("truncate temp pack");
    // The header's version agrees with the trailer's, as in every pack a writer makes.
    let mut header = HEADER;
    header[7] = tail[tail.len() - 1];
    file.write_all_at(&header, 0).expect("write temp pack");
    file.write_all_at(tail, tail_at).expect("write temp pack");
    Some(file)
}
