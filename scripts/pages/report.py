#!/usr/bin/env python3
"""Turns the per-generation records of bench-pages.sh into markdown tables and one JSON file.

Input: WORK/records.jsonl (written by record.py: run metadata, case parameters, restore checks and
one record per case and generation). Output: markdown on stdout and in --md, everything in --json.
MB = 10^6 bytes.
"""
import argparse
import json
import sys

GOALS = {
    # case: (yardstick key, factor, what the issue asks)
    "sqlite": ("changed", "zstd_bytes", 2.0, "stored ≤ 2× zstd-3 of the changed pages (generations ≥ 2)"),
    "postgres": ("changed", "zstd_bytes", 2.0, "stored ≤ 2× zstd-3 of the changed pages (generations ≥ 2; same bar as SQLite)"),
    "criu": ("novel", "raw_bytes", 1.3, "stored ≤ 1.3× distinct new page content (generations ≥ 2)"),
}
TITLES = {
    "sqlite": "SQLite database (4 KiB pages, UUID primary key + secondary index)",
    "postgres": "PostgreSQL data directory (8 KiB pages, pgbench)",
    "criu": "CRIU-like checkpoint directory (4 KiB pages)",
}
GEN1_NOALIGN_TOLERANCE = 0.15


def mb(n, digits=1):
    return "" if n is None else f"{n / 1e6:.{digits}f}"


def ratio(a, b):
    return None if not a or not b else a / b


def fmt_ratio(r):
    return "" if r is None else f"{r:.2f}"


def opt(rec, *keys):
    cur = rec
    for k in keys:
        if not isinstance(cur, dict) or k not in cur:
            return None
        cur = cur[k]
    return cur


