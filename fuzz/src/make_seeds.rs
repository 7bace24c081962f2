//! Writes the seed corpora under `seeds/<target>/` from real encodings made by the library.
//!
//! Usage: `make_seeds TAR_DIR OUT_DIR`, where TAR_DIR holds tar archives (made by GNU tar, see
//! `make_seeds.sh`). They seed `tarscan` and `chunk_restore` as they are; a repository built
//! from them supplies real pack tables, tree nodes, manifests, a config and member indexes.

use cairn::format::config::{self, ChunkerAlgorithm, ChunkerParams};
use cairn::format::manifest;
use cairn::format::pack::TRAILER_LEN;
use cairn::format::tree::{ChildRef, TreeNode};
use cairn::format::varint;
use cairn::members::MemberIndexEncoder;
use cairn::progress::Silent;
use cairn::tarscan::TarScanner;
use cairn::{Id, InitOptions, Repo, SnapshotSpec, StreamInput};
use std::fs;
use std::path::{Path, PathBuf};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [tar_dir, out] = args.as_slice() else {
        return Err("usage: make_seeds TAR_DIR OUT_DIR".into());
    };
    let tars = read_tars(tar_dir)?;
    let seeds = Seeds { out: out.clone() };
    tar_seeds(&seeds, &tars)?;
    varint_seeds(&seeds)?;
    tree_seeds(&seeds)?;
    repository_seeds(&seeds, &tars)?;
    Ok(())
}

struct Seeds {
    out: PathBuf,
}

impl Seeds {
    fn write(&self, target: &str, name: &str, bytes: &[u8]) -> Res<()> {
        let dir = self.out.join(target);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(name), bytes)?;
        Ok(())
    }
}

fn read_tars(dir: &Path) -> Res<Vec<(String, Vec<u8>)>> {
    let mut tars = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        tars.push((name, fs::read(&path)?));
    }
    tars.sort();
    Ok(tars)
}

/// Tar archives as they are, and their member indexes.
fn tar_seeds(seeds: &Seeds, tars: &[(String, Vec<u8>)]) -> Res<()> {
    for (name, tar) in tars {
        // tarscan input: split:u16 | mode:u8 | stream; split inside the first header, 64-byte
        // pieces, checksums as written.
        let mut input = vec![200, 0, 63];
        input.extend_from_slice(tar);
        seeds.write("tarscan", name, &input)?;
        seeds.write("chunk_restore", name, tar)?;

        let mut scanner = TarScanner::new();
        let mut members = Vec::new();
        scanner.feed(tar, &mut members);
        let mut index = vec![7]; // member_index input: read_size:u8 | index
        let mut encoder = MemberIndexEncoder::new(&mut index);
        for m in &members {
            encoder.encode(m, &mut index)?;
        }
        seeds.write("member_index", name, &index)?;
    }
    let noise: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    seeds.write("chunk_restore", "noise", &noise)?;
    seeds.write("chunk_restore", "zero_length", &[])?;
    Ok(())
}

fn varint_seeds(seeds: &Seeds) -> Res<()> {
    for v in [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX] {
        let mut bytes = Vec::new();
        varint::put(v, &mut bytes);
        seeds.write("varint", &format!("v{v}"), &bytes)?;
    }
    Ok(())
}

fn tree_seeds(seeds: &Seeds) -> Res<()> {
    let child = |i: u32, len: u64| ChildRef {
        id: Id::of(&i.to_le_bytes()),
        len,
    };
    let nodes = [
        TreeNode {
            level: 0,
            children: vec![],
        },
        TreeNode {
            level: 0,
            children: vec![child(1, 65536), child(2, 100), child(3, 0)],
        },
        TreeNode {
            level: 3,
            children: vec![child(4, 1 << 40), child(5, u64::MAX - (1 << 40))],
        },
    ];
    for (i, node) in nodes.iter().enumerate() {
        seeds.write("tree_node", &format!("node{i}"), &node.encode())?;
    }
    Ok(())
}

/// Snapshots the tars into a repository and takes its files apart.
fn repository_seeds(seeds: &Seeds, tars: &[(String, Vec<u8>)]) -> Res<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("repo");
    let opts = InitOptions {
        chunker: ChunkerParams {
            algorithm: ChunkerAlgorithm::FastCdc2020,
            min_size: 64,
            avg_size: 256,
            max_size: 1024,
            normalization: 1,
            page_align: true,
            member_group: None,
        },
        zstd_level: 3,
        pack_size: 1 << 16,
    };
    let repo = Repo::init(&path, &opts)?;
    seeds.write("config", "small_chunks", &fs::read(path.join("config"))?)?;
    seeds.write("config", "default", &config::encode(repo.config()))?;
    let mut default_cfg = repo.config().clone();
    default_cfg.chunker = cairn::repo::DEFAULT_CHUNKER;
    seeds.write("config", "default_chunker", &config::encode(&default_cfg))?;

    let spec = SnapshotSpec {
        kind: "tar".into(),
        source: "seeds".into(),
        tags: vec!["seed".into()],
        note: Some("made by make_seeds".into()),
        meta: serde_json::json!({"driver": "local", "labels": {"a": "b"}, "n": 1.5}),
    };
    let inputs = tars
        .iter()
        .map(|(name, tar)| StreamInput {
            name: name.clone(),
            role: "tar".into(),
            reader: Box::new(&tar[..]),
        })
        .collect();
    let outcome = repo.snapshot(spec, inputs, &Silent)?;
    let plain = repo.snapshot(SnapshotSpec::default(), vec![], &Silent)?;
    for (name, id) in [("with_members", outcome.id), ("empty", plain.id)] {
        let bytes = fs::read(repo.layout().snapshot(&id))?;
        manifest::decode(&bytes)?;
        seeds.write("manifest", name, &bytes)?;
    }
    pack_seeds(seeds, &repo)?;
    tree_node_seeds(seeds, &repo, &outcome.manifest)?;
    Ok(())
}

/// pack_table input: flags:u8 | pack_len:u64 LE | table ++ trailer, from real packs.
fn pack_seeds(seeds: &Seeds, repo: &Repo) -> Res<()> {
    let mut packs = repo.layout().list_packs()?;
    packs.sort_by_key(|(_, size)| *size);
    for (i, (id, size)) in packs.iter().take(3).enumerate() {
        let bytes = fs::read(repo.layout().pack(id))?;
        let file = fs::File::open(repo.layout().pack(id))?;
        let entries = cairn::pack::read_table(&file, *size, id)?;
        let tail_len = entries.len() * cairn::format::pack::ENTRY_LEN + TRAILER_LEN;
        let tail = &bytes[bytes.len() - tail_len..];
        for flags in [0u8, 2] {
            let mut input = vec![flags];
            input.extend_from_slice(&size.to_le_bytes());
            input.extend_from_slice(tail);
            seeds.write("pack_table", &format!("pack{i}_flags{flags}"), &input)?;
        }
    }
    Ok(())
}

/// Root nodes of the snapshot's streams, as stored.
fn tree_node_seeds(seeds: &Seeds, repo: &Repo, m: &manifest::Manifest) -> Res<()> {
    for (i, s) in m.streams.iter().take(4).enumerate() {
        let node = repo.read_blob(&s.root)?;
        seeds.write("tree_node", &format!("root{i}"), &node)?;
    }
    Ok(())
}
