//! Retention: which snapshots a keep-policy keeps, and removing the others.
//!
//! Semantics follow restic's `forget`: policies apply to each series (kind + source) on its own;
//! a snapshot kept by any rule is kept; the hourly/daily/weekly/monthly/yearly rules keep the
//! newest snapshot of each of the last N time buckets that hold a snapshot, in local time;
//! `within` keeps everything newer than the series' newest snapshot minus the duration.

use crate::error::{Error, Result};
use crate::format::manifest::Manifest;
use crate::id::Id;
use crate::repo::Repo;
use std::collections::BTreeMap;
use time::{Duration, OffsetDateTime, UtcOffset};

#[derive(Clone, Debug, Default)]
pub struct KeepPolicy {
    pub last: Option<usize>,
    pub hourly: Option<usize>,
    pub daily: Option<usize>,
    pub weekly: Option<usize>,
    pub monthly: Option<usize>,
    pub yearly: Option<usize>,
    pub within: Option<Within>,
    pub tags: Vec<String>,
}

impl KeepPolicy {
    pub fn is_empty(&self) -> bool {
        self.last.is_none()
            && self.hourly.is_none()
            && self.daily.is_none()
            && self.weekly.is_none()
            && self.monthly.is_none()
            && self.yearly.is_none()
            && self.within.is_none()
            && self.tags.is_empty()
    }
}

/// A calendar duration such as `1y2m`, `2d12h` or `3w`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Within {
    pub years: i32,
    pub months: i32,
    pub days: i64,
    pub hours: i64,
}

impl std::str::FromStr for Within {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Within, String> {
        let mut w = Within::default();
        let mut num = String::new();
        let mut any = false;
        for c in s.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let n: i64 = num
                .parse()
                .map_err(|_| format!("bad duration {s:?}: expected e.g. 2d12h"))?;
            num.clear();
            let small = i32::try_from(n).map_err(|_| format!("duration {s:?} too large"))?;
            match c {
                'y' => w.years += small,
                'm' => w.months += small,
                'w' => w.days += 7 * n,
                'd' => w.days += n,
                'h' => w.hours += n,
                _ => {
                    return Err(format!(
                        "bad duration unit {c:?} in {s:?} (use y, m, w, d, h)"
                    ));
                }
            }
            any = true;
        }
        if !num.is_empty() || !any {
            return Err(format!(
                "bad duration {s:?}: every number needs a unit (y, m, w, d, h)"
            ));
        }
        Ok(w)
    }
}

