//! Unusual tar streams (and streams that are not tars at all): every one restores bit-exact;
//! valid archives also extract, to the same tree GNU tar unpacks.

use crate::util::*;
use std::fs;
use std::path::{Path, PathBuf};

/// What `--extract` should do with a stream.
enum Extract {
    /// Succeeds and yields what GNU tar unpacks from the same bytes.
    LikeGnuTar,
    /// Succeeds (the content is checked by the caller, if at all).
    Succeeds,
    /// Fails with exit 1 and a message containing this text.
    FailsWith(&'static str),
    /// Must not panic; success or a clean failure are both acceptable.
    NoPanic,
}

const NO_DIR_MTIMES: Compare = Compare {
    dir_mtimes: false,
    owners: true,
};

/// Snapshots `input` (a file) and checks digest, both restore forms and extraction. Returns
/// the repository, the snapshot id and the extraction directory.
fn check_stream(t: &TestDir, input: &Path, extract: Extract) -> (Cairn, String, PathBuf) {
    let repo = t.repo("repo");
    let bytes = fs::read(input).unwrap();
    let snap = repo.snapshot_file(input, &[]);
    let id = str_field(&snap, "id");
    assert_eq!(u64_field(&snap, "bytes"), bytes.len() as u64);
    let list = repo.list();
    assert_eq!(
        str_field(&list[0]["streams"][0], "digest"),
        blake3_hex(&bytes)
    );

    let file = t.join("restored");
    assert!(
        repo.restore_file(&id, &file) == bytes,
        "--output FILE is not bit-exact"
    );
    assert!(
        repo.restore_stdout(&id) == bytes,
        "--output - is not bit-exact"
    );

    let x = t.join("extracted");
    let out = repo.extract(&id, &x);
    match extract {
        Extract::LikeGnuTar => {
            assert_success(&out, "restore --extract");
            let by_gnu = t.join("by-gnu");
            untar(input, &by_gnu);
            assert_same_tree(&by_gnu, &x, NO_DIR_MTIMES);
        }
        Extract::Succeeds => assert_success(&out, "restore --extract"),
        Extract::FailsWith(text) => {
            let err = assert_fails(&out, 1);
            assert_one_line_error(&err);
            assert!(err.contains(text), "expected {text:?} in: {err}");
        }
        Extract::NoPanic => assert_no_panic(&out),
    }
    (repo, id, x)
}

/// Also through stdin: same digest, default source `stdin`.
fn check_stdin(t: &TestDir, repo: &Cairn, bytes: &[u8]) {
    let snap = repo.snapshot_stdin(bytes, &[]);
    assert_eq!(str_field(&snap, "source"), "stdin");
    assert!(repo.restore_stdout(&str_field(&snap, "id")) == bytes);
    let _ = t;
}

#[test]
fn gnu_long_names_and_links() {
    let t = TestDir::new();
    let src = t.join("src");
    let deep = src.join("a".repeat(60)).join("b".repeat(60));
    fs::create_dir_all(&deep).unwrap();
    let long = deep.join(format!("{}.txt", "n".repeat(140)));
    fs::write(&long, text_bytes(80, 70 * KIB)).unwrap();
    fs::hard_link(&long, src.join(format!("hard-{}", "h".repeat(120)))).unwrap();
    std::os::unix::fs::symlink("x".repeat(180), src.join("sym")).unwrap();
    std::os::unix::fs::symlink(&long, src.join("abs-sym")).unwrap();
    set_tree_mtimes(&src, 1_600_000_000);
    let archive = t.join("gnu.tar");
    tar_dir(&src, &archive, &["--format=gnu"]);
    let (repo, _, x) = check_stream(&t, &archive, Extract::LikeGnuTar);
    assert_same_tree(&src, &x, NO_DIR_MTIMES);
    check_stdin(&t, &repo, &fs::read(&archive).unwrap());
}

#[test]
fn pax_long_and_non_ascii_names() {
    let t = TestDir::new();
    let src = t.join("src");
    let dir = src
        .join("répertoire-ünïcødé-")
        .join("日本語のディレクトリ".repeat(4));
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("héllo wörld ✓.txt"), b"bonjour").unwrap();
    fs::write(
        dir.join(format!("{}-ß.bin", "ñ".repeat(80))),
        random_bytes(81, 40 * KIB),
    )
    .unwrap();
    std::os::unix::fs::symlink("→ cible ".repeat(30), src.join("lien-symbolique")).unwrap();
    set_tree_mtimes(&src, 1_600_000_000);
    let archive = t.join("pax.tar");
    tar_dir(&src, &archive, &["--format=pax"]);
    let (_, _, x) = check_stream(&t, &archive, Extract::LikeGnuTar);
    assert_same_tree(&src, &x, NO_DIR_MTIMES);
}

