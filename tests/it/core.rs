//! The main paths through the CLI: init, snapshot (tar file, stdin, directory), list, restore
//! (file, stdout, extract), dedup, concurrency and the rebuildable index.

use crate::util::*;
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::Stdio;

/// A multi-MB GNU tar of a varied tree; returns (tree dir, archive path).
fn sample_archive(t: &TestDir, seed: u64) -> (std::path::PathBuf, std::path::PathBuf) {
    let tree = t.join("tree");
    fs::create_dir_all(&tree).unwrap();
    build_sample_tree(&tree, seed, 40, 2 * MIB as u64);
    let archive = t.join("archive.tar");
    tar_dir(&tree, &archive, &["--format=gnu"]);
    (tree, archive)
}

#[test]
fn tar_snapshot_restores_bit_exact_and_extracts() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    let (tree, archive) = sample_archive(&t, 1);
    let input = fs::read(&archive).unwrap();
    assert!(
        input.len() > 2 * MIB,
        "the sample archive should be multi-MB"
    );

    let snap = repo.snapshot_file(&archive, &[]);
    assert_eq!(
        str_field(&snap, "source"),
        "archive.tar",
        "default source is the file name"
    );
    assert_eq!(str_field(&snap, "kind"), "tar");
    assert_eq!(u64_field(&snap, "bytes"), input.len() as u64);
    let id = str_field(&snap, "id");

    let list = repo.list();
    assert_eq!(list.len(), 1);
    assert_eq!(str_field(&list[0], "id"), id);
    let stream = &list[0]["streams"][0];
    assert_eq!(str_field(stream, "digest"), blake3_hex(&input));
    assert_eq!(u64_field(stream, "bytes"), input.len() as u64);

    let out_file = t.join("restored.tar");
    assert!(
        repo.restore_file(&id, &out_file) == input,
        "--output FILE differs from the input"
    );
    assert!(
        repo.restore_stdout(&id) == input,
        "--output - differs from the input"
    );

    let x = t.join("extracted");
    let out = repo.extract(&id, &x);
    assert_success(&out, "restore --extract");
    assert_same_tree(
        &tree,
        &x,
        Compare {
            dir_mtimes: false,
            owners: true,
        },
    );
}

/// GNU tar restores directory mtimes; `--extract` should too (it promises mtimes).
#[test]
fn extract_restores_directory_mtimes() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    let tree = t.join("tree");
    fs::create_dir_all(tree.join("a/b")).unwrap();
    fs::write(tree.join("a/b/f"), b"x").unwrap();
    set_tree_mtimes(&tree, 1_500_000_000);
    let archive = t.join("a.tar");
    tar_dir(&tree, &archive, &[]);
    let id = str_field(&repo.snapshot_file(&archive, &[]), "id");
    let x = t.join("x");
    assert_success(&repo.extract(&id, &x), "restore --extract");
    assert_same_tree(&tree, &x, Compare::ALL);
}

#[test]
fn json_outputs_have_documented_fields() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    let input = text_bytes(2, 300 * KIB);
    let snap = repo.snapshot_stdin(&input, &["--tag", "x"]);
    assert!(is_hex_id(&str_field(&snap, "id")));
    for key in ["source", "kind"] {
        str_field(&snap, key);
    }
    for key in ["bytes", "new_bytes", "stored_bytes", "chunks", "new_chunks"] {
        u64_field(&snap, key);
    }
    assert_eq!(u64_field(&snap, "bytes"), input.len() as u64);
    assert_eq!(
        u64_field(&snap, "new_bytes"),
        input.len() as u64,
        "first snapshot: all new"
    );
    assert!(u64_field(&snap, "chunks") >= 1);
    assert_eq!(u64_field(&snap, "new_chunks"), u64_field(&snap, "chunks"));
    assert!(
        u64_field(&snap, "stored_bytes") < input.len() as u64,
        "text should compress"
    );

    let list = repo.list();
    assert_eq!(list.len(), 1);
    let s = &list[0];
    assert!(is_hex_id(&str_field(s, "id")));
    let time = str_field(s, "time");
    let parsed = time::OffsetDateTime::parse(&time, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("time {time:?} is not RFC 3339: {e}"));
    let age = time::OffsetDateTime::now_utc() - parsed;
    assert!(
        age.whole_seconds().abs() < 600,
        "snapshot time {time} is not now"
    );
    str_field(s, "source");
    str_field(s, "kind");
    assert!(s["tags"].is_array(), "tags is an array: {s}");
    assert!(s["note"].is_null() || s["note"].is_string(), "note: {s}");
    assert_eq!(u64_field(s, "bytes"), input.len() as u64);
    let streams = s["streams"].as_array().expect("streams is an array");
    assert_eq!(streams.len(), 1);
    str_field(&streams[0], "name");
    assert_eq!(u64_field(&streams[0], "bytes"), input.len() as u64);
    assert!(is_hex_id(&str_field(&streams[0], "digest")));

    let stats = repo.stats();
    for key in [
        "snapshots",
        "logical_bytes",
        "unique_bytes",
        "stored_bytes",
        "chunks",
        "packs",
    ] {
        u64_field(&stats, key);
    }
    assert_eq!(u64_field(&stats, "snapshots"), 1);
    assert_eq!(u64_field(&stats, "logical_bytes"), input.len() as u64);
    assert_eq!(u64_field(&stats, "unique_bytes"), input.len() as u64);
    assert_eq!(
        u64_field(&stats, "packs"),
        pack_files(&repo.repo).len() as u64,
        "packs counts the pack files on disk"
    );
}

