use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

use proptest::prelude::*;

use super::*;

fn scan(stream: &[u8]) -> (Vec<Member>, ScanStatus) {
    let mut scanner = TarScanner::new();
    let mut members = Vec::new();
    scanner.feed(stream, &mut members);
    (members, scanner.finish())
}

fn scan_in_pieces(stream: &[u8], piece_lens: &[usize]) -> (Vec<Member>, ScanStatus) {
    let mut scanner = TarScanner::new();
    let mut members = Vec::new();
    let mut rest = stream;
    for &len in piece_lens.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(len.clamp(1, rest.len()));
        scanner.feed(piece, &mut members);
        rest = tail;
    }
    (members, scanner.finish())
}

/// Invariants the member index encoding relies on, whatever the input was.
fn assert_well_formed(members: &[Member], stream_len: u64) {
    let mut end = 0;
    for member in members {
        assert!(
            member.header_offset >= end,
            "{member:?} overlaps its predecessor"
        );
        assert!(member.data_offset >= member.header_offset + BLOCK_LEN);
        assert_eq!(member.header_offset % BLOCK_LEN, 0);
        assert_eq!(member.data_offset % BLOCK_LEN, 0);
        end = member.padded_end().unwrap();
        assert!(end <= stream_len);
    }
}

fn data<'a>(stream: &'a [u8], member: &Member) -> &'a [u8] {
    let start = member.data_offset as usize;
    &stream[start..start + member.data_len as usize]
}

fn find<'a>(members: &'a [Member], path: &[u8]) -> &'a Member {
    members
        .iter()
        .find(|m| m.path == path)
        .unwrap_or_else(|| panic!("no member {:?}", String::from_utf8_lossy(path)))
}

