#!/usr/bin/env bash
# Benchmark of cairn on page-structured data (issue 7, content-aware chunking): a SQLite database,
# a PostgreSQL data directory and a CRIU-like checkpoint directory, each over several generations.
#
# For every generation it measures the yardstick the issue sets (pages changed since the previous
# generation, or never-seen page contents for the checkpoint images; raw and zstd-3 bytes) and what
# cairn stores for a `snapshot dir` of that generation; optionally the same in a repository made with
# `repo init --no-page-align` (when the binary has the flag) and in restic. After the series it
# restores the last snapshot with --extract and compares it to the source, and with --output.
#
# Usage: scripts/bench-pages.sh [--cairn BIN] [--work DIR] [--case sqlite|postgres|criu|all] [--quick]
#                               [--generations N] [--seed N] [--no-restic] [--keep]
#                               [--sqlite-mb N] [--sqlite-ops-fraction F] [--pg-scale N]
#                               [--pg-transactions N] [--pg-filler text|blank] [--criu-mib N]
# Output: markdown tables on stdout and in WORK/results.md, all numbers in WORK/results.json.
# Needs: python3 (stdlib), zstd (installed with apt-get when missing), PostgreSQL server binaries for
# the postgres case (installed with apt-get when missing), restic (optional). Run as root: the
# PostgreSQL server runs as the `postgres` user through runuser.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
py="$here/pages"

cairn=""
work="${CAIRN_BENCH_DIR:-${TMPDIR:-/tmp}/cairn-bench-pages}"
case_sel=all
quick=0
generations=5
seed=1
restic_on=1
keep=0
sqlite_mb=""
sqlite_ops_fraction=0.012 # ≈ 14 % of the pages changed per generation (measured; see benches/README.md)
pg_scale=""
pg_transactions=""
pg_filler=text
criu_mib=""
pg_port=54329

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "bench-pages: error: $*" >&2; exit 1; }
log() { echo "[bench-pages $(date +%T)] $*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --cairn) cairn=${2:?}; shift 2 ;;
        --work) work=${2:?}; shift 2 ;;
        --case) case_sel=${2:?}; shift 2 ;;
        --quick) quick=1; shift ;;
        --generations) generations=${2:?}; shift 2 ;;
        --seed) seed=${2:?}; shift 2 ;;
        --no-restic) restic_on=0; shift ;;
        --keep) keep=1; shift ;;
        --sqlite-mb) sqlite_mb=${2:?}; shift 2 ;;
        --sqlite-ops-fraction) sqlite_ops_fraction=${2:?}; shift 2 ;;
        --pg-scale) pg_scale=${2:?}; shift 2 ;;
        --pg-transactions) pg_transactions=${2:?}; shift 2 ;;
        --pg-filler) pg_filler=${2:?}; shift 2 ;;
        --criu-mib) criu_mib=${2:?}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
case "$case_sel" in
    sqlite|postgres|criu) cases=("$case_sel") ;;
    all) cases=(sqlite postgres criu) ;;
    *) die "--case must be sqlite, postgres, criu or all" ;;
esac
case "$pg_filler" in text|blank) ;; *) die "--pg-filler must be text or blank" ;; esac
if [ "$quick" = 1 ]; then
    : "${sqlite_mb:=40}" "${pg_scale:=5}" "${criu_mib:=32}"
else
    : "${sqlite_mb:=500}" "${pg_scale:=20}" "${criu_mib:=256}"
fi
# pgbench's TPC-B-like transaction touches a random pgbench_accounts page, the page that receives the
# new row version and a primary-key leaf; this count changes about 14 % of the pages (measured).
: "${pg_transactions:=$((pg_scale * 250))}"
for v in generations:"$generations" seed:"$seed" sqlite-mb:"$sqlite_mb" pg-scale:"$pg_scale" \
    pg-transactions:"$pg_transactions" criu-mib:"$criu_mib"; do
    [[ "${v#*:}" =~ ^[1-9][0-9]*$ ]] || die "--${v%%:*} must be a positive integer, got '${v#*:}'"
done
python3 -c 'import sys; f = float(sys.argv[1]); sys.exit(not 0 < f <= 1)' "$sqlite_ops_fraction" 2>/dev/null \
    || die "--sqlite-ops-fraction must be a number in (0, 1]"

# ---- tools -----------------------------------------------------------------------------------

apt_install() {
    [ "$(id -u)" = 0 ] || die "$1 is missing and only root can install it (apt-get install -y $1)"
    log "installing $1 with apt-get"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null \
        || die "apt-get install $1 failed"
}

