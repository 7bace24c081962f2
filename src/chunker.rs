//! Content-defined chunking (FastCDC 2020) over a byte stream, in batches.
//!
//! The reader fills a large buffer, cuts every chunk whose end is certain (a chunk needs up to
//! `max_size` bytes of look-ahead unless the stream has ended), hands the buffer on as a batch,
//! and carries the undecided tail into the next buffer. Chunk boundaries therefore do not depend
//! on buffer sizes or on how the input arrives.

use crate::format::config::ChunkerParams;
use fastcdc::v2020::{self, Normalization};
use std::io::Read;

#[derive(Clone, Copy, Debug)]
pub struct Chunker {
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
}

impl Chunker {
    pub fn new(p: &ChunkerParams) -> Chunker {
        let level = match p.normalization {
            0 => Normalization::Level0,
            1 => Normalization::Level1,
            2 => Normalization::Level2,
            _ => Normalization::Level3,
        };
        let (mask_s, mask_l) = v2020::select_masks(p.avg_size as usize, level);
        Chunker {
            min: p.min_size as usize,
            avg: p.avg_size as usize,
            max: p.max_size as usize,
            mask_s,
            mask_l,
        }
    }

    pub fn max_size(&self) -> usize {
        self.max
    }

    /// Appends the end offsets of the chunks of `data` (which starts at stream offset `base`)
    /// that are certain to `ends`, and for each whether it is a block of a page-aligned region
    /// to `aligned`; returns how many bytes they cover and how many of those lie in page-aligned
    /// regions. With `at_end` the whole of `data` is cut.
    ///
    /// `hints` are sorted by position (see `CutHint`). A chunk never runs past the first member
    /// start at least `min_size` from its start: small members are grouped, and every member
    /// larger than that starts a chunk of its own, so a changed file dirties only its own chunks
    /// (its group) instead of a chunk it shares with unrelated neighbours. An aligned region is
    /// cut at its start, at every `block` bytes after it and at its end, whatever the content.
    /// Hints are known only once the bytes just after them are read (a member's header block, a
    /// paged file's first bytes), so away from the end a content-defined cut must leave
    /// `HINT_LOOKAHEAD` bytes after it; then the boundaries do not depend on how the input was
    /// buffered.
    pub fn cut(
        &self,
        data: &[u8],
        base: u64,
        at_end: bool,
        hints: &[CutHint],
        ends: &mut Vec<usize>,
        aligned_chunks: &mut Vec<bool>,
    ) -> Cut {
        let len = data.len();
        let mut pos = 0usize;
        let mut aligned = 0u64;
        let mut next_hint = 0;
        while pos < len {
            let here = base + pos as u64;
            while next_hint < hints.len() && hints[next_hint].done_at() <= here {
                next_hint += 1;
            }
            let upcoming = &hints[next_hint..];
            if let Some(&CutHint::Aligned { start, end, block }) = upcoming.first()
                && start <= here
            {
                let block = u64::from(block.max(1));
                let block_end = start + ((here - start) / block + 1) * block;
                let mut next = (block_end.min(end) - base) as usize;
                if next > len {
                    if !at_end {
                        break;
                    }
                    next = len;
                }
                aligned += (next - pos) as u64;
                pos = next;
                ends.push(pos);
                aligned_chunks.push(true);
                continue;
            }
            let min_end = here + self.min as u64;
            let limit = upcoming
                .iter()
                .find_map(|h| match *h {
                    CutHint::MemberStart(at) if at >= min_end => Some(at),
                    CutHint::MemberStart(_) => None,
                    CutHint::Aligned { start, .. } => Some(start),
                })
                .map_or(len, |at| at.saturating_sub(base).min(len as u64) as usize);
            if !at_end && limit == len && len - pos < self.max + HINT_LOOKAHEAD {
                break;
            }
            let (_, cut_len) = v2020::cut(
                &data[pos..limit],
                self.min,
                self.avg,
                self.max,
                self.mask_s,
                self.mask_l,
                self.mask_s << 1,
                self.mask_l << 1,
            );
            // `cut` returns at least min(len, min_size) > 0 for non-empty input; guard anyway so
            // a future change cannot turn this into an endless loop.
            pos += cut_len.clamp(1, limit - pos);
            ends.push(pos);
            aligned_chunks.push(false);
        }
        Cut {
            covered: pos,
            aligned_bytes: aligned,
        }
    }
}

