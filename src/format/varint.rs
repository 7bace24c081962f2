//! LEB128 unsigned varints, used by the tree node encoding.

use super::FormatError;

pub fn put(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads one varint from the front of `input`, advancing it. Rejects over-long and overflowing
/// encodings so that each value has exactly one encoding (ids are hashes of encodings).
pub fn get(input: &mut &[u8]) -> Result<u64, FormatError> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let Some((&byte, rest)) = input.split_first() else {
            return Err(FormatError::new("truncated varint"));
        };
        *input = rest;
        let bits = u64::from(byte & 0x7f);
        if i == 9 && byte > 1 {
            return Err(FormatError::new("varint overflows 64 bits"));
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Err(FormatError::new("non-canonical varint"));
            }
            return Ok(value);
        }
    }
    Err(FormatError::new("varint longer than 10 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(v: u64) {
            let mut buf = Vec::new();
            put(v, &mut buf);
            let mut s = &buf[..];
            prop_assert_eq!(get(&mut s).unwrap(), v);
            prop_assert!(s.is_empty());
        }

        #[test]
        fn never_panics(bytes: Vec<u8>) {
            let mut s = &bytes[..];
            let _ = get(&mut s);
        }
    }

    #[test]
    fn rejects_non_canonical() {
        let mut s: &[u8] = &[0x80, 0x00];
        assert!(get(&mut s).is_err());
        let mut s: &[u8] = &[0xff; 11];
        assert!(get(&mut s).is_err());
    }
}
