//! `ls`, `cat`, `diff`, filtered `restore --extract`, `repo stats --by-source` and
//! `snapshots --long`. None of these but restore show progress: their output is the point, and
//! they are quick.
//!
//! JSON field names are documented in docs/json.md.

use super::{Bar, RestoreArgs, fmt, pick_stream, raw_stdout};
use anyhow::{Context, Result, bail};
use cairn::browse::{Entry, PathFilter, kind_name};
use cairn::diff::{MemberDiff, StreamChange, StreamDiff};
use cairn::format::manifest::{Manifest, StreamEntry};
use cairn::tarscan::{Member, MemberKind};
use cairn::{Id, Repo};
use clap::Args;
use serde_json::{Value, json};
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;

#[derive(Args)]
pub(super) struct LsArgs {
    /// Snapshot id, unique prefix (8+ hex digits) or `latest`.
    snapshot: String,
    /// Directory (or file) inside the stream; default the top.
    path: Option<OsString>,
    /// Which stream of a multi-stream snapshot.
    #[arg(long)]
    stream: Option<String>,
    /// Type, mode, owner, size and modification time.
    #[arg(short, long)]
    long: bool,
    /// Everything below PATH, in stream order.
    #[arg(short = 'R', long)]
    recursive: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(super) struct CatArgs {
    snapshot: String,
    /// File inside the stream.
    path: OsString,
    #[arg(long)]
    stream: Option<String>,
}

#[derive(Args)]
pub(super) struct DiffArgs {
    /// The older snapshot.
    snapshot_a: String,
    /// The newer snapshot.
    snapshot_b: String,
    /// Only this stream.
    #[arg(long)]
    stream: Option<String>,
    #[arg(long)]
    json: bool,
}

pub(super) fn has_filters(args: &RestoreArgs) -> bool {
    !args.include.is_empty() || !args.exclude.is_empty()
}

/// A stream for member access: the named one, the only one, or the only tar stream.
fn pick_tar_stream<'m>(m: &'m Manifest, name: Option<&str>) -> Result<&'m StreamEntry> {
    if name.is_none() && m.streams.len() > 1 {
        let mut tars = m.streams.iter().filter(|s| s.members.is_some());
        if let (Some(only), None) = (tars.next(), tars.next()) {
            return Ok(only);
        }
    }
    pick_stream(m, name)
}

pub(super) fn ls(repo: &Repo, args: &LsArgs) -> Result<()> {
    let (_, m) = repo.resolve_snapshot(&args.snapshot)?;
    if args.stream.is_none() && m.streams.len() > 1 {
        return list_streams(&m, args.json);
    }
    let stream = pick_stream(&m, args.stream.as_deref())?;
    let index = cairn::browse::member_index(stream)?;
    if index.status != "complete" {
        eprintln!(
            "cairn: warning: the tar stream {:?} did not parse to the end ({}); the listing shows the members before that point",
            stream.name, index.status
        );
    }
    let dir = args.path.as_deref().map_or(&b""[..], |p| p.as_bytes());
    let offset = local_offset();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut first = true;
    if args.json {
        out.write_all(b"[")?;
    }
    cairn::browse::list(repo, stream, dir, args.recursive, &mut |entry: &Entry| {
        let line = if args.json {
            let sep = if first { "\n" } else { ",\n" };
            format!("{sep}  {}", entry_json(entry))
        } else if args.long {
            format!("{}\n", long_line(entry, offset))
        } else {
            format!("{}\n", short_name(entry))
        };
        first = false;
        out.write_all(line.as_bytes())
            .map_err(cairn::Error::IoPlain)?;
        Ok(())
    })?;
    if args.json {
        out.write_all(if first { b"]\n" } else { b"\n]\n" })?;
    }
    out.flush()?;
    Ok(())
}

