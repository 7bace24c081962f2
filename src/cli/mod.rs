//! Command-line interface: clap definitions, output, exit codes. All work is done by the
//! library; this module parses, calls, and prints.

mod browse;
mod docker;
mod fmt;
mod progress;

use anyhow::{Context, Result, bail};
use cairn::format::manifest::{Manifest, StreamEntry};
use cairn::{Id, InitOptions, Repo, SnapshotSpec, StreamInput};
use clap::{Args, Parser, Subcommand};
use progress::Bar;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit codes (documented in the README).
const EXIT_FAILURE: u8 = 1;
const EXIT_DAMAGE: u8 = 3;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Deduplicating, verifiable snapshots of Docker state"
)]
struct Cli {
    /// Repository directory.
    #[arg(short = 'r', long = "repo", env = "CAIRN_REPO", global = true)]
    repo: Option<PathBuf>,
    /// No progress output.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Seconds to wait for a conflicting lock (e.g. a running gc) before giving up.
    #[arg(long, env = "CAIRN_LOCK_WAIT", global = true, default_value_t = 600)]
    lock_wait: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Repository maintenance.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Take a snapshot.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// List snapshots.
    Snapshots {
        /// Only snapshots of this source.
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        json: bool,
        /// Also show what each snapshot added to the repository.
        #[arg(long)]
        long: bool,
    },
    /// List the members of a snapshot's tar stream.
    Ls(browse::LsArgs),
    /// Write one file of a snapshot to stdout.
    Cat(browse::CatArgs),
    /// Show what changed between two snapshots.
    Diff(browse::DiffArgs),
    /// Restore a snapshot's bytes or unpack it.
    Restore(RestoreArgs),
    /// Reassemble a snapshot's streams without writing them and check every digest.
    Verify {
        snapshot: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove snapshots by id or by a retention policy (data is freed by `repo gc`).
    Forget(ForgetArgs),
}

#[derive(Args)]
struct ForgetArgs {
    /// Snapshots to remove (ids, prefixes or `latest`); not combined with --keep-* rules.
    snapshots: Vec<String>,
    #[arg(long)]
    keep_last: Option<usize>,
    #[arg(long)]
    keep_hourly: Option<usize>,
    #[arg(long)]
    keep_daily: Option<usize>,
    #[arg(long)]
    keep_weekly: Option<usize>,
    #[arg(long)]
    keep_monthly: Option<usize>,
    #[arg(long)]
    keep_yearly: Option<usize>,
    /// Keep snapshots newer than the series' newest minus this duration (e.g. 2d12h, 1y6m, 3w).
    #[arg(long)]
    keep_within: Option<cairn::forget::Within>,
    #[arg(long = "keep-tag")]
    keep_tags: Vec<String>,
    /// Only consider snapshots of this source.
    #[arg(long)]
    source: Option<String>,
    /// Only consider snapshots of this kind.
    #[arg(long)]
    kind: Option<String>,
    /// Show what would be kept and removed; change nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(long)]
    json: bool,
    /// Run `repo gc` afterwards.
    #[arg(long)]
    gc: bool,
}

#[derive(Subcommand)]
enum RepoCommand {
    /// Create a new repository.
    Init(InitArgs),
    /// Sizes and deduplication.
    Stats {
        #[arg(long)]
        json: bool,
        /// Space used per series: logical, stored only by it, shared with others.
        #[arg(long)]
        by_source: bool,
    },
    /// Recreate index.sqlite from the packs and manifests.
    RebuildIndex,
    /// Delete unused data: packs no snapshot needs, repack mostly-unused ones.
    Gc(GcArgs),
    /// Verify the repository: structure, and with --read-data every byte.
    Check {
        /// Read, decompress and re-hash every blob.
        #[arg(long, conflicts_with = "read_data_subset")]
        read_data: bool,
        /// Read a subset: `n/m` (slice n of m; m runs cover everything) or a percentage (`5%`).
        #[arg(long)]
        read_data_subset: Option<cairn::check::ReadData>,
        #[arg(long)]
        json: bool,
    },
    /// Make a damaged repository consistent: salvage intact blobs, quarantine the rest.
    Repair {
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Remove stale locks left by killed processes.
    Unlock {
        /// Remove all locks, also live ones (only when no cairn process runs).
        #[arg(long)]
        remove_all: bool,
    },
}

#[derive(Args)]
struct InitArgs {
    /// Average chunk size in bytes (min = avg/4, max = avg×4). Fixed for the repository's life.
    #[arg(long, default_value_t = cairn::repo::DEFAULT_CHUNKER.avg_size)]
    chunk_size: u32,
    /// Target pack file size in bytes.
    #[arg(long, default_value_t = cairn::repo::DEFAULT_PACK_SIZE)]
    pack_size: u64,
    /// zstd compression level (1–22).
    #[arg(long, default_value_t = cairn::repo::DEFAULT_ZSTD_LEVEL)]
    compression_level: i32,
    /// Chunk paged files (SQLite, PostgreSQL, InnoDB, CRIU page images) by content like any
    /// other data, instead of at page boundaries.
    #[arg(long)]
    no_page_align: bool,
}

#[derive(Args)]
struct GcArgs {
    #[arg(long)]
    dry_run: bool,
    /// Repack packs with more than this percentage unused.
    #[arg(long, default_value_t = 10.0)]
    max_unused: f64,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone)]
struct SnapshotOpts {
    /// Series name (default depends on the source).
    #[arg(long)]
    source: Option<String>,
    #[arg(long = "tag")]
    tags: Vec<String>,
    #[arg(long)]
    note: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Snapshot a tar stream from a file or `-` (stdin), stored bit-exact.
    Tar {
        file: PathBuf,
        #[command(flatten)]
        opts: SnapshotOpts,
    },
    /// Snapshot a host directory as a deterministic tar stream.
    Dir {
        path: PathBuf,
        /// Snapshot kind (e.g. `checkpoint` for a CRIU checkpoint directory).
        #[arg(long, default_value = "dir")]
        kind: String,
        #[command(flatten)]
        opts: SnapshotOpts,
    },
    #[command(flatten)]
    Docker(docker::DockerSnapshot),
}

#[derive(Args)]
struct RestoreArgs {
    /// Snapshot id, unique prefix (8+ hex digits) or `latest`.
    snapshot: String,
    /// Which stream of a multi-stream snapshot.
    #[arg(long)]
    stream: Option<String>,
    /// Write the exact bytes to FILE, or `-` for stdout.
    #[arg(long, conflicts_with = "extract", required_unless_present_any = ["extract", "to_volume", "to_container", "load_image", "to_compose"])]
    output: Option<PathBuf>,
    /// Unpack the tar stream into DIR.
    #[arg(long)]
    extract: Option<PathBuf>,
    /// With --extract: only members matching this glob (`*`, `?`, `**`; a directory includes
    /// its contents). Repeatable.
    #[arg(long, requires = "extract")]
    include: Vec<String>,
    /// With --extract: leave out members matching this glob. Repeatable.
    #[arg(long, requires = "extract")]
    exclude: Vec<String>,
    #[command(flatten)]
    docker: docker::DockerRestoreArgs,
}

pub fn main() -> ExitCode {
    // Like other Unix tools, die quietly when a reader closes our stdout (`cairn ... | head`)
    // instead of failing on EPIPE in the middle of printing.
    // SAFETY: setting a signal disposition to SIG_DFL has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("cairn: error: {}", fmt::error_line(&e));
            let damage = e
                .downcast_ref::<cairn::Error>()
                .is_some_and(|c| c.is_damage());
            ExitCode::from(if damage { EXIT_DAMAGE } else { EXIT_FAILURE })
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn repo_path(cli: &Cli) -> Result<&Path> {
    cli.repo
        .as_deref()
        .context("no repository given: use -r/--repo PATH or set CAIRN_REPO")
}

fn open(cli: &Cli) -> Result<Repo> {
    let mut repo = Repo::open(repo_path(cli)?)?;
    repo.set_lock_wait(std::time::Duration::from_secs(cli.lock_wait));
    Ok(repo)
}

fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Repo(RepoCommand::Init(args)) => {
            let path = repo_path(&cli)?;
            let avg = args.chunk_size;
            let min = (avg / 4) & !1;
            let opts = InitOptions {
                chunker: cairn::format::config::ChunkerParams {
                    min_size: min,
                    avg_size: avg,
                    max_size: avg.saturating_mul(4),
                    page_align: !args.no_page_align,
                    // Groups never larger than the smallest chunk; below a tar block, the
                    // groups are simply chunks of at least `min_size`.
                    member_group: (min >= 512)
                        .then_some(cairn::repo::DEFAULT_MEMBER_GROUP.min(min)),
                    ..cairn::repo::DEFAULT_CHUNKER
                },
                zstd_level: args.compression_level,
                pack_size: args.pack_size,
            };
            let repo = Repo::init(path, &opts)?;
            println!(
                "created cairn repository {} at {}",
                repo.config().id,
                path.display()
            );
        }
        Command::Repo(RepoCommand::Stats {
            json,
            by_source: true,
        }) => browse::stats_by_source(&open(&cli)?, *json)?,
        Command::Repo(RepoCommand::Stats { json, .. }) => stats(&open(&cli)?, *json)?,
        Command::Repo(RepoCommand::RebuildIndex) => {
            let path = repo_path(&cli)?;
            let report = cairn::rebuild::rebuild_repository_index(path)?;
            println!(
                "index rebuilt: {} packs, {} blobs, {} snapshots",
                report.packs, report.blobs, report.snapshots
            );
            for p in &report.unreadable_packs {
                eprintln!("unreadable pack: {p}");
            }
            for s in &report.unreadable_snapshots {
                eprintln!("unreadable snapshot: {s}");
            }
        }
        Command::Repo(RepoCommand::Gc(args)) => gc(&open(&cli)?, args, cli.quiet)?,
        Command::Repo(RepoCommand::Unlock { remove_all }) => {
            let path = repo_path(&cli)?;
            let layout = cairn::store::Layout::new(path);
            if !layout.config().exists() {
                return Err(cairn::Error::NotARepository(path.to_path_buf()).into());
            }
            let removed = cairn::lock::unlock(&layout, *remove_all)?;
            for info in &removed {
                println!("removed {}", cairn::lock::describe(info));
            }
            println!("{} locks removed", removed.len());
        }
        Command::Forget(args) => forget(&open(&cli)?, args, cli.quiet)?,
        Command::Repo(RepoCommand::Check {
            read_data,
            read_data_subset,
            json,
        }) => {
            let mode = match (read_data, read_data_subset) {
                (true, _) => cairn::check::ReadData::All,
                (false, Some(subset)) => *subset,
                (false, None) => cairn::check::ReadData::None,
            };
            return check(&open(&cli)?, mode, *json, cli.quiet);
        }
        Command::Repo(RepoCommand::Repair { dry_run, json }) => {
            let bar = Bar::new(cli.quiet);
            let r = cairn::repair::repair(repo_path(&cli)?, *dry_run, &bar)?;
            drop(bar);
            if *json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                let verb = |done: &str, plan: &str| {
                    if r.dry_run {
                        plan.to_string()
                    } else {
                        done.to_string()
                    }
                };
                for p in &r.quarantined_packs {
                    println!(
                        "{} damaged pack {p}",
                        verb("quarantined", "would quarantine")
                    );
                }
                for s in &r.quarantined_manifests {
                    println!(
                        "{} unreadable manifest {s}",
                        verb("quarantined", "would quarantine")
                    );
                }
                for s in &r.incomplete_snapshots {
                    println!(
                        "{} snapshot {s}: it can no longer be restored in full",
                        verb("removed", "would remove")
                    );
                }
                println!(
                    "{} intact blobs salvaged, {} lost; {} packs, {} manifests and {} snapshots set aside in quarantine/",
                    r.salvaged_blobs,
                    r.lost_blobs,
                    r.quarantined_packs.len(),
                    r.quarantined_manifests.len(),
                    r.incomplete_snapshots.len()
                );
            }
        }
        Command::Verify { snapshot, json } => {
            let repo = open(&cli)?;
            let (id, m) = repo.resolve_snapshot(snapshot)?;
            let bar = Bar::new(cli.quiet);
            let verdicts = cairn::check::verify_snapshot(&repo, &m, &bar)?;
            drop(bar);
            let ok = verdicts.iter().all(|v| v.ok);
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"id": id, "ok": ok, "streams": verdicts})
                    )?
                );
            } else {
                for v in &verdicts {
                    match &v.error {
                        None => println!("ok      {} ({})", v.name, fmt::bytes(v.bytes)),
                        Some(e) => println!("FAILED  {}: {e}", v.name),
                    }
                }
                println!("snapshot {id}: {}", if ok { "verified" } else { "DAMAGED" });
            }
            if !ok {
                return Ok(ExitCode::from(EXIT_DAMAGE));
            }
        }
        Command::Snapshot(cmd) => snapshot(&cli, cmd)?,
        Command::Snapshots { source, json, long } => {
            list(&open(&cli)?, source.as_deref(), *json, *long)?
        }
        Command::Ls(args) => browse::ls(&open(&cli)?, args)?,
        Command::Cat(args) => browse::cat(&open(&cli)?, args)?,
        Command::Diff(args) => browse::diff(&open(&cli)?, args)?,
        Command::Restore(args) if args.docker.requested() => docker::restore(&cli, args)?,
        Command::Restore(args) if browse::has_filters(args) => {
            browse::restore_filtered(&open(&cli)?, args, cli.quiet)?
        }
        Command::Restore(args) => restore(&open(&cli)?, args, cli.quiet)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn snapshot(cli: &Cli, cmd: &SnapshotCommand) -> Result<()> {
    if let SnapshotCommand::Docker(docker_cmd) = cmd {
        return docker::snapshot(cli, docker_cmd);
    }
    let repo = open(cli)?;
    let bar = Bar::new(cli.quiet);
    let (spec, input, total) = match cmd {
        SnapshotCommand::Tar { file, opts } => {
            let (reader, source, total): (Box<dyn std::io::Read + Send>, String, Option<u64>) =
                if file.as_os_str() == "-" {
                    (Box::new(std::io::stdin()), "stdin".to_string(), None)
                } else {
                    let f = cairn::ingest::open_input(file)?;
                    let len = f.metadata().ok().map(|m| m.len());
                    let name = file
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| file.display().to_string());
                    (Box::new(f), name, len)
                };
            let spec = spec_from(opts, "tar", source);
            let input = StreamInput {
                name: "data".into(),
                role: "tar".into(),
                reader,
            };
            (spec, input, total)
        }
        SnapshotCommand::Dir { path, kind, opts } => {
            let canonical = std::fs::canonicalize(path)
                .with_context(|| format!("{}: cannot open directory", path.display()))?;
            if !canonical.is_dir() {
                bail!("{} is not a directory", path.display());
            }
            let spec = spec_from(opts, kind, source_name(&canonical));
            let input = StreamInput {
                name: "data".into(),
                role: "tar".into(),
                reader: Box::new(cairn::source::dir_reader(canonical)),
            };
            (spec, input, None)
        }
        SnapshotCommand::Docker(_) => bail!("Docker snapshots are handled by cli::docker"),
    };
    let opts = match cmd {
        SnapshotCommand::Tar { opts, .. } | SnapshotCommand::Dir { opts, .. } => opts,
        SnapshotCommand::Docker(_) => bail!("Docker snapshots are handled by cli::docker"),
    };
    cairn::progress::Progress::start(&bar, "snapshot", total);
    let outcome = repo.snapshot(spec, vec![input], &bar)?;
    drop(bar);
    print_outcome(&outcome, opts.json)
}

