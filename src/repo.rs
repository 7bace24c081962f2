//! Opening and creating repositories; the handle every operation works through.

use crate::blobs::PackFiles;
use crate::error::{Error, IoContext, Result};
use crate::format::config::{
    self, ChunkerAlgorithm, ChunkerParams, CompressionAlgorithm, CompressionParams, Config,
};
use crate::format::manifest::{self, Manifest};
use crate::format::tree::TreeNode;
use crate::id::Id;
use crate::index::{Index, SnapshotRow};
use crate::store::{self, Layout};
use crate::tree::NodeSource;
use std::collections::HashSet;
use std::fs;
use std::path::Path;

/// Chunker defaults, chosen by measurement (format-spec/measurements.md).
pub const DEFAULT_CHUNKER: ChunkerParams = ChunkerParams {
    algorithm: ChunkerAlgorithm::FastCdc2020,
    min_size: 16 * 1024,
    avg_size: 64 * 1024,
    max_size: 256 * 1024,
    normalization: 1,
    page_align: true,
    member_group: Some(DEFAULT_MEMBER_GROUP),
};
/// Small tar members are grouped into chunks of about this size (format-spec/measurements.md).
pub const DEFAULT_MEMBER_GROUP: u32 = 4 * 1024;
pub const DEFAULT_PACK_SIZE: u64 = 16 << 20;
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
pub const DEFAULT_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

const README: &str = "This directory is a cairn repository: a content-addressed, deduplicating
store of snapshots. Do not edit files in it by hand.

config          format version and parameters (JSON)
packs/XX/<id>   pack files: compressed blobs followed by a table (see format-spec/pack.md)
snapshots/<id>  snapshot manifests (JSON); id = BLAKE3 of the file
index.sqlite    index of blobs, packs and snapshots; derived, rebuild with `cairn repo rebuild-index`
locks/          lock files of running cairn processes
tmp/            files being written
";

/// Options for `repo init`.
#[derive(Clone, Debug)]
pub struct InitOptions {
    pub chunker: ChunkerParams,
    pub zstd_level: i32,
    pub pack_size: u64,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: DEFAULT_CHUNKER,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            pack_size: DEFAULT_PACK_SIZE,
        }
    }
}

pub struct Repo {
    pub(crate) layout: Layout,
    pub(crate) config: Config,
    pub(crate) index: Index,
    pub(crate) packs: PackFiles,
    /// How long to wait for a conflicting lock before giving up.
    pub(crate) lock_wait: std::time::Duration,
}

impl Repo {
    pub fn init(path: &Path, opts: &InitOptions) -> Result<Repo> {
        let layout = Layout::new(path);
        if layout.config().exists() {
            return Err(Error::AlreadyExists {
                path: path.to_path_buf(),
            });
        }
        if path.exists() && fs::read_dir(path).at(path)?.next().is_some() {
            return Err(Error::Invalid(format!(
                "{} exists and is not empty; choose an empty or new directory",
                path.display()
            )));
        }
        let mut id = [0u8; 16];
        let seed = format!(
            "{:?}{}{}",
            std::time::SystemTime::now(),
            std::process::id(),
            path.display()
        );
        blake3::Hasher::new()
            .update(seed.as_bytes())
            .finalize_xof()
            .fill(&mut id);
        let cfg = Config {
            format: config::FORMAT_NAME.into(),
            version: config::VERSION,
            id: hex::encode(id),
            created: crate::time::now_rfc3339(),
            chunker: opts.chunker,
            compression: CompressionParams {
                algorithm: CompressionAlgorithm::Zstd,
                level: opts.zstd_level,
            },
            pack_size: opts.pack_size,
        };
        cfg.chunker.validate().map_err(|e| Error::Invalid(e.0))?;
        // Only now that the parameters are known to be valid does anything touch the disk.
        fs::create_dir_all(path).at(path)?;
        layout.create_dirs()?;
        store::write_atomic(&layout, &layout.readme(), README.as_bytes())?;
        // The config is written last: a directory without one is not (yet) a repository.
        store::write_atomic(&layout, &layout.config(), &config::encode(&cfg))?;
        Repo::open(path)
    }

