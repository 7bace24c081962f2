//! Macro benchmark: the real `cairn` binary on a generated (or given) root file system archive
//! and its "package upgrade" generations, beside this machine's own limits measured on the same
//! bytes in the same run. See benches/README.md.
//!
//! `cargo bench --bench macro -- [--size 1GiB] [--data FILE.tar] [--generations 5] [--seed N]
//!  [--work DIR] [--keep] [--no-restic] [--startup-snapshots 1000] [--startup-runs 20]
//!  [--limit-sample 1GiB] [--cairn PATH] [--calibrate]`
//!
//! Targets are informational: a miss is reported, never turned into a failing exit code.

#[path = "common/rootfs.rs"]
mod rootfs;

use anyhow::{Context, Result, bail};
use cairn::chunker::Chunker;
use cairn::repo::DEFAULT_CHUNKER;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read};
use std::os::unix::fs::FileExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Throughputs are reported in MB/s (10^6 bytes per second).
const MB: f64 = 1e6;
const ZSTD_LEVEL: i32 = 3;
const LIMIT_SLICE: usize = 64 * 1024;

struct Args {
    size: u64,
    data: Option<PathBuf>,
    generations: u32,
    seed: u64,
    work: Option<PathBuf>,
    keep: bool,
    restic: bool,
    startup_snapshots: u32,
    startup_runs: u32,
    limit_sample: u64,
    cairn: Option<PathBuf>,
    calibrate: bool,
    /// Runs of each throughput measurement (ingest new, ingest stored, restore, check); the
    /// fastest counts, as the machine limits are the best of two measurements.
    repeat: u32,
}

fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().with_context(|| format!("bad size {s:?}"))?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => MIB as f64,
        "g" | "gib" => GIB as f64,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        other => bail!("unknown size unit {other:?} in {s:?}"),
    };
    Ok((n * mult) as u64)
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        size: GIB,
        data: None,
        generations: 5,
        seed: 1,
        work: std::env::var_os("CAIRN_BENCH_DIR").map(PathBuf::from),
        keep: false,
        restic: true,
        startup_snapshots: 1000,
        startup_runs: 20,
        limit_sample: GIB,
        cairn: None,
        calibrate: false,
        repeat: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = || -> Result<String> {
            inline
                .clone()
                .or_else(|| it.next())
                .with_context(|| format!("{key} needs a value"))
        };
        match key.as_str() {
            // cargo bench passes --bench to harness = false targets.
            "--bench" => {}
            "--size" => a.size = parse_size(&value()?)?,
            "--data" => a.data = Some(PathBuf::from(value()?)),
            "--generations" => a.generations = value()?.parse().context("--generations")?,
            "--seed" => a.seed = value()?.parse().context("--seed")?,
            "--work" => a.work = Some(PathBuf::from(value()?)),
            "--keep" => a.keep = true,
            "--no-restic" => a.restic = false,
            "--startup-snapshots" => {
                a.startup_snapshots = value()?.parse().context("--startup-snapshots")?
            }
            "--startup-runs" => a.startup_runs = value()?.parse().context("--startup-runs")?,
            "--limit-sample" => a.limit_sample = parse_size(&value()?)?,
            "--cairn" => a.cairn = Some(PathBuf::from(value()?)),
            "--calibrate" => a.calibrate = true,
            "--repeat" => a.repeat = value()?.parse::<u32>().context("--repeat")?.max(1),
            other if other.starts_with("--") => bail!("unknown option {other}"),
            _ => {} // a benchmark name filter from `cargo bench macro`; nothing to filter
        }
    }
    a.generations = a.generations.max(1);
    a.startup_runs = a.startup_runs.max(1);
    Ok(a)
}

/// The run's scratch directory, removed when dropped (unless --keep).
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("kept work directory {}", self.path.display());
        } else if let Err(e) = fs::remove_dir_all(&self.path) {
            eprintln!("could not remove {}: {e}", self.path.display());
        }
    }
}

/// target/ as seen from this bench binary (target/release/deps/macro-HASH).
fn target_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.to_path_buf())
}

fn work_dir(args: &Args) -> Result<WorkDir> {
    let base = match &args.work {
        Some(p) => p.clone(),
        None => target_dir()
            .map(|t| t.join("bench-macro"))
            .unwrap_or_else(|| std::env::temp_dir().join("cairn-bench-macro")),
    };
    let path = base.join(format!("run-{}", std::process::id()));
    fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok(WorkDir {
        path,
        keep: args.keep,
    })
}

fn cairn_binary(args: &Args) -> Result<PathBuf> {
    if let Some(p) = &args.cairn {
        return Ok(p.clone());
    }
    // Cargo builds the package's binaries (with this bench's profile) before running a bench.
    let built = PathBuf::from(env!("CARGO_BIN_EXE_cairn"));
    if built.exists() {
        return Ok(built);
    }
    if let Some(t) = target_dir() {
        let release = t.join("release").join("cairn");
        if release.exists() {
            return Ok(release);
        }
    }
    bail!("cannot find the cairn binary; run `cargo build --release` or pass --cairn PATH")
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// Wall time and resources of one finished child.
#[derive(Clone, Debug)]
struct Run {
    wall: Duration,
    user: Duration,
    sys: Duration,
    max_rss_kib: u64,
    stdout: Vec<u8>,
}

impl Run {
    fn cpu_per_wall(&self) -> f64 {
        (self.user + self.sys).as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }

    fn json(&self) -> Value {
        json!({
            "wall_s": self.wall.as_secs_f64(),
            "user_s": self.user.as_secs_f64(),
            "sys_s": self.sys.as_secs_f64(),
            "cpu_per_wall": self.cpu_per_wall(),
            "peak_rss_mib": self.max_rss_kib as f64 / 1024.0,
        })
    }
}

/// A child's ru_maxrss starts from the peak RSS of the process it was spawned from (std spawns
/// with vfork semantics, and exec records the old address space's high-water mark), so this
/// process resets its own high-water mark to its current, small RSS before every spawn. What is
/// left is reported as `rss_floor_mib`.
fn reset_own_peak_rss() {
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe { libc::malloc_trim(0) };
    let _ = fs::write("/proc/self/clear_refs", "5");
}

/// This process's peak RSS (VmHWM) in KiB.
fn own_peak_rss_kib() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
}

