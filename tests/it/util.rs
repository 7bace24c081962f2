//! Shared helpers: a temporary directory per test, running the real `cairn` binary, calling the
//! library directly, generating data and tar archives, and comparing directory trees.

#![allow(dead_code)]

use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * 1024;
/// The repository's default maximum chunk size.
pub const MAX_CHUNK: u64 = 256 * 1024;

pub fn cairn_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cairn")
}

/// A fresh temporary directory for one test, removed when dropped.
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix("cairn-it-")
            .tempdir()
            .expect("create temp dir");
        TestDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes `bytes` to `rel` (creating parents) and returns the full path.
    pub fn write(&self, rel: impl AsRef<Path>, bytes: &[u8]) -> PathBuf {
        let p = self.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&p, bytes).unwrap();
        p
    }

    /// A new, initialised repository at `rel`.
    pub fn repo(&self, rel: &str) -> Cairn {
        Cairn::init(self.join(rel))
    }
}

// ---------------------------------------------------------------------------------------------
// Running the binary

/// The binary bound to one repository path.
#[derive(Clone, Debug)]
pub struct Cairn {
    pub repo: PathBuf,
}

impl Cairn {
    /// Runs `repo init` and checks it succeeded.
    pub fn init(repo: PathBuf) -> Cairn {
        let c = Cairn { repo };
        c.ok(&["repo", "init"]);
        c
    }

    /// A handle without creating anything (for error tests).
    pub fn at(repo: impl Into<PathBuf>) -> Cairn {
        Cairn { repo: repo.into() }
    }

    /// A `cairn -r REPO` command with a clean environment for cairn's own variables.
    pub fn cmd(&self) -> Command {
        let mut c = bare_cmd();
        c.arg("-r").arg(&self.repo);
        c
    }

    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let out = self.cmd().args(args).output().expect("spawn cairn");
        assert_no_panic(&out);
        out
    }

    /// Runs and asserts exit 0; returns the output.
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let out = self.run(args);
        assert_success(&out, &describe_args(args));
        out
    }

    /// Runs with `stdin` as standard input.
    pub fn run_stdin<S: AsRef<OsStr>>(&self, args: &[S], stdin: &[u8]) -> Output {
        let mut child = self
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cairn");
        let mut pipe = child.stdin.take().unwrap();
        let data = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            // The process may stop reading early (on error); that is not the test's concern.
            let _ = pipe.write_all(&data);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert_no_panic(&out);
        out
    }

    /// `snapshot tar FILE --json EXTRA...`, asserted successful; returns the JSON object.
    pub fn snapshot_file(&self, file: &Path, extra: &[&str]) -> Value {
        let mut args: Vec<OsString> = vec!["snapshot".into(), "tar".into(), file.into()];
        args.extend(extra.iter().map(OsString::from));
        args.push("--json".into());
        parse_json(&self.ok(&args))
    }

    /// `snapshot tar - --json EXTRA...` fed with `bytes`.
    pub fn snapshot_stdin(&self, bytes: &[u8], extra: &[&str]) -> Value {
        let mut args = vec!["snapshot", "tar", "-"];
        args.extend_from_slice(extra);
        args.push("--json");
        let out = self.run_stdin(&args, bytes);
        assert_success(&out, "snapshot tar -");
        parse_json(&out)
    }

    /// `snapshot dir PATH --json EXTRA...`.
    pub fn snapshot_dir(&self, dir: &Path, extra: &[&str]) -> Value {
        let mut args: Vec<OsString> = vec!["snapshot".into(), "dir".into(), dir.into()];
        args.extend(extra.iter().map(OsString::from));
        args.push("--json".into());
        parse_json(&self.ok(&args))
    }

    /// `snapshots --json`.
    pub fn list(&self) -> Vec<Value> {
        let v = parse_json(&self.ok(&["snapshots", "--json"]));
        v.as_array().expect("snapshots --json is an array").clone()
    }

    pub fn list_ids(&self) -> Vec<String> {
        self.list().iter().map(|s| str_field(s, "id")).collect()
    }

    /// `restore SNAP --output -`, asserted successful; returns the bytes.
    pub fn restore_stdout(&self, snap: &str) -> Vec<u8> {
        let out = self.ok(&["restore", snap, "--output", "-"]);
        out.stdout
    }

    /// `restore SNAP --output FILE`, asserted successful; returns the file's bytes.
    pub fn restore_file(&self, snap: &str, file: &Path) -> Vec<u8> {
        let args: Vec<OsString> = vec![
            "restore".into(),
            snap.into(),
            "--output".into(),
            file.into(),
        ];
        self.ok(&args);
        fs::read(file).unwrap()
    }

    /// `restore SNAP --extract DIR` (not asserted).
    pub fn extract(&self, snap: &str, dir: &Path) -> Output {
        let args: Vec<OsString> = vec![
            "restore".into(),
            snap.into(),
            "--extract".into(),
            dir.into(),
        ];
        self.run(&args)
    }

    pub fn stats(&self) -> Value {
        parse_json(&self.ok(&["repo", "stats", "--json"]))
    }

    /// Every listed snapshot restores, and its bytes hash to the digest the listing gives.
    /// Returns the listing.
    pub fn assert_all_listed_restore(&self) -> Vec<Value> {
        let list = self.list();
        for s in &list {
            let id = str_field(s, "id");
            let bytes = self.restore_stdout(&id);
            let stream = &s["streams"][0];
            assert_eq!(
                blake3_hex(&bytes),
                str_field(stream, "digest"),
                "snapshot {id} restores to bytes that do not match its digest"
            );
            assert_eq!(bytes.len() as u64, u64_field(stream, "bytes"));
        }
        list
    }
}

