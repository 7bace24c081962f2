//! Deterministic test data for the benchmarks: tar archives resembling an exported Debian root
//! file system, and "package upgrade" generations derived from any tar archive.
//!
//! Everything is a pure function of a seed, so two runs (and two machines) measure the same
//! bytes. Content is produced on the fly while writing, so memory stays bounded by the largest
//! single file (capped at 64 MiB).
//!
//! Content kinds, chosen to compress with zstd-3 about like their real counterparts:
//! * text (docs, scripts, configs): words from a generated vocabulary, picked with a skewed
//!   (Zipf-like) frequency and a preferred-successor table, laid out as prose, config or code;
//! * ELF-like binaries: instruction-like byte snippets from a per-file dictionary, string tables,
//!   relocation tables, padding and some incompressible sections;
//! * already-compressed files (.gz, .png, .xz): a magic number followed by random bytes.

// Each bench target compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

/// wyrand: small, fast and good enough for test data.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut r = Rng(seed ^ 0x9E37_79B9_7F4A_7C15);
        r.next_u64();
        r
    }

    /// An independent stream for `(seed, label)`.
    pub fn derive(seed: u64, label: u64) -> Rng {
        Rng::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ label.rotate_left(29))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0).wrapping_mul(u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db));
        ((t >> 64) ^ t) as u64
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-300);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    pub fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    /// Index in `0..n`, small indices far more likely (density ~ x^-3/4).
    pub fn skewed(&mut self, n: usize) -> usize {
        let u = self.unit();
        let u2 = u * u;
        ((u2 * u2 * n as f64) as usize).min(n - 1)
    }

    /// Like `skewed`, steeper (density ~ x^-5/6), closer to word frequencies in text.
    pub fn zipf_like(&mut self, n: usize) -> usize {
        let u = self.unit();
        let u3 = u * u * u;
        ((u3 * u3 * n as f64) as usize).min(n - 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&last[..n]);
    }
}

/// A 64-bit label for a byte string (file paths), stable across runs.
pub fn label(bytes: &[u8]) -> u64 {
    let h = blake3::hash(bytes);
    u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap_or([0; 8]))
}

const VOCABULARY_WORDS: usize = 6000;
const FOLLOWERS: usize = 8;

/// Pseudo-words with a successor table, so text has both word- and phrase-level repetition.
pub struct Vocabulary {
    bytes: Vec<u8>,
    ends: Vec<u32>,
    followers: Vec<[u16; FOLLOWERS]>,
}

impl Vocabulary {
    pub fn new(seed: u64) -> Vocabulary {
        const ONSETS: &[&str] = &[
            "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
            "st", "tr", "pr", "ch", "sh", "th", "gr", "fl", "br", "cl", "sp", "",
        ];
        const NUCLEI: &[&str] = &["a", "e", "i", "o", "u", "ea", "ou", "io", "y"];
        const CODAS: &[&str] = &["", "", "", "n", "r", "s", "t", "l", "nd", "ng", "ck", "x"];
        let mut rng = Rng::derive(seed, 0x76_6f63_6162);
        let mut bytes = Vec::new();
        let mut ends = Vec::with_capacity(VOCABULARY_WORDS);
        for i in 0..VOCABULARY_WORDS {
            // Frequent words (small indices) are short, as in natural language.
            let syllables = 1 + (i * 3 / VOCABULARY_WORDS) + rng.below(2) as usize;
            for _ in 0..syllables {
                bytes.extend_from_slice(ONSETS[rng.below(ONSETS.len() as u64) as usize].as_bytes());
                bytes.extend_from_slice(NUCLEI[rng.below(NUCLEI.len() as u64) as usize].as_bytes());
                bytes.extend_from_slice(CODAS[rng.below(CODAS.len() as u64) as usize].as_bytes());
            }
            ends.push(bytes.len() as u32);
        }
        let followers = (0..VOCABULARY_WORDS)
            .map(|_| {
                let mut f = [0u16; FOLLOWERS];
                for slot in &mut f {
                    *slot = rng.zipf_like(VOCABULARY_WORDS) as u16;
                }
                f
            })
            .collect();
        Vocabulary {
            bytes,
            ends,
            followers,
        }
    }

    pub fn word(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.bytes[start..self.ends[i] as usize]
    }

