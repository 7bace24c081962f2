//! A repository written by the first release (format 1: packs without shared frames, index
//! schema 1), committed as a fixture as git keeps it (no empty `packs/XX` directories), opened by
//! this binary: it is upgraded, reads bit-exact, checks clean and takes new snapshots.

use crate::util::*;
use std::fs;
use std::path::Path;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/repo-v1");
const INPUT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/repo-v1-input.tar"
);

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

#[test]
fn a_version_1_repository_is_upgraded_and_stays_readable() {
    let t = TestDir::new();
    let path = t.join("repo");
    copy_tree(Path::new(FIXTURE), &path);
    let config = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&fs::read(p.join("config")).unwrap()).unwrap()
    };
    assert_eq!(config(&path)["version"], 1);
    let repo = Cairn::at(&path);

    let listed = repo.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(str_field(&listed[0], "source"), "fixture");
    // Opened once: the config says version 2 now (older binaries then refuse it), and the
    // schema-1 index was rebuilt.
    assert_eq!(config(&path)["version"], 2);
    assert_success(&repo.run(&["repo", "check", "--read-data"]), "check");
    let restored = repo.restore_file("latest", &t.join("out.tar"));
    assert!(restored == fs::read(INPUT).unwrap(), "restore differs");

    // New snapshots go into the upgraded repository, next to the old packs.
    let db = sqlite_like(64, 1);
    t.write("data/app.db", &db);
    let snap = repo.snapshot_dir(&t.join("data"), &[]);
    assert_eq!(u64_field(&snap, "page_aligned_bytes"), db.len() as u64);
    assert_success(&repo.run(&["repo", "check", "--read-data"]), "check");
    repo.assert_all_listed_restore();
}
