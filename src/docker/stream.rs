//! Bridges between the engine's async byte streams and cairn's blocking `Read`s.
//!
//! Downloads: the reader drives the facade's current-thread runtime one chunk at a time, so
//! nothing is buffered beyond the chunk in hand and the socket's own buffers; a slow consumer
//! simply leaves the engine waiting.
//!
//! Uploads: the caller's `Read` is not `Send`, so it stays on the calling thread, which pumps
//! chunks into a small bounded channel while a scoped thread runs the request on the runtime.

use std::io::{self, Read};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::Docker;
use super::error::{DockerError, message_of};
use super::helper::HelperContainer;

type EngineStream<'a> =
    Pin<Box<dyn Stream<Item = Result<Bytes, bollard::errors::Error>> + Send + 'a>>;

/// The body handed to an upload request; turn it into bollard's body with
/// `bollard::body_try_stream`.
pub(crate) type UploadBody = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + 'static>>;

/// Size of the chunks read from the caller's `Read` for uploads.
const UPLOAD_CHUNK: usize = 256 * 1024;
/// Chunks in flight between the reading thread and the request: bounds upload memory to ~1 MiB.
const UPLOAD_QUEUE: usize = 4;

/// A blocking reader over a byte stream coming from the engine (a tar, usually).
///
/// When it reaches the end, or is dropped early, the helper container it may own is removed.
pub struct EngineReader<'a> {
    // Field order matters: the body must be dropped (closing the transfer) before the helper
    // container it reads from is removed.
    body: EngineStream<'a>,
    pending: Bytes,
    finished: bool,
    docker: &'a Docker,
    helper: Option<HelperContainer<'a>>,
}

impl<'a> EngineReader<'a> {
    /// Starts reading `body`, pulling its first chunk now so that an engine error (no such
    /// container, bad path, ...) is reported here rather than on the first `read`.
    pub(crate) fn open(
        docker: &'a Docker,
        body: impl Stream<Item = Result<Bytes, bollard::errors::Error>> + Send + 'a,
        helper: Option<HelperContainer<'a>>,
        map_error: impl FnOnce(bollard::errors::Error) -> DockerError,
    ) -> Result<EngineReader<'a>, DockerError> {
        let mut reader = EngineReader {
            body: Box::pin(body),
            pending: Bytes::new(),
            finished: false,
            docker,
            helper,
        };
        match docker.block_on(reader.body.next()) {
            Some(Ok(chunk)) => reader.pending = chunk,
            Some(Err(error)) => return Err(map_error(error)),
            None => reader.finish(),
        }
        Ok(reader)
    }

    fn finish(&mut self) {
        self.finished = true;
        // Released eagerly so that a fully read export does not keep its helper alive while the
        // caller goes on with other work.
        self.helper = None;
    }
}

impl Read for EngineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.pending.is_empty() {
                let n = buf.len().min(self.pending.len());
                buf[..n].copy_from_slice(&self.pending.split_to(n));
                return Ok(n);
            }
            if self.finished {
                return Ok(0);
            }
            match self.docker.block_on(self.body.next()) {
                Some(Ok(chunk)) => self.pending = chunk,
                Some(Err(error)) => {
                    return Err(io::Error::other(format!(
                        "stream from the Docker engine broke: {}",
                        message_of(&error)
                    )));
                }
                None => self.finish(),
            }
        }
    }
}