#[test]
fn tags_note_source_recorded_and_snapshots_resolve() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    let a = repo.snapshot_stdin(b"first", &[]);
    assert_eq!(
        str_field(&a, "source"),
        "stdin",
        "default source for `tar -`"
    );
    let b_file = t.write("b.tar", &random_bytes(3, 100 * KIB));
    let b = repo.snapshot_file(
        &b_file,
        &[
            "--source",
            "web",
            "--tag",
            "daily",
            "--tag",
            "pre-upgrade",
            "--note",
            "before v2: ü",
        ],
    );
    assert_eq!(str_field(&b, "source"), "web");
    let c = repo.snapshot_stdin(b"third", &["--source", "db"]);

    let list = repo.list();
    assert_eq!(list.len(), 3);
    let listed_b = list
        .iter()
        .find(|s| s["id"] == b["id"])
        .expect("b is listed");
    assert_eq!(listed_b["source"], "web");
    assert_eq!(
        listed_b["tags"],
        serde_json::json!(["daily", "pre-upgrade"])
    );
    assert_eq!(listed_b["note"], "before v2: ü");
    let listed_a = list.iter().find(|s| s["id"] == a["id"]).unwrap();
    assert_eq!(listed_a["tags"], serde_json::json!([]));

    // --source filters; an unknown source lists nothing.
    let web = parse_json(&repo.ok(&["snapshots", "--source", "web", "--json"]));
    let web_ids: Vec<&Value> = web.as_array().unwrap().iter().map(|s| &s["id"]).collect();
    assert_eq!(web_ids, vec![&b["id"]]);
    let none = parse_json(&repo.ok(&["snapshots", "--source", "nope", "--json"]));
    assert_eq!(none.as_array().unwrap().len(), 0);
    // The table output names the snapshot by its 8-digit short id.
    let table = stdout(&repo.ok(&["snapshots"]));
    assert!(table.contains(&str_field(&b, "id")[..8]), "table:\n{table}");

    // latest, a full id, an 8-digit prefix (any case) all resolve.
    assert_eq!(repo.restore_stdout("latest"), b"third");
    assert_eq!(
        str_field(&c, "id"),
        str_field(&list[2], "id"),
        "listing is oldest first"
    );
    let b_id = str_field(&b, "id");
    let b_bytes = fs::read(&b_file).unwrap();
    assert!(repo.restore_stdout(&b_id) == b_bytes);
    assert!(repo.restore_stdout(&b_id[..8]) == b_bytes);
    assert!(repo.restore_stdout(&b_id[..8].to_ascii_uppercase()) == b_bytes);
    assert_eq!(repo.restore_stdout(&str_field(&a, "id")[..12]), b"first");
}

#[test]
fn cairn_repo_environment_variable_replaces_r() {
    let t = TestDir::new();
    let repo_path = t.join("envrepo");
    let run = |args: &[&str], stdin: Option<&[u8]>| {
        let mut c = bare_cmd();
        c.env("CAIRN_REPO", &repo_path).args(args);
        let out = match stdin {
            None => c.output().unwrap(),
            Some(bytes) => {
                let mut child = c
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                std::io::Write::write_all(&mut child.stdin.take().unwrap(), bytes).unwrap();
                child.wait_with_output().unwrap()
            }
        };
        assert_success(&out, &args.join(" "));
        out
    };
    run(&["repo", "init"], None);
    assert!(repo_path.join("config").is_file());
    run(&["snapshot", "tar", "-"], Some(b"via env"));
    let list: Value = parse_json(&run(&["snapshots", "--json"], None));
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        run(&["restore", "latest", "--output", "-"], None).stdout,
        b"via env"
    );
    // -r wins over CAIRN_REPO.
    let other = t.repo("other");
    let mut c = other.cmd();
    c.env("CAIRN_REPO", &repo_path)
        .args(["snapshots", "--json"]);
    let out = c.output().unwrap();
    assert_success(&out, "snapshots");
    assert_eq!(parse_json(&out).as_array().unwrap().len(), 0);
}

