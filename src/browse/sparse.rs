//! Rebuilding sparse files for `cat`.
//!
//! A sparse member stores only its data regions; the map saying where they go is in the member's
//! header blocks (old GNU `S` headers and their extension blocks; PAX 0.0 `GNU.sparse.offset` /
//! `GNU.sparse.numbytes` pairs; PAX 0.1 `GNU.sparse.map`) or, for PAX 1.0, in decimal text at
//! the start of the stored data, padded to a block.

use crate::error::{Error, Result};
use crate::format::manifest::StreamEntry;
use crate::repo::Repo;
use crate::tarscan::{BLOCK_LEN, Member, padded_len};
use std::io::Write;

/// Header blocks (with their extensions) and PAX 1.0 maps are read into memory up to this size.
const MAX_MAP_BYTES: u64 = 16 << 20;
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Where a sparse member's regions go, and where its region bytes start in the stream.
#[derive(Debug, PartialEq, Eq)]
struct SparseMap {
    /// (offset in the file, length), in file order.
    regions: Vec<(u64, u64)>,
    /// Stream offset of the first region's bytes.
    data_start: u64,
}

pub(super) fn write_sparse(
    repo: &Repo,
    stream: &StreamEntry,
    member: &Member,
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    let map = read_map(repo, stream, member)?;
    let damaged = |detail: &str| {
        Error::corrupt(
            format!("sparse member {:?}", String::from_utf8_lossy(&member.path)),
            detail.to_string(),
        )
    };
    let data_end = member
        .data_offset
        .checked_add(member.data_len)
        .ok_or_else(|| damaged("offsets overflow"))?;
    let mut written = 0u64;
    let mut source = map.data_start;
    for &(offset, len) in &map.regions {
        let region_end = offset
            .checked_add(len)
            .filter(|&end| offset >= written && end <= member.size)
            .ok_or_else(|| damaged("the sparse map's regions overlap or exceed the file size"))?;
        write_zeros(out, offset - written)?;
        let source_end = source
            .checked_add(len)
            .filter(|&end| end <= data_end)
            .ok_or_else(|| damaged("the sparse map describes more data than is stored"))?;
        super::copy_data(repo, stream, source, len, out)?;
        source = source_end;
        written = region_end;
    }
    write_zeros(out, member.size - written)?;
    Ok(member.size)
}

fn write_zeros(out: &mut (dyn Write + Send), mut n: u64) -> Result<()> {
    while n > 0 {
        let len = n.min(ZEROS.len() as u64) as usize;
        out.write_all(&ZEROS[..len]).map_err(Error::IoPlain)?;
        n -= len as u64;
    }
    Ok(())
}

