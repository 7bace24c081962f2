//! Page-aligned chunking of paged files (databases, checkpoint memory), through the real binary:
//! unchanged pages are never stored twice, pages shifted by whole pages are still found, a wrong
//! guess only costs deduplication, and every case restores bit-exact.

use crate::util::*;
use std::fs;
use std::path::Path;

/// Rewrites `count` distinct pages (never page 0) of `db` with new text; returns their numbers.
fn touch_pages(db: &mut [u8], count: usize, seed: u64) -> Vec<usize> {
    let pages = db.len() / PAGE;
    let mut rng = Rng::new(seed);
    let mut touched = std::collections::BTreeSet::new();
    while touched.len() < count {
        touched.insert(rng.range(1, pages as u64) as usize);
    }
    for (k, &p) in touched.iter().enumerate() {
        let fresh = text_bytes(seed * 1000 + k as u64, PAGE);
        db[p * PAGE..(p + 1) * PAGE].copy_from_slice(&fresh);
    }
    touched.into_iter().collect()
}

/// Extracts the latest snapshot and compares every file under `dir` with its restored copy.
fn assert_restores(repo: &Cairn, dir: &Path, t: &TestDir, name: &str) {
    let out = t.join(name);
    assert_success(&repo.extract("latest", &out), "extract");
    let mut pending = vec![dir.to_path_buf()];
    let mut files = 0;
    while let Some(d) = pending.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let restored = out.join(path.strip_prefix(dir).unwrap());
            assert!(
                fs::read(&restored).unwrap() == fs::read(&path).unwrap(),
                "{} differs after restore",
                path.display()
            );
            files += 1;
        }
    }
    assert!(files > 0);
}

#[test]
fn scattered_page_changes_store_only_the_changed_pages() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    let plain = Cairn::at(t.join("plain"));
    assert_success(&plain.run(&["repo", "init", "--no-page-align"]), "init");
    let dir = t.join("data");
    let mut db = sqlite_like(2048, 1); // 8 MiB
    t.write("data/app.db", &db);
    t.write("data/notes.txt", &text_bytes(9, 50_000));

    let first = repo.snapshot_dir(&dir, &[]);
    assert_eq!(u64_field(&first, "page_aligned_bytes"), db.len() as u64);
    let plain_first = plain.snapshot_dir(&dir, &[]);
    assert_eq!(u64_field(&plain_first, "page_aligned_bytes"), 0);
    // Compressing 4 KiB pages in shared frames keeps the first snapshot's size close to what
    // 64 KiB content-defined chunks get.
    let (aligned, cdc) = (
        u64_field(&first, "stored_bytes"),
        u64_field(&plain_first, "stored_bytes"),
    );
    assert!(
        aligned * 100 <= cdc * 115,
        "first snapshot {aligned} B page-aligned vs {cdc} B content-defined"
    );

    // 2% of the pages change, scattered: only they and the chunk of tar headers before the
    // file's data (its mtime changed) are new.
    let touched = touch_pages(&mut db, 41, 2);
    t.write("data/app.db", &db);
    let second = repo.snapshot_dir(&dir, &[]);
    let new_bytes = u64_field(&second, "new_bytes");
    let changed = (touched.len() * PAGE) as u64;
    assert!(
        new_bytes >= changed && new_bytes <= changed + 8 * KIB as u64,
        "{new_bytes} new bytes for {changed} bytes of changed pages"
    );
    let plain_second = plain.snapshot_dir(&dir, &[]);
    assert!(
        u64_field(&plain_second, "new_bytes") > 10 * new_bytes,
        "content-defined chunks should miss scattered page changes: {} vs {new_bytes}",
        u64_field(&plain_second, "new_bytes")
    );
    assert!(u64_field(&second, "metadata_bytes") < u64_field(&second, "stored_bytes"));
    assert_restores(&repo, &dir, &t, "out");

    let stats = repo.stats();
    assert_eq!(u64_field(&stats, "page_aligned_bytes"), 2 * db.len() as u64);
    assert!(u64_field(&stats, "metadata_bytes") > 0);
    assert_success(&repo.run(&["repo", "check", "--read-data"]), "check");
}

