//! Streams as content-defined trees of blobs.
//!
//! Building: data blob references are appended to level 0; a node is closed after a child whose
//! id satisfies `low_u32 % FANOUT == 0` (once it has `MIN_CHILDREN`), or at `MAX_CHILDREN`.
//! Because cut points depend on the child ids, an edit anywhere in a stream changes only the
//! nodes on the path from that chunk to the root: unchanged parts of a stream's chunk list are
//! shared between snapshots as whole subtrees.
//!
//! Reading: `LeafWalker` yields the data blobs covering a byte range, descending only into
//! subtrees that overlap it.

use crate::error::{Error, Result};
use crate::format::tree::{ChildRef, TreeNode};
use crate::id::Id;

/// A node is closed after a child whose id is ≡ 0 mod this (average fan-out ≈ MIN + FANOUT).
pub const FANOUT: u32 = 64;
pub const MIN_CHILDREN: usize = 4;
pub const MAX_CHILDREN: usize = 1024;

/// Stores a finished node and returns its id (the sink decides about dedup and packing).
pub trait NodeSink {
    fn store_node(&mut self, node: &TreeNode) -> Result<Id>;
}

#[derive(Default)]
pub struct TreeBuilder {
    levels: Vec<Vec<ChildRef>>,
}

impl TreeBuilder {
    pub fn new() -> TreeBuilder {
        TreeBuilder::default()
    }

    pub fn push(&mut self, child: ChildRef, sink: &mut dyn NodeSink) -> Result<()> {
        self.push_at(0, child, sink)
    }

    fn push_at(&mut self, level: usize, child: ChildRef, sink: &mut dyn NodeSink) -> Result<()> {
        if self.levels.len() <= level {
            self.levels.push(Vec::new());
        }
        let children = &mut self.levels[level];
        children.push(child);
        let n = children.len();
        let cut =
            (n >= MIN_CHILDREN && child.id.low_u32().is_multiple_of(FANOUT)) || n >= MAX_CHILDREN;
        if cut {
            self.close(level, sink)?;
        }
        Ok(())
    }

    fn close(&mut self, level: usize, sink: &mut dyn NodeSink) -> Result<()> {
        let children = std::mem::take(&mut self.levels[level]);
        let node = TreeNode {
            level: u8::try_from(level).map_err(|_| Error::Invalid("tree too deep".into()))?,
            children,
        };
        let len = node.total_len();
        let id = sink.store_node(&node)?;
        self.push_at(level + 1, ChildRef { id, len }, sink)
    }

    /// Closes all open nodes and returns the root. An empty stream is an empty level-0 node.
    pub fn finish(mut self, sink: &mut dyn NodeSink) -> Result<ChildRef> {
        let mut level = 0;
        loop {
            if level >= self.levels.len() {
                // Nothing was ever pushed.
                let node = TreeNode {
                    level: 0,
                    children: Vec::new(),
                };
                let id = sink.store_node(&node)?;
                return Ok(ChildRef { id, len: 0 });
            }
            let is_top = level + 1 == self.levels.len();
            let pending = self.levels[level].len();
            if is_top && pending == 1 && level > 0 {
                // A single node at the top is the root; wrapping it would add a useless level.
                return Ok(self.levels[level][0]);
            }
            if pending > 0 || is_top {
                let children = std::mem::take(&mut self.levels[level]);
                let node = TreeNode {
                    level: u8::try_from(level)
                        .map_err(|_| Error::Invalid("tree too deep".into()))?,
                    children,
                };
                let len = node.total_len();
                let id = sink.store_node(&node)?;
                if is_top {
                    return Ok(ChildRef { id, len });
                }
                // Pushing may close the parent, which is fine: it is closed again at finish.
                self.push_at(level + 1, ChildRef { id, len }, sink)?;
            }
            level += 1;
        }
    }
}

/// Reads tree nodes by id.
pub trait NodeSource {
    fn read_node(&self, id: &Id) -> Result<TreeNode>;
}

/// A data blob covering part of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    pub id: Id,
    /// Offset of the blob's first byte in the stream.
    pub offset: u64,
    pub len: u64,
}

/// Walks the data blobs of a stream that overlap `[start, end)`, in order, holding only the
/// nodes on the current path in memory.
pub struct LeafWalker<'a> {
    source: &'a dyn NodeSource,
    start: u64,
    end: u64,
    /// (node children, next index, stream offset of the node's first byte, node level)
    stack: Vec<(Vec<ChildRef>, usize, u64, u8)>,
}

impl<'a> LeafWalker<'a> {
    pub fn new(source: &'a dyn NodeSource, root: &Id, start: u64, end: u64) -> Result<Self> {
        let node = source.read_node(root)?;
        Ok(LeafWalker {
            source,
            start,
            end,
            stack: vec![(node.children, 0, 0, node.level)],
        })
    }

