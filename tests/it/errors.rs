//! Failures: each gives a one-line message on stderr, a non-zero exit code, no panic, and leaves
//! nothing behind that looks like a result.

use crate::util::*;
use std::fs;
use std::path::Path;

const FAILURE: i32 = 1;
const USAGE: i32 = 2;
const DAMAGE: i32 = 3;

fn fails_one_line(out: &std::process::Output, code: i32) -> String {
    let err = assert_fails(out, code);
    assert_one_line_error(&err);
    err
}

#[test]
fn missing_repository() {
    let t = TestDir::new();
    let repo = Cairn::at(t.join("nope"));
    for args in [
        &["snapshots"][..],
        &["repo", "stats"],
        &["restore", "latest", "--output", "-"],
        &["repo", "rebuild-index"],
    ] {
        let err = fails_one_line(&repo.run(args), FAILURE);
        assert!(err.contains("not a cairn repository"), "{args:?}: {err}");
        assert!(
            err.contains("repo init"),
            "should say how to create one: {err}"
        );
    }
    let out = repo.run_stdin(&["snapshot", "tar", "-"], b"data");
    fails_one_line(&out, FAILURE);
    assert!(
        !t.join("nope").exists(),
        "a failed command must not create the repository"
    );
}

#[test]
fn no_repository_given() {
    let out = bare_cmd().args(["snapshots"]).output().unwrap();
    assert_no_panic(&out);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("CAIRN_REPO"),
        "should mention CAIRN_REPO: {err}"
    );
}

#[test]
fn directory_that_is_not_a_repository() {
    let t = TestDir::new();
    t.write("plain/some-file", b"hello");
    let repo = Cairn::at(t.join("plain"));
    let err = fails_one_line(&repo.run(&["snapshots"]), FAILURE);
    assert!(err.contains("not a cairn repository"), "{err}");
    // init refuses a non-empty directory that is not a repository.
    let err = fails_one_line(&repo.run(&["repo", "init"]), FAILURE);
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(
        fs::read_dir(t.join("plain")).unwrap().count(),
        1,
        "nothing was created"
    );
}

#[test]
fn newer_repository_version_is_refused() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    let before = repo.snapshot_stdin(b"old", &[]);
    let config = repo.repo.join("config");
    let mut cfg: serde_json::Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    cfg["version"] = 99.into();
    let edited = serde_json::to_vec_pretty(&cfg).unwrap();
    fs::write(&config, &edited).unwrap();

    let snapshot = repo.run_stdin(&["snapshot", "tar", "-"], b"new");
    let restore = repo.run(&["restore", &str_field(&before, "id"), "--output", "-"]);
    for out in [
        &snapshot,
        &repo.run(&["snapshots"]),
        &restore,
        &repo.run(&["repo", "rebuild-index"]),
    ] {
        let err = fails_one_line(out, FAILURE);
        assert!(err.contains("99"), "should name the version found: {err}");
        assert!(err.contains("newer") && err.contains("upgrade"), "{err}");
    }
    assert_eq!(
        fs::read(&config).unwrap(),
        edited,
        "the config is left alone"
    );
    assert_eq!(
        fs::read_dir(repo.repo.join("snapshots")).unwrap().count(),
        1,
        "nothing written"
    );
}

#[test]
fn unknown_and_malformed_snapshot_ids() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    let err = fails_one_line(&repo.run(&["restore", "latest", "--output", "-"]), FAILURE);
    assert!(err.contains("no snapshot"), "{err}");
    let id = str_field(&repo.snapshot_stdin(b"x", &[]), "id");
    // A well-formed id that names nothing (differs from the real one in its first digit).
    let first = if id.starts_with('0') { '1' } else { '0' };
    let other = format!("{first}{}", &id[1..]);
    for spec in [other.as_str(), &other[..8]] {
        let out_path = t.join("out");
        let args = ["restore", spec, "--output", out_path.to_str().unwrap()];
        let err = fails_one_line(&repo.run(&args), FAILURE);
        assert!(
            err.contains("no snapshot matches") && err.contains(spec),
            "{err}"
        );
        assert!(!out_path.exists());
    }
    // Too short, not hex, too long.
    let long = format!("{id}00");
    for spec in [&id[..7], "zzzzzzzz", "latest!", long.as_str()] {
        let err = fails_one_line(&repo.run(&["restore", spec, "--output", "-"]), FAILURE);
        assert!(err.contains("8 hex digits"), "{spec}: {err}");
    }
    let err = fails_one_line(
        &repo.run(&["restore", &id, "--stream", "nope", "--output", "-"]),
        FAILURE,
    );
    assert!(
        err.contains("nope") && err.contains("data"),
        "names the streams there are: {err}"
    );
}

