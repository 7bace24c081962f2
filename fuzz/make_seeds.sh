#!/usr/bin/env bash
# Regenerates seeds/: tar archives in every format GNU tar writes, then the other targets' seeds
# from real encodings (src/make_seeds.rs). Run from anywhere; needs GNU tar, mkfifo, truncate.
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A small tree: file, nested dir, symlink, hard link, FIFO, empty file.
basic="$work/basic"
mkdir -p "$basic/d/sub"
echo hello >"$basic/d/a.txt"
head -c 700 /dev/zero | tr '\0' x >"$basic/d/sub/b.bin"
: >"$basic/d/empty"
ln -s a.txt "$basic/d/link"
ln "$basic/d/a.txt" "$basic/d/hard"
mkfifo "$basic/d/fifo"
# Character device, when we may create one (root).
mknod "$basic/d/null" c 1 3 2>/dev/null || true

# What only some formats hold: a long name, a long link target, a sparse file, an old mtime.
extended="$work/extended"
long=$(printf 'n%.0s' $(seq 1 120))
mkdir -p "$extended/e/$long"
echo deep >"$extended/e/$long/file-with-a-long-name-$long"
ln -s "$long/$long/target" "$extended/e/longlink"
truncate -s 40000 "$extended/e/sparse"
printf 'data' | dd of="$extended/e/sparse" bs=1 seek=20000 conv=notrunc status=none
echo old >"$extended/e/old"
touch -d '1960-01-01T00:00:00Z' "$extended/e/old"

tars="$work/tars"
mkdir -p "$tars"
common=(-b1 --owner=0 --group=0 --numeric-owner --mtime='2024-01-02 03:04:05Z')
for fmt in v7 ustar gnu oldgnu posix; do
  tar "${common[@]}" --format=$fmt -cf "$tars/basic-$fmt.tar" -C "$basic" d 2>/dev/null || true
done
for fmt in gnu oldgnu posix; do
  tar -b1 --format=$fmt --sparse -cf "$tars/extended-$fmt.tar" -C "$extended" e
done
tar -b1 --format=posix --sparse --sparse-version=0.1 -cf "$tars/sparse-pax01.tar" -C "$extended" e/sparse
tar -b1 --format=posix --sparse --sparse-version=1.0 -cf "$tars/sparse-pax10.tar" -C "$extended" e/sparse
tar -b1 --format=gnu --label=VOLUME -cf "$tars/label.tar" -C "$basic" d/a.txt
tar -b1 --format=gnu --listed-incremental="$work/snar" -cf "$tars/incremental.tar" -C "$basic" d
tar -b1 --format=posix --pax-option=globexthdr.name=g -cf "$tars/posix-global.tar" \
  --pax-option='comment=seed' -C "$basic" d/a.txt
tar -b1 -cf "$tars/empty.tar" -T /dev/null
# Drop any that failed to be written (a format that cannot hold a member).
find "$tars" -type f -size 0 -delete

rm -rf seeds
cargo run --quiet --example make_seeds -- "$tars" seeds
du -sh seeds
