//! Interrupted work: a full disk, `kill -9` during a snapshot and during an index rebuild. After
//! each, every snapshot listed before still restores bit-exact, nothing broken is listed, and
//! the repository keeps working.

use crate::util::*;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A tmpfs mounted for the life of the guard.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Option<Tmpfs> {
        fs::create_dir_all(&dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size}"))
            .arg("tmpfs")
            .arg(&dir)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "skipped: cannot mount a tmpfs: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn free_bytes(&self) -> u64 {
        let c = std::ffi::CString::new(self.dir.to_str().unwrap()).unwrap();
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: c is a valid path and s a valid out-pointer.
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
        s.f_bavail as u64 * s.f_frsize as u64
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

#[test]
fn disk_full_fails_cleanly_and_keeps_earlier_snapshots() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let t = TestDir::new();
    let Some(mnt) = Tmpfs::mount(t.join("small"), "8m") else {
        return;
    };
    let repo = Cairn::init(mnt.dir.join("repo"));
    let small = random_bytes(90, 300 * KIB);
    let small_id = str_field(&repo.snapshot_stdin(&small, &[]), "id");
    let free_before = mnt.free_bytes();

    let big = t.write("big.bin", &random_bytes(91, 20 * MIB));
    let out = repo.run(&["snapshot", "tar", big.to_str().unwrap()]);
    let err = assert_fails(&out, 1);
    assert_one_line_error(&err);
    assert!(
        err.contains("No space left on device"),
        "the message should say the disk is full: {err}"
    );

    let ids = repo.list_ids();
    assert_eq!(ids, vec![small_id.clone()], "nothing new is listed");
    assert!(repo.restore_stdout(&small_id) == small);
    // What the failed snapshot wrote to tmp/ is gone again, so the space is back.
    let leftovers = files_under(&repo.repo.join("tmp"));
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let free_after = mnt.free_bytes();
    assert!(
        free_after + 3 * MIB as u64 >= free_before,
        "the failed snapshot still occupies {} bytes",
        free_before - free_after
    );

    // The repository keeps working in the space that is left.
    let next = random_bytes(92, 200 * KIB);
    let next_id = str_field(&repo.snapshot_stdin(&next, &[]), "id");
    let list = repo.assert_all_listed_restore();
    assert_eq!(list.len(), 2);
    assert!(repo.restore_stdout(&next_id) == next);
    assert!(repo.restore_stdout(&small_id) == small);

    // A restore that does not fit fails the same way and leaves neither the file nor a temporary.
    let zeros = repo.snapshot_stdin(&vec![0u8; 20 * MIB], &[]);
    let target_dir = mnt.dir.join("restores");
    fs::create_dir(&target_dir).unwrap();
    let target = target_dir.join("zeros.bin");
    let out = repo.run(&[
        "restore",
        &str_field(&zeros, "id"),
        "--output",
        target.to_str().unwrap(),
    ]);
    let err = assert_fails(&out, 1);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        files_under(&target_dir).is_empty(),
        "left behind: {:?}",
        files_under(&target_dir)
    );
}

/// Feeds a child's stdin with an endless mix of fresh and repeated data until the pipe breaks
/// (the child was killed) or `limit` bytes were written.
fn feed(mut child_stdin: std::process::ChildStdin, seed: u64, limit: u64, written: Arc<AtomicU64>) {
    let mut rng = Rng::new(seed);
    let repeated = random_bytes(0x5eed, 4 * MIB);
    let mut sent = 0u64;
    while sent < limit {
        let len = rng.log_range(4 * KIB as u64, 2 * MIB as u64) as usize;
        let piece = if rng.chance(30) {
            let start = rng.range(0, (repeated.len() - len) as u64) as usize;
            repeated[start..start + len].to_vec()
        } else if rng.chance(50) {
            text_bytes(rng.next_u64(), len)
        } else {
            random_bytes(rng.next_u64(), len)
        };
        if child_stdin.write_all(&piece).is_err() {
            return;
        }
        sent += len as u64;
        written.store(sent, Ordering::Relaxed);
        if rng.chance(10) {
            std::thread::sleep(Duration::from_millis(rng.range(0, 20)));
        }
    }
}

/// Everything listed restores to its recorded digest, and the snapshots known to be committed
/// are among them with their exact bytes.
fn check_repository(repo: &Cairn, committed: &[(String, Vec<u8>)], context: &str) {
    let list = repo.assert_all_listed_restore();
    let ids: Vec<String> = list.iter().map(|s| str_field(s, "id")).collect();
    for (id, bytes) in committed {
        assert!(
            ids.contains(id),
            "{context}: committed snapshot {id} is no longer listed"
        );
        assert!(
            repo.restore_stdout(id) == *bytes,
            "{context}: {id} does not restore"
        );
    }
}