/// Sizes of the members of a tar directory, for choosing what to change.
struct Member {
    name: String,
    size: u64,
}

fn members(dir: &Path) -> Vec<Member> {
    let mut out: Vec<Member> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            Member {
                name: e.file_name().into_string().unwrap(),
                size: e.metadata().unwrap().len(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[test]
fn dedup_new_bytes_track_changed_members() {
    const HEADER: u64 = 512;
    let t = TestDir::new();
    let repo = t.repo("repo");
    let dir = t.join("data");
    fs::create_dir_all(&dir).unwrap();
    let mut rng = Rng::new(seed(20));
    for i in 0..200u64 {
        let len = rng.log_range(KIB as u64, 2 * MIB as u64) as usize;
        let bytes = if rng.chance(35) {
            random_bytes(1000 + i, len)
        } else {
            text_bytes(1000 + i, len)
        };
        fs::write(dir.join(format!("f{i:03}")), bytes).unwrap();
    }
    set_tree_mtimes(&dir, 1_650_000_000);
    let a_tar = t.join("A.tar");
    tar_dir(&dir, &a_tar, &["--format=gnu"]);
    let a = repo.snapshot_file(&a_tar, &[]);
    let a_len = fs::metadata(&a_tar).unwrap().len();
    assert_eq!(u64_field(&a, "new_bytes"), a_len);

    // A few modified (of at least 128 KiB), added and removed members.
    let dir_mtime = fs::metadata(&dir).unwrap().modified().unwrap();
    let all = members(&dir);
    let mut changed = 0u64;
    let big: Vec<&Member> = all.iter().filter(|m| m.size >= 128 * KIB as u64).collect();
    for (k, m) in big.iter().step_by(big.len() / 3).take(3).enumerate() {
        let p = dir.join(&m.name);
        let mut bytes = fs::read(&p).unwrap();
        match k {
            0 => bytes[m.size as usize / 2..][..100].copy_from_slice(&random_bytes(7, 100)),
            1 => bytes.extend_from_slice(&text_bytes(8, 10 * KIB)),
            _ => bytes.truncate(m.size as usize / 2),
        }
        fs::write(&p, &bytes).unwrap();
        set_mtime(&p, 1_700_000_000 + k as i64);
        changed += m.size.max(bytes.len() as u64) + HEADER;
    }
    for k in 0..3u64 {
        let len = rng.range(100 * KIB as u64, 300 * KIB as u64) as usize;
        let p = dir.join(format!("new{k}"));
        fs::write(&p, random_bytes(5000 + k, len)).unwrap();
        set_mtime(&p, 1_700_000_100);
        changed += len as u64 + HEADER;
    }
    for m in [&all[17], &all[111]] {
        fs::remove_file(dir.join(&m.name)).unwrap();
        changed += HEADER;
    }
    // The directory's own header must not count as a change.
    filetime::set_file_mtime(&dir, filetime::FileTime::from_system_time(dir_mtime)).unwrap();
    let a2_tar = t.join("A2.tar");
    tar_dir(&dir, &a2_tar, &["--format=gnu"]);
    let a2_len = fs::metadata(&a2_tar).unwrap().len();
    let a2 = repo.snapshot_file(&a2_tar, &[]);
    let new2 = u64_field(&a2, "new_bytes");
    let bound = 2 * changed + 4 * MAX_CHUNK;
    eprintln!("A {a_len} bytes, A2 {a2_len} bytes, changed {changed}, new {new2}, bound {bound}");
    assert!(
        new2 <= bound,
        "new_bytes {new2} > 2 × changed ({changed}) + 4 max chunks"
    );
    assert!(new2 > 0, "A2 has new content");

    let a3 = repo.snapshot_file(&a2_tar, &[]);
    assert_eq!(
        u64_field(&a3, "new_bytes"),
        0,
        "identical input adds no data"
    );
    assert_eq!(u64_field(&a3, "new_chunks"), 0);
    assert!(
        u64_field(&a3, "stored_bytes") < 64 * KIB as u64,
        "identical input stored {} bytes",
        u64_field(&a3, "stored_bytes")
    );

    let stats = repo.stats();
    let sum_new = u64_field(&a, "new_bytes") + new2;
    assert_eq!(u64_field(&stats, "snapshots"), 3);
    assert_eq!(u64_field(&stats, "logical_bytes"), a_len + 2 * a2_len);
    let unique = u64_field(&stats, "unique_bytes");
    // Unique data is what the snapshots reported as new plus their small member indexes.
    assert!(
        unique >= sum_new,
        "unique {unique} < reported new {sum_new}"
    );
    assert!(
        unique <= sum_new + MIB as u64,
        "unique {unique} ≫ reported new {sum_new}"
    );
    assert!(unique < u64_field(&stats, "logical_bytes") / 2);
    let stored = u64_field(&stats, "stored_bytes");
    assert!(
        stored > 0 && stored < unique,
        "stored {stored} vs unique {unique}: text compresses"
    );
    assert!(
        u64_field(&stats, "chunks") >= u64_field(&a, "new_chunks") + u64_field(&a2, "new_chunks")
    );
    assert!(u64_field(&stats, "packs") >= 1);

    // Every snapshot still restores exactly.
    assert_eq!(
        blake3_hex(&repo.restore_stdout(&str_field(&a, "id"))),
        blake3_file(&a_tar)
    );
    assert_eq!(
        blake3_hex(&repo.restore_stdout(&str_field(&a3, "id"))),
        blake3_file(&a2_tar)
    );
}

/// A tree with the awkward cases: a non-UTF-8 name, a path over 200 bytes, a long symlink
/// target, and (as root) a foreign owner.
fn awkward_tree(root: &Path) {
    use std::os::unix::ffi::OsStrExt;
    build_sample_tree(root, 30, 25, 512 * KIB as u64);
    let latin1 = std::ffi::OsStr::from_bytes(b"caf\xe9-latin1.txt");
    fs::write(root.join(latin1), b"not utf-8 name").unwrap();
    let deep = root.join("d".repeat(90)).join("e".repeat(90));
    fs::create_dir_all(&deep).unwrap();
    let long_file = deep.join(format!("{}.dat", "f".repeat(120)));
    fs::write(&long_file, text_bytes(31, 5000)).unwrap();
    assert!(long_file.strip_prefix(root).unwrap().as_os_str().len() > 200);
    std::os::unix::fs::symlink("t".repeat(150), root.join("long-target")).unwrap();
    fs::write(root.join("setuid-tool"), b"#!/bin/sh\n").unwrap();
    chmod(&root.join("setuid-tool"), 0o4755);
    fs::create_dir(root.join("sticky-tmp")).unwrap();
    chmod(&root.join("sticky-tmp"), 0o1777);
    if is_root() {
        std::os::unix::fs::lchown(root.join("etc/empty"), Some(1234), Some(5678)).unwrap();
    }
    set_tree_mtimes(root, 1_620_000_000);
}

#[test]
fn dir_snapshots_are_deterministic_and_extract() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    let tree = t.join("tree");
    fs::create_dir_all(&tree).unwrap();
    awkward_tree(&tree);

    // A relative path with `..`: the default source is the canonical path.
    let out = repo
        .cmd()
        .current_dir(t.path())
        .args(["snapshot", "dir", "./tree/../tree", "--json"])
        .output()
        .unwrap();
    assert_success(&out, "snapshot dir");
    let s1 = parse_json(&out);
    let canonical = fs::canonicalize(&tree).unwrap();
    assert_eq!(str_field(&s1, "source"), canonical.to_str().unwrap());
    assert_eq!(str_field(&s1, "kind"), "dir");

    let s2 = repo.snapshot_dir(&tree, &[]);
    assert_eq!(
        u64_field(&s2, "new_bytes"),
        0,
        "unchanged tree adds nothing"
    );
    let digest = |id: &Value| {
        let list = repo.list();
        let s = list.iter().find(|s| s["id"] == *id).unwrap();
        str_field(&s["streams"][0], "digest")
    };
    assert_eq!(
        digest(&s1["id"]),
        digest(&s2["id"]),
        "unchanged tree, same stream"
    );

    fs::write(tree.join("etc/file-000.bin"), b"changed").unwrap();
    set_mtime(&tree.join("etc/file-000.bin"), 1_620_000_000);
    let s3 = repo.snapshot_dir(&tree, &[]);
    assert_ne!(
        digest(&s1["id"]),
        digest(&s3["id"]),
        "a change changes the stream"
    );

    // The stream is a tar that GNU tar unpacks into the same tree (directory mtimes and
    // owners included) ...
    let restored = t.join("s3.tar");
    repo.restore_file(&str_field(&s3, "id"), &restored);
    let by_gnu = t.join("by-gnu");
    untar(&restored, &by_gnu);
    assert_same_tree(&tree, &by_gnu, Compare::ALL);
    // ... and so does --extract (directory mtimes: see extract_restores_directory_mtimes).
    let x = t.join("extracted");
    assert_success(
        &repo.extract(&str_field(&s3, "id"), &x),
        "restore --extract",
    );
    let cmp = Compare {
        dir_mtimes: false,
        owners: true,
    };
    assert_same_tree(&tree, &x, cmp);
}

#[test]
fn concurrent_snapshots_both_succeed() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    let shared = random_bytes(40, 6 * MIB);
    for round in 0..3u64 {
        let mut a = shared.clone();
        a.extend_from_slice(&random_bytes(41 + round, 3 * MIB));
        let mut b = text_bytes(51 + round, 3 * MIB);
        b.extend_from_slice(&shared);
        let fa = t.write(format!("a{round}.bin"), &a);
        let fb = t.write(format!("b{round}.bin"), &b);
        let spawn = |f: &Path| {
            repo.cmd()
                .args(["snapshot", "tar"])
                .arg(f)
                .arg("--json")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (ca, cb) = (spawn(&fa), spawn(&fb));
        let (oa, ob) = (
            ca.wait_with_output().unwrap(),
            cb.wait_with_output().unwrap(),
        );
        assert_no_panic(&oa);
        assert_no_panic(&ob);
        assert_success(&oa, "concurrent snapshot a");
        assert_success(&ob, "concurrent snapshot b");
        let ids = repo.list_ids();
        let (ia, ib) = (
            str_field(&parse_json(&oa), "id"),
            str_field(&parse_json(&ob), "id"),
        );
        assert!(
            ids.contains(&ia) && ids.contains(&ib),
            "both listed: {ids:?}"
        );
        assert_eq!(ids.len() as u64, 2 * (round + 1));
        assert!(repo.restore_stdout(&ia) == a, "round {round}: a differs");
        assert!(repo.restore_stdout(&ib) == b, "round {round}: b differs");
    }
}

/// Three snapshots and the bytes each must restore to.
fn repo_with_snapshots(t: &TestDir) -> (Cairn, Vec<(String, Vec<u8>)>) {
    let repo = t.repo("repo");
    let mut snaps = Vec::new();
    for i in 0..3u64 {
        let mut bytes = random_bytes(60, 2 * MIB);
        bytes.extend_from_slice(&text_bytes(61 + i, MIB));
        let id = str_field(&repo.snapshot_stdin(&bytes, &[]), "id");
        snaps.push((id, bytes));
    }
    (repo, snaps)
}

fn assert_restores(repo: &Cairn, snaps: &[(String, Vec<u8>)]) {
    let ids = repo.list_ids();
    assert_eq!(ids.len(), snaps.len(), "listed: {ids:?}");
    for (id, bytes) in snaps {
        assert!(ids.contains(id), "{id} not listed");
        assert!(repo.restore_stdout(id) == *bytes, "{id} does not restore");
    }
}

fn remove_index(repo: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = fs::remove_file(repo.join(format!("index.sqlite{suffix}")));
    }
}

#[test]
fn deleted_index_is_rebuilt_automatically() {
    let t = TestDir::new();
    let (repo, snaps) = repo_with_snapshots(&t);
    // Only the main file: a stale WAL left beside it must not be replayed into the new one.
    fs::remove_file(repo.repo.join("index.sqlite")).unwrap();
    assert_restores(&repo, &snaps);
    remove_index(&repo.repo);
    assert_restores(&repo, &snaps);
    let stats = repo.stats();
    assert_eq!(u64_field(&stats, "snapshots"), 3);
    // A snapshot after the rebuild still deduplicates against the old data.
    let again = repo.snapshot_stdin(&snaps[0].1, &[]);
    assert_eq!(u64_field(&again, "new_bytes"), 0);
}

#[test]
fn garbage_index_is_fixed_by_rebuild_index() {
    let t = TestDir::new();
    let (repo, snaps) = repo_with_snapshots(&t);
    remove_index(&repo.repo);
    fs::write(repo.repo.join("index.sqlite"), random_bytes(62, 64 * KIB)).unwrap();
    // Without a rebuild: either it copes, or it says what to do, without panicking.
    let out = repo.run(&["snapshots", "--json"]);
    if !out.status.success() {
        let err = stderr(&out);
        assert!(
            err.contains("rebuild-index"),
            "message should suggest rebuild-index: {err}"
        );
    }
    let out = repo.ok(&["repo", "rebuild-index"]);
    assert!(stdout(&out).contains("3 snapshots"), "{}", stdout(&out));
    assert_restores(&repo, &snaps);
}

#[test]
fn truncated_index_is_fixed_by_rebuild_index() {
    let t = TestDir::new();
    let (repo, snaps) = repo_with_snapshots(&t);
    remove_index(&repo.repo);
    fs::File::create(repo.repo.join("index.sqlite")).unwrap();
    repo.ok(&["repo", "rebuild-index"]);
    assert_restores(&repo, &snaps);
    // And with no explicit rebuild, an empty index file is treated as missing.
    remove_index(&repo.repo);
    fs::File::create(repo.repo.join("index.sqlite")).unwrap();
    assert_restores(&repo, &snaps);
}

#[test]
fn stale_index_from_backup_is_fixed_by_rebuild_index() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    let first = random_bytes(63, MIB);
    repo.snapshot_stdin(&first, &[]);
    // A copy of the index as it was (after a clean exit the WAL is checkpointed).
    let old = fs::read(repo.repo.join("index.sqlite")).unwrap();
    let second = random_bytes(64, MIB);
    let id2 = str_field(&repo.snapshot_stdin(&second, &[]), "id");
    remove_index(&repo.repo);
    fs::write(repo.repo.join("index.sqlite"), old).unwrap();
    // The manifest is found, its blobs are not indexed: a clean failure, never wrong bytes.
    let out = repo.run(&["restore", &id2, "--output", "-"]);
    if out.status.success() {
        assert!(out.stdout == second);
    }
    repo.ok(&["repo", "rebuild-index"]);
    assert!(repo.restore_stdout(&id2) == second);
    assert_eq!(repo.list().len(), 2);
}

