//! Tree node encoding.
//!
//! A stream is a tree of blobs: level-0 nodes list data blobs, level-n nodes list level-(n-1)
//! nodes. Each child reference carries the number of stream bytes below it, so any byte range of
//! a stream can be located without reading the data.
//!
//! ```text
//! b"CT" | version u8 (1) | level u8 | count varint | count × ( id [32] | length varint )
//! ```
//! The encoding is canonical (one encoding per node; varints minimal, no trailing bytes), since a
//! node's id is the BLAKE3 of its encoding.

use super::{FormatError, varint};
use crate::id::Id;

pub const MAGIC: [u8; 2] = *b"CT";
pub const VERSION: u8 = 1;
/// Upper bound on children per node; the builder cuts well before this.
pub const MAX_CHILDREN: usize = 4096;
/// Upper bound on tree height; 64 levels of fan-out ≥ 2 exceed any u64 length.
pub const MAX_LEVEL: u8 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildRef {
    pub id: Id,
    /// Stream bytes covered by this child.
    pub len: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeNode {
    pub level: u8,
    pub children: Vec<ChildRef>,
}

impl TreeNode {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.children.len() * 36);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(self.level);
        varint::put(self.children.len() as u64, &mut out);
        for c in &self.children {
            out.extend_from_slice(c.id.as_bytes());
            varint::put(c.len, &mut out);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<TreeNode, FormatError> {
        if bytes.len() < 4 || bytes[..2] != MAGIC {
            return Err(FormatError::new("tree node magic missing"));
        }
        if bytes[2] != VERSION {
            return Err(FormatError(format!(
                "tree node version {} is not supported",
                bytes[2]
            )));
        }
        let level = bytes[3];
        if level >= MAX_LEVEL {
            return Err(FormatError(format!("tree node level {level} too high")));
        }
        let mut rest = &bytes[4..];
        let count = varint::get(&mut rest)?;
        if count > MAX_CHILDREN as u64 {
            return Err(FormatError(format!("tree node claims {count} children")));
        }
        let mut children = Vec::with_capacity(count as usize);
        let mut total: u64 = 0;
        for _ in 0..count {
            if rest.len() < 32 {
                return Err(FormatError::new("tree node truncated"));
            }
            let (id, tail) = rest.split_at(32);
            rest = tail;
            let id = Id::from_slice(id).ok_or_else(|| FormatError::new("bad child id"))?;
            let len = varint::get(&mut rest)?;
            total = total
                .checked_add(len)
                .ok_or_else(|| FormatError::new("tree node lengths overflow"))?;
            children.push(ChildRef { id, len });
        }
        if !rest.is_empty() {
            return Err(FormatError::new("trailing bytes after tree node"));
        }
        Ok(TreeNode { level, children })
    }

    pub fn total_len(&self) -> u64 {
        self.children.iter().map(|c| c.len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip_is_canonical(level in 0u8..10, lens in proptest::collection::vec(0u64..1<<40, 0..50)) {
            let node = TreeNode {
                level,
                children: lens.iter().enumerate().map(|(i, &len)| ChildRef { id: Id::of(&i.to_le_bytes()), len }).collect(),
            };
            let bytes = node.encode();
            let back = TreeNode::decode(&bytes).unwrap();
            prop_assert_eq!(&back, &node);
            prop_assert_eq!(back.encode(), bytes);
        }

        #[test]
        fn decode_never_panics(bytes: Vec<u8>) {
            let _ = TreeNode::decode(&bytes);
        }
    }

    #[test]
    fn rejects_trailing_and_truncated() {
        let node = TreeNode {
            level: 0,
            children: vec![ChildRef {
                id: Id::of(b"a"),
                len: 5,
            }],
        };
        let mut bytes = node.encode();
        bytes.push(0);
        assert!(TreeNode::decode(&bytes).is_err());
        bytes.truncate(bytes.len() - 3);
        assert!(TreeNode::decode(&bytes).is_err());
    }
}
