//! Reachability: which blobs the snapshots reference.
//!
//! The set lives in a SQLite temp table (`temp.live`), not in RAM, so marking a repository of
//! any size takes bounded memory. A tree node already in the set is not read again, so a subtree
//! shared by a thousand snapshots is walked once.

use crate::error::{Error, Result};
use crate::format::manifest::Manifest;
use crate::id::Id;
use crate::repo::Repo;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MarkStats {
    pub tree_nodes: u64,
    pub data_blobs: u64,
}

/// Every tree root a manifest references (streams and their member indexes).
pub fn roots(m: &Manifest) -> impl Iterator<Item = Id> + '_ {
    m.streams
        .iter()
        .flat_map(|s| std::iter::once(s.root).chain(s.members.as_ref().map(|mr| mr.root)))
}

/// Starts an empty live set.
pub fn reset(repo: &Repo) -> Result<()> {
    repo.index.conn().execute_batch(
        "DROP TABLE IF EXISTS temp.live;
         CREATE TEMP TABLE live(id BLOB PRIMARY KEY) WITHOUT ROWID;",
    )?;
    Ok(())
}

/// Adds everything reachable from `root` to the live set. A node that cannot be read is passed to
/// `on_damage` (with the error) and its subtree is skipped, so callers can either abort or
/// collect every problem.
pub fn mark_tree(
    repo: &Repo,
    root: Id,
    stats: &mut MarkStats,
    on_damage: &mut dyn FnMut(Id, Error) -> Result<()>,
) -> Result<()> {
    let conn = repo.index.conn();
    let mut insert = conn.prepare_cached("INSERT OR IGNORE INTO temp.live(id) VALUES (?1)")?;
    if insert.execute([&root.0[..]])? == 0 {
        return Ok(());
    }
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        let node = match crate::tree::NodeSource::read_node(repo, &id) {
            Ok(n) => n,
            Err(e) => {
                on_damage(id, e)?;
                continue;
            }
        };
        stats.tree_nodes += 1;
        for child in &node.children {
            if insert.execute([&child.id.0[..]])? == 1 {
                if node.level > 0 {
                    stack.push(child.id);
                } else {
                    stats.data_blobs += 1;
                }
            }
        }
    }
    Ok(())
}

/// Live ids that the index does not know (at most `limit` of them).
pub fn unindexed_live(repo: &Repo, limit: usize) -> Result<Vec<Id>> {
    let mut stmt = repo.index.conn().prepare(
        "SELECT l.id FROM temp.live l WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.id = l.id) LIMIT ?1",
    )?;
    let ids = stmt
        .query_map([limit as i64], |r| r.get::<_, Vec<u8>>(0))?
        .filter_map(|r| r.ok().and_then(|b| Id::from_slice(&b)))
        .collect();
    Ok(ids)
}
