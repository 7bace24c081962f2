//! An in-process pipe: a bounded channel of byte blocks with `Write` and `Read` ends, to connect
//! a producer thread (a tar writer, a restore) with a consumer (ingest, a tar extractor).

use crossbeam_channel::{Receiver, Sender, bounded};
use std::io::{self, Read, Write};

const BLOCK: usize = 1 << 20;

pub fn pipe(blocks_in_flight: usize) -> (PipeWriter, PipeReader) {
    let (tx, rx) = bounded(blocks_in_flight);
    (
        PipeWriter {
            tx: Some(tx),
            buf: Vec::with_capacity(BLOCK),
        },
        PipeReader {
            rx,
            block: Vec::new(),
            pos: 0,
        },
    )
}

/// Items are data blocks, or an error the producer wants the reader to see.
type Item = io::Result<Vec<u8>>;

pub struct PipeWriter {
    tx: Option<Sender<Item>>,
    buf: Vec<u8>,
}

impl PipeWriter {
    fn send(&mut self, item: Item) -> io::Result<()> {
        match &self.tx {
            Some(tx) => tx
                .send(item)
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "reader went away")),
            None => Err(io::Error::new(io::ErrorKind::BrokenPipe, "pipe closed")),
        }
    }

    /// Ends the stream with an error instead of EOF, so the reader cannot mistake a failed
    /// producer for a complete stream.
    pub fn fail(mut self, error: io::Error) {
        let _ = self.send(Err(error));
        self.tx = None;
    }

    /// Ends the stream normally.
    pub fn close(mut self) -> io::Result<()> {
        self.flush()?;
        self.tx = None;
        Ok(())
    }
}

impl Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > BLOCK && !self.buf.is_empty() {
            self.flush()?;
        }
        if data.len() >= BLOCK {
            self.send(Ok(data.to_vec()))?;
        } else {
            self.buf.extend_from_slice(data);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let block = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK));
            self.send(Ok(block))?;
        }
        Ok(())
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        if self.tx.is_some() && !std::thread::panicking() {
            // Dropped without close(): the producer did not finish; make the reader fail
            // rather than see a clean EOF.
            let _ = self.flush();
            let _ = self.send(Err(io::Error::other("producer stopped before the end")));
        }
    }
}

pub struct PipeReader {
    rx: Receiver<Item>,
    block: Vec<u8>,
    pos: usize,
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.block.len() {
            match self.rx.recv() {
                Ok(Ok(block)) => {
                    self.block = block;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.block.len() - self.pos);
        out[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carries_bytes_and_errors() {
        let (mut w, mut r) = pipe(2);
        let t = std::thread::spawn(move || {
            for i in 0..1000u32 {
                w.write_all(&i.to_le_bytes().repeat(1000)).unwrap();
            }
            w.close().unwrap();
        });
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        t.join().unwrap();
        assert_eq!(all.len(), 4_000_000);
        let (w, mut r) = pipe(1);
        let t = std::thread::spawn(move || w.fail(io::Error::other("boom")));
        let mut all = Vec::new();
        assert!(r.read_to_end(&mut all).is_err());
        t.join().unwrap();
        let (w, mut r) = pipe(1);
        drop(w);
        assert!(
            r.read_to_end(&mut Vec::new()).is_err(),
            "drop without close is an error"
        );
    }
}
