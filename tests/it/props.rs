//! Properties through the library API: any stream restores exactly, and a re-snapshot of an
//! edited stream stores little more than the edits.

use crate::util::*;
use proptest::prelude::*;

/// How a generated stream is made; the bytes themselves are derived from it, so cases stay small
/// and shrink well.
#[derive(Clone, Debug)]
struct StreamSpec {
    seed: u64,
    len: usize,
    /// 0 incompressible, 1 text, 2 text then random, 3 random with a long run of zeros.
    flavour: u8,
}

impl StreamSpec {
    fn bytes(&self) -> Vec<u8> {
        let half = self.len / 2;
        match self.flavour {
            0 => random_bytes(self.seed, self.len),
            1 => text_bytes(self.seed, self.len),
            2 => {
                let mut v = text_bytes(self.seed, half);
                v.extend(random_bytes(self.seed, self.len - half));
                v
            }
            _ => {
                let mut v = random_bytes(self.seed, self.len);
                let zeros = (self.len / 3).min(600 * KIB);
                v[half / 2..half / 2 + zeros].fill(0);
                v
            }
        }
    }
}

fn stream_spec() -> impl Strategy<Value = StreamSpec> {
    (any::<u64>(), 0..2_000_000usize, 0..4u8).prop_map(|(seed, len, flavour)| StreamSpec {
        seed,
        len,
        flavour,
    })
}

#[derive(Clone, Debug)]
enum Edit {
    Insert { at: f64, len: usize, seed: u64 },
    Delete { at: f64, len: usize },
    Overwrite { at: f64, len: usize, seed: u64 },
}

fn edit() -> impl Strategy<Value = Edit> {
    let at = 0.0..=1.0f64;
    let len = 1..64 * KIB;
    prop_oneof![
        (at.clone(), len.clone(), any::<u64>()).prop_map(|(at, len, seed)| Edit::Insert {
            at,
            len,
            seed
        }),
        (at.clone(), len.clone()).prop_map(|(at, len)| Edit::Delete { at, len }),
        (at, len, any::<u64>()).prop_map(|(at, len, seed)| Edit::Overwrite { at, len, seed }),
    ]
}

/// Applies the edits in order; returns how many bytes they wrote (inserted or overwritten).
fn apply(bytes: &mut Vec<u8>, edits: &[Edit]) -> u64 {
    let mut written = 0u64;
    let pos = |at: f64, len: usize| ((at * len as f64) as usize).min(len);
    for e in edits {
        match *e {
            Edit::Insert { at, len, seed } => {
                let p = pos(at, bytes.len());
                bytes.splice(p..p, random_bytes(seed, len));
                written += len as u64;
            }
            Edit::Delete { at, len } => {
                let p = pos(at, bytes.len());
                let end = (p + len).min(bytes.len());
                bytes.drain(p..end);
            }
            Edit::Overwrite { at, len, seed } => {
                let p = pos(at, bytes.len());
                let end = (p + len).min(bytes.len());
                bytes[p..end].copy_from_slice(&random_bytes(seed, end - p));
                written += (end - p) as u64;
            }
        }
    }
    written
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Runs `check` over generated cases against one repository (creating a repository costs about
/// a second of directory fsyncs, more than a case itself). Earlier cases only add data the later
/// ones may share, which can lower their new bytes but never raise them.
fn run_cases<S: Strategy>(
    strategy: S,
    check: impl Fn(&cairn::Repo, &TestDir, S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let t = TestDir::new();
    let repo = lib::init(&t.join("repo"));
    let mut runner = proptest::test_runner::TestRunner::new(config());
    if let Err(e) = runner.run(&strategy, |value| check(&repo, &t, value)) {
        panic!("{e}");
    }
}

#[test]
fn any_stream_restores_exactly() {
    run_cases(
        (stream_spec(), any::<bool>()),
        |repo, t, (spec, tar_role)| {
            let input = spec.bytes();
            let snap = lib::snapshot(repo, &input, if tar_role { "tar" } else { "data" });
            prop_assert_eq!(snap.stats.bytes, input.len() as u64);
            let stream = &snap.manifest.streams[0];
            prop_assert_eq!(stream.digest.to_hex(), blake3_hex(&input));
            let restored = lib::restore(repo, stream);
            prop_assert!(
                restored == input,
                "restored {} bytes differ from the input",
                restored.len()
            );
            // Through the file path as well (temporary file + rename).
            let out = t.join("out.bin");
            cairn::restore::restore_to_file(repo, stream, &out, &cairn::progress::Silent).unwrap();
            prop_assert!(std::fs::read(&out).unwrap() == input);
            Ok(())
        },
    );
}

#[test]
fn edited_stream_costs_what_changed() {
    let cases = (stream_spec(), proptest::collection::vec(edit(), 1..4));
    run_cases(cases, |repo, _, (spec, edits)| {
        let original = spec.bytes();
        let first = lib::snapshot(repo, &original, "data");
        let mut edited = original.clone();
        let written = apply(&mut edited, &edits);
        let second = lib::snapshot(repo, &edited, "data");
        let restored = lib::restore(repo, &second.manifest.streams[0]);
        prop_assert!(
            restored == edited,
            "the edited stream does not restore exactly"
        );
        let bound = written + 2 * edits.len() as u64 * MAX_CHUNK;
        prop_assert!(
            second.stats.new_bytes <= bound,
            "new bytes {} > written {} + {} max chunks",
            second.stats.new_bytes,
            written,
            2 * edits.len()
        );
        prop_assert!(lib::restore(repo, &first.manifest.streams[0]) == original);
        Ok(())
    });
}
