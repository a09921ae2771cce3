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

const MICROS_PER_DAY: i64 = 86_400_000_000;

impl UnixMicros {
    /// Midnight UTC of this instant's day.
    pub fn start_of_day(self) -> Self {
        self.period(PeriodKind::Day, &TimeZone::UTC).start
    }

    /// Midnight UTC of the next day.
    pub fn start_of_next_day(self) -> Self {
        self.period(PeriodKind::Day, &TimeZone::UTC).end
    }

    /// Midnight UTC of the first day of this instant's month.
    pub fn start_of_month(self) -> Self {
        self.period(PeriodKind::Month, &TimeZone::UTC).start
    }

    /// Midnight UTC of the first day of the next month.
    pub fn start_of_next_month(self) -> Self {
        self.period(PeriodKind::Month, &TimeZone::UTC).end
    }

    /// This instant as a `jiff` timestamp, clamped to the years -9999 to
    /// 9999 that `jiff` (and RFC 3339) can write.
    fn timestamp(self) -> jiff::Timestamp {
        jiff::Timestamp::from_microsecond(self.0).unwrap_or(if self.0 < 0 {
            jiff::Timestamp::MIN
        } else {
            jiff::Timestamp::MAX
        })
    }

    /// Parses a UTC instant: `2026-11-23`, `2026-11-23T14:05`,
    /// `2026-11-23T14:05:09Z`, with an optional fraction of a second
    /// (kept to the microsecond). Offsets other than `Z` are refused (say
    /// the instant in UTC).
    pub fn parse_rfc3339(text: &str) -> Result<Self, String> {
        let bad = || {
            format!("`{text}` is not a UTC date or time; write e.g. `2026-11-23` or `2026-11-23T14:05:00Z`")
        };
        let t = text.trim();
        let t = t
            .strip_suffix('Z')
            .or_else(|| t.strip_suffix('z'))
            .unwrap_or(t);
        // jiff's civil parser would drop an offset or a zone annotation
        // silently: refuse them here.
        let time_part = t.split_once(['T', 't', ' ']).map_or("", |(_, time)| time);
        if time_part.contains(['+', '-', '[', 'Z', 'z']) {
            return Err(bad());
        }
        let civil: jiff::civil::DateTime = if time_part.is_empty() && !t.contains(['T', 't', ' ']) {
            t.parse::<jiff::civil::Date>().map_err(|_| bad())?.into()
        } else {
            t.parse().map_err(|_| bad())?
        };
        let at = civil.to_zoned(TimeZone::UTC).map_err(|_| bad())?;
        Ok(Self(at.timestamp().as_microsecond()))
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
    /// The day or month holding this instant in `tz`. Outside the years
    /// -9999 to 9999 (where no calendar is kept), the days are counted as
    /// they fall and a month is the first or last one in range.
    pub fn period(self, kind: PeriodKind, tz: &TimeZone) -> Period {
        let zoned = || -> Result<(UnixMicros, UnixMicros), jiff::Error> {
            let at = self.timestamp().to_zoned(tz.clone());
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
        let (start, end) = zoned().unwrap_or_else(|_| {
            // The edge of the calendar: whole UTC days of 24 hours.
            let start = self
                .0
                .div_euclid(MICROS_PER_DAY)
                .saturating_mul(MICROS_PER_DAY);
            (
                UnixMicros(start),
                UnixMicros(start.saturating_add(MICROS_PER_DAY)),
            )
        });
        Period { kind, start, end }
    }
}

impl std::fmt::Display for UnixMicros {
    /// RFC 3339 in UTC with microseconds: `2026-11-23T14:05:09.000123Z`
    /// (instants outside the years -9999 to 9999 are shown at that edge).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let civil = jiff::tz::Offset::UTC.to_datetime(self.timestamp());
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            civil.year(),
            civil.month(),
            civil.day(),
            civil.hour(),
            civil.minute(),
            civil.second(),
            civil.subsec_nanosecond() / 1000
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
        // Nanoseconds are cut to microseconds; space and `t` separate too.
        assert_eq!(
            UnixMicros::parse_rfc3339("2026-11-23 14:05:09.123456789z").map(|t| t.to_string()),
            Ok("2026-11-23T14:05:09.123456Z".to_owned())
        );
        for offset in [
            "2026-11-23T10:00:00-05:00",
            "2026-11-23T10:00Z[Europe/Berlin]",
            "2026-11-23T10:00:00ZZ",
        ] {
            assert!(UnixMicros::parse_rfc3339(offset).is_err(), "{offset}");
        }
        // The far ends show the calendar's edge, never garbage.
        let far = UnixMicros::from_micros(i64::MAX).to_string();
        assert!(far.starts_with("9999-12-"), "{far}");
        let p = UnixMicros::from_micros(i64::MAX).period(PeriodKind::Month, &TimeZone::UTC);
        assert!(p.start <= p.end);
        assert_eq!(
            UnixMicros::parse_rfc3339("2024-02-29")
                .unwrap()
                .start_of_next_month(),
            UnixMicros::parse_rfc3339("2024-03-01").unwrap()
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
