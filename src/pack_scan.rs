//! Reading every byte of a pack to verify it (`repo check --read-data`, `repo repair`).
//!
//! A pack is cut into segments (see `segment_hash`) that the rayon pool verifies in parallel,
//! each read with one `pread` into a buffer its thread reuses: the segment's bytes are hashed
//! towards the pack's name, and the blobs that start in it are decompressed and re-hashed (a blob
//! running past the segment's end is read with it). So a single pack keeps every core busy,
//! memory is a segment and a blob per thread instead of a pack, and nothing is allocated per blob.

use crate::error::{Error, Result};
use crate::format::pack::PackEntry;
use crate::id::Id;
use crate::pack::{UnpackScratch, for_each_blob_at, grown_to, read_table};
use crate::progress::Progress;
use crate::segment_hash::{SegmentDigest, Segments};
use crate::store::Layout;
use rayon::prelude::*;
use std::cell::RefCell;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Small enough that a pack splits into a dozen or more work items and a segment stays in the
/// CPU cache between hashing it and unpacking its blobs; large enough that a `pread` and a task
/// per segment cost nothing measurable.
const SEGMENT_LEN: u64 = 1 << 20;

/// What a full read of one pack found.
pub(crate) struct PackScan {
    pub id: Id,
    pub hash_ok: bool,
    pub entries: std::result::Result<Vec<PackEntry>, String>,
    /// Blobs whose bytes are damaged, with the reason, in table order.
    pub bad_blobs: Vec<(Id, String)>,
    pub bytes: u64,
}

/// Reads a pack and verifies everything in it: its bytes against its name, its table, and every
/// blob the table lists. A file shorter than it was when opened reads as damage. Only I/O errors
/// other than that are errors.
pub(crate) fn scan_pack(layout: &Layout, id: &Id, progress: &dyn Progress) -> Result<PackScan> {
    scan_pack_in_segments(layout, id, SEGMENT_LEN, progress)
}

fn scan_pack_in_segments(
    layout: &Layout,
    id: &Id,
    segment_len: u64,
    progress: &dyn Progress,
) -> Result<PackScan> {
    let path = layout.pack(id);
    let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
    let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
    let entries = read_table(&file, len, id).map_err(|e| e.to_string());
    let pack = OpenPack {
        file: &file,
        path: &path,
        id,
        len,
    };
    let blobs = entries.as_deref().unwrap_or_default();
    let (hash_ok, bad_blobs) = verify_contents(&pack, blobs, segment_len, progress)?;
    Ok(PackScan {
        id: *id,
        hash_ok,
        entries,
        bad_blobs,
        bytes: len,
    })
}

/// Whether the pack's bytes hash to its name, and which of `blobs` are damaged.
fn verify_contents(
    pack: &OpenPack<'_>,
    blobs: &[PackEntry],
    segment_len: u64,
    progress: &dyn Progress,
) -> Result<(bool, Vec<(Id, String)>)> {
    let segments = Segments::new(segment_len, pack.len);
    let scanned = (0..segments.count())
        .into_par_iter()
        .map(|k| {
            let scan = scan_segment(pack, &segments, k, blobs)?;
            let range = segments.range(k);
            progress.advance(range.end - range.start);
            Ok(scan)
        })
        .collect::<Result<Vec<SegmentScan>>>()?;
    let digests: Option<Vec<SegmentDigest>> = scanned.iter().map(|s| s.digest).collect();
    let hash_ok = digests.and_then(|d| segments.merge(&d)) == Some(*pack.id);
    let bad_blobs = scanned.into_iter().flat_map(|s| s.bad_blobs).collect();
    Ok((hash_ok, bad_blobs))
}

struct OpenPack<'p> {
    file: &'p File,
    path: &'p Path,
    id: &'p Id,
    /// When it was opened.
    len: u64,
}

struct SegmentScan {
    /// `None` when the segment could not be read whole.
    digest: Option<SegmentDigest>,
    bad_blobs: Vec<(Id, String)>,
}

