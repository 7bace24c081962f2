#!/usr/bin/env python3
"""Page-level change figures for one generation of a directory (the yardstick cairn is measured against).

Two measures, each reported as page count, raw bytes and the zstd-3 size of the pages concatenated:

* changed (--old DIR): pages whose bytes differ from the same page (same relative path, same page
  number) of the previous generation. Pages past the old file's end and every page of a new file
  count as changed; deleted files contribute nothing. This is what a page-granular incremental
  backup of a database would have to store.
* novel (--seen FILE): distinct page contents never seen in any earlier generation (anywhere, at any
  offset) nor earlier in this one. This is the floor for content-defined dedup of page images whose
  pages move (CRIU dumps). The seen-set file is updated in place.

A file's last partial page counts as a page of its actual length.
Compression uses Debian's `zstd` CLI (level 3, single thread) so the figure matches a plain
`zstd -3` of the same bytes.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import threading

READ_BLOCK = 1 << 20  # compare 1 MiB at a time; only differing blocks are split into pages


class ZstdCounter:
    """Streams bytes into `zstd -3` and counts raw and compressed bytes."""

    def __init__(self):
        self.raw = 0
        self.pages = 0
        self.compressed = 0
        self.proc = subprocess.Popen(
            ["zstd", "-3", "--single-thread", "-q", "-c"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _drain(self):
        while True:
            buf = self.proc.stdout.read(1 << 20)
            if not buf:
                return
            self.compressed += len(buf)

    def add(self, page):
        self.pages += 1
        self.raw += len(page)
        self.proc.stdin.write(page)

    def finish(self):
        self.proc.stdin.close()
        self.reader.join()
        if self.proc.wait() != 0:
            sys.exit("pagestat: zstd failed")
        # An empty input still yields a zstd frame header; report 0 for "nothing changed".
        if self.raw == 0:
            self.compressed = 0
        return {"pages": self.pages, "raw_bytes": self.raw, "zstd_bytes": self.compressed}


def regular_files(root):
    """Relative paths of the regular files under root, sorted (symlinks are not followed)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            full = os.path.join(dirpath, name)
            if os.path.isfile(full) and not os.path.islink(full):
                out.append(os.path.relpath(full, root))
    return sorted(out)


def pages_of(data, page_size):
    for off in range(0, len(data), page_size):
        yield data[off:off + page_size]


def group_of(rel, depth):
    parts = rel.split(os.sep)
    return os.sep.join(parts[:depth]) if len(parts) > depth else "(top)"


def read_seen(path):
    if not path or not os.path.exists(path):
        return set()
    with open(path, "rb") as f:
        data = f.read()
    return {data[i:i + 16] for i in range(0, len(data), 16)}


def write_seen(path, seen):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        for digest in seen:
            f.write(digest)
    os.replace(tmp, path)


def measure(args):
    files = regular_files(args.new)
    changed = ZstdCounter() if (args.old or args.first) else None
    novel = ZstdCounter() if args.seen else None
    seen = read_seen(args.seen) if args.seen else None
    fresh = set()
    total_pages = 0
    total_bytes = 0
    by_group = {}
    ps = args.page_size
    block = max(ps, READ_BLOCK - READ_BLOCK % ps)
    for rel in files:
        group = group_of(rel, args.group_depth)
        stats = by_group.setdefault(group, {"pages": 0, "changed_pages": 0, "novel_pages": 0})
        old_path = os.path.join(args.old, rel) if args.old else None
        old = open(old_path, "rb") if old_path and os.path.isfile(old_path) else None
        try:
            with open(os.path.join(args.new, rel), "rb") as new:
                while True:
                    data = new.read(block)
                    if not data:
                        break
                    old_data = old.read(block) if old else b""
                    total_bytes += len(data)
                    n_pages = (len(data) + ps - 1) // ps
                    total_pages += n_pages
                    stats["pages"] += n_pages
                    if changed and data != old_data:
                        for off in range(0, len(data), ps):
                            page = data[off:off + ps]
                            if page != old_data[off:off + ps]:
                                changed.add(page)
                                stats["changed_pages"] += 1
                    if novel:
                        for page in pages_of(data, ps):
                            digest = hashlib.blake2b(page, digest_size=16).digest()
                            if digest not in seen and digest not in fresh:
                                fresh.add(digest)
                                novel.add(page)
                                stats["novel_pages"] += 1
        finally:
            if old:
                old.close()
    result = {
        "page_size": ps,
        "files": len(files),
        "bytes": total_bytes,
        "pages": total_pages,
        "by_group": by_group,
    }
    if changed:
        result["changed"] = changed.finish()
    if novel:
        result["novel"] = novel.finish()
        write_seen(args.seen, seen | fresh)
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--new", required=True, help="directory of this generation")
    p.add_argument("--old", help="directory of the previous generation")
    p.add_argument("--first", action="store_true", help="no previous generation: count every page as changed")
    p.add_argument("--seen", help="seen-page-digest file to compare against and update (novel pages)")
    p.add_argument("--page-size", type=int, default=4096)
    p.add_argument("--group-depth", type=int, default=1, help="path components used to group per-directory figures")
    p.add_argument("--json", help="write the result here (default: stdout)")
    args = p.parse_args()
    if args.first and args.old:
        p.error("--first and --old exclude each other")
    result = measure(args)
    text = json.dumps(result, indent=1, sort_keys=True)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