    /// Opens a repository whose exclusive lock the caller already holds (repair), so that a
    /// missing index is rebuilt without taking the lock again.
    pub(crate) fn open_unlocked_for_repair(path: &Path) -> Result<Repo> {
        Repo::open(path)
    }

    pub fn open(path: &Path) -> Result<Repo> {
        let layout = Layout::new(path);
        let config_path = layout.config();
        let bytes = match fs::read(&config_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotARepository(path.to_path_buf()));
            }
            Err(e) => return Err(Error::io(config_path, e)),
        };
        layout.restore_work_dirs();
        let cfg = match config::decode(&bytes).map_err(|e| Error::corrupt("config", e.0))? {
            config::Decoded::Ok(c) if c.version < config::VERSION => upgrade_config(&layout, c),
            config::Decoded::Ok(c) => c,
            config::Decoded::Newer { found } => {
                return Err(Error::NewerFormat {
                    found,
                    supported: config::VERSION,
                });
            }
        };
        let index = match open_index(&layout, &cfg)? {
            Some(index) => index,
            None => {
                // No repository lock: the rebuild is one SQLite transaction in place, and a
                // process that finds the index completed by another meanwhile keeps it.
                crate::rebuild::rebuild_index(&layout, &cfg, false)?;
                open_index(&layout, &cfg)?
                    .ok_or_else(|| Error::corrupt("index", "still unusable after a rebuild"))?
            }
        };
        let repo = Repo {
            lock_wait: DEFAULT_LOCK_WAIT,
            packs: PackFiles::new(layout.clone()),
            layout,
            config: cfg,
            index,
        };
        repo.sync_snapshots()?;
        Ok(repo)
    }

    pub fn set_lock_wait(&mut self, wait: std::time::Duration) {
        self.lock_wait = wait;
    }

    pub fn lock(
        &self,
        kind: crate::lock::LockKind,
        operation: &str,
    ) -> Result<crate::lock::RepoLock> {
        crate::lock::RepoLock::acquire(&self.layout, kind, operation, self.lock_wait)
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn packs(&self) -> &PackFiles {
        &self.packs
    }

    /// Brings the index's snapshot rows in line with the manifests on disk: other processes
    /// add and remove manifests, and a crash can fall between writing a manifest and indexing
    /// it. Costs one directory listing.
    fn sync_snapshots(&self) -> Result<()> {
        let on_disk: HashSet<Id> = self.layout.list_snapshots()?.into_iter().collect();
        let indexed: HashSet<Id> = self.index.snapshot_ids()?.into_iter().collect();
        for id in on_disk.difference(&indexed) {
            // A manifest that does not parse is left to `repo check`; it is not listed.
            if let Ok(m) = self.read_manifest(id) {
                self.index
                    .add_snapshot(&snapshot_row(*id, &m, self.manifest_bytes(id)?)?)?;
            }
        }
        for id in indexed.difference(&on_disk) {
            self.index.remove_snapshot(id)?;
        }
        Ok(())
    }

    fn manifest_bytes(&self, id: &Id) -> Result<Vec<u8>> {
        let path = self.layout.snapshot(id);
        fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NoSuchSnapshot(id.to_hex())
            } else {
                Error::io(path, e)
            }
        })
    }

    /// Reads a manifest from disk and checks it against its id.
    pub fn read_manifest(&self, id: &Id) -> Result<Manifest> {
        let bytes = self.manifest_bytes(id)?;
        decode_manifest(id, &bytes)
    }

    /// All snapshots, oldest first, from the index.
    pub fn snapshots(&self) -> Result<Vec<(Id, Manifest)>> {
        let mut out = Vec::new();
        for row in self.index.snapshots()? {
            let m = manifest::decode(&row.manifest)
                .map_err(|e| Error::corrupt(format!("indexed manifest {}", row.id), e.0))?;
            out.push((row.id, m));
        }
        Ok(out)
    }

    /// Resolves a full id, a unique prefix of at least 8 hex digits, or `latest`.
    pub fn resolve_snapshot(&self, spec: &str) -> Result<(Id, Manifest)> {
        let rows = self.index.snapshots()?;
        let row = if spec == "latest" {
            rows.last().ok_or_else(|| {
                Error::NoSuchSnapshot("latest (the repository has no snapshots)".into())
            })?
        } else {
            let spec_lc = spec.to_ascii_lowercase();
            if spec_lc.len() < 8
                || spec_lc.len() > 64
                || !spec_lc.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(Error::Invalid(format!(
                    "snapshot {spec:?}: give a full id, at least 8 hex digits of one, or `latest`"
                )));
            }
            let matches: Vec<&SnapshotRow> = rows
                .iter()
                .filter(|r| r.id.to_hex().starts_with(&spec_lc))
                .collect();
            match matches.len() {
                0 => return Err(Error::NoSuchSnapshot(spec.to_string())),
                1 => matches[0],
                n => return Err(Error::AmbiguousSnapshot(spec.to_string(), n)),
            }
        };
        let m = self.read_manifest(&row.id)?;
        Ok((row.id, m))
    }

    pub fn locate(&self, id: &Id) -> Result<crate::index::BlobLocation> {
        self.index.locate(id)?.ok_or(Error::MissingBlob(*id))
    }

    pub fn read_blob(&self, id: &Id) -> Result<Vec<u8>> {
        let loc = self.locate(id)?;
        self.packs.read_blob(id, &loc)
    }
}