/// Buffers each pool thread keeps from segment to segment.
#[derive(Default)]
struct Scratch {
    read: Vec<u8>,
    unpack: UnpackScratch,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn scan_segment(
    pack: &OpenPack<'_>,
    segments: &Segments,
    k: u64,
    entries: &[PackEntry],
) -> Result<SegmentScan> {
    let range = segments.range(k);
    let mine = blobs_starting_in(entries, &range);
    let end = mine
        .iter()
        .map(|e| e.offset.saturating_add(u64::from(e.stored_len)))
        .fold(range.end, u64::max)
        .min(pack.len);
    let want = usize::try_from(end - range.start)
        .map_err(|_| Error::Invalid(format!("pack {}: blob too large to read", pack.id)))?;
    // Nothing in here hands work to the pool, so this thread cannot re-enter the borrow.
    SCRATCH.with(|cell| {
        let mut scratch = cell.borrow_mut();
        let Scratch { read, unpack } = &mut *scratch;
        let got = read_up_to(pack.file, range.start, grown_to(read, want))
            .map_err(|e| Error::io(pack.path, e))?;
        let bytes = &read[..got];
        let digest = bytes
            .get(..(range.end - range.start) as usize)
            .and_then(|own| segments.hash(k, own));
        let mut bad_blobs = Vec::new();
        for_each_blob_at(bytes, range.start, mine, pack.id, unpack, |e, blob| {
            if let Err(err) = blob {
                bad_blobs.push((e.id, err.to_string()));
            }
            Ok(())
        })?;
        Ok(SegmentScan { digest, bad_blobs })
    })
}

/// The entries whose stored bytes start in `range` (a table lists blobs in file order).
fn blobs_starting_in<'e>(entries: &'e [PackEntry], range: &Range<u64>) -> &'e [PackEntry] {
    let from = entries.partition_point(|e| e.offset < range.start);
    let to = entries.partition_point(|e| e.offset < range.end);
    entries.get(from..to).unwrap_or_default()
}

