//! The BLAKE3 of a file computed from independently hashed segments.
//!
//! BLAKE3 is a tree hash: cut a file into segments of one power-of-two length (the last one
//! shorter) and each segment is a whole subtree, so segments can be hashed on different threads
//! from bounded buffers and merged afterwards into exactly `blake3::hash` of the whole file.

use crate::id::Id;
use blake3::hazmat::{ChainingValue, HasherExt, Mode, left_subtree_len};
use std::ops::Range;

/// How a file of `total` bytes is cut into segments of `seg_len` bytes.
#[derive(Clone, Copy, Debug)]
pub struct Segments {
    seg_len: u64,
    total: u64,
}

/// What hashing one segment gives: the file's hash itself when the file is one segment,
/// otherwise the segment's chaining value, which only means something once merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentDigest([u8; 32]);

impl Segments {
    /// `seg_len` is rounded up to a power of two of at least one BLAKE3 chunk: any other length
    /// would cut through subtrees.
    pub fn new(seg_len: u64, total: u64) -> Segments {
        let seg_len = seg_len.max(blake3::CHUNK_LEN as u64).next_power_of_two();
        Segments { seg_len, total }
    }

    /// Never zero: an empty file is one empty segment.
    pub fn count(&self) -> u64 {
        self.total.div_ceil(self.seg_len).max(1)
    }

    pub fn range(&self, k: u64) -> Range<u64> {
        let start = k.saturating_mul(self.seg_len).min(self.total);
        start..start.saturating_add(self.seg_len).min(self.total)
    }

    /// Hashes segment `k` from `bytes`, its range of the file; `None` when `bytes` is not as long
    /// as that range (or `k` is past the end).
    pub fn hash(&self, k: u64, bytes: &[u8]) -> Option<SegmentDigest> {
        let range = self.range(k);
        if k >= self.count() || bytes.len() as u64 != range.end - range.start {
            return None;
        }
        let mut hasher = blake3::Hasher::new();
        if self.count() == 1 {
            hasher.update(bytes);
            return Some(SegmentDigest(*hasher.finalize().as_bytes()));
        }
        // Every segment but a lone one is non-empty and a whole subtree at a chunk boundary,
        // which is what `set_input_offset` and `finalize_non_root` require.
        hasher.set_input_offset(range.start);
        hasher.update(bytes);
        Some(SegmentDigest(hasher.finalize_non_root()))
    }

    /// The file's hash from the digests of all its segments, in order; `None` when their number
    /// is not `count()`.
    pub fn merge(&self, digests: &[SegmentDigest]) -> Option<Id> {
        if digests.len() as u64 != self.count() {
            return None;
        }
        if let [whole] = digests {
            return Some(Id(whole.0));
        }
        let left = left_subtree_len(self.total);
        let l = self.merge_subtree(digests, 0, left);
        let r = self.merge_subtree(digests, left, self.total - left);
        Some(Id::from(blake3::hazmat::merge_subtrees_root(
            &l,
            &r,
            Mode::Hash,
        )))
    }

    /// The chaining value of the subtree covering `len` bytes from `start`, which is a segment
    /// boundary (left subtrees are powers of two of at least one segment, so every split is).
    fn merge_subtree(&self, digests: &[SegmentDigest], start: u64, len: u64) -> ChainingValue {
        if len <= self.seg_len {
            return digests[(start / self.seg_len) as usize].0;
        }
        let left = left_subtree_len(len);
        let l = self.merge_subtree(digests, start, left);
        let r = self.merge_subtree(digests, start + left, len - left);
        blake3::hazmat::merge_subtrees_non_root(&l, &r, Mode::Hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn segmented_hash(data: &[u8], seg_len: u64) -> Option<Id> {
        let s = Segments::new(seg_len, data.len() as u64);
        let digests: Vec<SegmentDigest> = (0..s.count())
            .map(|k| {
                let r = s.range(k);
                s.hash(k, &data[r.start as usize..r.end as usize])
            })
            .collect::<Option<Vec<_>>>()?;
        s.merge(&digests)
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
            .collect()
    }

    #[test]
    fn edge_lengths_match_the_plain_hash() {
        let seg = 4096u64;
        for len in [
            0, 1, 1023, 1024, 1025, 4095, 4096, 4097, 8192, 8193, 12288, 12289, 40961,
        ] {
            let d = data(len);
            assert_eq!(segmented_hash(&d, seg), Some(Id::of(&d)), "len {len}");
        }
    }

    #[test]
    fn segments_cover_the_file_once() {
        let s = Segments::new(3000, 10_000);
        assert_eq!(s.count(), 3);
        let ranges: Vec<_> = (0..s.count()).map(|k| s.range(k)).collect();
        assert_eq!(ranges, [0..4096, 4096..8192, 8192..10_000]);
        assert_eq!(Segments::new(4096, 0).count(), 1);
        assert_eq!(Segments::new(4096, 0).range(0), 0..0);
    }

    #[test]
    fn a_missing_or_wrong_segment_does_not_give_the_hash() {
        let d = data(10_000);
        let s = Segments::new(4096, d.len() as u64);
        let mut digests: Vec<SegmentDigest> = (0..s.count())
            .map(|k| {
                let r = s.range(k);
                s.hash(k, &d[r.start as usize..r.end as usize]).unwrap()
            })
            .collect();
        assert_eq!(s.merge(&digests[..2]), None);
        assert_eq!(s.hash(2, &d[8192..9000]), None, "short segment");
        assert_eq!(s.hash(3, &[]), None, "past the end");
        digests[1] = s.hash(1, &d[..4096]).unwrap();
        assert_ne!(s.merge(&digests), Some(Id::of(&d)));
    }

    proptest! {
        #[test]
        fn any_length_and_segment_size_match_the_plain_hash(
            len in 0usize..200_000,
            seg_shift in 10u32..16,
        ) {
            let d = data(len);
            prop_assert_eq!(segmented_hash(&d, 1 << seg_shift), Some(Id::of(&d)));
        }
    }
}
