//! Command-line interface: clap definitions, output, exit codes. All work is done by the
//! library; this module parses, calls, and prints.

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
#[command(name = "cairn", version, about = "Deduplicating, verifiable snapshots of Docker state")]
struct Cli {
    /// Repository directory.
    #[arg(short = 'r', long = "repo", env = "CAIRN_REPO", global = true)]
    repo: Option<PathBuf>,
    /// No progress output.
    #[arg(short, long, global = true)]
    quiet: bool,
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
    },
    /// Restore a snapshot's bytes or unpack it.
    Restore(RestoreArgs),
}

#[derive(Subcommand)]
enum RepoCommand {
    /// Create a new repository.
    Init,
    /// Sizes and deduplication.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Recreate index.sqlite from the packs and manifests.
    RebuildIndex,
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
}

#[derive(Args)]
struct RestoreArgs {
    /// Snapshot id, unique prefix (8+ hex digits) or `latest`.
    snapshot: String,
    /// Which stream of a multi-stream snapshot.
    #[arg(long)]
    stream: Option<String>,
    /// Write the exact bytes to FILE, or `-` for stdout.
    #[arg(long, conflicts_with = "extract", required_unless_present = "extract")]
    output: Option<PathBuf>,
    /// Unpack the tar stream into DIR.
    #[arg(long)]
    extract: Option<PathBuf>,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("cairn: error: {e:#}");
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
    Ok(Repo::open(repo_path(cli)?)?)
}

fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Repo(RepoCommand::Init) => {
            let path = repo_path(&cli)?;
            let repo = Repo::init(path, &InitOptions::default())?;
            println!(
                "created cairn repository {} at {}",
                repo.config().id,
                path.display()
            );
        }
        Command::Repo(RepoCommand::Stats { json }) => stats(&open(&cli)?, *json)?,
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
        Command::Snapshot(cmd) => snapshot(&cli, cmd)?,
        Command::Snapshots { source, json } => list(&open(&cli)?, source.as_deref(), *json)?,
        Command::Restore(args) => restore(&open(&cli)?, args, cli.quiet)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn snapshot(cli: &Cli, cmd: &SnapshotCommand) -> Result<()> {
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
            let spec = spec_from(opts, kind, canonical.display().to_string());
            let input = StreamInput {
                name: "data".into(),
                role: "tar".into(),
                reader: Box::new(cairn::source::dir_reader(canonical)),
            };
            (spec, input, None)
        }
    };
    let opts = match cmd {
        SnapshotCommand::Tar { opts, .. } | SnapshotCommand::Dir { opts, .. } => opts,
    };
    cairn::progress::Progress::start(&bar, "snapshot", total);
    let outcome = repo.snapshot(spec, vec![input], &bar)?;
    drop(bar);
    let s = outcome.stats;
    let m = &outcome.manifest;
    if opts.json {
        let out = json!({
            "id": outcome.id,
            "time": m.time,
            "source": m.source,
            "kind": m.kind,
            "bytes": s.bytes,
            "new_bytes": s.new_bytes,
            "stored_bytes": s.stored_bytes,
            "chunks": s.chunks,
            "new_chunks": s.new_chunks,
            "streams": streams_json(&m.streams),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{} {}: {} read, {} new in {} of {} chunks, {} added to packs",
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

fn list(repo: &Repo, source: Option<&str>, json: bool) -> Result<()> {
    let snaps: Vec<(Id, Manifest)> = repo
        .snapshots()?
        .into_iter()
        .filter(|(_, m)| source.is_none_or(|s| m.source == s))
        .collect();
    if json {
        let arr: Vec<_> = snaps.iter().map(|(id, m)| snapshot_json(id, m)).collect();
        println!("{}", serde_json::to_string_pretty(&arr)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = snaps
        .iter()
        .map(|(id, m)| {
            vec![
                id.short(),
                cairn::time::human(&m.time),
                m.kind.clone(),
                m.source.clone(),
                fmt::bytes(m.streams.iter().map(|s| s.length).sum()),
                m.tags.join(","),
            ]
        })
        .collect();
    print!(
        "{}",
        fmt::table(&["ID", "TIME", "KIND", "SOURCE", "SIZE", "TAGS"], &rows)
    );
    println!("{} snapshots", snaps.len());
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
            let target = if several { dir.join(&s.name) } else { dir.clone() };
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

fn raw_stdout() -> std::mem::ManuallyDrop<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: fd 1 is open for the life of the process; ManuallyDrop keeps it from being closed.
    std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(1) })
}

fn stats(repo: &Repo, json: bool) -> Result<()> {
    let t = repo.index().totals()?;
    let on_disk = repo.layout().list_packs()?;
    let stored_bytes: u64 = on_disk.iter().map(|(_, len)| len).sum();
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
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("snapshots       {}", t.snapshots);
        println!("logical bytes   {}", fmt::bytes(t.logical_bytes));
        println!("unique bytes    {} in {} chunks", fmt::bytes(t.unique_bytes), t.chunks);
        println!("stored bytes    {} in {} packs", fmt::bytes(stored_bytes), on_disk.len());
        println!("ratio           {dedup:.2}x (logical / stored)");
    }
    Ok(())
}
