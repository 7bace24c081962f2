//! The SQLite index: blob → pack location, packs, snapshots.
//!
//! Everything here is derived from pack tables and manifests (`rebuild`), so the index is a cache
//! that can be deleted. Transactions are short (one per pack or snapshot) so that several
//! processes can write through SQLite's WAL with a busy timeout.

use crate::error::{Error, Result};
use crate::format::pack::{Frame, PackEntry};
use crate::format::{BlobKind, Compression};
use crate::id::Id;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::time::Duration;

/// Schema version, stored in `PRAGMA user_version`. An index of an older schema is rebuilt.
pub const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE packs (
    pack_no    INTEGER PRIMARY KEY,
    id         BLOB NOT NULL UNIQUE,
    size       INTEGER NOT NULL,
    blob_count INTEGER NOT NULL
);
CREATE TABLE blobs (
    id          BLOB PRIMARY KEY,
    pack_no     INTEGER NOT NULL REFERENCES packs(pack_no),
    offset      INTEGER NOT NULL,
    stored_len  INTEGER NOT NULL,
    raw_len     INTEGER NOT NULL,
    kind        INTEGER NOT NULL,
    compression INTEGER NOT NULL,
    frame_len   INTEGER,
    frame_skip  INTEGER,
    frame_raw   INTEGER
) WITHOUT ROWID;
CREATE INDEX blobs_by_pack ON blobs(pack_no);
CREATE TABLE snapshots (
    id       BLOB PRIMARY KEY,
    time_ns  INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    source   TEXT NOT NULL,
    bytes    INTEGER NOT NULL,
    manifest BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX snapshots_by_series ON snapshots(kind, source, time_ns);
";

/// Where a blob lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: Id,
    /// Where the blob's stored bytes, or its shared frame, start.
    pub offset: u64,
    /// Bytes to read at `offset` (the whole frame for a blob in a shared frame).
    pub stored_len: u32,
    pub raw_len: u32,
    pub kind: BlobKind,
    pub compression: Compression,
    pub frame: Option<Frame>,
}

impl BlobLocation {
    /// The blob's share of its pack's bytes (see `PackEntry::stored_share`).
    pub fn stored_share(&self) -> u64 {
        crate::format::pack::stored_share(self.stored_len, self.raw_len, self.frame)
    }
}

/// The blob columns every reader selects, in this order (see `blob_location`); a macro so that
/// queries can be built from it with `concat!`.
macro_rules! location_columns {
    () => {
        "b.offset, b.stored_len, b.raw_len, b.kind, b.compression, b.frame_len, b.frame_skip, \
         b.frame_raw"
    };
}
pub(crate) const LOCATION_COLUMNS: &str = location_columns!();

/// A blob's pack number and location columns, by id (single-table: see `Index::locator`).
const BLOB_BY_ID: &str = concat!(
    "SELECT b.pack_no, ",
    location_columns!(),
    " FROM blobs b WHERE b.id = ?1"
);
const PACK_ID: &str = "SELECT id FROM packs WHERE pack_no = ?1";

/// Looks a blob up with `by_id` (`BLOB_BY_ID`); `pack_of` turns its pack number into the pack's
/// id. A blob of a pack the index does not list is not there, as with a join.
fn locate_with(
    by_id: &mut rusqlite::Statement<'_>,
    id: &Id,
    pack_of: impl FnOnce(i64) -> Result<Option<Id>>,
) -> Result<Option<BlobLocation>> {
    let mut rows = by_id.query([&id.0[..]])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let Some(pack) = pack_of(row.get(0)?)? else {
        return Ok(None);
    };
    Ok(Some(blob_location(row, 1, pack, id)?))
}

fn pack_id_of(stmt: &mut rusqlite::Statement<'_>, pack_no: i64) -> Result<Option<Id>> {
    let Some(bytes) = stmt
        .query_row([pack_no], |r| r.get::<_, Vec<u8>>(0))
        .optional()?
    else {
        return Ok(None);
    };
    Id::from_slice(&bytes)
        .map(Some)
        .ok_or_else(|| Error::corrupt("index", format!("pack {pack_no}: bad pack id")))
}