/// The binary with CAIRN_REPO removed, so the caller's environment cannot leak in.
pub fn bare_cmd() -> Command {
    let mut c = Command::new(cairn_bin());
    c.env_remove("CAIRN_REPO").stdin(Stdio::null());
    c
}

fn describe_args<S: AsRef<OsStr>>(args: &[S]) -> String {
    args.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn assert_no_panic(out: &Output) {
    let err = stderr(out);
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "cairn panicked:\n{err}"
    );
    // A panic exits with 101; a signal has no code.
    assert_ne!(out.status.code(), Some(101), "cairn panicked:\n{err}");
}

pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "`cairn {what}` failed with {:?}\nstderr:\n{}",
        out.status,
        stderr(out)
    );
}

/// Asserts a failure with the given exit code and a message on stderr; returns stderr.
pub fn assert_fails(out: &Output, code: i32) -> String {
    assert_no_panic(out);
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit code {code}, got {:?}\nstderr:\n{err}\nstdout:\n{}",
        out.status,
        stdout(out)
    );
    assert!(
        !err.trim().is_empty(),
        "failure without a message on stderr"
    );
    err
}

/// The error message proper must be one line (clap's usage output is exempt).
pub fn assert_one_line_error(err: &str) {
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected a one-line message, got:\n{err}");
}

pub fn parse_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
            stdout(out),
            stderr(out)
        )
    })
}

pub fn str_field(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("field {key:?} missing or not a string in {v}"))
        .to_string()
}

pub fn u64_field(v: &Value, key: &str) -> u64 {
    v.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("field {key:?} missing or not an unsigned integer in {v}"))
}

pub fn is_hex_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

// ---------------------------------------------------------------------------------------------
// The library

pub mod lib {
    use cairn::format::manifest::StreamEntry;
    use cairn::progress::Silent;
    use cairn::{InitOptions, Repo, SnapshotOutcome, SnapshotSpec, StreamInput};
    use std::path::Path;

    pub fn init(path: &Path) -> Repo {
        Repo::init(path, &InitOptions::default()).expect("Repo::init")
    }

    /// One snapshot of one opaque stream (`role` "data" or "tar").
    pub fn snapshot(repo: &Repo, bytes: &[u8], role: &str) -> SnapshotOutcome {
        let spec = SnapshotSpec {
            kind: "test".into(),
            source: "props".into(),
            ..SnapshotSpec::default()
        };
        let input = StreamInput {
            name: "data".into(),
            role: role.into(),
            reader: Box::new(std::io::Cursor::new(bytes.to_vec())),
        };
        repo.snapshot(spec, vec![input], &Silent)
            .expect("Repo::snapshot")
    }