#[test]
fn long_runs_of_identical_chunks() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    let mut input = vec![0u8; 20 * MIB];
    input[10 * MIB..10 * MIB + 4].copy_from_slice(b"mark");
    let snap = repo.snapshot_stdin(&input, &[]);
    assert!(
        u64_field(&snap, "stored_bytes") < 2 * MIB as u64,
        "20 MiB of zeros stored as {} bytes",
        u64_field(&snap, "stored_bytes")
    );
    assert!(repo.restore_stdout("latest") == input);
    let out = t.join("zeros.bin");
    assert!(repo.restore_file("latest", &out) == input);
}

/// Holds a `snapshot tar -` open: the caller writes, then closes to let it commit.
struct OpenSnapshot {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
}

impl OpenSnapshot {
    fn start(repo: &Cairn) -> OpenSnapshot {
        let mut child = repo
            .cmd()
            .args(["snapshot", "tar", "-", "--json"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        OpenSnapshot { child, stdin }
    }

    fn write(&mut self, bytes: &[u8]) {
        std::io::Write::write_all(self.stdin.as_mut().unwrap(), bytes).unwrap();
    }

    fn finish(mut self) -> Value {
        drop(self.stdin.take());
        let out = self.child.wait_with_output().unwrap();
        assert_no_panic(&out);
        assert_success(&out, "snapshot tar -");
        parse_json(&out)
    }
}

/// `repo rebuild-index` started while a snapshot runs waits for it (exclusive lock) and then
/// rebuilds in place; the snapshot taken meanwhile and the ones before it all restore.
/// (Regression: the rebuild used to rename a new file over the index the snapshot had open.)
#[test]
fn rebuild_index_while_a_snapshot_runs() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    let before = random_bytes(130, MIB);
    let before_id = str_field(&repo.snapshot_stdin(&before, &[]), "id");
    let mut running = OpenSnapshot::start(&repo);
    // More than one pack (16 MiB) before the rebuild, more than one after.
    let first = random_bytes(131, 20 * MIB);
    let second = random_bytes(132, 20 * MIB);
    running.write(&first);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let rebuild = std::thread::scope(|s| {
        let rebuild = s.spawn(|| repo.run(&["repo", "rebuild-index"]));
        std::thread::sleep(std::time::Duration::from_millis(300));
        running.write(&second);
        let snap = running.finish();
        (rebuild.join().unwrap(), snap)
    });
    let (rebuild, snap) = rebuild;
    assert_success(&rebuild, "rebuild-index waiting for the snapshot");
    let mut all = first;
    all.extend_from_slice(&second);
    assert!(repo.restore_stdout(&before_id) == before);
    let id = str_field(&snap, "id");
    let out = repo.run(&["restore", &id, "--output", "-"]);
    assert_success(&out, "restore of the snapshot taken during the rebuild");
    assert!(out.stdout == all);
}

/// The index is rebuilt automatically when missing. Two processes that open the repository at
/// the same time must not leave either writing into a replaced file.
/// (Regression: each renamed its own rebuilt copy into place.)
#[test]
fn concurrent_snapshots_after_index_deletion() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    // Enough packs that a rebuild takes a moment.
    for i in 0..6u64 {
        repo.snapshot_stdin(&random_bytes(140 + i, 2 * MIB), &[]);
    }
    for round in 0..3u64 {
        remove_index(&repo.repo);
        let mut a = OpenSnapshot::start(&repo);
        let mut b = OpenSnapshot::start(&repo);
        let (da, db) = (
            random_bytes(150 + round, 4 * MIB),
            random_bytes(160 + round, 4 * MIB),
        );
        a.write(&da);
        b.write(&db);
        let (ia, ib) = (str_field(&a.finish(), "id"), str_field(&b.finish(), "id"));
        for (id, bytes) in [(ia, da), (ib, db)] {
            let out = repo.run(&["restore", &id, "--output", "-"]);
            assert_success(&out, &format!("round {round}: restore {id}"));
            assert!(out.stdout == bytes);
        }
    }
}