/// Reads from `offset` until `buf` is full or the file ends; returns how much it read.
fn read_up_to(file: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{BlobKind, Compression};
    use crate::pack::{PackWriter, for_each_blob};
    use proptest::prelude::*;

    /// How one test blob (or frame) is stored.
    #[derive(Clone, Debug)]
    enum Stored {
        Raw(usize),
        Zstd(usize),
        Frame(Vec<usize>),
    }

    fn content(seed: usize, len: usize) -> Vec<u8> {
        // Half the blobs compress, half do not.
        (0..len)
            .map(|i| {
                if seed.is_multiple_of(2) {
                    (i / 7 + seed) as u8
                } else {
                    ((i + seed).wrapping_mul(2654435761) >> 13) as u8
                }
            })
            .collect()
    }

    fn write_pack(layout: &Layout, blobs: &[Stored]) -> Id {
        let mut w = PackWriter::new(layout).unwrap();
        for (n, b) in blobs.iter().enumerate() {
            match b {
                Stored::Raw(len) => {
                    let c = content(n * 31 + 1, *len);
                    let raw_len = c.len() as u32;
                    w.add(Id::of(&c), BlobKind::Data, Compression::None, raw_len, &c)
                        .unwrap();
                }
                Stored::Zstd(len) => {
                    let c = content(n * 31, *len);
                    w.add_compressed(Id::of(&c), BlobKind::Data, &c, 3).unwrap();
                }
                Stored::Frame(lens) => {
                    let parts: Vec<Vec<u8>> = lens
                        .iter()
                        .enumerate()
                        .map(|(i, len)| content(n * 31 + i * 2, *len))
                        .collect();
                    let joined = parts.concat();
                    let stored = crate::compress::compress(&joined, 3)
                        .unwrap()
                        .unwrap_or(joined);
                    let members: Vec<(Id, u32)> =
                        parts.iter().map(|p| (Id::of(p), p.len() as u32)).collect();
                    w.add_frame(BlobKind::Data, &members, &stored).unwrap();
                }
            }
        }
        w.finish(layout).unwrap().id
    }

    /// What reading the whole file at once finds: the plain definition of a scan.
    fn whole_file_scan(layout: &Layout, id: &Id) -> PackScan {
        let path = layout.pack(id);
        let bytes = std::fs::read(&path).unwrap();
        let file = File::open(&path).unwrap();
        let entries = read_table(&file, bytes.len() as u64, id).map_err(|e| e.to_string());
        let mut bad_blobs = Vec::new();
        if let Ok(entries) = &entries {
            for_each_blob(&bytes, entries, id, |e, r| {
                if let Err(err) = r {
                    bad_blobs.push((e.id, err.to_string()));
                }
                Ok(())
            })
            .unwrap();
        }
        PackScan {
            id: *id,
            hash_ok: Id::of(&bytes) == *id,
            entries,
            bad_blobs,
            bytes: bytes.len() as u64,
        }
    }

    fn assert_same(a: &PackScan, b: &PackScan) {
        assert_eq!(a.id, b.id);
        assert_eq!(a.hash_ok, b.hash_ok, "hash verdict");
        assert_eq!(a.entries, b.entries, "table");
        assert_eq!(a.bad_blobs, b.bad_blobs, "damaged blobs");
        assert_eq!(a.bytes, b.bytes);
    }

    fn stored() -> impl Strategy<Value = Stored> {
        prop_oneof![
            (1usize..9000).prop_map(Stored::Raw),
            (1usize..9000).prop_map(Stored::Zstd),
            prop::collection::vec(1usize..4000, 1..5).prop_map(Stored::Frame),
        ]
    }

    #[derive(Clone, Debug)]
    enum Damage {
        None,
        /// Flip a byte at this fraction of the file.
        Flip(f64),
        /// Cut the file to this fraction of its length.
        Truncate(f64),
    }

    fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            Just(Damage::None),
            (0.0f64..1.0).prop_map(Damage::Flip),
            (0.0f64..1.0).prop_map(Damage::Truncate),
        ]
    }

    fn apply(path: &Path, damage: &Damage) {
        let mut bytes = std::fs::read(path).unwrap();
        let at = |f: f64| ((bytes.len() as f64 * f) as usize).min(bytes.len() - 1);
        match *damage {
            Damage::None => return,
            Damage::Flip(f) => {
                let i = at(f);
                bytes[i] ^= 0x40;
            }
            Damage::Truncate(f) => bytes.truncate(at(f)),
        }
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn an_intact_pack_of_many_segments_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create_dirs().unwrap();
        let blobs = [
            Stored::Raw(5000),
            Stored::Zstd(7000),
            Stored::Frame(vec![3000, 2500, 100]),
            Stored::Raw(9000),
            Stored::Zstd(300),
        ];
        let id = write_pack(&layout, &blobs);
        let scan = scan_pack_in_segments(&layout, &id, 1024, &crate::progress::Silent).unwrap();
        assert!(scan.hash_ok);
        assert_eq!(scan.entries.as_ref().map(Vec::len), Ok(7));
        assert!(scan.bad_blobs.is_empty());
        assert_same(&scan, &whole_file_scan(&layout, &id));
    }

    #[test]
    fn damage_names_the_blob_it_hits() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create_dirs().unwrap();
        let id = write_pack(&layout, &[Stored::Raw(3000), Stored::Zstd(6000)]);
        let path = layout.pack(&id);
        let mut bytes = std::fs::read(&path).unwrap();
        // Inside the second blob, which starts in the third 1 KiB segment.
        bytes[3100] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let scan = scan_pack_in_segments(&layout, &id, 1024, &crate::progress::Silent).unwrap();
        assert!(!scan.hash_ok);
        let entries = scan.entries.as_ref().unwrap();
        assert_eq!(scan.bad_blobs.len(), 1);
        assert_eq!(scan.bad_blobs[0].0, entries[1].id);
    }

    #[test]
    fn a_pack_shrinking_while_read_reads_as_damage() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create_dirs().unwrap();
        let id = write_pack(&layout, &[Stored::Raw(3000), Stored::Zstd(6000)]);
        let path = layout.pack(&id);
        let file = File::open(&path).unwrap();
        let len = file.metadata().unwrap().len();
        let entries = read_table(&file, len, &id).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(2000)
            .unwrap();
        let pack = OpenPack {
            file: &file,
            path: &path,
            id: &id,
            len,
        };
        let (hash_ok, bad) =
            verify_contents(&pack, &entries, 1024, &crate::progress::Silent).unwrap();
        assert!(!hash_ok);
        let bad_ids: Vec<Id> = bad.iter().map(|(b, _)| *b).collect();
        assert_eq!(bad_ids, [entries[0].id, entries[1].id]);
        assert!(bad[0].1.contains("lies outside the pack"), "{}", bad[0].1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn segments_find_what_a_whole_file_read_finds(
            blobs in prop::collection::vec(stored(), 1..12),
            seg_shift in 10u32..14,
            damage in damage(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let layout = Layout::new(dir.path());
            layout.create_dirs().unwrap();
            let id = write_pack(&layout, &blobs);
            apply(&layout.pack(&id), &damage);
            let scan =
                scan_pack_in_segments(&layout, &id, 1 << seg_shift, &crate::progress::Silent)
                    .unwrap();
            assert_same(&scan, &whole_file_scan(&layout, &id));
            prop_assert_eq!(scan.hash_ok, matches!(damage, Damage::None));
        }
    }
}
