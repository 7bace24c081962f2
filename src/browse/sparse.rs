//! Rebuilding sparse files for `cat`.
//!
//! A sparse member stores only its data regions; the map saying where they go is in the member's
//! header blocks (old GNU `S` headers and their extension blocks; PAX 0.0 `GNU.sparse.offset` /
//! `GNU.sparse.numbytes` pairs; PAX 0.1 `GNU.sparse.map`) or, for PAX 1.0, in decimal text at
//! the start of the stored data, padded to a block.
//!
//! The PAX parsers and the region checks are shared with `restore --extract` (crate::unpack),
//! which rebuilds PAX sparse members the tar crate does not understand.

use crate::error::{Error, Result};
use crate::format::manifest::StreamEntry;
use crate::repo::Repo;
use crate::tarscan::{BLOCK_LEN, Member, padded_len};
use std::io::Write;

/// Header blocks (with their extensions) and PAX 1.0 maps are read into memory up to this size.
pub(crate) const MAX_MAP_BYTES: u64 = 16 << 20;
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
    let stored = check_regions(&map.regions, member.size).map_err(damaged)?;
    if map
        .data_start
        .checked_add(stored)
        .is_none_or(|end| end > data_end)
    {
        return Err(damaged(DATA_SHORT));
    }
    let mut written = 0u64;
    let mut source = map.data_start;
    for &(offset, len) in &map.regions {
        write_zeros(out, offset - written)?;
        super::copy_data(repo, stream, source, len, out)?;
        source += len;
        written = offset + len;
    }
    write_zeros(out, member.size - written)?;
    Ok(member.size)
}

/// The error for a map whose regions hold more bytes than the member stores.
pub(crate) const DATA_SHORT: &str = "the sparse map describes more data than is stored";

/// Checks that `regions` are in file order, do not overlap and end within a file of `size`
/// bytes; returns how many data bytes they hold. After this, `offset + len` of every region
/// and the running sum of lengths cannot overflow.
pub(crate) fn check_regions(
    regions: &[(u64, u64)],
    size: u64,
) -> std::result::Result<u64, &'static str> {
    let mut end_so_far = 0u64;
    let mut stored = 0u64;
    for &(offset, len) in regions {
        if offset < end_so_far {
            return Err("the sparse map's regions overlap or are out of order");
        }
        end_so_far = offset
            .checked_add(len)
            .filter(|&end| end <= size)
            .ok_or("the sparse map has a region past the end of the file")?;
        // Regions are disjoint within `size`, so their total fits in a u64.
        stored += len;
    }
    Ok(stored)
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
            let (regions, map_len) = parse_decimal_map(&head).map_err(|_| unsupported())?;
            Ok(SparseMap {
                regions,
                data_start: member.data_offset + map_len,
            })
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
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

/// The `GNU.sparse.*` records of a member's PAX headers.
#[derive(Default)]
pub(crate) struct PaxSparse {
    major: Option<u64>,
    map: Option<Vec<(u64, u64)>>,
    /// PAX 0.0: offsets and sizes as separate, repeated records.
    offsets: Vec<u64>,
    sizes: Vec<u64>,
    /// The real name (PAX 0.1 and 1.0 put a placeholder in the header).
    pub(crate) name: Option<Vec<u8>>,
    /// The file's size (`realsize` in 1.0, `size` in 0.x); `None` if absent or not a number.
    pub(crate) real_size: Option<u64>,
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
            self.record(&record[..eq], &record[eq + 1..]);
        }
    }

    /// Takes one PAX record into account (records that are not about sparse files are ignored).
    pub(crate) fn record(&mut self, key: &[u8], value: &[u8]) {
        let number = std::str::from_utf8(value)
            .ok()
            .and_then(|s| s.parse::<u64>().ok());
        match key {
            b"GNU.sparse.major" => self.major = number,
            b"GNU.sparse.offset" => self.offsets.extend(number),
            b"GNU.sparse.numbytes" => self.sizes.extend(number),
            b"GNU.sparse.map" => self.map = parse_comma_map(value),
            b"GNU.sparse.name" => self.name = Some(value.to_vec()),
            b"GNU.sparse.size" | b"GNU.sparse.realsize" => self.real_size = number,
            _ => {}
        }
    }

    /// The map (or where to find it), or None if the records describe none this code knows.
    pub(crate) fn into_parsed(self) -> Option<Parsed> {
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

/// Why a PAX 1.0 map could not be read from the start of a member's data.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum MapError {
    /// The text ends inside the map: more of the data is needed (or the data is cut short).
    Incomplete,
    /// Not a map: a line that is not a decimal number, or more regions than a map may list.
    Invalid,
}

