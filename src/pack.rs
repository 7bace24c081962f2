//! Writing and reading pack files (layout in `format::pack`).

use crate::error::{Error, IoContext, Result};
use crate::format::pack::{self as fmt, Frame, PackEntry, TRAILER_LEN};
use crate::format::{BlobKind, Compression};
use crate::id::Id;
use crate::store::{Layout, TempFile};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;

/// Appends blobs to a new pack in `tmp/`; `finish` makes it durable under its content name.
pub struct PackWriter {
    out: BufWriter<TempFile>,
    hasher: blake3::Hasher,
    entries: Vec<PackEntry>,
    offset: u64,
}

/// A pack that is durable on disk.
pub struct FinishedPack {
    pub id: Id,
    pub size: u64,
    pub entries: Vec<PackEntry>,
}

impl Write for TempFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file().flush()
    }
}

impl PackWriter {
    pub fn new(layout: &Layout) -> Result<PackWriter> {
        let tmp = TempFile::new(layout, "pack-")?;
        let mut w = PackWriter {
            out: BufWriter::with_capacity(1 << 20, tmp),
            hasher: blake3::Hasher::new(),
            entries: Vec::new(),
            offset: 0,
        };
        w.write_raw(&fmt::HEADER)?;
        Ok(w)
    }

    fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        let path = self.out.get_ref().path().to_path_buf();
        self.out.write_all(bytes).at(&path)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Appends one blob. `stored` is what goes into the file (compressed or raw, per `compression`).
    pub fn add(
        &mut self,
        id: Id,
        kind: BlobKind,
        compression: Compression,
        raw_len: u32,
        stored: &[u8],
    ) -> Result<()> {
        let stored_len = u32::try_from(stored.len())
            .map_err(|_| Error::Invalid("blob larger than 4 GiB".into()))?;
        let offset = self.offset;
        self.write_raw(stored)?;
        self.entries.push(PackEntry {
            id,
            kind,
            compression,
            offset,
            stored_len,
            raw_len,
            frame: None,
        });
        Ok(())
    }

    /// Appends one blob given its raw bytes: zstd at `level`, or raw when that does not shrink it.
    pub fn add_compressed(&mut self, id: Id, kind: BlobKind, raw: &[u8], level: i32) -> Result<()> {
        let raw_len = u32::try_from(raw.len())
            .map_err(|_| Error::Invalid("blob larger than 4 GiB".into()))?;
        match crate::compress::compress(raw, level)
            .map_err(|e| Error::Invalid(format!("zstd: {e}")))?
        {
            Some(c) => self.add(id, kind, Compression::Zstd, raw_len, &c),
            None => self.add(id, kind, Compression::None, raw_len, raw),
        }
    }

    /// Appends one zstd frame holding several blobs: `members` are their ids and raw lengths,
    /// in the order their bytes were concatenated before compression.
    pub fn add_frame(
        &mut self,
        kind: BlobKind,
        members: &[(Id, u32)],
        stored: &[u8],
    ) -> Result<()> {
        let too_big = || Error::Invalid("frame larger than the format allows".into());
        let stored_len = u32::try_from(stored.len()).map_err(|_| too_big())?;
        let frame_raw = members
            .iter()
            .try_fold(0u32, |sum, (_, len)| sum.checked_add(*len))
            .filter(|&n| n <= fmt::MAX_FRAME_RAW)
            .ok_or_else(too_big)?;
        if members.is_empty() || stored.is_empty() || members.iter().any(|(_, len)| *len == 0) {
            return Err(Error::Invalid(
                "empty frame or empty blob in a frame".into(),
            ));
        }
        let offset = self.offset;
        self.write_raw(stored)?;
        let mut skip = 0;
        for &(id, raw_len) in members {
            self.entries.push(PackEntry {
                id,
                kind,
                compression: Compression::Zstd,
                offset,
                stored_len,
                raw_len,
                frame: Some(Frame {
                    skip,
                    raw_len: frame_raw,
                }),
            });
            skip += raw_len;
        }
        Ok(())
    }

