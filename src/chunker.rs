//! Content-defined chunking (FastCDC 2020) over a byte stream, in batches.
//!
//! The reader fills a large buffer (`BlockReader`), the cutter (`BatchCutter`, possibly on
//! another thread) cuts every chunk whose end is certain (a chunk needs up to `max_size` bytes
//! of look-ahead unless the stream has ended), hands the buffer on as a batch, and carries the
//! undecided tail into the room left before the next buffer's bytes. Chunk boundaries therefore
//! do not depend on buffer sizes or on how the input arrives.

use crate::format::config::ChunkerParams;
use fastcdc::v2020::{self, Normalization};
use std::io::Read;

#[derive(Clone, Copy, Debug)]
pub struct Chunker {
    /// See `ChunkerParams::member_group`.
    member_group: usize,
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
            member_group: p.member_group.unwrap_or(p.min_size) as usize,
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
    /// start at least `member_group` from its start: small members are grouped, and every member
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
            let min_end = here + self.member_group as u64;
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
    /// `buf[start..end]` holds the batch's bytes (the rest is room kept for reuse).
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// End offsets (exclusive) of the chunks, within `data()`; the last equals `data().len()`.
    pub ends: Vec<usize>,
    /// Offset of `data()[0]` in the stream.
    pub stream_offset: u64,
    /// Bytes of `data()` in page-aligned regions.
    pub aligned_bytes: u64,
    /// For each chunk, whether it is a block of a page-aligned region.
    pub aligned: Vec<bool>,
}

impl Batch {
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let data = self.data();
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let c = &data[start..end];
            start = end;
            c
        })
    }

    /// The bytes of chunks `first..=last` (adjacent in `data()`); empty if out of range.
    pub fn span(&self, first: usize, last: usize) -> &[u8] {
        let start = match first.checked_sub(1) {
            Some(before) => self.ends.get(before).copied(),
            None => Some(0),
        };
        match (start, self.ends.get(last)) {
            (Some(start), Some(&end)) if start <= end => &self.data()[start..end],
            _ => &[],
        }
    }

    /// The buffer, to be handed back to a `BlockReader` for reuse.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }
}

/// Freshly read stream bytes, `buf[head..head + len]`, with the cut hints the scan hook found
/// in them. The `head` bytes before them are room for the uncut tail of the previous batch.
pub struct Block {
    buf: Vec<u8>,
    head: usize,
    len: usize,
    hints: Vec<CutHint>,
    at_end: bool,
}

/// The first half of batching: reads the stream into blocks and runs the scan hook over them.
/// It does not depend on where chunks are cut, so it can run on its own thread ahead of the
/// cutting (`BatchCutter`).
pub struct BlockReader<R> {
    source: R,
    block_size: usize,
    head: usize,
    done: bool,
}

impl<R: Read> BlockReader<R> {
    /// Blocks of `block_size` fresh bytes (fewer only at the end), each with `head` bytes of
    /// room before them; `BatchCutter::headroom` says how much the cutter wants.
    pub fn new(source: R, block_size: usize, head: usize) -> BlockReader<R> {
        BlockReader {
            source,
            block_size: block_size.max(1),
            head,
            done: false,
        }
    }

