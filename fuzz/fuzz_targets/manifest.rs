//! `format::manifest::decode` on arbitrary bytes: never panics, and a manifest it accepts
//! survives encode → decode unchanged (a snapshot's manifest is rewritten by tools that read it).
#![no_main]

use cairn::format::manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = manifest::decode(data) else {
        return;
    };
    let encoded = manifest::encode(&m);
    let again = manifest::decode(&encoded).expect("an encoded manifest must decode");
    assert_eq!(again, m, "manifest changed across encode → decode");
    // Encoding is a function of the value, so the id of a re-encoded manifest is stable.
    assert_eq!(manifest::encode(&again), encoded);
});
