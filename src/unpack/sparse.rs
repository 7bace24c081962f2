//! GNU's PAX sparse members (`--format=pax --sparse`, formats 0.0, 0.1 and 1.0), which the tar
//! crate would write under their placeholder name (`GNUSparseFile.N/NAME`), as the packed regions
//! (and, for 1.0, the map) without the holes. They are unpacked here from the `GNU.sparse.*`
//! records, with the maps parsed by `browse::sparse`.

use super::{contained, prepare_parent, restore_owner};
use crate::browse::sparse::{
    DATA_SHORT, MAX_MAP_BYTES, MapError, Parsed, PaxSparse, check_regions, parse_decimal_map,
};
use crate::tarscan::BLOCK_LEN;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The member's `GNU.sparse.*` records, if its PAX header has any.
pub(super) fn pax_sparse_records<R: Read>(
    entry: &mut tar::Entry<'_, R>,
) -> io::Result<Option<PaxSparse>> {
    let Some(records) = entry.pax_extensions()? else {
        return Ok(None);
    };
    let mut sparse = PaxSparse::default();
    let mut any = false;
    // Malformed records are skipped, as the tar crate does for the records it reads.
    for record in records.flatten() {
        if record.key_bytes().starts_with(b"GNU.sparse.") {
            any = true;
            sparse.record(record.key_bytes(), record.value_bytes());
        }
    }
    Ok(any.then_some(sparse))
}

/// Unpacks a PAX sparse member (formats 0.0, 0.1 and 1.0) under its real name, holes as holes,
/// with the mode, mtime, xattrs and (as root) owner a regular member gets. Members whose name
/// has `..` are skipped, as `unpack_in` skips them; a damaged map is an error naming the member.
pub(super) fn unpack_pax_sparse<R: Read>(
    dir: &Path,
    entry: &mut tar::Entry<'_, R>,
    mut records: PaxSparse,
    as_root: bool,
) -> io::Result<()> {
    let name = match records.name.take() {
        Some(name) => PathBuf::from(OsStr::from_bytes(&name)),
        None => entry.path()?.into_owned(),
    };
    let Some(rel) = contained(&name) else {
        return Ok(());
    };
    let header = entry.header().clone();
    let target = write_sparse_file(dir, &rel, entry, records).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("sparse member {:?}: {e}", name.to_string_lossy()),
        )
    })?;
    set_xattrs(entry, &target)?;
    if as_root {
        restore_owner(&target, &header)?;
    }
    Ok(())
}

/// Creates `dir/rel` from the member's map and data, and gives it the header's mtime and mode
/// (as the tar crate does for regular files). Returns its path.
fn write_sparse_file<R: Read>(
    dir: &Path,
    rel: &Path,
    entry: &mut tar::Entry<'_, R>,
    records: PaxSparse,
) -> io::Result<PathBuf> {
    let stored = entry.size();
    // Without a size record the file ends where the stored data does (as `cat` assumes).
    let size = records.real_size.unwrap_or(stored);
    let DataMap {
        regions,
        map_len,
        read_ahead,
    } = match records.into_parsed() {
        Some(Parsed::Map(regions)) => DataMap {
            regions,
            map_len: 0,
            read_ahead: Vec::new(),
        },
        Some(Parsed::MapInData) => read_decimal_map(entry, stored)?,
        None => return Err(damaged("its GNU.sparse records hold no sparse map")),
    };
    let data_len = check_regions(&regions, size).map_err(damaged)?;
    if data_len > stored - map_len {
        return Err(damaged(DATA_SHORT));
    }
    // Validated before anything is created, so a damaged member leaves no file behind.
    let target = prepare_parent(dir, rel)?;
    let mut file = create_fresh(&target)?;
    let mut data = io::Cursor::new(read_ahead).chain(entry);
    write_regions(&mut file, &regions, &mut data, size)?;
    let header = data.into_inner().1.header();
    if let Ok(mtime) = header.mtime() {
        // The tar crate turns a zero mtime into 1 for regular files; so do we, to match.
        let secs = i64::try_from(mtime.max(1)).unwrap_or(i64::MAX);
        let t = filetime::FileTime::from_unix_time(secs, 0);
        filetime::set_file_handle_times(&file, Some(t), Some(t))?;
    }
    if let Ok(mode) = header.mode() {
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777))?;
    }
    Ok(target)
}