/// Sets the checksum of a hand-edited header block.
fn fix_checksum(block: &mut [u8]) {
    block[CHECKSUM].fill(b' ');
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    block[CHECKSUM].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

fn ustar_header(path: &str, typeflag: u8, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_path(path).unwrap();
    header.set_entry_type(tar::EntryType::new(typeflag));
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    header
}

/// A raw archive: header blocks and data padded to blocks, from (header, data) pairs.
fn raw_archive(entries: &[(Vec<u8>, Vec<u8>)], end_blocks: usize) -> Vec<u8> {
    let mut stream = Vec::new();
    for (header, data) in entries {
        stream.extend_from_slice(header);
        stream.extend_from_slice(data);
        stream.resize(padded_len(stream.len() as u64).unwrap() as usize, 0);
    }
    stream.resize(stream.len() + end_blocks * BLOCK, 0);
    stream
}

fn pax_records(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        let body_len = key.len() + value.len() + 3;
        let mut len = body_len + 1;
        while len != body_len + len.to_string().len() {
            len = body_len + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {key}=").as_bytes());
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

fn pax_entry(records: &[(&str, &[u8])]) -> (Vec<u8>, Vec<u8>) {
    let body = pax_records(records);
    let header = ustar_header("PaxHeaders/x", b'x', body.len() as u64);
    (header.as_bytes().to_vec(), body)
}

fn file_entry(path: &str, content: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let header = ustar_header(path, b'0', content.len() as u64);
    (header.as_bytes().to_vec(), content.to_vec())
}

/// What the `tar` crate's own reader makes of an archive: (path, typeflag, data position, size).
fn tar_crate_view(stream: &[u8]) -> Vec<(Vec<u8>, u8, u64, u64)> {
    let mut archive = tar::Archive::new(stream);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (
                entry.path_bytes().into_owned(),
                entry.header().entry_type().as_byte(),
                entry.raw_file_position(),
                entry.size(),
            )
        })
        .collect()
}

fn assert_matches_tar_crate(stream: &[u8], members: &[Member]) {
    let view = tar_crate_view(stream);
    assert_eq!(view.len(), members.len());
    for (member, (path, typeflag, data_offset, size)) in members.iter().zip(view) {
        assert_eq!(member.path, path);
        assert_eq!(member.data_offset, data_offset, "{member:?}");
        if !matches!(typeflag, b'1'..=b'6') {
            assert_eq!(member.data_len, size, "{member:?}");
        }
    }
}

// ---------------------------------------------------------------- archives from the tar crate

#[test]
fn tar_crate_builder_archive() {
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |header: &mut tar::Header, path: &[u8], data: &[u8]| {
        header.set_size(data.len() as u64);
        builder
            .append_data(header, Path::new(OsStr::from_bytes(path)), data)
            .unwrap();
    };
    let mut file = tar::Header::new_gnu();
    file.set_mode(0o640);
    file.set_uid(3_000_000); // beyond 8-byte octal: written in base-256
    file.set_gid(42);
    file.set_mtime(1_600_000_000);
    add(&mut file, b"hello.txt", b"hello, world\n");
    let long_name = format!("{}/{}", "d".repeat(120), "f".repeat(80));
    add(
        &mut tar::Header::new_gnu(),
        long_name.as_bytes(),
        &[7u8; 1000],
    );
    add(
        &mut tar::Header::new_gnu(),
        b"caf\xe9/\xff\xfe.bin",
        b"latin-1",
    );
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    add(&mut dir, b"sub/", b"");
    let mut symlink = tar::Header::new_gnu();
    symlink.set_entry_type(tar::EntryType::Symlink);
    symlink.set_size(0);
    builder
        .append_link(&mut symlink, "sub/link", "../hello.txt")
        .unwrap();
    let mut hard = tar::Header::new_gnu();
    hard.set_entry_type(tar::EntryType::Link);
    hard.set_size(0);
    builder.append_link(&mut hard, "hard", "hello.txt").unwrap();
    let stream = builder.into_inner().unwrap();

    let (members, status) = scan(&stream);
    assert_eq!(status, ScanStatus::Complete);
    assert_well_formed(&members, stream.len() as u64);
    assert_matches_tar_crate(&stream, &members);
    let paths: Vec<&[u8]> = members.iter().map(|m| m.path.as_slice()).collect();
    assert_eq!(
        paths,
        [
            b"hello.txt".as_slice(),
            long_name.as_bytes(),
            b"caf\xe9/\xff\xfe.bin",
            b"sub/",
            b"sub/link",
            b"hard",
        ]
    );

    let hello = &members[0];
    assert_eq!(hello.kind, MemberKind::File);
    assert_eq!((hello.mode, hello.uid, hello.gid), (0o640, 3_000_000, 42));
    assert_eq!(hello.mtime, 1_600_000_000);
    assert_eq!((hello.header_offset, hello.data_offset), (0, 512));
    assert_eq!(data(&stream, hello), b"hello, world\n");
    let long = &members[1];
    assert_eq!(long.header_offset, 1024);
    assert!(
        long.data_offset >= long.header_offset + 3 * BLOCK_LEN,
        "L block + name + header"
    );
    assert_eq!(data(&stream, long), &[7u8; 1000]);
    assert_eq!(data(&stream, &members[2]), b"latin-1");
    assert_eq!(members[3].kind, MemberKind::Dir);
    assert_eq!(members[4].kind, MemberKind::Symlink);
    assert_eq!(members[4].link_target, b"../hello.txt");
    assert_eq!(members[5].kind, MemberKind::HardLink);
    assert_eq!(members[5].link_target, b"hello.txt");
}

#[test]
fn ustar_prefix_is_joined_to_the_name() {
    let path = format!("{}/{}", "p".repeat(140), "name.txt");
    let (header, content) = file_entry(&path, b"x");
    let stream = raw_archive(&[(header, content)], 2);
    let (members, status) = scan(&stream);
    assert_eq!(status, ScanStatus::Complete);
    assert_eq!(members[0].path, path.as_bytes());
}

// ---------------------------------------------------------------- archives from GNU tar

fn have_gnu_tar() -> bool {
    Command::new("tar")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.starts_with(b"tar (GNU tar)"))
}

