//! Inputs found by fuzzing (fuzz/README.md), replayed through the public API. Each file under
//! fuzz/regressions/<target>/ has a test here; tests of bugs not yet fixed are ignored with the
//! bug named, and pass once it is fixed.

use cairn::chunker::Chunker;
use cairn::format::config::{self, ChunkerAlgorithm, ChunkerParams, Decoded};
use cairn::format::manifest;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Parameters that `validate` accepts must build a chunker that cuts without panicking.
fn assert_usable(params: &ChunkerParams) {
    let built = catch_unwind(AssertUnwindSafe(|| {
        let chunker = Chunker::new(params);
        let mut ends = Vec::new();
        chunker
            .cut(&[7u8; 4096], 0, true, &[], &mut ends, &mut Vec::new())
            .covered
    }));
    assert_eq!(
        built.ok(),
        Some(4096),
        "validated chunker parameters panic: {params:?}"
    );
}

#[test]
fn fuzz_config_binary_chunker_params_panic_in_chunker() {
    let bytes = include_bytes!("../fuzz/regressions/config/chunker-params-avg-8849934-norm3.bin");
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let params = ChunkerParams {
        algorithm: ChunkerAlgorithm::FastCdc2020,
        min_size: word(0),
        avg_size: word(4),
        max_size: word(8),
        normalization: bytes[12],
        page_align: true,
        member_group: None,
    };
    assert_eq!((params.avg_size, params.normalization), (8_849_934, 3));
    if params.validate().is_ok() {
        assert_usable(&params);
    }
}

#[test]
fn fuzz_config_file_with_unusable_chunker_is_rejected() {
    let bytes = include_bytes!("../fuzz/regressions/config/config-avg-8MiB-norm3.json");
    match config::decode(bytes) {
        Ok(Decoded::Ok(cfg)) => assert_usable(&cfg.chunker),
        Ok(Decoded::Newer { .. }) => panic!("version 1 config read as newer"),
        Err(_) => {} // Rejecting the file is a fix too.
    }
}

#[test]
fn fuzz_config_repository_with_validated_params_can_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let opts = cairn::InitOptions {
        chunker: ChunkerParams {
            algorithm: ChunkerAlgorithm::FastCdc2020,
            min_size: 64,
            avg_size: 8 << 20,
            max_size: 16 << 20,
            normalization: 3,
            page_align: true,
            member_group: None,
        },
        ..cairn::InitOptions::default()
    };
    let Ok(repo) = cairn::Repo::init(&dir.path().join("repo"), &opts) else {
        return; // Refusing the parameters up front is a fix too.
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let input = cairn::StreamInput {
            name: "data".into(),
            role: "data".into(),
            reader: Box::new(&b"some bytes"[..]),
        };
        repo.snapshot(
            cairn::SnapshotSpec::default(),
            vec![input],
            &cairn::progress::Silent,
        )
        .map(|_| ())
    }));
    assert!(matches!(outcome, Ok(Ok(()))), "snapshot panicked or failed");
}

#[test]
fn fuzz_manifest_meta_float_survives_round_trip() {
    let bytes = include_bytes!("../fuzz/regressions/manifest/meta-float-round-trip.json");
    let m = manifest::decode(bytes).expect("the input is a valid manifest");
    let again = manifest::decode(&manifest::encode(&m)).expect("re-encoded manifest decodes");
    assert_eq!(again, m);
}

/// The largest average chunk size fastcdc supports (4 MiB) is usable at every normalization
/// level, so capping `validate` there is a fix that keeps every working configuration.
#[test]
fn chunker_at_fastcdc_average_limit_is_usable() {
    for normalization in 0..=3 {
        let params = ChunkerParams {
            algorithm: ChunkerAlgorithm::FastCdc2020,
            min_size: 1 << 20,
            avg_size: 4 << 20,
            max_size: 16 << 20,
            normalization,
            page_align: true,
            member_group: None,
        };
        params.validate().unwrap();
        assert_usable(&params);
    }
}

/// Every seed of the decoder targets (real encodings, fuzz/seeds/) decodes, and the canonical
/// ones re-encode to their bytes: a format change that breaks them shows up here, not only when
/// someone runs the fuzzer.
#[test]
fn fuzz_seeds_still_decode() {
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let files = |target: &str| -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(seeds.join(target)).unwrap() {
            out.push(std::fs::read(entry.unwrap().path()).unwrap());
        }
        assert!(!out.is_empty(), "no seeds for {target}");
        out
    };
    for bytes in files("tree_node") {
        let node = cairn::format::tree::TreeNode::decode(&bytes).unwrap();
        assert_eq!(node.encode(), bytes);
    }
    for bytes in files("config") {
        assert!(matches!(config::decode(&bytes), Ok(Decoded::Ok(_))));
    }
    for bytes in files("manifest") {
        manifest::decode(&bytes).unwrap();
    }
    for bytes in files("member_index") {
        // member_index seeds start with the fuzzer's read-size byte.
        cairn::members::decode_all(&bytes[1..]).unwrap();
    }
    for bytes in files("varint") {
        let mut rest = &bytes[..];
        cairn::format::varint::get(&mut rest).unwrap();
        assert!(rest.is_empty());
    }
}

/// A shared frame opened by an empty blob made the next blob's offset in the frame 0, so it
/// re-encoded as a frame opener: the table did not round-trip. Empty blobs in frames are now
/// rejected. Replays the `pack_table` harness's reseal + natural-length path on the input.
#[test]
fn fuzz_pack_table_empty_blob_in_frame_is_rejected_or_round_trips() {
    use cairn::format::pack::{self as fmt, ENTRY_LEN, HEADER_LEN, TRAILER_LEN};
    let data = include_bytes!("../fuzz/regressions/pack_table/empty-blob-in-frame.bin");
    let mut tail = data[9..].to_vec();
    let trailer_at = tail.len() - TRAILER_LEN;
    let rows = trailer_at / ENTRY_LEN;
    let mut trailer = tail[trailer_at..].to_vec();
    tail.truncate(rows * ENTRY_LEN);
    trailer[..4].copy_from_slice(&(rows as u32).to_le_bytes());
    trailer[8..40].copy_from_slice(blake3::hash(&tail).as_bytes());
    let table = tail.clone();
    let stored: u64 = table
        .chunks_exact(ENTRY_LEN)
        .map(|row| u64::from(u32::from_le_bytes(row[34..38].try_into().unwrap())))
        .sum();
    let pack_len = HEADER_LEN + stored + (table.len() + TRAILER_LEN) as u64;
    let decoded = fmt::decode_trailer(&trailer)
        .and_then(|t| fmt::decode_table(&table, &t, pack_len).map(|e| (t, e)));
    if let Ok((t, entries)) = decoded {
        let encoded = fmt::encode_table(&entries);
        assert_eq!(
            &encoded[..table.len()],
            &table[..],
            "table does not round-trip"
        );
        assert_eq!(t.entry_count as usize, entries.len());
    }
}