/// Peak RSS of `snapshot tar FILE` of `len` generated bytes, and of restoring it to /dev/null.
/// (A file, not stdin: see `stdin_ingest_is_not_much_slower_than_file_ingest`.)
fn peak_rss(t: &TestDir, repo: &Cairn, seed: u64, len: usize) -> (u64, u64) {
    let input = t.join(format!("input-{seed}"));
    {
        let mut f = std::io::BufWriter::new(fs::File::create(&input).unwrap());
        let piece = 4 * MIB;
        for i in 0..len.div_ceil(piece) {
            let n = piece.min(len - i * piece);
            std::io::Write::write_all(&mut f, &random_bytes(seed + i as u64, n)).unwrap();
        }
    }
    let child = repo
        .cmd()
        .args(["snapshot", "tar"])
        .arg(&input)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (code, snap_rss) = wait_with_max_rss(child);
    assert_eq!(code, Some(0), "snapshot of {len} bytes failed");
    fs::remove_file(&input).unwrap();
    let child = repo
        .cmd()
        .args(["restore", "latest", "--output", "-"])
        .stdout(fs::File::create("/dev/null").unwrap())
        .spawn()
        .unwrap();
    let (code, restore_rss) = wait_with_max_rss(child);
    assert_eq!(code, Some(0), "restore of {len} bytes failed");
    (snap_rss, restore_rss)
}

