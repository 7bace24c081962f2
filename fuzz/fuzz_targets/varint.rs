//! `format::varint::get` on arbitrary bytes: never panics, consumes at most 10 bytes, and what it
//! accepts is the one canonical encoding of the value (tree node ids hash these bytes).
#![no_main]

use cairn::format::varint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let Ok(value) = varint::get(&mut rest) else {
        return;
    };
    let consumed = &data[..data.len() - rest.len()];
    assert!(consumed.len() <= 10, "varint took {} bytes", consumed.len());
    let mut canonical = Vec::new();
    varint::put(value, &mut canonical);
    assert_eq!(
        canonical, consumed,
        "accepted a non-canonical encoding of {value}"
    );
});