/// What `Chunker::cut` decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    /// Bytes of the input covered by the chunks cut.
    pub covered: usize,
    /// Of those, bytes in page-aligned regions.
    pub aligned_bytes: u64,
}

/// Where the stream's structure asks for chunk boundaries (stream offsets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutHint {
    /// A tar member's first header block starts here.
    MemberStart(u64),
    /// `[start, end)` is a file made of fixed-size pages (see `pages`): it is cut into blocks
    /// of `block` bytes counted from `start`.
    Aligned { start: u64, end: u64, block: u32 },
}

impl CutHint {
    /// The stream offset from which the hint no longer affects cutting.
    fn done_at(&self) -> u64 {
        match *self {
            CutHint::MemberStart(at) => at,
            CutHint::Aligned { end, .. } => end,
        }
    }
}

/// Bytes a cut must stay away from the end of the known input (one tar header block), so that
/// a member start hint it could have used is already known.
pub const HINT_LOOKAHEAD: usize = 512;

/// Sees newly read bytes in stream order before they are cut, and reports where the stream's
/// structure asks for cuts (ascending).
pub type ScanHook<'h> = dyn FnMut(&[u8], &mut Vec<CutHint>) + Send + 'h;

/// A buffer of stream bytes with its chunk boundaries.
pub struct Batch {
    pub data: Vec<u8>,
    /// End offsets (exclusive) of the chunks, within `data`; the last equals `data.len()`.
    pub ends: Vec<usize>,
    /// Offset of `data[0]` in the stream.
    pub stream_offset: u64,
    /// Bytes of `data` in page-aligned regions.
    pub aligned_bytes: u64,
    /// For each chunk, whether it is a block of a page-aligned region.
    pub aligned: Vec<bool>,
}

impl Batch {
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let c = &self.data[start..end];
            start = end;
            c
        })
    }
}

/// Reads `source` and yields batches of about `batch_size` bytes.
pub struct BatchReader<R> {
    source: R,
    chunker: Chunker,
    batch_size: usize,
    carry: Vec<u8>,
    offset: u64,
    done: bool,
    /// Cut hints not yet behind the cut position.
    hints: Vec<CutHint>,
}

impl<R: Read> BatchReader<R> {
    pub fn new(source: R, chunker: Chunker, batch_size: usize) -> BatchReader<R> {
        BatchReader {
            source,
            chunker,
            batch_size: batch_size.max(2 * chunker.max_size()),
            carry: Vec::new(),
            offset: 0,
            done: false,
            hints: Vec::new(),
        }
    }

    /// The next batch, or `None` at the end of the stream. `recycled` is an old batch buffer to
    /// reuse, so steady-state ingest does not allocate.
    pub fn next_batch(&mut self, recycled: Option<Vec<u8>>) -> std::io::Result<Option<Batch>> {
        self.next_batch_with(recycled, None)
    }

