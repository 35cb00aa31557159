//! Time as events carry it: milliseconds since the Unix epoch, UTC.

use chrono::{DateTime, Datelike, SecondsFormat, TimeZone, Utc};
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
        // years 0000-9999 by civil arithmetic (chrono's calendar fields cost several hundred
        // instructions a date); chrono spells the rest
        if !(FIRST_FOUR_DIGIT_YEAR..AFTER_FOUR_DIGIT_YEARS).contains(&self.0) {
            return Rfc3339::spelled(&self.to_datetime());
        }
        let days = self.0.div_euclid(DAY);
        let in_day = self.0.rem_euclid(DAY);
        let (year, month, day) = civil_from_days(days);
        let mut text = Rfc3339 {
            len: 24,
            buf: [0; 32],
        };
        // each field's digits into their place in the template
        text.buf[..24].copy_from_slice(b"0000-00-00T00:00:00.000Z");
        // in range, every field is non-negative and fits in u32
        let field = |v: i64| u32::try_from(v).unwrap_or(0);
        for (at, width, value) in [
            (0, 4, field(year)),
            (5, 2, month),
            (8, 2, day),
            (11, 2, field(in_day / HOUR)),
            (14, 2, field(in_day % HOUR / MINUTE)),
            (17, 2, field(in_day % MINUTE / SECOND)),
            (20, 3, field(in_day % SECOND)),
        ] {
            decimal(&mut text.buf[at..at + width], value);
        }
        text
    }
    /// Parse an RFC 3339 date-time (timezone required). An offset of hours and minutes without
    /// its colon (`+0100`), which JSON schema's `date-time` and JavaScript's `Date` take, is
    /// read too; an offset of hours alone is not.
    pub fn parse_rfc3339(s: &str) -> Option<Millis> {
        let parse = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|d| Millis(d.timestamp_millis()))
        };
        parse(s).or_else(|| {
            let (head, tail) = s.split_at_checked(s.len().checked_sub(5)?)?;
            let b = tail.as_bytes();
            let compact = (b[0] == b'+' || b[0] == b'-') && b[1..].iter().all(u8::is_ascii_digit);
            compact.then(|| parse(&format!("{head}{}:{}", &tail[..3], &tail[3..])))?
        })
    }
    /// Adds one calendar year as JavaScript's `setFullYear(getFullYear() + 1)` does in UTC:
    /// Feb 29 rolls over to Mar 1 of a year without one.
    pub fn plus_one_year(self) -> Millis {
        let d = self.to_datetime();
        let next = d
            .with_year(d.year() + 1)
            .or_else(|| {
                d.with_day(28)
                    .and_then(|d| d.with_year(d.year() + 1))
                    .map(|d| d + chrono::Duration::days(1))
            })
            .unwrap_or(d);
        Millis(next.timestamp_millis())
    }
}

/// 0000-01-01T00:00:00.000Z and 10000-01-01T00:00:00.000Z.
const FIRST_FOUR_DIGIT_YEAR: i64 = -62_167_219_200_000;
const AFTER_FOUR_DIGIT_YEARS: i64 = 253_402_300_800_000;

/// The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`: 400-year eras, years starting in March).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097); // [0, 146096]
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_month = (5 * day_of_year + 2) / 153; // [0, 11], March first
    let day = day_of_year - (153 * march_month + 2) / 5 + 1;
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // day in [1, 31] and month in [1, 12]
    (year, month as u32, day as u32)
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
        assert_eq!(t.plus_one_year().to_rfc3339(), "2025-03-01T09:00:00.500Z");
        // Feb 28 and Feb 29 of a leap year stay apart; Dec 31 stays Dec 31
        for (from, to) in [
            ("2027-02-28T23:59:59.999Z", "2028-02-28T23:59:59.999Z"),
            ("2028-02-28T00:00:00.000Z", "2029-02-28T00:00:00.000Z"),
            ("2028-02-29T00:00:00.000Z", "2029-03-01T00:00:00.000Z"),
            ("2027-12-31T23:59:59.999Z", "2028-12-31T23:59:59.999Z"),
        ] {
            let t = Millis::parse_rfc3339(from).unwrap();
            assert_eq!(t.plus_one_year().to_rfc3339(), to);
        }
        assert!(Millis::parse_rfc3339("2024-02-29T10:00:00").is_none());
        // an offset without its colon, as JSON schema's date-time takes it
        assert_eq!(Millis::parse_rfc3339("2024-02-29T10:00:00.5+0100"), Some(t));
        assert!(Millis::parse_rfc3339("2024-02-29T10:00:00+01x0").is_none());
        assert!(Millis::parse_rfc3339("+0100").is_none());
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

    /// The civil arithmetic gives chrono's date for every day of years 0000 to 9999.
    #[test]
    fn civil_days_are_chronos_dates() {
        let first = FIRST_FOUR_DIGIT_YEAR / DAY;
        let after = AFTER_FOUR_DIGIT_YEARS / DAY;
        for days in first..after {
            let d = Millis(days * DAY).to_datetime();
            assert_eq!(
                civil_from_days(days),
                (i64::from(d.year()), d.month(), d.day()),
                "{days}"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(10_000))]
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