impl Within {
    /// `t` minus this duration, with calendar months and years.
    fn before(&self, t: OffsetDateTime) -> OffsetDateTime {
        let total_months = i64::from(t.year()) * 12 + i64::from(t.month() as u8)
            - 1
            - i64::from(self.years) * 12
            - i64::from(self.months);
        let year = i32::try_from(total_months.div_euclid(12)).unwrap_or(i32::MIN);
        let month = u8::try_from(total_months.rem_euclid(12) + 1).unwrap_or(1);
        let month = time::Month::try_from(month).unwrap_or(time::Month::January);
        let day = t.day().min(month.length(year));
        let shifted = time::Date::from_calendar_date(year, month, day)
            .map(|d| t.replace_date(d))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        shifted - Duration::days(self.days) - Duration::hours(self.hours)
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Decision {
    pub id: Id,
    pub time: String,
    pub kind: String,
    pub source: String,
    /// Why it is kept; empty for snapshots to remove.
    pub reasons: Vec<String>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ForgetPlan {
    pub keep: Vec<Decision>,
    pub remove: Vec<Decision>,
}

/// Applies `policy` to every series among `snapshots` (newest first within each series).
pub fn plan(
    snapshots: &[(Id, Manifest)],
    policy: &KeepPolicy,
    offset: UtcOffset,
) -> Result<ForgetPlan> {
    type Series<'m> = BTreeMap<(String, String), Vec<(Id, &'m Manifest, OffsetDateTime)>>;
    let mut series: Series<'_> = BTreeMap::new();
    for (id, m) in snapshots {
        let t = crate::time::parse_rfc3339(&m.time)
            .map_err(|_| Error::corrupt(format!("snapshot {id}"), "bad time"))?
            .to_offset(offset);
        series
            .entry((m.kind.clone(), m.source.clone()))
            .or_default()
            .push((*id, m, t));
    }
    let mut out = ForgetPlan::default();
    for (_, mut snaps) in series {
        snaps.sort_by(|a, b| b.2.cmp(&a.2).then(b.0.cmp(&a.0)));
        let newest = snaps.first().map(|s| s.2);
        let mut reasons: Vec<Vec<String>> = vec![Vec::new(); snaps.len()];
        if let Some(n) = policy.last {
            for r in reasons.iter_mut().take(n) {
                r.push("last".into());
            }
        }
        type Bucket = fn(&OffsetDateTime) -> (i32, u32, u32, u32);
        let rules: [(&str, Option<usize>, Bucket); 5] = [
            ("hourly", policy.hourly, |t| {
                (t.year(), t.month() as u32, t.day().into(), t.hour().into())
            }),
            ("daily", policy.daily, |t| {
                (t.year(), t.month() as u32, t.day().into(), 0)
            }),
            ("weekly", policy.weekly, |t| {
                let (y, w, _) = t.to_iso_week_date();
                (y, w.into(), 0, 0)
            }),
            ("monthly", policy.monthly, |t| {
                (t.year(), t.month() as u32, 0, 0)
            }),
            ("yearly", policy.yearly, |t| (t.year(), 0, 0, 0)),
        ];
        for (name, count, bucket) in rules {
            let Some(count) = count else { continue };
            let mut last_bucket = None;
            let mut kept = 0;
            for (i, s) in snaps.iter().enumerate() {
                if kept >= count {
                    break;
                }
                let b = bucket(&s.2);
                if last_bucket != Some(b) {
                    last_bucket = Some(b);
                    kept += 1;
                    reasons[i].push(format!("{name} {}", kept));
                }
            }
        }
        if let (Some(w), Some(newest)) = (policy.within, newest) {
            let threshold = w.before(newest);
            for (i, s) in snaps.iter().enumerate() {
                if s.2 >= threshold {
                    reasons[i].push("within".into());
                }
            }
        }
        for (i, s) in snaps.iter().enumerate() {
            let tags: Vec<&String> =
                s.1.tags
                    .iter()
                    .filter(|t| policy.tags.contains(t))
                    .collect();
            if !tags.is_empty() {
                reasons[i].push(format!("tag {}", tags[0]));
            }
        }
        for (s, why) in snaps.iter().zip(reasons) {
            let d = Decision {
                id: s.0,
                time: s.1.time.clone(),
                kind: s.1.kind.clone(),
                source: s.1.source.clone(),
                reasons: why,
            };
            if d.reasons.is_empty() {
                out.remove.push(d);
            } else {
                out.keep.push(d);
            }
        }
    }
    Ok(out)
}

impl Repo {
    /// Removes snapshots: manifest first (the snapshot stops existing), then its index row —
    /// the reverse of the order they were written in. Their data stays until `gc`.
    pub fn remove_snapshots(&self, ids: &[Id]) -> Result<()> {
        for id in ids {
            let path = self.layout.snapshot(id);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(path, e)),
            }
        }
        crate::store::fsync_dir(&self.layout.snapshots())?;
        for id in ids {
            self.index.remove_snapshot(id)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::{AddedStats, FORMAT_NAME, VERSION};

    fn snap(n: u8, time: &str, tags: &[&str]) -> (Id, Manifest) {
        (
            Id::of(&[n]),
            Manifest {
                format: FORMAT_NAME.into(),
                version: VERSION,
                time: time.into(),
                kind: "volume".into(),
                source: "db".into(),
                host: "h".into(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                note: None,
                meta: serde_json::Value::Null,
                streams: vec![],
                added: AddedStats::default(),
            },
        )
    }

    fn kept(plan: &ForgetPlan) -> Vec<u8> {
        let mut v: Vec<u8> = plan
            .keep
            .iter()
            .map(|d| (0..=255u8).find(|n| Id::of(&[*n]) == d.id).unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn rules_combine_per_series() {
        let snaps = vec![
            snap(1, "2026-01-01T10:00:00Z", &[]),
            snap(2, "2026-01-01T11:00:00Z", &[]),
            snap(3, "2026-01-02T09:00:00Z", &[]),
            snap(4, "2026-01-02T10:00:00Z", &["keep"]),
            snap(5, "2026-01-03T08:00:00Z", &[]),
            snap(6, "2026-01-03T09:30:00Z", &[]),
        ];
        let utc = UtcOffset::UTC;
        let p = |policy: KeepPolicy| kept(&plan(&snaps, &policy, utc).unwrap());
        assert_eq!(
            p(KeepPolicy {
                last: Some(2),
                ..Default::default()
            }),
            vec![5, 6]
        );
        // Newest of each of the last 2 days.
        assert_eq!(
            p(KeepPolicy {
                daily: Some(2),
                ..Default::default()
            }),
            vec![4, 6]
        );
        assert_eq!(
            p(KeepPolicy {
                daily: Some(10),
                ..Default::default()
            }),
            vec![2, 4, 6]
        );
        assert_eq!(
            p(KeepPolicy {
                tags: vec!["keep".into()],
                ..Default::default()
            }),
            vec![4]
        );
        // Within 1d of the newest (01-03 09:30): 01-02 09:30 onwards.
        assert_eq!(
            p(KeepPolicy {
                within: Some("1d".parse().unwrap()),
                ..Default::default()
            }),
            vec![4, 5, 6]
        );
        assert_eq!(
            p(KeepPolicy {
                last: Some(1),
                yearly: Some(1),
                ..Default::default()
            }),
            vec![6]
        );
    }

    #[test]
    fn duration_parsing() {
        assert_eq!(
            "2d12h".parse::<Within>().unwrap(),
            Within {
                days: 2,
                hours: 12,
                ..Default::default()
            }
        );
        assert_eq!("1y2m".parse::<Within>().unwrap().months, 2);
        assert!("12".parse::<Within>().is_err());
        assert!("3x".parse::<Within>().is_err());
        let t = crate::time::parse_rfc3339("2026-03-31T00:00:00Z").unwrap();
        let w: Within = "1m".parse().unwrap();
        assert_eq!(
            crate::time::format_rfc3339(w.before(t)),
            "2026-02-28T00:00:00Z"
        );
    }
}