fn read_map(repo: &Repo, stream: &StreamEntry, member: &Member) -> Result<SparseMap> {
    let headers = super::read_small(
        repo,
        &stream.root,
        member.header_offset,
        member.data_offset,
        MAX_MAP_BYTES,
    )?;
    let unsupported = || {
        Error::Invalid(format!(
            "{:?} is a sparse file in a format cat cannot rebuild; extract it with `restore --extract` instead",
            String::from_utf8_lossy(&member.path)
        ))
    };
    match parse_headers(&headers).ok_or_else(unsupported)? {
        Parsed::Map(regions) => Ok(SparseMap {
            regions,
            data_start: member.data_offset,
        }),
        Parsed::MapInData => {
            let head_len = member.data_len.min(MAX_MAP_BYTES);
            let head = super::read_small(
                repo,
                &stream.root,
                member.data_offset,
                member.data_offset + head_len,
                MAX_MAP_BYTES,
            )?;
            let (regions, map_len) = parse_decimal_map(&head).ok_or_else(unsupported)?;
            Ok(SparseMap {
                regions,
                data_start: member.data_offset + map_len,
            })
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Map(Vec<(u64, u64)>),
    /// PAX 1.0: the map is at the start of the data.
    MapInData,
}

/// Walks a member's header blocks (extensions first, then the member header) for its map.
fn parse_headers(headers: &[u8]) -> Option<Parsed> {
    let mut pax = PaxSparse::default();
    let mut pos = 0usize;
    while pos + BLOCK_LEN as usize <= headers.len() {
        let block = &headers[pos..pos + BLOCK_LEN as usize];
        let size = parse_numeric(&block[124..136])?;
        let content_start = pos + BLOCK_LEN as usize;
        match block[156] {
            b'x' | b'X' => {
                let end = content_start.checked_add(usize::try_from(size).ok()?)?;
                pax.apply(headers.get(content_start..end)?);
            }
            b'L' | b'K' | b'g' => {}
            b'S' => return gnu_old_map(block, &headers[content_start..]).map(Parsed::Map),
            _ => return pax.into_parsed(),
        }
        pos = content_start.checked_add(usize::try_from(padded_len(size)?).ok()?)?;
    }
    None
}

/// Old GNU format: four entries in the header, 21 in each extension block that follows.
fn gnu_old_map(header: &[u8], extensions: &[u8]) -> Option<Vec<(u64, u64)>> {
    let mut regions = Vec::new();
    let mut push_entries = |area: &[u8]| -> Option<()> {
        for entry in area.chunks_exact(24) {
            if entry.iter().all(|&b| b == 0) {
                continue;
            }
            regions.push((parse_numeric(&entry[..12])?, parse_numeric(&entry[12..])?));
        }
        Some(())
    };
    push_entries(&header[386..386 + 4 * 24])?;
    let mut extended = header[482] != 0;
    let mut blocks = extensions.chunks_exact(BLOCK_LEN as usize);
    while extended {
        let block = blocks.next()?;
        push_entries(&block[..21 * 24])?;
        extended = block[504] != 0;
    }
    Some(regions)
}

#[derive(Default)]
struct PaxSparse {
    major: Option<u64>,
    map: Option<Vec<(u64, u64)>>,
    /// PAX 0.0: offsets and sizes as separate, repeated records.
    offsets: Vec<u64>,
    sizes: Vec<u64>,
}

impl PaxSparse {
    fn apply(&mut self, content: &[u8]) {
        let mut rest = content;
        while let Some(space) = rest.iter().position(|&b| b == b' ') {
            let Some(len) = std::str::from_utf8(&rest[..space])
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
                .filter(|&len| len > space && len <= rest.len())
            else {
                return;
            };
            let record = &rest[space + 1..len];
            rest = &rest[len..];
            let record = record.strip_suffix(b"\n").unwrap_or(record);
            let Some(eq) = record.iter().position(|&b| b == b'=') else {
                continue;
            };
            let (key, value) = (&record[..eq], &record[eq + 1..]);
            let number = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse::<u64>().ok());
            match key {
                b"GNU.sparse.major" => self.major = number,
                b"GNU.sparse.offset" => self.offsets.extend(number),
                b"GNU.sparse.numbytes" => self.sizes.extend(number),
                b"GNU.sparse.map" => self.map = parse_comma_map(value),
                _ => {}
            }
        }
    }

    fn into_parsed(self) -> Option<Parsed> {
        if self.major == Some(1) {
            return Some(Parsed::MapInData);
        }
        if let Some(map) = self.map {
            return Some(Parsed::Map(map));
        }
        if !self.offsets.is_empty() && self.offsets.len() == self.sizes.len() {
            return Some(Parsed::Map(
                self.offsets.into_iter().zip(self.sizes).collect(),
            ));
        }
        None
    }
}

fn parse_comma_map(value: &[u8]) -> Option<Vec<(u64, u64)>> {
    let numbers = std::str::from_utf8(value)
        .ok()?
        .split(',')
        .map(|n| n.trim().parse::<u64>().ok())
        .collect::<Option<Vec<u64>>>()?;
    if numbers.len() % 2 != 0 {
        return None;
    }
    Some(numbers.chunks_exact(2).map(|p| (p[0], p[1])).collect())
}

/// PAX 1.0 map: decimal lines `count`, then `offset`, `size` per region; padded to a block.
/// Returns the regions and the map's padded length.
fn parse_decimal_map(head: &[u8]) -> Option<(Vec<(u64, u64)>, u64)> {
    let mut pos = 0usize;
    let mut next_number = || -> Option<u64> {
        let newline = head[pos..].iter().position(|&b| b == b'\n')?;
        let n = std::str::from_utf8(&head[pos..pos + newline])
            .ok()?
            .parse()
            .ok()?;
        pos += newline + 1;
        Some(n)
    };
    let count = next_number()?;
    // Each region takes at least 4 bytes of text, which bounds a hostile count.
    if count > head.len() as u64 / 4 {
        return None;
    }
    let mut regions = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let offset = next_number()?;
        let size = next_number()?;
        regions.push((offset, size));
    }
    Some((regions, padded_len(pos as u64)?))
}

/// A tar numeric field: octal text (space or NUL terminated) or GNU base-256.
fn parse_numeric(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        if field[0] & 0x40 != 0 {
            return None;
        }
        let mut value: u64 = u64::from(field[0] & 0x3f);
        for &b in &field[1..] {
            value = value.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(value);
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ' || b == 0)
        .take_while(|&b| b != b' ' && b != 0)
        .collect();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&text).ok()?, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_fields() {
        assert_eq!(parse_numeric(b"0000644\0"), Some(0o644));
        assert_eq!(parse_numeric(b"  17 \0"), Some(0o17));
        assert_eq!(parse_numeric(&[0x80, 0, 0, 1, 0]), Some(256));
        assert_eq!(parse_numeric(b"\0\0\0"), Some(0));
        assert_eq!(parse_numeric(b"9"), None);
    }

    #[test]
    fn pax_maps() {
        let map = parse_comma_map(b"0,10,4096,5").unwrap();
        assert_eq!(map, vec![(0, 10), (4096, 5)]);
        assert!(parse_comma_map(b"1,2,3").is_none());
        let mut text = b"2\n0\n10\n4096\n5\n".to_vec();
        text.resize(600, 0);
        assert_eq!(
            parse_decimal_map(&text),
            Some((vec![(0, 10), (4096, 5)], 512))
        );
        assert!(parse_decimal_map(b"99999999\n").is_none());
    }
}
