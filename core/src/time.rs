//! Time as events carry it: milliseconds since the Unix epoch, UTC.

use chrono::{DateTime, Datelike, SecondsFormat, TimeZone, Timelike, Utc};
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
        self.rfc3339().as_str().to_owned()
    }
    /// The same text, kept on the stack: for JSON written straight from a value, where a
    /// `String` per date would be allocated only to be copied and dropped.
    pub fn rfc3339(self) -> Rfc3339 {
        let d = self.to_datetime();
        let mut text = Rfc3339 {
            len: 24,
            buf: [0; 32],
        };
        let Ok(year) = u32::try_from(d.year()) else {
            return Rfc3339::spelled(&d);
        };
        if year > 9999 {
            return Rfc3339::spelled(&d);
        }
        // each field's digits into their place in the template
        text.buf[..24].copy_from_slice(b"0000-00-00T00:00:00.000Z");
        for (at, width, value) in [
            (0, 4, year),
            (5, 2, d.month()),
            (8, 2, d.day()),
            (11, 2, d.hour()),
            (14, 2, d.minute()),
            (17, 2, d.second()),
            (20, 3, d.timestamp_subsec_millis()),
        ] {
            decimal(&mut text.buf[at..at + width], value);
        }
        text
    }
    /// Parse an RFC 3339 date-time (timezone required).
    pub fn parse_rfc3339(s: &str) -> Option<Millis> {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| Millis(d.timestamp_millis()))
    }
    /// Adds one calendar year (Feb 29 falls back to Feb 28).
    pub fn plus_one_year(self) -> Millis {
        let d = self.to_datetime();
        let next = d
            .with_year(d.year() + 1)
            .or_else(|| d.with_day(28).and_then(|d| d.with_year(d.year() + 1)))
            .unwrap_or(d);
        Millis(next.timestamp_millis())
    }
}

/// `value` in decimal digits filling `out`, leading zeros included.
fn decimal(out: &mut [u8], mut value: u32) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// An instant's RFC 3339 text (`Millis::rfc3339`): what `to_rfc3339` returns, without a heap
/// allocation. Serializes as that string.
#[derive(Clone, Copy)]
pub struct Rfc3339 {
    len: u8,
    /// Room for chrono's widest form, a signed six-digit year: `+262143-12-31T23:59:59.999Z`.
    buf: [u8; 32],
}

impl Rfc3339 {
    /// A year outside 0000-9999, spelled by chrono (`+10000-01-01T00:00:00.000Z`).
    fn spelled(d: &DateTime<Utc>) -> Rfc3339 {
        let long = d.to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut text = Rfc3339 {
            len: 0,
            buf: [0; 32],
        };
        let n = long.len().min(text.buf.len());
        text.buf[..n].copy_from_slice(&long.as_bytes()[..n]);
        text.len = n as u8;
        text
    }
    pub fn as_str(&self) -> &str {
        // only ASCII is ever written
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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

    #[test]
    fn years_beyond_four_digits_are_spelled_as_chrono_does() {
        assert_eq!(
            Millis(253_402_300_800_000).to_rfc3339(),
            "+10000-01-01T00:00:00.000Z"
        );
        assert_eq!(
            Millis(253_402_300_799_999).to_rfc3339(),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(
            Millis(-62_167_219_200_001).to_rfc3339(),
            "-0001-12-31T23:59:59.999Z"
        );
        assert_eq!(Millis(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
    }

    proptest::proptest! {
        /// The text written digit by digit is chrono's, for every instant a `Millis` can hold.
        #[test]
        fn rfc3339_is_chronos_text(ms in proptest::prop_oneof![
            -62_167_219_200_000i64..253_402_300_800_000,
            proptest::num::i64::ANY,
        ]) {
            let t = Millis(ms);
            let chrono = t.to_datetime().to_rfc3339_opts(SecondsFormat::Millis, true);
            proptest::prop_assert_eq!(t.to_rfc3339(), chrono.clone());
            proptest::prop_assert_eq!(serde_json::to_string(&t.rfc3339()).unwrap(), format!("\"{chrono}\""));
        }
    }
}
