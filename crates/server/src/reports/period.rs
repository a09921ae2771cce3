//! Report periods: the period parameters as given ([`PeriodParams`]),
//! parsed and resolved to instants ([`resolve_period`], [`parse_month`]),
//! calendar days and months in the config's time zone; and the
//! [`ParamError`] every report parameter fails with.

use serde::{Serialize, Serializer};
use warden_store::{PeriodKind as Calendar, TimeZone, UnixMicros};

/// A request parameter that is missing, malformed or does not fit the
/// others. `param` is its name (`date`), which the CLI shows as `--date`
/// and the HTTP endpoint as the query parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{param}`: {problem}")]
pub struct ParamError {
    /// The parameter's name.
    pub param: &'static str,
    /// What is wrong and how to fix it.
    pub problem: String,
}

pub(super) fn param_error(param: &'static str, problem: impl Into<String>) -> ParamError {
    ParamError {
        param,
        problem: problem.into(),
    }
}

/// What a spend report covers: a day, a calendar month, or any window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodKind {
    /// A day, midnight to midnight.
    Day,
    /// A calendar month.
    Month,
    /// [from, until) as given.
    Custom,
}

impl PeriodKind {
    fn parse(text: &str) -> Result<Self, ParamError> {
        match text {
            "day" => Ok(Self::Day),
            "month" => Ok(Self::Month),
            "custom" => Ok(Self::Custom),
            other => Err(param_error(
                "period",
                format!("`{other}` is not a period; use `day`, `month` or `custom`"),
            )),
        }
    }
}

/// A period resolved to instants: [from, until).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Period {
    /// Day, month or custom.
    pub kind: PeriodKind,
    /// `2026-11-23` for a day, `2026-11` for a month, `custom` otherwise.
    pub label: String,
    /// The time zone days and months are counted in (`UTC`,
    /// `Europe/Berlin`).
    pub time_zone: String,
    /// Its start (included).
    #[serde(serialize_with = "instant")]
    pub from: UnixMicros,
    /// Its end (excluded).
    #[serde(serialize_with = "instant")]
    pub until: UnixMicros,
}

pub(super) fn instant<S: Serializer>(t: &UnixMicros, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(t)
}

/// The period parameters as given, unparsed (CLI flags or query
/// parameters of the same names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeriodParams {
    /// `day`, `month` or `custom`; absent: the kind the other parameters
    /// imply, or `month`.
    pub period: Option<String>,
    /// The day of `period=day`: `2026-11-23`; absent: today.
    pub date: Option<String>,
    /// The month of `period=month`: `2026-11`; absent: this month.
    pub month: Option<String>,
    /// Start of `period=custom`: a UTC date or instant (required).
    pub from: Option<String>,
    /// End of `period=custom`, excluded; absent: now.
    pub until: Option<String>,
}

fn zone_name(tz: &TimeZone) -> String {
    tz.iana_name().unwrap_or("unnamed time zone").to_owned()
}

/// The calendar day or month starting on `date` in `tz`, or `None` when
/// the date is out of range there.
fn calendar_period(kind: PeriodKind, date: jiff::civil::Date, tz: &TimeZone) -> Option<Period> {
    let calendar = match kind {
        PeriodKind::Day => Calendar::Day,
        PeriodKind::Month => Calendar::Month,
        PeriodKind::Custom => return None,
    };
    let midnight = date
        .to_zoned(tz.clone())
        .and_then(|z| z.start_of_day())
        .ok()?;
    let start = UnixMicros::from_micros(midnight.timestamp().as_microsecond());
    // The store's own period arithmetic, which budgets use too.
    let period = start.period(calendar, tz);
    let label = match kind {
        PeriodKind::Month => format!("{:04}-{:02}", date.year(), date.month()),
        _ => format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day()),
    };
    Some(Period {
        kind,
        label,
        time_zone: zone_name(tz),
        from: period.start,
        until: period.end,
    })
}

/// `2026-11-23` as a date (exactly that form: four-digit year, two-digit
/// month and day).
fn iso_date(text: &str) -> Option<jiff::civil::Date> {
    let t = text.trim();
    let shaped = t.len() == 10 && t.bytes().filter(|&b| b == b'-').count() == 2;
    shaped.then(|| t.parse().ok()).flatten()
}

/// The day `2026-11-23` in `tz`.
fn parse_day(param: &'static str, text: &str, tz: &TimeZone) -> Result<Period, ParamError> {
    iso_date(text)
        .and_then(|date| calendar_period(PeriodKind::Day, date, tz))
        .ok_or_else(|| {
            param_error(
                param,
                format!("`{text}` is not a date; write e.g. `2026-11-23`"),
            )
        })
}