impl NodeSource for Repo {
    fn read_node(&self, id: &Id) -> Result<TreeNode> {
        let loc = self.locate(id)?;
        self.packs.read_node(id, &loc)
    }
}

/// Marks an older repository as the current version (see `config::VERSION`), so that older
/// binaries refuse it from now on. A read-only repository stays as it is: reading it is safe,
/// and writing to it fails anyway.
fn upgrade_config(layout: &Layout, mut cfg: Config) -> Config {
    cfg.version = config::VERSION;
    let _ = store::write_atomic(layout, &layout.config(), &config::encode(&cfg));
    cfg
}

fn open_index(layout: &Layout, cfg: &Config) -> Result<Option<Index>> {
    let path = layout.index();
    if !path.exists() {
        return Ok(None);
    }
    match Index::open(&path, &cfg.id) {
        Ok(Some(index)) if index.is_complete()? => Ok(Some(index)),
        Ok(_) => Ok(None),
        Err(Error::Index(e)) => Err(Error::corrupt(
            "index.sqlite",
            format!("{e}; run `cairn repo rebuild-index`"),
        )),
        Err(e) => Err(e),
    }
}

pub(crate) fn decode_manifest(id: &Id, bytes: &[u8]) -> Result<Manifest> {
    if Id::of(bytes) != *id {
        return Err(Error::corrupt(
            format!("snapshot {id}"),
            "manifest does not match its id",
        ));
    }
    manifest::decode(bytes).map_err(|e| Error::corrupt(format!("snapshot {id}"), e.0))
}

pub(crate) fn snapshot_row(id: Id, m: &Manifest, bytes: Vec<u8>) -> Result<SnapshotRow> {
    let time_ns = crate::time::parse_rfc3339_ns(&m.time)
        .map_err(|_| Error::corrupt(format!("snapshot {id}"), "bad time"))?;
    Ok(SnapshotRow {
        id,
        time_ns: i64::try_from(time_ns).unwrap_or(i64::MAX),
        kind: m.kind.clone(),
        source: m.source.clone(),
        bytes: m.streams.iter().map(|s| s.length).sum(),
        manifest: bytes,
    })
}