/// Runs `cmd` to completion, measuring it with wait4 (this child only, not earlier ones).
/// `stdout_to`: `None` captures stdout, `Some(file)` sends it there.
fn run_child(cmd: &mut Command, stdout_to: Option<File>, stderr_log: &Path) -> Result<Run> {
    let stderr = File::create(stderr_log)?;
    cmd.stdin(Stdio::null()).stderr(stderr);
    let capture = stdout_to.is_none();
    match stdout_to {
        Some(f) => cmd.stdout(f),
        None => cmd.stdout(Stdio::piped()),
    };
    reset_own_peak_rss();
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let mut stdout = Vec::new();
    if capture && let Some(mut out) = child.stdout.take() {
        out.read_to_end(&mut stdout)?;
    }
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is our own unreaped child; status and usage are valid for writes.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).context("wait4");
        }
    }
    let wall = start.elapsed();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let log = fs::read_to_string(stderr_log).unwrap_or_default();
        bail!("{cmd:?} failed (wait status {status}): {}", log.trim());
    }
    Ok(Run {
        wall,
        user: timeval(usage.ru_utime),
        sys: timeval(usage.ru_stime),
        max_rss_kib: usage.ru_maxrss as u64,
        stdout,
    })
}

struct Cairn {
    bin: PathBuf,
    repo: PathBuf,
    log: PathBuf,
}

impl Cairn {
    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("-r").arg(&self.repo).arg("--quiet");
        c
    }

    fn init(&self) -> Result<Run> {
        run_child(self.cmd().args(["repo", "init"]), None, &self.log)
    }

    /// `snapshot tar FILE --json`; returns the run and the parsed summary.
    fn snapshot_tar(&self, file: &Path) -> Result<(Run, Value)> {
        let run = run_child(
            self.cmd().args(["snapshot", "tar"]).arg(file).arg("--json"),
            None,
            &self.log,
        )?;
        let summary: Value =
            serde_json::from_slice(&run.stdout).context("parsing snapshot --json")?;
        Ok((run, summary))
    }

    fn restore_latest_to_null(&self) -> Result<Run> {
        let null = File::create("/dev/null")?;
        run_child(
            self.cmd().args(["restore", "latest", "--output", "-"]),
            Some(null),
            &self.log,
        )
    }

    fn check_read_data(&self) -> Result<Run> {
        let null = File::create("/dev/null")?;
        run_child(
            self.cmd().args(["repo", "check", "--read-data"]),
            Some(null),
            &self.log,
        )
    }

    /// Raw bytes of the distinct chunks: what `check --read-data` decompresses and re-hashes.
    fn unique_bytes(&self) -> Result<u64> {
        let run = run_child(
            self.cmd().args(["repo", "stats", "--json"]),
            None,
            &self.log,
        )?;
        let stats: Value =
            serde_json::from_slice(&run.stdout).context("parsing repo stats --json")?;
        stats["unique_bytes"]
            .as_u64()
            .context("repo stats has no unique_bytes")
    }

    /// Runs a command with its output discarded (for timing it).
    fn timed(&self, args: &[&str]) -> Result<Run> {
        let null = File::create("/dev/null")?;
        run_child(self.cmd().args(args), Some(null), &self.log)
    }

    /// Ids of the two newest snapshots.
    fn last_two_ids(&self) -> Result<(String, String)> {
        let run = run_child(self.cmd().args(["snapshots", "--json"]), None, &self.log)?;
        let list: Value =
            serde_json::from_slice(&run.stdout).context("parsing snapshots --json")?;
        let ids: Vec<String> = list
            .as_array()
            .context("snapshots --json is not an array")?
            .iter()
            .filter_map(|s| s["id"].as_str().map(str::to_string))
            .collect();
        match ids.as_slice() {
            [.., a, b] => Ok((a.clone(), b.clone())),
            _ => anyhow::bail!("need two snapshots"),
        }
    }

    fn snapshots_list(&self) -> Result<Run> {
        let null = File::create("/dev/null")?;
        run_child(self.cmd().arg("snapshots"), Some(null), &self.log)
    }
}

/// Bytes of all files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// Reads every file under `dir`, so that what follows finds them in the page cache.
fn warm_page_cache(dir: &Path) -> Result<()> {
    let mut buf = vec![0u8; 4 * MIB as usize];
    for entry in fs::read_dir(dir)?.flatten() {
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            warm_page_cache(&path)?;
        } else {
            let mut f = File::open(&path)?;
            while f.read(&mut buf)? > 0 {}
        }
    }
    Ok(())
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MB / d.as_secs_f64().max(1e-9)
}

fn median_ms(runs: &[Run]) -> f64 {
    let mut ms: Vec<f64> = runs.iter().map(|r| r.wall.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    if n % 2 == 1 {
        ms[n / 2]
    } else {
        (ms[n / 2 - 1] + ms[n / 2]) / 2.0
    }
}

// ---------------------------------------------------------------------------------------------
// Machine limits

#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
struct Limits {
    sample_bytes: u64,
    fastcdc_1t_mbps: f64,
    blake3_1t_mbps: f64,
    zstd3_1t_mbps: f64,
    zstd3_2t_mbps: f64,
    /// Decompressing the compressed 64 KiB slices and copying the raw ones: what restore does.
    zstd_decompress_1t_mbps: f64,
    /// Decompression of the compressed slices alone (their raw bytes per second).
    zstd_decompress_1t_compressed_only_mbps: f64,
    /// The same kernels per CPU-second of their thread: what they cost, whatever else runs on
    /// the machine (the wall-clock figures above shrink when other processes compete).
    fastcdc_cpu_mbps: f64,
    blake3_cpu_mbps: f64,
    zstd3_cpu_mbps: f64,
    zstd_decompress_cpu_mbps: f64,
    zstd3_ratio: f64,
    incompressible_fraction: f64,
    chunks: u64,
    mean_chunk_bytes: f64,
}

/// CPU time consumed so far by the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Wall and thread-CPU time of one measurement.
struct Stopwatch {
    wall: Instant,
    cpu: Duration,
}

impl Stopwatch {
    fn start() -> Stopwatch {
        Stopwatch {
            wall: Instant::now(),
            cpu: thread_cpu(),
        }
    }

    /// (MB per wall second, MB per CPU second).
    fn rates(&self, bytes: u64) -> (f64, f64) {
        (
            mbps(bytes, self.wall.elapsed()),
            mbps(bytes, thread_cpu() - self.cpu),
        )
    }
}

/// Up to `max` bytes of `path`: the whole file, or evenly spread 8 MiB windows of it.
fn read_sample(path: &Path, max: u64) -> Result<Vec<u8>> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f.metadata()?.len();
    if len <= max {
        let mut v = Vec::with_capacity(len as usize);
        BufReader::new(f).read_to_end(&mut v)?;
        return Ok(v);
    }
    let window = 8 * MIB;
    let count = (max / window).max(1);
    let stride = len / count;
    let mut v = vec![0u8; (count * window) as usize];
    for (i, w) in v.chunks_mut(window as usize).enumerate() {
        f.read_exact_at(w, i as u64 * stride)?;
    }
    Ok(v)
}