    fn next(&self, rng: &mut Rng, prev: usize) -> usize {
        if rng.chance(0.65) {
            self.followers[prev][rng.skewed(FOLLOWERS)] as usize
        } else {
            rng.zipf_like(VOCABULARY_WORDS)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextStyle {
    Prose,
    Config,
    Code,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text(TextStyle),
    Binary,
    Compressed(&'static [u8]),
}

pub const GZIP_MAGIC: &[u8] = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03";
pub const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR";
pub const XZ_MAGIC: &[u8] = b"\xfd7zXZ\x00\x00\x04\xe6\xd6\xb4\x46";

/// Appends exactly `len` bytes of `kind` content to `out`.
pub fn generate(kind: Kind, rng: &mut Rng, vocab: &Vocabulary, len: usize, out: &mut Vec<u8>) {
    let start = out.len();
    match kind {
        Kind::Text(style) => text(style, rng, vocab, start + len, out),
        Kind::Binary => binary(rng, vocab, start + len, out),
        Kind::Compressed(magic) => {
            out.extend_from_slice(&magic[..magic.len().min(len)]);
            let filled = out.len();
            out.resize(start + len, 0);
            rng.fill(&mut out[filled..]);
        }
    }
    out.truncate(start + len);
}

fn push_words(
    rng: &mut Rng,
    vocab: &Vocabulary,
    prev: &mut usize,
    n: u64,
    sep: u8,
    out: &mut Vec<u8>,
) {
    for j in 0..n {
        if j > 0 {
            out.push(sep);
        }
        *prev = vocab.next(rng, *prev);
        out.extend_from_slice(vocab.word(*prev));
    }
}

fn push_number(rng: &mut Rng, out: &mut Vec<u8>) {
    let _ = write!(out, "{}", rng.zipf_like(10_000));
}

fn text(style: TextStyle, rng: &mut Rng, vocab: &Vocabulary, end: usize, out: &mut Vec<u8>) {
    let mut prev = rng.skewed(VOCABULARY_WORDS);
    while out.len() < end {
        match style {
            TextStyle::Prose => {
                let n = rng.range(5, 14);
                push_words(rng, vocab, &mut prev, n, b' ', out);
                out.extend_from_slice(if rng.chance(0.1) { b".\n\n" } else { b".\n" });
            }
            TextStyle::Config => {
                if rng.chance(0.35) {
                    out.extend_from_slice(b"# ");
                    let n = rng.range(3, 10);
                    push_words(rng, vocab, &mut prev, n, b' ', out);
                } else {
                    let n = rng.range(1, 3);
                    push_words(rng, vocab, &mut prev, n, b'_', out);
                    out.extend_from_slice(b" = ");
                    if rng.chance(0.4) {
                        push_number(rng, out);
                    } else {
                        let n = rng.range(1, 3);
                        push_words(rng, vocab, &mut prev, n, b'/', out);
                    }
                }
                out.push(b'\n');
            }
            TextStyle::Code => {
                let depth = rng.skewed(4);
                out.extend(std::iter::repeat_n(b' ', depth * 4));
                match rng.below(5) {
                    0 => {
                        out.extend_from_slice(b"def ");
                        push_words(rng, vocab, &mut prev, 2, b'_', out);
                        out.push(b'(');
                        let n = rng.range(1, 3);
                        push_words(rng, vocab, &mut prev, n, b',', out);
                        out.extend_from_slice(b"):");
                    }
                    1 => {
                        out.extend_from_slice(b"return self.");
                        push_words(rng, vocab, &mut prev, 1, b'_', out);
                        out.push(b'(');
                        push_number(rng, out);
                        out.push(b')');
                    }
                    2 => {
                        push_words(rng, vocab, &mut prev, 1, b'_', out);
                        out.extend_from_slice(b" = ");
                        let n = rng.range(1, 3);
                        push_words(rng, vocab, &mut prev, n, b'.', out);
                        out.extend_from_slice(b"()");
                    }
                    3 => {
                        out.extend_from_slice(b"# ");
                        let n = rng.range(3, 10);
                        push_words(rng, vocab, &mut prev, n, b' ', out);
                    }
                    _ => {
                        out.extend_from_slice(b"if ");
                        push_words(rng, vocab, &mut prev, 1, b'_', out);
                        out.extend_from_slice(b" is not None:");
                    }
                }
                out.push(b'\n');
            }
        }
    }
}

const SNIPPETS: usize = 384;

/// An ELF-like binary: header, then a mix of sections whose proportions and content were tuned
/// so that zstd -3 shrinks the whole to about half.
fn binary(rng: &mut Rng, vocab: &Vocabulary, end: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(
        b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\x00\x3e\x00\x01\x00\x00\x00",
    );
    // Instruction-like snippets: a per-binary "code style", reused with a skewed frequency.
    let mut snippets = vec![0u8; SNIPPETS * 8];
    rng.fill(&mut snippets);
    let mut prev = 0usize;
    let mut reloc_addr = rng.next_u64() & 0xffff_f000;
    while out.len() < end {
        let section_end = (out.len() + rng.range(1024, 24 * 1024) as usize).min(end);
        let which = rng.below(100);
        while out.len() < section_end {
            match which {
                0..=54 => {
                    let i = rng.skewed(SNIPPETS);
                    let len = 2 + (i % 6);
                    out.extend_from_slice(&snippets[i * 8..i * 8 + len]);
                    if rng.chance(0.12) {
                        out.extend_from_slice(&(rng.next_u64() as u32).to_le_bytes());
                    }
                }
                55..=71 => {
                    let n = rng.range(1, 6);
                    push_words(rng, vocab, &mut prev, n, b'_', out);
                    out.push(0);
                }
                72..=86 => {
                    reloc_addr += 8 * rng.range(1, 4);
                    out.extend_from_slice(&reloc_addr.to_le_bytes());
                    out.extend_from_slice(&((rng.below(2000) << 32) | 8).to_le_bytes());
                    out.extend_from_slice(&rng.below(1 << 20).to_le_bytes());
                }
                87..=94 => out.resize(section_end, 0),
                _ => {
                    let from = out.len();
                    out.resize(section_end, 0);
                    rng.fill(&mut out[from..]);
                }
            }
        }
    }
}

/// Guesses how to generate more content like a file's, from its name and first bytes.
pub fn guess_kind(path: &[u8], head: &[u8]) -> Kind {
    let ends = |s: &[u8]| path.ends_with(s);
    if head.starts_with(b"\x7fELF") {
        Kind::Binary
    } else if head.starts_with(&GZIP_MAGIC[..2]) || ends(b".gz") {
        Kind::Compressed(GZIP_MAGIC)
    } else if head.starts_with(&PNG_MAGIC[..4]) || ends(b".png") {
        Kind::Compressed(PNG_MAGIC)
    } else if head.starts_with(&XZ_MAGIC[..6]) || ends(b".xz") || ends(b".zst") {
        Kind::Compressed(XZ_MAGIC)
    } else if ends(b".py") || ends(b".pl") || ends(b".sh") || ends(b".js") {
        Kind::Text(TextStyle::Code)
    } else if ends(b".conf") || ends(b".cfg") || ends(b".ini") {
        Kind::Text(TextStyle::Config)
    } else {
        Kind::Text(TextStyle::Prose)
    }
}

#[derive(Clone, Debug)]
struct FileSpec {
    kind: Kind,
    size: u64,
    seed: u64,
    mode: u32,
    mtime: u64,
}

#[derive(Clone, Debug)]
enum Node {
    Dir,
    File(FileSpec),
    Symlink(String),
}

/// What a generated archive holds.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct RootfsSummary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub text_bytes: u64,
    pub binary_bytes: u64,
    pub compressed_bytes: u64,
    pub archive_bytes: u64,
}

/// The file list of a root file system of about `target` archive bytes (content comes later).
pub struct RootfsPlan {
    nodes: BTreeMap<String, Node>,
    seed: u64,
}

const BASE_MTIME: u64 = 1_700_000_000;
/// Per-member tar overhead assumed when sizing the plan (header plus half a block of padding).
const TAR_OVERHEAD: u64 = 768;
/// Licence texts shared by many packages, as /usr/share/common-licenses makes them in Debian.
const SHARED_LICENCES: u64 = 6;
const MAX_FILE: f64 = 48.0 * 1024.0 * 1024.0;

impl RootfsPlan {
    pub fn new(seed: u64, target: u64) -> RootfsPlan {
        let mut plan = RootfsPlan {
            nodes: BTreeMap::new(),
            seed,
        };
        let vocab = Vocabulary::new(seed);
        let mut rng = Rng::derive(seed, 0x706c_616e);
        let mut total = 0u64;
        let mut package = 0u64;
        while total < target {
            total += plan.add_package(&mut rng, &vocab, package);
            package += 1;
        }
        plan
    }

    fn add(&mut self, path: String, node: Node) -> u64 {
        let mut overhead = TAR_OVERHEAD;
        let mut dir = path.as_str();
        while let Some(i) = dir.rfind('/') {
            dir = &dir[..i];
            if self.nodes.insert(dir.to_string(), Node::Dir).is_none() {
                overhead += TAR_OVERHEAD;
            }
        }
        let size = match &node {
            Node::File(f) => f.size,
            _ => 0,
        };
        if self.nodes.insert(path, node).is_none() {
            size + overhead
        } else {
            0
        }
    }

    fn file(
        &mut self,
        rng: &mut Rng,
        path: String,
        kind: Kind,
        median: f64,
        sigma: f64,
        mode: u32,
    ) -> u64 {
        let size = rng.lognormal(median, sigma).clamp(64.0, MAX_FILE) as u64;
        let spec = FileSpec {
            kind,
            size,
            seed: rng.next_u64(),
            mode,
            mtime: BASE_MTIME + rng.below(30_000_000),
        };
        self.add(path, Node::File(spec))
    }

    fn name(rng: &mut Rng, vocab: &Vocabulary) -> String {
        let w = vocab.word(rng.skewed(VOCABULARY_WORDS));
        let w2 = vocab.word(rng.below(VOCABULARY_WORDS as u64) as usize);
        format!(
            "{}{}",
            String::from_utf8_lossy(w),
            String::from_utf8_lossy(w2)
        )
    }

    /// Adds one package's files; returns the archive bytes they add.
    fn add_package(&mut self, rng: &mut Rng, vocab: &Vocabulary, n: u64) -> u64 {
        let pkg = format!("{}{}", Self::name(rng, vocab), n);
        let mut added = 0;
        let doc = format!("usr/share/doc/{pkg}");
        if rng.chance(0.35) {
            // One of the common licence texts: identical bytes across packages.
            let which = rng.below(SHARED_LICENCES);
            let mut shared = Rng::derive(self.seed, 0x6c_6963_656e_6365 + which);
            let size = shared.lognormal(12_000.0, 0.4) as u64;
            let spec = FileSpec {
                kind: Kind::Text(TextStyle::Prose),
                size,
                seed: shared.next_u64(),
                mode: 0o644,
                mtime: BASE_MTIME,
            };
            added += self.add(format!("{doc}/copyright"), Node::File(spec));
        } else {
            added += self.file(
                rng,
                format!("{doc}/copyright"),
                Kind::Text(TextStyle::Prose),
                4000.0,
                0.7,
                0o644,
            );
        }
        added += self.file(
            rng,
            format!("{doc}/changelog.Debian.gz"),
            Kind::Compressed(GZIP_MAGIC),
            1500.0,
            1.0,
            0o644,
        );
        for doc_name in ["NEWS.gz", "README.gz", "changelog.gz"]
            .iter()
            .take(rng.below(4) as usize)
        {
            added += self.file(
                rng,
                format!("{doc}/{doc_name}"),
                Kind::Compressed(GZIP_MAGIC),
                6000.0,
                1.2,
                0o644,
            );
        }
        for _ in 0..rng.skewed(4) {
            let name = Self::name(rng, vocab);
            added += self.file(
                rng,
                format!("usr/bin/{name}"),
                Kind::Binary,
                45_000.0,
                1.4,
                0o755,
            );
            if rng.chance(0.7) {
                let section = rng.range(1, 8);
                let path = format!("usr/share/man/man{section}/{name}.{section}.gz");
                added += self.file(rng, path, Kind::Compressed(GZIP_MAGIC), 2500.0, 0.9, 0o644);
            }
        }
        if rng.chance(0.3) {
            for i in 0..rng.range(1, 2) {
                let (major, minor) = (rng.range(0, 9), rng.range(0, 30));
                let soname = format!("lib{pkg}{i}.so.{major}");
                let real = format!("{soname}.{minor}.0");
                let dir = "usr/lib/x86_64-linux-gnu";
                added += self.file(
                    rng,
                    format!("{dir}/{real}"),
                    Kind::Binary,
                    110_000.0,
                    1.4,
                    0o644,
                );
                added += self.add(format!("{dir}/{soname}"), Node::Symlink(real));
            }
        }
        let data_files = rng.skewed(90);
        let (root, ext, style) = match rng.below(4) {
            0 => (
                format!("usr/lib/python3/dist-packages/{pkg}"),
                "py",
                TextStyle::Code,
            ),
            1 => (format!("usr/share/perl5/{pkg}"), "pm", TextStyle::Code),
            _ => (format!("usr/share/{pkg}"), "txt", TextStyle::Prose),
        };
        for _ in 0..data_files {
            let mut dir = root.clone();
            if rng.chance(0.3) {
                dir = format!("{dir}/{}", Self::name(rng, vocab));
            }
            let path = format!("{dir}/{}.{ext}", Self::name(rng, vocab));
            added += self.file(rng, path, Kind::Text(style), 3500.0, 1.2, 0o644);
        }
        if rng.chance(0.3) {
            for _ in 0..rng.range(1, 3) {
                let path = format!("etc/{pkg}/{}.conf", Self::name(rng, vocab));
                added += self.file(rng, path, Kind::Text(TextStyle::Config), 1500.0, 1.0, 0o644);
            }
        }
        if rng.chance(0.1) {
            for _ in 0..rng.range(2, 12) {
                let path = format!(
                    "usr/share/icons/hicolor/48x48/apps/{}.png",
                    Self::name(rng, vocab)
                );
                added += self.file(rng, path, Kind::Compressed(PNG_MAGIC), 3000.0, 1.0, 0o644);
            }
        }
        if rng.chance(0.2) {
            for lang in ["de", "fr", "ja", "pt_BR"]
                .iter()
                .take(rng.range(1, 4) as usize)
            {
                let path = format!("usr/share/locale/{lang}/LC_MESSAGES/{pkg}.mo");
                added += self.file(rng, path, Kind::Text(TextStyle::Prose), 9000.0, 1.0, 0o644);
            }
        }
        if rng.chance(0.06) {
            let path = format!("usr/share/{pkg}/{}.dat.xz", Self::name(rng, vocab));
            added += self.file(rng, path, Kind::Compressed(XZ_MAGIC), 900_000.0, 1.0, 0o644);
        }
        added
    }

    /// Writes the archive; returns what it holds.
    pub fn write_tar<W: Write>(&self, out: W) -> io::Result<RootfsSummary> {
        let vocab = Vocabulary::new(self.seed);
        let mut counting = CountingWriter {
            inner: out,
            count: 0,
        };
        let mut summary = RootfsSummary::default();
        let mut content = Vec::new();
        {
            let mut builder = tar::Builder::new(&mut counting);
            for (path, node) in &self.nodes {
                let mut header = tar::Header::new_gnu();
                header.set_uid(0);
                header.set_gid(0);
                header.set_username("root")?;
                header.set_groupname("root")?;
                match node {
                    Node::Dir => {
                        header.set_entry_type(tar::EntryType::Directory);
                        header.set_mode(0o755);
                        header.set_mtime(BASE_MTIME);
                        header.set_size(0);
                        builder.append_data(&mut header, format!("{path}/"), io::empty())?;
                        summary.dirs += 1;
                    }
                    Node::Symlink(target) => {
                        header.set_entry_type(tar::EntryType::Symlink);
                        header.set_mode(0o777);
                        header.set_mtime(BASE_MTIME);
                        header.set_size(0);
                        builder.append_link(&mut header, path, target)?;
                        summary.symlinks += 1;
                    }
                    Node::File(f) => {
                        content.clear();
                        let mut rng = Rng::new(f.seed);
                        generate(f.kind, &mut rng, &vocab, f.size as usize, &mut content);
                        header.set_entry_type(tar::EntryType::Regular);
                        header.set_mode(f.mode);
                        header.set_mtime(f.mtime);
                        header.set_size(f.size);
                        builder.append_data(&mut header, path, content.as_slice())?;
                        summary.files += 1;
                        match f.kind {
                            Kind::Text(_) => summary.text_bytes += f.size,
                            Kind::Binary => summary.binary_bytes += f.size,
                            Kind::Compressed(_) => summary.compressed_bytes += f.size,
                        }
                    }
                }
            }
            builder.finish()?;
        }
        counting.flush()?;
        summary.archive_bytes = counting.count;
        Ok(summary)
    }
}

/// Counts bytes on their way to `inner`.
pub struct CountingWriter<W> {
    pub inner: W,
    pub count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A generated root file system archive held in memory (for the micro benchmarks).
pub fn rootfs_tar_in_memory(seed: u64, target: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(target as usize + (4 << 20));
    // Writing into a Vec cannot fail.
    let _ = RootfsPlan::new(seed, target).write_tar(&mut out);
    out
}

/// How often each kind of change happens to a regular file in one generation.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct ChangeRates {
    /// Whole file replaced by new content of the same kind and similar size (an upgraded binary).
    pub replace: f64,
    /// A few spans overwritten in place (an edited config, a patched table).
    pub modify: f64,
    /// Bytes appended (a changelog, a log).
    pub append: f64,
    pub remove: f64,
    /// A new file inserted after this one, in the same directory (a new file of a package).
    pub insert_after: f64,
}

impl Default for ChangeRates {
    fn default() -> Self {
        ChangeRates {
            replace: 0.010,
            modify: 0.010,
            append: 0.005,
            remove: 0.003,
            insert_after: 0.003,
        }
    }
}

/// What one generation changed.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ChangeSummary {
    pub files: u64,
    pub replaced: u64,
    pub modified: u64,
    pub appended: u64,
    pub removed: u64,
    pub inserted: u64,
    /// New content bytes: replaced and inserted files whole, overwritten spans, appended bytes.
    pub changed_bytes: u64,
    pub archive_bytes: u64,
}

/// Files larger than this are never replaced whole (they are modified in place instead), which
/// bounds memory when the input is a real archive with huge members.
const MAX_REPLACE: u64 = 64 << 20;
const BLOCK: u64 = 512;
const COPY_BUF: usize = 1 << 20;

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK) * BLOCK
}