fn damaged(detail: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, detail.to_string())
}

/// A sparse member's map and where in its data the region bytes begin.
#[derive(Debug)]
struct DataMap {
    /// (offset in the file, length), in file order.
    regions: Vec<(u64, u64)>,
    /// The map's padded length in the data (0 when the map is in the PAX records).
    map_len: u64,
    /// Region bytes read past the map while looking for its end.
    read_ahead: Vec<u8>,
}

/// Reads the PAX 1.0 map at the start of a member's data. The prefix read doubles until the map
/// is complete (keeping the parsing linear) but never exceeds `MAX_MAP_BYTES`.
fn read_decimal_map(data: &mut impl Read, stored: u64) -> io::Result<DataMap> {
    let limit = stored.min(MAX_MAP_BYTES);
    let mut head = Vec::new();
    let mut want = BLOCK_LEN.min(limit);
    loop {
        let missing = want - head.len() as u64;
        if data.by_ref().take(missing).read_to_end(&mut head)? as u64 != missing {
            return Err(damaged("the archive ends inside the sparse map"));
        }
        match parse_decimal_map(&head) {
            Ok((regions, map_len)) if map_len <= stored => {
                let past_map = usize::try_from(map_len).map_or(head.len(), |n| n.min(head.len()));
                let skip = map_len - past_map as u64;
                if io::copy(&mut data.by_ref().take(skip), &mut io::sink())? != skip {
                    return Err(damaged("the archive ends inside the sparse map"));
                }
                return Ok(DataMap {
                    regions,
                    map_len,
                    read_ahead: head.split_off(past_map),
                });
            }
            Ok(_) => return Err(damaged("the sparse map is longer than the member's data")),
            Err(MapError::Invalid) => {
                return Err(damaged("the sparse map is not a list of decimal numbers"));
            }
            Err(MapError::Incomplete) if want == stored => {
                return Err(damaged("the sparse map is longer than the member's data"));
            }
            Err(MapError::Incomplete) if want == limit => {
                return Err(damaged("the sparse map is longer than the 16 MiB allowed"));
            }
            Err(MapError::Incomplete) => want = want.saturating_mul(2).min(limit),
        }
    }
}

/// Opens a new, empty file at `path`, replacing (not following) whatever non-directory is there,
/// as the tar crate does for regular members.
fn create_fresh(path: &Path) -> io::Result<File> {
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match std::fs::remove_file(path) {
            Ok(()) => open(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => open(),
            Err(e) => Err(e),
        },
        opened => opened,
    }
    .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", path.display())))
}

/// Writes each region's bytes (taken from `data` in order) at its offset and sizes the file;
/// seeking over the gaps leaves them as holes. The regions must have passed `check_regions`.
fn write_regions(
    file: &mut File,
    regions: &[(u64, u64)],
    data: &mut impl Read,
    size: u64,
) -> io::Result<()> {
    for &(offset, len) in regions {
        file.seek(SeekFrom::Start(offset))?;
        if io::copy(&mut data.by_ref().take(len), file)? != len {
            return Err(damaged("the archive ends inside the sparse file's data"));
        }
    }
    file.set_len(size)
}