/// Prints what a snapshot command did: one JSON object, or a summary ending with the id.
fn print_outcome(outcome: &cairn::SnapshotOutcome, as_json: bool) -> Result<()> {
    let s = outcome.stats;
    let m = &outcome.manifest;
    if as_json {
        let mut out = json!({
            "id": outcome.id,
            "time": m.time,
            "source": m.source,
            "kind": m.kind,
            "bytes": s.bytes,
            "new_bytes": s.new_bytes,
            "stored_bytes": s.stored_bytes,
            "chunks": s.chunks,
            "new_chunks": s.new_chunks,
            "page_aligned_bytes": s.page_aligned_bytes,
            "metadata_bytes": s.metadata_bytes,
            "streams": streams_json(&m.streams),
        });
        if !m.meta.is_null() {
            out["meta"] = m.meta.clone();
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let streams = match m.streams.len() {
            1 => String::new(),
            n => format!(" in {n} streams"),
        };
        println!(
            "{} {}: {} read{streams}, {} new in {} of {} chunks, {} added to packs",
            m.kind,
            m.source,
            fmt::bytes(s.bytes),
            fmt::bytes(s.new_bytes),
            s.new_chunks,
            s.chunks,
            fmt::bytes(s.stored_bytes)
        );
        println!("snapshot {}", outcome.id);
    }
    Ok(())
}

/// A path as a series name: UTF-8 as is, other bytes as `\xNN`, so that distinct paths never
/// share a series (a lossy conversion would map them all to U+FFFD).
fn source_name(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

fn spec_from(opts: &SnapshotOpts, kind: &str, default_source: String) -> SnapshotSpec {
    SnapshotSpec {
        kind: kind.to_string(),
        source: opts.source.clone().unwrap_or(default_source),
        tags: opts.tags.clone(),
        note: opts.note.clone(),
        meta: serde_json::Value::Null,
    }
}

fn streams_json(streams: &[StreamEntry]) -> serde_json::Value {
    streams
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "role": s.role,
                "bytes": s.length,
                "digest": s.digest,
                "members": s.members.as_ref().map(|m| m.count),
            })
        })
        .collect()
}

