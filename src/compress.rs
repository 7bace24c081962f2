//! zstd with per-thread reusable contexts (creating a context per blob costs more than
//! compressing a small blob).

use std::cell::RefCell;

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's compressor for `level` (created on first use).
fn with_compressor<T>(
    level: i32,
    f: impl FnOnce(&mut zstd::bulk::Compressor<'static>) -> std::io::Result<T>,
) -> std::io::Result<T> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|(l, _)| *l) != Some(level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        match slot.as_mut() {
            Some((_, c)) => f(c),
            None => Err(std::io::Error::other("no zstd context")),
        }
    })
}

/// Compresses `data`; returns `None` when the result would not be smaller (store raw).
pub fn compress(data: &[u8], level: i32) -> std::io::Result<Option<Vec<u8>>> {
    // Output bigger than the input is useless: cap the buffer and treat overflow as "raw".
    let mut out = vec![0u8; data.len()];
    Ok(compress_into(data, level, &mut out)?.map(|n| {
        out.truncate(n);
        out
    }))
}

/// Compresses `data` into `out`; returns the compressed length, or `None` when the result
/// would not be smaller than `data` (store raw) or does not fit in `out`.
pub fn compress_into(data: &[u8], level: i32, out: &mut [u8]) -> std::io::Result<Option<usize>> {
    with_compressor(level, |c| {
        let room = out.len().min(data.len());
        match c.compress_to_buffer(data, &mut out[..room]) {
            Ok(n) if n < data.len() => Ok(Some(n)),
            Ok(_) | Err(_) => Ok(None),
        }
    })
}

pub fn decompress_into(src: &[u8], dst: &mut [u8]) -> std::io::Result<usize> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        match slot.as_mut() {
            Some(d) => d.decompress_to_buffer(src, dst),
            None => Err(std::io::Error::other("no zstd context")),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressible_and_incompressible() {
        let text = b"hello hello hello hello hello hello hello hello".repeat(100);
        let c = compress(&text, 3).unwrap().expect("text compresses");
        let mut back = vec![0u8; text.len()];
        assert_eq!(decompress_into(&c, &mut back).unwrap(), text.len());
        assert_eq!(back, text);
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let random = blake3::Hasher::new().update(&noise).finalize_xof();
        let mut rnd = vec![0u8; 65536];
        let mut r = random;
        r.fill(&mut rnd);
        assert!(compress(&rnd, 3).unwrap().is_none());

        let mut out = vec![0u8; text.len()];
        let n = compress_into(&text, 3, &mut out).unwrap().expect("fits");
        assert_eq!(&out[..n], &c[..], "same bytes as compress");
        assert!(
            compress_into(&rnd, 3, &mut vec![0u8; rnd.len()])
                .unwrap()
                .is_none()
        );
        assert!(
            compress_into(&text, 3, &mut out[..n - 1])
                .unwrap()
                .is_none(),
            "too small a buffer means raw, not an error"
        );
    }
}
