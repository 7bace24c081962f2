//! `format::config::decode` on arbitrary bytes: never panics; a config it accepts round-trips,
//! and its parameters are safe to use: `ChunkerParams::validate` is all that stands between a
//! config file and the chunker, so a chunker built from parameters it accepts must not panic.
//!
//! The same input is also read as binary chunker parameters (`min:u32 avg:u32 max:u32 norm:u8`,
//! LE), which reaches the validation limits much faster than numbers inside JSON text.
#![no_main]

use cairn::chunker::Chunker;
use cairn::format::config::{self, ChunkerAlgorithm, ChunkerParams, Decoded};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Decoded::Ok(cfg)) = config::decode(data) {
        let encoded = config::encode(&cfg);
        assert_eq!(config::decode(&encoded), Ok(Decoded::Ok(cfg.clone())));
        check_chunker(&cfg.chunker);
    }
    if let Some(params) = binary_params(data)
        && params.validate().is_ok()
    {
        check_chunker(&params);
    }
});

fn binary_params(data: &[u8]) -> Option<ChunkerParams> {
    let word = |at: usize| Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?));
    Some(ChunkerParams {
        algorithm: ChunkerAlgorithm::FastCdc2020,
        min_size: word(0)?,
        avg_size: word(4)?,
        max_size: word(8)?,
        normalization: *data.get(12)?,
        page_align: true,
        member_group: word(13),
    })
}

/// Builds the chunker and cuts a few KiB: every cut must respect the configured maximum.
fn check_chunker(params: &ChunkerParams) {
    let chunker = Chunker::new(params);
    let sample: Vec<u8> = (0..3 * 1024 + 17u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut ends = Vec::new();
    assert_eq!(chunker.cut(&sample, 0, true, &[], &mut ends, &mut Vec::new()).covered, sample.len());
    let mut start = 0;
    for &end in &ends {
        assert!(end > start && end - start <= chunker.max_size());
        start = end;
    }
}
