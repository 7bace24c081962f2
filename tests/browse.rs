//! ls, cat, diff, filtered extraction and per-source accounting, through the library (to count
//! the bytes read from packs) and through the real binary.
//!
//! The volume-like tar has about 3000 files in a few MB. So that "reads < 1% of the stream"
//! means something at that size, the library-level repository uses 8 KiB average chunks (the
//! default is 64 KiB, which is meant for volumes of gigabytes); the numbers measured are printed
//! (run with `--nocapture`).

use assert_cmd::Command;
use cairn::browse::PathFilter;
use cairn::format::config::{ChunkerAlgorithm, ChunkerParams};
use cairn::format::manifest::{Manifest, StreamEntry};
use cairn::progress::Silent;
use cairn::tree::LeafWalker;
use cairn::{Id, InitOptions, Repo, SnapshotSpec, StreamInput};
use serde_json::Value;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const MTIME: u64 = 1_700_000_000;

// ---------------------------------------------------------------------------------------------
// Building tars

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[derive(Clone)]
struct File {
    path: String,
    content: Vec<u8>,
    mtime: u64,
}

/// About 3000 files in 60 directories of 5 subdirectories, 256 B to 4.5 KiB each.
fn volume() -> Vec<File> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut files = Vec::new();
    for d in 0..60 {
        for s in 0..5 {
            for _ in 0..10 {
                let len = 256 + (rng.next() % 4352) as usize;
                files.push(File {
                    path: format!("dir-{d:02}/sub-{s}/file-{:04}.dat", files.len()),
                    content: rng.bytes(len),
                    mtime: MTIME,
                });
            }
        }
    }
    files
}

/// A tar of `files` in the given order, each directory announced before its first file.
fn tar_of(files: &[File]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs = BTreeSet::new();
    for file in files {
        let mut parent = String::new();
        for part in file
            .path
            .split('/')
            .rev()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            if dirs.insert(parent.clone()) {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(MTIME);
                h.set_size(0);
                builder
                    .append_data(&mut h, format!("{parent}/"), std::io::empty())
                    .unwrap();
            }
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_mtime(file.mtime);
        h.set_size(file.content.len() as u64);
        builder
            .append_data(&mut h, &file.path, &file.content[..])
            .unwrap();
    }
    builder.into_inner().unwrap()
}

/// A raw header block: any name bytes (`..`, absolute, non-UTF-8), no checks.
fn raw_header(name: &[u8], kind: u8, size: u64, link: &[u8]) -> [u8; 512] {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_mode(if kind == b'5' { 0o755 } else { 0o644 });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_size(size);
    h.set_cksum();
    *h.as_bytes()
}

fn raw_member(out: &mut Vec<u8>, name: &[u8], kind: u8, data: &[u8], link: &[u8]) {
    out.extend_from_slice(&raw_header(name, kind, data.len() as u64, link));
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// A member whose path is given by a PAX extended header (`x`), as POSIX tar writes long names.
fn pax_member(out: &mut Vec<u8>, path: &[u8], data: &[u8]) {
    let body_len = b" path=".len() + path.len() + 1;
    let mut total = body_len + 1;
    while total.to_string().len() + body_len != total {
        total = total.to_string().len() + body_len;
    }
    let mut record = format!("{total} path=").into_bytes();
    record.extend_from_slice(path);
    record.push(b'\n');
    raw_member(out, b"PaxHeaders/x", b'x', &record, b"");
    raw_member(out, &path[..90], b'0', data, b"");
}

fn end_tar(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0u8; 1024]);
}

// ---------------------------------------------------------------------------------------------
// Repositories

fn small_chunks() -> InitOptions {
    InitOptions {
        chunker: ChunkerParams {
            algorithm: ChunkerAlgorithm::FastCdc2020,
            min_size: 2048,
            avg_size: 8192,
            max_size: 32768,
            normalization: 1,
            page_align: true,
            member_group: None,
        },
        ..Default::default()
    }
}

fn snapshot(repo: &Repo, source: &str, tar: Vec<u8>) -> (Id, Manifest) {
    let out = repo
        .snapshot(
            SnapshotSpec {
                kind: "tar".into(),
                source: source.into(),
                ..Default::default()
            },
            vec![StreamInput {
                name: "data".into(),
                role: "tar".into(),
                reader: Box::new(std::io::Cursor::new(tar)),
            }],
            &Silent,
        )
        .unwrap();
    (out.id, out.manifest)
}

fn cairn(repo: &Path) -> Command {
    let mut cmd = Command::cargo_bin("cairn").unwrap();
    cmd.arg("-r").arg(repo);
    cmd.env_remove("CAIRN_REPO");
    cmd
}