/// A 16 MiB file with three small written regions and holes between them.
fn sparse_source(t: &TestDir) -> PathBuf {
    let src = t.join("src");
    fs::create_dir_all(&src).unwrap();
    let f = src.join("sparse.img");
    let status = std::process::Command::new("truncate")
        .args(["-s", "16M"])
        .arg(&f)
        .status()
        .unwrap();
    assert!(status.success());
    let file = fs::OpenOptions::new().write(true).open(&f).unwrap();
    use std::os::unix::fs::FileExt;
    for (i, off) in [4096u64, 5 * MIB as u64 + 17, 16 * MIB as u64 - 100]
        .iter()
        .enumerate()
    {
        file.write_all_at(&random_bytes(82 + i as u64, 50), *off)
            .unwrap();
    }
    fs::write(src.join("plain"), b"plain file next to a sparse one").unwrap();
    set_tree_mtimes(&src, 1_600_000_000);
    src
}

#[test]
fn gnu_sparse_member() {
    let t = TestDir::new();
    let src = sparse_source(&t);
    let archive = t.join("sparse.tar");
    tar_dir(&src, &archive, &["--format=gnu", "--sparse"]);
    assert!(
        fs::metadata(&archive).unwrap().len() < MIB as u64,
        "tar --sparse should store the holes as a map"
    );
    let (_, _, x) = check_stream(&t, &archive, Extract::LikeGnuTar);
    assert_same_tree(&src, &x, NO_DIR_MTIMES);
}

/// PAX sparse format 1.0 (what `--format=pax --sparse` writes): the stream is stored bit-exact,
/// and --extract must not fail.
#[test]
fn pax_sparse_member_restores_bit_exact() {
    let t = TestDir::new();
    let src = sparse_source(&t);
    let archive = t.join("pax-sparse.tar");
    tar_dir(&src, &archive, &["--format=pax", "--sparse"]);
    check_stream(&t, &archive, Extract::Succeeds);
}

/// Asserts that `path`, a 16 MiB file with three 50-byte regions, kept its holes.
fn assert_holes_kept(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(path).unwrap();
    assert_eq!(meta.len(), 16 * MIB as u64);
    assert!(
        meta.blocks() * 512 < MIB as u64,
        "{}: holes written as data ({} blocks)",
        path.display(),
        meta.blocks()
    );
}

#[test]
fn pax_sparse_member_extracts_like_gnu_tar() {
    let t = TestDir::new();
    let src = sparse_source(&t);
    let archive = t.join("pax-sparse.tar");
    tar_dir(&src, &archive, &["--format=pax", "--sparse"]);
    let (_, _, x) = check_stream(&t, &archive, Extract::LikeGnuTar);
    assert_same_tree(&src, &x, NO_DIR_MTIMES);
    assert_holes_kept(&x.join("sparse.img"));
}

/// The older PAX sparse formats: the map in `GNU.sparse.offset`/`numbytes` pairs (0.0) or one
/// `GNU.sparse.map` record (0.1), the data holding only the regions.
#[test]
fn pax_0_x_sparse_members_extract_like_gnu_tar() {
    for version in ["0.0", "0.1"] {
        let t = TestDir::new();
        let src = sparse_source(&t);
        let archive = t.join("pax-sparse.tar");
        let flag = format!("--sparse-version={version}");
        tar_dir(&src, &archive, &["--format=pax", "--sparse", &flag]);
        let (_, _, x) = check_stream(&t, &archive, Extract::LikeGnuTar);
        assert_same_tree(&src, &x, NO_DIR_MTIMES);
        assert_holes_kept(&x.join("sparse.img"));
    }
}