/// The month `2026-11` in `tz`.
pub fn parse_month(param: &'static str, text: &str, tz: &TimeZone) -> Result<Period, ParamError> {
    let month = text.trim();
    (month.len() == 7)
        .then(|| iso_date(&format!("{month}-01")))
        .flatten()
        .and_then(|date| calendar_period(PeriodKind::Month, date, tz))
        .ok_or_else(|| {
            param_error(
                param,
                format!("`{text}` is not a month; write e.g. `2026-11`"),
            )
        })
}

/// The day or month holding `now` in `tz`.
fn current_period(kind: PeriodKind, now: UnixMicros, tz: &TimeZone) -> Result<Period, ParamError> {
    jiff::Timestamp::from_microsecond(now.micros())
        .ok()
        .map(|t| t.to_zoned(tz.clone()).date())
        .map(|date| match kind {
            PeriodKind::Month => date.first_of_month(),
            _ => date,
        })
        .and_then(|date| calendar_period(kind, date, tz))
        .ok_or_else(|| param_error("period", format!("the current time {now} is out of range")))
}

fn parse_instant(param: &'static str, text: &str) -> Result<UnixMicros, ParamError> {
    UnixMicros::parse_rfc3339(text).map_err(|e| param_error(param, e))
}

/// Resolves the period parameters at `now`.
///
/// Days and months are calendar days and months in `tz`, the zone budgets
/// are counted in (the config's `time_zone`); a custom window is two
/// instants, written in UTC.
pub fn resolve_period(
    p: &PeriodParams,
    now: UnixMicros,
    tz: &TimeZone,
) -> Result<Period, ParamError> {
    let given = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
    let (date, month, custom) = (
        given(&p.date),
        given(&p.month),
        given(&p.from) || given(&p.until),
    );
    let kind = match p.period.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(text) => PeriodKind::parse(text)?,
        None => match (date, month, custom) {
            (true, false, false) => PeriodKind::Day,
            (false, false, true) => PeriodKind::Custom,
            (false, _, false) => PeriodKind::Month,
            _ => {
                return Err(param_error(
                    "period",
                    "give one of `date` (a day), `month` (a month), or `from`/`until` (any window), not several",
                ))
            }
        },
    };
    let window_param = if given(&p.from) { "from" } else { "until" };
    let not_for = |param: &'static str, used: &str| {
        param_error(
            param,
            format!("does not apply to the `{}` period; {used}", kind_name(kind)),
        )
    };
    match kind {
        PeriodKind::Day => {
            if month {
                return Err(not_for(
                    "month",
                    "give the day as `date`, e.g. `2026-11-23`",
                ));
            }
            if custom {
                return Err(not_for(
                    window_param,
                    "use the `custom` period for a window",
                ));
            }
            match p.date.as_deref().filter(|s| !s.trim().is_empty()) {
                Some(d) => parse_day("date", d, tz),
                None => current_period(kind, now, tz),
            }
        }
        PeriodKind::Month => {
            if date {
                return Err(not_for("date", "give the month as `month`, e.g. `2026-11`"));
            }
            if custom {
                return Err(not_for(
                    window_param,
                    "use the `custom` period for a window",
                ));
            }
            match p.month.as_deref().filter(|s| !s.trim().is_empty()) {
                Some(m) => parse_month("month", m, tz),
                None => current_period(kind, now, tz),
            }
        }
        PeriodKind::Custom => {
            if date {
                return Err(not_for("date", "give the window as `from` and `until`"));
            }
            if month {
                return Err(not_for("month", "give the window as `from` and `until`"));
            }
            let from = match p.from.as_deref().filter(|s| !s.trim().is_empty()) {
                Some(f) => parse_instant("from", f)?,
                None => {
                    return Err(param_error(
                        "from",
                        "required for the `custom` period; give its start, e.g. `2026-11-01` or `2026-11-01T08:00:00Z`",
                    ))
                }
            };
            let until = match p.until.as_deref().filter(|s| !s.trim().is_empty()) {
                Some(u) => parse_instant("until", u)?,
                None => now,
            };
            if from >= until {
                return Err(param_error(
                    "until",
                    format!("the window is empty: `until` ({until}) must be after `from` ({from})"),
                ));
            }
            Ok(Period {
                kind,
                label: "custom".to_owned(),
                time_zone: zone_name(tz),
                from,
                until,
            })
        }
    }
}