/// Runs the binary, expecting success and a silent stderr (no progress when not a terminal).
fn run_quietly(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "unexpected stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Stored (compressed) bytes of the data blobs of a stream tree.
fn stored_bytes_of(repo: &Repo, root: &Id, len: u64) -> u64 {
    let mut walker = LeafWalker::new(repo, root, 0, len).unwrap();
    let mut total = 0;
    while let Some(leaf) = walker.next_leaf().unwrap() {
        total += repo.locate(&leaf.id).unwrap().stored_share();
    }
    total
}

fn stream(m: &Manifest) -> &StreamEntry {
    &m.streams[0]
}

/// Snapshot B: a few files modified, two removed, two added, and one directory's files in a
/// different order (as `docker export` may produce), which must not show as changes.
fn changed_volume(
    files: &[File],
) -> (
    Vec<File>,
    BTreeSet<String>,
    BTreeSet<String>,
    BTreeSet<String>,
) {
    let mut rng = Rng(7);
    let mut b: Vec<File> = files.to_vec();
    b[100].content = rng.bytes(b[100].content.len() + 1000);
    b[1500].content = rng.bytes(b[1500].content.len());
    b[1500].mtime = MTIME + 60;
    b[2900].content.truncate(10);
    let modified: BTreeSet<String> = [100, 1500, 2900]
        .iter()
        .map(|&i| b[i].path.clone())
        .collect();
    let removed: BTreeSet<String> = [2000, 10].iter().map(|&i| b[i].path.clone()).collect();
    b.remove(2000);
    b.remove(10);
    let start = b
        .iter()
        .position(|f| f.path.starts_with("dir-20/"))
        .unwrap();
    let end = b
        .iter()
        .rposition(|f| f.path.starts_with("dir-20/"))
        .unwrap();
    b[start..=end].reverse();
    b.insert(
        600,
        File {
            path: "dir-05/new-file.dat".into(),
            content: rng.bytes(3000),
            mtime: MTIME,
        },
    );
    b.push(File {
        path: "zzz/new.dat".into(),
        content: rng.bytes(100),
        mtime: MTIME,
    });
    let added: BTreeSet<String> = ["dir-05/new-file.dat", "zzz", "zzz/new.dat"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    (b, added, removed, modified)
}

fn paths(members: &[cairn::tarscan::Member]) -> BTreeSet<String> {
    members
        .iter()
        .map(|m| String::from_utf8(cairn::browse::normalize_path(&m.path)).unwrap())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The volume: ls, cat, diff, filtered extraction

#[test]
fn volume_ls_cat_diff_and_filtered_extract() {
    let dir = tempfile::tempdir().unwrap();
    let repo_path = dir.path().join("repo");
    let repo = Repo::init(&repo_path, &small_chunks()).unwrap();
    let files = volume();
    let tar_a = tar_of(&files);
    let (id_a, a) = snapshot(&repo, "vol", tar_a.clone());
    let (b_files, added, removed, modified) = changed_volume(&files);
    let (id_b, b) = snapshot(&repo, "vol", tar_of(&b_files));
    let index_a = stream(&a).members.clone().unwrap();
    assert_eq!(index_a.status, "complete");
    assert!(index_a.count > 3000);
    let stored = a.added.stored_bytes;
    let index_stored = stored_bytes_of(&repo, &index_a.root, index_a.length);
    eprintln!(
        "stream {} B ({} members) stored as {stored} B; member index {} B stored as {index_stored} B",
        stream(&a).length,
        index_a.count,
        index_a.length
    );

    // cat of one small file reads the index and that file's chunks only.
    let target = &files[1234];
    let before = repo.packs().bytes_read();
    let mut out = Vec::new();
    cairn::browse::cat(&repo, stream(&a), target.path.as_bytes(), &mut out).unwrap();
    let cat_read = repo.packs().bytes_read() - before;
    assert_eq!(out, target.content);
    eprintln!(
        "cat {} ({} B): read {cat_read} B from packs = {:.3}% of the stream's stored bytes",
        target.path,
        target.content.len(),
        cat_read as f64 * 100.0 / stored as f64
    );
    assert!(cat_read * 100 < stored, "cat read {cat_read} of {stored}");

    // diff finds exactly the changes, reading little.
    let before = repo.packs().bytes_read();
    let d =
        cairn::diff::diff_members(&repo, &index_a, stream(&b).members.as_ref().unwrap()).unwrap();
    let diff_read = repo.packs().bytes_read() - before;
    eprintln!(
        "diff (handful of changes + one reordered directory): read {diff_read} B = {:.3}% of the stream's stored bytes, {:.1}% of the index's; {:?}",
        diff_read as f64 * 100.0 / stored as f64,
        diff_read as f64 * 100.0 / index_stored as f64,
        d.stats
    );
    assert_eq!(paths(&d.added), added);
    assert_eq!(paths(&d.removed), removed);
    let got_modified: BTreeSet<String> = d
        .modified
        .iter()
        .map(|m| String::from_utf8(m.new.path.clone()).unwrap())
        .collect();
    assert_eq!(got_modified, modified);
    assert!(!d.stats.full_decode);
    assert!(diff_read * 100 < stored);
    // At most both indexes once (plus a few tree nodes), however the changes are spread.
    let index_b = stream(&b).members.as_ref().unwrap();
    let both_indexes = index_stored + stored_bytes_of(&repo, &index_b.root, index_b.length);
    assert!(
        diff_read <= both_indexes + both_indexes / 10,
        "{diff_read} > {both_indexes}"
    );

    // One changed file: the diff opens a few nodes and reads a small part of the index.
    let mut c_files = files.clone();
    c_files[1700].content.push(b'!');
    let (_, c) = snapshot(&repo, "vol", tar_of(&c_files));
    let before = repo.packs().bytes_read();
    let d =
        cairn::diff::diff_members(&repo, &index_a, stream(&c).members.as_ref().unwrap()).unwrap();
    let one_read = repo.packs().bytes_read() - before;
    eprintln!(
        "diff (one file changed): read {one_read} B = {:.1}% of the index's stored bytes; {:?}",
        one_read as f64 * 100.0 / index_stored as f64,
        d.stats
    );
    assert!(d.added.is_empty() && d.removed.is_empty());
    assert_eq!(d.modified.len(), 1);
    assert_eq!(d.modified[0].new.path, files[1700].path.as_bytes());
    assert_eq!(d.modified[0].changes, vec!["size"]);
    assert!(one_read * 3 < index_stored, "{one_read} of {index_stored}");
    assert!(d.stats.nodes_read <= 4);

    // Identical snapshots: nothing read at all.
    let (_, a2) = snapshot(&repo, "vol", tar_a);
    let before = repo.packs().bytes_read();
    let d =
        cairn::diff::diff_members(&repo, &index_a, stream(&a2).members.as_ref().unwrap()).unwrap();
    assert!(d.is_empty());
    assert_eq!(repo.packs().bytes_read(), before);

    // Filtered extraction reads only the selected members' chunks.
    let filter = PathFilter::new(&["dir-07/sub-2".into()], &["**/file-0375.dat".into()]).unwrap();
    let out_dir = dir.path().join("lib-extract");
    let before = repo.packs().bytes_read();
    let summary =
        cairn::browse::extract_filtered(&repo, stream(&a), &out_dir, &filter, &Silent).unwrap();
    let extract_read = repo.packs().bytes_read() - before;
    eprintln!(
        "extract --include dir-07/sub-2 ({} members, {} B): read {extract_read} B = {:.2}% of the stream's stored bytes",
        summary.members,
        summary.bytes,
        extract_read as f64 * 100.0 / stored as f64
    );
    let expected: BTreeSet<String> = files
        .iter()
        .filter(|f| f.path.starts_with("dir-07/sub-2/") && !f.path.ends_with("file-0375.dat"))
        .map(|f| f.path.clone())
        .collect();
    assert_eq!(expected.len(), 9);
    assert_eq!(files_under(&out_dir), expected);
    for f in files.iter().filter(|f| expected.contains(&f.path)) {
        assert_eq!(std::fs::read(out_dir.join(&f.path)).unwrap(), f.content);
    }
    assert!(extract_read * 50 < stored);
    drop(repo);

    cli_checks(&repo_path, &files, &b_files, id_a, id_b);
}

fn files_under(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).unwrap().to_path_buf();
                out.insert(rel.to_string_lossy().into_owned());
            }
        }
    }
    out
}