/// Reads `input` (any tar archive) and writes the next generation to `out`: members are copied
/// byte for byte unless chosen for a change, so unchanged members keep their exact bytes, as
/// they would in the next export of an upgraded system.
pub fn next_generation<R: Read, W: Write>(
    input: R,
    out: W,
    seed: u64,
    generation: u32,
    rates: &ChangeRates,
) -> io::Result<ChangeSummary> {
    let vocab = Vocabulary::new(seed);
    let mut m = Mutator {
        input,
        out: CountingWriter {
            inner: io::BufWriter::with_capacity(COPY_BUF, out),
            count: 0,
        },
        vocab,
        seed,
        generation,
        rates: *rates,
        summary: ChangeSummary::default(),
        buf: vec![0u8; COPY_BUF],
    };
    m.run()?;
    m.out.write_all(&[0u8; 1024])?;
    m.out.flush()?;
    m.summary.archive_bytes = m.out.count;
    Ok(m.summary)
}

struct Member {
    /// Extension headers (GNU long name/link, PAX) with their data, verbatim.
    prefix: Vec<u8>,
    header: tar::Header,
    path: Vec<u8>,
    size: u64,
    /// A PAX record overrides the size: such members are copied, never changed.
    pax_size: bool,
}

struct Mutator<R, W: Write> {
    input: R,
    out: CountingWriter<io::BufWriter<W>>,
    vocab: Vocabulary,
    seed: u64,
    generation: u32,
    rates: ChangeRates,
    summary: ChangeSummary,
    buf: Vec<u8>,
}