    /// The next block, or `None` after the end of the stream. `recycled` is an old buffer to
    /// reuse (from `Batch::into_buffer`), so steady-state ingest neither allocates nor zeroes:
    /// only a buffer's growth is zero-filled, and of what it held before only bytes that are
    /// first overwritten (by a read here or by the carry in `BatchCutter::cut`) are ever used.
    pub fn next_block(
        &mut self,
        recycled: Option<Vec<u8>>,
        scan: Option<&mut ScanHook<'_>>,
    ) -> std::io::Result<Option<Block>> {
        if self.done {
            return Ok(None);
        }
        let mut buf = recycled.unwrap_or_default();
        let size = self.head + self.block_size;
        if buf.len() < size {
            buf.resize(size, 0);
        }
        let mut filled = self.head;
        let mut at_end = false;
        // Fill the whole block: pipes return 64 KiB per read.
        while filled < size {
            match self.source.read(&mut buf[filled..size]) {
                Ok(0) => {
                    at_end = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.done = at_end;
        let mut hints = Vec::new();
        if let Some(scan) = scan {
            scan(&buf[self.head..filled], &mut hints);
        }
        Ok(Some(Block {
            buf,
            head: self.head,
            len: filled - self.head,
            hints,
            at_end,
        }))
    }
}

/// The second half of batching: cuts blocks, in stream order, into batches of whole chunks,
/// carrying each block's undecided tail into the next.
pub struct BatchCutter {
    chunker: Chunker,
    carry: Vec<u8>,
    offset: u64,
    /// Cut hints not yet behind the cut position.
    hints: Vec<CutHint>,
}

impl BatchCutter {
    pub fn new(chunker: Chunker) -> BatchCutter {
        BatchCutter {
            chunker,
            carry: Vec::new(),
            offset: 0,
            hints: Vec::new(),
        }
    }

    /// Room to leave before each block's fresh bytes so that the carry is put there without
    /// moving the block: the longest tail `Chunker::cut` leaves (a content-defined chunk's
    /// look-ahead, or one page-aligned block of up to 64 KiB). A longer carry still works,
    /// through a copy.
    pub fn headroom(&self) -> usize {
        (self.chunker.max_size() + HINT_LOOKAHEAD).max(64 << 10)
    }

    /// Cuts the carry and `block`; `None` once the stream has ended and nothing is left.
    pub fn cut(&mut self, block: Block) -> Option<Batch> {
        let Block {
            mut buf,
            head,
            len,
            hints,
            at_end,
        } = block;
        self.hints.extend(hints);
        let carried = self.carry.len();
        let (start, end) = if carried <= head {
            buf[head - carried..head].copy_from_slice(&self.carry);
            (head - carried, head + len)
        } else {
            let mut joined = Vec::with_capacity(carried + len);
            joined.extend_from_slice(&self.carry);
            joined.extend_from_slice(&buf[head..head + len]);
            buf = joined;
            (0, buf.len())
        };
        self.carry.clear();
        let data = &buf[start..end];
        let base = self.offset;
        let mut ends = Vec::with_capacity(data.len() / 8192 + 1);
        let mut aligned = Vec::with_capacity(ends.capacity());
        let cut = self
            .chunker
            .cut(data, base, at_end, &self.hints, &mut ends, &mut aligned);
        let covered = cut.covered;
        self.hints.retain(|h| h.done_at() > base + covered as u64);
        self.carry.extend_from_slice(&data[covered..]);
        if at_end && covered == 0 {
            return None;
        }
        self.offset += covered as u64;
        Some(Batch {
            buf,
            start,
            end: start + covered,
            ends,
            stream_offset: base,
            aligned_bytes: cut.aligned_bytes,
            aligned,
        })
    }
}

/// Reads `source` and yields batches of about `batch_size` bytes: a `BlockReader` and a
/// `BatchCutter` on one thread.
pub struct BatchReader<R> {
    blocks: BlockReader<R>,
    cutter: BatchCutter,
}

impl<R: Read> BatchReader<R> {
    pub fn new(source: R, chunker: Chunker, batch_size: usize) -> BatchReader<R> {
        let cutter = BatchCutter::new(chunker);
        let head = cutter.headroom();
        BatchReader {
            blocks: BlockReader::new(source, batch_size.max(2 * chunker.max_size()), head),
            cutter,
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
        scan: Option<&mut ScanHook<'_>>,
    ) -> std::io::Result<Option<Batch>> {
        Ok(self
            .blocks
            .next_block(recycled, scan)?
            .and_then(|block| self.cutter.cut(block)))
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
            member_group: None,
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
            rec = Some(b.into_buffer());
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

    /// Every batch's bytes, through a block reader with `head` bytes of room and recycled
    /// buffers; member starts reported as in `hinted_boundaries`.
    fn batch_bytes(data: &[u8], starts: &[u64], block: usize, step: usize, head: usize) -> Vec<u8> {
        let mut blocks = BlockReader::new(Trickle(data, step), block, head);
        let mut cutter = BatchCutter::new(Chunker::new(&params()));
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
        // Old buffers full of a marker byte, so that a stale byte would show.
        let mut rec = Some(vec![0xA5; 3 * block + head]);
        while let Some(b) = blocks.next_block(rec.take(), Some(&mut hook)).unwrap() {
            let Some(batch) = cutter.cut(b) else {
                break;
            };
            assert_eq!(batch.stream_offset, out.len() as u64);
            assert_eq!(batch.ends.last().copied().unwrap_or(0), batch.data().len());
            out.extend_from_slice(batch.data());
            let mut buf = batch.into_buffer();
            buf.fill(0xA5);
            rec = Some(buf);
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn batches_hold_exactly_the_stream(
            len in 0usize..40_000,
            mut starts in proptest::collection::vec(0u64..40_000, 0..30),
            block in 1usize..20_000,
            step in 1usize..9000,
            head in prop_oneof![Just(0usize), Just(100), Just(8192)],
        ) {
            let data = noise(len, 6);
            starts.retain(|&h| h + 512 <= len as u64);
            starts.sort();
            starts.dedup();
            // No room (every carry is copied), some, or enough for any carry.
            prop_assert!(batch_bytes(&data, &starts, block, step, head) == data);
        }
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
            rec = Some(b.into_buffer());
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

    #[test]
    fn span_is_the_bytes_of_consecutive_chunks() {
        let data = noise(20_000, 3);
        let mut r = BatchReader::new(&data[..], Chunker::new(&params()), 1 << 20);
        let batch = r.next_batch(None).unwrap().expect("one batch");
        let chunks: Vec<&[u8]> = batch.chunks().collect();
        assert!(chunks.len() > 4);
        assert_eq!(batch.span(0, 0), chunks[0]);
        assert_eq!(batch.span(1, 3), [chunks[1], chunks[2], chunks[3]].concat());
        let last = chunks.len() - 1;
        assert_eq!(batch.span(0, last), batch.data());
        assert!(batch.span(0, last + 1).is_empty());
        assert!(batch.span(3, 1).is_empty());
    }

    #[test]
    fn member_group_sets_how_small_members_are_grouped() {
        let data = noise(64 << 10, 9);
        let starts: Vec<u64> = (0..(64 << 10) / 600).map(|k| k * 600).collect();
        let hints: Vec<CutHint> = starts.iter().map(|&s| CutHint::MemberStart(s)).collect();
        let lengths = |member_group: Option<u32>| {
            let chunker = Chunker::new(&ChunkerParams {
                min_size: 2048,
                avg_size: 8192,
                max_size: 32768,
                member_group,
                ..params()
            });
            let (mut ends, mut aligned) = (Vec::new(), Vec::new());
            chunker.cut(&data, 0, true, &hints, &mut ends, &mut aligned);
            let mut prev = 0;
            let mut out = Vec::new();
            for end in ends {
                out.push(end - prev);
                prev = end;
            }
            out.pop(); // the tail ends where the data does
            out
        };
        // Each chunk ends at the first member start at least `member_group` into it (shorter
        // than the minimum chunk, so FastCDC cannot cut before it).
        let grouped = lengths(Some(1024));
        assert!(grouped.iter().all(|&l| l == 1200), "{grouped:?}");
        // Absent (older repositories): `min_size`; FastCDC may cut between that and the start.
        let old = lengths(None);
        assert!(
            old.iter().all(|&l| (2048..2048 + 600).contains(&l)),
            "{old:?}"
        );
        assert!(old.contains(&2400), "{old:?}");
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
            rec = Some(b.into_buffer());
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