    pub fn restore(repo: &Repo, stream: &StreamEntry) -> Vec<u8> {
        let mut out = Vec::new();
        cairn::restore::restore_stream(repo, stream, &mut out, &Silent).expect("restore_stream");
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Data

/// SplitMix64: small, seedable, reproducible.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (hi exclusive, hi > lo).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.range(0, 100) < percent
    }

    /// Log-uniform in `lo..hi`: many small values, some large ones.
    pub fn log_range(&mut self, lo: u64, hi: u64) -> u64 {
        let (l, h) = ((lo as f64).ln(), (hi as f64).ln());
        let f = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((l + f * (h - l)).exp() as u64).clamp(lo, hi - 1)
    }
}

/// Incompressible bytes determined by `seed` (BLAKE3 XOF: fast even in debug builds).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(b"cairn-it random")
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// Compressible bytes that do not repeat, so they neither deduplicate internally nor look
/// random: every 128 bytes are 64 random ones and a fixed phrase. Built from block copies, since a
/// per-byte loop is too slow in debug builds.
pub fn text_bytes(seed: u64, len: usize) -> Vec<u8> {
    const PHRASE: &[u8; 64] = b" lorem ipsum dolor sit amet, consectetur adipiscing elit, sed..\n";
    let random = random_bytes(seed ^ 0x7465_7874, len.div_ceil(2) + 64);
    let mut out = vec![0u8; len];
    for (dst, src) in out.chunks_mut(128).zip(random.chunks_exact(64)) {
        let n = dst.len().min(64);
        dst[..n].copy_from_slice(&src[..n]);
        if dst.len() > 64 {
            let m = dst.len() - 64;
            dst[64..].copy_from_slice(&PHRASE[..m]);
        }
    }
    out
}

pub fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

pub fn blake3_file(path: &Path) -> String {
    let mut h = blake3::Hasher::new();
    h.update_reader(fs::File::open(path).unwrap()).unwrap();
    h.finalize().to_hex().to_string()
}

// ---------------------------------------------------------------------------------------------
// Tar archives and trees

/// Runs GNU tar with `args`, asserting success.
pub fn gnu_tar(args: &[&OsStr]) {
    let out = Command::new("/usr/bin/tar")
        .args(args)
        .env("LC_ALL", "C.UTF-8")
        .output()
        .expect("run /usr/bin/tar");
    assert!(
        out.status.success(),
        "tar {:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `tar -c` of the contents of `dir` into `archive`, members sorted by name.
pub fn tar_dir(dir: &Path, archive: &Path, extra: &[&str]) {
    let mut args: Vec<&OsStr> = vec![OsStr::new("--sort=name")];
    args.extend(extra.iter().map(OsStr::new));
    args.extend([
        OsStr::new("-C"),
        dir.as_os_str(),
        OsStr::new("-cf"),
        archive.as_os_str(),
        OsStr::new("."),
    ]);
    gnu_tar(&args);
}

/// `tar -x` of `archive` into `dir` (created), preserving permissions.
pub fn untar(archive: &Path, dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    gnu_tar(&[
        OsStr::new("-xpf"),
        archive.as_os_str(),
        OsStr::new("-C"),
        dir.as_os_str(),
    ]);
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn set_mtime(path: &Path, secs: i64) {
    let t = filetime::FileTime::from_unix_time(secs, 0);
    filetime::set_symlink_file_times(path, t, t).unwrap();
}

pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: c is a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o640) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

/// Creates a character device; false when not permitted (not root, or no CAP_MKNOD).
pub fn mknod_char(path: &Path, major: u32, minor: u32) -> bool {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let dev = libc::makedev(major, minor);
    // SAFETY: c is a valid NUL-terminated path.
    unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, dev) == 0 }
}

/// What a tree comparison looks at for one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    File { digest: String },
    Dir,
    Symlink { target: OsString },
    Fifo,
    Char { rdev: u64 },
    Block { rdev: u64 },
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    pub mode: u32,
    /// Whole seconds; `None` for symlinks (not compared).
    pub mtime: Option<i64>,
    pub uid: u32,
    pub gid: u32,
    /// For a multiply-linked non-directory: the first path (in byte order) of its inode.
    pub link_group: Option<OsString>,
}

#[derive(Clone, Copy, Debug)]
pub struct Compare {
    pub dir_mtimes: bool,
    pub owners: bool,
}