/// Applies the member's `SCHILY.xattr.*` records, as the tar crate does for other members.
fn set_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>, path: &Path) -> io::Result<()> {
    let Some(records) = entry.pax_extensions()? else {
        return Ok(());
    };
    for record in records.flatten() {
        if let Some(name) = record.key_bytes().strip_prefix(b"SCHILY.xattr.") {
            xattr::set(path, OsStr::from_bytes(name), record.value_bytes()).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("setting extended attributes on {}: {e}", path.display()),
                )
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unpack::unpack_archive;

    /// A PAX record: its length prefix counts itself.
    fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
        let body_len = key.len() + value.len() + 3; // ' ', '=', '\n'
        let mut len = body_len + 1;
        while len != body_len + len.to_string().len() {
            len = body_len + len.to_string().len();
        }
        let mut out = format!("{len} {key}=").into_bytes();
        out.extend_from_slice(value);
        out.push(b'\n');
        out
    }

    /// An archive of one member: a PAX header with `records`, then `name` holding `data`.
    fn pax_member(records: &[(&str, &[u8])], name: &str, data: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let pax: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        let mut x = tar::Header::new_ustar();
        x.set_entry_type(tar::EntryType::XHeader);
        x.set_size(pax.len() as u64);
        b.append_data(&mut x, "PaxHeaders/member", &pax[..])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o640);
        h.set_mtime(1_500_000_000);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).unwrap();
        b.into_inner().unwrap()
    }

    /// A PAX 1.0 member's data: the decimal map padded to a block, then the regions' bytes.
    fn map_then_data(regions: &[(u64, u64)], bytes: &[u8]) -> Vec<u8> {
        let mut out = format!("{}\n", regions.len()).into_bytes();
        for (offset, len) in regions {
            out.extend_from_slice(format!("{offset}\n{len}\n").as_bytes());
        }
        out.resize(out.len().div_ceil(512) * 512, 0);
        out.extend_from_slice(bytes);
        out
    }

    const SIZE: u64 = 10 << 20;
    const REGIONS: [(u64, u64); 3] = [(1 << 20, 5), (5 << 20, 3), (SIZE, 0)];

    fn pax_1_0(name: &str, map: &[u8]) -> Vec<u8> {
        pax_member(
            &[
                ("GNU.sparse.major", b"1"),
                ("GNU.sparse.minor", b"0"),
                ("GNU.sparse.name", name.as_bytes()),
                ("GNU.sparse.realsize", SIZE.to_string().as_bytes()),
            ],
            "./GNUSparseFile.7/real.img",
            map,
        )
    }

    fn unpack_into_temp(archive: &[u8]) -> (tempfile::TempDir, PathBuf, io::Result<()>) {
        let dir = tempfile::tempdir().unwrap();
        let dst = dir.path().join("out");
        std::fs::create_dir(&dst).unwrap();
        let result = unpack_archive(archive, &dst, true);
        (dir, dst, result)
    }

    fn assert_rebuilt(path: &Path) {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = std::fs::metadata(path).unwrap();
        assert_eq!(meta.len(), SIZE);
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
        assert_eq!(meta.mtime(), 1_500_000_000);
        assert!(
            meta.blocks() * 512 < 1 << 20,
            "holes were written as data: {} blocks",
            meta.blocks()
        );
        let content = std::fs::read(path).unwrap();
        let mut expected = vec![0u8; SIZE as usize];
        expected[1 << 20..(1 << 20) + 5].copy_from_slice(b"hello");
        expected[5 << 20..(5 << 20) + 3].copy_from_slice(b"abc");
        assert!(content == expected, "regions misplaced");
    }

    #[test]
    fn pax_1_0_sparse_member_gets_its_real_name_size_and_holes() {
        let archive = pax_1_0("./dir/real.img", &map_then_data(&REGIONS, b"helloabc"));
        let (_tmp, dst, result) = unpack_into_temp(&archive);
        result.unwrap();
        assert_rebuilt(&dst.join("dir/real.img"));
        assert_eq!(
            std::fs::read_dir(&dst).unwrap().count(),
            1,
            "only dir/, no GNUSparseFile.N placeholder"
        );
    }

    #[test]
    fn pax_0_x_sparse_members_are_rebuilt_too() {
        let size = SIZE.to_string();
        let zero_one = pax_member(
            &[
                ("GNU.sparse.size", size.as_bytes()),
                ("GNU.sparse.name", b"real.img"),
                ("GNU.sparse.map", b"1048576,5,5242880,3"),
            ],
            "./GNUSparseFile.7/real.img",
            b"helloabc",
        );
        let zero_zero = pax_member(
            &[
                ("GNU.sparse.size", size.as_bytes()),
                ("GNU.sparse.offset", b"1048576"),
                ("GNU.sparse.numbytes", b"5"),
                ("GNU.sparse.offset", b"5242880"),
                ("GNU.sparse.numbytes", b"3"),
            ],
            "real.img",
            b"helloabc",
        );
        for archive in [zero_one, zero_zero] {
            let (_tmp, dst, result) = unpack_into_temp(&archive);
            result.unwrap();
            assert_rebuilt(&dst.join("real.img"));
        }
    }

    #[test]
    fn a_sparse_member_replaces_a_symlink_instead_of_following_it() {
        let dir = tempfile::tempdir().unwrap();
        let dst = dir.path().join("out");
        std::fs::create_dir(&dst).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, dst.join("real.img")).unwrap();
        let archive = pax_1_0("real.img", &map_then_data(&REGIONS, b"helloabc"));
        unpack_archive(&archive[..], &dst, true).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_rebuilt(&dst.join("real.img"));
    }

    #[test]
    fn damaged_sparse_maps_fail_cleanly_and_create_nothing() {
        let padded = |text: &str| {
            let mut v = text.as_bytes().to_vec();
            v.resize(512, 0);
            v.extend_from_slice(b"helloabc");
            v
        };
        let past_end = format!("1\n{}\n1\n", SIZE);
        let cases: [(Vec<u8>, &str); 7] = [
            (
                padded("2\n1048576\n5\nx242880\n3\n"),
                "not a list of decimal numbers",
            ),
            (
                padded("2\n1048576\n-5\n5242880\n3\n"),
                "not a list of decimal numbers",
            ),
            (padded(&past_end), "past the end of the file"),
            (padded("2\n0\n5\n4\n3\n"), "overlap or are out of order"),
            (
                padded("2\n5242880\n3\n1048576\n5\n"),
                "overlap or are out of order",
            ),
            (padded("2\n0\n5\n100\n30\n"), "more data than is stored"),
            (b"3\n0\n1\n2\n".to_vec(), "longer than the member's data"),
        ];
        for (data, message) in cases {
            let (_tmp, dst, result) = unpack_into_temp(&pax_1_0("real.img", &data));
            let err = result.expect_err(message).to_string();
            assert!(err.contains(message), "{message:?} not in {err:?}");
            assert!(err.contains("sparse member \"real.img\""), "{err}");
            assert_eq!(std::fs::read_dir(&dst).unwrap().count(), 0, "{message}");
        }
        let no_map = pax_member(&[("GNU.sparse.name", b"real.img")], "x", b"");
        let (_tmp, _, result) = unpack_into_temp(&no_map);
        assert!(result.unwrap_err().to_string().contains("no sparse map"));
    }

    #[test]
    fn sparse_member_names_cannot_leave_the_target() {
        let data = map_then_data(&REGIONS, b"helloabc");
        let (tmp, dst, result) = unpack_into_temp(&pax_1_0("../escape.img", &data));
        result.unwrap();
        assert!(!tmp.path().join("escape.img").exists());
        assert_eq!(std::fs::read_dir(&dst).unwrap().count(), 0);
        let (_tmp, dst, result) = unpack_into_temp(&pax_1_0("/abs/real.img", &data));
        result.unwrap();
        assert_rebuilt(&dst.join("abs/real.img"));
    }

    #[test]
    fn a_long_decimal_map_is_read_in_growing_steps() {
        let regions: Vec<(u64, u64)> = (0..300).map(|i| (i * 4096, 7)).collect();
        let bytes: Vec<u8> = (0..300 * 7).map(|i| (i % 251) as u8).collect();
        let data = map_then_data(&regions, &bytes);
        let stored = data.len() as u64;
        let mut reader = &data[..];
        let map = read_decimal_map(&mut reader, stored).unwrap();
        assert_eq!(map.regions, regions);
        assert_eq!(map.map_len, stored - bytes.len() as u64);
        let mut rest = map.read_ahead;
        rest.extend_from_slice(reader);
        assert_eq!(rest, bytes);
        let cut = &data[..700];
        assert!(
            read_decimal_map(&mut &cut[..], stored)
                .unwrap_err()
                .to_string()
                .contains("archive ends inside")
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn decimal_maps_round_trip(
            gaps in proptest::collection::vec((0u64..1 << 40, 0u64..2000), 0..200),
        ) {
            let mut regions = Vec::new();
            let mut end = 0u64;
            for (gap, len) in gaps {
                regions.push((end + gap, len));
                end += gap + len;
            }
            let total: u64 = regions.iter().map(|r| r.1).sum();
            let bytes = vec![0xa5u8; total as usize];
            let data = map_then_data(&regions, &bytes);
            let mut reader = &data[..];
            let map = read_decimal_map(&mut reader, data.len() as u64).unwrap();
            proptest::prop_assert_eq!(&map.regions, &regions);
            proptest::prop_assert_eq!(map.map_len + total, data.len() as u64);
            proptest::prop_assert_eq!(map.read_ahead.len() + reader.len(), total as usize);
            proptest::prop_assert_eq!(check_regions(&map.regions, end), Ok(total));
        }
    }
}