fn gnu_tar(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg("-")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Longer than the 100 bytes of a header's name field.
fn long_name() -> String {
    "l".repeat(120)
}

/// A directory whose file's path is longer than ustar's 255 bytes.
fn deep_dir() -> String {
    "d".repeat(150)
}

/// A tree with every kind of member GNU tar can store from an unprivileged process.
fn populate_tree(dir: &Path) {
    fs::write(dir.join("file.txt"), b"some text\n").unwrap();
    fs::write(dir.join("empty"), b"").unwrap();
    fs::create_dir(dir.join("sub")).unwrap();
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(dir.join("sub/big.bin"), &big).unwrap();
    std::os::unix::fs::symlink("../file.txt", dir.join("sub/link")).unwrap();
    fs::hard_link(dir.join("file.txt"), dir.join("hard")).unwrap();
    fs::write(dir.join(long_name()), b"long name").unwrap();
    let deep = dir.join(deep_dir());
    fs::create_dir(&deep).unwrap();
    fs::write(deep.join("e".repeat(150)), b"very long path").unwrap();
    fs::write(dir.join(OsStr::from_bytes(b"bin\xff\xfe")), b"non-utf8").unwrap();
    let fifo = dir.join("fifo");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
}

/// Checks an archive of the `populate_tree` tree; `fifo` and `long_paths` say whether the format
/// could hold those members.
fn check_gnu_tar_archive(dir: &Path, stream: &[u8], fifo: bool, long_paths: bool) {
    let (members, status) = scan(stream);
    assert_eq!(status, ScanStatus::Complete);
    assert_well_formed(&members, stream.len() as u64);
    assert_matches_tar_crate(stream, &members);
    for member in &members {
        if member.kind == MemberKind::File {
            let on_disk = fs::read(dir.join(OsStr::from_bytes(&member.path))).unwrap();
            assert_eq!(data(stream, member), on_disk.as_slice(), "{member:?}");
            assert_eq!(member.size, on_disk.len() as u64);
        }
    }
    assert_eq!(find(&members, b"sub/").kind, MemberKind::Dir);
    let link = find(&members, b"sub/link");
    assert_eq!(
        (link.kind, link.link_target.as_slice()),
        (MemberKind::Symlink, b"../file.txt".as_slice())
    );
    // GNU tar stores the first name it meets in full and the second as a hard link to it.
    let hard = members
        .iter()
        .find(|m| m.kind == MemberKind::HardLink)
        .expect("a hard link");
    assert!(hard.path == b"hard" || hard.path == b"file.txt");
    assert_eq!(hard.data_len, 0);
    if fifo {
        assert_eq!(find(&members, b"fifo").kind, MemberKind::Fifo);
    }
    assert_eq!(find(&members, b"bin\xff\xfe").kind, MemberKind::File);
    assert_eq!(find(&members, b"sub/big.bin").size, 70_000);
    if long_paths {
        find(&members, long_name().as_bytes());
        let deep = format!("{}/{}", deep_dir(), "e".repeat(150));
        assert_eq!(find(&members, deep.as_bytes()).data_len, 14);
    }
}

#[test]
fn gnu_tar_formats() {
    if !have_gnu_tar() {
        eprintln!("GNU tar not found; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    populate_tree(dir.path());
    let long = long_name();
    let deep = deep_dir();
    let long_target = "t".repeat(150);
    std::os::unix::fs::symlink(&long_target, dir.path().join("longlink")).unwrap();
    let names: &[&[u8]] = &[
        b"file.txt",
        b"empty",
        b"sub",
        b"hard",
        long.as_bytes(),
        b"bin\xff\xfe",
        b"fifo",
        deep.as_bytes(),
        b"longlink",
    ];
    for format in [
        "--format=gnu",
        "--format=oldgnu",
        "--format=pax",
        "--format=posix",
    ] {
        let stream = gnu_tar_with_raw(dir.path(), &[format], names);
        check_gnu_tar_archive(dir.path(), &stream, true, true);
        let (members, _) = scan(&stream);
        assert_eq!(
            find(&members, b"longlink").link_target,
            long_target.as_bytes()
        );
    }
}

fn gnu_tar_with_raw(dir: &Path, args: &[&str], raw: &[&[u8]]) -> Vec<u8> {
    let out = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg("-")
        .args(args)
        .args(raw.iter().map(|r| OsStr::from_bytes(r)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn gnu_tar_ustar_format() {
    if !have_gnu_tar() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    populate_tree(dir.path());
    // ustar splits a path of up to 255 bytes into prefix and name at a slash.
    let prefixed = format!("{}/{}", "u".repeat(90), "v".repeat(90));
    fs::create_dir(dir.path().join("u".repeat(90))).unwrap();
    fs::write(dir.path().join(&prefixed), b"prefixed").unwrap();
    let names: &[&[u8]] = &[
        b"file.txt",
        b"empty",
        b"sub",
        b"hard",
        b"bin\xff\xfe",
        b"fifo",
        prefixed.as_bytes(),
    ];
    let stream = gnu_tar_with_raw(dir.path(), &["--format=ustar"], names);
    check_gnu_tar_archive(dir.path(), &stream, true, false);
    let (members, _) = scan(&stream);
    assert_eq!(
        data(&stream, find(&members, prefixed.as_bytes())),
        b"prefixed"
    );
}

#[test]
fn gnu_tar_v7_format() {
    if !have_gnu_tar() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    populate_tree(dir.path());
    let names: &[&[u8]] = &[b"file.txt", b"empty", b"sub", b"hard", b"bin\xff\xfe"];
    let stream = gnu_tar_with_raw(dir.path(), &["--format=v7"], names);
    check_gnu_tar_archive(dir.path(), &stream, false, false);
}

#[test]
fn gnu_tar_empty_archive_is_complete() {
    if !have_gnu_tar() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let stream = gnu_tar(dir.path(), &["-T", "/dev/null"]);
    assert_eq!(stream.len(), 10240);
    assert_eq!(scan(&stream), (vec![], ScanStatus::Complete));
}

/// A file of `len` bytes with `regions` short runs of data in a sea of holes.
fn write_sparse_file(path: &Path, len: u64, regions: u64) -> Vec<u8> {
    use std::io::{Seek, SeekFrom, Write};
    let mut file = fs::File::create(path).unwrap();
    file.set_len(len).unwrap();
    let mut content = vec![0u8; len as usize];
    for i in 0..regions {
        let at = i * (len / regions);
        let run = vec![b'A' + (i % 26) as u8; 4096];
        file.seek(SeekFrom::Start(at)).unwrap();
        file.write_all(&run).unwrap();
        content[at as usize..at as usize + run.len()].copy_from_slice(&run);
    }
    content
}

#[test]
fn gnu_tar_sparse_files() {
    if !have_gnu_tar() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let len = 8 << 20;
    write_sparse_file(&dir.path().join("few"), len, 2);
    // More regions than fit in the header: GNU format needs sparse extension blocks.
    write_sparse_file(&dir.path().join("many"), len, 40);
    fs::write(dir.path().join("after"), b"the member after").unwrap();
    let variants: &[&[&str]] = &[
        &["--format=gnu"],
        &["--format=pax", "--sparse-version=0.0"],
        &["--format=pax", "--sparse-version=0.1"],
        &["--format=pax", "--sparse-version=1.0"],
    ];
    for variant in variants {
        let mut args = vec!["--sparse"];
        args.extend_from_slice(variant);
        args.extend_from_slice(&["few", "many", "after"]);
        let stream = gnu_tar(dir.path(), &args);
        let (members, status) = scan(&stream);
        assert_eq!(status, ScanStatus::Complete, "{variant:?}");
        assert_well_formed(&members, stream.len() as u64);
        let paths: Vec<&[u8]> = members.iter().map(|m| m.path.as_slice()).collect();
        assert_eq!(paths, [b"few".as_slice(), b"many", b"after"], "{variant:?}");
        for sparse in &members[..2] {
            assert!(sparse.sparse, "{variant:?} {sparse:?}");
            assert_eq!(sparse.kind, MemberKind::File);
            assert_eq!(sparse.size, len, "{variant:?}");
            assert!(
                sparse.data_len < len / 2,
                "{variant:?} stores only the data"
            );
        }
        if variant == &["--format=gnu"] {
            let many = &members[1];
            assert!(
                many.data_offset - many.header_offset > BLOCK_LEN,
                "extension blocks"
            );
        }
        assert!(!members[2].sparse);
        assert_eq!(
            data(&stream, &members[2]),
            b"the member after",
            "{variant:?}"
        );
    }
}

// ---------------------------------------------------------------- stream shapes

fn sample_archive() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for i in 0..12u32 {
        let content: Vec<u8> = (0..i * 300).map(|b| b as u8).collect();
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        let name = if i % 4 == 3 {
            format!("{}{i}", "long/".repeat(30))
        } else {
            format!("f{i}")
        };
        builder
            .append_data(&mut header, name, content.as_slice())
            .unwrap();
    }
    let mut stream = builder.into_inner().unwrap();
    // And a PAX header with a path longer than its header block, to collect across feeds.
    let long_path = "p".repeat(700);
    let pax = pax_entry(&[("path", long_path.as_bytes()), ("mtime", b"12.5")]);
    let file = file_entry("short", b"pax-named");
    stream.truncate(stream.len() - 1024);
    stream.extend(raw_archive(&[pax, file], 2));
    stream
}

#[test]
fn sample_archive_scans_completely() {
    let stream = sample_archive();
    let (members, status) = scan(&stream);
    assert_eq!(status, ScanStatus::Complete);
    assert_eq!(members.len(), 13);
    assert_well_formed(&members, stream.len() as u64);
    let last = &members[12];
    assert_eq!(last.path, "p".repeat(700).as_bytes());
    assert_eq!(last.mtime, 12);
    assert_eq!(data(&stream, last), b"pax-named");
}

#[test]
fn one_byte_feeds_give_the_same_result() {
    let stream = sample_archive();
    assert_eq!(scan_in_pieces(&stream, &[1]), scan(&stream));
}

proptest! {
    #[test]
    fn result_does_not_depend_on_how_the_stream_is_split(
        piece_lens in prop::collection::vec(1usize..3000, 1..40)
    ) {
        let stream = sample_archive();
        prop_assert_eq!(scan_in_pieces(&stream, &piece_lens), scan(&stream));
    }

    #[test]
    fn random_bytes_are_not_tar(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let (members, status) = scan(&bytes);
        prop_assert!(members.is_empty());
        prop_assert_eq!(status, ScanStatus::NotTar);
    }

    #[test]
    fn mutated_archives_never_break_the_invariants(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..20),
        cut in any::<prop::sample::Index>(),
        piece_lens in prop::collection::vec(1usize..2000, 1..10),
    ) {
        let mut stream = sample_archive();
        for (at, byte) in edits {
            let at = at.index(stream.len());
            stream[at] = byte;
        }
        stream.truncate(cut.index(stream.len() + 1));
        let (members, status) = scan_in_pieces(&stream, &piece_lens);
        assert_well_formed(&members, stream.len() as u64);
        prop_assert_eq!((members, status), scan(&stream));
    }

    #[test]
    fn hostile_headers_never_panic(block in prop::collection::vec(any::<u8>(), 512), typeflag in prop::sample::select(b"0125xXgLKSD7V\0".to_vec())) {
        let mut block = block;
        block[TYPEFLAG] = typeflag;
        fix_checksum(&mut block);
        let mut stream = block.clone();
        stream.extend(sample_archive());
        let (members, _) = scan(&stream);
        assert_well_formed(&members, stream.len() as u64);
    }
}

#[test]
fn truncated_archives_report_the_complete_members() {
    let stream = sample_archive();
    let (all, _) = scan(&stream);
    let archive_end = all.last().unwrap().padded_end().unwrap();
    let member_ends: Vec<u64> = all.iter().map(|m| m.padded_end().unwrap()).collect();
    for cut in (0..=stream.len())
        .step_by(97)
        .chain([512, 1024, 1536, stream.len() - 1])
    {
        let (members, status) = scan(&stream[..cut]);
        let cut = cut as u64;
        let expected: Vec<Member> = all
            .iter()
            .filter(|m| m.padded_end().unwrap() <= cut)
            .cloned()
            .collect();
        assert_eq!(members, expected, "cut at {cut}");
        let expected_status = if cut < BLOCK_LEN {
            ScanStatus::NotTar
        } else if cut >= archive_end + BLOCK_LEN || member_ends.contains(&cut) {
            ScanStatus::Complete
        } else {
            ScanStatus::Truncated
        };
        assert_eq!(status, expected_status, "cut at {cut}");
    }
}

#[test]
fn archive_without_end_blocks_is_complete() {
    // Written by some exporters: members, then end of stream on a block boundary.
    let stream = raw_archive(&[file_entry("a", b"1"), file_entry("b", b"22")], 0);
    let (members, status) = scan(&stream);
    assert_eq!(members.len(), 2);
    assert_eq!(status, ScanStatus::Complete);
}

#[test]
fn extension_header_at_the_end_is_truncated() {
    let stream = raw_archive(&[file_entry("a", b"1"), pax_entry(&[("path", b"b")])], 0);
    let (members, status) = scan(&stream);
    assert_eq!(members.len(), 1);
    assert_eq!(status, ScanStatus::Truncated);
}

#[test]
fn bad_checksum_in_a_later_header_is_invalid() {
    let mut stream = raw_archive(&[file_entry("a", b"1"), file_entry("b", b"2")], 2);
    stream[1024 + 10] ^= 1;
    let (members, status) = scan(&stream);
    assert_eq!(members.len(), 1);
    assert_eq!(status, ScanStatus::Invalid { at_offset: 1024 });
}

#[test]
fn signed_checksums_are_accepted() {
    let mut header = ustar_header("caf\u{e9}", b'0', 1).as_bytes().to_vec();
    header[CHECKSUM].fill(b' ');
    let sum: i64 = header.iter().map(|&b| i64::from(b as i8)).sum();
    header[CHECKSUM].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let stream = raw_archive(&[(header, b"x".to_vec())], 2);
    let (members, status) = scan(&stream);
    assert_eq!(status, ScanStatus::Complete);
    assert_eq!(members[0].path, "caf\u{e9}".as_bytes());
}

#[test]
fn not_tar_inputs() {
    assert_eq!(scan(b""), (vec![], ScanStatus::NotTar));
    assert_eq!(scan(b"short"), (vec![], ScanStatus::NotTar));
    let text = "{\"Id\": \"0123\"}\n".repeat(100);
    assert_eq!(scan(text.as_bytes()), (vec![], ScanStatus::NotTar));
    let first = file_entry("a", b"1");
    let mut broken = raw_archive(&[first], 2);
    broken[0] ^= 1;
    assert_eq!(scan(&broken), (vec![], ScanStatus::NotTar));
}

#[test]
fn zero_filled_streams() {
    // An empty archive is nothing but zero blocks.
    assert_eq!(scan(&[0u8; 3000]), (vec![], ScanStatus::Complete));
    // A disk image also starts with zeros but has something later.
    let mut image = vec![0u8; 4096];
    image[1024] = 0x53;
    assert_eq!(scan(&image), (vec![], ScanStatus::NotTar));
}

#[test]
fn trailing_bytes_after_the_end_are_ignored() {
    let mut stream = raw_archive(&[file_entry("a", b"1")], 2);
    stream.extend_from_slice(b"junk after the end of the archive");
    let (members, status) = scan(&stream);
    assert_eq!(members.len(), 1);
    assert_eq!(status, ScanStatus::Complete);
}

// ---------------------------------------------------------------- hand-made headers

#[test]
fn oversized_extensions_stop_the_scan() {
    for typeflag in [b'L', b'K', b'x'] {
        let header = ustar_header("././@LongLink", typeflag, MAX_EXTENSION_LEN + 1);
        let mut stream = raw_archive(&[file_entry("a", b"1")], 0);
        stream.extend_from_slice(header.as_bytes());
        stream.extend(vec![b'n'; 3 << 20]);
        let mut scanner = TarScanner::new();
        let mut members = Vec::new();
        scanner.feed(&stream, &mut members);
        assert!(scanner.extension_buf.capacity() < 4096);
        assert!(scanner.is_done());
        assert_eq!(members.len(), 1);
        assert_eq!(scanner.finish(), ScanStatus::Invalid { at_offset: 1024 });
    }
}

#[test]
fn overflowing_pax_size_is_invalid() {
    let size = u64::MAX.to_string();
    let stream = raw_archive(
        &[
            pax_entry(&[("size", size.as_bytes())]),
            file_entry("a", b"1"),
        ],
        2,
    );
    assert_eq!(
        scan(&stream),
        (vec![], ScanStatus::Invalid { at_offset: 1024 })
    );
}

#[test]
fn pax_records_override_the_header() {
    let stream = raw_archive(
        &[
            pax_entry(&[("comment", b"a global header")]),
            pax_entry(&[
                ("path", b"pax/\xffname"),
                ("uid", b"4000000000"),
                ("gid", b"77"),
                ("mtime", b"-1.5"),
                ("size", b"5"),
                ("SCHILY.xattr.user.k", b"v\0v"),
            ]),
            file_entry("header-name", b"12345"),
        ],
        2,
    );
    // Make the first one a global header: its content must not apply.
    let mut stream = stream;
    stream[TYPEFLAG] = b'g';
    fix_checksum(&mut stream[..512]);
    let (members, status) = scan(&stream);
    assert_eq!(status, ScanStatus::Complete);
    let member = &members[0];
    assert_eq!(member.path, b"pax/\xffname");
    assert_eq!(
        (member.uid, member.gid, member.mtime),
        (4_000_000_000, 77, -2)
    );
    assert_eq!((member.size, member.data_len), (5, 5));
    assert_eq!(
        member.header_offset, 1024,
        "the global header is not part of the member"
    );
    assert_eq!(
        member.data_offset, 2560,
        "global, x and ustar headers, x data"
    );
}

#[test]
fn pax_size_beyond_the_header_field() {
    // Writers put sizes the header cannot hold in PAX; the header's own field then says 0.
    let content = vec![9u8; 1500];
    let mut header = ustar_header("big", b'0', 0);
    header.set_cksum();
    let stream = raw_archive(
        &[
            pax_entry(&[("size", b"1500")]),
            (header.as_bytes().to_vec(), content.clone()),
            file_entry("next", b"n"),
        ],
        2,
    );
    let (members, status) = scan(&stream);
    assert_eq!(status, ScanStatus::Complete);
    assert_eq!(data(&stream, &members[0]), content.as_slice());
    assert_eq!(data(&stream, &members[1]), b"n");
}

#[test]
fn base256_fields() {
    let mut header = ustar_header("neg", b'0', 0);
    let block = header.as_mut_bytes();
    // size 3 and mtime -2, both base-256.
    block[SIZE].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]);
    block[MTIME].copy_from_slice(&[0xff; 12]);
    block[MTIME.end - 1] = 0xfe;
    fix_checksum(block);
    let stream = raw_archive(&[(block.to_vec(), b"abc".to_vec())], 2);
    let (members, status) = scan(&stream);
    assert_eq!(status, ScanStatus::Complete);
    assert_eq!((members[0].size, members[0].mtime), (3, -2));
    assert_eq!(data(&stream, &members[0]), b"abc");
}

#[test]
fn header_only_types_have_no_data_whatever_their_size_says() {
    let dir = ustar_header("dir/", b'5', 4096);
    let mut dev = ustar_header("dev/sda", b'4', 0);
    dev.set_device_major(8).unwrap();
    dev.set_device_minor(1).unwrap();
    dev.set_cksum();
    let stream = raw_archive(
        &[
            (dir.as_bytes().to_vec(), vec![]),
            (dev.as_bytes().to_vec(), vec![]),
            file_entry("f", b"after"),
        ],
        2,
    );
    let (members, status) = scan(&stream);
    assert_eq!(status, ScanStatus::Complete);
    assert_eq!(members[0].data_len, 0);
    assert_eq!(members[1].kind, MemberKind::BlockDev);
    assert_eq!((members[1].dev_major, members[1].dev_minor), (8, 1));
    assert_eq!(data(&stream, &members[2]), b"after");
}

#[test]
fn v7_directories_have_a_trailing_slash() {
    let mut header = tar::Header::new_old();
    header.set_path("olddir/").unwrap();
    header.set_entry_type(tar::EntryType::new(0));
    header.set_size(0);
    header.set_mode(0o755);
    header.set_mtime(1);
    header.set_cksum();
    let stream = raw_archive(&[(header.as_bytes().to_vec(), vec![])], 2);
    let (members, status) = scan(&stream);
    assert_eq!(status, ScanStatus::Complete);
    assert_eq!(members[0].kind, MemberKind::Dir);
}

#[test]
fn gnu_long_link_names_the_target() {
    let target = "t".repeat(300);
    let long_link = ustar_header("././@LongLink", b'K', target.len() as u64 + 1);
    let mut target_bytes = target.clone().into_bytes();
    target_bytes.push(0);
    let symlink = ustar_header("s", b'2', 0);
    let stream = raw_archive(
        &[
            (long_link.as_bytes().to_vec(), target_bytes),
            (symlink.as_bytes().to_vec(), vec![]),
        ],
        2,
    );
    let (members, _) = scan(&stream);
    assert_eq!(members[0].link_target, target.as_bytes());
    assert_eq!(
        (members[0].header_offset, members[0].data_offset),
        (0, 1536)
    );
}

#[test]
fn numeric_field_parsing() {
    assert_eq!(parse_octal(b"0000644\0"), Some(0o644));
    assert_eq!(parse_octal(b"   644 \0"), Some(0o644));
    assert_eq!(parse_octal(b"\0\0\0\0"), Some(0));
    assert_eq!(parse_octal(b"        "), Some(0));
    assert_eq!(parse_octal(b"12345670123"), Some(0o12345670123));
    assert_eq!(parse_octal(b"64x"), None);
    assert_eq!(parse_octal(b"\0x"), None);
    assert_eq!(parse_octal(b"77777777777777777777777777"), None);
    assert_eq!(parse_numeric(&[0x80, 0, 0, 1, 0]), Some(256));
    assert_eq!(parse_numeric(&[0xff, 0xff]), Some(-1));
    assert_eq!(parse_numeric(&[0xff; 12]), Some(-1));
    assert_eq!(parse_unsigned(&[0xff; 8]), None);
    assert_eq!(parse_numeric(&[0x80; 13]), None);
}

#[test]
fn pax_time_parsing() {
    assert_eq!(parse_pax_time(b"1700000000"), Some(1_700_000_000));
    assert_eq!(parse_pax_time(b"1700000000.999999999"), Some(1_700_000_000));
    assert_eq!(parse_pax_time(b"-1.5"), Some(-2));
    assert_eq!(parse_pax_time(b"-1.000"), Some(-1));
    assert_eq!(parse_pax_time(b"1."), Some(1));
    assert_eq!(parse_pax_time(b""), None);
    assert_eq!(parse_pax_time(b"1.2.3"), None);
    assert_eq!(parse_pax_time(b"+1"), None);
    assert_eq!(parse_pax_time(b"99999999999999999999"), None);
}

#[test]
fn malformed_pax_records_stop_parsing_but_keep_earlier_ones() {
    let mut pax = PaxOverrides::default();
    let mut records = pax_records(&[("path", b"kept")]);
    records.extend_from_slice(b"99 path=too-long-a-length\n");
    apply_pax_records(&records, &mut pax);
    assert_eq!(pax.path.as_deref(), Some(b"kept".as_slice()));
    for bad in [
        &b"0 ="[..],
        b"5 a=b",
        b"x path=y\n",
        b"3 \n",
        b"12 noequals\n",
    ] {
        apply_pax_records(bad, &mut PaxOverrides::default());
    }
}

/// The cut hints of `stream`, fed in pieces of `piece` bytes.
fn hints_of(stream: &[u8], piece: usize) -> Vec<CutHint> {
    let mut scanner = TarScanner::new();
    let mut members = Vec::new();
    let mut hints = Vec::new();
    for p in stream.chunks(piece) {
        scanner.feed(p, &mut members);
        scanner.drain_cut_hints(&mut hints);
    }
    hints
}

#[test]
fn paged_members_are_reported_as_aligned_regions_in_stream_order() {
    let mut db = vec![7u8; 16 * 4096];
    db[..16].copy_from_slice(b"SQLite format 3\0");
    db[16..18].copy_from_slice(&4096u16.to_be_bytes());
    db[21..24].copy_from_slice(&[64, 32, 32]);
    let mut builder = tar::Builder::new(Vec::new());
    for (name, bytes) in [
        ("a.txt", &b"hello"[..]),
        ("data/app.db", &db[..]),
        ("notes", &db[..4096 * 3]), // the SQLite header again: three whole pages
        ("pages-1.img", &db[100..100 + 4096 * 3 + 1]), // not whole pages
    ] {
        let mut h = ustar_header(name, b'0', bytes.len() as u64);
        h.set_cksum();
        builder.append(&h, bytes).unwrap();
    }
    let stream = builder.into_inner().unwrap();
    let (members, _) = scan(&stream);
    let app = find(&members, b"data/app.db");
    let notes = find(&members, b"notes");
    let expected = vec![
        CutHint::MemberStart(0),
        CutHint::MemberStart(app.header_offset),
        CutHint::Aligned {
            start: app.data_offset,
            end: app.data_offset + db.len() as u64,
            block: 4096,
        },
        CutHint::MemberStart(notes.header_offset),
        CutHint::Aligned {
            start: notes.data_offset,
            end: notes.data_offset + 3 * 4096,
            block: 4096,
        },
        CutHint::MemberStart(find(&members, b"pages-1.img").header_offset),
    ];
    for piece in [1, 7, 512, 100_000] {
        assert_eq!(hints_of(&stream, piece), expected, "piece {piece}");
    }
}

#[test]
fn sparse_members_are_never_aligned() {
    let mut db = vec![0u8; 8 * 4096];
    db[..16].copy_from_slice(b"SQLite format 3\0");
    db[16..18].copy_from_slice(&4096u16.to_be_bytes());
    db[21..24].copy_from_slice(&[64, 32, 32]);
    let mut header = ustar_header("sparse.db", b'S', db.len() as u64);
    header.set_cksum();
    let stream = raw_archive(&[(header.as_bytes().to_vec(), db)], 2);
    assert!(
        hints_of(&stream, 4096)
            .iter()
            .all(|h| matches!(h, CutHint::MemberStart(_)))
    );
}

#[test]
fn page_detection_can_be_turned_off() {
    let mut db = vec![7u8; 8 * 4096];
    db[..16].copy_from_slice(b"SQLite format 3\0");
    db[16..18].copy_from_slice(&4096u16.to_be_bytes());
    db[21..24].copy_from_slice(&[64, 32, 32]);
    let mut builder = tar::Builder::new(Vec::new());
    let mut h = ustar_header("app.db", b'0', db.len() as u64);
    h.set_cksum();
    builder.append(&h, &db[..]).unwrap();
    let stream = builder.into_inner().unwrap();
    let hints = |detect: bool| {
        let mut scanner = TarScanner::new().detecting_pages(detect);
        let (mut members, mut out) = (Vec::new(), Vec::new());
        scanner.feed(&stream, &mut members);
        scanner.drain_cut_hints(&mut out);
        out
    };
    assert_eq!(hints(true).len(), 2);
    assert_eq!(hints(false), vec![CutHint::MemberStart(0)]);
}