/// Peak memory does not grow with the size of the stream (design property 5).
#[test]
fn memory_does_not_grow_with_stream_size() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    let (small_snap, small_restore) = peak_rss(&t, &repo, 1 << 32, 96 * MIB);
    let (big_snap, big_restore) = peak_rss(&t, &repo, 2 << 32, 288 * MIB);
    eprintln!(
        "peak RSS MiB: snapshot {} → {}, restore {} → {}",
        small_snap >> 20,
        big_snap >> 20,
        small_restore >> 20,
        big_restore >> 20
    );
    let slack = 48 * MIB as u64;
    assert!(
        big_snap < small_snap + slack,
        "snapshot memory grows with the stream"
    );
    assert!(
        big_restore < small_restore + slack,
        "restore memory grows with the stream"
    );
    assert!(
        big_snap.max(big_restore) < 192 * MIB as u64,
        "a 288 MiB stream is not held in RAM"
    );
}

fn index_exec(repo: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(repo.join("index.sqlite")).unwrap();
    conn.execute_batch(sql).unwrap();
}

/// A crash between writing a manifest and indexing it: the manifest on disk is enough.
#[test]
fn manifest_without_index_row_is_listed_and_restores() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    let bytes = random_bytes(180, 2 * MIB);
    let id = str_field(&repo.snapshot_stdin(&bytes, &[]), "id");
    index_exec(&repo.repo, "DELETE FROM snapshots;");
    assert_eq!(repo.list_ids(), vec![id.clone()]);
    assert!(repo.restore_stdout(&id) == bytes);
}

