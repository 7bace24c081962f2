use std::io;

use proptest::prelude::*;

use super::*;
use crate::tarscan::{ScanStatus, TarScanner};

fn encode_all(members: &[Member]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = MemberIndexEncoder::new(&mut out);
    for member in members {
        encoder.encode(member, &mut out).unwrap();
    }
    out
}

fn member(path: &[u8], header_offset: u64, header_len: u64, data_len: u64) -> Member {
    Member {
        path: path.to_vec(),
        link_target: Vec::new(),
        kind: MemberKind::File,
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        mtime: 1_700_000_000,
        size: data_len,
        header_offset,
        data_offset: header_offset + header_len,
        data_len,
        sparse: false,
        dev_major: 0,
        dev_minor: 0,
    }
}

/// Everything but the offsets, which the strategy below lays out in stream order.
#[allow(clippy::type_complexity)]
fn member_fields() -> impl Strategy<Value = (Member, u64, u64)> {
    let kind = prop_oneof![
        Just(MemberKind::File),
        Just(MemberKind::Dir),
        Just(MemberKind::Symlink),
        Just(MemberKind::HardLink),
        Just(MemberKind::CharDev),
        Just(MemberKind::BlockDev),
        Just(MemberKind::Fifo),
        any::<u8>()
            .prop_filter("named kinds have their own variant", |c| !(b'0'..=b'6')
                .contains(c))
            .prop_map(MemberKind::Other),
    ];
    let names = (
        prop::collection::vec(any::<u8>(), 0..300),
        prop::collection::vec(any::<u8>(), 0..40),
        kind,
    );
    let ids = (
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        any::<i64>(),
        any::<u64>(),
    );
    let layout = (
        prop_oneof![Just(0u64), 0u64..1 << 40],
        prop_oneof![Just(512u64), 0u64..1 << 20],
        prop_oneof![0u64..10_000, 0u64..1 << 40],
    );
    let rest = (any::<bool>(), any::<u32>(), any::<u32>());
    (names, ids, layout, rest).prop_map(
        |(
            (path, link_target, kind),
            (mode, uid, gid, mtime, size),
            (gap, header_len, data_len),
            (sparse, dev_major, dev_minor),
        )| {
            let member = Member {
                path,
                link_target,
                kind,
                mode,
                uid,
                gid,
                mtime,
                size,
                header_offset: 0,
                data_offset: 0,
                data_len,
                sparse,
                dev_major,
                dev_minor,
            };
            (member, gap, header_len)
        },
    )
}

fn laid_out(fields: Vec<(Member, u64, u64)>) -> Vec<Member> {
    let mut end = 0;
    fields
        .into_iter()
        .map(|(mut member, gap, header_len)| {
            member.header_offset = end + gap;
            member.data_offset = member.header_offset + header_len;
            end = member.padded_end().unwrap();
            member
        })
        .collect()
}

proptest! {
    #[test]
    fn round_trip(fields in prop::collection::vec(member_fields(), 0..20)) {
        let members = laid_out(fields);
        let encoded = encode_all(&members);
        prop_assert_eq!(decode_all(&encoded).unwrap(), members);
    }

    #[test]
    fn later_records_do_not_depend_on_earlier_sizes(
        fields in prop::collection::vec(member_fields(), 2..10),
        growth in 1u64..100_000,
    ) {
        let members = laid_out(fields.clone());
        let mut grown_fields = fields;
        grown_fields[0].0.data_len += growth;
        let grown = laid_out(grown_fields);
        let first_len = |members: &[Member]| encode_all(&members[..1]).len();
        let (a, b) = (encode_all(&members), encode_all(&grown));
        prop_assert_eq!(&a[first_len(&members)..], &b[first_len(&grown)..]);
    }

    #[test]
    fn random_bytes_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..2000), with_magic in any::<bool>()) {
        if with_magic {
            bytes.splice(0..0, MAGIC);
        }
        let _ = decode_all(&bytes);
    }

    #[test]
    fn mutated_indexes_never_panic(
        fields in prop::collection::vec(member_fields(), 1..6),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut encoded = encode_all(&laid_out(fields));
        for (at, byte) in edits {
            let at = at.index(encoded.len());
            encoded[at] = byte;
        }
        encoded.truncate(cut.index(encoded.len() + 1));
        if let Ok(members) = decode_all(&encoded) {
            // Whatever decodes is still laid out in stream order.
            let mut end = 0;
            for member in members {
                prop_assert!(member.header_offset >= end);
                prop_assert!(member.data_offset >= member.header_offset);
                end = member.padded_end().unwrap();
            }
        }
    }
}

#[test]
fn empty_index_is_just_the_magic() {
    let encoded = encode_all(&[]);
    assert_eq!(encoded, b"CRNMIDX\x01");
    assert!(decode_all(&encoded).unwrap().is_empty());
}

#[test]
fn exact_encoding_of_one_record() {
    let mut m = member(b"a", 1024, 512, 300);
    m.mtime = -1;
    m.sparse = true;
    m.kind = MemberKind::Symlink;
    m.link_target = b"b".to_vec();
    let encoded = encode_all(&[m]);
    let expected: &[u8] = &[
        1, // tag
        0x80, 0x08, // gap 1024
        0x80, 0x04, // header_len 512
        b'2', // kind
        0xa4, 0x03, // mode 0o644 = 420
        0xe8, 0x07, // uid 1000
        0xe8, 0x07, // gid 1000
        0x01, // mtime -1 zigzagged
        0xac, 0x02, // size 300
        0xac, 0x02, // data_len 300
        0x01, // flags: sparse
        0, 0, // devices
        1, b'a', 1, b'b',
    ];
    assert_eq!(&encoded[..8], MAGIC);
    assert_eq!(&encoded[8..], expected);
}

