//! The member index decoder on arbitrary bytes: never panics; the streaming decoder gives the
//! same result however its reader hands out the bytes; an index it accepts re-encodes, through
//! `MemberIndexEncoder`, to the same bytes and the same members.
//!
//! Input: `read_size:u8 | index bytes`.
#![no_main]

use cairn::members::{self, MemberIndexDecoder, MemberIndexEncoder};
use libfuzzer_sys::fuzz_target;
use std::io::Read;

fuzz_target!(|data: &[u8]| {
    let Some((&read_size, index)) = data.split_first() else {
        return;
    };
    let whole = members::decode_all(index);
    let dribbled: Result<Vec<_>, _> = MemberIndexDecoder::new(Dribble {
        bytes: index,
        piece: usize::from(read_size % 16) + 1,
    })
    .collect();
    assert_eq!(
        format!("{whole:?}"),
        format!("{dribbled:?}"),
        "decoding depends on how the reader splits its input"
    );
    let Ok(decoded) = whole else {
        return;
    };
    let mut encoded = Vec::new();
    let mut encoder = MemberIndexEncoder::new(&mut encoded);
    for m in &decoded {
        encoder
            .encode(m, &mut encoded)
            .unwrap_or_else(|e| panic!("decoded member does not re-encode: {e}; {m:?}"));
    }
    let again = members::decode_all(&encoded).expect("re-encoded index must decode");
    assert_eq!(again, decoded, "members changed across encode → decode");
    assert_eq!(encoded, index, "the encoding is not canonical");
});

/// A reader that hands out at most `piece` bytes per call.
struct Dribble<'a> {
    bytes: &'a [u8],
    piece: usize,
}

impl Read for Dribble<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.piece.min(buf.len()).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}
