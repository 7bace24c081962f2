//! `TarScanner` on arbitrary bytes: never panics, and the members and status it reports do not
//! depend on how the stream is cut into pieces (ingest feeds it whatever the reader returns).
//! What it reports must also be what ingest can store: members lie in order inside the stream,
//! and they go through the member index encoder and back unchanged.
//!
//! Input: `split:u16 LE | mode:u8 | stream bytes`. The stream is fed whole, in two parts cut at
//! `split`, and in pieces of `(mode & 0x7f) + 1` bytes. With bit 7 of `mode` set, every non-zero
//! 512-byte block of the stream first gets a correct header checksum, so that mutated headers
//! get past the checksum test into the parsing behind it.
#![no_main]

use cairn::members::{self, MemberIndexEncoder};
use cairn::tarscan::{Member, ScanStatus, TarScanner};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let split = usize::from(u16::from_le_bytes([data[0], data[1]]));
    let piece = usize::from(data[2] & 0x7f) + 1;
    let mut stream = data[3..].to_vec();
    if data[2] & 0x80 != 0 {
        reseal_blocks(&mut stream);
    }
    let stream = &stream[..];
    let split = split % (stream.len() + 1);

    let whole = scan([stream]);
    let (head, tail) = stream.split_at(split);
    assert_eq!(
        scan([head, tail]),
        whole,
        "result depends on the split at {split}"
    );
    assert_eq!(
        scan(stream.chunks(piece)),
        whole,
        "result depends on {piece}-byte pieces"
    );

    let (found, status) = whole;
    check_layout(&found, status, stream.len() as u64);
    check_index_round_trip(&found);
});

fn scan<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> (Vec<Member>, ScanStatus) {
    let mut scanner = TarScanner::new();
    let mut found = Vec::new();
    for p in pieces {
        scanner.feed(p, &mut found);
    }
    (found, scanner.finish())
}

fn check_layout(found: &[Member], status: ScanStatus, stream_len: u64) {
    let mut end = 0;
    for m in found {
        assert!(
            m.header_offset >= end,
            "member starts inside the previous one: {m:?}"
        );
        assert!(m.data_offset > m.header_offset, "data before header: {m:?}");
        end = m.padded_end().expect("padded end overflows");
        assert!(
            end <= stream_len,
            "member reported before its data was seen: {m:?}"
        );
    }
    match status {
        ScanStatus::Invalid { at_offset } => assert!(at_offset < stream_len),
        ScanStatus::NotTar => assert!(found.is_empty()),
        ScanStatus::Complete | ScanStatus::Truncated => {}
    }
}

fn check_index_round_trip(found: &[Member]) {
    let mut encoded = Vec::new();
    let mut encoder = MemberIndexEncoder::new(&mut encoded);
    for m in found {
        encoder
            .encode(m, &mut encoded)
            .unwrap_or_else(|e| panic!("scanned member cannot be indexed: {e}; {m:?}"));
    }
    let decoded = members::decode_all(&encoded).expect("index of scanned members must decode");
    assert_eq!(decoded, found);
}

/// Writes a valid checksum into every 512-byte block that is not all zeros.
fn reseal_blocks(stream: &mut [u8]) {
    for block in stream.chunks_exact_mut(512) {
        if block.iter().all(|&b| b == 0) {
            continue;
        }
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        block[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    }
}