/// Decodes `LOCATION_COLUMNS` starting at column `at` of `row`, for a blob of `pack`.
pub(crate) fn blob_location(
    row: &rusqlite::Row<'_>,
    at: usize,
    pack: Id,
    id: &Id,
) -> Result<BlobLocation> {
    let bad = |what: &str| Error::corrupt("index", format!("blob {id}: bad {what}"));
    let int = |i: usize| -> Result<i64> { Ok(row.get::<_, i64>(at + i)?) };
    let opt = |i: usize| -> Result<Option<i64>> { Ok(row.get::<_, Option<i64>>(at + i)?) };
    let u32_of = |v: i64, what: &str| u32::try_from(v).map_err(|_| bad(what));
    let frame = match (opt(5)?, opt(6)?, opt(7)?) {
        (Some(len), Some(skip), Some(raw)) => Some((
            u32_of(len, "frame length")?,
            Frame {
                skip: u32_of(skip, "frame offset")?,
                raw_len: u32_of(raw, "frame length")?,
            },
        )),
        (None, None, None) => None,
        _ => return Err(bad("frame")),
    };
    let kind = u8::try_from(int(3)?).map_err(|_| bad("kind"))?;
    let compression = u8::try_from(int(4)?).map_err(|_| bad("compression"))?;
    Ok(BlobLocation {
        pack,
        offset: u64::try_from(int(0)?).map_err(|_| bad("offset"))?,
        stored_len: match frame {
            Some((len, _)) => len,
            None => u32_of(int(1)?, "length")?,
        },
        raw_len: u32_of(int(2)?, "length")?,
        kind: BlobKind::from_u8(kind).map_err(|_| bad("kind"))?,
        compression: Compression::from_u8(compression).map_err(|_| bad("compression"))?,
        frame: frame.map(|(_, f)| f),
    })
}

