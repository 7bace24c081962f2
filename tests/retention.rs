//! forget and gc: policies, space reclaimed, crash safety under kill -9, concurrency with
//! snapshots, locks, and a model-based property test.

mod common;
use common::*;
use proptest::prelude::*;
use std::process::Stdio;
use std::time::Duration;

/// Ten generations of a 2 MB stream where a few scattered ranges change each time.
fn generations(n: usize) -> Vec<Vec<u8>> {
    let mut base = text(2_000_000, 1);
    let mut out = Vec::new();
    for g in 0..n {
        let patch = noise(20 * 3000, 100 + g as u64);
        for k in 0..20 {
            let at = (u64::from_le_bytes(noise(8, (g * 100 + k) as u64)[..8].try_into().unwrap())
                % (base.len() as u64 - 4000)) as usize;
            base[at..at + 3000].copy_from_slice(&patch[k * 3000..(k + 1) * 3000]);
        }
        out.push(base.clone());
    }
    out
}

#[test]
fn keep_last_then_gc_shrinks_to_what_remains() {
    let gens = generations(10);
    let t = TestRepo::new();
    let ids: Vec<String> = gens.iter().map(|g| t.snapshot_bytes(g, "vol")).collect();
    let fresh = TestRepo::new();
    for g in &gens[7..] {
        fresh.snapshot_bytes(g, "vol");
    }
    // Dry run changes nothing and says why each snapshot is kept.
    let plan = t.json(&["forget", "--keep-last", "3", "--dry-run"]);
    assert_eq!(plan["keep"].as_array().unwrap().len(), 3);
    assert_eq!(plan["remove"].as_array().unwrap().len(), 7);
    assert!(
        plan["decisions"]["keep"][0]["reasons"]
            .to_string()
            .contains("last")
    );
    assert_eq!(t.snapshot_ids().len(), 10);
    let before = t.stored_bytes();
    let v = t.json(&["forget", "--keep-last", "3"]);
    assert_eq!(v["remove"].as_array().unwrap().len(), 7);
    let gc = t.json(&["repo", "gc"]);
    for key in [
        "packs_deleted",
        "packs_rewritten",
        "bytes_freed",
        "bytes_before",
        "bytes_after",
    ] {
        assert!(gc[key].is_u64(), "{key} missing: {gc}");
    }
    assert_eq!(gc["bytes_before"].as_u64().unwrap(), before);
    let after = t.stored_bytes();
    let want = fresh.stored_bytes();
    assert!(
        (after as f64) <= want as f64 * 1.15,
        "after gc {after} bytes, a fresh repository with the same snapshots has {want}"
    );
    for (i, id) in ids.iter().enumerate().skip(7) {
        assert_eq!(t.restore(id), gens[i]);
    }
    // A second gc has nothing left to do.
    let again = t.json(&["repo", "gc"]);
    assert_eq!(again["packs_deleted"], 0);
    assert_eq!(again["packs_rewritten"], 0);
}