fn kill(child: &mut Child) {
    // Child::kill sends SIGKILL on Unix.
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A repository with 1 MiB packs (created through the library: the CLI has no option for it),
/// so that a kill at a random moment often lands while a pack is finished and indexed.
fn small_pack_repo(t: &TestDir) -> Cairn {
    let path = t.join("repo");
    let opts = cairn::InitOptions {
        pack_size: MIB as u64,
        ..cairn::InitOptions::default()
    };
    drop(cairn::Repo::init(&path, &opts).unwrap());
    Cairn::at(path)
}

/// Starts a snapshot that will not finish by itself within the test's patience: even iterations
/// read a pipe fed by a writer thread, odd ones a large file (which ingests much faster).
fn start_long_snapshot(
    repo: &Cairn,
    big_file: &Path,
    iteration: u64,
    feed_seed: u64,
) -> (Child, Option<std::thread::JoinHandle<()>>, Arc<AtomicU64>) {
    let written = Arc::new(AtomicU64::new(0));
    if iteration % 2 == 1 {
        // Fresh data each time (earlier kills leave their packs indexed), after a part shared
        // with the committed snapshots so that dedup paths run too.
        let mut f = std::io::BufWriter::new(fs::File::create(big_file).unwrap());
        f.write_all(&random_bytes(0x5eed, 4 * MIB)).unwrap();
        for i in 0..24u64 {
            f.write_all(&random_bytes(feed_seed ^ (200 + i), 4 * MIB))
                .unwrap();
        }
        drop(f);
        let child = repo
            .cmd()
            .args(["snapshot", "tar"])
            .arg(big_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        return (child, None, written);
    }
    let mut child = repo
        .cmd()
        .args(["snapshot", "tar", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let w = written.clone();
    let feeder = std::thread::spawn(move || feed(stdin, feed_seed, 300 * MIB as u64, w));
    (child, Some(feeder), written)
}

#[test]
fn kill_9_during_snapshot_never_breaks_the_repository() {
    let seed = seed(0xC4A5);
    let mut rng = Rng::new(seed);
    let t = TestDir::new();
    let repo = small_pack_repo(&t);
    let mut committed: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..2u64 {
        let mut bytes = random_bytes(0x5eed, 2 * MIB);
        bytes.extend_from_slice(&text_bytes(100 + i, MIB));
        committed.push((str_field(&repo.snapshot_stdin(&bytes, &[]), "id"), bytes));
    }
    // Shares its first part with the committed snapshots, so dedup paths run too.
    let big_file = t.join("big.bin");
    {
        let mut f = std::io::BufWriter::new(fs::File::create(&big_file).unwrap());
        f.write_all(&committed[0].1).unwrap();
        for i in 0..40u64 {
            f.write_all(&random_bytes(seed ^ (200 + i), 4 * MIB))
                .unwrap();
        }
    }
    let started = Instant::now();
    let mut iteration = 0u64;
    while iteration < 10 || (iteration < 14 && started.elapsed() < Duration::from_secs(30)) {
        let delay = Duration::from_millis(rng.range(0, 2000));
        let (mut child, feeder, written) =
            start_long_snapshot(&repo, &big_file, iteration, rng.next_u64());
        std::thread::sleep(delay);
        let finished_early = child.try_wait().unwrap().is_some();
        kill(&mut child);
        if let Some(f) = feeder {
            f.join().unwrap();
        }
        let context = format!(
            "seed {seed}, iteration {iteration} ({}): killed after {delay:?}, {} bytes fed{}",
            if iteration % 2 == 1 { "file" } else { "pipe" },
            written.load(Ordering::Relaxed),
            if finished_early {
                " (had already exited)"
            } else {
                ""
            }
        );
        eprintln!("{context}, {} packs", pack_files(&repo.repo).len());
        check_repository(&repo, &committed, &context);
        // A new small snapshot works and is kept among those that must survive.
        let bytes = text_bytes(rng.next_u64(), rng.range(1, 200 * KIB as u64) as usize);
        let snap = repo.snapshot_stdin(&bytes, &[]);
        committed.push((str_field(&snap, "id"), bytes));
        iteration += 1;
    }
    check_repository(&repo, &committed, "final");
}

#[test]
fn kill_9_during_rebuild_index() {
    let seed = seed(0x1DE8);
    let mut rng = Rng::new(seed);
    let t = TestDir::new();
    let repo = t.repo("repo");
    let mut committed = Vec::new();
    for i in 0..4u64 {
        let bytes = random_bytes(110 + i, (i as usize + 1) * 700 * KIB);
        committed.push((str_field(&repo.snapshot_stdin(&bytes, &[]), "id"), bytes));
    }
    // Kill anywhere from before it starts to just after it would have finished.
    let start = Instant::now();
    repo.ok(&["repo", "rebuild-index"]);
    let clean_run = start.elapsed().as_micros() as u64;
    let mut killed_running = 0;
    for i in 0..8 {
        let delay = Duration::from_micros(rng.range(0, clean_run * 6 / 5 + 1));
        let mut child = repo
            .cmd()
            .args(["repo", "rebuild-index"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            killed_running += 1;
        }
        kill(&mut child);
        check_repository(
            &repo,
            &committed,
            &format!("seed {seed}, rebuild kill {i} after {delay:?}"),
        );
    }
    eprintln!(
        "{killed_running} of 8 rebuilds were killed while running (a clean one takes {clean_run} µs)"
    );
    let snap = repo.snapshot_stdin(b"after the rebuilds", &[]);
    assert!(repo.restore_stdout(&str_field(&snap, "id")) == b"after the rebuilds");
}

/// Leftovers of a killed run (temporary packs, spools) do not confuse a rebuild.
#[test]
fn rebuild_after_kill_ignores_partial_files() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    let bytes = random_bytes(120, 3 * MIB);
    let id = str_field(&repo.snapshot_stdin(&bytes, &[]), "id");
    // What a kill can leave: a half-written pack in tmp/, and a garbage file in a pack directory
    // whose name is not a pack id.
    fs::write(
        repo.repo.join("tmp/pack-XXXX.tmp"),
        random_bytes(121, 100 * KIB),
    )
    .unwrap();
    let pack_dir = pack_files(&repo.repo)[0].0.parent().unwrap().to_path_buf();
    fs::write(pack_dir.join("not-a-pack"), b"junk").unwrap();
    let out = repo.ok(&["repo", "rebuild-index"]);
    assert_no_panic(&out);
    assert!(repo.restore_stdout(&id) == bytes);
    assert_partial_pack_reported(&repo.repo, &id, &bytes);
}

/// A truncated pack under a valid name (a torn copy, say) is reported by the rebuild and the
/// snapshots that need it fail to restore with a damage exit code, never with wrong bytes.
fn assert_partial_pack_reported(repo_path: &Path, id: &str, bytes: &[u8]) {
    let repo = Cairn::at(repo_path);
    let (pack, len) = pack_files(repo_path).into_iter().next().unwrap();
    let f = fs::OpenOptions::new().write(true).open(&pack).unwrap();
    f.set_len(len / 2).unwrap();
    let out = repo.ok(&["repo", "rebuild-index"]);
    let name = pack.file_name().unwrap().to_str().unwrap();
    assert!(
        stderr(&out).contains(name),
        "the torn pack is reported: {}",
        stderr(&out)
    );
    let out = repo.run(&["restore", id, "--output", "-"]);
    assert!(
        !out.status.success(),
        "a snapshot whose pack is torn must not restore"
    );
    assert_ne!(out.stdout, bytes);
    assert_no_panic(&out);
}

/// Snapshots running while others are killed do not lose anything either.
#[test]
fn kill_one_of_two_concurrent_snapshots() {
    let seed = seed(0xB0B);
    let mut rng = Rng::new(seed);
    let t = TestDir::new();
    let repo = t.repo("repo");
    let mut committed = Vec::new();
    for round in 0..3 {
        let survivor_bytes = random_bytes(rng.next_u64(), 6 * MIB);
        let file = t.write(format!("s{round}"), &survivor_bytes);
        let survivor = repo
            .cmd()
            .args(["snapshot", "tar", "--json"])
            .arg(&file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut victim = repo
            .cmd()
            .args(["snapshot", "tar", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = victim.stdin.take().unwrap();
        let feed_seed = rng.next_u64();
        let feeder = std::thread::spawn(move || {
            feed(
                stdin,
                feed_seed,
                100 * MIB as u64,
                Arc::new(AtomicU64::new(0)),
            )
        });
        std::thread::sleep(Duration::from_millis(rng.range(50, 1500)));
        kill(&mut victim);
        feeder.join().unwrap();
        let out = survivor.wait_with_output().unwrap();
        assert_success(&out, "surviving snapshot");
        committed.push((str_field(&parse_json(&out), "id"), survivor_bytes));
        check_repository(&repo, &committed, &format!("seed {seed}, round {round}"));
    }
}
