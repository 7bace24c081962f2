//! Recording a tar stream's member index while the stream is ingested.
//!
//! The scanner sees every byte on the reader thread; encoded records are spooled to a temporary
//! file (the index of a volume with millions of files must not sit in RAM) and stored as a
//! stream of their own once the tar stream is done.

use crate::error::{Error, Result};
use crate::format::manifest::MembersRef;
use crate::id::Id;
use crate::members::MemberIndexEncoder;
use crate::store::{Layout, TempFile};
use crate::tarscan::{Member, ScanStatus, TarScanner};
use std::io::{BufWriter, Seek, Write};

pub struct MemberRecorder {
    scanner: TarScanner,
    encoder: MemberIndexEncoder,
    spool: BufWriter<TempFile>,
    members: Vec<Member>,
    encoded: Vec<u8>,
    count: u64,
    /// The first problem while recording; recording stops, the stream itself is unaffected.
    failure: Option<String>,
}

/// What the scan found.
pub enum Recorded {
    /// The stream is not a tar archive (or nothing of it parsed).
    NotTar,
    Index(MembersRef),
}

impl MemberRecorder {
    /// With `page_align`, paged files (databases, checkpoint pages) are reported as aligned
    /// regions besides member starts.
    pub fn new(layout: &Layout, page_align: bool) -> Result<MemberRecorder> {
        let mut encoded = Vec::new();
        let encoder = MemberIndexEncoder::new(&mut encoded);
        Ok(MemberRecorder {
            scanner: TarScanner::new().detecting_pages(page_align),
            encoder,
            spool: BufWriter::with_capacity(1 << 20, TempFile::new(layout, "members-")?),
            members: Vec::new(),
            encoded,
            count: 0,
            failure: None,
        })
    }

    /// Scans the next bytes of the stream; pushes the cut hints found in them (member starts,
    /// paged files) onto `hints`.
    pub fn observe(&mut self, bytes: &[u8], hints: &mut Vec<crate::chunker::CutHint>) {
        if self.failure.is_some() || self.scanner.is_done() {
            return;
        }
        self.scanner.feed(bytes, &mut self.members);
        self.scanner.drain_cut_hints(hints);
        for m in self.members.drain(..) {
            if let Err(e) = self.encoder.encode(&m, &mut self.encoded) {
                self.failure = Some(e.to_string());
                return;
            }
            self.count += 1;
        }
        if let Err(e) = self.spool.write_all(&self.encoded) {
            self.failure = Some(e.to_string());
        }
        self.encoded.clear();
    }

    /// Ends the scan; stores the index through `store` (which returns the stream's root and
    /// length) unless the stream was not a tar.
    pub fn finish(
        self,
        store: impl FnOnce(Box<dyn std::io::Read + Send>) -> Result<(Id, u64)>,
    ) -> Result<Recorded> {
        if let Some(f) = self.failure {
            return Err(Error::Invalid(format!(
                "recording the tar member index: {f}"
            )));
        }
        let status = match self.scanner.finish() {
            ScanStatus::NotTar => return Ok(Recorded::NotTar),
            ScanStatus::Complete => "complete",
            ScanStatus::Truncated => "truncated",
            ScanStatus::Invalid { .. } => "invalid",
        };
        let mut spool = self
            .spool
            .into_inner()
            .map_err(|e| Error::IoPlain(e.into_error()))?;
        let path = spool.path().to_path_buf();
        let file = spool.file();
        file.flush().map_err(|e| Error::io(&path, e))?;
        file.rewind().map_err(|e| Error::io(&path, e))?;
        let reader = file.try_clone().map_err(|e| Error::io(&path, e))?;
        let (root, length) = store(Box::new(reader))?;
        drop(spool);
        Ok(Recorded::Index(MembersRef {
            root,
            length,
            count: self.count,
            status: status.into(),
        }))
    }
}
