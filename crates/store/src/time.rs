//! Instants as the store keeps them.

use std::time::{SystemTime, UNIX_EPOCH};

/// A UTC instant: whole microseconds since the Unix epoch (negative before
/// it). Stored as a BIGINT on both backends, so it compares and sums exactly
/// and means the same thing everywhere.
///
/// The store never reads a clock: every write takes the caller's "now"
/// (DESIGN.md, "Time is an input").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct UnixMicros(i64);

impl UnixMicros {
    /// The Unix epoch, 1970-01-01T00:00:00Z.
    pub const EPOCH: UnixMicros = UnixMicros(0);

    /// An instant from microseconds since the epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// Microseconds since the epoch.
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// The instant a [`SystemTime`] stands for, saturating far outside
    /// ±292,000 years.
    pub fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(after) => Self(i64::try_from(after.as_micros()).unwrap_or(i64::MAX)),
            Err(before) => Self(
                i64::try_from(before.duration().as_micros())
                    .map(|m| -m)
                    .unwrap_or(i64::MIN),
            ),
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of a day count since 1970-01-01 in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`); month and day
/// are 1-based.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

impl UnixMicros {
    /// Midnight UTC of this instant's day.
    pub fn start_of_day(self) -> Self {
        Self(self.0.div_euclid(MICROS_PER_DAY) * MICROS_PER_DAY)
    }

    /// Midnight UTC of the next day.
    pub fn start_of_next_day(self) -> Self {
        Self(self.start_of_day().0.saturating_add(MICROS_PER_DAY))
    }

    /// Midnight UTC of the first day of this instant's month.
    pub fn start_of_month(self) -> Self {
        let (y, m, _) = civil_from_days(self.0.div_euclid(MICROS_PER_DAY));
        Self(days_from_civil(y, m, 1) * MICROS_PER_DAY)
    }

    /// Midnight UTC of the first day of the next month.
    pub fn start_of_next_month(self) -> Self {
        let (y, m, _) = civil_from_days(self.0.div_euclid(MICROS_PER_DAY));
        let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        Self(days_from_civil(y, m, 1) * MICROS_PER_DAY)
    }

    /// Parses a UTC instant: `2026-11-23`, `2026-11-23T14:05`,
    /// `2026-11-23T14:05:09Z`, with an optional fraction of a second.
    /// Offsets other than `Z` are refused (say the instant in UTC).
    pub fn parse_rfc3339(text: &str) -> Result<Self, String> {
        let bad = || {
            format!("`{text}` is not a UTC date or time; write e.g. `2026-11-23` or `2026-11-23T14:05:00Z`")
        };
        let t = text.trim();
        let t = t
            .strip_suffix('Z')
            .or_else(|| t.strip_suffix('z'))
            .unwrap_or(t);
        let (date, time) = match t.split_once(['T', 't', ' ']) {
            Some((d, tm)) => (d, Some(tm)),
            None => (t, None),
        };
        let mut dp = date.splitn(3, '-');
        let num = |s: Option<&str>, lo: i64, hi: i64| -> Result<i64, String> {
            s.and_then(|s| s.parse::<i64>().ok())
                .filter(|v| (lo..=hi).contains(v))
                .ok_or_else(bad)
        };
        let y = num(dp.next(), 1, 9999)?;
        let m = num(dp.next(), 1, 12)?;
        let d = num(dp.next(), 1, 31)?;
        let mut micros = days_from_civil(y, m, d) * MICROS_PER_DAY;
        if let Some(time) = time {
            let (hms, frac) = match time.split_once('.') {
                Some((a, b)) => (a, Some(b)),
                None => (time, None),
            };
            let mut tp = hms.splitn(3, ':');
            let h = num(tp.next(), 0, 23)?;
            let mi = num(tp.next(), 0, 59)?;
            let s = match tp.next() {
                Some(s) => num(Some(s), 0, 60)?,
                None => 0,
            };
            micros += ((h * 60 + mi) * 60 + s) * 1_000_000;
            if let Some(frac) = frac {
                if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let digits: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
                micros += digits.parse::<i64>().map_err(|_| bad())?;
            }
        }
        let (cy, cm, cd) = civil_from_days(micros.div_euclid(MICROS_PER_DAY));
        if (cy, cm, cd) != (y, m, d) && time.is_none() {
            return Err(bad()); // e.g. 2026-02-30
        }
        Ok(Self(micros))
    }
}

/// A budget period's kind: a calendar day or a calendar month, in the
/// configured time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeriodKind {
    /// A calendar day (midnight to midnight, 23 to 25 hours around DST changes).
    Day,
    /// A calendar month.
    Month,
}

impl PeriodKind {
    /// `day` or `month`.
    pub fn as_str(self) -> &'static str {
        match self {
            PeriodKind::Day => "day",
            PeriodKind::Month => "month",
        }
    }
}

/// One period: the instants [start, end) of a calendar day or month in a
/// time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Period {
    /// Day or month.
    pub kind: PeriodKind,
    /// Its first instant (local midnight).
    pub start: UnixMicros,
    /// The first instant of the next period.
    pub end: UnixMicros,
}

/// A time zone for budget periods and reports: `UTC` by default, or any IANA
/// name (`Europe/Berlin`). The tz database is bundled into the binary.
pub use jiff::tz::TimeZone;

/// Parses an IANA time zone name; the error says what to write.
pub fn parse_time_zone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name).map_err(|_| {
        format!("`{name}` is not a known IANA time zone; write e.g. `UTC`, `Europe/Berlin` or `America/New_York`")
    })
}

impl UnixMicros {
    /// The day or month holding this instant in `tz`. Far outside the years
    /// 1 to 9999 (where `tz` cannot say), the UTC period.
    pub fn period(self, kind: PeriodKind, tz: &TimeZone) -> Period {
        let utc = || match kind {
            PeriodKind::Day => (self.start_of_day(), self.start_of_next_day()),
            PeriodKind::Month => (self.start_of_month(), self.start_of_next_month()),
        };
        let zoned = || -> Result<(UnixMicros, UnixMicros), jiff::Error> {
            let at = jiff::Timestamp::from_microsecond(self.0)?.to_zoned(tz.clone());
            let first = match kind {
                PeriodKind::Day => at.date(),
                PeriodKind::Month => at.date().first_of_month(),
            };
            let next = match kind {
                PeriodKind::Day => first.tomorrow()?,
                PeriodKind::Month => first.last_of_month().tomorrow()?,
            };
            let micros = |d: jiff::civil::Date| -> Result<UnixMicros, jiff::Error> {
                let z = d.to_zoned(tz.clone())?.start_of_day()?;
                Ok(UnixMicros(z.timestamp().as_microsecond()))
            };
            Ok((micros(first)?, micros(next)?))
        };
        let (start, end) = zoned().unwrap_or_else(|_| utc());
        Period { kind, start, end }
    }
}

impl std::fmt::Display for UnixMicros {
    /// RFC 3339 in UTC with microseconds: `2026-11-23T14:05:09.000123Z`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let days = self.0.div_euclid(MICROS_PER_DAY);
        let rest = self.0.rem_euclid(MICROS_PER_DAY);
        let (y, m, d) = civil_from_days(days);
        let secs = rest / 1_000_000;
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            rest % 1_000_000
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_and_parses_rfc3339() {
        let t = UnixMicros::from_micros(1_700_000_000_123_456);
        assert_eq!(t.to_string(), "2023-11-14T22:13:20.123456Z");
        assert_eq!(UnixMicros::parse_rfc3339(&t.to_string()), Ok(t));
        assert_eq!(
            UnixMicros::parse_rfc3339("1970-01-02").map(UnixMicros::micros),
            Ok(86_400_000_000)
        );
        assert_eq!(
            UnixMicros::parse_rfc3339("2024-02-29T00:00").map(|t| t.to_string()),
            Ok("2024-02-29T00:00:00.000000Z".to_owned())
        );
        assert!(UnixMicros::parse_rfc3339("2026-02-30").is_err());
        assert!(UnixMicros::parse_rfc3339("2026-11-23T10:00:00+02:00").is_err());
        assert!(UnixMicros::parse_rfc3339("yesterday").is_err());
        assert_eq!(
            UnixMicros::from_micros(-1).to_string(),
            "1969-12-31T23:59:59.999999Z"
        );
    }

    use std::time::Duration;

    use super::*;

    #[test]
    fn converts_system_time_both_sides_of_the_epoch() {
        let later = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(
            UnixMicros::from_system_time(later).micros(),
            1_700_000_000_123_456
        );
        let earlier = UNIX_EPOCH - Duration::from_micros(5);
        assert_eq!(UnixMicros::from_system_time(earlier).micros(), -5);
        assert_eq!(UnixMicros::from_system_time(UNIX_EPOCH), UnixMicros::EPOCH);
    }

    #[test]
    fn periods_follow_the_time_zone() {
        let at = |s: &str| UnixMicros::parse_rfc3339(s).unwrap();
        let utc = TimeZone::UTC;
        let p = at("2026-11-23T14:05:00Z").period(PeriodKind::Day, &utc);
        assert_eq!((p.start, p.end), (at("2026-11-23"), at("2026-11-24")));
        let p = at("2026-12-31T23:00:00Z").period(PeriodKind::Month, &utc);
        assert_eq!((p.start, p.end), (at("2026-12-01"), at("2027-01-01")));

        // Berlin: 23:30 UTC on the 22nd is already the 23rd there (UTC+1).
        let berlin = parse_time_zone("Europe/Berlin").unwrap();
        let p = at("2026-11-22T23:30:00Z").period(PeriodKind::Day, &berlin);
        assert_eq!(
            (p.start, p.end),
            (at("2026-11-22T23:00:00Z"), at("2026-11-23T23:00:00Z"))
        );
        // The day summer time ends has 25 hours.
        let p = at("2026-10-25T12:00:00Z").period(PeriodKind::Day, &berlin);
        assert_eq!(
            (p.start, p.end),
            (at("2026-10-24T22:00:00Z"), at("2026-10-25T23:00:00Z"))
        );
        let p = at("2026-11-01T00:30:00Z").period(PeriodKind::Month, &berlin);
        assert_eq!(
            (p.start, p.end),
            (at("2026-10-31T23:00:00Z"), at("2026-11-30T23:00:00Z"))
        );
        // Half-hour offsets.
        let kolkata = parse_time_zone("Asia/Kolkata").unwrap();
        let p = at("2026-11-23T20:00:00Z").period(PeriodKind::Day, &kolkata);
        assert_eq!(
            (p.start, p.end),
            (at("2026-11-23T18:30:00Z"), at("2026-11-24T18:30:00Z"))
        );
        assert!(parse_time_zone("Mars/Olympus")
            .unwrap_err()
            .contains("Europe/Berlin"));
    }
}