fn list_streams(m: &Manifest, json: bool) -> Result<()> {
    if json {
        let arr: Vec<Value> = m
            .streams
            .iter()
            .map(|s| {
                json!({
                    "stream": s.name,
                    "role": s.role,
                    "size": s.length,
                    "digest": s.digest,
                    "members": s.members.as_ref().map(|i| i.count),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&arr)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = m
        .streams
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.role.clone(),
                fmt::bytes(s.length),
                s.members
                    .as_ref()
                    .map_or("-".to_string(), |i| i.count.to_string()),
            ]
        })
        .collect();
    print!(
        "{}",
        fmt::table(&["STREAM", "ROLE", "SIZE", "MEMBERS"], &rows)
    );
    println!("this snapshot has several streams; list one with --stream NAME");
    Ok(())
}

fn short_name(entry: &Entry) -> String {
    let mut name = String::from_utf8_lossy(&entry.path).into_owned();
    if entry.member.kind == MemberKind::Dir {
        name.push('/');
    }
    name
}

fn long_line(entry: &Entry, offset: time::UtcOffset) -> String {
    let m = &entry.member;
    let mut line = if entry.implied {
        format!("{:<10} {:>11} {:>10} {:<19} ", "d?????????", "-", "-", "-")
    } else {
        format!(
            "{} {:>11} {:>10} {:<19} ",
            mode_string(m),
            format!("{}/{}", m.uid, m.gid),
            size_column(m),
            mtime_string(m.mtime, offset)
        )
    };
    line.push_str(&String::from_utf8_lossy(&entry.path));
    if matches!(m.kind, MemberKind::Symlink | MemberKind::HardLink) {
        line.push_str(if m.kind == MemberKind::Symlink {
            " -> "
        } else {
            " link to "
        });
        line.push_str(&String::from_utf8_lossy(&m.link_target));
    }
    line
}

fn size_column(m: &Member) -> String {
    match m.kind {
        MemberKind::CharDev | MemberKind::BlockDev => format!("{},{}", m.dev_major, m.dev_minor),
        MemberKind::File => fmt::bytes(m.size),
        _ => "-".to_string(),
    }
}

/// `ls -l` style: type letter then rwx triplets with setuid, setgid and sticky bits.
fn mode_string(m: &Member) -> String {
    let kind = match m.kind {
        MemberKind::File => '-',
        MemberKind::Dir => 'd',
        MemberKind::Symlink => 'l',
        MemberKind::HardLink => 'h',
        MemberKind::CharDev => 'c',
        MemberKind::BlockDev => 'b',
        MemberKind::Fifo => 'p',
        MemberKind::Other(_) => '?',
    };
    let mode = m.mode;
    let mut s = String::with_capacity(10);
    s.push(kind);
    for (shift, special, special_char) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let exec = bits & 1 != 0;
        s.push(match (mode & special != 0, exec) {
            (true, true) => special_char,
            (true, false) => special_char.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// Must be asked before any thread starts: the time crate refuses to read the local offset in
/// a multi-threaded process.
fn local_offset() -> time::UtcOffset {
    time::UtcOffset::current_local_offset().unwrap_or(time::UtcOffset::UTC)
}

fn mtime_string(secs: i64, offset: time::UtcOffset) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.to_offset(offset).format(&format).ok())
        .unwrap_or_else(|| secs.to_string())
}

/// Adds `key` (lossy text) and, when the bytes are not UTF-8, `key_bytes` (hex).
fn put_bytes(obj: &mut serde_json::Map<String, Value>, key: &str, bytes: &[u8]) {
    obj.insert(key.into(), json!(String::from_utf8_lossy(bytes)));
    if std::str::from_utf8(bytes).is_err() {
        obj.insert(format!("{key}_bytes"), json!(hex::encode(bytes)));
    }
}

fn member_json(path: &[u8], m: &Member) -> serde_json::Map<String, Value> {
    let mut obj = serde_json::Map::new();
    put_bytes(&mut obj, "path", path);
    obj.insert("type".into(), json!(kind_name(m.kind)));
    if let MemberKind::Other(code) = m.kind {
        obj.insert("typeflag".into(), json!(String::from(code as char)));
    }
    obj.insert("size".into(), json!(m.size));
    obj.insert("mode".into(), json!(m.mode));
    obj.insert("mode_octal".into(), json!(format!("{:04o}", m.mode)));
    obj.insert("uid".into(), json!(m.uid));
    obj.insert("gid".into(), json!(m.gid));
    obj.insert("mtime".into(), json!(m.mtime));
    if matches!(m.kind, MemberKind::Symlink | MemberKind::HardLink) {
        put_bytes(&mut obj, "link_target", &m.link_target);
    }
    if matches!(m.kind, MemberKind::CharDev | MemberKind::BlockDev) {
        obj.insert("dev_major".into(), json!(m.dev_major));
        obj.insert("dev_minor".into(), json!(m.dev_minor));
    }
    if m.sparse {
        obj.insert("sparse".into(), json!(true));
    }
    obj
}

fn entry_json(entry: &Entry) -> Value {
    let mut obj = member_json(&entry.path, &entry.member);
    if entry.implied {
        obj.insert("implied".into(), json!(true));
    }
    Value::Object(obj)
}

pub(super) fn cat(repo: &Repo, args: &CatArgs) -> Result<()> {
    let (_, m) = repo.resolve_snapshot(&args.snapshot)?;
    let stream = pick_tar_stream(&m, args.stream.as_deref())?;
    let mut stdout = raw_stdout();
    cairn::browse::cat(repo, stream, args.path.as_bytes(), &mut *stdout)?;
    stdout.flush()?;
    Ok(())
}

pub(super) fn diff(repo: &Repo, args: &DiffArgs) -> Result<()> {
    let (id_a, a) = repo.resolve_snapshot(&args.snapshot_a)?;
    let (id_b, b) = repo.resolve_snapshot(&args.snapshot_b)?;
    let streams = cairn::diff::diff_snapshots(repo, &a, &b, args.stream.as_deref())?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&diff_json(&id_a, &id_b, &streams))?
        );
        return Ok(());
    }
    let several = streams.len() > 1;
    let (mut added, mut removed, mut modified) = (0, 0, 0);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for s in &streams {
        if several || s.members.is_none() {
            writeln!(out, "{}", stream_line(s))?;
        }
        let Some(d) = &s.members else { continue };
        print_member_diff(&mut out, d)?;
        added += d.added.len();
        removed += d.removed.len();
        modified += d.modified.len();
    }
    writeln!(out, "{added} added, {removed} removed, {modified} modified")?;
    out.flush()?;
    Ok(())
}