fn snapshot_json(id: &Id, m: &Manifest) -> serde_json::Value {
    json!({
        "id": id,
        "time": m.time,
        "kind": m.kind,
        "source": m.source,
        "host": m.host,
        "tags": m.tags,
        "note": m.note,
        "bytes": m.streams.iter().map(|s| s.length).sum::<u64>(),
        "added_bytes": m.added.stored_bytes,
        "streams": streams_json(&m.streams),
    })
}

/// `snapshots`; `long` adds what each snapshot added to the repository and its stream count.
fn list(repo: &Repo, source: Option<&str>, json: bool, long: bool) -> Result<()> {
    let snaps: Vec<(Id, Manifest)> = repo
        .snapshots()?
        .into_iter()
        .filter(|(_, m)| source.is_none_or(|s| m.source == s))
        .collect();
    if json {
        let arr: Vec<_> = snaps
            .iter()
            .map(|(id, m)| {
                let mut v = snapshot_json(id, m);
                if long {
                    v["added"] = json!(m.added);
                }
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&arr)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = snaps
        .iter()
        .map(|(id, m)| {
            let mut row = vec![
                id.short(),
                cairn::time::human(&m.time),
                m.kind.clone(),
                m.source.clone(),
                fmt::bytes(m.streams.iter().map(|s| s.length).sum()),
            ];
            if long {
                row.push(fmt::bytes(m.added.stored_bytes));
                row.push(m.streams.len().to_string());
            }
            row.push(m.tags.join(","));
            row
        })
        .collect();
    let header: &[&str] = if long {
        &[
            "ID", "TIME", "KIND", "SOURCE", "SIZE", "ADDED", "STREAMS", "TAGS",
        ]
    } else {
        &["ID", "TIME", "KIND", "SOURCE", "SIZE", "TAGS"]
    };
    print!("{}", fmt::table(header, &rows));
    if long {
        println!(
            "{} snapshots; ADDED: bytes the snapshot added to packs when it was taken",
            snaps.len()
        );
    } else {
        println!("{} snapshots", snaps.len());
    }
    Ok(())
}

fn pick_stream<'m>(m: &'m Manifest, name: Option<&str>) -> Result<&'m StreamEntry> {
    match name {
        Some(n) => m.streams.iter().find(|s| s.name == n).with_context(|| {
            format!(
                "no stream {n:?} in this snapshot (streams: {})",
                stream_names(m)
            )
        }),
        None if m.streams.len() == 1 => Ok(&m.streams[0]),
        None => bail!(
            "this snapshot has several streams; choose one with --stream ({})",
            stream_names(m)
        ),
    }
}