    pub fn next_leaf(&mut self) -> Result<Option<Leaf>> {
        loop {
            let Some((children, idx, base, level)) = self.stack.last_mut() else {
                return Ok(None);
            };
            if *idx >= children.len() || *base >= self.end {
                self.stack.pop();
                continue;
            }
            let child = children[*idx];
            let child_start = *base;
            let child_end = child_start
                .checked_add(child.len)
                .ok_or_else(|| Error::corrupt("tree", "lengths overflow"))?;
            *idx += 1;
            *base = child_end;
            let level = *level;
            if child_end <= self.start || child.len == 0 && level > 0 {
                continue;
            }
            if child_start >= self.end {
                continue;
            }
            if level == 0 {
                return Ok(Some(Leaf {
                    id: child.id,
                    offset: child_start,
                    len: child.len,
                }));
            }
            let node = self.source.read_node(&child.id)?;
            if node.level + 1 != level {
                return Err(Error::corrupt(
                    format!("tree node {}", child.id),
                    format!("level {} under a level-{} node", node.level, level),
                ));
            }
            if node.total_len() != child.len {
                return Err(Error::corrupt(
                    format!("tree node {}", child.id),
                    format!(
                        "covers {} bytes, parent says {}",
                        node.total_len(),
                        child.len
                    ),
                ));
            }
            self.stack.push((node.children, 0, child_start, node.level));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    #[derive(Default)]
    struct MemNodes(RefCell<HashMap<Id, TreeNode>>);
    impl NodeSink for &MemNodes {
        fn store_node(&mut self, node: &TreeNode) -> Result<Id> {
            let id = Id::of(&node.encode());
            self.0.borrow_mut().insert(id, node.clone());
            Ok(id)
        }
    }
    impl NodeSource for MemNodes {
        fn read_node(&self, id: &Id) -> Result<TreeNode> {
            self.0
                .borrow()
                .get(id)
                .cloned()
                .ok_or(Error::MissingBlob(*id))
        }
    }

    fn build(nodes: &MemNodes, leaves: &[(u32, u64)]) -> ChildRef {
        let mut b = TreeBuilder::new();
        let mut sink = nodes;
        for (n, len) in leaves {
            b.push(
                ChildRef {
                    id: Id::of(&n.to_le_bytes()),
                    len: *len,
                },
                &mut sink,
            )
            .unwrap();
        }
        b.finish(&mut sink).unwrap()
    }

    fn walk(nodes: &MemNodes, root: &ChildRef, start: u64, end: u64) -> Vec<Leaf> {
        let mut w = LeafWalker::new(nodes, &root.id, start, end).unwrap();
        let mut out = Vec::new();
        while let Some(l) = w.next_leaf().unwrap() {
            out.push(l);
        }
        out
    }

    #[test]
    fn walk_returns_all_leaves_in_order_for_many_sizes() {
        for n in [0u32, 1, 2, 5, 63, 64, 65, 1000, 5000, 70_000] {
            let nodes = MemNodes::default();
            let leaves: Vec<(u32, u64)> = (0..n).map(|i| (i, 1 + u64::from(i % 7))).collect();
            let root = build(&nodes, &leaves);
            let total: u64 = leaves.iter().map(|l| l.1).sum();
            assert_eq!(root.len, total);
            let got = walk(&nodes, &root, 0, u64::MAX);
            assert_eq!(got.len(), n as usize);
            let mut off = 0;
            for (g, (i, len)) in got.iter().zip(&leaves) {
                assert_eq!(g.id, Id::of(&i.to_le_bytes()));
                assert_eq!((g.offset, g.len), (off, *len));
                off += len;
            }
        }
    }

    #[test]
    fn range_walk_visits_only_overlapping_leaves() {
        let nodes = MemNodes::default();
        let leaves: Vec<(u32, u64)> = (0..10_000).map(|i| (i, 10)).collect();
        let root = build(&nodes, &leaves);
        let got = walk(&nodes, &root, 50_005, 50_025);
        let offsets: Vec<u64> = got.iter().map(|l| l.offset).collect();
        assert_eq!(offsets, vec![50_000, 50_010, 50_020]);
    }

    #[test]
    fn an_edit_changes_few_nodes() {
        let nodes = MemNodes::default();
        let a: Vec<(u32, u64)> = (0..50_000).map(|i| (i, 100)).collect();
        build(&nodes, &a);
        let before = nodes.0.borrow().len();
        let mut b = a.clone();
        b[25_000].0 = 9_999_999;
        build(&nodes, &b);
        let added = nodes.0.borrow().len() - before;
        assert!(added <= 6, "one changed leaf added {added} nodes");
    }
}