fn stream_line(s: &StreamDiff) -> String {
    let size = |e: &Option<StreamEntry>| e.as_ref().map_or(0, |e| e.length);
    match s.change {
        StreamChange::Added => format!("stream {}: added ({})", s.name, fmt::bytes(size(&s.new))),
        StreamChange::Removed => {
            format!("stream {}: removed ({})", s.name, fmt::bytes(size(&s.old)))
        }
        StreamChange::Unchanged => format!("stream {}: unchanged", s.name),
        StreamChange::Modified => format!(
            "stream {}: modified ({} -> {})",
            s.name,
            fmt::bytes(size(&s.old)),
            fmt::bytes(size(&s.new))
        ),
    }
}

/// One line per member, all kinds merged in path order.
fn print_member_diff(out: &mut dyn Write, d: &MemberDiff) -> Result<()> {
    let mut lines: Vec<(Vec<u8>, String)> = Vec::new();
    for m in &d.added {
        let path = cairn::browse::normalize_path(&m.path);
        let line = format!("+  {}  ({})", lossy(&path), fmt::bytes(m.size));
        lines.push((path, line));
    }
    for m in &d.removed {
        let path = cairn::browse::normalize_path(&m.path);
        let line = format!("-  {}  ({})", lossy(&path), fmt::bytes(m.size));
        lines.push((path, line));
    }
    for c in &d.modified {
        let path = cairn::browse::normalize_path(&c.new.path);
        let detail = if c.old.size != c.new.size {
            format!(
                "{} -> {}, {:+} B",
                fmt::bytes(c.old.size),
                fmt::bytes(c.new.size),
                i128::from(c.new.size) - i128::from(c.old.size)
            )
        } else {
            c.changes.join(", ")
        };
        lines.push((path.clone(), format!("M  {}  ({detail})", lossy(&path))));
    }
    lines.sort();
    for (_, line) in lines {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn diff_json(id_a: &Id, id_b: &Id, streams: &[StreamDiff]) -> Value {
    let mut added = Vec::new();
    let mut removed = Vec::new();
    let mut modified = Vec::new();
    let with_stream = |mut obj: serde_json::Map<String, Value>, name: &str| {
        obj.insert("stream".into(), json!(name));
        Value::Object(obj)
    };
    for s in streams {
        let Some(d) = &s.members else { continue };
        for m in &d.added {
            let path = cairn::browse::normalize_path(&m.path);
            added.push(with_stream(member_json(&path, m), &s.name));
        }
        for m in &d.removed {
            let path = cairn::browse::normalize_path(&m.path);
            removed.push(with_stream(member_json(&path, m), &s.name));
        }
        for c in &d.modified {
            let path = cairn::browse::normalize_path(&c.new.path);
            let mut obj = serde_json::Map::new();
            put_bytes(&mut obj, "path", &path);
            obj.insert("type".into(), json!(kind_name(c.new.kind)));
            obj.insert("changes".into(), json!(c.changes));
            obj.insert(
                "size_change".into(),
                json!(i128::from(c.new.size) - i128::from(c.old.size)),
            );
            obj.insert("old".into(), Value::Object(member_json(&path, &c.old)));
            obj.insert("new".into(), Value::Object(member_json(&path, &c.new)));
            modified.push(with_stream(obj, &s.name));
        }
    }
    let stream_list: Vec<Value> = streams
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "change": s.change,
                "old_digest": s.old.as_ref().map(|e| e.digest),
                "new_digest": s.new.as_ref().map(|e| e.digest),
                "old_size": s.old.as_ref().map(|e| e.length),
                "new_size": s.new.as_ref().map(|e| e.length),
                "members_compared": s.members.is_some(),
            })
        })
        .collect();
    json!({
        "from": id_a,
        "to": id_b,
        "streams": stream_list,
        "added": added,
        "removed": removed,
        "modified": modified,
    })
}

