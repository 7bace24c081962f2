//! Writing and reading pack files (layout in `format::pack`).

use crate::error::{Error, IoContext, Result};
use crate::format::pack::{self as fmt, PackEntry, TRAILER_LEN};
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
        });
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
    /// be indexed.
    pub fn commit(self, layout: &Layout) -> Result<FinishedPack> {
        self.file.commit(&layout.pack(&self.pack.id))?;
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
    fmt::check_header(&header).map_err(|e| damaged(e.0))?;
    let mut trailer = [0u8; TRAILER_LEN];
    file.read_exact_at(&mut trailer, len - TRAILER_LEN as u64)
        .map_err(|e| damaged(e.to_string()))?;
    let trailer = fmt::decode_trailer(&trailer).map_err(|e| damaged(e.0))?;
    let table_len = trailer.table_len();
    if table_len + TRAILER_LEN as u64 + fmt::HEADER_LEN > len {
        return Err(damaged("table longer than the pack".into()));
    }
    let mut table = vec![0u8; table_len as usize];
    file.read_exact_at(&mut table, len - TRAILER_LEN as u64 - table_len)
        .map_err(|e| damaged(e.to_string()))?;
    fmt::decode_table(&table, &trailer, len).map_err(|e| damaged(e.0))
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