#[test]
fn absolute_offsets_are_rebuilt() {
    let members = vec![
        member(b"a", 512, 512, 1), // after a 512-byte global header
        member(b"b", 2048, 1536, 0),
        member(b"c", 3584, 512, 513),
    ];
    let decoded = decode_all(&encode_all(&members)).unwrap();
    assert_eq!(decoded, members);
}

#[test]
fn encoder_rejects_members_out_of_order() {
    let mut out = Vec::new();
    let mut encoder = MemberIndexEncoder::new(&mut out);
    encoder.encode(&member(b"a", 0, 512, 10), &mut out).unwrap();
    let before = out.len();
    let overlapping = member(b"b", 512, 512, 0);
    assert!(matches!(
        encoder.encode(&overlapping, &mut out),
        Err(MemberIndexError::NotSequential { record: 1 })
    ));
    let mut backwards = member(b"b", 1024, 0, 0);
    backwards.data_offset = 0;
    assert!(encoder.encode(&backwards, &mut out).is_err());
    let too_long = member(&vec![b'x'; (MAX_BYTES_LEN + 1) as usize], 1024, 512, 0);
    assert!(encoder.encode(&too_long, &mut out).is_err());
    assert_eq!(out.len(), before, "failed records write nothing");
}

#[test]
fn hostile_indexes_give_errors() {
    let valid = encode_all(&[member(b"a", 0, 512, 10)]);
    let with = |tail: &[u8]| [&MAGIC[..], tail].concat();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "bad magic"),
        (b"CRNMID".to_vec(), "bad magic"),
        (b"XRNMIDX\x01".to_vec(), "bad magic"),
        (b"CRNMIDX\x02".to_vec(), "version 2"),
        (with(&[0]), "record tag 0"),
        (with(&[7]), "record tag 7"),
        (with(&[1]), "middle of record 0"),
        (valid[..valid.len() - 1].to_vec(), "middle of record 0"),
        (
            with(&[
                1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
            ]),
            "varint in field gap",
        ),
        (with(&[1, 0x80, 0x00]), "varint in field gap"),
        (
            with(&[
                1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ]),
            "varint in field gap",
        ),
        (
            with(&[1, 0, 0, b'0', 0x80, 0x80, 0x80, 0x80, 0x10]),
            "mode out of range",
        ),
        (
            with(&[1, 0, 0, b'0', 0, 0, 0, 0, 0, 0, 2]),
            "unknown flag bits",
        ),
        (
            with(&[1, 0, 0, b'0', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x81, 0x80, 0x40]),
            "path out of range",
        ),
        (
            with(&[1, 0, 0, b'0', 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, b'a']),
            "middle of record 0",
        ),
    ];
    for (bytes, message) in cases {
        let error = decode_all(&bytes).unwrap_err().to_string();
        assert!(error.contains(message), "{bytes:?}: {error}");
    }
}

#[test]
fn overflowing_offsets_are_errors() {
    let mut bytes = MAGIC.to_vec();
    for gap in [u64::MAX - 10, 100] {
        bytes.push(1);
        write_uvar(&mut bytes, gap);
        // header_len, kind, nine numbers, two empty strings.
        bytes.extend_from_slice(&[0, b'0', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }
    let error = decode_all(&bytes).unwrap_err();
    assert!(
        matches!(error, MemberIndexError::OffsetOverflow { record: 1 }),
        "{error}"
    );
}

#[test]
fn decoder_stops_after_an_error() {
    let mut bytes = encode_all(&[member(b"a", 0, 512, 10)]);
    bytes.push(9);
    bytes.extend(encode_all(&[member(b"b", 1024, 512, 1)])[8..].iter());
    let results: Vec<_> = MemberIndexDecoder::new(bytes.as_slice()).collect();
    assert_eq!(results.len(), 2);
    assert!(results[0].is_ok());
    assert!(results[1].is_err());
}

/// A reader handing out one byte at a time, with interruptions, like a slow pipe.
struct Trickle<'a> {
    bytes: &'a [u8],
    interrupt: bool,
}

impl io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.interrupt = !self.interrupt;
        if self.interrupt {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let Some((&first, rest)) = self.bytes.split_first() else {
            return Ok(0);
        };
        buf[0] = first;
        self.bytes = rest;
        Ok(1)
    }
}

#[test]
fn decodes_from_a_trickling_reader() {
    let members = vec![member(b"a", 0, 512, 10), member(b"b", 1024, 512, 1)];
    let encoded = encode_all(&members);
    let reader = Trickle {
        bytes: &encoded,
        interrupt: false,
    };
    let decoded: Result<Vec<_>, _> = MemberIndexDecoder::new(reader).collect();
    assert_eq!(decoded.unwrap(), members);
}

#[test]
fn scanned_archive_round_trips() {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, content) in [
        ("a", &b"alpha"[..]),
        ("dir/b", &[5u8; 2000][..]),
        ("c", b""),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        builder.append_data(&mut header, name, content).unwrap();
    }
    let stream = builder.into_inner().unwrap();
    let mut scanner = TarScanner::new();
    let mut members = Vec::new();
    scanner.feed(&stream, &mut members);
    assert_eq!(scanner.finish(), ScanStatus::Complete);
    assert_eq!(decode_all(&encode_all(&members)).unwrap(), members);
}

#[test]
fn zigzag_round_trips_extremes() {
    for value in [0, 1, -1, i64::MAX, i64::MIN, 1_700_000_000, -62_135_596_800] {
        assert_eq!(unzigzag(zigzag(value)), value);
    }
    assert_eq!(zigzag(-1), 1);
    assert_eq!(zigzag(1), 2);
}