/// Two snapshots sharing an 8-digit prefix cannot be made on purpose (that needs a 2^32 search),
/// so the index is given two rows that do, and resolution is asked through the library.
#[test]
fn ambiguous_prefix_through_the_library() {
    use cairn::index::SnapshotRow;
    use cairn::{Error, Id};
    let t = TestDir::new();
    let repo = lib::init(&t.join("repo"));
    let real = lib::snapshot(&repo, b"real", "data");
    let manifest = fs::read(repo.layout().snapshot(&real.id)).unwrap();
    for last in [1u8, 2] {
        let mut id = [0xab; 32];
        id[31] = last;
        repo.index()
            .add_snapshot(&SnapshotRow {
                id: Id(id),
                time_ns: 1,
                kind: "test".into(),
                source: "x".into(),
                bytes: 4,
                manifest: manifest.clone(),
            })
            .unwrap();
    }
    match repo.resolve_snapshot("abababab") {
        Err(e @ Error::AmbiguousSnapshot(_, 2)) => {
            let msg = e.to_string();
            assert!(
                msg.contains("ambiguous") && msg.contains("abababab"),
                "{msg}"
            );
        }
        Err(e) => panic!("expected AmbiguousSnapshot, got {e}"),
        Ok((id, _)) => panic!("an ambiguous prefix resolved to {id}"),
    }
    // One more digit makes it unique (and then the missing manifest is reported, not invented).
    let one = format!("{}01", "ab".repeat(31));
    assert!(matches!(
        repo.resolve_snapshot(&one),
        Err(Error::NoSuchSnapshot(_))
    ));
    let (id, _) = repo.resolve_snapshot(&real.id.to_hex()[..8]).unwrap();
    assert_eq!(id, real.id);
}

#[test]
fn unreadable_input() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    let missing = t.join("no-such.tar");
    let err = fails_one_line(
        &repo.run(&["snapshot", "tar", missing.to_str().unwrap()]),
        FAILURE,
    );
    assert!(err.contains("no-such.tar"), "names the file: {err}");
    // A directory opens but cannot be read as a stream.
    let d = t.join("a-dir");
    fs::create_dir(&d).unwrap();
    fails_one_line(
        &repo.run(&["snapshot", "tar", d.to_str().unwrap()]),
        FAILURE,
    );
    // `snapshot dir` of something missing, or of a file.
    let err = fails_one_line(
        &repo.run(&["snapshot", "dir", missing.to_str().unwrap()]),
        FAILURE,
    );
    assert!(err.contains("no-such.tar"), "{err}");
    let f = t.write("file", b"x");
    let err = fails_one_line(
        &repo.run(&["snapshot", "dir", f.to_str().unwrap()]),
        FAILURE,
    );
    assert!(err.contains("not a directory"), "{err}");
    assert!(repo.list().is_empty(), "failed snapshots are not listed");
}

#[test]
fn unreadable_file_inside_a_directory_fails_the_dir_snapshot() {
    if is_root() {
        // Root reads a mode-000 file anyway; a FIFO that nobody writes would block instead.
        eprintln!("skipped: running as root, permissions cannot make a file unreadable");
        return;
    }
    let t = TestDir::new();
    let repo = t.repo("repo");
    let f = t.write("tree/secret", b"x");
    chmod(&f, 0);
    let err = fails_one_line(
        &repo.run(&["snapshot", "dir", t.join("tree").to_str().unwrap()]),
        FAILURE,
    );
    assert!(err.contains("secret"), "{err}");
    assert!(repo.list().is_empty());
}

