//! Broken-repository fixtures, one per `repo check` finding: what check reports, its exit code,
//! that repair / rebuild-index recovers everything intact, and that snapshots not touching the
//! damage still restore bit-exact.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// Three snapshots of unrelated, compressible data, so that each has packs of its own.
struct Fixture {
    t: TestRepo,
    ids: Vec<String>,
    inputs: Vec<Vec<u8>>,
    /// The data pack written by the second snapshot (the one the tests damage).
    victim_pack: PathBuf,
}

fn fixture() -> Fixture {
    let t = TestRepo::new();
    let mut ids = Vec::new();
    let mut inputs = Vec::new();
    let mut victim_pack = PathBuf::new();
    for i in 0..3u64 {
        let before: BTreeSet<PathBuf> = t.pack_files().into_iter().collect();
        let data = text(600_000, i);
        ids.push(t.snapshot_bytes(&data, &format!("src{i}")));
        inputs.push(data);
        if i == 1 {
            let new: Vec<PathBuf> = t
                .pack_files()
                .into_iter()
                .filter(|p| !before.contains(p))
                .collect();
            // The data pack is the largest new one (the other holds tree nodes).
            victim_pack = new
                .into_iter()
                .max_by_key(|p| std::fs::metadata(p).unwrap().len())
                .unwrap();
        }
    }
    Fixture {
        t,
        ids,
        inputs,
        victim_pack,
    }
}

fn check(t: &TestRepo, args: &[&str]) -> (i32, serde_json::Value) {
    let mut a = vec!["repo", "check", "--json"];
    a.extend_from_slice(args);
    let out = t.run(&a);
    assert_no_panic(&out);
    let code = out.status.code().unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (code, v)
}

