#!/usr/bin/env bash
# Measures what chunk size does to stored bytes on realistic series (the figures in
# format-spec/measurements.md):
#   - a Debian root filesystem (debootstrap minbase) across package installs, as tar streams
#   - a SQLite database directory across rounds of scattered updates and inserts
# Usage: scripts/measure-chunking.sh WORKDIR   (needs root, debootstrap, python3; ~15 min)
set -euo pipefail
work=${1:?usage: $0 WORKDIR}
cd "$(dirname "$0")/.."
cargo build --release --quiet
cairn="$PWD/target/release/cairn"
mkdir -p "$work"; cd "$work"

if [ ! -f rootfs-1.tar ]; then
    [ -d rootfs ] || debootstrap --variant=minbase bookworm rootfs http://deb.debian.org/debian
    tar --sort=name -cf rootfs-1.tar -C rootfs .
    n=2
    for pkgs in "less vim-tiny" "python3-minimal" "curl ca-certificates" "git-man perl-modules-5.36"; do
        chroot rootfs apt-get install -y -qq --no-install-recommends $pkgs >/dev/null 2>&1 || true
        tar --sort=name -cf "rootfs-$n.tar" -C rootfs .
        n=$((n + 1))
    done
fi
if [ ! -f db-1.tar ]; then
    python3 - <<'PY'
import sqlite3, random, os, tarfile
random.seed(7)
os.makedirs("dbdir", exist_ok=True)
db = sqlite3.connect("dbdir/app.db")
db.execute("create table if not exists t(id integer primary key, k text, v blob)")
db.execute("create index if not exists tk on t(k)")
def words(n): return " ".join(random.choice(["alpha","beta","gamma","delta","omega","cairn","volume","chunk"]) for _ in range(n))
db.executemany("insert into t(k, v) values (?, ?)", ((os.urandom(8).hex(), words(40).encode()) for _ in range(150000)))
db.commit()
for gen in range(1, 6):
    if gen > 1:
        for _ in range(8000):
            db.execute("update t set v = ? where id = ?", (words(40).encode(), random.randrange(1, 150000)))
        db.executemany("insert into t(k, v) values (?, ?)", ((os.urandom(8).hex(), words(40).encode()) for _ in range(3000)))
        db.commit()
    with tarfile.open(f"db-{gen}.tar", "w") as tf:
        tf.add("dbdir", arcname=".")
PY
fi

printf '%-7s %-10s %14s %14s %s\n' series avg_chunk stored_total chunks per_generation_added
for series in rootfs db; do
    for avg in 16384 32768 65536 131072 262144 1048576; do
        repo="repo-$series-$avg"; rm -rf "$repo"
        "$cairn" -q -r "$repo" repo init --chunk-size $avg >/dev/null
        added=()
        for t in $(ls $series-*.tar | sort -V); do
            a=$("$cairn" -q -r "$repo" snapshot tar "$t" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["stored_bytes"])')
            added+=("$a")
        done
        stats=$("$cairn" -r "$repo" repo stats --json)
        stored=$(echo "$stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["stored_bytes"])')
        chunks=$(echo "$stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["chunks"])')
        printf '%-7s %-10s %14s %14s %s\n' "$series" "$avg" "$stored" "$chunks" "${added[*]}"
        rm -rf "$repo"
    done
done
ls -l *.tar | awk '{print $5, $9}'

# Pack size: number of files and what gc must rewrite after forgetting the oldest generations.
printf '\n%-10s %8s %14s %14s %14s\n' pack_size packs gc_rewritten gc_freed stored_after
for ps in 4194304 16777216 67108864; do
    repo="repo-pack-$ps"; rm -rf "$repo"
    "$cairn" -q -r "$repo" repo init --pack-size $ps >/dev/null
    for t in $(ls rootfs-*.tar | sort -V); do "$cairn" -q -r "$repo" snapshot tar "$t" >/dev/null; done
    packs=$("$cairn" -r "$repo" repo stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["packs"])')
    "$cairn" -q -r "$repo" forget --keep-last 2 >/dev/null
    "$cairn" -q -r "$repo" repo gc --json > gc.json
    python3 - "$ps" "$packs" <<'PY'
import json, sys
g = json.load(open("gc.json"))
print(f"{sys.argv[1]:<10} {sys.argv[2]:>8} {g['packs_rewritten']:>14} {g['bytes_freed']:>14} {g['bytes_after']:>14}")
PY
    rm -rf "$repo"
done