#[test]
fn extract_of_a_non_tar_stream() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    let id = str_field(
        &repo.snapshot_stdin(&random_bytes(70, 100 * KIB), &[]),
        "id",
    );
    let x = t.join("x");
    let err = fails_one_line(&repo.extract(&id, &x), FAILURE);
    assert!(err.contains("tar"), "{err}");
    assert!(err.contains("--output"), "should point to --output: {err}");
}

#[test]
fn init_on_an_existing_repository() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    repo.snapshot_stdin(b"keep me", &[]);
    let config = fs::read(repo.repo.join("config")).unwrap();
    let err = fails_one_line(&repo.run(&["repo", "init"]), FAILURE);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(fs::read(repo.repo.join("config")).unwrap(), config);
    assert_eq!(repo.restore_stdout("latest"), b"keep me");
}

#[test]
fn usage_errors_exit_2() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    let out_file = t.join("o");
    let o = out_file.to_str().unwrap();
    for args in [
        &[][..],
        &["frobnicate"],
        &["snapshots", "--bogus"],
        &["restore", "latest"],
        &["restore", "latest", "--output", o, "--extract", o],
        &["snapshot", "tar"],
        &["repo"],
        &["repo", "stats", "--json=maybe"],
    ] {
        let out = repo.run(args);
        assert_no_panic(&out);
        assert_eq!(out.status.code(), Some(USAGE), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).is_empty());
    }
    assert!(!out_file.exists());
}

/// Flips one byte in the middle of the largest pack (a data pack).
fn corrupt_largest_pack(repo: &Path) -> String {
    let (pack, len) = pack_files(repo).into_iter().next().expect("a pack");
    let mut bytes = fs::read(&pack).unwrap();
    bytes[len as usize / 2] ^= 0x40;
    fs::write(&pack, bytes).unwrap();
    pack.file_name().unwrap().to_str().unwrap().to_string()
}

#[test]
fn corrupted_blob_fails_restore_and_names_blob_and_pack() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    let input = random_bytes(71, 4 * MIB);
    let id = str_field(&repo.snapshot_stdin(&input, &[]), "id");
    let pack = corrupt_largest_pack(&repo.repo);

    let outdir = t.join("out");
    fs::create_dir(&outdir).unwrap();
    let target = outdir.join("restored.bin");
    let out = repo.run(&["restore", &id, "--output", target.to_str().unwrap()]);
    let err = fails_one_line(&out, DAMAGE);
    assert!(err.contains(&pack), "names the pack {pack}: {err}");
    assert!(err.contains("blob") && err.contains("damaged"), "{err}");
    let blob = err
        .split_whitespace()
        .skip_while(|w| *w != "blob")
        .nth(1)
        .unwrap_or_default();
    assert!(is_hex_id(blob), "names the blob: {err}");
    assert!(!target.exists(), "no output file after a failed restore");
    assert!(
        files_under(&outdir).is_empty(),
        "no temporary file left: {:?}",
        files_under(&outdir)
    );

    let out = repo.run(&["restore", &id, "--output", "-"]);
    let err = fails_one_line(&out, DAMAGE);
    assert!(err.contains(&pack), "{err}");
    assert!(
        out.stdout.len() < input.len(),
        "damaged bytes are never all written"
    );
}

#[test]
fn corrupted_blob_fails_extract() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    let tree = t.join("tree");
    fs::create_dir(&tree).unwrap();
    fs::write(tree.join("big"), random_bytes(72, 3 * MIB)).unwrap();
    let archive = t.join("a.tar");
    tar_dir(&tree, &archive, &[]);
    let id = str_field(&repo.snapshot_file(&archive, &[]), "id");
    let pack = corrupt_largest_pack(&repo.repo);
    let err = fails_one_line(&repo.extract(&id, &t.join("x")), DAMAGE);
    assert!(err.contains(&pack), "{err}");
}

#[test]
fn restore_to_an_impossible_output() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    repo.snapshot_stdin(b"abc", &[]);
    let target = t.join("no/such/dir/out");
    let err = fails_one_line(
        &repo.run(&["restore", "latest", "--output", target.to_str().unwrap()]),
        FAILURE,
    );
    assert!(err.contains("no/such/dir"), "{err}");
    let file = t.write("a-file", b"");
    fails_one_line(
        &repo.run(&["restore", "latest", "--extract", file.to_str().unwrap()]),
        FAILURE,
    );
}