pub(super) fn restore_filtered(repo: &Repo, args: &RestoreArgs, quiet: bool) -> Result<()> {
    let Some(dir) = &args.extract else {
        bail!("--include and --exclude need --extract DIR");
    };
    let filter = PathFilter::new(&args.include, &args.exclude)?;
    // Held so that gc cannot delete packs while they are being read.
    let _lock = repo.lock(cairn::lock::LockKind::Shared, "restore")?;
    let (_, m) = repo.resolve_snapshot(&args.snapshot)?;
    let streams: Vec<&StreamEntry> = match &args.stream {
        Some(_) => vec![pick_stream(&m, args.stream.as_deref())?],
        None => m.streams.iter().filter(|s| s.role == "tar").collect(),
    };
    if streams.is_empty() {
        bail!("this snapshot has no tar stream to extract; use --output");
    }
    let bar = Bar::new(quiet);
    let several = streams.len() > 1;
    for s in streams {
        let target = if several {
            dir.join(&s.name)
        } else {
            dir.clone()
        };
        let summary = cairn::browse::extract_filtered(repo, s, &target, &filter, &bar)
            .with_context(|| format!("extracting stream {:?}", s.name))?;
        if summary.unsafe_skipped > 0 {
            eprintln!(
                "cairn: warning: {} members of {:?} were not extracted: their path or link target leaves the target directory",
                summary.unsafe_skipped, s.name
            );
        }
        if summary.members == 0 && summary.links_as_files == 0 && !quiet {
            eprintln!(
                "cairn: warning: no member of {:?} matches the given patterns",
                s.name
            );
        }
    }
    Ok(())
}

pub(super) fn stats_by_source(repo: &Repo, json: bool) -> Result<()> {
    let usage = cairn::accounting::usage_by_source(repo)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&usage)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = usage
        .series
        .iter()
        .map(|s| {
            vec![
                s.kind.clone(),
                s.source.clone(),
                s.snapshots.to_string(),
                fmt::bytes(s.logical_bytes),
                fmt::bytes(s.unique_stored_bytes),
                fmt::bytes(s.shared_stored_bytes),
            ]
        })
        .collect();
    print!(
        "{}",
        fmt::table(
            &["KIND", "SOURCE", "SNAPSHOTS", "LOGICAL", "UNIQUE", "SHARED"],
            &rows
        )
    );
    println!(
        "{} stored for all snapshots, {} of it shared between series",
        fmt::bytes(usage.referenced_stored_bytes),
        fmt::bytes(usage.shared_stored_bytes)
    );
    println!("UNIQUE: freed by forgetting the whole series (then gc); SHARED: also used by others");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(kind: MemberKind, mode: u32) -> Member {
        Member {
            path: b"x".to_vec(),
            link_target: Vec::new(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
            size: 0,
            header_offset: 0,
            data_offset: 512,
            data_len: 0,
            sparse: false,
            dev_major: 0,
            dev_minor: 0,
        }
    }

    #[test]
    fn modes_read_like_ls() {
        assert_eq!(mode_string(&member(MemberKind::File, 0o644)), "-rw-r--r--");
        assert_eq!(mode_string(&member(MemberKind::Dir, 0o1777)), "drwxrwxrwt");
        assert_eq!(mode_string(&member(MemberKind::File, 0o4755)), "-rwsr-xr-x");
        assert_eq!(mode_string(&member(MemberKind::File, 0o2644)), "-rw-r-Sr--");
    }

    #[test]
    fn json_shows_raw_bytes_only_when_needed() {
        let m = member(MemberKind::File, 0o644);
        let plain = member_json(b"a b", &m);
        assert_eq!(plain["path"], "a b");
        assert!(!plain.contains_key("path_bytes"));
        let odd = member_json(b"a\xffb", &m);
        assert_eq!(odd["path_bytes"], "61ff62");
        assert_eq!(odd["path"], "a\u{fffd}b");
    }
}