fn kind_name(kind: PeriodKind) -> &'static str {
    match kind {
        PeriodKind::Day => "day",
        PeriodKind::Month => "month",
        PeriodKind::Custom => "custom",
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn at(text: &str) -> UnixMicros {
        UnixMicros::parse_rfc3339(text).unwrap()
    }

    fn params(pairs: &[(&str, &str)]) -> PeriodParams {
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| (*v).to_owned())
        };
        PeriodParams {
            period: get("period"),
            date: get("date"),
            month: get("month"),
            from: get("from"),
            until: get("until"),
        }
    }

    #[test]
    fn periods_resolve_to_utc_days_months_and_windows() {
        let now = at("2026-11-23T14:05:00Z");
        let p = |pairs: &[(&str, &str)]| resolve_period(&params(pairs), now, &TimeZone::UTC);
        let window = |p: Period| (p.kind, p.from.to_string(), p.until.to_string());
        assert_eq!(
            window(p(&[]).unwrap()),
            (
                PeriodKind::Month,
                "2026-11-01T00:00:00.000000Z".to_owned(),
                "2026-12-01T00:00:00.000000Z".to_owned()
            )
        );
        assert_eq!(
            window(p(&[("period", "day")]).unwrap()),
            (
                PeriodKind::Day,
                "2026-11-23T00:00:00.000000Z".to_owned(),
                "2026-11-24T00:00:00.000000Z".to_owned()
            )
        );
        // The kind follows from the parameters given.
        let day = p(&[("date", "2024-02-29")]).unwrap();
        assert_eq!(
            (day.kind, day.label.as_str()),
            (PeriodKind::Day, "2024-02-29")
        );
        let dec = p(&[("month", "2026-12")]).unwrap();
        assert_eq!(dec.until.to_string(), "2027-01-01T00:00:00.000000Z");
        assert_eq!(
            (dec.label.as_str(), dec.time_zone.as_str()),
            ("2026-12", "UTC")
        );
        let custom = p(&[("from", "2026-11-20T12:00:00Z")]).unwrap();
        assert_eq!((custom.kind, custom.until), (PeriodKind::Custom, now));
        let custom = p(&[
            ("period", "custom"),
            ("from", "2026-11-01"),
            ("until", "2026-11-02"),
        ]);
        assert_eq!(
            custom.unwrap().until.to_string(),
            "2026-11-02T00:00:00.000000Z"
        );
    }

    #[test]
    fn days_and_months_follow_the_time_zone() {
        let berlin = warden_store::parse_time_zone("Europe/Berlin").unwrap();
        // 23:30 UTC on the 22nd is the 23rd in Berlin: "today" is the 23rd.
        let now = at("2026-11-22T23:30:00Z");
        let day = resolve_period(&params(&[("period", "day")]), now, &berlin).unwrap();
        assert_eq!(
            (day.label.as_str(), day.from, day.until),
            (
                "2026-11-23",
                at("2026-11-22T23:00:00Z"),
                at("2026-11-23T23:00:00Z")
            )
        );
        assert_eq!(day.time_zone, "Europe/Berlin");
        // The day summer time ends has 25 hours; October has 31 days and
        // one hour.
        let day = resolve_period(&params(&[("date", "2026-10-25")]), now, &berlin).unwrap();
        assert_eq!(
            (day.from, day.until),
            (at("2026-10-24T22:00:00Z"), at("2026-10-25T23:00:00Z"))
        );
        let month = parse_month("month", "2026-10", &berlin).unwrap();
        assert_eq!(
            (month.from, month.until),
            (at("2026-09-30T22:00:00Z"), at("2026-10-31T23:00:00Z"))
        );
    }

    #[test]
    fn period_errors_name_the_parameter_and_the_fix() {
        let now = at("2026-11-23T14:05:00Z");
        let err = |pairs: &[(&str, &str)]| {
            resolve_period(&params(pairs), now, &TimeZone::UTC).unwrap_err()
        };
        let e = err(&[("period", "week")]);
        assert_eq!(e.param, "period");
        assert!(
            e.problem.contains("`week`") && e.problem.contains("`custom`"),
            "{e}"
        );
        let e = err(&[("date", "2026-02-30")]);
        assert_eq!(
            e.to_string(),
            "`date`: `2026-02-30` is not a date; write e.g. `2026-11-23`"
        );
        assert_eq!(err(&[("date", "2026-11-23T10:00")]).param, "date");
        assert_eq!(err(&[("month", "2026-13")]).param, "month");
        assert_eq!(err(&[("month", "2026-1")]).param, "month");
        assert_eq!(err(&[("month", "2026-11-01")]).param, "month");
        assert_eq!(err(&[("date", "2026-11")]).param, "date");
        assert_eq!(
            err(&[("period", "day"), ("month", "2026-11")]).param,
            "month"
        );
        assert_eq!(
            err(&[("period", "month"), ("date", "2026-11-02")]).param,
            "date"
        );
        assert_eq!(
            err(&[("date", "2026-11-02"), ("month", "2026-11")]).param,
            "period"
        );
        let e = err(&[("period", "custom")]);
        assert!(e.param == "from" && e.problem.contains("required"), "{e}");
        let e = err(&[("from", "2026-11-02"), ("until", "2026-11-01")]);
        assert!(e.param == "until" && e.problem.contains("empty"), "{e}");
        assert_eq!(err(&[("from", "last week")]).param, "from");
    }
}