    /// Bytes written so far (header and blobs).
    pub fn len(&self) -> u64 {
        self.offset
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn blob_count(&self) -> usize {
        self.entries.len()
    }

    /// Writes the table, checks it decodes back to what was written, fsyncs, renames the pack to
    /// its content address and fsyncs the directory.
    pub fn finish(self, layout: &Layout) -> Result<FinishedPack> {
        self.seal()?.commit(layout)
    }

    /// Completes the pack's bytes (table and trailer) without making it durable yet; the
    /// expensive part, `SealedPack::commit`, can then run on another thread.
    pub fn seal(mut self) -> Result<SealedPack> {
        let table = fmt::encode_table(&self.entries);
        let pack_len = self.offset + table.len() as u64;
        // Decode what we are about to write, so a bug in the encoder cannot produce a pack that
        // later reads as damaged.
        let (t, trailer) = table.split_at(table.len() - TRAILER_LEN);
        let decoded = fmt::decode_trailer(trailer)
            .and_then(|tr| fmt::decode_table(t, &tr, pack_len))
            .map_err(|e| Error::corrupt("new pack table", e.0))?;
        if decoded != self.entries {
            return Err(Error::corrupt("new pack table", "does not round-trip"));
        }
        self.write_raw(&table)?;
        let id = Id::from(self.hasher.finalize());
        let file = self
            .out
            .into_inner()
            .map_err(|e| Error::IoPlain(e.into_error()))?;
        Ok(SealedPack {
            file,
            pack: FinishedPack {
                id,
                size: pack_len,
                entries: self.entries,
            },
        })
    }
}

/// A complete pack still in `tmp/`.
pub struct SealedPack {
    file: TempFile,
    pack: FinishedPack,
}

impl SealedPack {
    pub fn size(&self) -> u64 {
        self.pack.size
    }

    /// fsync, rename into `packs/`, fsync the directory: afterwards the pack is durable and may
    /// be indexed. Its pages then leave the page cache (`TempFile::commit_uncached`).
    pub fn commit(self, layout: &Layout) -> Result<FinishedPack> {
        self.file.commit_uncached(&layout.pack(&self.pack.id))?;
        Ok(self.pack)
    }
}

/// Reads and validates the table of the pack in `file` (of `len` bytes).
pub fn read_table(file: &File, len: u64, pack: &Id) -> Result<Vec<PackEntry>> {
    let damaged = |detail: String| Error::corrupt(format!("pack {pack}"), detail);
    if len < fmt::HEADER_LEN + TRAILER_LEN as u64 {
        return Err(damaged(format!("only {len} bytes long")));
    }
    let mut header = [0u8; 8];
    file.read_exact_at(&mut header, 0)
        .map_err(|e| damaged(e.to_string()))?;
    let version = fmt::check_header(&header).map_err(|e| damaged(e.0))?;
    let mut trailer = [0u8; TRAILER_LEN];
    file.read_exact_at(&mut trailer, len - TRAILER_LEN as u64)
        .map_err(|e| damaged(e.to_string()))?;
    let trailer = fmt::decode_trailer(&trailer).map_err(|e| damaged(e.0))?;
    if trailer.version != version {
        return Err(damaged(format!(
            "header says version {version}, trailer {}",
            trailer.version
        )));
    }
    let table_len = trailer.table_len();
    if table_len + TRAILER_LEN as u64 + fmt::HEADER_LEN > len {
        return Err(damaged("table longer than the pack".into()));
    }
    let mut table = vec![0u8; table_len as usize];
    file.read_exact_at(&mut table, len - TRAILER_LEN as u64 - table_len)
        .map_err(|e| damaged(e.to_string()))?;
    fmt::decode_table(&table, &trailer, len).map_err(|e| damaged(e.0))
}

/// Turns the stored bytes of one blob (`stored` is what its location says to read: its own bytes
/// or its whole frame) back into the blob, checking length and id.
pub fn unpack_one(
    stored: &[u8],
    compression: Compression,
    raw_len: u32,
    frame: Option<Frame>,
    id: &Id,
    pack: &Id,
) -> Result<Vec<u8>> {
    match frame {
        None => {
            let mut out = vec![0u8; raw_len as usize];
            unpack_blob(stored, compression, raw_len, id, pack, &mut out)?;
            Ok(out)
        }
        Some(f) => {
            let whole = unpack_frame(stored, f.raw_len, id, pack)?;
            Ok(frame_slice(&whole, f, raw_len, id, pack)?.to_vec())
        }
    }
}

/// Decompresses a shared frame; `id` names a blob in it for the error message.
pub fn unpack_frame(stored: &[u8], frame_raw_len: u32, id: &Id, pack: &Id) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    unpack_frame_into(stored, frame_raw_len, id, pack, &mut out)?;
    Ok(out)
}