impl Compare {
    pub const ALL: Compare = Compare {
        dir_mtimes: true,
        owners: true,
    };
}

/// Everything under `root` (not `root` itself), keyed by relative path bytes.
pub fn describe_tree(root: &Path) -> BTreeMap<OsString, Node> {
    let mut entries = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<OsString>> = HashMap::new();
    walk(root, root, &mut entries, &mut inodes);
    for paths in inodes.values_mut() {
        paths.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        if paths.len() > 1 {
            for p in paths.iter() {
                entries.get_mut(p).unwrap().link_group = Some(paths[0].clone());
            }
        }
    }
    entries
}

fn walk(
    root: &Path,
    dir: &Path,
    entries: &mut BTreeMap<OsString, Node>,
    inodes: &mut HashMap<(u64, u64), Vec<OsString>>,
) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let path = e.path();
        let rel = path.strip_prefix(root).unwrap().as_os_str().to_owned();
        let md = fs::symlink_metadata(&path).unwrap();
        let ft = md.file_type();
        let kind = if ft.is_file() {
            Kind::File {
                digest: blake3_file(&path),
            }
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink {
                target: fs::read_link(&path).unwrap().into_os_string(),
            }
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_char_device() {
            Kind::Char { rdev: md.rdev() }
        } else if ft.is_block_device() {
            Kind::Block { rdev: md.rdev() }
        } else {
            Kind::Other
        };
        if !ft.is_dir() && md.nlink() > 1 {
            inodes
                .entry((md.dev(), md.ino()))
                .or_default()
                .push(rel.clone());
        }
        entries.insert(
            rel,
            Node {
                kind,
                mode: md.mode() & 0o7777,
                mtime: (!ft.is_symlink()).then(|| md.mtime()),
                uid: md.uid(),
                gid: md.gid(),
                link_group: None,
            },
        );
        if ft.is_dir() {
            walk(root, &path, entries, inodes);
        }
    }
}

/// Asserts that `actual` recreates `expected`, listing every difference.
pub fn assert_same_tree(expected: &Path, actual: &Path, cmp: Compare) {
    let want = describe_tree(expected);
    let got = describe_tree(actual);
    let mut diffs = Vec::new();
    for (path, w) in &want {
        let shown = String::from_utf8_lossy(path.as_bytes());
        let Some(g) = got.get(path) else {
            diffs.push(format!("missing: {shown}"));
            continue;
        };
        if w.kind != g.kind {
            diffs.push(format!("{shown}: kind {:?} != {:?}", g.kind, w.kind));
        }
        let symlink = matches!(w.kind, Kind::Symlink { .. });
        if !symlink && w.mode != g.mode {
            diffs.push(format!("{shown}: mode {:o} != {:o}", g.mode, w.mode));
        }
        let check_mtime = !symlink && (cmp.dir_mtimes || w.kind != Kind::Dir);
        if check_mtime && w.mtime != g.mtime {
            diffs.push(format!("{shown}: mtime {:?} != {:?}", g.mtime, w.mtime));
        }
        if cmp.owners && (w.uid, w.gid) != (g.uid, g.gid) {
            diffs.push(format!(
                "{shown}: owner {}:{} != {}:{}",
                g.uid, g.gid, w.uid, w.gid
            ));
        }
        if w.link_group != g.link_group {
            diffs.push(format!(
                "{shown}: hard-link group {:?} != {:?}",
                g.link_group, w.link_group
            ));
        }
    }
    for path in got.keys().filter(|p| !want.contains_key(*p)) {
        diffs.push(format!(
            "unexpected: {}",
            String::from_utf8_lossy(path.as_bytes())
        ));
    }
    assert!(
        diffs.is_empty(),
        "extracted tree differs from {}:\n{}",
        expected.display(),
        diffs.join("\n")
    );
}

/// Files in `dir` (recursively), for "nothing left behind" checks.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Pack files of a repository, largest first.
pub fn pack_files(repo: &Path) -> Vec<(PathBuf, u64)> {
    let mut packs: Vec<(PathBuf, u64)> = files_under(&repo.join("packs"))
        .into_iter()
        .map(|p| {
            let len = fs::metadata(&p).unwrap().len();
            (p, len)
        })
        .collect();
    packs.sort_by_key(|p| std::cmp::Reverse(p.1));
    packs
}

