#!/usr/bin/env python3
"""Deterministic series of CRIU-dump-like directories for the page-aligned chunking benchmark.

A generation directory holds what `criu dump` leaves for a two-process container:
pages-1.img (--size-mib of 4 KiB pages) and pages-2.img (1/16 of it), the pagemap-N.img files
that describe them, and a few small images (core, mm, pstree, files, fdinfo, inventory).

Page contents imitate process memory, in runs of pages of one kind as in real mappings:
zero pages, text-like pages (words, log lines, strings), struct-like pages (pointer-sized
fields, small integers, padding) and random pages (compressed or encrypted buffers).

Generation G > 1 is derived from generation G-1 (--prev): about --change-pct % of the pages
are rewritten at random (partly or wholly), and --insert-pages new pages are inserted near the
start of each pages image, so every later page moves by whole pages. The core and pagemap
images change with them.
"""
import argparse
import os
import random
import struct
import sys

PAGE = 4096
KINDS = ["zero", "text", "struct", "random"]
KIND_WEIGHTS = [25, 35, 30, 10]


class PageMaker:
    def __init__(self, rng):
        self.rng = rng
        syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "shi", "pe", "do", "va", "zen", "tor", "ix", "ul"]
        self.vocab = ["".join(rng.choices(syllables, k=rng.randrange(1, 5))) for _ in range(3000)]
        self.vocab += ["error", "warning", "info", "request", "GET", "POST", "/api/v1/items", "200", "404",
                       "user_id", "session", "null", "true", "false", "{", "}", "=", ":"]
        # Zipf-like weights: a few words are very common, as in real text.
        self.cum = []
        total = 0.0
        for i in range(len(self.vocab)):
            total += 1.0 / (i + 1)
            self.cum.append(total)
        self.heap_base = 0x5600_0000_0000 + (rng.getrandbits(28) << 12)
        self.mmap_base = 0x7F00_0000_0000 + (rng.getrandbits(28) << 12)

    def make(self, kind):
        rng = self.rng
        if kind == "zero":
            return bytes(PAGE)
        if kind == "random":
            return rng.randbytes(PAGE)
        if kind == "text":
            words = rng.choices(self.vocab, cum_weights=self.cum, k=800)
            text = " ".join(words).encode()
            return text[:PAGE].ljust(PAGE, b"\0")
        return self.struct_page()

    def struct_page(self):
        """64 records of 64 bytes: two pointers, a length, flags, a counter, a short name, padding."""
        rng = self.rng
        out = []
        name_words = self.vocab[:64]
        for _ in range(PAGE // 64):
            base = self.heap_base if rng.random() < 0.7 else self.mmap_base
            out.append(struct.pack(
                "<QQIIQ16s16s",
                base + (rng.getrandbits(20) << 4),
                base + (rng.getrandbits(20) << 4) if rng.random() < 0.6 else 0,
                rng.randrange(4096),
                rng.choice((0, 1, 3, 0x80, 0x81)),
                rng.randrange(1 << 16),
                rng.choice(name_words).encode()[:16],
                b"",
            ))
        return b"".join(out)

    def rewrite(self, page):
        """A changed page: usually a region rewritten in place, sometimes a whole new page."""
        rng = self.rng
        if page == bytes(PAGE) or rng.random() < 0.4:
            return self.make(rng.choices(KINDS[1:], weights=KIND_WEIGHTS[1:])[0])
        start = rng.randrange(0, PAGE - 256, 16)
        length = min(PAGE - start, rng.randrange(64, 1024, 16))
        fill = self.make(rng.choice(["text", "struct", "random"]))[:length]
        return page[:start] + fill + page[start + length:]


def write_first_pages(path, n_pages, maker, rng):
    """Runs of same-kind pages, like mappings in a real address space."""
    with open(path, "wb") as f:
        written = 0
        while written < n_pages:
            kind = rng.choices(KINDS, weights=KIND_WEIGHTS)[0]
            run = min(n_pages - written, int(rng.expovariate(1 / 24)) + 1)
            for _ in range(run):
                f.write(maker.make(kind))
            written += run
    return n_pages


def write_next_pages(src, dst, maker, rng, change_pct, insert_pages):
    """Copies src to dst page by page, rewriting change_pct % of pages and inserting pages near the start."""
    n_old = os.path.getsize(src) // PAGE
    changed = set(rng.sample(range(n_old), int(n_old * change_pct / 100)))
    head = max(1, n_old // 50)  # "near the start": the first 2 % of the image
    inserts = sorted(rng.randrange(head) for _ in range(insert_pages))
    ins_i = 0
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        for i in range(n_old):
            while ins_i < len(inserts) and inserts[ins_i] == i:
                fout.write(maker.make(rng.choices(KINDS[1:], weights=KIND_WEIGHTS[1:])[0]))
                ins_i += 1
            page = fin.read(PAGE)
            fout.write(maker.rewrite(page) if i in changed else page)
    return n_old + insert_pages


def pagemap(pid, n_pages, rng):
    """Magic, then one (vaddr, nr_pages, flags) entry per mapping, covering n_pages in total."""
    entries = []
    left = n_pages
    vaddr = 0x5600_0000_0000 + pid * 0x10_0000_0000
    while left > 0:
        nr = min(left, rng.randrange(1, 2048))
        entries.append(struct.pack("<QII", vaddr, nr, 1))
        vaddr += (nr + rng.randrange(0, 64)) * PAGE
        left -= nr
    return struct.pack("<II", 0x54564319, 0x56213975) + b"".join(entries)


def small_image(rng, size, magic):
    """Struct-like bytes standing for a protobuf image (registers, mm, fd tables...)."""
    body = bytearray()
    while len(body) < size:
        body += struct.pack("<QI", rng.getrandbits(47), rng.randrange(1 << 12)) + rng.choice(
            [b"\0" * 4, b"/usr/bin/app", b"sigmask", b"rlimit", b"/dev/null", b"socket:[1234]"])
    return struct.pack("<II", 0x54564319, magic) + bytes(body[:size])


def generate(args):
    os.makedirs(args.out, exist_ok=True)
    rng = random.Random(args.seed * 1000 + args.gen)
    maker = PageMaker(random.Random(args.seed))  # same vocabulary and address bases every generation
    maker.rng = rng
    sizes = {1: args.size_mib * 256, 2: max(1, args.size_mib * 16)}
    for pid, n in sizes.items():
        name = f"pages-{pid}.img"
        if args.gen == 1:
            n_pages = write_first_pages(os.path.join(args.out, name), n, maker, rng)
        else:
            n_pages = write_next_pages(os.path.join(args.prev, name), os.path.join(args.out, name),
                                       maker, rng, args.change_pct, args.insert_pages)
        # The layout of the mappings is stable across generations: seed it by pid only.
        with open(os.path.join(args.out, f"pagemap-{pid}.img"), "wb") as f:
            f.write(pagemap(pid, n_pages, random.Random(args.seed * 7 + pid)))
        # core: registers and timers change every generation; mm: stable.
        with open(os.path.join(args.out, f"core-{pid}.img"), "wb") as f:
            f.write(small_image(random.Random(args.seed * 11 + pid), 3000, 0x55053847))
            f.write(small_image(rng, 600, 0x55053847))
        with open(os.path.join(args.out, f"mm-{pid}.img"), "wb") as f:
            f.write(small_image(random.Random(args.seed * 13 + pid), 2500, 0x57093306))
    stable = random.Random(args.seed * 17)
    for name, size, magic in [("inventory.img", 60, 0x58313116), ("pstree.img", 120, 0x50273030),
                              ("files.img", 1800, 0x56303138), ("fdinfo-2.img", 400, 0x56213975)]:
        with open(os.path.join(args.out, name), "wb") as f:
            f.write(small_image(stable, size, magic))
    print(f"criu_gen: gen {args.gen} written to {args.out}", file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="directory to write (created)")
    p.add_argument("--gen", type=int, required=True)
    p.add_argument("--prev", help="previous generation's directory (required for --gen > 1)")
    p.add_argument("--size-mib", type=int, default=256, help="size of pages-1.img in MiB")
    p.add_argument("--change-pct", type=float, default=3.0)
    p.add_argument("--insert-pages", type=int, default=4, help="pages inserted near the start per image")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    if args.gen > 1 and not args.prev:
        p.error("--prev is required for --gen > 1")
    if os.path.exists(args.out) and os.listdir(args.out):
        p.error(f"{args.out} is not empty")
    generate(args)


if __name__ == "__main__":
    main()
