#!/usr/bin/env python3
"""Appends one record to bench-pages.sh's records.jsonl (read back by report.py).

  record.py FILE meta key=value...                       run parameters (one per run)
  record.py FILE note CASE KIND key=value...             KIND: param (case parameters) or check (restore checks)
  record.py FILE gen CASE GEN --stat F --cairn F --cairn-seconds S
            [--noalign F --noalign-seconds S] [--restic-bytes N]
"""
import argparse
import json
import sys


def pairs(items):
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            sys.exit(f"record.py: expected key=value, got {item!r}")
        out[key] = value
    return out


def load(path):
    with open(path) as f:
        return json.load(f)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file")
    sub = p.add_subparsers(dest="type", required=True)
    m = sub.add_parser("meta")
    m.add_argument("kv", nargs="*")
    n = sub.add_parser("note")
    n.add_argument("case")
    n.add_argument("kind", choices=["param", "check"])
    n.add_argument("kv", nargs="*")
    g = sub.add_parser("gen")
    g.add_argument("case")
    g.add_argument("gen", type=int)
    g.add_argument("--stat", required=True)
    g.add_argument("--cairn", required=True)
    g.add_argument("--cairn-seconds", type=float, required=True)
    g.add_argument("--noalign")
    g.add_argument("--noalign-seconds", type=float)
    g.add_argument("--restic-bytes", type=int)
    args = p.parse_args()
    if args.type == "meta":
        rec = {"type": "meta", **pairs(args.kv)}
    elif args.type == "note":
        rec = {"type": args.kind, "case": args.case, **pairs(args.kv)}
    else:
        cairn = load(args.cairn)
        cairn.pop("streams", None)
        cairn["seconds"] = args.cairn_seconds
        rec = {"type": "gen", "case": args.case, "gen": args.gen, "stat": load(args.stat), "cairn": cairn}
        if args.noalign:
            noalign = load(args.noalign)
            noalign.pop("streams", None)
            noalign["seconds"] = args.noalign_seconds
            rec["cairn_noalign"] = noalign
        if args.restic_bytes is not None:
            rec["restic_bytes"] = args.restic_bytes
    with open(args.file, "a") as f:
        f.write(json.dumps(rec, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