#[derive(Clone, Debug)]
pub struct SnapshotRow {
    pub id: Id,
    pub time_ns: i64,
    pub kind: String,
    pub source: String,
    pub bytes: u64,
    pub manifest: Vec<u8>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct IndexTotals {
    pub snapshots: u64,
    pub logical_bytes: u64,
    pub unique_bytes: u64,
    pub stored_blob_bytes: u64,
    /// Stored bytes of tree blobs.
    pub stored_tree_bytes: u64,
    pub chunks: u64,
    pub tree_blobs: u64,
    pub packs: u64,
    pub pack_bytes: u64,
}

pub struct Index {
    conn: Connection,
}

fn sql_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn sql_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Index {
    /// Opens (creating if absent) the index at `path`, bound to repository `repo_id`.
    /// Returns `Ok(None)` when the file exists but belongs to another repository or an older
    /// schema, i.e. it must be rebuilt.
    pub fn open(path: &Path, repo_id: &str) -> Result<Option<Index>> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(120))?;
        // The index is only committed after the packs it points to are durable, and a manifest
        // is only written after its index rows commit; FULL makes that commit itself durable.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version != 0 && version < SCHEMA_VERSION {
            return Ok(None);
        }
        if version > SCHEMA_VERSION {
            return Err(Error::Invalid(format!(
                "index schema {version} is newer than this cairn supports ({SCHEMA_VERSION}); \
                 upgrade cairn or run `cairn repo rebuild-index`"
            )));
        }
        if version == 0 {
            // IMMEDIATE: two processes creating the schema at once must not both decide to.
            conn.execute_batch("BEGIN IMMEDIATE")?;
            let created = (|| -> rusqlite::Result<()> {
                let again: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
                if again == 0 {
                    conn.execute_batch(SCHEMA)?;
                    conn.execute(
                        "INSERT INTO meta(key, value) VALUES ('repository', ?1)",
                        [repo_id],
                    )?;
                    conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
                }
                Ok(())
            })();
            match created {
                Ok(()) => conn.execute_batch("COMMIT")?,
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    return Err(e.into());
                }
            }
        }
        let owner: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'repository'", [], |r| {
                r.get(0)
            })
            .optional()?;
        if owner.as_deref() != Some(repo_id) {
            return Ok(None);
        }
        Ok(Some(Index { conn }))
    }

    /// True once the index has been filled from the repository (a fresh, empty file is not).
    pub fn is_complete(&self) -> Result<bool> {
        Ok(self
            .conn
            .query_row("SELECT 1 FROM meta WHERE key = 'complete'", [], |_| Ok(()))
            .optional()?
            .is_some())
    }

    pub fn mark_complete(&self) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('complete', '1')",
            [],
        )?;
        Ok(())
    }

    /// Replaces the whole content of the index in one IMMEDIATE transaction, so that other
    /// processes with the index open keep a valid connection and see either the old content or
    /// the new. `fill` inserts the new rows. Unless `force`, an index that another process
    /// completed meanwhile is left alone (returns false).
    pub fn refill(
        &self,
        repo_id: &str,
        force: bool,
        fill: impl FnOnce(&Index) -> Result<()>,
    ) -> Result<bool> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let result = (|| -> Result<bool> {
            let version: i64 = self
                .conn
                .pragma_query_value(None, "user_version", |r| r.get(0))?;
            if version != SCHEMA_VERSION {
                // An older (or never created) schema: replace it, still in this transaction.
                self.conn.execute_batch(
                    "DROP TABLE IF EXISTS blobs; DROP TABLE IF EXISTS packs;
                     DROP TABLE IF EXISTS snapshots; DROP TABLE IF EXISTS meta;",
                )?;
                self.conn.execute_batch(SCHEMA)?;
                self.conn
                    .pragma_update(None, "user_version", SCHEMA_VERSION)?;
            } else if !force && self.is_complete()? {
                return Ok(false);
            }
            self.conn.execute_batch(
                "DELETE FROM blobs; DELETE FROM packs; DELETE FROM snapshots; DELETE FROM meta;",
            )?;
            self.conn.execute(
                "INSERT INTO meta(key, value) VALUES ('repository', ?1)",
                [repo_id],
            )?;
            fill(self)?;
            self.mark_complete()?;
            Ok(true)
        })();
        match result {
            Ok(done) => {
                self.conn.execute_batch("COMMIT")?;
                Ok(done)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Opens the index file whatever repository it claims to belong to (for a rebuild).
    pub fn open_any(path: &Path, repo_id: &str) -> Result<Index> {
        match Index::open(path, repo_id)? {
            Some(index) => Ok(index),
            None => {
                let conn = Connection::open(path)?;
                conn.busy_timeout(Duration::from_secs(120))?;
                Ok(Index { conn })
            }
        }
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    pub fn contains(&self, id: &Id) -> Result<bool> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM blobs WHERE id = ?1")?;
        Ok(stmt.exists([&id.0[..]])?)
    }

    pub fn locate(&self, id: &Id) -> Result<Option<BlobLocation>> {
        // Two single-table statements rather than a join: SQLite re-prepares a cached join
        // statement on every use (see `locator`), which cost a fifth of restore's CPU.
        let mut by_id = self.conn.prepare_cached(BLOB_BY_ID)?;
        let mut pack_id = self.conn.prepare_cached(PACK_ID)?;
        locate_with(&mut by_id, id, |pack_no| pack_id_of(&mut pack_id, pack_no))
    }

    /// Runs `f`, which reads the index (and may write temp tables), in one read transaction:
    /// SQLite then takes its WAL read lock once instead of once per query (two `fcntl` calls and
    /// an `fstat` each). Inside a transaction already, `f` just runs in it.
    pub fn in_read_transaction<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        if !self.conn.is_autocommit() {
            return f();
        }
        self.conn.execute_batch("BEGIN")?;
        let result = f();
        // Nothing was written: ending the transaction either way only releases the lock.
        let ended = self
            .conn
            .execute_batch(if result.is_ok() { "COMMIT" } else { "ROLLBACK" });
        let value = result?;
        ended?;
        Ok(value)
    }

    /// A lookup for many blobs in a row (a restore). `locate` is a cached statement joined with
    /// `packs`: SQLite marks such a statement for re-preparation whenever its bindings are cleared,
    /// which rusqlite's statement cache does on every use, so each `locate` parses and plans its
    /// query again. The locator keeps one single-table statement bound for its whole life and
    /// maps pack numbers to ids itself.
    pub fn locator(&self) -> Result<BlobLocator<'_>> {
        Ok(BlobLocator {
            by_id: self.conn.prepare(BLOB_BY_ID)?,
            pack_id: self.conn.prepare(PACK_ID)?,
            packs: std::collections::HashMap::new(),
        })
    }

    /// Records a durable pack and its blobs in one transaction. A blob already indexed in
    /// another pack keeps its old location (the new copy is unreferenced and gc reclaims it).
    pub fn add_pack(&self, pack: &Id, size: u64, entries: &[PackEntry]) -> Result<()> {
        if !self.conn.is_autocommit() {
            // Already inside a transaction (a refill): just add the rows.
            return insert_pack(&self.conn, pack, size, entries);
        }
        let tx = self.conn.unchecked_transaction()?;
        insert_pack(&tx, pack, size, entries)?;
        tx.commit()?;
        Ok(())
    }

    /// Adds a pack's rows in a transaction that is committed (other processes see it, and it
    /// survives the process being killed) but not yet made durable: no fsync. A power loss may
    /// drop it, which is the same as never having indexed the pack: the pack is only an
    /// unreferenced file then. Whoever writes a manifest relying on these rows must `sync` first.
    pub fn add_pack_deferred(&self, pack: &Id, size: u64, entries: &[PackEntry]) -> Result<()> {
        if !self.conn.is_autocommit() {
            return insert_pack(&self.conn, pack, size, entries);
        }
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        let added = self.add_pack(pack, size, entries);
        let restored = self.conn.pragma_update(None, "synchronous", "FULL");
        added?;
        restored?;
        Ok(())
    }

    /// Makes every committed transaction durable, this process's deferred ones and any other
    /// process's: the WAL is one file, so the fsync of a FULL commit covers every frame before
    /// it. The commit bumps a counter in `meta` only to have something to commit: SQLite
    /// writes (and syncs) nothing for a transaction that leaves every page as it was.
    pub fn sync(&self) -> Result<()> {
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES ('syncs', '1')
             ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
            [],
        )?;
        Ok(())
    }

    pub fn add_snapshot(&self, row: &SnapshotRow) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO snapshots(id, time_ns, kind, source, bytes, manifest)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                &row.id.0[..],
                row.time_ns,
                row.kind,
                row.source,
                sql_i64(row.bytes),
                row.manifest
            ],
        )?;
        Ok(())
    }

    pub fn remove_snapshot(&self, id: &Id) -> Result<()> {
        self.conn
            .execute("DELETE FROM snapshots WHERE id = ?1", [&id.0[..]])?;
        Ok(())
    }

    pub fn snapshot_ids(&self) -> Result<Vec<Id>> {
        let mut stmt = self.conn.prepare("SELECT id FROM snapshots")?;
        let ids = stmt
            .query_map([], |r| r.get::<_, Vec<u8>>(0))?
            .filter_map(|r| r.ok().and_then(|b| Id::from_slice(&b)))
            .collect();
        Ok(ids)
    }

    /// Snapshots ordered by time, oldest first.
    pub fn snapshots(&self) -> Result<Vec<SnapshotRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, time_ns, kind, source, bytes, manifest FROM snapshots ORDER BY time_ns, id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, Vec<u8>>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, time_ns, kind, source, bytes, manifest) = row?;
            let id = Id::from_slice(&id)
                .ok_or_else(|| Error::corrupt("index", "snapshot row with a bad id"))?;
            out.push(SnapshotRow {
                id,
                time_ns,
                kind,
                source,
                bytes: sql_u64(bytes),
                manifest,
            });
        }
        Ok(out)
    }

    pub fn totals(&self) -> Result<IndexTotals> {
        let (snapshots, logical): (i64, i64) = self.conn.query_row(
            "SELECT count(*), coalesce(sum(bytes), 0) FROM snapshots",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let (chunks, unique, stored_data): (i64, i64, i64) = self.conn.query_row(
            "SELECT count(*), coalesce(sum(raw_len), 0), coalesce(sum(stored_len), 0)
             FROM blobs WHERE kind = 0",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let (trees, stored_tree): (i64, i64) = self.conn.query_row(
            "SELECT count(*), coalesce(sum(stored_len), 0) FROM blobs WHERE kind = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let (packs, pack_bytes): (i64, i64) = self.conn.query_row(
            "SELECT count(*), coalesce(sum(size), 0) FROM packs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(IndexTotals {
            snapshots: sql_u64(snapshots),
            logical_bytes: sql_u64(logical),
            unique_bytes: sql_u64(unique),
            stored_blob_bytes: sql_u64(stored_data + stored_tree),
            stored_tree_bytes: sql_u64(stored_tree),
            chunks: sql_u64(chunks),
            tree_blobs: sql_u64(trees),
            packs: sql_u64(packs),
            pack_bytes: sql_u64(pack_bytes),
        })
    }

    /// Packs known to the index with their recorded sizes.
    pub fn packs(&self) -> Result<Vec<(Id, u64)>> {
        let mut stmt = self.conn.prepare("SELECT id, size FROM packs")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, size) = row?;
            let id = Id::from_slice(&id).ok_or_else(|| Error::corrupt("index", "bad pack id"))?;
            out.push((id, sql_u64(size)));
        }
        Ok(out)
    }
}