/// A PAX 1.0 archive from GNU tar whose sparse map (the first data block of the sparse member)
/// is replaced by `map`: the stream still restores bit-exact, and --extract fails with `error`
/// without writing the member under either name.
fn check_damaged_pax_1_0_map(map: &str, error: &'static str) {
    let t = TestDir::new();
    let src = sparse_source(&t);
    let archive = t.join("pax-sparse.tar");
    tar_dir(&src, &archive, &["--format=pax", "--sparse"]);
    let mut bytes = fs::read(&archive).unwrap();
    let name_at = bytes
        .windows(14)
        .position(|w| w == b"GNUSparseFile.")
        .expect("a PAX 1.0 sparse member");
    let data_at = name_at - name_at % 512 + 512;
    assert!(
        bytes[data_at..].starts_with(b"4\n4096\n"),
        "GNU tar maps whole blocks, and a last empty region at the end"
    );
    let block = &mut bytes[data_at..data_at + 512];
    block.fill(0);
    block[..map.len()].copy_from_slice(map.as_bytes());
    let damaged = t.write("damaged.tar", &bytes);
    let (_, _, x) = check_stream(&t, &damaged, Extract::FailsWith(error));
    assert!(!x.join("sparse.img").exists());
    let placeholder = fs::read_dir(&x)
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("GNUSparseFile"))
        })
        .unwrap_or(false);
    assert!(!placeholder, "the placeholder name was written");
}

#[test]
fn corrupt_pax_1_0_sparse_map_fails_cleanly() {
    check_damaged_pax_1_0_map("3\n4096\nfifty\n", "not a list of decimal numbers");
    check_damaged_pax_1_0_map(
        "2\n16777200\n50\n0\n50\n",
        "the sparse map has a region past the end of the file",
    );
    check_damaged_pax_1_0_map("2\n4096\n50\n4000\n50\n", "overlap or are out of order");
    check_damaged_pax_1_0_map("1\n0\n16000000\n", "more data than is stored");
}

#[test]
fn ustar_hard_links_and_symlinks() {
    let t = TestDir::new();
    let src = t.join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/one"), b"shared inode").unwrap();
    fs::hard_link(src.join("d/one"), src.join("two")).unwrap();
    fs::hard_link(src.join("d/one"), src.join("d/three")).unwrap();
    std::os::unix::fs::symlink("d/one", src.join("rel")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", src.join("abs")).unwrap();
    std::os::unix::fs::symlink("missing", src.join("dangling")).unwrap();
    std::os::unix::fs::symlink("d", src.join("dir-link")).unwrap();
    set_tree_mtimes(&src, 1_600_000_000);
    let archive = t.join("ustar.tar");
    tar_dir(&src, &archive, &["--format=ustar"]);
    let (_, _, x) = check_stream(&t, &archive, Extract::LikeGnuTar);
    assert_same_tree(&src, &x, NO_DIR_MTIMES);
}

/// A FIFO and (when permitted) a character device.
fn special_files(t: &TestDir) -> (PathBuf, bool) {
    let src = t.join("src");
    fs::create_dir_all(&src).unwrap();
    mkfifo(&src.join("fifo"));
    let dev = mknod_char(&src.join("null-like"), 1, 3);
    if !dev {
        eprintln!("mknod not permitted: testing the FIFO only");
    }
    fs::write(src.join("regular"), b"r").unwrap();
    set_tree_mtimes(&src, 1_600_000_000);
    (src, dev)
}

#[test]
fn device_nodes_and_fifos_restore_bit_exact() {
    let t = TestDir::new();
    let (src, _) = special_files(&t);
    let archive = t.join("special.tar");
    tar_dir(&src, &archive, &["--format=gnu"]);
    check_stream(&t, &archive, Extract::Succeeds);
}

#[test]
fn device_nodes_and_fifos_extract_as_such() {
    let t = TestDir::new();
    let (src, _) = special_files(&t);
    let archive = t.join("special.tar");
    tar_dir(&src, &archive, &["--format=gnu"]);
    check_stream(&t, &archive, Extract::LikeGnuTar);
}

#[test]
fn empty_archive() {
    let t = TestDir::new();
    let archive = t.join("empty.tar");
    gnu_tar(&[
        "-cf".as_ref(),
        archive.as_os_str(),
        "-T".as_ref(),
        "/dev/null".as_ref(),
    ]);
    assert_eq!(
        fs::read(&archive).unwrap(),
        vec![0u8; 10240],
        "GNU tar's empty archive"
    );
    let (_, _, x) = check_stream(&t, &archive, Extract::Succeeds);
    assert_eq!(fs::read_dir(&x).unwrap().count(), 0);
}

#[test]
fn truncated_archive() {
    let t = TestDir::new();
    let src = t.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), text_bytes(83, 100 * KIB)).unwrap();
    fs::write(src.join("b"), random_bytes(84, 300 * KIB)).unwrap();
    let full = t.join("full.tar");
    tar_dir(&src, &full, &[]);
    let bytes = fs::read(&full).unwrap();
    // Cut in the middle of the second member's data.
    let b_data = bytes
        .windows(300)
        .position(|w| w == &random_bytes(84, 300)[..])
        .expect("find b's data");
    let cut = t.write("cut.tar", &bytes[..b_data + 1000]);
    let (repo, id, _) = check_stream(&t, &cut, Extract::FailsWith("extract"));
    // The member index says how far the archive parsed; the stream is still a tar.
    let list = repo.list();
    let s = list.iter().find(|s| s["id"] == id.as_str()).unwrap();
    assert_eq!(s["streams"][0]["bytes"], b_data as u64 + 1000);
}