/// `unpack_frame` into a buffer that is reused from frame to frame: its length only ever grows
/// (so it is zeroed once, not per frame); the frame is `out[..frame_raw_len]`.
pub fn unpack_frame_into(
    stored: &[u8],
    frame_raw_len: u32,
    id: &Id,
    pack: &Id,
    out: &mut Vec<u8>,
) -> Result<()> {
    if frame_raw_len > fmt::MAX_FRAME_RAW {
        return Err(Error::DamagedBlob {
            blob: *id,
            pack: *pack,
            detail: format!("frame claims {frame_raw_len} bytes"),
        });
    }
    let out = grown_to(out, frame_raw_len as usize);
    let n = crate::compress::decompress_into(stored, out).map_err(|e| Error::DamagedBlob {
        blob: *id,
        pack: *pack,
        detail: format!("cannot decompress its frame: {e}"),
    })?;
    if n != out.len() {
        return Err(Error::DamagedBlob {
            blob: *id,
            pack: *pack,
            detail: format!("frame decompressed to {n} bytes, expected {frame_raw_len}"),
        });
    }
    Ok(())
}

/// The first `len` bytes of `buf`, growing it (never shrinking) when it is shorter.
pub(crate) fn grown_to(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if buf.len() < len {
        buf.resize(len, 0);
    }
    &mut buf[..len]
}

/// A blob's bytes within its decompressed frame, checked against its id.
pub fn frame_slice<'f>(
    frame: &'f [u8],
    f: Frame,
    raw_len: u32,
    id: &Id,
    pack: &Id,
) -> Result<&'f [u8]> {
    let start = f.skip as usize;
    let bytes = start
        .checked_add(raw_len as usize)
        .and_then(|end| frame.get(start..end))
        .ok_or_else(|| Error::DamagedBlob {
            blob: *id,
            pack: *pack,
            detail: "lies outside its frame".into(),
        })?;
    if Id::of(bytes) != *id {
        return Err(Error::DamagedBlob {
            blob: *id,
            pack: *pack,
            detail: "content does not match its id".into(),
        });
    }
    Ok(bytes)
}

/// Turns stored bytes back into the blob, checking length and id.
pub fn unpack_blob(
    stored: &[u8],
    compression: Compression,
    raw_len: u32,
    id: &Id,
    pack: &Id,
    out: &mut [u8],
) -> Result<()> {
    let damaged = |detail: String| Error::DamagedBlob {
        blob: *id,
        pack: *pack,
        detail,
    };
    if out.len() != raw_len as usize {
        return Err(damaged("length mismatch".into()));
    }
    match compression {
        Compression::None => {
            if stored.len() != out.len() {
                return Err(damaged("stored length mismatch".into()));
            }
            out.copy_from_slice(stored);
        }
        Compression::Zstd => {
            let n = crate::compress::decompress_into(stored, out)
                .map_err(|e| damaged(format!("cannot decompress: {e}")))?;
            if n != out.len() {
                return Err(damaged(format!(
                    "decompressed to {n} bytes, expected {raw_len}"
                )));
            }
        }
    }
    if Id::of(out) != *id {
        return Err(damaged("content does not match its id".into()));
    }
    Ok(())
}

/// Buffers reused from blob to blob while unpacking many: after the first few blobs, unpacking
/// allocates nothing.
#[derive(Default)]
pub struct UnpackScratch {
    frame: Vec<u8>,
    blob: Vec<u8>,
}

/// Unpacks every blob of a pack held in `bytes` (the whole file), decompressing each shared
/// frame once, and hands each entry with its verified bytes, or the damage found, to `visit`.
pub fn for_each_blob(
    bytes: &[u8],
    entries: &[PackEntry],
    pack: &Id,
    visit: impl FnMut(&PackEntry, Result<&[u8]>) -> Result<()>,
) -> Result<()> {
    for_each_blob_at(
        bytes,
        0,
        entries,
        pack,
        &mut UnpackScratch::default(),
        visit,
    )
}

