//! Time buckets: every aggregate exists at minute, hour and day grain.
//!
//! A bucket is identified by the UTC start of its interval. Key names carry a
//! compact, human-readable label (`202611260658`, `2026112606`, `20261126`) so
//! that `redis-cli --scan` output can be read by an operator; the gateway
//! computes labels from a time range, never by scanning.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Timelike, Utc};
use std::fmt;
use std::str::FromStr;

/// The granularity of a pre-aggregated bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Grain {
    Minute,
    Hour,
    Day,
}

impl Grain {
    pub const ALL: [Grain; 3] = [Grain::Minute, Grain::Hour, Grain::Day];

    /// Length of one bucket in milliseconds.
    pub const fn step_ms(self) -> i64 {
        match self {
            Grain::Minute => 60_000,
            Grain::Hour => 3_600_000,
            Grain::Day => 86_400_000,
        }
    }

    /// The short code used inside key names.
    pub const fn code(self) -> &'static str {
        match self {
            Grain::Minute => "m",
            Grain::Hour => "h",
            Grain::Day => "d",
        }
    }

    /// The table-name suffix (`traffic_minute`, ...).
    pub const fn suffix(self) -> &'static str {
        match self {
            Grain::Minute => "minute",
            Grain::Hour => "hour",
            Grain::Day => "day",
        }
    }

    /// Start of the bucket containing `ts_ms` (UTC, milliseconds since epoch).
    pub const fn truncate(self, ts_ms: i64) -> i64 {
        ts_ms.div_euclid(self.step_ms()) * self.step_ms()
    }

    /// Key label of the bucket containing `ts_ms`.
    pub fn label(self, ts_ms: i64) -> String {
        let dt = DateTime::<Utc>::from_timestamp_millis(self.truncate(ts_ms)).unwrap_or_default();
        match self {
            Grain::Minute => format!(
                "{:04}{:02}{:02}{:02}{:02}",
                dt.year(),
                dt.month(),
                dt.day(),
                dt.hour(),
                dt.minute()
            ),
            Grain::Hour => format!("{:04}{:02}{:02}{:02}", dt.year(), dt.month(), dt.day(), dt.hour()),
            Grain::Day => format!("{:04}{:02}{:02}", dt.year(), dt.month(), dt.day()),
        }
    }

    /// Inverse of [`Grain::label`]: the bucket start in milliseconds.
    pub fn parse_label(self, label: &str) -> Option<i64> {
        let padded = match self {
            Grain::Minute if label.len() == 12 => format!("{label}00"),
            Grain::Hour if label.len() == 10 => format!("{label}0000"),
            Grain::Day if label.len() == 8 => {
                let d = NaiveDate::parse_from_str(label, "%Y%m%d").ok()?;
                return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis());
            }
            _ => return None,
        };
        let dt = NaiveDateTime::parse_from_str(&padded, "%Y%m%d%H%M%S").ok()?;
        Some(dt.and_utc().timestamp_millis())
    }

    /// Bucket starts covering `[from_ms, to_ms]` (both inclusive), ascending.
    pub fn buckets(self, from_ms: i64, to_ms: i64) -> impl Iterator<Item = i64> {
        let start = self.truncate(from_ms);
        let step = self.step_ms();
        let count = if to_ms < from_ms {
            0
        } else {
            (self.truncate(to_ms) - start) / step + 1
        };
        (0..count).map(move |i| start + i * step)
    }
}

impl fmt::Display for Grain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix())
    }
}

impl FromStr for Grain {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "minute" | "m" => Ok(Grain::Minute),
            "hour" | "h" => Ok(Grain::Hour),
            "day" | "d" => Ok(Grain::Day),
            other => Err(format!("unknown grain {other:?} (minute, hour, day)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip() {
        let ts = 1_795_000_000_123; // 2026-11-18T...
        for g in Grain::ALL {
            let label = g.label(ts);
            assert_eq!(g.parse_label(&label), Some(g.truncate(ts)), "{g}");
        }
        assert_eq!(Grain::Minute.label(0), "197001010000");
        assert_eq!(Grain::Hour.label(3_600_000 * 25), "1970010201");
        assert_eq!(Grain::Day.label(86_400_000 * 31), "19700201");
    }

    #[test]
    fn buckets_cover_inclusive_range() {
        let b: Vec<_> = Grain::Hour.buckets(3_600_000 + 5, 3 * 3_600_000).collect();
        assert_eq!(b, vec![3_600_000, 7_200_000, 10_800_000]);
        assert_eq!(Grain::Day.buckets(10, 5).count(), 0);
        assert_eq!(Grain::Minute.truncate(-1), -60_000);
    }
}
