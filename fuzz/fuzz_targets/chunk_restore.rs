//! End to end: the input, as a stream, is snapshotted into a fresh repository (tiny chunks, so
//! even small inputs make several chunks and larger ones a tree of several levels), restored,
//! and must come back bit-exact with the manifest's digest equal to its BLAKE3. The stream is
//! given the "tar" role, so the member index is recorded too and must match a direct scan.
//! A second snapshot of the same bytes must store no new chunk and reuse the same tree.
//!
//! Slow per input (a repository is created each time): run with a larger `-max_len`.
#![no_main]

use cairn::format::config::{ChunkerAlgorithm, ChunkerParams};
use cairn::format::manifest::StreamEntry;
use cairn::progress::Silent;
use cairn::tarscan::{ScanStatus, TarScanner};
use cairn::{Id, InitOptions, Repo, SnapshotSpec, StreamInput};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

const SMALL_CHUNKS: ChunkerParams = ChunkerParams {
    algorithm: ChunkerAlgorithm::FastCdc2020,
    min_size: 64,
    avg_size: 256,
    max_size: 1024,
    normalization: 1,
    page_align: true,
    member_group: None,
};

fuzz_target!(|data: &[u8]| {
    let dir = scratch_dir();
    let path = dir.path().join("repo");
    let opts = InitOptions {
        chunker: SMALL_CHUNKS,
        zstd_level: 1,
        pack_size: 1 << 16,
    };
    let repo = Repo::init(&path, &opts).expect("init");
    let first = snapshot(&repo, data);
    let stream = &first.manifest.streams[0];
    assert_eq!(stream.length, data.len() as u64);
    assert_eq!(
        stream.digest,
        Id::of(data),
        "manifest digest is not BLAKE3 of the input"
    );
    assert_eq!(restore(&repo, stream), data, "restored bytes differ");
    check_members(&repo, stream, data);

    let second = snapshot(&repo, data);
    assert_eq!(
        second.stats.new_chunks, 0,
        "identical stream stored new chunks"
    );
    assert_eq!(second.manifest.streams[0].root, stream.root);

    // Everything needed must be durable and indexed: a fresh handle restores it too.
    drop(repo);
    let repo = Repo::open(&path).expect("reopen");
    let (_, manifest) = repo.resolve_snapshot(&first.id.to_hex()).expect("resolve");
    assert_eq!(restore(&repo, &manifest.streams[0]), data);
});

fn scratch_dir() -> tempfile::TempDir {
    // A RAM file system keeps the fsyncs of every commit cheap.
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().expect("temp dir")
}

fn snapshot(repo: &Repo, data: &[u8]) -> cairn::SnapshotOutcome {
    let spec = SnapshotSpec {
        kind: "fuzz".into(),
        source: "input".into(),
        ..SnapshotSpec::default()
    };
    let input = StreamInput {
        name: "input".into(),
        role: "tar".into(),
        reader: Box::new(data),
    };
    repo.snapshot(spec, vec![input], &Silent).expect("snapshot")
}

fn restore(repo: &Repo, stream: &StreamEntry) -> Vec<u8> {
    let mut out = Vec::new();
    cairn::restore::restore_stream(repo, stream, &mut out, &Silent).expect("restore");
    out
}

/// The recorded member index is exactly what a direct scan of the input finds.
fn check_members(repo: &Repo, stream: &StreamEntry, data: &[u8]) {
    let mut scanner = TarScanner::new();
    let mut expected = Vec::new();
    scanner.feed(data, &mut expected);
    let status = scanner.finish();
    let Some(index) = &stream.members else {
        assert_eq!(
            status,
            ScanStatus::NotTar,
            "tar stream recorded no member index"
        );
        assert_eq!(stream.role, "data");
        return;
    };
    let mut encoded = Vec::new();
    cairn::restore::read_range(repo, &index.root, 0, index.length, &mut |b: &[u8]| {
        encoded.extend_from_slice(b);
        Ok(())
    })
    .expect("read member index");
    let recorded = cairn::members::decode_all(&encoded).expect("decode member index");
    assert_eq!(recorded, expected);
    assert_eq!(index.count, expected.len() as u64);
    let status_name = match status {
        ScanStatus::Complete => "complete",
        ScanStatus::Truncated => "truncated",
        ScanStatus::Invalid { .. } => "invalid",
        ScanStatus::NotTar => panic!("not-tar stream has a member index"),
    };
    assert_eq!(index.status, status_name);
}