/// `for_each_blob` over part of a pack: `bytes` holds the file from offset `base` on and must
/// reach the end of every entry's stored bytes (an entry it does not reach is reported as lying
/// outside the pack). Entries of one shared frame must be adjacent, as in a pack's table.
pub fn for_each_blob_at(
    bytes: &[u8],
    base: u64,
    entries: &[PackEntry],
    pack: &Id,
    scratch: &mut UnpackScratch,
    mut visit: impl FnMut(&PackEntry, Result<&[u8]>) -> Result<()>,
) -> Result<()> {
    // The frame in `scratch.frame`, by its offset: its length, or why it did not decompress.
    let mut frame_state: Option<(u64, std::result::Result<usize, String>)> = None;
    for e in entries {
        let stored = e
            .offset
            .checked_sub(base)
            .and_then(|from| usize::try_from(from).ok())
            .and_then(|from| bytes.get(from..from.checked_add(e.stored_len as usize)?))
            .ok_or_else(|| Error::DamagedBlob {
                blob: e.id,
                pack: *pack,
                detail: "lies outside the pack".into(),
            });
        let stored = match stored {
            Ok(s) => s,
            Err(err) => {
                visit(e, Err(err))?;
                continue;
            }
        };
        match e.frame {
            None => visit(e, verified_blob(stored, e, pack, &mut scratch.blob))?,
            Some(f) => {
                if frame_state.as_ref().map(|(at, _)| *at) != Some(e.offset) {
                    let unpacked =
                        unpack_frame_into(stored, f.raw_len, &e.id, pack, &mut scratch.frame);
                    let unpacked = unpacked.map(|()| f.raw_len as usize);
                    frame_state = Some((e.offset, unpacked.map_err(|err| err.to_string())));
                }
                let result = match frame_state.as_ref().map(|(_, r)| r) {
                    // Only the frame itself: the buffer may be longer from a bigger frame.
                    Some(Ok(len)) => {
                        let frame = scratch.frame.get(..*len).unwrap_or_default();
                        frame_slice(frame, f, e.raw_len, &e.id, pack)
                    }
                    Some(Err(detail)) => Err(Error::DamagedBlob {
                        blob: e.id,
                        pack: *pack,
                        detail: detail.clone(),
                    }),
                    None => Err(Error::Invalid("frame cache empty".into())),
                };
                visit(e, result)?;
            }
        }
    }
    Ok(())
}

/// An unframed blob's bytes, checked against its entry: the stored bytes themselves when stored
/// raw (no copy), otherwise decompressed into `scratch`. Same checks as `unpack_blob`.
fn verified_blob<'b>(
    stored: &'b [u8],
    e: &PackEntry,
    pack: &Id,
    scratch: &'b mut Vec<u8>,
) -> Result<&'b [u8]> {
    let damaged = |detail: String| Error::DamagedBlob {
        blob: e.id,
        pack: *pack,
        detail,
    };
    let bytes: &[u8] = match e.compression {
        Compression::None => {
            if stored.len() != e.raw_len as usize {
                return Err(damaged("stored length mismatch".into()));
            }
            stored
        }
        Compression::Zstd => {
            let out = grown_to(scratch, e.raw_len as usize);
            let n = crate::compress::decompress_into(stored, out)
                .map_err(|err| damaged(format!("cannot decompress: {err}")))?;
            if n != out.len() {
                return Err(damaged(format!(
                    "decompressed to {n} bytes, expected {}",
                    e.raw_len
                )));
            }
            out
        }
    };
    if Id::of(bytes) != e.id {
        return Err(damaged("content does not match its id".into()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(n: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 7) as u8 ^ n).collect()
    }

    #[test]
    fn frames_write_read_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create_dirs().unwrap();
        let mut w = PackWriter::new(&layout).unwrap();
        let solo = blob(1, 3000);
        w.add(
            Id::of(&solo),
            BlobKind::Data,
            Compression::None,
            3000,
            &solo,
        )
        .unwrap();
        let parts = [blob(2, 4096), blob(3, 4096), blob(4, 1000)];
        let joined: Vec<u8> = parts.concat();
        let stored = crate::compress::compress(&joined, 3).unwrap().unwrap();
        let members: Vec<(Id, u32)> = parts.iter().map(|p| (Id::of(p), p.len() as u32)).collect();
        w.add_frame(BlobKind::Data, &members, &stored).unwrap();
        let done = w.finish(&layout).unwrap();
        assert_eq!(done.entries.len(), 4);
        let bytes = std::fs::read(layout.pack(&done.id)).unwrap();
        let file = File::open(layout.pack(&done.id)).unwrap();
        let table = read_table(&file, bytes.len() as u64, &done.id).unwrap();
        assert_eq!(table, done.entries);
        let mut seen = Vec::new();
        for_each_blob(&bytes, &table, &done.id, |e, r| {
            let b = r.unwrap();
            assert_eq!(Id::of(b), e.id);
            seen.push(b.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, [vec![solo.clone()], parts.to_vec()].concat());
        // A single framed blob reads back on its own.
        let e = &table[2];
        let one = unpack_one(
            &bytes[e.offset as usize..(e.offset + u64::from(e.stored_len)) as usize],
            e.compression,
            e.raw_len,
            e.frame,
            &e.id,
            &done.id,
        )
        .unwrap();
        assert_eq!(one, parts[1]);
        // Damage inside the frame is reported for each of its blobs, the raw blob stays good.
        let mut damaged = bytes.clone();
        damaged[table[1].offset as usize + 5] ^= 0xff;
        let mut bad = 0;
        for_each_blob(&damaged, &table, &done.id, |_, r| {
            bad += usize::from(r.is_err());
            Ok(())
        })
        .unwrap();
        assert_eq!(bad, 3);
    }
}