/// A crash after a pack became durable but before its index rows committed: the pack is an
/// orphan that nothing lists; the next snapshot of the same data stores it again, and a rebuild
/// (which indexes both copies) changes nothing visible.
#[test]
fn orphan_pack_from_an_interrupted_snapshot_is_harmless() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    let bytes = random_bytes(181, 3 * MIB);
    let id = str_field(&repo.snapshot_stdin(&bytes, &[]), "id");
    fs::remove_file(repo.repo.join("snapshots").join(&id)).unwrap();
    index_exec(
        &repo.repo,
        "DELETE FROM blobs; DELETE FROM packs; DELETE FROM snapshots;",
    );
    assert!(repo.list().is_empty());
    let again = repo.snapshot_stdin(&bytes, &[]);
    assert_eq!(
        u64_field(&again, "new_bytes"),
        bytes.len() as u64,
        "the orphan is not indexed"
    );
    let id2 = str_field(&again, "id");
    assert!(repo.restore_stdout(&id2) == bytes);
    repo.ok(&["repo", "rebuild-index"]);
    assert_eq!(repo.list_ids(), vec![id2.clone()]);
    assert!(repo.restore_stdout(&id2) == bytes);
    let stats = repo.stats();
    assert_eq!(
        u64_field(&stats, "unique_bytes"),
        bytes.len() as u64,
        "duplicates counted once"
    );
}