command -v python3 >/dev/null || die "python3 is required"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' || die "python3 >= 3.9 is required"
command -v zstd >/dev/null || apt_install zstd
if [ "$restic_on" = 1 ] && ! command -v restic >/dev/null; then
    log "restic not found: the restic column is skipped"
    restic_on=0
fi

if [ -z "$cairn" ]; then
    target="${CARGO_TARGET_DIR:-$root/target}"
    log "building cairn (cargo build --release) into $target"
    (cd "$root" && cargo build --release --quiet) || die "cargo build --release failed"
    cairn="$target/release/cairn"
fi
[ -x "$cairn" ] || die "cairn binary not found or not executable: $cairn"
cairn=$(cd "$(dirname "$cairn")" && pwd)/$(basename "$cairn")
noalign=0
if "$cairn" repo init --help 2>/dev/null | grep -q -- '--no-page-align'; then noalign=1; fi

# ---- work directory ----------------------------------------------------------------------------

mkdir -p "$work"
work=$(cd "$work" && pwd)
records="$work/records.jsonl"
: >"$records"
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR="$work/restic-cache"
failures=0

record() { python3 "$py/record.py" "$records" "$@"; }

free_mb() { df -Pm "$1" | awk 'NR == 2 { print $4 }'; }
need_space() { # need_space MB WHAT
    local have
    have=$(free_mb "$work")
    [ "$have" -ge "$1" ] || die "$2 needs about $1 MB free under $work, only $have MB available"
}

cairn_version=$("$cairn" --version 2>/dev/null || echo unknown)
if git -C "$root" rev-parse --short HEAD >/dev/null 2>&1; then
    cairn_version="$cairn_version, tree $(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet HEAD -- src || echo +dirty)"
fi
record meta "cairn=$cairn" "cairn_version=$cairn_version" "no_page_align=$([ $noalign = 1 ] && echo yes || echo no)" \
    "mode=$([ $quick = 1 ] && echo quick || echo default)" "seed=$seed" "generations=$generations" \
    "date=$(date -u +%Y-%m-%dT%H:%MZ)" "host_cpus=$(nproc)" "restic=$([ $restic_on = 1 ] && restic version | awk '{print $2}' || echo no)"

# ---- repositories and one generation's snapshots ------------------------------------------------

init_repos() { # init_repos CASEDIR
    "$cairn" -q -r "$1/repo" repo init >/dev/null
    if [ "$noalign" = 1 ]; then "$cairn" -q -r "$1/repo-noalign" repo init --no-page-align >/dev/null; fi
    if [ "$restic_on" = 1 ]; then restic -q -r "$1/restic" init >/dev/null; fi
}

