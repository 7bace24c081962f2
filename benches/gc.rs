//! gc at scale: N snapshots of a slowly changing stream, forget all but the newest K, then gc.
//! Reports the time of each phase and the peak RSS, which must not grow with the data:
//! the mark set lives in SQLite, not in RAM.
//!
//!   cargo bench --bench gc                      # 1,000 snapshots of an 8 MiB stream, keep 100
//!   cargo bench --bench gc -- 2000 32 200       # snapshots, stream MiB, kept

use cairn::progress::Silent;
use cairn::{InitOptions, Repo, SnapshotSpec, StreamInput};
use std::time::Instant;

fn peak_rss_mib() -> f64 {
    // SAFETY: getrusage writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_maxrss as f64 / 1024.0
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut v);
    v
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let snapshots = args.first().copied().unwrap_or(1000);
    let stream_mib = args.get(1).copied().unwrap_or(8);
    let keep = args.get(2).copied().unwrap_or(100);
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = Repo::init(&dir.path().join("repo"), &InitOptions::default()).expect("init");
    // Half text-like (compressible), half random: a database-ish volume.
    let mut data = noise(stream_mib << 20, 1);
    for (i, b) in data.iter_mut().enumerate().take((stream_mib << 20) / 2) {
        *b = b"cairn volume snapshot "[i % 22];
    }
    let start = Instant::now();
    for n in 0..snapshots {
        // A few scattered 4 KiB edits per snapshot.
        for k in 0..4u64 {
            let at = (u64::from_le_bytes(
                noise(8, (n as u64) << 8 | k)[..8]
                    .try_into()
                    .unwrap_or([0; 8]),
            ) % (data.len() as u64 - 4096)) as usize;
            data[at..at + 4096].copy_from_slice(&noise(4096, 1 << 40 | (n as u64) << 8 | k));
        }
        let spec = SnapshotSpec {
            kind: "volume".into(),
            source: "db".into(),
            ..Default::default()
        };
        let input = StreamInput {
            name: "data".into(),
            role: "data".into(),
            reader: Box::new(std::io::Cursor::new(data.clone())),
        };
        repo.snapshot(spec, vec![input], &Silent).expect("snapshot");
    }
    let ingest = start.elapsed();
    let before = repo.layout().list_packs().expect("packs");
    let policy = cairn::forget::KeepPolicy {
        last: Some(keep),
        ..Default::default()
    };
    let all = repo.snapshots().expect("snapshots");
    let plan = cairn::forget::plan(&all, &policy, time::UtcOffset::UTC).expect("plan");
    let ids: Vec<cairn::Id> = plan.remove.iter().map(|d| d.id).collect();
    let t = Instant::now();
    repo.remove_snapshots(&ids).expect("forget");
    let forget = t.elapsed();
    let rss_before_gc = peak_rss_mib();
    let t = Instant::now();
    let report = cairn::gc::gc(&repo, &cairn::gc::GcOptions::default(), &Silent).expect("gc");
    let gc = t.elapsed();
    println!(
        "snapshots {snapshots} of a {stream_mib} MiB stream (4 × 4 KiB edits each), keep {keep}"
    );
    println!(
        "ingest         {:>8.1} s  ({} packs, {:.1} MB)",
        ingest.as_secs_f64(),
        before.len(),
        before.iter().map(|p| p.1).sum::<u64>() as f64 / 1e6
    );
    println!("forget {:>5}   {:>8.3} s", ids.len(), forget.as_secs_f64());
    println!(
        "gc             {:>8.2} s  deleted {} packs, rewrote {}, freed {:.1} MB ({:.1} → {:.1} MB), {} live blobs",
        gc.as_secs_f64(),
        report.packs_deleted,
        report.packs_rewritten,
        report.bytes_freed as f64 / 1e6,
        report.bytes_before as f64 / 1e6,
        report.bytes_after as f64 / 1e6,
        report.live_blobs
    );
    println!(
        "peak RSS       {:>8.1} MiB (before gc {rss_before_gc:.1} MiB)",
        peak_rss_mib()
    );
}