fn cli_checks(repo: &Path, files: &[File], b_files: &[File], id_a: Id, id_b: Id) {
    let a = id_a.to_hex();
    let b = id_b.to_hex();

    // Top level: the 60 directories, sorted, marked with a slash.
    let top = lines(&run_quietly(cairn(repo).args(["ls", &a])));
    let want: Vec<String> = (0..60).map(|d| format!("dir-{d:02}/")).collect();
    assert_eq!(top, want);

    // A directory's direct children; a file names itself.
    let sub = lines(&run_quietly(cairn(repo).args([
        "ls",
        &a,
        "./dir-03/sub-1/",
    ])));
    let want: Vec<String> = files
        .iter()
        .filter(|f| f.path.starts_with("dir-03/sub-1/"))
        .map(|f| f.path.clone())
        .collect();
    assert_eq!(sub, want);
    let one = lines(&run_quietly(cairn(repo).args([
        "ls",
        &a,
        &files[5].path,
        "-l",
    ])));
    assert_eq!(one.len(), 1);
    assert!(one[0].starts_with("-rw-r--r--"), "{}", one[0]);
    assert!(one[0].contains("1000/1000") && one[0].ends_with(&files[5].path));

    // Recursive: every member, directories included.
    let all = lines(&run_quietly(cairn(repo).args(["ls", &a, "--recursive"])));
    assert_eq!(all.len(), files.len() + 60 + 300);

    // JSON fields.
    let json: Value = serde_json::from_slice(&run_quietly(cairn(repo).args([
        "ls",
        &a,
        "dir-00/sub-0",
        "--json",
    ])))
    .unwrap();
    let arr = json.as_array().unwrap();
    assert_eq!(arr.len(), 10);
    let first = &arr[0];
    assert_eq!(first["path"], files[0].path.as_str());
    assert_eq!(first["type"], "file");
    assert_eq!(first["size"], files[0].content.len() as u64);
    assert_eq!(first["mode"], 0o644);
    assert_eq!(first["mtime"], MTIME);
    assert_eq!(first["uid"], 1000);

    // A missing path is an error.
    let out = cairn(repo)
        .args(["ls", &a, "no/such/dir"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file or directory"));

    // cat writes exactly the file; directories are refused.
    let got = run_quietly(cairn(repo).args(["cat", &b, &b_files[99].path]));
    assert_eq!(got, b_files[99].content);
    let out = cairn(repo).args(["cat", &b, "dir-01"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a directory"));

    // diff, human and JSON.
    let text = lines(&run_quietly(cairn(repo).args(["diff", &a, &b])));
    let marks: Vec<&str> = text.iter().map(|l| &l[..1]).collect();
    assert_eq!(marks.iter().filter(|m| **m == "+").count(), 3, "{text:?}");
    assert_eq!(marks.iter().filter(|m| **m == "-").count(), 2, "{text:?}");
    assert_eq!(marks.iter().filter(|m| **m == "M").count(), 3, "{text:?}");
    assert!(
        text.iter()
            .any(|l| l.starts_with("M  ") && l.contains(&files[100].path) && l.contains("+1000 B"))
    );
    assert_eq!(text.last().unwrap(), "3 added, 2 removed, 3 modified");
    let json: Value =
        serde_json::from_slice(&run_quietly(cairn(repo).args(["diff", &a, &b, "--json"]))).unwrap();
    assert_eq!(json["added"].as_array().unwrap().len(), 3);
    assert_eq!(json["removed"].as_array().unwrap().len(), 2);
    let modified = json["modified"].as_array().unwrap();
    assert_eq!(modified.len(), 3);
    let grown = modified
        .iter()
        .find(|m| m["path"] == files[100].path.as_str())
        .unwrap();
    assert_eq!(grown["size_change"], 1000);
    assert_eq!(grown["changes"][0], "size");
    assert_eq!(json["streams"][0]["change"], "modified");

    // restore --extract with filters through the binary.
    let out_dir = repo.parent().unwrap().join("cli-extract");
    run_quietly(
        cairn(repo)
            .args(["restore", &b, "--extract"])
            .arg(&out_dir)
            .args([
                "--include",
                "dir-1?/sub-4",
                "--include",
                "zzz",
                "--exclude",
                "dir-12",
            ]),
    );
    let expected: BTreeSet<String> = b_files
        .iter()
        .filter(|f| {
            (f.path.starts_with("dir-1")
                && f.path[6..].starts_with("/sub-4/")
                && !f.path.starts_with("dir-12/"))
                || f.path.starts_with("zzz/")
        })
        .map(|f| f.path.clone())
        .collect();
    assert_eq!(expected.len(), 91);
    assert_eq!(files_under(&out_dir), expected);
    let out = cairn(repo)
        .args(["restore", &b, "--output", "x", "--include", "a"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("need --extract"));
}

// ---------------------------------------------------------------------------------------------
// Odd names and links

#[test]
fn odd_names_and_links_are_listed_catted_and_extracted() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    run_quietly(cairn(&repo).args(["repo", "init"]));
    let long_gnu = format!("deep/{}/{}.txt", "g".repeat(120), "n".repeat(60));
    let long_pax = format!("pax/{}/{}.txt", "p".repeat(100), "q".repeat(80));
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |path: &[u8], data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o640);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h.set_size(data.len() as u64);
        builder
            .append_data(&mut h, Path::new(OsStr::from_bytes(path)), data)
            .unwrap();
    };
    add(b"with space/file name.txt", b"spaces\n");
    add(b"bad\xffname.txt", b"latin-1\n");
    add(long_gnu.as_bytes(), b"gnu long\n");
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Link);
    link.set_mode(0o640);
    link.set_uid(0);
    link.set_gid(0);
    link.set_mtime(MTIME);
    link.set_size(0);
    builder
        .append_link(&mut link, "links/hard", "with space/file name.txt")
        .unwrap();
    let mut sym = tar::Header::new_gnu();
    sym.set_entry_type(tar::EntryType::Symlink);
    sym.set_mode(0o777);
    sym.set_uid(0);
    sym.set_gid(0);
    sym.set_mtime(MTIME);
    sym.set_size(0);
    builder
        .append_link(&mut sym, "links/sym", "../with space/file name.txt")
        .unwrap();
    let mut bytes = builder.into_inner().unwrap();
    // Drop the end-of-archive blocks to add a PAX member by hand.
    bytes.truncate(bytes.len() - 1024);
    pax_member(&mut bytes, long_pax.as_bytes(), b"pax long\n");
    end_tar(&mut bytes);
    let tar_path = dir.path().join("odd.tar");
    std::fs::write(&tar_path, &bytes).unwrap();
    run_quietly(cairn(&repo).args(["snapshot", "tar"]).arg(&tar_path));

    let json: Value = serde_json::from_slice(&run_quietly(
        cairn(&repo).args(["ls", "latest", "-R", "--json"]),
    ))
    .unwrap();
    let arr = json.as_array().unwrap();
    let find = |p: &str| {
        arr.iter()
            .find(|e| e["path"] == p)
            .unwrap_or_else(|| panic!("{p} in {json}"))
    };
    assert_eq!(find("with space/file name.txt")["size"], 7);
    let bad = find("bad\u{fffd}name.txt");
    assert_eq!(bad["path_bytes"], hex::encode(b"bad\xffname.txt"));
    assert_eq!(find(&long_gnu)["type"], "file");
    assert_eq!(find(&long_pax)["size"], 9);
    assert_eq!(find("links/hard")["type"], "hardlink");
    assert_eq!(
        find("links/hard")["link_target"],
        "with space/file name.txt"
    );
    assert_eq!(find("links/sym")["type"], "symlink");
    let human = String::from_utf8(run_quietly(
        cairn(&repo).args(["ls", "latest", "-l", "links"]),
    ))
    .unwrap();
    assert!(
        human.contains("links/sym -> ../with space/file name.txt"),
        "{human}"
    );

    // cat follows hard links, refuses symlinks, finds long names and raw bytes.
    assert_eq!(
        run_quietly(cairn(&repo).args(["cat", "latest", "links/hard"])),
        b"spaces\n"
    );
    assert_eq!(
        run_quietly(cairn(&repo).args(["cat", "latest", &long_pax])),
        b"pax long\n"
    );
    assert_eq!(
        run_quietly(cairn(&repo).args(["cat", "latest", &long_gnu])),
        b"gnu long\n"
    );
    assert_eq!(
        run_quietly(
            cairn(&repo)
                .args(["cat", "latest"])
                .arg(OsStr::from_bytes(b"bad\xffname.txt"))
        ),
        b"latin-1\n"
    );
    let out = cairn(&repo)
        .args(["cat", "latest", "links/sym"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("symbolic link"));

    // Full extraction and filtered extraction agree on names and links.
    let full = dir.path().join("full");
    run_quietly(
        cairn(&repo)
            .args(["restore", "latest", "--extract"])
            .arg(&full),
    );
    let filtered = dir.path().join("filtered");
    run_quietly(
        cairn(&repo)
            .args(["restore", "latest", "--extract"])
            .arg(&filtered)
            .args(["--include", "**/*.txt", "--include", "links"]),
    );
    for root in [&full, &filtered] {
        assert_eq!(
            std::fs::read(root.join("with space/file name.txt")).unwrap(),
            b"spaces\n"
        );
        assert_eq!(
            std::fs::read(root.join(OsStr::from_bytes(b"bad\xffname.txt"))).unwrap(),
            b"latin-1\n"
        );
        assert_eq!(std::fs::read(root.join(&long_gnu)).unwrap(), b"gnu long\n");
        assert_eq!(std::fs::read(root.join(&long_pax)).unwrap(), b"pax long\n");
        assert_eq!(std::fs::read(root.join("links/hard")).unwrap(), b"spaces\n");
        assert_eq!(
            std::fs::read_link(root.join("links/sym")).unwrap(),
            PathBuf::from("../with space/file name.txt")
        );
    }
    // Only the link selected: its target was not, so it arrives as a file with the content.
    let only_link = dir.path().join("only-link");
    run_quietly(
        cairn(&repo)
            .args(["restore", "latest", "--extract"])
            .arg(&only_link)
            .args(["--include", "links/hard"]),
    );
    assert_eq!(
        files_under(&only_link),
        BTreeSet::from(["links/hard".to_string()])
    );
    assert_eq!(
        std::fs::read(only_link.join("links/hard")).unwrap(),
        b"spaces\n"
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile archives

#[test]
fn malicious_members_never_land_outside_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    run_quietly(cairn(&repo).args(["repo", "init"]));
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let victim = outside.join("victim");
    std::fs::write(&victim, b"original").unwrap();
    let outside_abs = outside.to_str().unwrap().as_bytes().to_vec();

    let mut bytes = Vec::new();
    raw_member(&mut bytes, b"ok.txt", b'0', b"fine", b"");
    raw_member(&mut bytes, b"../evil", b'0', b"evil", b"");
    raw_member(&mut bytes, b"a/../../evil2", b'0', b"evil", b"");
    raw_member(
        &mut bytes,
        &[&outside_abs[..], b"/abs"].concat(),
        b'0',
        b"abs",
        b"",
    );
    raw_member(
        &mut bytes,
        b"hl",
        b'1',
        b"",
        victim.to_str().unwrap().as_bytes(),
    );
    raw_member(&mut bytes, b"hl", b'0', b"pwned", b"");
    raw_member(&mut bytes, b"link", b'2', b"", &outside_abs);
    raw_member(&mut bytes, b"link/evil", b'0', b"evil", b"");
    end_tar(&mut bytes);
    let tar_path = dir.path().join("evil.tar");
    std::fs::write(&tar_path, &bytes).unwrap();
    run_quietly(cairn(&repo).args(["snapshot", "tar"]).arg(&tar_path));

    let listed = lines(&run_quietly(cairn(&repo).args(["ls", "latest", "-R"])));
    assert!(listed.contains(&"../evil".to_string()), "{listed:?}");

    let attempts: [&[&str]; 4] = [
        &[],
        &["--include", "**"],
        &["--include", "link", "--include", "hl"],
        &["--exclude", "ok.txt"],
    ];
    for (n, extra) in attempts.iter().enumerate() {
        let base = dir.path().join(format!("try-{n}"));
        let target = base.join("target");
        std::fs::create_dir_all(&target).unwrap();
        // Success or a refusal are both fine; writing outside is not.
        let _ = cairn(&repo)
            .args(["restore", "latest", "--extract"])
            .arg(&target)
            .args(*extra)
            .output()
            .unwrap();
        assert!(!base.join("evil").exists(), "attempt {n}");
        assert!(!dir.path().join("evil").exists(), "attempt {n}");
        assert!(!dir.path().join("evil2").exists(), "attempt {n}");
        assert!(!outside.join("abs").exists(), "attempt {n}");
        assert!(!outside.join("evil").exists(), "attempt {n}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"original", "attempt {n}");
        let entries: Vec<_> = std::fs::read_dir(&outside).unwrap().collect();
        assert_eq!(entries.len(), 1, "attempt {n}");
    }
}

// ---------------------------------------------------------------------------------------------
// Sparse files (built with GNU tar when it is there)

#[test]
fn cat_rebuilds_sparse_files() {
    let is_gnu = std::process::Command::new("tar")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("GNU tar"));
    if !is_gnu {
        eprintln!("skipping: GNU tar is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let mut content = vec![0u8; 3 << 20];
    content[..5].copy_from_slice(b"start");
    content[1 << 20..(1 << 20) + 9000].fill(7);
    let tail = content.len() - 3;
    content[tail..].copy_from_slice(b"end");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(src.join("sparse.img")).unwrap();
        for (offset, len) in [(0usize, 5usize), (1 << 20, 9000), (tail, 3)] {
            f.seek(SeekFrom::Start(offset as u64)).unwrap();
            f.write_all(&content[offset..offset + len]).unwrap();
        }
    }
    let repo = dir.path().join("repo");
    run_quietly(cairn(&repo).args(["repo", "init"]));
    let formats: [&[&str]; 3] = [
        &["--format=gnu"],
        &["--format=pax", "--sparse-version=0.1"],
        &["--format=pax", "--sparse-version=1.0"],
    ];
    for format in formats {
        let tar_path = dir.path().join("sparse.tar");
        let status = std::process::Command::new("tar")
            .arg("-C")
            .arg(&src)
            .arg("--sparse")
            .args(format)
            .arg("-cf")
            .arg(&tar_path)
            .arg("sparse.img")
            .status()
            .unwrap();
        assert!(status.success());
        run_quietly(cairn(&repo).args(["snapshot", "tar"]).arg(&tar_path));
        let json: Value =
            serde_json::from_slice(&run_quietly(cairn(&repo).args(["ls", "latest", "--json"])))
                .unwrap();
        let entry = json
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"].as_str().unwrap().ends_with("sparse.img"))
            .unwrap_or_else(|| panic!("{format:?}: {json}"))
            .clone();
        assert_eq!(entry["size"], content.len() as u64, "{format:?}");
        let path = entry["path"].as_str().unwrap().to_string();
        let got = run_quietly(cairn(&repo).args(["cat", "latest", &path]));
        assert!(got == content, "{format:?}: cat gives {} bytes", got.len());
    }
}

// ---------------------------------------------------------------------------------------------
// Accounting

#[test]
fn stats_by_source_unique_plus_shared_adds_up() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    run_quietly(cairn(&repo).args(["repo", "init"]));
    let mut rng = Rng(99);
    let shared = rng.bytes(3 << 20);
    let only_x = rng.bytes(1 << 20);
    let only_y = rng.bytes(2 << 20);
    let write = |name: &str, parts: &[&[u8]]| {
        let p = dir.path().join(name);
        std::fs::write(&p, parts.concat()).unwrap();
        p
    };
    let x1 = write("x1.bin", &[&shared]);
    let x2 = write("x2.bin", &[&shared, &only_x]);
    let y1 = write("y1.bin", &[&shared, &only_y]);
    for (file, source) in [(&x1, "x"), (&x2, "x"), (&y1, "y")] {
        run_quietly(
            cairn(&repo)
                .args(["snapshot", "tar", "--source", source])
                .arg(file),
        );
    }
    let json: Value = serde_json::from_slice(&run_quietly(cairn(&repo).args([
        "repo",
        "stats",
        "--by-source",
        "--json",
    ])))
    .unwrap();
    let series = json["series"].as_array().unwrap();
    assert_eq!(series.len(), 2);
    let get = |s: &Value, k: &str| s[k].as_u64().unwrap();
    let (x, y) = (&series[0], &series[1]);
    assert_eq!(
        (x["source"].as_str(), y["source"].as_str()),
        (Some("x"), Some("y"))
    );
    assert_eq!(get(x, "snapshots"), 2);
    assert_eq!(get(x, "logical_bytes"), (7 << 20) as u64);
    assert_eq!(get(y, "logical_bytes"), (5 << 20) as u64);
    let shared_total = get(&json, "shared_stored_bytes");
    assert_eq!(get(x, "shared_stored_bytes"), shared_total);
    assert_eq!(get(y, "shared_stored_bytes"), shared_total);
    assert_eq!(
        get(x, "unique_stored_bytes") + get(y, "unique_stored_bytes") + shared_total,
        get(&json, "referenced_stored_bytes")
    );
    // Random data: the stored sizes are close to the raw ones (chunk boundaries blur the edges).
    let near = |got: u64, want: u64| got.abs_diff(want) < 512 << 10;
    assert!(near(shared_total, 3 << 20), "{json}");
    assert!(near(get(x, "unique_stored_bytes"), 1 << 20), "{json}");
    assert!(near(get(y, "unique_stored_bytes"), 2 << 20), "{json}");

    let text = String::from_utf8(run_quietly(cairn(&repo).args([
        "repo",
        "stats",
        "--by-source",
    ])))
    .unwrap();
    assert!(text.starts_with("KIND"), "{text}");

    // snapshots --long: what each snapshot added.
    let long = lines(&run_quietly(cairn(&repo).args(["snapshots", "--long"])));
    assert!(long[0].contains("ADDED"), "{long:?}");
    let json: Value = serde_json::from_slice(&run_quietly(cairn(&repo).args([
        "snapshots",
        "--long",
        "--json",
    ])))
    .unwrap();
    let added: Vec<u64> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["added"]["stored_bytes"].as_u64().unwrap())
        .collect();
    assert!(
        added[0] > 3 << 20 && added[1] < 2 << 20 && added[2] > 2 << 20,
        "{added:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Progress on a terminal

#[test]
fn restore_shows_and_clears_a_progress_bar_on_a_terminal() {
    let has_script = std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_script {
        eprintln!("skipping: util-linux `script` is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    run_quietly(cairn(&repo).args(["repo", "init"]));
    let data = dir.path().join("data.bin");
    std::fs::write(&data, Rng(5).bytes(48 << 20)).unwrap();
    run_quietly(cairn(&repo).args(["snapshot", "tar"]).arg(&data));
    let bin = assert_cmd::cargo::cargo_bin("cairn");
    let command = format!(
        "{} -r {} restore latest --output {}",
        bin.display(),
        repo.display(),
        dir.path().join("out.bin").display()
    );
    let out = std::process::Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(screen.contains("restore ["), "no bar drawn: {screen:?}");
    // indicatif clears its line when the bar finishes: the last thing on screen is a clear.
    let last_draw = screen.rfind("restore [").unwrap();
    assert!(
        screen[last_draw..].contains("\u{1b}[2K") || screen[last_draw..].contains("\u{1b}[K"),
        "bar not cleared: {:?}",
        &screen[last_draw..]
    );
    assert_eq!(
        std::fs::read(dir.path().join("out.bin")).unwrap().len(),
        48 << 20
    );
}

// ---------------------------------------------------------------------------------------------
// Diff against brute force, and bundles

/// The diff by decoding both indexes whole, to check the fast path against.
fn brute_force_diff(
    repo: &Repo,
    a: &StreamEntry,
    b: &StreamEntry,
) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let all = |s: &StreamEntry| -> std::collections::BTreeMap<String, cairn::tarscan::Member> {
        cairn::browse::members(repo, s)
            .unwrap()
            .map(|m| {
                let m = m.unwrap();
                (
                    String::from_utf8(cairn::browse::normalize_path(&m.path)).unwrap(),
                    m,
                )
            })
            .collect()
    };
    let (old, new) = (all(a), all(b));
    let same = |x: &cairn::tarscan::Member, y: &cairn::tarscan::Member| {
        (
            x.kind,
            x.mode,
            x.uid,
            x.gid,
            x.mtime,
            x.size,
            &x.link_target,
        ) == (
            y.kind,
            y.mode,
            y.uid,
            y.gid,
            y.mtime,
            y.size,
            &y.link_target,
        )
    };
    let added = new
        .keys()
        .filter(|k| !old.contains_key(*k))
        .cloned()
        .collect();
    let removed = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect();
    let modified = new
        .iter()
        .filter(|(k, m)| old.get(*k).is_some_and(|o| !same(o, m)))
        .map(|(k, _)| k.clone())
        .collect();
    (added, removed, modified)
}

#[test]
fn diff_matches_brute_force_on_random_edits() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::init(&dir.path().join("repo"), &small_chunks()).unwrap();
    let mut base = volume();
    base.truncate(1500);
    for f in &mut base {
        f.content.truncate(300);
    }
    let (_, a) = snapshot(&repo, "v", tar_of(&base));
    let mut rng = Rng(1234);
    for trial in 0..10 {
        let mut files = base.clone();
        let edits = 1 + rng.next() % 12;
        for _ in 0..edits {
            let i = (rng.next() % files.len() as u64) as usize;
            match rng.next() % 5 {
                0 => {
                    files.remove(i);
                }
                1 => files.insert(
                    i,
                    File {
                        path: format!("dir-{:02}/added-{trial}-{i}.dat", i % 60),
                        content: rng.bytes(50),
                        mtime: MTIME,
                    },
                ),
                2 => files[i].mtime += 1,
                3 => files[i].content.push(1),
                _ => {
                    // Move a run of members elsewhere: same members, other order.
                    let len = 1 + (rng.next() % 40) as usize;
                    let end = (i + len).min(files.len());
                    let run: Vec<File> = files.drain(i..end).collect();
                    let at = (rng.next() % (files.len() as u64 + 1)) as usize;
                    files.splice(at..at, run);
                }
            }
        }
        let (_, b) = snapshot(&repo, "v", tar_of(&files));
        let d = cairn::diff::diff_members(
            &repo,
            stream(&a).members.as_ref().unwrap(),
            stream(&b).members.as_ref().unwrap(),
        )
        .unwrap();
        let (added, removed, modified) = brute_force_diff(&repo, stream(&a), stream(&b));
        let got_modified: BTreeSet<String> = d
            .modified
            .iter()
            .map(|m| String::from_utf8(cairn::browse::normalize_path(&m.new.path)).unwrap())
            .collect();
        assert_eq!(paths(&d.added), added, "trial {trial}");
        assert_eq!(paths(&d.removed), removed, "trial {trial}");
        assert_eq!(got_modified, modified, "trial {trial}");
        eprintln!("trial {trial}: {edits} edits, {:?}", d.stats);
    }
}

#[test]
fn bundles_list_their_streams_and_diff_by_digest() {
    let dir = tempfile::tempdir().unwrap();
    let repo_path = dir.path().join("repo");
    let repo = Repo::init(&repo_path, &InitOptions::default()).unwrap();
    let files = volume()[..20].to_vec();
    let mut changed = files.clone();
    changed[3].content.push(b'x');
    let take = |fs: &[File], inspect: &str| {
        repo.snapshot(
            SnapshotSpec {
                kind: "container".into(),
                source: "web".into(),
                ..Default::default()
            },
            vec![
                StreamInput {
                    name: "fs".into(),
                    role: "tar".into(),
                    reader: Box::new(std::io::Cursor::new(tar_of(fs))),
                },
                StreamInput {
                    name: "inspect".into(),
                    role: "json".into(),
                    reader: Box::new(std::io::Cursor::new(inspect.as_bytes().to_vec())),
                },
            ],
            &Silent,
        )
        .unwrap()
        .id
    };
    let a = take(&files, "{}").to_hex();
    let b = take(&changed, "{}").to_hex();
    drop(repo);

    let json: Value =
        serde_json::from_slice(&run_quietly(cairn(&repo_path).args(["ls", &a, "--json"]))).unwrap();
    let names: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stream"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fs", "inspect"]);
    assert_eq!(json[0]["members"], 20 + 3);
    let fs = lines(&run_quietly(
        cairn(&repo_path).args(["ls", &a, "--stream", "fs"]),
    ));
    assert_eq!(fs, ["dir-00/"]);
    // cat picks the only tar stream of a bundle by itself.
    assert_eq!(
        run_quietly(cairn(&repo_path).args(["cat", &b, &files[3].path])),
        changed[3].content
    );

    let text = lines(&run_quietly(cairn(&repo_path).args(["diff", &a, &b])));
    assert!(
        text.contains(&"stream inspect: unchanged".to_string()),
        "{text:?}"
    );
    assert!(
        text.iter().any(|l| l.starts_with("stream fs: modified")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|l| l.starts_with("M  ") && l.contains(&files[3].path)),
        "{text:?}"
    );
    let json: Value = serde_json::from_slice(&run_quietly(
        cairn(&repo_path).args(["diff", &a, &b, "--json"]),
    ))
    .unwrap();
    assert_eq!(json["streams"][0]["change"], "modified");
    assert_eq!(json["streams"][1]["change"], "unchanged");
    assert_eq!(json["modified"][0]["stream"], "fs");
}
