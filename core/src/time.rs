//! Time as events carry it: milliseconds since the Unix epoch, UTC.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// An instant, in milliseconds since the Unix epoch. The clock is always an argument.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Millis(pub i64);

pub const SECOND: i64 = 1_000;
pub const MINUTE: i64 = 60 * SECOND;
pub const HOUR: i64 = 60 * MINUTE;
pub const DAY: i64 = 24 * HOUR;

impl Millis {
    pub fn now() -> Millis {
        Millis(Utc::now().timestamp_millis())
    }
    pub fn plus(self, ms: i64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }
    pub fn minus(self, ms: i64) -> Millis {
        Millis(self.0.saturating_sub(ms))
    }
    pub fn to_datetime(self) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(self.0)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
    /// `YYYY-MM-DDTHH:MM:SS.sssZ`, as JavaScript's `Date.toJSON`.
    pub fn to_rfc3339(self) -> String {
        self.to_datetime()
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }
    /// Parse an RFC 3339 date-time (timezone required).
    pub fn parse_rfc3339(s: &str) -> Option<Millis> {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| Millis(d.timestamp_millis()))
    }
    /// Adds one calendar year (Feb 29 falls back to Feb 28).
    pub fn plus_one_year(self) -> Millis {
        use chrono::Datelike;
        let d = self.to_datetime();
        let next = d
            .with_year(d.year() + 1)
            .or_else(|| d.with_day(28).and_then(|d| d.with_year(d.year() + 1)))
            .unwrap_or(d);
        Millis(next.timestamp_millis())
    }
}

impl From<DateTime<Utc>> for Millis {
    fn from(d: DateTime<Utc>) -> Self {
        Millis(d.timestamp_millis())
    }
}

impl fmt::Debug for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_rfc3339())
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_javascript() {
        let t = Millis::parse_rfc3339("2024-02-29T10:00:00.5+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2024-02-29T09:00:00.500Z");
        assert_eq!(t.plus_one_year().to_rfc3339(), "2025-02-28T09:00:00.500Z");
        assert!(Millis::parse_rfc3339("2024-02-29T10:00:00").is_none());
    }
}
