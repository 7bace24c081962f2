//! A reader adapter that fills the caller's buffer as far as the source allows.
//!
//! Engine streams arrive in small pieces (tens of KiB per read), while ingest asks for whole
//! 8 MiB batches and prepares its buffer anew before every read; handing it one piece per call
//! multiplies that preparation by hundreds. Gathering the pieces here makes every read count.

use std::io::{self, Read};

pub(crate) struct FullReads<R> {
    inner: R,
    /// An error met after part of a buffer was filled: that part is returned first, the error on
    /// the next call, so that a broken stream is never mistaken for its end.
    deferred: Option<io::Error>,
}

impl<R: Read> FullReads<R> {
    pub(crate) fn new(inner: R) -> FullReads<R> {
        FullReads {
            inner,
            deferred: None,
        }
    }
}

impl<R: Read> Read for FullReads<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(error) = self.deferred.take() {
            return Err(error);
        }
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if filled == 0 => return Err(error),
                Err(error) => {
                    self.deferred = Some(error);
                    break;
                }
            }
        }
        Ok(filled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out `data` a few bytes at a time, then fails if asked to.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        fail: bool,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.at == self.data.len() {
                return if self.fail {
                    Err(io::Error::other("broken"))
                } else {
                    Ok(0)
                };
            }
            let n = buf.len().min(3).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    #[test]
    fn reads_are_filled_and_everything_arrives() {
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut reader = FullReads::new(Trickle {
            data: data.clone(),
            at: 0,
            fail: false,
        });
        let mut buf = [0u8; 400];
        assert_eq!(reader.read(&mut buf).unwrap(), 400);
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert_eq!([&buf[..], &rest[..]].concat(), data);
    }

    #[test]
    fn an_error_after_some_bytes_comes_on_the_next_read() {
        let mut reader = FullReads::new(Trickle {
            data: vec![1; 10],
            at: 0,
            fail: true,
        });
        let mut buf = [0u8; 64];
        assert_eq!(reader.read(&mut buf).unwrap(), 10);
        assert_eq!(reader.read(&mut buf).unwrap_err().to_string(), "broken");
        let mut all = Vec::new();
        let mut again = FullReads::new(Trickle {
            data: vec![1; 10],
            at: 0,
            fail: true,
        });
        assert!(again.read_to_end(&mut all).is_err());
    }
}
