//! Snapshot manifests (`REPO/snapshots/<id>`, JSON). A snapshot's id is the BLAKE3 of its
//! manifest file's bytes, so a manifest is immutable and self-verifying.

use super::FormatError;
use crate::id::Id;
use serde::{Deserialize, Serialize};

pub const FORMAT_NAME: &str = "cairn-snapshot";
pub const VERSION: u32 = 1;
/// Manifests are small; anything larger is damage or hostile input.
pub const MAX_LEN: usize = 64 << 20;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// RFC 3339, UTC, nanosecond precision.
    pub time: String,
    /// What was snapshotted: "tar", "dir", "volume", "container", "image", "checkpoint", ...
    pub kind: String,
    /// Names the series together with `kind`.
    pub source: String,
    pub host: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub note: Option<String>,
    /// Source-specific metadata (a Docker volume's driver and labels, ...).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub meta: serde_json::Value,
    pub streams: Vec<StreamEntry>,
    /// What ingesting this snapshot added to the repository (informational).
    pub added: AddedStats,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEntry {
    pub name: String,
    /// "tar" for tar archives, "data" for opaque bytes, "json" for documents.
    pub role: String,
    /// Root of the stream's blob tree.
    pub root: Id,
    /// Stream length in bytes.
    pub length: u64,
    /// BLAKE3 of the whole stream.
    pub digest: Id,
    /// The tar member index, when the stream parsed as a tar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<MembersRef>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersRef {
    pub root: Id,
    pub length: u64,
    pub count: u64,
    /// "complete", "truncated" or "invalid": how far the tar parsed.
    pub status: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddedStats {
    pub chunks: u64,
    pub new_chunks: u64,
    pub new_bytes: u64,
    pub stored_bytes: u64,
    /// Bytes read that were cut at page boundaries (paged files such as databases).
    #[serde(default)]
    pub page_aligned_bytes: u64,
    /// Of `stored_bytes`, those that are not stream data: tree nodes, pack headers and tables.
    #[serde(default)]
    pub metadata_bytes: u64,
}

pub fn encode(m: &Manifest) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(m).unwrap_or_default();
    out.push(b'\n');
    out
}

pub fn decode(bytes: &[u8]) -> Result<Manifest, FormatError> {
    if bytes.len() > MAX_LEN {
        return Err(FormatError::new("manifest too large"));
    }
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| FormatError(format!("manifest is not JSON: {e}")))?;
    if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT_NAME) {
        return Err(FormatError::new("not a cairn snapshot manifest"));
    }
    match value.get("version").and_then(|v| v.as_u64()) {
        Some(v) if v <= u64::from(VERSION) => {}
        Some(v) => {
            return Err(FormatError(format!(
                "manifest version {v} is newer than this cairn supports"
            )));
        }
        None => return Err(FormatError::new("manifest has no version")),
    }
    let m: Manifest =
        serde_json::from_value(value).map_err(|e| FormatError(format!("manifest: {e}")))?;
    crate::time::parse_rfc3339_ns(&m.time)
        .map_err(|_| FormatError(format!("manifest time {:?} is not RFC 3339", m.time)))?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let m = Manifest {
            format: FORMAT_NAME.into(),
            version: VERSION,
            time: "2026-11-23T02:00:00.123456789Z".into(),
            kind: "tar".into(),
            source: "a.tar".into(),
            host: "h".into(),
            tags: vec!["t".into()],
            note: None,
            meta: serde_json::Value::Null,
            streams: vec![StreamEntry {
                name: "data".into(),
                role: "tar".into(),
                root: Id::of(b"r"),
                length: 3,
                digest: Id::of(b"abc"),
                members: None,
            }],
            added: AddedStats::default(),
        };
        let bytes = encode(&m);
        assert_eq!(decode(&bytes).unwrap(), m);
        assert!(decode(b"{}").is_err());
        assert!(decode(&bytes[..bytes.len() / 2]).is_err());
        let newer = String::from_utf8(bytes)
            .unwrap()
            .replace("\"version\": 1", "\"version\": 2");
        assert!(decode(newer.as_bytes()).unwrap_err().0.contains("newer"));
    }
}
