#!/usr/bin/env python3
"""Deterministic SQLite database series for the page-aligned chunking benchmark.

`create DB --size-mb N` builds an application-like database of about N MB with 4 KiB pages:
a table keyed by a random UUID (so its implicit unique index is filled in random order) plus a
secondary index on a random-ish email column, and JSON-like row payloads that compress about as
well as real application data.

`mutate DB --gen G --ops-fraction F` applies one generation of writes: F × rows operations,
70 % updates (payload, balance, timestamp; one in ten also changes the indexed email),
15 % inserts of new random keys, 15 % deletes of random rows. Keys are random, so the touched
pages are scattered over the whole file: the normal case for a UUID-keyed table.

The database is closed with journal_mode=DELETE, so no -wal/-journal file is left beside it.
"""
import argparse
import os
import random
import sqlite3
import sys

PAGE_SIZE = 4096
BASE_TIME = 1_700_000_000
WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar "
    "papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu order invoice customer "
    "shipping billing pending active closed refund payment card bank transfer account premium basic "
    "trial monthly yearly europe america asia berlin paris london tokyo newyork madrid rome vienna"
).split()
STATUSES = ["active", "pending", "suspended", "closed", "trial"]
PLANS = ["basic", "premium", "enterprise", "trial"]


def uuid_text(rng):
    h = "%032x" % rng.getrandbits(128)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


def email(rng):
    return f"{rng.choice(WORDS)}.{rng.choice(WORDS)}{rng.randrange(10000)}@{rng.choice(WORDS)}.example"


def profile(rng):
    """A JSON-like document of 250–450 bytes: repetitive keys, varied values."""
    tags = ",".join(f'"{w}"' for w in rng.sample(WORDS, rng.randrange(2, 6)))
    note = " ".join(rng.choices(WORDS, k=rng.randrange(8, 30)))
    return (
        f'{{"name":"{rng.choice(WORDS).title()} {rng.choice(WORDS).title()}",'
        f'"plan":"{rng.choice(PLANS)}","city":"{rng.choice(WORDS)}","zip":"{rng.randrange(10000, 99999)}",'
        f'"phone":"+{rng.randrange(10**10, 10**11)}","score":{rng.random():.6f},'
        f'"visits":{rng.randrange(5000)},"tags":[{tags}],"note":"{note}",'
        f'"flags":{{"newsletter":{str(rng.random() < 0.5).lower()},"beta":{str(rng.random() < 0.1).lower()}}}}}'
    )


def new_row(rng, now):
    return (uuid_text(rng), rng.randrange(1, 200000), email(rng), rng.choice(STATUSES),
            rng.randrange(-10**6, 10**8), now, profile(rng))


def connect(path):
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA page_size={PAGE_SIZE}")
    db.execute("PRAGMA journal_mode=DELETE")
    db.execute("PRAGMA cache_size=-1000000")  # 1 GB: keep the whole file cached while writing
    return db


def close(db):
    db.execute("PRAGMA journal_mode=DELETE")
    db.close()


def file_mb(path):
    return os.path.getsize(path) / 1e6


def create(args):
    if os.path.exists(args.db):
        sys.exit(f"sqlite_gen: {args.db} already exists")
    rng = random.Random(args.seed)
    db = connect(args.db)
    db.execute("PRAGMA synchronous=OFF")
    db.execute(
        "CREATE TABLE accounts(id TEXT PRIMARY KEY, customer INTEGER NOT NULL, email TEXT NOT NULL,"
        " status TEXT NOT NULL, balance INTEGER NOT NULL, updated_at INTEGER NOT NULL, profile TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX accounts_email ON accounts(email)")
    rows = 0
    batch = 20000
    while file_mb(args.db) < args.size_mb:
        db.execute("BEGIN")
        db.executemany("INSERT INTO accounts VALUES (?,?,?,?,?,?,?)",
                       (new_row(rng, BASE_TIME + rows + i) for i in range(batch)))
        db.execute("COMMIT")
        rows += batch
    close(db)
    print(f"sqlite_gen: created {args.db}: {rows} rows, {file_mb(args.db):.1f} MB", file=sys.stderr)


def mutate(args):
    rng = random.Random(args.seed * 1000 + args.gen)
    db = connect(args.db)
    db.execute("PRAGMA synchronous=OFF")
    ids = [r[0] for r in db.execute("SELECT id FROM accounts")]
    ops = int(len(ids) * args.ops_fraction)
    now = BASE_TIME + 10**7 * args.gen
    updates = deletes = inserts = 0
    db.execute("BEGIN")
    for i in range(ops):
        r = rng.random()
        if r < 0.70:
            key = ids[rng.randrange(len(ids))]
            if rng.random() < 0.1:
                db.execute("UPDATE accounts SET email=?, updated_at=? WHERE id=?", (email(rng), now + i, key))
            else:
                db.execute("UPDATE accounts SET balance=?, status=?, updated_at=?, profile=? WHERE id=?",
                           (rng.randrange(-10**6, 10**8), rng.choice(STATUSES), now + i, profile(rng), key))
            updates += 1
        elif r < 0.85:
            row = new_row(rng, now + i)
            db.execute("INSERT INTO accounts VALUES (?,?,?,?,?,?,?)", row)
            ids.append(row[0])
            inserts += 1
        else:
            j = rng.randrange(len(ids))
            ids[j], ids[-1] = ids[-1], ids[j]
            db.execute("DELETE FROM accounts WHERE id=?", (ids.pop(),))
            deletes += 1
    db.execute("COMMIT")
    close(db)
    print(f"sqlite_gen: gen {args.gen}: {updates} updates, {inserts} inserts, {deletes} deletes; "
          f"{file_mb(args.db):.1f} MB", file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create")
    c.add_argument("db")
    c.add_argument("--size-mb", type=float, default=500)
    c.add_argument("--seed", type=int, default=1)
    m = sub.add_parser("mutate")
    m.add_argument("db")
    m.add_argument("--gen", type=int, required=True)
    m.add_argument("--ops-fraction", type=float, default=0.05)
    m.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    create(args) if args.cmd == "create" else mutate(args)


if __name__ == "__main__":
    main()