/// The longest decimal u64.
const MAX_DIGITS: usize = 20;

/// PAX 1.0 map: decimal lines `count`, then `offset`, `size` per region; padded to a block.
/// Returns the regions and the map's padded length. `head` may be any prefix of the data, so
/// that a reader can grow it until the map is complete.
pub(crate) fn parse_decimal_map(
    head: &[u8],
) -> std::result::Result<(Vec<(u64, u64)>, u64), MapError> {
    let mut pos = 0usize;
    let mut next_number = || -> std::result::Result<u64, MapError> {
        let rest = &head[pos..];
        let Some(newline) = rest.iter().position(|&b| b == b'\n') else {
            let may_grow = rest.len() <= MAX_DIGITS && rest.iter().all(u8::is_ascii_digit);
            return Err(if may_grow {
                MapError::Incomplete
            } else {
                MapError::Invalid
            });
        };
        let n = std::str::from_utf8(&rest[..newline])
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or(MapError::Invalid)?;
        pos += newline + 1;
        Ok(n)
    };
    let count = next_number()?;
    // Each region takes at least 4 bytes of text, which bounds a hostile count.
    if count > MAX_MAP_BYTES / 4 {
        return Err(MapError::Invalid);
    }
    if count > head.len() as u64 / 4 {
        return Err(MapError::Incomplete);
    }
    let mut regions = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let offset = next_number()?;
        let size = next_number()?;
        regions.push((offset, size));
    }
    Ok((regions, padded_len(pos as u64).ok_or(MapError::Invalid)?))
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
            Ok((vec![(0, 10), (4096, 5)], 512))
        );
        assert_eq!(
            parse_decimal_map(b"99999999\n"),
            Err(MapError::Invalid),
            "a count no bounded map can hold"
        );
    }

    #[test]
    fn a_cut_decimal_map_asks_for_more_and_a_bad_one_is_refused() {
        for cut in ["", "2", "2\n0\n1", "2\n0\n10\n4096\n"] {
            assert_eq!(
                parse_decimal_map(cut.as_bytes()),
                Err(MapError::Incomplete),
                "{cut:?}"
            );
        }
        for bad in [
            "x\n",
            "1\n-1\n0\n",
            "1\n+5\n1\n",
            "\n",
            "1\n0\n\0\0",
            "1\n0\n99999999999999999999999\n",
        ] {
            assert_eq!(
                parse_decimal_map(bad.as_bytes()),
                Err(MapError::Invalid),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn regions_must_be_ordered_disjoint_and_inside_the_file() {
        assert_eq!(check_regions(&[], 0), Ok(0));
        assert_eq!(check_regions(&[(0, 10), (10, 5), (100, 0)], 100), Ok(15));
        assert!(check_regions(&[(10, 5), (0, 1)], 100).is_err(), "unsorted");
        assert!(check_regions(&[(0, 10), (5, 10)], 100).is_err(), "overlap");
        assert!(check_regions(&[(90, 11)], 100).is_err(), "past the end");
        assert!(
            check_regions(&[(u64::MAX, 2)], u64::MAX).is_err(),
            "overflow"
        );
    }

    #[test]
    fn pax_records_give_map_name_and_size() {
        let mut one = PaxSparse::default();
        for (k, v) in [
            ("GNU.sparse.major", "1"),
            ("GNU.sparse.minor", "0"),
            ("GNU.sparse.name", "./a/b.img"),
            ("GNU.sparse.realsize", "16777216"),
            ("mtime", "1.5"),
        ] {
            one.record(k.as_bytes(), v.as_bytes());
        }
        assert_eq!(one.name.as_deref(), Some(&b"./a/b.img"[..]));
        assert_eq!(one.real_size, Some(16 << 20));
        assert_eq!(one.into_parsed(), Some(Parsed::MapInData));
        let mut zero_zero = PaxSparse::default();
        zero_zero.apply(
            b"28 GNU.sparse.size=16777216\n26 GNU.sparse.offset=4096\n28 GNU.sparse.numbytes=4096\n",
        );
        assert_eq!(zero_zero.real_size, Some(16 << 20));
        assert_eq!(
            zero_zero.into_parsed(),
            Some(Parsed::Map(vec![(4096, 4096)]))
        );
    }
}