now() { date +%s.%N; }
jget() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
mb() { awk '{ printf "%.2f", $1 / 1e6 }'; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$(now)"; }

# snapshot_generation CASE GEN CASEDIR SRCDIR STATFILE [cairn snapshot options...]
snapshot_generation() {
    local case=$1 gen=$2 d=$3 src=$4 stat=$5
    shift 5
    local t0 secs args=()
    t0=$(now)
    "$cairn" -q -r "$d/repo" snapshot dir "$src" --source "$case" --json "$@" >"$d/snap-$gen.json" \
        || die "cairn snapshot of $case generation $gen failed"
    secs=$(elapsed "$t0")
    args=(--stat "$stat" --cairn "$d/snap-$gen.json" --cairn-seconds "$secs")
    if [ "$noalign" = 1 ]; then
        t0=$(now)
        "$cairn" -q -r "$d/repo-noalign" snapshot dir "$src" --source "$case" --json "$@" >"$d/snap-noalign-$gen.json" \
            || die "cairn snapshot (--no-page-align repository) of $case generation $gen failed"
        args+=(--noalign "$d/snap-noalign-$gen.json" --noalign-seconds "$(elapsed "$t0")")
    fi
    if [ "$restic_on" = 1 ]; then
        local before after
        before=$(du -sb "$d/restic" | cut -f1)
        restic -q -r "$d/restic" backup --host bench "$src" >/dev/null || die "restic backup of $case generation $gen failed"
        after=$(du -sb "$d/restic" | cut -f1)
        args+=(--restic-bytes $((after - before)))
    fi
    record gen "$case" "$gen" "${args[@]}"
    log "$case generation $gen: $(jget "$d/snap-$gen.json" bytes | mb) MB, cairn stored $(jget "$d/snap-$gen.json" stored_bytes | mb) MB in ${secs}s"
}

tree_modes() { (cd "$1" && find . -mindepth 1 -printf '%P %y %m %U:%G\n' | LC_ALL=C sort); }

# verify_restore CASE CASEDIR SRCDIR: the last snapshot of each cairn repository, extracted and as a tar
verify_restore() {
    local case=$1 d=$2 src=$3 repo id bytes size verdict
    for repo in repo repo-noalign; do
        [ -d "$d/$repo" ] || continue
        local snapjson="$d/snap-$generations.json"
        [ "$repo" = repo ] || snapjson="$d/snap-noalign-$generations.json"
        id=$(jget "$snapjson" id)
        bytes=$(jget "$snapjson" bytes)
        rm -rf "$d/extract"
        verdict=""
        if ! "$cairn" -q -r "$d/$repo" restore "$id" --extract "$d/extract" >"$d/restore.log" 2>&1; then
            verdict="restore --extract FAILED ($(tail -1 "$d/restore.log"))"
        elif ! diff -rq --no-dereference "$src" "$d/extract" >"$d/diff.log" 2>&1; then
            verdict="restore --extract DIFFERS from the source ($(wc -l <"$d/diff.log") differences, e.g. $(head -1 "$d/diff.log"))"
        elif ! diff <(tree_modes "$src") <(tree_modes "$d/extract") >"$d/diff.log" 2>&1; then
            verdict="restore --extract contents identical but modes/owners DIFFER ($(grep -c '^<' "$d/diff.log") entries, e.g. $(grep -m1 '^<' "$d/diff.log"))"
        else
            verdict="--extract identical to the source ($(find "$src" -type f | wc -l) files; contents, modes and owners)"
            # The extraction target is created by cairn, not restored from the stream's "./" member.
            if [ "$(stat -c '%a %U:%G' "$src")" != "$(stat -c '%a %U:%G' "$d/extract")" ]; then
                verdict="$verdict; the target directory itself is $(stat -c '%a %U:%G' "$d/extract"), the source's is $(stat -c '%a %U:%G' "$src")"
            fi
        fi
        rm -rf "$d/extract"
        if ! "$cairn" -q -r "$d/$repo" restore "$id" --output "$d/last.tar" >"$d/restore.log" 2>&1; then
            verdict="$verdict; restore --output FAILED ($(tail -1 "$d/restore.log"))"
        else
            size=$(stat -c %s "$d/last.tar")
            if [ "$size" = "$bytes" ]; then
                verdict="$verdict; --output OK ($size bytes, digest checked by cairn)"
            else
                verdict="$verdict; --output wrote $size bytes, snapshot says $bytes: MISMATCH"
            fi
        fi
        rm -f "$d/last.tar"
        case "$verdict" in *FAILED*|*DIFFERS*|*MISMATCH*) failures=$((failures + 1)) ;; esac
        local which="default repository"
        [ "$repo" = repo ] || which="--no-page-align repository"
        log "$case restore check ($which): $verdict"
        record note "$case" check "restore check ($which)=$verdict"
    done
}

finish_case() { # finish_case CASEDIR: drop the data and repositories unless --keep
    if [ "$keep" = 0 ]; then rm -rf "$1"; else log "kept $1"; fi
}

# ---- SQLite ------------------------------------------------------------------------------------

run_sqlite() {
    local d="$work/sqlite" g
    rm -rf "$d"
    mkdir -p "$d/db"
    need_space $((sqlite_mb * 5 + 500)) "the SQLite case"
    record note sqlite param "size_mb=$sqlite_mb" "ops_fraction=$sqlite_ops_fraction" "page_size=4096" "generations=$generations"
    init_repos "$d"
    for g in $(seq 1 "$generations"); do
        if [ "$g" = 1 ]; then
            log "sqlite: creating a ${sqlite_mb} MB database"
            python3 "$py/sqlite_gen.py" create "$d/db/app.db" --size-mb "$sqlite_mb" --seed "$seed"
            python3 "$py/pagestat.py" --new "$d/db" --first --page-size 4096 --json "$d/stat-$g.json"
        else
            rm -rf "$d/prev"
            cp -a "$d/db" "$d/prev"
            python3 "$py/sqlite_gen.py" mutate "$d/db/app.db" --gen "$g" --ops-fraction "$sqlite_ops_fraction" --seed "$seed"
            python3 "$py/pagestat.py" --new "$d/db" --old "$d/prev" --page-size 4096 --json "$d/stat-$g.json"
        fi
        [ "$(ls -A "$d/db")" = app.db ] || die "sqlite: files other than app.db beside the database: $(ls -A "$d/db" | tr '\n' ' ')"
        snapshot_generation sqlite "$g" "$d" "$d/db" "$d/stat-$g.json"
    done
    rm -rf "$d/prev"
    verify_restore sqlite "$d" "$d/db"
    finish_case "$d"
}