fn damaged(v: &serde_json::Value) -> Vec<String> {
    v["damaged_snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

impl Fixture {
    fn assert_restores(&self, which: &[usize]) {
        for &i in which {
            assert_eq!(self.t.restore(&self.ids[i]), self.inputs[i], "snapshot {i}");
        }
    }

    fn victim_hex(&self) -> String {
        self.victim_pack
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    }

    /// Repair, then: the repository checks clean with --read-data and `keep` snapshots restore.
    fn repair_and_verify(&self, keep: &[usize]) {
        self.t.ok(&["repo", "repair"]);
        let (code, v) = check(&self.t, &["--read-data"]);
        assert_eq!(code, 0, "check after repair: {v}");
        self.assert_restores(keep);
        let listed = self.t.snapshot_ids();
        for &i in keep {
            assert!(listed.contains(&self.ids[i]));
        }
    }
}

#[test]
fn clean_repository_checks_clean() {
    let f = fixture();
    let (code, v) = check(&f.t, &["--read-data"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["ok"], true);
    assert!(v["packs_read"].as_u64().unwrap() >= 3);
}

#[test]
fn flipped_byte_inside_a_compressed_blob() {
    let f = fixture();
    flip_byte(&f.victim_pack, 200);
    // Structure alone cannot see it (the table is intact); reading the data does.
    let (code, _) = check(&f.t, &[]);
    assert_eq!(code, 0);
    let (code, v) = check(&f.t, &["--read-data"]);
    assert_eq!(code, 3, "{v}");
    assert_eq!(damaged(&v), vec![f.ids[1].clone()]);
    assert!(v["damaged_packs"].to_string().contains(&f.victim_hex()));
    // A restore touching it fails, names blob and pack, and leaves no file behind.
    let out_path = f.t.path("out.bin");
    let out =
        f.t.run(&["restore", &f.ids[1], "--output", out_path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("blob") && err.contains(&f.victim_hex()),
        "{err}"
    );
    assert!(
        !out_path.exists(),
        "a failed restore must not leave an output file"
    );
    f.assert_restores(&[0, 2]);
    f.repair_and_verify(&[0, 2]);
    assert!(
        !f.t.snapshot_ids().contains(&f.ids[1]),
        "repair removes the incomplete snapshot"
    );
    assert!(
        f.t.repo
            .join("quarantine/packs")
            .join(f.victim_hex())
            .exists(),
        "damaged pack kept aside"
    );
}

#[test]
fn flipped_byte_in_a_pack_table() {
    let f = fixture();
    let len = std::fs::metadata(&f.victim_pack).unwrap().len();
    flip_byte(&f.victim_pack, len - 48 - 20);
    let (code, v) = check(&f.t, &[]);
    assert_eq!(code, 3, "{v}");
    assert!(v["errors"].to_string().contains("table"), "{v}");
    assert!(v["damaged_packs"].to_string().contains(&f.victim_hex()));
    // The blobs themselves are intact: repair salvages every one of them.
    f.repair_and_verify(&[0, 1, 2]);
}

#[test]
fn truncated_pack() {
    let f = fixture();
    let len = std::fs::metadata(&f.victim_pack).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&f.victim_pack)
        .unwrap();
    file.set_len(len / 2).unwrap();
    let (code, v) = check(&f.t, &[]);
    assert_eq!(code, 3, "{v}");
    assert!(v["damaged_packs"].to_string().contains(&f.victim_hex()));
    f.assert_restores(&[0, 2]);
    f.repair_and_verify(&[0, 2]);
}

#[test]
fn missing_pack() {
    let f = fixture();
    std::fs::remove_file(&f.victim_pack).unwrap();
    let (code, v) = check(&f.t, &[]);
    assert_eq!(code, 3, "{v}");
    assert!(v["errors"].to_string().contains("missing"));
    assert_eq!(damaged(&v), vec![f.ids[1].clone()]);
    f.assert_restores(&[0, 2]);
    let out = f.t.run(&["restore", &f.ids[1], "--output", "-"]);
    assert_ne!(out.status.code(), Some(0));
    assert_no_panic(&out);
    f.repair_and_verify(&[0, 2]);
}

#[test]
fn missing_manifest_referenced_by_nothing() {
    let f = fixture();
    std::fs::remove_file(f.t.repo.join("snapshots").join(&f.ids[1])).unwrap();
    // The snapshot is simply gone; nothing else refers to it, so nothing is damaged.
    let (code, v) = check(&f.t, &["--read-data"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(f.t.snapshot_ids().len(), 2);
    f.assert_restores(&[0, 2]);
    // Its data is now garbage that gc reclaims.
    let before = f.t.stored_bytes();
    f.t.ok(&["repo", "gc"]);
    assert!(f.t.stored_bytes() < before);
    f.assert_restores(&[0, 2]);
}

#[test]
fn corrupt_manifest() {
    let f = fixture();
    let m = f.t.repo.join("snapshots").join(&f.ids[1]);
    let text = std::fs::read_to_string(&m).unwrap().replace("src1", "srcX");
    std::fs::write(&m, text).unwrap();
    let (code, v) = check(&f.t, &[]);
    assert_eq!(code, 3, "{v}");
    assert!(damaged(&v).contains(&f.ids[1]));
    let out = f.t.run(&["restore", &f.ids[1], "--output", "-"]);
    assert_eq!(out.status.code(), Some(3));
    f.repair_and_verify(&[0, 2]);
    assert!(
        f.t.repo
            .join("quarantine/snapshots")
            .join(&f.ids[1])
            .exists()
    );
}

#[test]
fn stale_index_row() {
    let f = fixture();
    {
        let conn = rusqlite::Connection::open(f.t.repo.join("index.sqlite")).unwrap();
        let n = conn
            .execute(
                "UPDATE blobs SET offset = offset + 1 WHERE rowid IN (SELECT rowid FROM blobs LIMIT 1)",
                [],
            )
            .or_else(|_| {
                conn.execute(
                    "UPDATE blobs SET offset = offset + 1 WHERE id = (SELECT id FROM blobs WHERE kind = 0 LIMIT 1)",
                    [],
                )
            })
            .unwrap();
        assert_eq!(n, 1);
    }
    let (code, v) = check(&f.t, &[]);
    assert_eq!(code, 3, "{v}");
    assert!(v["errors"].to_string().contains("stale index"), "{v}");
    f.t.ok(&["repo", "rebuild-index"]);
    let (code, v) = check(&f.t, &["--read-data"]);
    assert_eq!(code, 0, "{v}");
    f.assert_restores(&[0, 1, 2]);
}

#[test]
fn index_deleted() {
    let f = fixture();
    std::fs::remove_file(f.t.repo.join("index.sqlite")).unwrap();
    let _ = std::fs::remove_file(f.t.repo.join("index.sqlite-wal"));
    let _ = std::fs::remove_file(f.t.repo.join("index.sqlite-shm"));
    assert_eq!(f.t.snapshot_ids().len(), 3, "rebuilt automatically");
    let (code, v) = check(&f.t, &["--read-data"]);
    assert_eq!(code, 0, "{v}");
    f.assert_restores(&[0, 1, 2]);
}

#[test]
fn index_corrupted_or_truncated() {
    for damage in ["garbage", "empty"] {
        let f = fixture();
        let idx = f.t.repo.join("index.sqlite");
        let _ = std::fs::remove_file(f.t.repo.join("index.sqlite-wal"));
        let _ = std::fs::remove_file(f.t.repo.join("index.sqlite-shm"));
        match damage {
            "garbage" => std::fs::write(&idx, noise(50_000, 9)).unwrap(),
            _ => std::fs::write(&idx, b"").unwrap(),
        }
        let out = f.t.run(&["snapshots"]);
        assert_no_panic(&out);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("rebuild-index"), "{damage}: {err}");
        }
        f.t.ok(&["repo", "rebuild-index"]);
        let (code, v) = check(&f.t, &["--read-data"]);
        assert_eq!(code, 0, "{damage}: {v}");
        f.assert_restores(&[0, 1, 2]);
    }
}

#[test]
fn read_data_subsets_cover_every_pack_once() {
    let f = fixture();
    let total = f.t.pack_files().len() as u64;
    let mut sum = 0;
    for n in 1..=3 {
        let (code, v) = check(&f.t, &["--read-data-subset", &format!("{n}/3")]);
        assert_eq!(code, 0);
        sum += v["packs_read"].as_u64().unwrap();
    }
    assert_eq!(sum, total);
    let (_, v) = check(&f.t, &["--read-data-subset", "100%"]);
    assert_eq!(v["packs_read"].as_u64().unwrap(), total);
    let (_, v) = check(&f.t, &["--read-data-subset", "0%"]);
    assert_eq!(v["packs_read"].as_u64().unwrap(), 0);
    let out = f.t.run(&["repo", "check", "--read-data-subset", "4/3"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn verify_reports_damage_with_exit_3() {
    let f = fixture();
    assert!(f.t.ok(&["verify", &f.ids[1]]).contains("verified"));
    std::fs::remove_file(&f.victim_pack).unwrap();
    let out = f.t.run(&["verify", &f.ids[1], "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
}

/// Regression: `--output /dev/null` used to write a temporary file into /dev and rename it
/// over the device node.
#[test]
fn restore_to_a_device_writes_into_it_instead_of_replacing_it() {
    use std::os::unix::fs::FileTypeExt;
    let t = TestRepo::new();
    let id = t.snapshot_bytes(&noise(300_000, 5), "dev");
    t.ok(&["restore", &id, "--output", "/dev/null"]);
    assert!(
        std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device()
    );
    // A directory is refused rather than replaced.
    let dir = t.path("a-dir");
    std::fs::create_dir(&dir).unwrap();
    let out = t.run(&["restore", &id, "--output", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(dir.is_dir());
}