/// Runs `request` with a body that streams `source`, and returns the request's result.
///
/// A read error on `source` aborts the request and is what the caller gets back, since the
/// engine's complaint about a truncated body would hide the real cause.
pub(crate) fn upload<T, F, Fut>(
    runtime: &tokio::runtime::Runtime,
    source: &mut dyn Read,
    request: F,
) -> Result<T, DockerError>
where
    T: Send,
    F: FnOnce(UploadBody) -> Fut + Send,
    Fut: std::future::Future<Output = Result<T, DockerError>>,
{
    let (sender, receiver) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(UPLOAD_QUEUE);
    let receiver = Arc::new(Mutex::new(receiver));
    let body_receiver = Arc::clone(&receiver);
    let chunks =
        futures_util::stream::poll_fn(move |context| lock(&body_receiver).poll_recv(context));
    let body: UploadBody = Box::pin(chunks);

    std::thread::scope(|scope| {
        let engine_side = scope.spawn(move || {
            let answered = runtime.block_on(request(body));
            // The engine may answer before taking the whole body (an early error, or trailing
            // padding it does not need). From then on nobody drives the runtime, so nothing
            // would drain the channel: close it, or the pumping thread would wait for room
            // forever.
            lock(&receiver).close();
            answered
        });
        let pumped = pump(source, &sender);
        // Closing the channel ends the body, which lets the request complete.
        drop(sender);
        let answered = engine_side.join().unwrap_or_else(|_| {
            Err(DockerError::Engine(
                "the thread running the upload request panicked".into(),
            ))
        });
        match pumped {
            Err(read_error) => Err(DockerError::Io(read_error)),
            Ok(()) => answered,
        }
    })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Copies `source` into the channel until it ends, the request stops listening, or a read fails
/// (the failure is also sent, so that the body ends in an error rather than looking complete).
fn pump(
    source: &mut dyn Read,
    sender: &tokio::sync::mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<()> {
    loop {
        let mut chunk = vec![0u8; UPLOAD_CHUNK];
        let filled = match read_full(source, &mut chunk) {
            Ok(filled) => filled,
            Err(error) => {
                let _ = sender.blocking_send(Err(io::Error::new(error.kind(), error.to_string())));
                return Err(error);
            }
        };
        if filled == 0 {
            return Ok(());
        }
        chunk.truncate(filled);
        if sender.blocking_send(Ok(Bytes::from(chunk))).is_err() {
            // The request is over (the engine answered early, usually with an error); its result
            // says why.
            return Ok(());
        }
        if filled < UPLOAD_CHUNK {
            // A short fill means end of input was reached inside read_full.
            return Ok(());
        }
    }
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn read_full(source: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out its data in small, irregular pieces, then an optional error.
    struct Trickle {
        data: Vec<u8>,
        position: usize,
        fail_at_end: bool,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.position == self.data.len() {
                if self.fail_at_end {
                    return Err(io::Error::other("disk on fire"));
                }
                return Ok(0);
            }
            let n = buf
                .len()
                .min(7 + self.position % 5)
                .min(self.data.len() - self.position);
            buf[..n].copy_from_slice(&self.data[self.position..self.position + n]);
            self.position += n;
            Ok(n)
        }
    }

    #[test]
    fn an_engine_answering_before_the_end_of_the_body_does_not_hang_the_upload() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Far more than the channel holds, so the pump would block if nobody drained it.
        let mut source = io::Cursor::new(vec![0u8; UPLOAD_CHUNK * (UPLOAD_QUEUE + 8)]);
        let answer = upload(&runtime, &mut source, |mut body| async move {
            let first = body.next().await;
            assert!(matches!(first, Some(Ok(_))));
            // Like a connection task that still owns the body but is never polled again.
            tokio::spawn(async move {
                let _kept = body;
                std::future::pending::<()>().await
            });
            Ok("answered early")
        });
        assert_eq!(answer.unwrap(), "answered early");
    }

    #[test]
    fn a_request_error_is_returned_when_the_source_is_fine() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut source = io::Cursor::new(vec![1u8; 1000]);
        let answer: Result<(), DockerError> = upload(&runtime, &mut source, |_body| async {
            Err(DockerError::Engine("refused".into()))
        });
        assert!(matches!(answer, Err(DockerError::Engine(message)) if message == "refused"));
    }

    #[test]
    fn readers_can_move_between_threads() {
        fn assert_send<T: Send>() {}
        assert_send::<EngineReader<'static>>();
    }

    #[test]
    fn read_full_gathers_short_reads() {
        let mut source = Trickle {
            data: (0..100u8).collect(),
            position: 0,
            fail_at_end: false,
        };
        let mut buf = [0u8; 64];
        assert_eq!(read_full(&mut source, &mut buf).unwrap(), 64);
        assert_eq!(&buf[..], &(0..64u8).collect::<Vec<_>>()[..]);
        assert_eq!(read_full(&mut source, &mut buf).unwrap(), 36);
        assert_eq!(read_full(&mut source, &mut buf).unwrap(), 0);
    }

    fn collect_pumped(
        data: Vec<u8>,
        fail_at_end: bool,
    ) -> (io::Result<()>, Vec<io::Result<Bytes>>) {
        let (sender, mut receiver) = tokio::sync::mpsc::channel(UPLOAD_QUEUE);
        let mut source = Trickle {
            data,
            position: 0,
            fail_at_end,
        };
        std::thread::scope(|scope| {
            let collector = scope.spawn(move || {
                let mut received = Vec::new();
                while let Some(item) = receiver.blocking_recv() {
                    received.push(item);
                }
                received
            });
            let result = pump(&mut source, &sender);
            drop(sender);
            (result, collector.join().unwrap())
        })
    }

    #[test]
    fn pump_delivers_everything_in_order() {
        let data: Vec<u8> = (0..(UPLOAD_CHUNK * 2 + 1000))
            .map(|i| (i % 251) as u8)
            .collect();
        let (result, received) = collect_pumped(data.clone(), false);
        result.unwrap();
        let joined: Vec<u8> = received
            .into_iter()
            .flat_map(|chunk| chunk.unwrap().to_vec())
            .collect();
        assert_eq!(joined, data);
    }

    #[test]
    fn pump_passes_a_read_error_down_the_body_and_back_to_the_caller() {
        let (result, received) = collect_pumped(vec![1, 2, 3], true);
        assert_eq!(result.unwrap_err().to_string(), "disk on fire");
        assert!(received.last().unwrap().is_err());
    }
}