# ---- PostgreSQL ----------------------------------------------------------------------------------

pg_bin=""
pg_data=""
pg_sock=""
pg_log=""
pg_running=0

pg() { runuser -u postgres -- "$@"; }

pg_start() {
    pg "$pg_bin/pg_ctl" -D "$pg_data" -l "$pg_log" -w -t 120 \
        -o "-p $pg_port -k $pg_sock -c listen_addresses='' -c fsync=off -c autovacuum=off" start >/dev/null \
        || { tail -20 "$pg_log" >&2; die "postgres did not start (log above: $pg_log)"; }
    pg_running=1
}

pg_stop() {
    [ "$pg_running" = 1 ] || return 0
    pg "$pg_bin/pg_ctl" -D "$pg_data" -m fast -w -t 120 stop >/dev/null || return 1
    pg_running=0
}

pg_sql() { pg "$pg_bin/psql" -h "$pg_sock" -p "$pg_port" -U postgres -X -q -v ON_ERROR_STOP=1 -d postgres "$@"; }

cleanup() {
    if [ "$pg_running" = 1 ]; then
        log "stopping the benchmark's postgres server"
        pg_stop || {
            local pid
            pid=$(head -1 "$pg_data/postmaster.pid" 2>/dev/null || true)
            [ -n "$pid" ] && kill -INT "$pid" 2>/dev/null || true
        }
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# pgbench -i's own rows are blank-padded and compress about 17:1, which no real table does and which
# hides what chunking costs. With --pg-filler text (the default) the tables pgbench creates are
# filled with the same rows but filler columns of hex digests and words (about 2.5:1 under zstd-3);
# --pg-filler blank keeps pgbench's own data.
pg_init_data() { # pg_init_data CASEDIR
    local pgb=("$pg_bin/pgbench" -h "$pg_sock" -p "$pg_port" -U postgres -i -q -s "$pg_scale")
    log "postgres: pgbench -i -s $pg_scale (filler: $pg_filler)"
    if [ "$pg_filler" = blank ]; then
        pg "${pgb[@]}" postgres >"$1/pgbench.log" 2>&1 || { tail -5 "$1/pgbench.log" >&2; die "pgbench -i failed"; }
        return
    fi
    pg "${pgb[@]}" -I dt postgres >"$1/pgbench.log" 2>&1 || { tail -5 "$1/pgbench.log" >&2; die "pgbench -i -I dt failed"; }
    pg_sql -v scale="$pg_scale" >>"$1/pgbench.log" 2>&1 <<'SQL' || die "filling the pgbench tables failed (see $1/pgbench.log)"
INSERT INTO pgbench_branches SELECT b, 0, 'branch ' || b || ' ' || md5(b::text) FROM generate_series(1, :scale) b;
INSERT INTO pgbench_tellers SELECT t, (t - 1) / 10 + 1, 0, 'teller ' || t || ' ' || md5(t::text)
  FROM generate_series(1, 10 * :scale) t;
INSERT INTO pgbench_accounts
  SELECT a, (a - 1) / 100000 + 1, 0,
         (ARRAY['retail','business','savings','checking','premium'])[a % 5 + 1] || ' ' || md5(a::text)
         || ' ' || (ARRAY['berlin','paris','madrid','oslo','rome','vienna','lisbon'])[a % 7 + 1] || ' ' || a
  FROM generate_series(1, 100000 * :scale) a;
SQL
    pg "${pgb[@]}" -I vp postgres >>"$1/pgbench.log" 2>&1 || { tail -5 "$1/pgbench.log" >&2; die "pgbench -i -I vp failed"; }
}

run_postgres() {
    local d="$work/postgres" g
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
    if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/postgres" ]; then
        apt_install postgresql
        pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    fi
    id postgres >/dev/null 2>&1 || die "no postgres user (install Debian's postgresql package)"
    command -v runuser >/dev/null || die "runuser (util-linux) is needed to run the server as postgres"
    rm -rf "$d"
    mkdir -p "$d/pg"
    chown postgres: "$d/pg"
    pg test -x "$d/pg" || die "the postgres user cannot reach $d: choose a --work directory every user can traverse"
    local scale_mb=$((pg_scale * 16))
    need_space $((scale_mb * 5 + 1000)) "the PostgreSQL case"
    pg_data="$d/pg/data"
    pg_sock="$d/pg/sock"
    pg_log="$d/pg/server.log"
    pg mkdir -p "$pg_sock"
    record note postgres param "server=$("$pg_bin/postgres" --version | awk '{print $3}')" "filler=$pg_filler" "scale=$pg_scale" \
        "transactions_per_generation=$pg_transactions" "page_size=8192" "generations=$generations" \
        "settings=fsync off, autovacuum off, pgbench -c 1 -n --random-seed"
    pg "$pg_bin/initdb" -D "$pg_data" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$d/initdb.log" 2>&1 \
        || { cat "$d/initdb.log" >&2; die "initdb failed"; }
    init_repos "$d"
    for g in $(seq 1 "$generations"); do
        if [ "$g" -gt 1 ]; then
            rm -rf "$d/prev"
            cp -a "$pg_data" "$d/prev"
        fi
        pg_start
        if [ "$g" = 1 ]; then
            pg_init_data "$d"
        else
            log "postgres: generation $g, pgbench -t $pg_transactions"
            pg "$pg_bin/pgbench" -h "$pg_sock" -p "$pg_port" -U postgres -n -c 1 -j 1 -t "$pg_transactions" \
                --random-seed=$((seed * 1000 + g)) postgres >"$d/pgbench.log" 2>&1 \
                || { tail -5 "$d/pgbench.log" >&2; die "pgbench failed"; }
        fi
        pg_sql -c CHECKPOINT
        pg_stop || die "postgres did not stop"
        if [ "$g" = 1 ]; then
            python3 "$py/pagestat.py" --new "$pg_data" --first --page-size 8192 --json "$d/stat-$g.json"
        else
            python3 "$py/pagestat.py" --new "$pg_data" --old "$d/prev" --page-size 8192 --json "$d/stat-$g.json"
        fi
        snapshot_generation postgres "$g" "$d" "$pg_data" "$d/stat-$g.json"
    done
    rm -rf "$d/prev"
    verify_restore postgres "$d" "$pg_data"
    finish_case "$d"
}

# ---- CRIU checkpoint images ----------------------------------------------------------------------

run_criu() {
    local d="$work/criu" g
    rm -rf "$d"
    mkdir -p "$d"
    need_space $((criu_mib * 6 + 500)) "the CRIU case"
    record note criu param "pages_1_img_mib=$criu_mib" "pages_2_img_mib=$((criu_mib / 16))" "change_pct=3" \
        "inserted_pages_per_image=4" "page_size=4096" "generations=$generations" "snapshot=snapshot dir --kind checkpoint"
    init_repos "$d"
    # Every generation is snapshotted from the same path (cur), as a checkpoint directory would be
    # re-dumped in place, so restic sees one series too.
    for g in $(seq 1 "$generations"); do
        rm -rf "$d/next"
        if [ "$g" = 1 ]; then
            python3 "$py/criu_gen.py" --out "$d/cur" --gen 1 --size-mib "$criu_mib" --seed "$seed"
            python3 "$py/pagestat.py" --new "$d/cur" --first --seen "$d/seen" --page-size 4096 --json "$d/stat-$g.json"
        else
            python3 "$py/criu_gen.py" --out "$d/next" --gen "$g" --prev "$d/cur" --size-mib "$criu_mib" --seed "$seed"
            rm -rf "$d/prev"
            mv "$d/cur" "$d/prev"
            mv "$d/next" "$d/cur"
            python3 "$py/pagestat.py" --new "$d/cur" --old "$d/prev" --seen "$d/seen" --page-size 4096 --json "$d/stat-$g.json"
        fi
        snapshot_generation criu "$g" "$d" "$d/cur" "$d/stat-$g.json" --kind checkpoint
    done
    rm -rf "$d/prev"
    verify_restore criu "$d" "$d/cur"
    finish_case "$d"
}

# ---- main ----------------------------------------------------------------------------------------

log "cairn: $cairn ($cairn_version); --no-page-align: $([ $noalign = 1 ] && echo yes || echo 'no (column skipped)'); work: $work"
for c in "${cases[@]}"; do
    t0=$(now)
    "run_$c"
    log "$c done in $(elapsed "$t0") s"
done
rm -rf "$RESTIC_CACHE_DIR"
python3 "$py/report.py" "$records" --md "$work/results.md" --json "$work/results.json"
log "results: $work/results.md, $work/results.json"
[ "$failures" = 0 ] || die "$failures restore check(s) failed (see above)"
