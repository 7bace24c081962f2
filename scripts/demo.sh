#!/usr/bin/env bash
# A demonstration of cairn's main job on a local repository: successive snapshots of changing
# data, the deduplication they achieve, and a restore verified bit-exact.
#
#   scripts/demo.sh            # uses a temporary directory, removed afterwards
#   DEMO_DIR=/tmp/x scripts/demo.sh   # keeps everything in /tmp/x
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet
cairn="$PWD/target/release/cairn"

if [ -n "${DEMO_DIR:-}" ]; then
    work="$DEMO_DIR"; mkdir -p "$work"
else
    work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
fi
export CAIRN_REPO="$work/repo"
data="$work/data"
rm -rf "$CAIRN_REPO" "$data"; mkdir -p "$data"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "A volume-like directory: documentation text, binaries, random (incompressible) files"
cp -r /usr/share/doc "$data/doc" 2>/dev/null || true
mkdir -p "$data/bin"; cp /usr/bin/[a-f]* "$data/bin/" 2>/dev/null || true
for i in $(seq 1 8); do head -c 2000000 /dev/urandom > "$data/blob$i.bin"; done
du -sh "$data"

"$cairn" repo init
say "Generation 1: first snapshot stores everything (compressed)"
"$cairn" snapshot dir "$data" --source demo --tag gen1

say "Generation 2: unchanged data costs nothing"
"$cairn" snapshot dir "$data" --source demo --tag gen2

say "Generation 3: a few files change, one is added, one removed"
printf 'changed\n' >> "$data/blob1.bin"
head -c 500000 /dev/urandom > "$data/new.bin"
rm -f "$data/blob8.bin"
"$cairn" snapshot dir "$data" --source demo --tag gen3

say "Also as a raw tar stream from stdin (bit-exact, whatever the bytes)"
tar -cf - -C "$data" . | "$cairn" snapshot tar - --source demo-tar

say "Snapshots and repository statistics"
"$cairn" snapshots
"$cairn" repo stats

say "Restore the latest directory snapshot's exact bytes and verify them"
latest=$("$cairn" snapshots --json --source demo | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
"$cairn" restore "$latest" --output "$work/restored.tar"
"$cairn" restore "$latest" --extract "$work/restored"
if diff -r "$data" "$work/restored" >/dev/null; then
    echo "extracted tree is identical to the source directory"
else
    echo "extracted tree differs from the source directory" >&2; exit 1
fi
"$cairn" verify "$latest"
"$cairn" repo check --read-data
say "Done: every snapshot above restores bit-exact; see 'repo stats' for the dedup ratio"