fn print_limits(l: &Limits) {
    println!(
        "  FastCDC (cairn chunker), 1 core     {:8.1} MB/s",
        l.fastcdc_1t_mbps
    );
    println!(
        "  BLAKE3 per chunk, 1 core            {:8.1} MB/s",
        l.blake3_1t_mbps
    );
    println!(
        "  zstd-3 64 KiB slices, 1 thread      {:8.1} MB/s",
        l.zstd3_1t_mbps
    );
    println!(
        "  zstd-3 64 KiB slices, 2 threads     {:8.1} MB/s",
        l.zstd3_2t_mbps
    );
    println!(
        "  zstd decompress, 1 thread           {:8.1} MB/s  (compressed slices alone: {:.1} MB/s)",
        l.zstd_decompress_1t_mbps, l.zstd_decompress_1t_compressed_only_mbps
    );
    println!(
        "  per CPU-second: FastCDC {:.0}, BLAKE3 {:.0}, zstd-3 {:.0}, zstd decompress {:.0} MB",
        l.fastcdc_cpu_mbps, l.blake3_cpu_mbps, l.zstd3_cpu_mbps, l.zstd_decompress_cpu_mbps
    );
    println!(
        "  zstd-3 ratio {:.2}, incompressible {:.0}%, {} chunks of {:.0} KiB on average",
        l.zstd3_ratio,
        l.incompressible_fraction * 100.0,
        l.chunks,
        l.mean_chunk_bytes / 1024.0
    );
}

impl Limits {
    /// The faster of two measurements, figure by figure: the targets are set by what the
    /// machine can do at its best, not by a slow moment of a shared host.
    fn best_of(&self, other: &Limits) -> Limits {
        Limits {
            fastcdc_1t_mbps: self.fastcdc_1t_mbps.max(other.fastcdc_1t_mbps),
            blake3_1t_mbps: self.blake3_1t_mbps.max(other.blake3_1t_mbps),
            zstd3_1t_mbps: self.zstd3_1t_mbps.max(other.zstd3_1t_mbps),
            zstd3_2t_mbps: self.zstd3_2t_mbps.max(other.zstd3_2t_mbps),
            zstd_decompress_1t_mbps: self
                .zstd_decompress_1t_mbps
                .max(other.zstd_decompress_1t_mbps),
            zstd_decompress_1t_compressed_only_mbps: self
                .zstd_decompress_1t_compressed_only_mbps
                .max(other.zstd_decompress_1t_compressed_only_mbps),
            fastcdc_cpu_mbps: self.fastcdc_cpu_mbps.max(other.fastcdc_cpu_mbps),
            blake3_cpu_mbps: self.blake3_cpu_mbps.max(other.blake3_cpu_mbps),
            zstd3_cpu_mbps: self.zstd3_cpu_mbps.max(other.zstd3_cpu_mbps),
            zstd_decompress_cpu_mbps: self
                .zstd_decompress_cpu_mbps
                .max(other.zstd_decompress_cpu_mbps),
            ..*self
        }
    }
}

fn measure_limits(path: &Path, max: u64) -> Result<Limits> {
    let sample = read_sample(path, max)?;
    let total = sample.len() as u64;
    let mut l = Limits {
        sample_bytes: total,
        ..Limits::default()
    };

    let chunker = Chunker::new(&DEFAULT_CHUNKER);
    let mut ends = Vec::with_capacity(sample.len() / 32_768);
    let t = Stopwatch::start();
    chunker.cut(&sample, 0, true, &[], &mut ends, &mut Vec::new());
    (l.fastcdc_1t_mbps, l.fastcdc_cpu_mbps) = t.rates(total);
    l.chunks = ends.len() as u64;
    l.mean_chunk_bytes = total as f64 / ends.len().max(1) as f64;

    let t = Stopwatch::start();
    let mut start = 0;
    let mut xor = 0u8;
    for &end in &ends {
        xor ^= blake3::hash(&sample[start..end]).as_bytes()[0];
        start = end;
    }
    std::hint::black_box(xor);
    (l.blake3_1t_mbps, l.blake3_cpu_mbps) = t.rates(total);
    drop(ends);

    let slices: Vec<&[u8]> = sample.chunks(LIMIT_SLICE).collect();
    // Each output is dropped at once, here as with two threads: keeping 1 GiB of outputs made
    // the one-thread figure pay for first-touching fresh memory (~30% slower in this VM, and
    // then less than half the two-thread figure).
    let t = Stopwatch::start();
    let (mut stored, mut raw_bytes) = (0u64, 0u64);
    for slice in &slices {
        match cairn::compress::compress(slice, ZSTD_LEVEL)? {
            Some(c) => stored += c.len() as u64,
            None => {
                stored += slice.len() as u64;
                raw_bytes += slice.len() as u64;
            }
        }
    }
    (l.zstd3_1t_mbps, l.zstd3_cpu_mbps) = t.rates(total);
    l.zstd3_ratio = total as f64 / stored as f64;
    l.incompressible_fraction = raw_bytes as f64 / total as f64;

    l.zstd3_2t_mbps = mbps(total, zstd_two_threads(&slices)?);
    // The input of the decompression measurement, untimed.
    let compressed: Vec<Option<Vec<u8>>> = {
        use rayon::prelude::*;
        slices
            .par_iter()
            .map(|s| cairn::compress::compress(s, ZSTD_LEVEL))
            .collect::<std::io::Result<_>>()?
    };
    let (mix, mix_cpu, compressed_only) = decompress_limits(&slices, &compressed)?;
    l.zstd_decompress_1t_mbps = mix;
    l.zstd_decompress_cpu_mbps = mix_cpu;
    l.zstd_decompress_1t_compressed_only_mbps = compressed_only;
    Ok(l)
}

fn zstd_two_threads(slices: &[&[u8]]) -> Result<Duration> {
    let t = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..2)
            .map(|k| {
                s.spawn(move || -> std::io::Result<u64> {
                    let mut stored = 0u64;
                    for slice in slices.iter().skip(k).step_by(2) {
                        stored += cairn::compress::compress(slice, ZSTD_LEVEL)?
                            .map_or(0, |c| c.len() as u64);
                    }
                    Ok(stored)
                })
            })
            .collect();
        for w in workers {
            let stored = w
                .join()
                .map_err(|_| anyhow::anyhow!("zstd worker panicked"))??;
            std::hint::black_box(stored);
        }
        Ok(())
    })?;
    Ok(t.elapsed())
}

/// (mixed MB/s over all slices, the same per CPU-second, MB/s over the compressed slices alone).
fn decompress_limits(slices: &[&[u8]], compressed: &[Option<Vec<u8>>]) -> Result<(f64, f64, f64)> {
    let cpu = thread_cpu();
    let mut out = vec![0u8; LIMIT_SLICE];
    let (mut c_bytes, mut raw_bytes) = (0u64, 0u64);
    let t = Instant::now();
    for (c, s) in compressed.iter().zip(slices) {
        if let Some(c) = c {
            let n = cairn::compress::decompress_into(c, &mut out[..s.len()])?;
            c_bytes += n as u64;
        }
    }
    let t_compressed = t.elapsed();
    let t = Instant::now();
    for (c, s) in compressed.iter().zip(slices) {
        if c.is_none() {
            out[..s.len()].copy_from_slice(s);
            raw_bytes += s.len() as u64;
        }
    }
    std::hint::black_box(&out);
    let t_raw = t.elapsed();
    let all = c_bytes + raw_bytes;
    Ok((
        mbps(all, t_compressed + t_raw),
        mbps(all, thread_cpu() - cpu),
        mbps(c_bytes, t_compressed),
    ))
}

