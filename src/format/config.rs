//! The repository config file (`REPO/config`, JSON).
//!
//! It is the first thing read when a repository is opened: its `version` decides whether this
//! binary may read and write the repository at all.

use super::FormatError;
use serde::{Deserialize, Serialize};

pub const FORMAT_NAME: &str = "cairn-repository";
/// The repository format this binary writes. Version 1 (packs without shared frames) is read
/// too, and upgraded to 2 when opened: every version-1 repository is a valid version-2 one, but
/// a cairn that knows only version 1 must not read packs with shared frames.
pub const VERSION: u32 = 2;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub format: String,
    pub version: u32,
    /// Random, hex; distinguishes repositories (e.g. in lock files and caches).
    pub id: String,
    pub created: String,
    pub chunker: ChunkerParams,
    pub compression: CompressionParams,
    /// A pack is closed once its blobs reach this many stored bytes.
    pub pack_size: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Always "fastcdc-v2020" in version 1.
    pub algorithm: ChunkerAlgorithm,
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
    /// FastCDC normalization level (0..=3).
    pub normalization: u8,
    /// Cut paged files (databases, checkpoint memory) at page boundaries instead of by content.
    /// Absent in repositories created before it existed, where it is on.
    #[serde(default = "page_align_default")]
    pub page_align: bool,
    /// In a tar stream, a chunk never runs past the first member start at least this many
    /// bytes from its start: small members are grouped up to about this size, and a member
    /// beyond it starts a chunk of its own. Absent in repositories created before it existed,
    /// where it is `min_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_group: Option<u32>,
}

fn page_align_default() -> bool {
    true
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkerAlgorithm {
    #[serde(rename = "fastcdc-v2020")]
    FastCdc2020,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompressionParams {
    pub algorithm: CompressionAlgorithm,
    pub level: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompressionAlgorithm {
    #[serde(rename = "zstd")]
    Zstd,
}

impl ChunkerParams {
    /// Validates what a config file claims, so a damaged or hostile config cannot make the
    /// chunker misbehave (FastCDC needs even sizes within its limits, min ≤ avg ≤ max).
    pub fn validate(&self) -> Result<(), FormatError> {
        let (min, avg, max) = (self.min_size, self.avg_size, self.max_size);
        // fastcdc's own limits (MINIMUM_MAX, AVERAGE_MAX, MAXIMUM_MAX): beyond them its mask
        // table lookup (log2(avg) + normalization) runs off the end and panics.
        let ok = (64..=1 << 20).contains(&min)
            && (256..=4 << 20).contains(&avg)
            && (1024..=16 << 20).contains(&max)
            && min <= avg
            && avg <= max
            && min % 2 == 0
            && avg % 2 == 0
            && max % 2 == 0
            && self.normalization <= 3
            && self.member_group.is_none_or(|g| (512..=max).contains(&g));
        if ok {
            Ok(())
        } else {
            Err(FormatError(format!(
                "invalid chunker parameters min={min} avg={avg} max={max} normalization={} \
                 member_group={:?}",
                self.normalization, self.member_group
            )))
        }
    }
}

/// How a config file's version compares with this binary's.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Ok(Config),
    Newer { found: u32 },
}

pub fn decode(bytes: &[u8]) -> Result<Decoded, FormatError> {
    // Read the version before the rest: a newer format may have fields we cannot parse.
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| FormatError(format!("config is not JSON: {e}")))?;
    if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT_NAME) {
        return Err(FormatError::new("config is not a cairn repository config"));
    }
    let version = value
        .get("version")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| FormatError::new("config has no version"))?;
    if version > u64::from(VERSION) {
        return Ok(Decoded::Newer {
            found: u32::try_from(version).unwrap_or(u32::MAX),
        });
    }
    let config: Config =
        serde_json::from_value(value).map_err(|e| FormatError(format!("config: {e}")))?;
    config.chunker.validate()?;
    if !(1..=22).contains(&config.compression.level) {
        return Err(FormatError::new("config: zstd level out of range"));
    }
    if config.pack_size < 1 << 16 || config.pack_size > 1 << 32 {
        return Err(FormatError::new("config: pack size out of range"));
    }
    Ok(Decoded::Ok(config))
}

pub fn encode(config: &Config) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(config).unwrap_or_default();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample() -> Config {
        Config {
            format: FORMAT_NAME.into(),
            version: VERSION,
            id: "00".repeat(16),
            created: "2026-01-01T00:00:00Z".into(),
            chunker: ChunkerParams {
                algorithm: ChunkerAlgorithm::FastCdc2020,
                min_size: 16384,
                avg_size: 65536,
                max_size: 262144,
                normalization: 1,
                page_align: true,
                member_group: Some(4096),
            },
            compression: CompressionParams {
                algorithm: CompressionAlgorithm::Zstd,
                level: 3,
            },
            pack_size: 16 << 20,
        }
    }

    #[test]
    fn round_trip() {
        let c = sample();
        assert_eq!(decode(&encode(&c)).unwrap(), Decoded::Ok(c));
    }

    #[test]
    fn newer_version_is_reported_not_parsed() {
        let json = br#"{"format":"cairn-repository","version":7,"whatever":{}}"#;
        assert_eq!(decode(json).unwrap(), Decoded::Newer { found: 7 });
    }

    #[test]
    fn bad_chunker_rejected() {
        let mut c = sample();
        c.chunker.avg_size = 65535;
        assert!(decode(&encode(&c)).is_err());
        assert!(decode(b"not json").is_err());
        let mut c = sample();
        c.chunker.member_group = Some(100);
        assert!(decode(&encode(&c)).is_err(), "smaller than a tar block");
        c.chunker.member_group = Some(c.chunker.max_size + 2);
        assert!(decode(&encode(&c)).is_err(), "larger than a chunk can be");
    }

    #[test]
    fn member_group_absent_in_older_configs() {
        let mut c = sample();
        c.chunker.member_group = None;
        let json = String::from_utf8(encode(&c)).unwrap();
        assert!(
            !json.contains("member_group"),
            "written only when set: {json}"
        );
        assert_eq!(decode(json.as_bytes()).unwrap(), Decoded::Ok(c));
    }
}
