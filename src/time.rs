//! Timestamps: RFC 3339 in manifests, nanoseconds since the epoch in the index.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub fn now_rfc3339() -> String {
    format_rfc3339(OffsetDateTime::now_utc())
}

pub fn format_rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

pub fn parse_rfc3339(s: &str) -> Result<OffsetDateTime, time::error::Parse> {
    OffsetDateTime::parse(s, &Rfc3339)
}

pub fn parse_rfc3339_ns(s: &str) -> Result<i128, time::error::Parse> {
    parse_rfc3339(s).map(|t| t.unix_timestamp_nanos())
}

/// A time for people: local time where the offset is known, to the second.
pub fn human(s: &str) -> String {
    let Ok(t) = parse_rfc3339(s) else {
        return s.to_string();
    };
    let local = time::UtcOffset::current_local_offset()
        .map(|o| t.to_offset(o))
        .unwrap_or(t);
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    local.format(&fmt).unwrap_or_else(|_| s.to_string())
}