impl<R: Read, W: Write> Mutator<R, W> {
    fn run(&mut self) -> io::Result<()> {
        while let Some(member) = self.next_member()? {
            let regular = member.header.entry_type().is_file() && !member.pax_size;
            if !regular {
                self.copy_member(&member)?;
                continue;
            }
            self.summary.files += 1;
            let mut rng = Rng::derive(
                self.seed ^ (u64::from(self.generation) << 48),
                label(&member.path),
            );
            let u = rng.unit();
            let r = self.rates;
            if u < r.replace {
                self.replace(&member, &mut rng)?;
            } else if u < r.replace + r.modify {
                self.modify(&member, &mut rng)?;
            } else if u < r.replace + r.modify + r.append {
                self.append(&member, &mut rng)?;
            } else if u < r.replace + r.modify + r.append + r.remove {
                self.skip_data(member.size)?;
                self.summary.removed += 1;
            } else {
                self.copy_member(&member)?;
            }
            if rng.chance(r.insert_after) {
                self.insert_after(&member, &mut rng)?;
            }
        }
        Ok(())
    }

    /// Reads one member's headers; `None` at the end-of-archive marker or end of input.
    fn next_member(&mut self) -> io::Result<Option<Member>> {
        let mut prefix = Vec::new();
        let mut long_path: Option<Vec<u8>> = None;
        let mut pax_size = false;
        loop {
            let mut block = [0u8; BLOCK as usize];
            if !read_block(&mut self.input, &mut block)? || block.iter().all(|&b| b == 0) {
                return Ok(None);
            }
            let header = tar::Header::from_byte_slice(&block).clone();
            let ty = header.entry_type();
            let size = header.entry_size()?;
            if ty.is_gnu_longname()
                || ty.is_gnu_longlink()
                || ty.is_pax_local_extensions()
                || ty.is_pax_global_extensions()
            {
                let mut data = vec![0u8; padded(size) as usize];
                self.input.read_exact(&mut data)?;
                let body = &data[..size as usize];
                if ty.is_gnu_longname() {
                    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
                    long_path = Some(body[..end].to_vec());
                } else if ty.is_pax_local_extensions() {
                    for (key, value) in pax_records(body) {
                        match key {
                            b"path" => long_path = Some(value.to_vec()),
                            b"size" => pax_size = true,
                            _ => {}
                        }
                    }
                }
                prefix.extend_from_slice(&block);
                prefix.extend_from_slice(&data);
                continue;
            }
            let path = long_path.unwrap_or_else(|| header.path_bytes().into_owned());
            let size = if pax_size {
                pax_size_of(&prefix).unwrap_or(size)
            } else {
                size
            };
            return Ok(Some(Member {
                prefix,
                header,
                path,
                size,
                pax_size,
            }));
        }
    }

