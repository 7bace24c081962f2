//! Micro benchmarks of the ingest and restore pipeline stages, on generated root-file-system
//! data (see common/rootfs.rs). Run with `cargo bench --bench micro`; see benches/README.md.
//!
//! Sample counts are kept at criterion's minimum (10) so the whole run takes a few minutes on
//! two cores. Temporary repositories live in $TMPDIR and are removed when a benchmark ends.

#[path = "common/rootfs.rs"]
mod rootfs;

use cairn::chunker::Chunker;
use cairn::format::manifest::StreamEntry;
use cairn::format::{BlobKind, Compression};
use cairn::pack::PackWriter;
use cairn::progress::Silent;
use cairn::repo::DEFAULT_CHUNKER;
use cairn::{Id, InitOptions, Repo, SnapshotSpec, StreamInput};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::OnceLock;
use std::time::Duration;
use tempfile::TempDir;

const MIB: usize = 1 << 20;
const CHUNKING_BYTES: usize = 64 * MIB;
const STREAM_BYTES: usize = 256 * MIB;
/// Bytes per iteration of the per-chunk benchmarks (256 chunks of 64 KiB).
const SLICE_SET_BYTES: usize = 16 * MIB;
const SLICE: usize = 64 * 1024;
const ZSTD_LEVEL: i32 = 3;
const SEED: u64 = 1;

/// 256 MiB of generated root file system archive, made once and shared by all benchmarks.
fn stream() -> &'static [u8] {
    static DATA: OnceLock<Vec<u8>> = OnceLock::new();
    DATA.get_or_init(|| {
        let mut data = rootfs::rootfs_tar_in_memory(SEED, STREAM_BYTES as u64);
        data.truncate(STREAM_BYTES);
        data
    })
}

/// 64 KiB slices from the middle of the stream (past the first directories' small files).
fn slices() -> Vec<&'static [u8]> {
    let data = stream();
    let start = data.len() / 2;
    data[start..start + SLICE_SET_BYTES].chunks(SLICE).collect()
}

fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("cairn-micro-")
        .tempdir()
        .expect("create a temporary directory")
}

fn fresh_repo() -> (TempDir, Repo) {
    let dir = temp_dir();
    let repo = Repo::init(&dir.path().join("repo"), &InitOptions::default()).expect("init repo");
    (dir, repo)
}

fn snapshot(repo: &Repo, data: &'static [u8]) -> StreamEntry {
    let spec = SnapshotSpec {
        kind: "tar".into(),
        source: "bench".into(),
        ..Default::default()
    };
    let input = StreamInput {
        name: "data".into(),
        role: "tar".into(),
        reader: Box::new(data),
    };
    let outcome = repo.snapshot(spec, vec![input], &Silent).expect("snapshot");
    outcome.manifest.streams[0].clone()
}

fn chunking(c: &mut Criterion) {
    let data = &stream()[..CHUNKING_BYTES];
    let chunker = Chunker::new(&DEFAULT_CHUNKER);
    let mut g = c.benchmark_group("chunking");
    g.throughput(Throughput::Bytes(CHUNKING_BYTES as u64));
    g.bench_function("fastcdc_default_64MiB", |b| {
        let mut ends = Vec::with_capacity(CHUNKING_BYTES / 16_384);
        b.iter(|| {
            ends.clear();
            black_box(chunker.cut(black_box(data), 0, true, &[], &mut ends, &mut Vec::new()))
        })
    });
    g.finish();
}

fn per_chunk(c: &mut Criterion) {
    let slices = slices();
    let compressed: Vec<Option<Vec<u8>>> = slices
        .iter()
        .map(|s| cairn::compress::compress(s, ZSTD_LEVEL).expect("compress"))
        .collect();
    let mut g = c.benchmark_group("per_chunk_64KiB");
    g.throughput(Throughput::Bytes(SLICE_SET_BYTES as u64));
    g.bench_function("blake3", |b| {
        b.iter(|| {
            for s in &slices {
                black_box(blake3::hash(s));
            }
        })
    });
    g.bench_function("zstd3_compress", |b| {
        b.iter(|| {
            for s in &slices {
                black_box(cairn::compress::compress(s, ZSTD_LEVEL).expect("compress"));
            }
        })
    });
    // Output bytes per second; incompressible slices (stored raw by cairn) are copied.
    g.bench_function("zstd_decompress", |b| {
        let mut out = vec![0u8; SLICE];
        b.iter(|| {
            for (c, s) in compressed.iter().zip(&slices) {
                match c {
                    Some(c) => {
                        cairn::compress::decompress_into(c, &mut out[..s.len()])
                            .expect("decompress");
                    }
                    None => out[..s.len()].copy_from_slice(s),
                }
                black_box(&out);
            }
        })
    });
    g.finish();
}

fn pack_write(c: &mut Criterion) {
    let slices = slices();
    let blobs: Vec<(Id, u32, Compression, Vec<u8>)> = slices
        .iter()
        .map(|s| {
            let id = Id::of(s);
            match cairn::compress::compress(s, ZSTD_LEVEL).expect("compress") {
                Some(c) => (id, s.len() as u32, Compression::Zstd, c),
                None => (id, s.len() as u32, Compression::None, s.to_vec()),
            }
        })
        .collect();
    let stored: u64 = blobs.iter().map(|b| b.3.len() as u64).sum();
    let (_dir, repo) = fresh_repo();
    let mut g = c.benchmark_group("pack");
    g.throughput(Throughput::Bytes(stored));
    // Appending already-compressed blobs, then the table, fsync and rename of `finish`.
    g.bench_function("write_16MiB_of_blobs", |b| {
        b.iter(|| {
            let mut w = PackWriter::new(repo.layout()).expect("new pack");
            for (id, raw_len, compression, bytes) in &blobs {
                w.add(*id, BlobKind::Data, *compression, *raw_len, bytes)
                    .expect("add");
            }
            black_box(w.finish(repo.layout()).expect("finish"))
        })
    });
    g.finish();
}

fn ingest_and_restore(c: &mut Criterion) {
    let data = stream();
    let mut g = c.benchmark_group("stream_256MiB");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("ingest_new", |b| {
        b.iter_batched(
            fresh_repo,
            |(dir, repo)| {
                snapshot(&repo, data);
                (dir, repo) // dropped (repository deleted) outside the timing
            },
            BatchSize::PerIteration,
        )
    });
    let (_dir, repo) = fresh_repo();
    let entry = snapshot(&repo, data);
    g.bench_function("ingest_all_stored", |b| b.iter(|| snapshot(&repo, data)));
    g.bench_function("restore_to_sink", |b| {
        b.iter(|| {
            cairn::restore::restore_stream(&repo, &entry, &mut std::io::sink(), &Silent)
                .expect("restore")
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = chunking, per_chunk, pack_write, ingest_and_restore
}
criterion_main!(benches);