/// Blob locations by id through statements prepared once (see `Index::locator`).
pub struct BlobLocator<'c> {
    by_id: rusqlite::Statement<'c>,
    pack_id: rusqlite::Statement<'c>,
    packs: std::collections::HashMap<i64, Id>,
}

impl BlobLocator<'_> {
    pub fn locate(&mut self, id: &Id) -> Result<Option<BlobLocation>> {
        let (packs, pack_id) = (&mut self.packs, &mut self.pack_id);
        locate_with(&mut self.by_id, id, |pack_no| {
            if let Some(pack) = packs.get(&pack_no) {
                return Ok(Some(*pack));
            }
            let pack = pack_id_of(pack_id, pack_no)?;
            if let Some(pack) = pack {
                packs.insert(pack_no, pack);
            }
            Ok(pack)
        })
    }
}

pub(crate) fn insert_pack(
    tx: &Connection,
    pack: &Id,
    size: u64,
    entries: &[PackEntry],
) -> Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO packs(id, size, blob_count) VALUES (?1, ?2, ?3)",
        params![&pack.0[..], sql_i64(size), entries.len() as i64],
    )?;
    let pack_no: i64 = tx.query_row(
        "SELECT pack_no FROM packs WHERE id = ?1",
        [&pack.0[..]],
        |r| r.get(0),
    )?;
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO blobs(id, pack_no, offset, stored_len, raw_len, kind, compression,
                                     frame_len, frame_skip, frame_raw)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for e in entries {
        // `stored_len` holds the blob's share of the pack (what sums and gc count); a blob in a
        // shared frame also records what to read and where it sits in the frame.
        stmt.execute(params![
            &e.id.0[..],
            pack_no,
            sql_i64(e.offset),
            sql_i64(e.stored_share()),
            e.raw_len,
            e.kind as u8,
            e.compression as u8,
            e.frame.map(|_| e.stored_len),
            e.frame.map(|f| f.skip),
            e.frame.map(|f| f.raw_len),
        ])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_rows_and_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(&dir.path().join("i.sqlite"), "r1")
            .unwrap()
            .unwrap();
        let e = |n: u8, off| PackEntry {
            id: Id::of(&[n]),
            kind: BlobKind::Data,
            compression: Compression::None,
            offset: off,
            stored_len: 4,
            raw_len: 4,
            frame: None,
        };
        let p1 = Id::of(b"p1");
        let p2 = Id::of(b"p2");
        idx.add_pack(&p1, 100, &[e(1, 8), e(2, 12)]).unwrap();
        idx.add_pack(&p2, 100, &[e(2, 8)]).unwrap();
        let loc = idx.locate(&Id::of(&[2])).unwrap().unwrap();
        assert_eq!(loc.pack, p1, "first copy keeps its location");
        assert_eq!(loc.offset, 12);
        assert!(idx.locate(&Id::of(&[3])).unwrap().is_none());
        let t = idx.totals().unwrap();
        assert_eq!((t.chunks, t.packs, t.unique_bytes), (2, 2, 8));
        drop(idx);
        // Bound to its repository: another repository id means "rebuild".
        assert!(
            Index::open(&dir.path().join("i.sqlite"), "r2")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn deferred_commits_are_visible_and_leave_full_sync_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.sqlite");
        let idx = Index::open(&path, "r1").unwrap().unwrap();
        let entry = PackEntry {
            id: Id::of(b"blob"),
            kind: BlobKind::Data,
            compression: Compression::None,
            offset: 8,
            stored_len: 4,
            raw_len: 4,
            frame: None,
        };
        idx.add_pack_deferred(&Id::of(b"p"), 100, &[entry]).unwrap();
        let synchronous = |i: &Index| -> i64 {
            i.conn
                .pragma_query_value(None, "synchronous", |r| r.get(0))
                .unwrap()
        };
        assert_eq!(synchronous(&idx), 2, "later commits are FULL again");
        // Committed: another connection (another process) sees it before any sync.
        let other = Index::open(&path, "r1").unwrap().unwrap();
        assert!(other.contains(&Id::of(b"blob")).unwrap());
        other.sync().unwrap();
        idx.sync().unwrap();
        assert_eq!(idx.totals().unwrap().chunks, 1);
        let syncs: String = other
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'syncs'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(
            syncs, "2",
            "each sync commits a change (else SQLite would not fsync)"
        );
    }

    #[test]
    fn locator_agrees_with_locate() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(&dir.path().join("i.sqlite"), "r1")
            .unwrap()
            .unwrap();
        let e = |n: u8, off, frame| PackEntry {
            id: Id::of(&[n]),
            kind: BlobKind::Data,
            compression: Compression::Zstd,
            offset: off,
            stored_len: 40,
            raw_len: 4,
            frame,
        };
        let shared = Some(Frame {
            skip: 4,
            raw_len: 8,
        });
        idx.add_pack(&Id::of(b"p1"), 100, &[e(1, 8, None), e(2, 48, shared)])
            .unwrap();
        idx.add_pack(&Id::of(b"p2"), 100, &[e(3, 8, None), e(1, 48, None)])
            .unwrap();
        let found = idx
            .in_read_transaction(|| {
                let mut locator = idx.locator()?;
                // Nested: runs inside the outer transaction.
                idx.in_read_transaction(|| {
                    [1u8, 2, 3, 4]
                        .iter()
                        .map(|n| locator.locate(&Id::of(&[*n])))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .unwrap();
        for (n, loc) in (1u8..).zip(&found) {
            assert_eq!(*loc, idx.locate(&Id::of(&[n])).unwrap(), "blob {n}");
        }
        assert_eq!(found[0].unwrap().pack, Id::of(b"p1"));
        assert_eq!(found[1].unwrap().frame, shared);
        assert_eq!(found[2].unwrap().pack, Id::of(b"p2"));
        assert!(found[3].is_none());
        assert!(idx.conn().is_autocommit(), "the transaction ended");
        let failed: Result<()> = idx.in_read_transaction(|| Err(Error::Invalid("stop".into())));
        assert!(failed.is_err());
        assert!(idx.conn().is_autocommit(), "ended after a failure too");
    }
}