#[test]
fn checkpoint_pages_inserted_near_the_start_shift_without_cost() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    let dir = t.join("ckpt");
    let pages: Vec<Vec<u8>> = (0..1024)
        .map(|n| match n % 5 {
            0 => vec![0u8; PAGE],
            1 => random_bytes(n, PAGE),
            _ => text_bytes(n, PAGE),
        })
        .collect();
    t.write("ckpt/pages-1.img", &pages.concat());
    t.write("ckpt/core-1.img", &random_bytes(7, 3000));
    repo.snapshot_dir(&dir, &[]);

    // Three new pages near the start shift everything after them by whole pages: new are those
    // pages and the chunk of tar headers (and the small file) before the image's data.
    let mut next = pages.clone();
    for k in 0..3 {
        next.insert(5 + k, random_bytes(10_000 + k as u64, PAGE));
    }
    t.write("ckpt/pages-1.img", &next.concat());
    let second = repo.snapshot_dir(&dir, &[]);
    let new_bytes = u64_field(&second, "new_bytes");
    assert_eq!(u64_field(&second, "new_chunks"), 4);
    assert!(
        new_bytes <= (3 * PAGE + 8 * KIB) as u64,
        "{new_bytes} new bytes for 3 inserted pages"
    );
    assert_restores(&repo, &dir, &t, "out");
}

#[test]
fn a_wrong_guess_restores_bit_exact() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    let dir = t.join("data");
    // The SQLite header on random bytes: detected as paged, cut in pages, still exact.
    let mut fake = random_bytes(3, 40 * PAGE);
    fake[..24].copy_from_slice(&sqlite_like(1, 0)[..24]);
    t.write("data/fake.db", &fake);
    // A header but not a whole number of pages: not aligned.
    let mut odd = sqlite_like(20, 4);
    odd.extend_from_slice(b"trailing bytes");
    t.write("data/odd.db", &odd);
    // Named like PostgreSQL relations and CRIU pages, with content that is neither.
    t.write("data/base/1/1259", &text_bytes(5, 5 * 8192));
    t.write("data/pages-3.img", &random_bytes(6, 10 * PAGE + 1));
    let snap = repo.snapshot_dir(&dir, &[]);
    assert_eq!(u64_field(&snap, "page_aligned_bytes"), fake.len() as u64);
    assert_restores(&repo, &dir, &t, "out");
    assert_eq!(
        blake3_hex(&fs::read(t.join("out/base/1/1259")).unwrap()),
        blake3_file(&t.join("data/base/1/1259"))
    );
}

#[test]
fn gc_of_partly_dead_frames_keeps_every_kept_snapshot_exact() {
    let t = TestDir::new();
    let repo = t.repo("repo");
    let dir = t.join("data");
    let mut db = sqlite_like(1024, 11);
    let mut expected = Vec::new();
    for generation in 0..4 {
        if generation > 0 {
            touch_pages(&mut db, 100, 20 + generation);
        }
        t.write("data/app.db", &db);
        let snap = repo.snapshot_dir(&dir, &[]);
        expected.push((str_field(&snap, "id"), db.clone()));
    }
    // Forget the two middle generations: frames of their changed pages become partly dead.
    for (id, _) in &expected[1..3] {
        assert_success(&repo.run(&["forget", id.as_str()]), "forget");
    }
    assert_success(
        &repo.run(&["repo", "gc", "--max-unused", "0"]),
        "gc repacks every pack with dead blobs",
    );
    assert_success(&repo.run(&["repo", "check", "--read-data"]), "check");
    for (id, bytes) in [&expected[0], &expected[3]] {
        let out = t.join(format!("out-{id}"));
        assert_success(&repo.extract(id, &out), "extract");
        assert!(
            fs::read(out.join("app.db")).unwrap() == *bytes,
            "{id} differs"
        );
    }
}