fn stream_names(m: &Manifest) -> String {
    m.streams
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn restore(repo: &Repo, args: &RestoreArgs, quiet: bool) -> Result<()> {
    // Held so that gc cannot delete packs while they are being read.
    let _lock = repo.lock(cairn::lock::LockKind::Shared, "restore")?;
    let (_, m) = repo.resolve_snapshot(&args.snapshot)?;
    let bar = Bar::new(quiet);
    if let Some(dir) = &args.extract {
        let streams: Vec<&StreamEntry> = match &args.stream {
            Some(_) => vec![pick_stream(&m, args.stream.as_deref())?],
            None => m.streams.iter().filter(|s| s.role == "tar").collect(),
        };
        if streams.is_empty() {
            bail!("this snapshot has no tar stream to extract; use --output");
        }
        let several = streams.len() > 1;
        for s in streams {
            // A bundle extracts each tar stream into its own subdirectory.
            let target = if several {
                dir.join(&s.name)
            } else {
                dir.clone()
            };
            cairn::progress::Progress::start(&bar, &format!("extract {}", s.name), Some(s.length));
            cairn::restore::extract_stream(repo, s, &target, &bar)?;
        }
        return Ok(());
    }
    let stream = pick_stream(&m, args.stream.as_deref())?;
    let Some(output) = &args.output else {
        bail!("give --output FILE|- or --extract DIR");
    };
    cairn::progress::Progress::start(&bar, "restore", Some(stream.length));
    if output.as_os_str() == "-" {
        // Large blocks straight to fd 1: std's stdout is line-buffered, which only costs here.
        let mut stdout = raw_stdout();
        cairn::restore::restore_stream(repo, stream, &mut *stdout, &bar)?;
        stdout.flush()?;
    } else {
        cairn::restore::restore_to_file(repo, stream, output, &bar)?;
    }
    Ok(())
}

fn forget(repo: &Repo, args: &ForgetArgs, quiet: bool) -> Result<()> {
    let policy = cairn::forget::KeepPolicy {
        last: args.keep_last,
        hourly: args.keep_hourly,
        daily: args.keep_daily,
        weekly: args.keep_weekly,
        monthly: args.keep_monthly,
        yearly: args.keep_yearly,
        within: args.keep_within,
        tags: args.keep_tags.clone(),
    };
    let _lock = repo.lock(cairn::lock::LockKind::Shared, "forget")?;
    let plan = if !args.snapshots.is_empty() {
        if !policy.is_empty() {
            bail!("give snapshot ids or --keep-* rules, not both");
        }
        let mut remove = Vec::new();
        for spec in &args.snapshots {
            let (id, m) = repo.resolve_snapshot(spec)?;
            remove.push(cairn::forget::Decision {
                id,
                time: m.time,
                kind: m.kind,
                source: m.source,
                reasons: vec![],
            });
        }
        cairn::forget::ForgetPlan {
            keep: vec![],
            remove,
        }
    } else {
        if policy.is_empty() {
            bail!("refusing to forget everything: give snapshot ids or at least one --keep-* rule");
        }
        let snaps: Vec<(Id, Manifest)> = repo
            .snapshots()?
            .into_iter()
            .filter(|(_, m)| args.source.as_ref().is_none_or(|s| &m.source == s))
            .filter(|(_, m)| args.kind.as_ref().is_none_or(|k| &m.kind == k))
            .collect();
        let offset = time::UtcOffset::current_local_offset().unwrap_or(time::UtcOffset::UTC);
        cairn::forget::plan(&snaps, &policy, offset)?
    };
    if args.json {
        let ids = |v: &[cairn::forget::Decision]| v.iter().map(|d| d.id).collect::<Vec<_>>();
        let out = json!({
            "keep": ids(&plan.keep),
            "remove": ids(&plan.remove),
            "dry_run": args.dry_run,
            "decisions": {"keep": plan.keep, "remove": plan.remove},
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for d in &plan.keep {
            println!(
                "keep    {}  {}  {} {}  ({})",
                d.id.short(),
                cairn::time::human(&d.time),
                d.kind,
                d.source,
                d.reasons.join(", ")
            );
        }
        for d in &plan.remove {
            println!(
                "remove  {}  {}  {} {}",
                d.id.short(),
                cairn::time::human(&d.time),
                d.kind,
                d.source
            );
        }
        let verb = if args.dry_run {
            "would remove"
        } else {
            "removed"
        };
        println!(
            "{} snapshots kept, {verb} {}",
            plan.keep.len(),
            plan.remove.len()
        );
    }
    if !args.dry_run {
        let ids: Vec<Id> = plan.remove.iter().map(|d| d.id).collect();
        repo.remove_snapshots(&ids)?;
        if args.gc {
            drop(_lock);
            gc(
                repo,
                &GcArgs {
                    dry_run: false,
                    max_unused: 10.0,
                    json: args.json,
                },
                quiet,
            )?;
        }
    }
    Ok(())
}

fn gc(repo: &Repo, args: &GcArgs, quiet: bool) -> Result<()> {
    if !(0.0..=100.0).contains(&args.max_unused) {
        bail!("--max-unused is a percentage from 0 to 100");
    }
    let bar = Bar::new(quiet);
    let opts = cairn::gc::GcOptions {
        dry_run: args.dry_run,
        max_unused_percent: args.max_unused,
    };
    let r = cairn::gc::gc(repo, &opts, &bar)?;
    drop(bar);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        let verb = if r.dry_run { "would free" } else { "freed" };
        println!(
            "{} packs deleted, {} rewritten into {} new; {verb} {} ({} -> {})",
            r.packs_deleted,
            r.packs_rewritten,
            r.packs_written,
            fmt::bytes(r.bytes_freed),
            fmt::bytes(r.bytes_before),
            fmt::bytes(r.bytes_after)
        );
    }
    Ok(())
}

fn check(repo: &Repo, mode: cairn::check::ReadData, json: bool, quiet: bool) -> Result<ExitCode> {
    let bar = Bar::new(quiet);
    let r = cairn::check::check(repo, mode, &bar)?;
    drop(bar);
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        for w in &r.warnings {
            println!("warning: {w}");
        }
        for e in &r.errors {
            println!("error: {e}");
        }
        for p in &r.damaged_packs {
            println!("damaged pack: {p}");
        }
        for s in &r.damaged_snapshots {
            println!("damaged snapshot: {s} (cannot be restored in full)");
        }
        println!(
            "{} snapshots, {} packs checked; {} packs ({}) read: {}",
            r.snapshots,
            r.packs,
            r.packs_read,
            fmt::bytes(r.bytes_read),
            if r.ok { "no errors" } else { "DAMAGE FOUND" }
        );
    }
    Ok(if r.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DAMAGE)
    })
}