/// A reader that fails part-way, like a disk error or a source that dies.
struct FailingReader {
    left: usize,
}

impl std::io::Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("the source went away"));
        }
        let n = buf.len().min(self.left).min(100_000);
        buf[..n].copy_from_slice(&random_bytes(self.left as u64, n));
        self.left -= n;
        Ok(n)
    }
}

#[test]
fn failing_input_leaves_no_snapshot() {
    use cairn::progress::Silent;
    use cairn::{SnapshotSpec, StreamInput};
    let t = TestDir::new();
    let repo = lib::init(&t.join("repo"));
    let keep = lib::snapshot(&repo, b"before", "data");
    for left in [0, 5000, 20 * MIB] {
        let input = StreamInput {
            name: "data".into(),
            role: "tar".into(),
            reader: Box::new(FailingReader { left }),
        };
        let spec = SnapshotSpec {
            kind: "tar".into(),
            source: "failing".into(),
            ..SnapshotSpec::default()
        };
        let err = match repo.snapshot(spec, vec![input], &Silent) {
            Ok(o) => panic!("a failing reader produced snapshot {}", o.id),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("the source went away"), "{err}");
        let ids: Vec<_> = repo
            .snapshots()
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, vec![keep.id], "nothing new is listed");
    }
    // The directory source reports a vanished root as an error, not as an empty stream.
    let input = StreamInput {
        name: "data".into(),
        role: "tar".into(),
        reader: Box::new(cairn::source::dir_reader(t.join("vanished"))),
    };
    assert!(
        repo.snapshot(SnapshotSpec::default(), vec![input], &Silent)
            .is_err()
    );
    assert_eq!(repo.snapshots().unwrap().len(), 1);
    assert_eq!(lib::restore(&repo, &keep.manifest.streams[0]), b"before");
    // And through the binary the same repository still lists exactly one snapshot.
    assert_eq!(Cairn::at(t.join("repo")).list().len(), 1);
}

/// When the index lacks a blob a snapshot needs, the message must lead somewhere: the command it
/// suggests has to exist.
#[test]
fn missing_blob_message_suggests_an_existing_command() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    repo.snapshot_stdin(&random_bytes(73, MIB), &[]);
    let old = fs::read(repo.repo.join("index.sqlite")).unwrap();
    let id = str_field(&repo.snapshot_stdin(&random_bytes(74, MIB), &[]), "id");
    for suffix in ["", "-wal", "-shm"] {
        let _ = fs::remove_file(repo.repo.join(format!("index.sqlite{suffix}")));
    }
    fs::write(repo.repo.join("index.sqlite"), old).unwrap();
    let err = fails_one_line(&repo.run(&["restore", &id, "--output", "-"]), DAMAGE);
    let suggested = err
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no command suggested: {err}"));
    let words: Vec<&str> = suggested.split_whitespace().skip(1).collect();
    assert_eq!(suggested.split_whitespace().next(), Some("cairn"), "{err}");
    let out = repo.run(&words);
    assert_ne!(
        out.status.code(),
        Some(USAGE),
        "`{suggested}` is not a cairn command: {}",
        stderr(&out)
    );
}

#[test]
fn corrupted_manifest_is_reported_and_not_restored() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    let id = str_field(&repo.snapshot_stdin(b"precious", &[]), "id");
    let path = repo.repo.join("snapshots").join(&id);
    let mut m = fs::read(&path).unwrap();
    let i = m.len() / 2;
    m[i] ^= 0x01;
    fs::write(&path, m).unwrap();
    let err = fails_one_line(&repo.run(&["restore", &id, "--output", "-"]), DAMAGE);
    assert!(err.contains(&id), "names the snapshot: {err}");
    let out = repo.ok(&["repo", "rebuild-index"]);
    assert!(
        stderr(&out).contains(&id),
        "the rebuild reports it: {}",
        stderr(&out)
    );
    assert!(
        repo.list().is_empty(),
        "a manifest that does not verify is not listed"
    );
}

#[test]
fn unreadable_config() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    fs::write(repo.repo.join("config"), b"{ this is not json").unwrap();
    let err = fails_one_line(&repo.run(&["snapshots"]), DAMAGE);
    assert!(err.contains("config"), "{err}");
}
