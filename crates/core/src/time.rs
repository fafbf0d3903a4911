//! Points in time as a type. JWT times are whole seconds since the Unix epoch (RFC 7519 §2).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A point in time, in whole seconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_unix(secs: i64) -> Self {
        Self(secs)
    }

    pub fn now() -> Self {
        let secs = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        };
        Self(secs)
    }

    pub const fn unix(self) -> i64 {
        self.0
    }

    /// Seconds from `now` until `self`; negative when `self` is in the past.
    pub const fn seconds_after(self, now: Timestamp) -> i64 {
        self.0 - now.0
    }

    pub const fn plus_secs(self, secs: i64) -> Self {
        Self(self.0.saturating_add(secs))
    }
}

/// RFC 3339 in UTC, e.g. `2026-11-24T17:52:35Z`.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0.div_euclid(86_400);
        let rem = self.0.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
        if !(0..=9999).contains(&y) {
            return write!(f, "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z");
        }
        // Digit by digit: the broker's audit log writes one per request, and `write!` with
        // its padding costs ten times as much.
        let mut text = *b"0000-00-00T00:00:00Z";
        let (m, d) = (i64::from(m), i64::from(d));
        for (at, width, mut value) in [
            (0, 4, y),
            (5, 2, m),
            (8, 2, d),
            (11, 2, hh),
            (14, 2, mm),
            (17, 2, ss),
        ] {
            for i in (at..at + width).rev() {
                text[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        }
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

/// A span written the way Vault, htgettoken and our task files write it: `90` or `90s`
/// (seconds), `30m`, `24h`, `7d`. `None` for anything else, negatives and overflow
/// included; callers that need a positive span filter zero themselves.
pub fn parse_seconds(text: &str) -> Option<i64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: i64 = n.parse().ok()?;
    let scale = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// Days since the epoch to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {

    #[test]
    fn timestamps_print_as_rfc3339_utc_seconds() {
        for (t, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_796_515_199, "2026-12-05T23:59:59Z"),
            (-1, "1969-12-31T23:59:59Z"),
            (253_402_300_799, "9999-12-31T23:59:59Z"),
            (253_402_300_800, "10000-01-01T00:00:00Z"),
        ] {
            assert_eq!(Timestamp::from_unix(t).to_string(), text);
        }
    }
    use super::*;

    #[test]
    fn spans_read_in_seconds_minutes_hours_days() {
        assert_eq!(parse_seconds("604800"), Some(604_800));
        assert_eq!(parse_seconds("604800s"), Some(604_800));
        assert_eq!(parse_seconds(" 30m "), Some(1800));
        assert_eq!(parse_seconds("24h"), Some(86_400));
        assert_eq!(parse_seconds("7d"), Some(604_800));
        assert_eq!(parse_seconds("0"), Some(0));
        assert_eq!(parse_seconds("1w"), None);
        assert_eq!(parse_seconds("-5"), None);
        assert_eq!(parse_seconds("h"), None);
        assert_eq!(parse_seconds("99999999999999999d"), None);
    }

    #[test]
    fn formats_as_utc_rfc3339() {
        assert_eq!(Timestamp::from_unix(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(
            Timestamp::from_unix(1_795_542_755).to_string(),
            "2026-11-24T17:52:35Z"
        );
        assert_eq!(
            Timestamp::from_unix(951_782_400).to_string(),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(Timestamp::from_unix(-1).to_string(), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn seconds_after_is_signed() {
        let now = Timestamp::from_unix(1000);
        assert_eq!(Timestamp::from_unix(1060).seconds_after(now), 60);
        assert_eq!(Timestamp::from_unix(940).seconds_after(now), -60);
    }
}