#[test]
fn random_bytes_are_not_a_tar() {
    let t = TestDir::new();
    let input = t.write("noise.bin", &random_bytes(85, 3 * MIB + 12345));
    check_stream(&t, &input, Extract::FailsWith("no tar stream"));
}

#[test]
fn zero_byte_stream() {
    let t = TestDir::new();
    let input = t.write("empty.bin", b"");
    let (repo, id, _) = check_stream(&t, &input, Extract::NoPanic);
    let snap = repo.list();
    assert_eq!(u64_field(&snap[0], "bytes"), 0);
    assert_eq!(repo.restore_stdout(&id), b"");
    check_stdin(&t, &repo, b"");
}

#[test]
fn one_byte_stream() {
    let t = TestDir::new();
    let input = t.write("one.bin", b"\x00");
    let (repo, _, _) = check_stream(&t, &input, Extract::NoPanic);
    check_stdin(&t, &repo, b"z");
}

/// Two archives that differ only in one member's data deduplicate member by member, and a
/// tar whose payload is another tar is still restored byte for byte.
#[test]
fn nested_tar_and_concatenated_archives() {
    let t = TestDir::new();
    let src = t.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("x"), text_bytes(86, 200 * KIB)).unwrap();
    let inner = t.join("inner.tar");
    tar_dir(&src, &inner, &[]);
    fs::copy(&inner, src.join("inner.tar")).unwrap();
    let outer = t.join("outer.tar");
    tar_dir(&src, &outer, &[]);
    // Two archives back to back: GNU tar stops at the first end marker unless told otherwise.
    let mut both = fs::read(&outer).unwrap();
    both.extend_from_slice(&fs::read(&inner).unwrap());
    let input = t.write("both.tar", &both);
    check_stream(&t, &input, Extract::Succeeds);
}

/// Appends a raw ustar header + data for `name` (bypassing the tar crate's path checks).
fn raw_member(out: &mut Vec<u8>, name: &[u8], kind: tar::EntryType, link: &[u8], data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// Members that try to leave the extraction directory are not written outside it.
#[test]
fn hostile_paths_stay_inside_the_target() {
    let t = TestDir::new();
    let outside = t.join("outside");
    fs::create_dir_all(&outside).unwrap();
    let mut tarball = Vec::new();
    raw_member(
        &mut tarball,
        b"ok.txt",
        tar::EntryType::Regular,
        b"",
        b"fine",
    );
    raw_member(
        &mut tarball,
        b"../outside/dotdot.txt",
        tar::EntryType::Regular,
        b"",
        b"evil",
    );
    let abs = t.join("outside/absolute.txt");
    raw_member(
        &mut tarball,
        abs.to_str().unwrap().as_bytes(),
        tar::EntryType::Regular,
        b"",
        b"evil",
    );
    raw_member(
        &mut tarball,
        b"esc",
        tar::EntryType::Symlink,
        outside.to_str().unwrap().as_bytes(),
        b"",
    );
    raw_member(
        &mut tarball,
        b"esc/through-link.txt",
        tar::EntryType::Regular,
        b"",
        b"evil",
    );
    tarball.extend_from_slice(&[0u8; 1024]);
    let input = t.write("hostile.tar", &tarball);
    let (_, _, x) = check_stream(&t, &input, Extract::NoPanic);
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "something was written outside the target: {:?}",
        files_under(&outside)
    );
    assert!(!abs.exists());
    if x.join("ok.txt").exists() {
        assert_eq!(fs::read(x.join("ok.txt")).unwrap(), b"fine");
    }
}
