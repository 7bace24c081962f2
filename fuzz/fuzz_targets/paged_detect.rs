//! `pages::detect` on an arbitrary member path, length and first bytes: it must never panic, and
//! what it accepts must be usable for cutting (a power-of-two page size, a whole number of
//! pages, at least two blocks).
//!
//! Input: `len:u64 LE | path_len:u8 | path | head`.
#![no_main]

use cairn::pages::{self, PROBE_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let len = u64::from_le_bytes(*len);
    let Some((&path_len, rest)) = rest.split_first() else {
        return;
    };
    let path_len = usize::from(path_len).min(rest.len());
    let (path, head) = rest.split_at(path_len);
    let head = &head[..head.len().min(PROBE_LEN)];
    if let Some(found) = pages::detect(path, len, head) {
        assert!(found.page_size.is_power_of_two());
        assert!(found.block_size() >= found.page_size && found.block_size() >= pages::MIN_BLOCK);
        assert!(len.is_multiple_of(u64::from(found.page_size)));
        assert!(len >= 2 * u64::from(found.block_size()));
    }
});