    fn copy_member(&mut self, m: &Member) -> io::Result<()> {
        self.out.write_all(&m.prefix)?;
        self.out.write_all(m.header.as_bytes())?;
        self.copy_data(padded(m.size), &[])
    }

    /// Copies `len` bytes from input to output, overwriting the `patches` (sorted offset, bytes).
    fn copy_data(&mut self, len: u64, patches: &[(u64, Vec<u8>)]) -> io::Result<()> {
        let mut pos = 0u64;
        while pos < len {
            let n = (len - pos).min(self.buf.len() as u64) as usize;
            self.input.read_exact(&mut self.buf[..n])?;
            for (at, bytes) in patches {
                let (from, to) = (*at, at + bytes.len() as u64);
                let (lo, hi) = (from.max(pos), to.min(pos + n as u64));
                if lo < hi {
                    let src = &bytes[(lo - from) as usize..(hi - from) as usize];
                    self.buf[(lo - pos) as usize..(hi - pos) as usize].copy_from_slice(src);
                }
            }
            self.out.write_all(&self.buf[..n])?;
            pos += n as u64;
        }
        Ok(())
    }

    fn skip_data(&mut self, size: u64) -> io::Result<()> {
        let len = padded(size);
        let copied = io::copy(&mut (&mut self.input).take(len), &mut io::sink())?;
        if copied != len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    fn write_changed_header(&mut self, m: &Member, size: u64) -> io::Result<()> {
        let mut header = m.header.clone();
        header.set_size(size);
        header.set_mtime(BASE_MTIME + 40_000_000 + u64::from(self.generation) * 86_400);
        header.set_cksum();
        self.out.write_all(&m.prefix)?;
        self.out.write_all(header.as_bytes())
    }

    fn write_content(&mut self, content: &[u8]) -> io::Result<()> {
        self.out.write_all(content)?;
        let pad = padded(content.len() as u64) - content.len() as u64;
        self.out.write_all(&[0u8; BLOCK as usize][..pad as usize])
    }

    /// Reads the first bytes of the member's data (for sniffing), then the rest is the caller's.
    fn read_head(&mut self, size: u64) -> io::Result<Vec<u8>> {
        let mut head = vec![0u8; size.min(64) as usize];
        self.input.read_exact(&mut head)?;
        Ok(head)
    }

    fn replace(&mut self, m: &Member, rng: &mut Rng) -> io::Result<()> {
        if m.size > MAX_REPLACE || m.size == 0 {
            return self.modify(m, rng);
        }
        let head = self.read_head(m.size)?;
        self.skip_data_after_head(m.size, head.len() as u64)?;
        let kind = guess_kind(&m.path, &head);
        let size = (m.size as f64 * rng.lognormal(1.0, 0.15)).max(64.0) as usize;
        let mut content = Vec::with_capacity(size);
        generate(kind, rng, &self.vocab, size, &mut content);
        self.write_changed_header(m, size as u64)?;
        self.write_content(&content)?;
        self.summary.replaced += 1;
        self.summary.changed_bytes += size as u64;
        Ok(())
    }

    fn skip_data_after_head(&mut self, size: u64, head: u64) -> io::Result<()> {
        let rest = padded(size) - head;
        let copied = io::copy(&mut (&mut self.input).take(rest), &mut io::sink())?;
        if copied != rest {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    fn modify(&mut self, m: &Member, rng: &mut Rng) -> io::Result<()> {
        if m.size == 0 {
            return self.copy_member(m);
        }
        let kind = guess_kind(&m.path, b"");
        let mut patches: Vec<(u64, Vec<u8>)> = Vec::new();
        for _ in 0..rng.range(1, 4) {
            let len = rng.range(16, 4096).min(m.size);
            let at = rng.below(m.size - len + 1);
            let mut bytes = Vec::with_capacity(len as usize);
            generate(kind, rng, &self.vocab, len as usize, &mut bytes);
            patches.push((at, bytes));
        }
        patches.sort_by_key(|p| p.0);
        self.summary.changed_bytes += patches.iter().map(|p| p.1.len() as u64).sum::<u64>();
        self.write_changed_header(m, m.size)?;
        self.copy_data(padded(m.size), &patches)?;
        self.summary.modified += 1;
        Ok(())
    }

    fn append(&mut self, m: &Member, rng: &mut Rng) -> io::Result<()> {
        let extra_len = rng.range(256, 16 * 1024);
        let mut extra = Vec::with_capacity(extra_len as usize);
        generate(
            Kind::Text(TextStyle::Prose),
            rng,
            &self.vocab,
            extra_len as usize,
            &mut extra,
        );
        self.write_changed_header(m, m.size + extra_len)?;
        // Old content without its padding, then the new bytes, then new padding.
        self.copy_data(m.size, &[])?;
        self.skip_padding(m.size)?;
        let tail_len = padded(m.size + extra_len) - m.size - extra_len;
        self.out.write_all(&extra)?;
        self.out
            .write_all(&[0u8; BLOCK as usize][..tail_len as usize])?;
        self.summary.appended += 1;
        self.summary.changed_bytes += extra_len;
        Ok(())
    }

    fn skip_padding(&mut self, size: u64) -> io::Result<()> {
        let pad = padded(size) - size;
        let mut scratch = [0u8; BLOCK as usize];
        self.input.read_exact(&mut scratch[..pad as usize])
    }

    fn insert_after(&mut self, m: &Member, rng: &mut Rng) -> io::Result<()> {
        let path = String::from_utf8_lossy(&m.path).into_owned();
        let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let name = format!(
            "{}-{}.{}",
            RootfsPlan::name(rng, &self.vocab),
            self.generation,
            rng.below(1000)
        );
        let new_path = if dir.is_empty() {
            name
        } else {
            format!("{dir}/{name}")
        };
        let kind = guess_kind(&m.path, b"");
        let kind = if kind == Kind::Binary {
            Kind::Text(TextStyle::Prose)
        } else {
            kind
        };
        let mut header = tar::Header::new_gnu();
        if header.set_path(&new_path).is_err() {
            return Ok(()); // too long for a plain header; not worth a GNU long-name member
        }
        let size = rng.lognormal(4000.0, 1.2).clamp(64.0, MAX_FILE) as usize;
        let mut content = Vec::with_capacity(size);
        generate(kind, rng, &self.vocab, size, &mut content);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(size as u64);
        header.set_mtime(BASE_MTIME + 40_000_000 + u64::from(self.generation) * 86_400);
        header.set_cksum();
        self.out.write_all(header.as_bytes())?;
        self.write_content(&content)?;
        self.summary.inserted += 1;
        self.summary.changed_bytes += size as u64;
        Ok(())
    }
}

/// Reads a whole block; `false` at a clean end of input.
fn read_block<R: Read>(r: &mut R, block: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < block.len() {
        match r.read(&mut block[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// `(key, value)` pairs of a PAX extended header body ("LEN key=value\n" records).
fn pax_records(mut body: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut out = Vec::new();
    while let Some(space) = body.iter().position(|&b| b == b' ') {
        let Some(len) = std::str::from_utf8(&body[..space])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            break;
        };
        if len <= space + 1 || len > body.len() {
            break;
        }
        let record = &body[space + 1..len - 1];
        if let Some(eq) = record.iter().position(|&b| b == b'=') {
            out.push((&record[..eq], &record[eq + 1..]));
        }
        body = &body[len..];
    }
    out
}

fn pax_size_of(prefix: &[u8]) -> Option<u64> {
    // The last PAX header in the prefix is the one that applies; its body follows its header.
    let mut pos = 0;
    let mut size = None;
    while pos + BLOCK as usize <= prefix.len() {
        let header = tar::Header::from_byte_slice(&prefix[pos..pos + BLOCK as usize]);
        let len = header.entry_size().ok()?;
        let body_start = pos + BLOCK as usize;
        let body = prefix.get(body_start..body_start + len as usize)?;
        if header.entry_type().is_pax_local_extensions() {
            for (k, v) in pax_records(body) {
                if k == b"size" {
                    size = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok());
                }
            }
        }
        pos = body_start + padded(len) as usize;
    }
    size
}