/// A seed from CAIRN_TEST_SEED or the given default, printed so a failure can be replayed.
pub fn seed(default: u64) -> u64 {
    let s = std::env::var("CAIRN_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    eprintln!("seed {s} (set CAIRN_TEST_SEED to replay)");
    s
}

/// Builds a varied tree under `root`: nested directories, files of mixed sizes (incompressible
/// and text), several modes, relative, absolute and dangling symlinks, a hard-link pair, an empty
/// file and an empty directory, all with fixed whole-second mtimes. Returns the bytes of file
/// content written.
pub fn build_sample_tree(root: &Path, seed: u64, files: usize, max_size: u64) -> u64 {
    let mut rng = Rng::new(seed);
    let mut total = 0u64;
    let dirs = ["", "etc", "var/lib/data", "var/log", "srv/app/static"];
    for d in dirs {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    for i in 0..files {
        let dir = dirs[rng.range(0, dirs.len() as u64) as usize];
        let len = rng.log_range(1, max_size) as usize;
        let bytes = if rng.chance(40) {
            random_bytes(seed ^ (i as u64) << 20, len)
        } else {
            text_bytes(seed ^ (i as u64) << 20, len)
        };
        let p = root.join(dir).join(format!("file-{i:03}.bin"));
        fs::write(&p, &bytes).unwrap();
        total += len as u64;
        let mode = [0o644, 0o600, 0o755, 0o640, 0o444][rng.range(0, 5) as usize];
        chmod(&p, mode);
    }
    fs::write(root.join("etc/empty"), b"").unwrap();
    fs::create_dir_all(root.join("var/empty-dir")).unwrap();
    let shared = text_bytes(seed ^ 0xAB, 20_000);
    fs::write(root.join("var/lib/data/linked-a"), &shared).unwrap();
    fs::hard_link(
        root.join("var/lib/data/linked-a"),
        root.join("srv/app/linked-b"),
    )
    .unwrap();
    total += shared.len() as u64;
    std::os::unix::fs::symlink("../etc/file-000.bin", root.join("var/rel-link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("srv/dangling")).unwrap();
    std::os::unix::fs::symlink("data", root.join("var/lib/dir-link")).unwrap();
    set_tree_mtimes(root, 1_600_000_000 + (seed % 1000) as i64);
    total
}

/// Gives every entry under `root` (and `root`) a whole-second mtime, deepest first so setting a
/// child never disturbs a parent afterwards.
pub fn set_tree_mtimes(root: &Path, base: i64) {
    let mut all: Vec<PathBuf> = Vec::new();
    collect_paths(root, &mut all);
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in all.iter().enumerate() {
        set_mtime(p, base + i as i64 * 37);
    }
    set_mtime(root, base - 1);
}

fn collect_paths(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let is_dir = fs::symlink_metadata(&p).unwrap().is_dir();
        out.push(p.clone());
        if is_dir {
            collect_paths(&p, out);
        }
    }
}

/// Waits for `child` and returns its exit code and peak RSS in bytes (from wait4's rusage, which
/// covers this child alone).
pub fn wait_with_max_rss(child: std::process::Child) -> (Option<i32>, u64) {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our unreaped child; the pointers are valid.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4");
    std::mem::forget(child);
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    (code, usage.ru_maxrss as u64 * 1024)
}

/// The page size of `sqlite_like` files.
pub const PAGE: usize = 4096;

/// A file that looks like an SQLite database with 4 KiB pages: the real header, then pages of
/// compressible text, each different (numbered), as in a real database.
pub fn sqlite_like(pages: usize, seed: u64) -> Vec<u8> {
    let mut db = text_bytes(seed, pages * PAGE);
    let mut header = b"SQLite format 3\0".to_vec();
    header.extend_from_slice(&(PAGE as u16).to_be_bytes());
    header.extend_from_slice(&[1, 1, 0, 64, 32, 32]);
    db[..header.len()].copy_from_slice(&header);
    for (n, page) in db.chunks_mut(PAGE).enumerate().skip(1) {
        page[..8].copy_from_slice(&(n as u64).to_le_bytes());
    }
    db
}
