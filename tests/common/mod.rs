//! Helpers shared by the integration test binaries: a temporary repository driven through the
//! real `cairn` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub struct TestRepo {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
}

pub fn cairn_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cairn")
}

impl TestRepo {
    pub fn new() -> TestRepo {
        TestRepo::with_args(&[])
    }

    pub fn with_args(init_args: &[&str]) -> TestRepo {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let t = TestRepo { dir, repo };
        let mut args = vec!["repo", "init"];
        args.extend_from_slice(init_args);
        t.ok(&args);
        t
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(cairn_bin());
        c.arg("-r")
            .arg(&self.repo)
            .args(args)
            .env_remove("CAIRN_REPO");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "cairn {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// Snapshots `bytes` as a tar stream from a file; returns the snapshot id.
    pub fn snapshot_bytes(&self, bytes: &[u8], source: &str) -> String {
        let f = self.path(&format!("input-{source}-{}", blake3::hash(bytes).to_hex()));
        std::fs::write(&f, bytes).unwrap();
        let v = self.json(&["snapshot", "tar", f.to_str().unwrap(), "--source", source]);
        std::fs::remove_file(&f).unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    pub fn snapshot_ids(&self) -> Vec<String> {
        self.json(&["snapshots"])
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Restores a snapshot to a file and returns its bytes (panics on failure).
    pub fn restore(&self, id: &str) -> Vec<u8> {
        let out = self.path(&format!("restored-{id}"));
        self.ok(&["restore", id, "--output", out.to_str().unwrap()]);
        let bytes = std::fs::read(&out).unwrap();
        std::fs::remove_file(&out).unwrap();
        bytes
    }

    pub fn pack_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for d in std::fs::read_dir(self.repo.join("packs")).unwrap() {
            for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
                out.push(f.unwrap().path());
            }
        }
        out.sort();
        out
    }

    pub fn stored_bytes(&self) -> u64 {
        self.json(&["repo", "stats"])["stored_bytes"]
            .as_u64()
            .unwrap()
    }
}

/// Deterministic pseudo-random bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut v);
    v
}

/// Compressible, text-like bytes.
pub fn text(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "volume",
        "container",
        "snapshot",
        "restore",
        "chunk",
        "pack",
        "index",
        "layer",
        "image",
        "daemon",
        "socket",
        "config",
        "mount",
        "label",
        "engine",
        "cairn",
    ];
    let n = noise(len / 4 + 16, seed);
    let mut out = Vec::with_capacity(len + 16);
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(WORDS[(n[i % n.len()] % 16) as usize].as_bytes());
        out.push(if n[(i + 1) % n.len()].is_multiple_of(9) {
            b'\n'
        } else {
            b' '
        });
        i += 1;
    }
    out.truncate(len);
    out
}

pub fn assert_no_panic(out: &Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "panic: {err}");
}

pub fn flip_byte(path: &Path, offset: u64) {
    let mut b = std::fs::read(path).unwrap();
    let i = offset as usize % b.len();
    b[i] ^= 0x40;
    std::fs::write(path, b).unwrap();
}