/// Snapshots with several streams (what Docker sources produce) go through the library; the CLI
/// must make the caller choose a stream for --output and extract every tar stream.
#[test]
fn multi_stream_snapshots() {
    use cairn::progress::Silent;
    use cairn::{SnapshotSpec, StreamInput};
    let t = TestDir::new();
    let repo_path = t.join("repo");
    let lib_repo = lib::init(&repo_path);
    let mut tars = Vec::new();
    for name in ["one", "two"] {
        let src = t.join(format!("src-{name}"));
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join(format!("{name}.txt")), text_bytes(190, 50 * KIB)).unwrap();
        set_tree_mtimes(&src, 1_600_000_000);
        let archive = t.join(format!("{name}.tar"));
        tar_dir(&src, &archive, &[]);
        tars.push((name, src, fs::read(&archive).unwrap()));
    }
    let json = br#"{"Id":"abc","Config":{"Image":"busybox"}}"#.to_vec();
    let mut inputs: Vec<StreamInput> = tars
        .iter()
        .map(|(name, _, bytes)| StreamInput {
            name: (*name).into(),
            role: "tar".into(),
            reader: Box::new(std::io::Cursor::new(bytes.clone())),
        })
        .collect();
    inputs.push(StreamInput {
        name: "inspect".into(),
        role: "json".into(),
        reader: Box::new(std::io::Cursor::new(json.clone())),
    });
    let spec = SnapshotSpec {
        kind: "container".into(),
        source: "web-1".into(),
        ..SnapshotSpec::default()
    };
    let outcome = lib_repo.snapshot(spec, inputs, &Silent).unwrap();
    drop(lib_repo);
    let id = outcome.id.to_hex();

    let repo = Cairn::at(&repo_path);
    let list = repo.list();
    let streams = list[0]["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 3);
    assert_eq!(str_field(&streams[2], "digest"), blake3_hex(&json));
    assert_eq!(
        u64_field(&list[0], "bytes"),
        (tars[0].2.len() + tars[1].2.len() + json.len()) as u64
    );

    let err = assert_fails(&repo.run(&["restore", &id, "--output", "-"]), 1);
    assert!(err.contains("--stream") && err.contains("inspect"), "{err}");
    let out = repo.ok(&["restore", &id, "--stream", "inspect", "--output", "-"]);
    assert_eq!(out.stdout, json);
    let out = repo.ok(&["restore", &id, "--stream", "two", "--output", "-"]);
    assert!(out.stdout == tars[1].2);
    // Every tar stream into its own subdirectory; the JSON stream is not a tar.
    let x = t.join("x");
    assert_success(&repo.extract(&id, &x), "restore --extract");
    for (name, src, _) in &tars {
        assert_same_tree(
            src,
            &x.join(name),
            Compare {
                dir_mtimes: false,
                owners: true,
            },
        );
    }
    assert!(!x.join("inspect").exists());
    let err = assert_fails(
        &repo.run(&[
            "restore",
            &id,
            "--stream",
            "inspect",
            "--extract",
            t.join("y").to_str().unwrap(),
        ]),
        1,
    );
    assert!(err.contains("not a tar"), "{err}");
}

/// The series of a directory is keyed by its path; two directories whose names differ only in
/// bytes that are not UTF-8 must not share a series.
#[test]
fn non_utf8_directory_names_keep_distinct_sources() {
    use std::os::unix::ffi::OsStrExt;
    let t = TestDir::new();
    let repo = t.repo("repo");
    let a = t.join(std::ffi::OsStr::from_bytes(b"vol-\xe9"));
    let b = t.join(std::ffi::OsStr::from_bytes(b"vol-\xe8"));
    for d in [&a, &b] {
        fs::create_dir_all(d).unwrap();
        fs::write(d.join("f"), b"x").unwrap();
    }
    let sa = str_field(&repo.snapshot_dir(&a, &[]), "source");
    let sb = str_field(&repo.snapshot_dir(&b, &[]), "source");
    assert_ne!(sa, sb, "two directories, one series");
}

/// Sockets cannot be archived; a directory containing one still snapshots.
#[test]
fn dir_with_a_socket() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    let d = t.join("run");
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("pidfile"), b"42").unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(d.join("app.sock")).unwrap();
    let snap = repo.snapshot_dir(&d, &[]);
    let x = t.join("x");
    assert_success(
        &repo.extract(&str_field(&snap, "id"), &x),
        "restore --extract",
    );
    assert_eq!(fs::read(x.join("pidfile")).unwrap(), b"42");
    assert!(!x.join("app.sock").exists());
}

/// Extended attributes travel in the directory stream and come back with --extract.
#[test]
fn dir_xattrs_round_trip() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    let d = t.join("tree");
    fs::create_dir_all(&d).unwrap();
    let f = d.join("labelled");
    fs::write(&f, b"x").unwrap();
    if xattr::set(&f, "user.cairn.test", b"value \x00 with nul").is_err() {
        eprintln!("skipped: this file system does not take user xattrs");
        return;
    }
    let snap = repo.snapshot_dir(&d, &[]);
    let x = t.join("x");
    assert_success(
        &repo.extract(&str_field(&snap, "id"), &x),
        "restore --extract",
    );
    assert_eq!(
        xattr::get(x.join("labelled"), "user.cairn.test")
            .unwrap()
            .as_deref(),
        Some(&b"value \x00 with nul"[..])
    );
}