#[test]
fn forget_refuses_without_rules_and_by_id_works() {
    let t = TestRepo::new();
    let a = t.snapshot_bytes(b"aaaa", "a");
    let b = t.snapshot_bytes(b"bbbb", "b");
    let out = t.run(&["forget"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing"));
    t.ok(&["forget", &a[..12]]);
    assert_eq!(t.snapshot_ids(), vec![b.clone()]);
    assert_eq!(t.restore(&b), b"bbbb");
}

#[test]
fn policies_apply_per_series_and_can_be_narrowed() {
    let t = TestRepo::new();
    for i in 0..3 {
        t.snapshot_bytes(&noise(1000, i), "a");
        t.snapshot_bytes(&noise(1000, 10 + i), "b");
    }
    let plan = t.json(&["forget", "--keep-last", "1", "--dry-run"]);
    assert_eq!(plan["keep"].as_array().unwrap().len(), 2, "one per series");
    let plan = t.json(&["forget", "--keep-last", "1", "--source", "a"]);
    assert_eq!(plan["remove"].as_array().unwrap().len(), 2);
    assert_eq!(t.snapshot_ids().len(), 4);
}

/// A repository with small packs so gc has real work, and 7 of 10 generations forgotten.
fn gc_workload() -> (TestRepo, Vec<(String, Vec<u8>)>) {
    let gens = generations(10);
    let t = TestRepo::with_args(&["--pack-size", "65536", "--chunk-size", "16384"]);
    let ids: Vec<String> = gens.iter().map(|g| t.snapshot_bytes(g, "vol")).collect();
    let keep: Vec<(String, Vec<u8>)> = ids.into_iter().zip(gens).skip(7).collect();
    t.ok(&["forget", "--keep-last", "3"]);
    (t, keep)
}

#[test]
fn gc_killed_at_random_moments_loses_nothing() {
    let (t, keep) = gc_workload();
    // Time a complete gc on a copy, so that the kills land while gc runs, on any machine.
    let copy = t.path("copy");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&t.repo)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(copied.success());
    let started = std::time::Instant::now();
    let full = std::process::Command::new(cairn_bin())
        .arg("-r")
        .arg(&copy)
        .args(["repo", "gc"])
        .output()
        .unwrap();
    assert!(full.status.success());
    let full_ms = (started.elapsed().as_millis() as u64).max(10);
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut kills = 0;
    for _ in 0..12 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = Duration::from_millis(rng % full_ms);
        let mut child = t
            .cmd(&["repo", "gc"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            kills += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        for (id, data) in &keep {
            assert_eq!(&t.restore(id), data, "after kill at {delay:?}");
        }
    }
    assert!(
        kills > 0,
        "gc always finished before the kill: the test exercised nothing"
    );
    // A final gc completes the work and the repository is consistent.
    t.ok(&["repo", "gc"]);
    let again = t.json(&["repo", "gc"]);
    assert_eq!(again["packs_deleted"], 0);
    let out = t.run(&["repo", "check", "--read-data"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for (id, data) in &keep {
        assert_eq!(&t.restore(id), data);
    }
}

#[test]
fn snapshot_during_gc_waits_or_proceeds_safely() {
    let (t, keep) = gc_workload();
    let mut expected = keep.clone();
    for round in 0..4u64 {
        let data = {
            let mut d = keep[0].1.clone();
            d.extend_from_slice(&noise(300_000, 1000 + round));
            d
        };
        let input = t.path(&format!("in{round}"));
        std::fs::write(&input, &data).unwrap();
        let gc = t
            .cmd(&["repo", "gc"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let snap = t
            .cmd(&[
                "snapshot",
                "tar",
                input.to_str().unwrap(),
                "--source",
                "vol",
                "--json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let gc = gc.wait_with_output().unwrap();
        let snap = snap.wait_with_output().unwrap();
        assert!(
            gc.status.success(),
            "gc: {}",
            String::from_utf8_lossy(&gc.stderr)
        );
        assert!(
            snap.status.success(),
            "snapshot: {}",
            String::from_utf8_lossy(&snap.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&snap.stdout).unwrap();
        expected.push((v["id"].as_str().unwrap().to_string(), data));
        // Forget something each round so the next gc deletes and repacks.
        t.ok(&["forget", "--keep-last", "3"]);
        expected.retain(|(id, _)| t.snapshot_ids().contains(id));
        t.ok(&["repo", "gc"]);
        for (id, d) in &expected {
            assert_eq!(&t.restore(id), d, "round {round}");
        }
    }
    let out = t.run(&["repo", "check", "--read-data"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn stale_lock_of_killed_process_is_detected_and_unlocked() {
    let t = TestRepo::new();
    t.snapshot_bytes(&noise(100_000, 1), "a");
    // A lock from another host with a fresh heartbeat blocks gc...
    let lock = serde_json::json!({
        "kind": "exclusive", "operation": "gc", "host": "some-other-host", "pid": 1,
        "process_start": "x:1", "created": "2026-01-01T00:00:00Z"
    });
    let path = t.repo.join("locks").join("foreign");
    std::fs::write(&path, lock.to_string()).unwrap();
    let out = t
        .cmd(&["repo", "gc"])
        .env("CAIRN_LOCK_WAIT", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("locked") && err.contains("some-other-host"),
        "{err}"
    );
    // ...`repo unlock` leaves a live lock alone, `--remove-all` removes it.
    assert!(t.ok(&["repo", "unlock"]).contains("0 locks removed"));
    assert!(
        t.ok(&["repo", "unlock", "--remove-all"])
            .contains("1 locks removed")
    );
    // A lock whose holder was killed (same host, process gone) is stale at once.
    let mut child = t
        .cmd(&["snapshot", "tar", "-", "--source", "slow"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    let locks = std::fs::read_dir(t.repo.join("locks")).unwrap().count();
    assert_eq!(locks, 1, "the killed snapshot left its lock behind");
    let out = t
        .cmd(&["repo", "gc"])
        .env("CAIRN_LOCK_WAIT", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stale lock must not block: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(t.ok(&["repo", "unlock"]).contains("1 locks removed"));
}

#[derive(Debug, Clone)]
enum Op {
    Snapshot {
        base: u8,
        edit_at: u16,
        edit_len: u16,
        seed: u8,
    },
    Forget(u8),
    Gc,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..3, any::<u16>(), 0u16..5000, any::<u8>())
            .prop_map(|(base, edit_at, edit_len, seed)| Op::Snapshot { base, edit_at, edit_len, seed }),
        1 => any::<u8>().prop_map(Op::Forget),
        1 => Just(Op::Gc),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    /// Random snapshot / forget / gc sequences against a model: after every step each remaining
    /// snapshot restores bit-exact, and after gc no pack holds only dead blobs.
    #[test]
    fn snapshot_forget_gc_against_a_model(ops in proptest::collection::vec(op(), 1..14)) {
        use cairn::progress::Silent;
        let dir = tempfile::tempdir().unwrap();
        let opts = cairn::InitOptions { pack_size: 1 << 16, ..Default::default() };
        let repo = cairn::Repo::init(&dir.path().join("r"), &opts).unwrap();
        let bases: Vec<Vec<u8>> = (0..3).map(|i| text(150_000, i)).collect();
        let mut model: Vec<(cairn::Id, Vec<u8>)> = Vec::new();
        for op in ops {
            match op {
                Op::Snapshot { base, edit_at, edit_len, seed } => {
                    let mut data = bases[base as usize].clone();
                    let at = edit_at as usize % data.len();
                    let end = (at + edit_len as usize).min(data.len());
                    data.splice(at..end, noise(edit_len as usize / 2, u64::from(seed)));
                    let spec = cairn::SnapshotSpec { kind: "tar".into(), source: format!("s{base}"), ..Default::default() };
                    let input = cairn::StreamInput { name: "data".into(), role: "data".into(), reader: Box::new(std::io::Cursor::new(data.clone())) };
                    let out = repo.snapshot(spec, vec![input], &Silent).unwrap();
                    model.push((out.id, data));
                }
                Op::Forget(i) => {
                    if !model.is_empty() {
                        let (id, _) = model.remove(i as usize % model.len());
                        repo.remove_snapshots(&[id]).unwrap();
                    }
                }
                Op::Gc => {
                    cairn::gc::gc(&repo, &cairn::gc::GcOptions::default(), &Silent).unwrap();
                    let again = cairn::gc::gc(&repo, &cairn::gc::GcOptions { dry_run: true, ..Default::default() }, &Silent).unwrap();
                    prop_assert_eq!(again.packs_deleted, 0, "a pack with only dead blobs survived gc");
                }
            }
            for (id, data) in &model {
                let (_, m) = repo.resolve_snapshot(&id.to_hex()).unwrap();
                let mut out = Vec::new();
                cairn::restore::restore_stream(&repo, &m.streams[0], &mut out, &Silent).unwrap();
                prop_assert_eq!(&out, data);
            }
        }
    }
}