// ---------------------------------------------------------------------------------------------
// Data

fn generate_gen1(args: &Args, path: &Path) -> Result<Value> {
    let t = Instant::now();
    let plan = rootfs::RootfsPlan::new(args.seed, args.size);
    let f = BufWriter::with_capacity(4 << 20, File::create(path)?);
    let summary = plan.write_tar(f)?;
    println!(
        "generated generation 1: {:.0} MB, {} files, {} dirs, {} symlinks in {:.1} s \
         (text {:.0} MB, binaries {:.0} MB, compressed {:.0} MB)",
        summary.archive_bytes as f64 / MB,
        summary.files,
        summary.dirs,
        summary.symlinks,
        t.elapsed().as_secs_f64(),
        summary.text_bytes as f64 / MB,
        summary.binary_bytes as f64 / MB,
        summary.compressed_bytes as f64 / MB,
    );
    Ok(serde_json::to_value(summary)?)
}

fn next_generation(
    seed: u64,
    generation: u32,
    from: &Path,
    to: &Path,
) -> Result<rootfs::ChangeSummary> {
    let input = BufReader::with_capacity(4 << 20, File::open(from)?);
    let out = File::create(to)?;
    let s = rootfs::next_generation(
        input,
        out,
        seed,
        generation,
        &rootfs::ChangeRates::default(),
    )?;
    Ok(s)
}