fn raw_stdout() -> std::mem::ManuallyDrop<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: fd 1 is open for the life of the process; ManuallyDrop keeps it from being closed.
    std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(1) })
}

fn stats(repo: &Repo, json: bool) -> Result<()> {
    let t = repo.index().totals()?;
    let on_disk = repo.layout().list_packs()?;
    let stored_bytes: u64 = on_disk.iter().map(|(_, len)| len).sum();
    let page_aligned_bytes: u64 = repo
        .snapshots()?
        .iter()
        .map(|(_, m)| m.added.page_aligned_bytes)
        .sum();
    // Tree nodes, pack headers and tables: what is not stream data.
    let metadata_bytes = t.stored_tree_bytes + t.pack_bytes.saturating_sub(t.stored_blob_bytes);
    let dedup = if stored_bytes > 0 {
        t.logical_bytes as f64 / stored_bytes as f64
    } else {
        0.0
    };
    if json {
        let out = json!({
            "snapshots": t.snapshots,
            "logical_bytes": t.logical_bytes,
            "unique_bytes": t.unique_bytes,
            "stored_bytes": stored_bytes,
            "chunks": t.chunks,
            "tree_blobs": t.tree_blobs,
            "packs": on_disk.len(),
            "dedup_ratio": dedup,
            "page_aligned_bytes": page_aligned_bytes,
            "metadata_bytes": metadata_bytes,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("snapshots       {}", t.snapshots);
        println!("logical bytes   {}", fmt::bytes(t.logical_bytes));
        println!(
            "unique bytes    {} in {} chunks",
            fmt::bytes(t.unique_bytes),
            t.chunks
        );
        println!(
            "stored bytes    {} in {} packs",
            fmt::bytes(stored_bytes),
            on_disk.len()
        );
        println!(
            "metadata        {} (trees, pack tables)",
            fmt::bytes(metadata_bytes)
        );
        println!(
            "page-aligned    {} read as paged files",
            fmt::bytes(page_aligned_bytes)
        );
        println!("ratio           {dedup:.2}x (logical / stored)");
    }
    Ok(())
}