def table(case, recs):
    measure = "novel" if case == "criu" else "changed"
    label = "new distinct pages" if case == "criu" else "changed pages"
    has = lambda *k: any(opt(r, *k) is not None for r in recs)  # noqa: E731
    cols = ["gen", "source MB", f"{label} (%)", f"{measure} raw MB", f"{measure} zstd MB", "cairn stored MB"]
    if case == "criu":
        cols += ["stored / raw", "stored / zstd"]
    else:
        cols += ["stored / zstd"]
    extra_cairn = [k for k in ("page_aligned_bytes", "metadata_bytes") if has("cairn", k)]
    if case == "postgres":
        cols += ["changed in pg_wal"]
    cols += [f"{k.replace('_bytes', '')} MB" for k in extra_cairn]
    if has("cairn_noalign", "stored_bytes"):
        cols += ["no-page-align stored MB"]
    if has("restic_bytes"):
        cols += ["restic MB"]
    cols += ["cairn s"]
    rows = []
    for r in recs:
        m = r["stat"][measure]
        stored = r["cairn"]["stored_bytes"]
        pct = 100.0 * m["pages"] / r["stat"]["pages"] if r["stat"]["pages"] else 0.0
        row = [str(r["gen"]), mb(r["stat"]["bytes"]), f"{m['pages']} ({pct:.1f} %)", mb(m["raw_bytes"]),
               mb(m["zstd_bytes"]), mb(stored)]
        if case == "criu":
            row += [fmt_ratio(ratio(stored, m["raw_bytes"]))]
        row += [fmt_ratio(ratio(stored, m["zstd_bytes"]))]
        if case == "postgres":
            row += [str(opt(r, "stat", "by_group", "pg_wal", "changed_pages") or 0)]
        row += [mb(opt(r, "cairn", k), 2) for k in extra_cairn]
        if "no-page-align stored MB" in cols:
            row += [mb(opt(r, "cairn_noalign", "stored_bytes"))]
        if "restic MB" in cols:
            row += [mb(opt(r, "restic_bytes"))]
        row += [f"{r['cairn']['seconds']:.1f}"]
        rows.append(row)
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def verdicts(case, recs):
    measure, key, factor, text = GOALS[case]
    lines = []
    later = [r for r in recs if r["gen"] > 1]
    results = []
    for r in later:
        yard = r["stat"][measure][key]
        stored = r["cairn"]["stored_bytes"]
        ok = stored <= factor * yard
        results.append({"gen": r["gen"], "ratio": ratio(stored, yard), "pass": ok})
    if results:
        worst = max((x["ratio"] or 0) for x in results)
        passed = sum(1 for x in results if x["pass"])
        lines.append(f"Goal {text}: {passed}/{len(results)} generations pass "
                     f"(worst ratio {worst:.2f}, bar {factor:.1f}).")
    if case == "criu" and later:
        worst_z = max(ratio(r["cairn"]["stored_bytes"], r["stat"]["novel"]["zstd_bytes"]) or 0 for r in later)
        lines.append(f"Against the zstd-3 size of the new pages instead: worst ratio {worst_z:.2f}.")
    first = next((r for r in recs if r["gen"] == 1), None)
    gen1 = None
    if first and opt(first, "cairn_noalign", "stored_bytes"):
        a, b = first["cairn"]["stored_bytes"], first["cairn_noalign"]["stored_bytes"]
        diff = a / b - 1
        gen1 = {"default": a, "no_page_align": b, "relative": diff, "pass": abs(diff) <= GEN1_NOALIGN_TOLERANCE}
        lines.append(f"Generation 1, default vs --no-page-align: {mb(a)} vs {mb(b)} MB "
                     f"({diff * 100:+.1f} %; goal within ±15 %: {'PASS' if gen1['pass'] else 'MISS'}).")
    elif first:
        lines.append("Generation 1 vs --no-page-align: not measured (this cairn has no `repo init --no-page-align`).")
    if first:
        z = first["stat"][measure]["zstd_bytes"]
        lines.append(f"Generation 1 stored {mb(first['cairn']['stored_bytes'])} MB vs zstd-3 of the whole "
                     f"{'set of distinct pages' if case == 'criu' else 'data'} {mb(z)} MB "
                     f"(ratio {fmt_ratio(ratio(first['cairn']['stored_bytes'], z))}).")
    return lines, {"generations": results, "gen1_vs_no_page_align": gen1}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("records")
    p.add_argument("--md", required=True)
    p.add_argument("--json", required=True)
    args = p.parse_args()
    meta, recs, notes = {}, [], {}
    with open(args.records) as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            kind = rec.pop("type")
            if kind == "meta":
                meta.update(rec)
            elif kind == "gen":
                recs.append(rec)
            else:
                case = rec.pop("case")
                notes.setdefault(case, {}).setdefault(kind, {}).update(rec)
    md = ["# cairn page-aligned chunking benchmark", "",
          f"cairn `{meta.get('cairn', '?')}` ({meta.get('cairn_version', '?')}), "
          f"`--no-page-align`: {meta.get('no_page_align', '?')}, mode {meta.get('mode', '?')}, "
          f"seed {meta.get('seed', '?')}, {meta.get('date', '')}. MB = 10^6 bytes; "
          "\"stored\" is cairn's stored_bytes for that snapshot (new packed bytes).", ""]
    summary = {"meta": meta, "cases": {}}
    for case in ("sqlite", "postgres", "criu"):
        cr = sorted((r for r in recs if r["case"] == case), key=lambda r: r["gen"])
        if not cr:
            continue
        case_notes = notes.get(case, {})
        md += [f"## {TITLES[case]}", ""]
        if case_notes.get("param"):
            md += ["Parameters: " + ", ".join(f"{k} {v}" for k, v in case_notes["param"].items()), ""]
        md += table(case, cr) + [""]
        lines, verdict = verdicts(case, cr)
        md += [f"- {line}" for line in lines]
        for key, value in case_notes.get("check", {}).items():
            md += [f"- {key}: {value}"]
        md += [""]
        summary["cases"][case] = {"generations": cr, "goals": verdict, **case_notes}
    text = "\n".join(md)
    with open(args.md, "w") as f:
        f.write(text + "\n")
    with open(args.json, "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
        f.write("\n")
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