/// zstd-3 ratio of 16 MiB of each generated content kind (to check the generator's realism).
fn calibrate(seed: u64) {
    use rootfs::{Kind, TextStyle};
    let vocab = rootfs::Vocabulary::new(seed);
    let kinds = [
        ("text/prose", Kind::Text(TextStyle::Prose)),
        ("text/config", Kind::Text(TextStyle::Config)),
        ("text/code", Kind::Text(TextStyle::Code)),
        ("binary", Kind::Binary),
        ("compressed", Kind::Compressed(rootfs::GZIP_MAGIC)),
    ];
    for (name, kind) in kinds {
        let mut rng = rootfs::Rng::new(seed);
        let mut data = Vec::new();
        let t = Instant::now();
        while data.len() < 16 << 20 {
            let len = rng.lognormal(40_000.0, 1.0) as usize;
            rootfs::generate(kind, &mut rng, &vocab, len, &mut data);
        }
        let gen_time = t.elapsed();
        let stored: usize = data
            .chunks(LIMIT_SLICE)
            .map(|s| match cairn::compress::compress(s, ZSTD_LEVEL) {
                Ok(Some(c)) => c.len(),
                _ => s.len(),
            })
            .sum();
        println!(
            "{name:12} zstd-3 ratio {:.2}  (generated at {:.0} MB/s)",
            data.len() as f64 / stored as f64,
            mbps(data.len() as u64, gen_time)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// restic (optional)

struct Restic {
    repo: PathBuf,
    cache: PathBuf,
    src_parent: PathBuf,
    log: PathBuf,
}

fn restic_available() -> bool {
    Command::new("restic")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Restic {
    fn cmd(&self) -> Command {
        let mut c = Command::new("restic");
        c.env("RESTIC_PASSWORD", "x")
            .env("RESTIC_CACHE_DIR", &self.cache)
            .arg("--repo")
            .arg(&self.repo)
            .arg("--quiet");
        c
    }

    fn init(&self) -> Result<()> {
        run_child(self.cmd().arg("init"), None, &self.log)?;
        Ok(())
    }

    /// Brings one directory in line with `tar` (the same path every generation, as a host backs
    /// up its one root, so restic sees unchanged files unchanged) and backs it up.
    /// Returns the backup run and how long updating the directory took.
    fn backup_generation(&self, tar: &Path) -> Result<(Run, Duration)> {
        let t = Instant::now();
        let src = self.src_parent.join("rootfs");
        fs::create_dir_all(&src)?;
        sync_dir_with_tar(tar, &src).with_context(|| format!("extracting {}", tar.display()))?;
        let extract = t.elapsed();
        let mut c = self.cmd();
        c.current_dir(&self.src_parent)
            .args(["backup", "--host", "bench", "rootfs"]);
        Ok((run_child(&mut c, None, &self.log)?, extract))
    }
}

/// Makes `dir` hold what `tar` holds, writing only members whose size or mtime differ and
/// deleting what the archive no longer has. Much cheaper than a fresh extraction when a few
/// percent of 50,000 files change, since metadata operations are slow on shared disks.
fn sync_dir_with_tar(tar: &Path, dir: &Path) -> Result<()> {
    let mut archive = tar::Archive::new(BufReader::with_capacity(1 << 20, File::open(tar)?));
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    let mut seen: HashSet<PathBuf> = HashSet::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let rel: PathBuf = entry.path()?.components().collect();
        let dest = dir.join(&rel);
        let header = entry.header();
        let unchanged = match fs::symlink_metadata(&dest) {
            Ok(m) if header.entry_type().is_file() => {
                m.is_file() && m.len() == header.size()? && m.mtime() as u64 == header.mtime()?
            }
            Ok(m) if header.entry_type().is_dir() => m.is_dir(),
            Ok(m) if header.entry_type().is_symlink() => m.file_type().is_symlink(),
            Ok(m) if header.entry_type().is_hard_link() => match entry.link_name()? {
                Some(target) => fs::symlink_metadata(dir.join(target))
                    .is_ok_and(|t| t.ino() == m.ino() && t.dev() == m.dev()),
                None => false,
            },
            _ => false,
        };
        if !unchanged {
            if let Ok(m) = fs::symlink_metadata(&dest)
                && !m.is_dir()
            {
                fs::remove_file(&dest)?;
            }
            entry.unpack_in(dir)?;
        }
        // Archives need not list every parent directory; those extraction created stay too.
        for ancestor in rel.ancestors().skip(1) {
            if ancestor.as_os_str().is_empty() || !seen.insert(ancestor.to_path_buf()) {
                break;
            }
        }
        seen.insert(rel);
    }
    remove_unseen(dir, Path::new(""), &seen)
}

fn remove_unseen(root: &Path, rel: &Path, seen: &HashSet<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let child = rel.join(entry.file_name());
        let is_dir = entry.file_type()?.is_dir();
        if !seen.contains(&child) {
            if is_dir {
                fs::remove_dir_all(entry.path())?;
            } else {
                fs::remove_file(entry.path())?;
            }
        } else if is_dir {
            remove_unseen(root, &child, seen)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Start-up

fn create_many_snapshots(repo_path: &Path, count: u32) -> Result<Duration> {
    let repo = cairn::Repo::init(repo_path, &cairn::InitOptions::default())?;
    let t = Instant::now();
    for i in 0..count {
        let mut content = format!("startup snapshot {i}\n").into_bytes();
        content.resize(1024, b'.');
        let spec = cairn::SnapshotSpec {
            kind: "tar".into(),
            source: "startup".into(),
            ..Default::default()
        };
        let input = cairn::StreamInput {
            name: "data".into(),
            role: "data".into(),
            reader: Box::new(std::io::Cursor::new(content)),
        };
        repo.snapshot(spec, vec![input], &cairn::progress::Silent)?;
    }
    Ok(t.elapsed())
}

/// A 1 KiB tar stream: one 512-byte member with its header.
fn tiny_tar(path: &Path) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_path("etc/hostname")?;
    header.set_size(512);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    let mut bytes = header.as_bytes().to_vec();
    bytes.resize(1024, b'h');
    fs::write(path, bytes)?;
    Ok(())
}

fn repeat<F: FnMut() -> Result<Run>>(n: u32, mut f: F) -> Result<Vec<Run>> {
    (0..n).map(|_| f()).collect()
}

/// The run with the shortest wall time (throughput figures are the best of `--repeat` runs).
fn fastest(runs: Vec<Run>) -> Result<Run> {
    runs.into_iter().min_by_key(|r| r.wall).context("no runs")
}

/// Prints every run of a repeated measurement, the first under `what`.
fn print_runs(what: &str, bytes: Option<u64>, runs: &[Run]) {
    for (k, r) in runs.iter().enumerate() {
        match k {
            0 => print_run(what, bytes, r),
            _ => print_run(&format!("  (run {})", k + 1), bytes, r),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Report

struct Target {
    name: &'static str,
    measured: f64,
    unit: &'static str,
    reference: f64,
    rule: String,
    /// true: measured must be >= reference; false: <=.
    at_least: bool,
}

impl Target {
    fn pass(&self) -> bool {
        if self.at_least {
            self.measured >= self.reference
        } else {
            self.measured <= self.reference
        }
    }

    fn ratio(&self) -> f64 {
        self.measured / self.reference
    }

    fn json(&self) -> Value {
        json!({
            "name": self.name,
            "measured": self.measured,
            "unit": self.unit,
            "target": self.reference,
            "rule": self.rule,
            "ratio": self.ratio(),
            "result": if self.pass() { "PASS" } else { "MISS" },
        })
    }
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default()
}

fn print_run(what: &str, bytes: Option<u64>, r: &Run) {
    let speed = bytes
        .map(|b| format!("{:8.1} MB/s", mbps(b, r.wall)))
        .unwrap_or_else(|| " ".repeat(13));
    println!(
        "  {what:34} {speed}  wall {:7.2} s  cpu/wall {:4.2}  user {:6.2} s  sys {:5.2} s  peak RSS {:6.1} MiB",
        r.wall.as_secs_f64(),
        r.cpu_per_wall(),
        r.user.as_secs_f64(),
        r.sys.as_secs_f64(),
        r.max_rss_kib as f64 / 1024.0
    );
}

fn field(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------

fn main() {
    if let Err(e) = real_main() {
        eprintln!("macro bench failed: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let args = parse_args()?;
    let run_start = Instant::now();
    if args.calibrate {
        calibrate(args.seed);
        return Ok(());
    }
    let bin = cairn_binary(&args)?;
    let work = work_dir(&args)?;
    let w = work.path.clone();
    println!("cairn macro benchmark");
    println!("  binary     {}", bin.display());
    println!(
        "  work dir   {} (removed at the end unless --keep)",
        w.display()
    );
    println!(
        "  machine    {} CPUs, {}; load average before: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        load_average()
    );
    let mut report = serde_json::Map::new();
    report.insert("load_average_before".into(), json!(load_average()));

    // Data: generation 1.
    let gen_path = |g: u32| w.join(format!("gen{g}.tar"));
    let gen1 = match &args.data {
        Some(p) => {
            println!("  data       {} (given)", p.display());
            report.insert(
                "data".into(),
                json!({ "given": p, "bytes": fs::metadata(p)?.len() }),
            );
            p.clone()
        }
        None => {
            let t = Instant::now();
            let summary = generate_gen1(&args, &gen_path(1))?;
            report.insert("generate_gen1_s".into(), json!(t.elapsed().as_secs_f64()));
            report.insert(
                "data".into(),
                json!({ "generated": summary, "seed": args.seed }),
            );
            gen_path(1)
        }
    };
    let gen1_bytes = fs::metadata(&gen1)?.len();

    // Machine limits on the same bytes.
    println!(
        "\nmachine limits (single process, on {} of generation 1):",
        human(args.limit_sample.min(gen1_bytes))
    );
    let t = Instant::now();
    let limits_before = measure_limits(&gen1, args.limit_sample)?;
    let mut limits_s = t.elapsed().as_secs_f64();
    print_limits(&limits_before);
    report.insert("limits_before".into(), serde_json::to_value(limits_before)?);

    // cairn: ingest, re-ingest, generations, restore.
    let cairn = Cairn {
        bin: bin.clone(),
        repo: w.join("cairn-repo"),
        log: w.join("cairn-stderr.log"),
    };
    let restic = if args.restic && restic_available() {
        let r = Restic {
            repo: w.join("restic-repo"),
            cache: w.join("restic-cache"),
            src_parent: w.join("restic-src"),
            log: w.join("restic-stderr.log"),
        };
        fs::create_dir_all(&r.src_parent)?;
        r.init()?;
        Some(r)
    } else {
        println!(
            "\nrestic: {}",
            if args.restic {
                "not installed; comparison skipped"
            } else {
                "skipped (--no-restic)"
            }
        );
        None
    };
    cairn.init()?;
    println!("\ncairn runs (wall-clock; cpu/wall = (user+sys)/wall, at most 2.0 on 2 cores):");
    let (first, first_json) = cairn.snapshot_tar(&gen1)?;
    let mut new_runs = vec![first];
    // Further runs of ingesting new data each go into a repository of their own.
    for k in 2..=args.repeat {
        let scratch = Cairn {
            bin: bin.clone(),
            repo: w.join(format!("scratch-repo-{k}")),
            log: cairn.log.clone(),
        };
        scratch.init()?;
        new_runs.push(scratch.snapshot_tar(&gen1)?.0);
        fs::remove_dir_all(&scratch.repo)?;
    }
    print_runs("snapshot gen 1 (new data)", Some(gen1_bytes), &new_runs);
    let first = fastest(new_runs)?;
    let mut stored_runs = Vec::new();
    let mut again_json = Value::Null;
    for _ in 0..args.repeat {
        let (run, js) = cairn.snapshot_tar(&gen1)?;
        stored_runs.push(run);
        again_json = js;
    }
    print_runs(
        "snapshot gen 1 again (stored data)",
        Some(gen1_bytes),
        &stored_runs,
    );
    let again = fastest(stored_runs)?;

    let mut generations = vec![json!({
        "generation": 1,
        "archive_bytes": gen1_bytes,
        "changed_bytes": gen1_bytes,
        "cairn_stored_bytes": field(&first_json, "stored_bytes"),
        "cairn_new_bytes": field(&first_json, "new_bytes"),
        "cairn_repo_bytes": dir_bytes(&cairn.repo),
        "cairn": first.json(),
    })];
    let mut runs: Vec<(&str, Run)> = vec![
        ("snapshot gen 1", first.clone()),
        ("snapshot gen 1 again", again.clone()),
    ];
    let mut restic_sizes = Vec::new();
    let mut restic_extract = Duration::ZERO;
    let mut restic_backup = Duration::ZERO;
    if let Some(r) = &restic {
        let (run, extract) = r.backup_generation(&gen1)?;
        restic_extract += extract;
        restic_backup += run.wall;
        restic_sizes.push(dir_bytes(&r.repo));
        generations[0]["restic_repo_bytes"] = json!(restic_sizes[0]);
        generations[0]["restic"] = run.json();
    }
    let mut latest = gen1.clone();
    let mut latest_bytes = gen1_bytes;
    for g in 2..=args.generations {
        let path = gen_path(g);
        let t = Instant::now();
        let change = next_generation(args.seed, g, &latest, &path)?;
        let gen_time = t.elapsed();
        let (run, js) = cairn.snapshot_tar(&path)?;
        print_run(
            &format!("snapshot gen {g}"),
            Some(change.archive_bytes),
            &run,
        );
        let mut entry = json!({
            "generation": g,
            "archive_bytes": change.archive_bytes,
            "changed_bytes": change.changed_bytes,
            "changes": change,
            "generate_s": gen_time.as_secs_f64(),
            "cairn_stored_bytes": field(&js, "stored_bytes"),
            "cairn_new_bytes": field(&js, "new_bytes"),
            "cairn_repo_bytes": dir_bytes(&cairn.repo),
            "cairn": run.json(),
        });
        if let Some(r) = &restic {
            let (rr, extract) = r.backup_generation(&path)?;
            restic_extract += extract;
            restic_backup += rr.wall;
            restic_sizes.push(dir_bytes(&r.repo));
            entry["restic_repo_bytes"] = json!(restic_sizes[restic_sizes.len() - 1]);
            entry["restic"] = rr.json();
        }
        generations.push(entry);
        runs.push(("snapshot later generation", run));
        // Keep the given --data file and the newest generation only.
        if args.data.as_deref() != Some(latest.as_path()) {
            let _ = fs::remove_file(&latest);
        }
        latest = path;
        latest_bytes = change.archive_bytes;
    }
    // The targets are for reads from the page cache; cairn drops packs from the cache once
    // they are durable, so read them in first (untimed).
    warm_page_cache(&cairn.repo.join("packs"))?;
    let restore_runs = repeat(args.repeat, || cairn.restore_latest_to_null())?;
    print_runs(
        &format!("restore latest (gen {})", args.generations),
        Some(latest_bytes),
        &restore_runs,
    );
    let restore = fastest(restore_runs)?;
    runs.push(("restore latest", restore.clone()));
    let checked_bytes = cairn.unique_bytes()?;
    let check_runs = repeat(args.repeat, || cairn.check_read_data())?;
    print_runs(
        "repo check --read-data (unique data)",
        Some(checked_bytes),
        &check_runs,
    );
    let check = fastest(check_runs)?;
    runs.push(("repo check --read-data", check.clone()));
    // Browsing a multi-GB stream must not read it: ls and diff walk the member index, stats
    // --by-source marks tree nodes only.
    let (prev, last) = cairn.last_two_ids()?;
    let ls = cairn.timed(&["ls", &last, "--recursive"])?;
    let diff = cairn.timed(&["diff", &prev, &last])?;
    let by_source = cairn.timed(&["repo", "stats", "--by-source"])?;
    print_run("ls --recursive (newest generation)", None, &ls);
    print_run("diff of the two newest generations", None, &diff);
    print_run("repo stats --by-source", None, &by_source);

    print_generations(&generations, restic.is_some());

    // Start-up.
    let many = Cairn {
        bin: bin.clone(),
        repo: w.join("startup-repo"),
        log: w.join("startup-stderr.log"),
    };
    let creation = create_many_snapshots(&many.repo, args.startup_snapshots)?;
    let tiny = w.join("tiny.tar");
    tiny_tar(&tiny)?;
    let list_runs = repeat(args.startup_runs, || many.snapshots_list())?;
    let tiny_runs = repeat(args.startup_runs, || {
        many.snapshot_tar(&tiny).map(|(r, _)| r)
    })?;
    let empty = Cairn {
        bin: bin.clone(),
        repo: w.join("empty-repo"),
        log: w.join("empty-stderr.log"),
    };
    empty.init()?;
    let tiny_fresh_runs = repeat(args.startup_runs, || {
        empty.snapshot_tar(&tiny).map(|(r, _)| r)
    })?;
    let list_ms = median_ms(&list_runs);
    let tiny_ms = median_ms(&tiny_runs);
    let tiny_fresh_ms = median_ms(&tiny_fresh_runs);
    println!("\nstart-up (median of {} runs):", args.startup_runs);
    println!(
        "  {} snapshots created through the library in {:.1} s ({:.1} ms each)",
        args.startup_snapshots,
        creation.as_secs_f64(),
        creation.as_secs_f64() * 1e3 / f64::from(args.startup_snapshots.max(1))
    );
    println!(
        "  cairn snapshots ({} snapshots)        {list_ms:7.1} ms",
        args.startup_snapshots
    );
    println!("  cairn snapshot tar 1 KiB (same repo)   {tiny_ms:7.1} ms");
    println!("  cairn snapshot tar 1 KiB (small repo)  {tiny_fresh_ms:7.1} ms");
    for r in list_runs.iter().chain(&tiny_runs) {
        runs.push(("start-up", r.clone()));
    }

    // The limits again, after cairn's runs, on the newest generation (generation 1 may be
    // gone; the two share ~97% of their bytes). Targets use the better of the two, figure by
    // figure, as cairn's throughput figures are its best of `--repeat` runs.
    println!("\nmachine limits again, after cairn's runs (newest generation):");
    let t = Instant::now();
    let limits_after = measure_limits(&latest, args.limit_sample)?;
    limits_s += t.elapsed().as_secs_f64();
    print_limits(&limits_after);
    let limits = limits_before.best_of(&limits_after);
    report.insert("limits_after".into(), serde_json::to_value(limits_after)?);
    report.insert("limits".into(), serde_json::to_value(limits)?);
    report.insert("limits_s".into(), json!(limits_s));
    println!(
        "  targets use the better of the two: FastCDC {:.0}, zstd-3 2 threads {:.0}, \
         zstd decompress {:.0} MB/s",
        limits.fastcdc_1t_mbps, limits.zstd3_2t_mbps, limits.zstd_decompress_1t_mbps
    );

    // Targets.
    let peak_rss_mib = runs.iter().map(|(_, r)| r.max_rss_kib).max().unwrap_or(0) as f64 / 1024.0;
    let mut targets = vec![
        Target {
            name: "ingest new data",
            measured: mbps(gen1_bytes, first.wall),
            unit: "MB/s",
            reference: 0.8 * limits.zstd3_2t_mbps,
            rule: "≥ 80% of two-thread zstd-3".into(),
            at_least: true,
        },
        Target {
            name: "ingest stored data",
            measured: mbps(gen1_bytes, again.wall),
            unit: "MB/s",
            reference: 0.7 * limits.fastcdc_1t_mbps,
            rule: "≥ 70% of single-core FastCDC".into(),
            at_least: true,
        },
        Target {
            name: "restore",
            measured: mbps(latest_bytes, restore.wall),
            unit: "MB/s",
            reference: 1.6 * limits.zstd_decompress_1t_mbps,
            rule: "≥ 1.6× single-thread zstd decompression".into(),
            at_least: true,
        },
        Target {
            name: "ls --recursive",
            measured: ls.wall.as_secs_f64() * 1000.0,
            unit: "ms",
            reference: 1000.0,
            rule: "well under a second".into(),
            at_least: false,
        },
        Target {
            name: "diff of two generations",
            measured: diff.wall.as_secs_f64() * 1000.0,
            unit: "ms",
            reference: 1000.0,
            rule: "well under a second".into(),
            at_least: false,
        },
        Target {
            name: "stats --by-source",
            measured: by_source.wall.as_secs_f64() * 1000.0,
            unit: "ms",
            reference: 1000.0,
            rule: "well under a second".into(),
            at_least: false,
        },
        Target {
            name: "check --read-data",
            measured: mbps(checked_bytes, check.wall),
            unit: "MB/s",
            reference: mbps(latest_bytes, restore.wall),
            rule: "≥ restore of the same data".into(),
            at_least: true,
        },
        Target {
            name: "start-up: snapshots list",
            measured: list_ms,
            unit: "ms",
            reference: 50.0,
            rule: format!("≤ 50 ms with {} snapshots", args.startup_snapshots),
            at_least: false,
        },
        Target {
            name: "start-up: snapshot tar 1 KiB",
            measured: tiny_ms,
            unit: "ms",
            reference: 50.0,
            rule: format!(
                "≤ 50 ms (repository of {} snapshots)",
                args.startup_snapshots
            ),
            at_least: false,
        },
        Target {
            name: "peak RSS",
            measured: peak_rss_mib,
            unit: "MiB",
            reference: 300.0,
            rule: "≤ 300 MiB in every run".into(),
            at_least: false,
        },
    ];
    if let (Some(&restic_total), Some(last)) = (restic_sizes.last(), generations.last()) {
        targets.push(Target {
            name: "stored bytes vs restic",
            measured: field(last, "cairn_repo_bytes") as f64 / MB,
            unit: "MB",
            reference: restic_total as f64 / MB,
            rule: format!(
                "≤ restic's repository after {} generations",
                args.generations
            ),
            at_least: false,
        });
    }
    print_targets(&targets);
    let ceilings = print_ceilings(&limits, &targets);
    report.insert("ceilings".into(), ceilings);
    reset_own_peak_rss();
    println!(
        "  (RSS measurement floor: {:.1} MiB, this bench process's own RSS when it starts a child)",
        own_peak_rss_kib() as f64 / 1024.0
    );

    report.insert("cairn_binary".into(), json!(bin));
    report.insert(
        "cpus".into(),
        json!(std::thread::available_parallelism().map_or(0, |n| n.get())),
    );
    report.insert("cpu_model".into(), json!(cpu_model()));
    report.insert(
        "ingest_new".into(),
        json!({ "bytes": gen1_bytes, "mbps": mbps(gen1_bytes, first.wall), "run": first.json(), "summary": first_json }),
    );
    report.insert(
        "ingest_stored".into(),
        json!({ "bytes": gen1_bytes, "mbps": mbps(gen1_bytes, again.wall), "run": again.json(), "summary": again_json }),
    );
    report.insert(
        "restore".into(),
        json!({ "bytes": latest_bytes, "mbps": mbps(latest_bytes, restore.wall), "run": restore.json() }),
    );
    report.insert(
        "check_read_data".into(),
        json!({ "bytes": checked_bytes, "mbps": mbps(checked_bytes, check.wall), "run": check.json() }),
    );
    report.insert(
        "browse_ms".into(),
        json!({
            "ls_recursive": ls.wall.as_secs_f64() * 1000.0,
            "diff": diff.wall.as_secs_f64() * 1000.0,
            "stats_by_source": by_source.wall.as_secs_f64() * 1000.0,
        }),
    );
    report.insert("generations".into(), json!(generations));
    report.insert(
        "startup".into(),
        json!({
            "snapshots": args.startup_snapshots,
            "creation_s": creation.as_secs_f64(),
            "runs": args.startup_runs,
            "snapshots_list_median_ms": list_ms,
            "snapshot_tar_1k_median_ms": tiny_ms,
            "snapshot_tar_1k_small_repo_median_ms": tiny_fresh_ms,
            "snapshots_list_peak_rss_mib": list_runs.iter().map(|r| r.max_rss_kib).max().unwrap_or(0) as f64 / 1024.0,
        }),
    );
    report.insert("peak_rss_mib".into(), json!(peak_rss_mib));
    reset_own_peak_rss();
    let cpu_view = print_cpu_view([
        (
            "ingest new data",
            gen1_bytes,
            &first,
            "zstd-3",
            limits.zstd3_cpu_mbps,
        ),
        (
            "ingest stored data",
            gen1_bytes,
            &again,
            "FastCDC",
            limits.fastcdc_cpu_mbps,
        ),
        (
            "restore",
            latest_bytes,
            &restore,
            "zstd decompression",
            limits.zstd_decompress_cpu_mbps,
        ),
    ]);
    report.insert("cpu_view".into(), cpu_view);
    report.insert(
        "rss_floor_mib".into(),
        json!(own_peak_rss_kib() as f64 / 1024.0),
    );
    report.insert("restic".into(), json!(restic.is_some()));
    report.insert(
        "targets".into(),
        Value::Array(targets.iter().map(Target::json).collect()),
    );
    report.insert("load_average_after".into(), json!(load_average()));
    report.insert(
        "phases_s".into(),
        json!({
            "restic_extract": restic_extract.as_secs_f64(),
            "restic_backup": restic_backup.as_secs_f64(),
            "startup_creation": creation.as_secs_f64(),
            "total_before_cleanup": run_start.elapsed().as_secs_f64(),
        }),
    );
    println!(
        "\nphases: total {:.0} s before cleanup; restic: extraction {:.0} s, backups {:.0} s; \
         creating the start-up repository {:.0} s",
        run_start.elapsed().as_secs_f64(),
        restic_extract.as_secs_f64(),
        restic_backup.as_secs_f64(),
        creation.as_secs_f64()
    );
    println!("\nJSON:");
    println!("{}", serde_json::to_string(&Value::Object(report))?);
    Ok(())
}

fn human(bytes: u64) -> String {
    if bytes >= GIB {
        format!("{:.2} GiB", bytes as f64 / GIB as f64)
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    }
}

fn print_generations(generations: &[Value], with_restic: bool) {
    println!("\ngenerations (MB = 10^6 bytes; 'changed' = new content bytes the generator wrote):");
    print!("  gen   archive   changed  files chg   cairn added  cairn repo");
    if with_restic {
        print!("   restic added  restic repo");
    }
    println!();
    let mut prev_cairn = 0u64;
    let mut prev_restic = 0u64;
    for g in generations {
        let changes = g.get("changes");
        let files_changed = changes.map_or(0, |c| {
            ["replaced", "modified", "appended", "removed", "inserted"]
                .iter()
                .map(|k| field(c, k))
                .sum::<u64>()
        });
        let cairn_repo = field(g, "cairn_repo_bytes");
        print!(
            "  {:3} {:9.1} {:9.2} {:10} {:13.2} {:11.1}",
            field(g, "generation"),
            field(g, "archive_bytes") as f64 / MB,
            field(g, "changed_bytes") as f64 / MB,
            files_changed,
            (cairn_repo - prev_cairn.min(cairn_repo)) as f64 / MB,
            cairn_repo as f64 / MB,
        );
        prev_cairn = cairn_repo;
        if with_restic {
            let restic_repo = field(g, "restic_repo_bytes");
            print!(
                " {:14.2} {:12.1}",
                (restic_repo - prev_restic.min(restic_repo)) as f64 / MB,
                restic_repo as f64 / MB
            );
            prev_restic = restic_repo;
        }
        println!();
    }
    println!("  (cairn added = growth of the whole repository directory: packs, index, manifests)");
}

/// Work per byte, free of other load on the machine: MB per CPU-second of cairn (all threads,
/// user + sys) beside the kernel that bounds that path, and how much of the available cores the
/// run kept busy.
fn print_cpu_view<const N: usize>(rows: [(&str, u64, &Run, &str, f64); N]) -> Value {
    println!(
        "\nCPU-time view (MB per CPU-second, all threads; unaffected by other load on the machine):"
    );
    let mut out = serde_json::Map::new();
    for (name, bytes, run, kernel, kernel_rate) in rows {
        let cpu = run.user + run.sys;
        let rate = mbps(bytes, cpu);
        println!(
            "  {name:20} cairn {rate:7.0} MB/cpu-s   {:>24} {kernel_rate:7.0} MB/cpu-s   \
             cairn costs {:.2}× the kernel's CPU; cpu/wall {:.2}",
            format!("{kernel} alone"),
            kernel_rate / rate,
            run.cpu_per_wall()
        );
        out.insert(
            name.to_string(),
            json!({
                "cairn_mb_per_cpu_s": rate,
                "kernel": kernel,
                "kernel_mb_per_cpu_s": kernel_rate,
                "cpu_cost_vs_kernel": kernel_rate / rate,
                "cpu_per_wall": run.cpu_per_wall(),
            }),
        );
    }
    Value::Object(out)
}

/// The most each throughput path could reach if the work the design makes mandatory were all it
/// did, spread over every core without loss: each byte is chunked once (FastCDC, which one core
/// must do alone) and hashed twice (its chunk's id and the whole-stream digest); new bytes are
/// compressed once; restored bytes are decompressed once and hashed twice (each blob against its
/// id, then the stream digest). Kernel costs are this run's per-CPU-second figures, so the bound
/// is optimistic: it ignores reading, writing, lookups, hand-offs, and the slowdown of two busy
/// cores sharing caches. A target above its ceiling cannot be met on this machine by any code
/// doing that work.
fn print_ceilings(l: &Limits, targets: &[Target]) -> Value {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let ns = |mbps: f64| 1000.0 / mbps; // CPU nanoseconds per byte
    let chunk_and_hash = ns(l.fastcdc_cpu_mbps) + 2.0 * ns(l.blake3_cpu_mbps);
    let rows = [
        (
            "ingest new data",
            "zstd-3 + FastCDC + 2 × BLAKE3",
            1000.0 * cores / (ns(l.zstd3_cpu_mbps) + chunk_and_hash),
        ),
        (
            "ingest stored data",
            "FastCDC (one core) + 2 × BLAKE3",
            (1000.0 * cores / chunk_and_hash).min(l.fastcdc_cpu_mbps),
        ),
        (
            "restore",
            "zstd decompression + 2 × BLAKE3",
            1000.0 * cores / (ns(l.zstd_decompress_cpu_mbps) + 2.0 * ns(l.blake3_cpu_mbps)),
        ),
    ];
    println!(
        "\nceilings: the mandatory kernels alone on {cores} perfectly used cores (an upper bound):"
    );
    let mut out = serde_json::Map::new();
    for (name, work, ceiling) in rows {
        let Some(t) = targets.iter().find(|t| t.name == name) else {
            continue;
        };
        println!(
            "  {name:20} ceiling {ceiling:7.0} MB/s = {:.2} of the target; cairn reaches {:.2} of \
             the ceiling   ({work})",
            ceiling / t.reference,
            t.measured / ceiling
        );
        out.insert(
            name.to_string(),
            json!({
                "work": work,
                "ceiling_mbps": ceiling,
                "ceiling_vs_target": ceiling / t.reference,
                "measured_vs_ceiling": t.measured / ceiling,
            }),
        );
    }
    Value::Object(out)
}

fn print_targets(targets: &[Target]) {
    println!("\ntargets (informational):");
    println!(
        "  {:30} {:>12} {:>12}  {:>6}  {:6}  rule",
        "what", "cairn", "target", "ratio", "result"
    );
    for t in targets {
        println!(
            "  {:30} {:>8.1} {:4} {:>8.1} {:4} {:6.2}  {:6}  {}",
            t.name,
            t.measured,
            t.unit,
            t.reference,
            t.unit,
            t.ratio(),
            if t.pass() { "PASS" } else { "MISS" },
            t.rule
        );
    }
}