    /// Like `next_batch`; `scan` sees every newly read byte once, in order, before it is cut,
    /// and may report member starts to cut at.
    pub fn next_batch_with(
        &mut self,
        recycled: Option<Vec<u8>>,
        mut scan: Option<&mut ScanHook<'_>>,
    ) -> std::io::Result<Option<Batch>> {
        if self.done {
            return Ok(None);
        }
        let mut data = recycled.unwrap_or_default();
        data.clear();
        data.reserve(self.batch_size);
        data.extend_from_slice(&self.carry);
        self.carry.clear();
        let mut at_end = false;
        // Grow once and fill in place: pipes return 64 KiB per read, and re-zeroing the rest of
        // the buffer on every read would cost far more than the data.
        let carried = data.len();
        let mut filled = carried;
        data.resize(self.batch_size, 0);
        while filled < self.batch_size {
            match self.source.read(&mut data[filled..]) {
                Ok(0) => {
                    at_end = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        data.truncate(filled);
        if let Some(scan) = scan.as_mut() {
            let fresh = carried..filled;
            scan(&data[fresh], &mut self.hints);
        }
        let base = self.offset;
        let mut ends = Vec::with_capacity(data.len() / 8192 + 1);
        let mut aligned = Vec::with_capacity(ends.capacity());
        let cut = self
            .chunker
            .cut(&data, base, at_end, &self.hints, &mut ends, &mut aligned);
        let covered = cut.covered;
        let cut_to = base + covered as u64;
        self.hints.retain(|h| h.done_at() > cut_to);
        self.carry.extend_from_slice(&data[covered..]);
        data.truncate(covered);
        if at_end {
            self.done = true;
            if data.is_empty() {
                return Ok(None);
            }
        }
        let stream_offset = self.offset;
        self.offset += covered as u64;
        Ok(Some(Batch {
            data,
            ends,
            stream_offset,
            aligned_bytes: cut.aligned_bytes,
            aligned,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::config::ChunkerAlgorithm;
    use proptest::prelude::*;

    fn params() -> ChunkerParams {
        ChunkerParams {
            algorithm: ChunkerAlgorithm::FastCdc2020,
            min_size: 256,
            avg_size: 1024,
            max_size: 4096,
            normalization: 1,
            page_align: true,
        }
    }

    /// A reader returning at most `step` bytes per call, to vary how input arrives.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(self.1);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn boundaries(data: &[u8], batch: usize, step: usize) -> Vec<u64> {
        let mut r = BatchReader::new(Trickle(data, step), Chunker::new(&params()), batch);
        let mut out = Vec::new();
        let mut rec = None;
        while let Some(b) = r.next_batch(rec.take()).unwrap() {
            out.extend(b.ends.iter().map(|&e| b.stream_offset + e as u64));
            rec = Some(b.data);
        }
        out
    }

    fn noise(len: usize, seed: u8) -> Vec<u8> {
        let mut v = vec![0u8; len];
        blake3::Hasher::new()
            .update(&[seed])
            .finalize_xof()
            .fill(&mut v);
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn boundaries_do_not_depend_on_buffering(len in 0usize..40_000, batch in 1usize..20_000, step in 1usize..9000) {
            let data = noise(len, 1);
            let reference = boundaries(&data, 1 << 20, 1 << 20);
            prop_assert_eq!(boundaries(&data, batch, step), reference.clone());
            if len > 0 {
                prop_assert_eq!(*reference.last().unwrap(), len as u64);
            } else {
                prop_assert!(reference.is_empty());
            }
        }
    }

    /// Boundaries of `data` with member starts at `starts`, each reported (like the tar scanner
    /// does) once the 512 bytes after it have been read.
    fn hinted_boundaries(data: &[u8], starts: &[u64], batch: usize, step: usize) -> Vec<u64> {
        let mut r = BatchReader::new(Trickle(data, step), Chunker::new(&params()), batch);
        let mut fed = 0u64;
        let mut next = 0;
        let mut hook = |bytes: &[u8], out: &mut Vec<CutHint>| {
            fed += bytes.len() as u64;
            while next < starts.len() && starts[next] + 512 <= fed {
                out.push(CutHint::MemberStart(starts[next]));
                next += 1;
            }
        };
        let mut out = Vec::new();
        let mut rec = None;
        while let Some(b) = r.next_batch_with(rec.take(), Some(&mut hook)).unwrap() {
            out.extend(b.ends.iter().map(|&e| b.stream_offset + e as u64));
            rec = Some(b.data);
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn hinted_boundaries_do_not_depend_on_buffering(
            len in 1000usize..40_000,
            mut starts in proptest::collection::vec(0u64..40_000, 0..30),
            batch in 1usize..20_000,
            step in 1usize..9000,
        ) {
            let data = noise(len, 4);
            starts.retain(|&h| h + 512 <= len as u64);
            starts.sort();
            starts.dedup();
            let reference = hinted_boundaries(&data, &starts, 1 << 20, 1 << 20);
            prop_assert_eq!(hinted_boundaries(&data, &starts, batch, step), reference.clone());
            // No chunk runs across a member start at least min_size (256) into it.
            let mut prev = 0;
            for &end in &reference {
                for &h in &starts {
                    prop_assert!(!(h >= prev + 256 && h < end), "chunk {prev}..{end} spans start {h}");
                }
                prev = end;
            }
        }
    }

    /// Boundaries with member starts and aligned regions, each reported the way the tar scanner
    /// does: a member start once 512 bytes after it are read, a region once 64 bytes after its
    /// start are.
    fn aligned_boundaries(
        data: &[u8],
        hints: &[CutHint],
        batch: usize,
        step: usize,
    ) -> (Vec<u64>, u64) {
        let mut r = BatchReader::new(Trickle(data, step), Chunker::new(&params()), batch);
        let mut fed = 0u64;
        let mut next = 0;
        let mut hook = |bytes: &[u8], out: &mut Vec<CutHint>| {
            fed += bytes.len() as u64;
            while let Some(h) = hints.get(next) {
                let known_at = match *h {
                    CutHint::MemberStart(at) => at + 512,
                    CutHint::Aligned { start, .. } => start + 64,
                };
                if known_at > fed {
                    break;
                }
                out.push(*h);
                next += 1;
            }
        };
        let mut out = Vec::new();
        let mut aligned = 0;
        let mut rec = None;
        while let Some(b) = r.next_batch_with(rec.take(), Some(&mut hook)).unwrap() {
            out.extend(b.ends.iter().map(|&e| b.stream_offset + e as u64));
            assert_eq!(b.aligned.len(), b.ends.len());
            aligned += b.aligned_bytes;
            rec = Some(b.data);
        }
        (out, aligned)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn aligned_regions_are_cut_in_blocks_whatever_the_buffering(
            len in 20_000usize..60_000,
            member in 0u64..5000,
            header in 1u64..4,
            blocks in 2u64..8,
            block_kib in 1u64..4,
            batch in 1usize..20_000,
            step in 1usize..9000,
        ) {
            let data = noise(len, 5);
            let start = member + header * 512;
            let block = block_kib * 1024;
            let end = start + blocks * block;
            prop_assume!(end + 612 <= len as u64);
            let hints = [
                CutHint::MemberStart(member),
                CutHint::Aligned { start, end, block: block as u32 },
                CutHint::MemberStart(end + 100),
            ];
            let (reference, aligned) = aligned_boundaries(&data, &hints, 1 << 20, 1 << 20);
            prop_assert_eq!(aligned, end - start);
            let (other, _) = aligned_boundaries(&data, &hints, batch, step);
            prop_assert_eq!(&other, &reference);
            // Every block boundary is a cut, and nothing in between.
            let inside: Vec<u64> = reference.iter().copied().filter(|&e| e >= start && e <= end).collect();
            let expected: Vec<u64> = (0..=blocks).map(|k| start + k * block).collect();
            prop_assert_eq!(inside, expected);
        }
    }

    #[test]
    fn chunk_sizes_within_limits() {
        let data = noise(200_000, 2);
        let b = boundaries(&data, 1 << 20, 1 << 20);
        let mut prev = 0;
        for (i, &e) in b.iter().enumerate() {
            let len = e - prev;
            assert!(len <= 4096);
            if i + 1 < b.len() {
                assert!(len >= 256);
            }
            prev = e;
        }
    }

    #[test]
    fn an_insertion_changes_only_nearby_chunks() {
        let data = noise(100_000, 3);
        let mut edited = data.clone();
        edited.splice(50_000..50_000, [1u8, 2, 3]);
        let a = boundaries(&data, 1 << 20, 1 << 20);
        let b = boundaries(&edited, 1 << 20, 1 << 20);
        let chunk_set = |d: &[u8], ends: &[u64]| {
            let mut s = std::collections::HashSet::new();
            let mut p = 0;
            for &e in ends {
                s.insert(d[p as usize..e as usize].to_vec());
                p = e;
            }
            s
        };
        let sa = chunk_set(&data, &a);
        let sb = chunk_set(&edited, &b);
        let new = sb.difference(&sa).count();
        assert!(new <= 3, "{new} new chunks after a 3-byte insertion");
    }
}
