//! Cron schedules as the Go server's robfig/cron parses them, in a time zone.
//!
//! Accepted: standard 5-field expressions with POSIX/Vixie semantics (minute, hour, day of
//! month, month, day of week 0–7 with both 0 and 7 Sunday; `1-5` is Monday–Friday; when
//! both day fields are restricted a day matches if either does); the descriptors
//! `@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`/`@midnight`, `@hourly`;
//! `@every <duration>` in Go's duration syntax (`@every 1h30m`, `@every 90s`), which
//! fires each period after the previous fire; and a `CRON_TZ=<zone>` or `TZ=<zone>`
//! prefix, which overrides `cron.timezone` for this schedule.
//!
//! Fields are parsed with `croner` (seconds and years disallowed). The `cron` crate is
//! not used: it needs a seconds field and numbers weekdays 1–7 from Sunday, so `1-5`
//! there means Sunday–Thursday.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// Why a schedule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("cron.schedule {expr:?} is not a valid schedule: {message}")]
    Expression { expr: String, message: String },
    #[error(
        "the schedule's CRON_TZ=/TZ= zone {0:?} is not a known time zone (e.g. UTC, Europe/Berlin, America/New_York)"
    )]
    TimeZone(String),
}

/// What fires: a cron expression, or a fixed period (`@every`).
#[derive(Debug, Clone)]
enum Kind {
    Cron(Box<Cron>),
    Every(Duration),
}

/// A parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    kind: Kind,
    tz: Tz,
    expr: String,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr && self.tz == other.tz
    }
}

impl PartialEq<&str> for Schedule {
    fn eq(&self, other: &&str) -> bool {
        self.expr == *other
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.expr)
    }
}

impl serde::Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.expr)
    }
}

/// The descriptors robfig/cron knows, as 5-field expressions.
const DESCRIPTORS: &[(&str, &str)] = &[
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

impl Schedule {
    /// Parses `expr` for time zone `tz` (`cron.timezone`, already parsed), unless `expr`
    /// names its own with a `CRON_TZ=` or `TZ=` prefix (an IANA name, parsed here).
    pub fn parse(expr: &str, tz: Tz) -> Result<Self, ScheduleError> {
        let bad = |message: String| ScheduleError::Expression { expr: expr.to_owned(), message };
        let mut body = expr.trim();
        let mut zone = None;
        for prefix in ["CRON_TZ=", "TZ="] {
            if let Some(rest) = body.strip_prefix(prefix) {
                let (name, after) =
                    rest.split_once(char::is_whitespace).ok_or_else(|| bad(format!("nothing after {prefix}<zone>")))?;
                zone = Some(name);
                body = after.trim();
                break;
            }
        }
        let tz: Tz = match zone {
            Some(name) => name.parse().map_err(|_| ScheduleError::TimeZone(name.to_owned()))?,
            None => tz,
        };
        let kind = if let Some(period) = body.strip_prefix("@every") {
            Kind::Every(every(period.trim()).map_err(bad)?)
        } else {
            let fields = match body.strip_prefix('@') {
                Some(_) => DESCRIPTORS.iter().find(|(d, _)| *d == body).map(|(_, f)| *f).ok_or_else(|| {
                    bad("unknown descriptor; known: @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly, @every <duration>".into())
                })?,
                None => body,
            };
            if fields.split_whitespace().count() != 5 {
                return Err(bad("expected 5 fields (minute hour day-of-month month day-of-week), a descriptor such as @daily, or @every <duration>".into()));
            }
            let cron = CronParser::builder()
                .seconds(Seconds::Disallowed)
                .year(Year::Disallowed)
                .build()
                .parse(fields)
                .map_err(|e| bad(e.to_string()))?;
            Kind::Cron(Box::new(cron))
        };
        Ok(Self { kind, tz, expr: expr.trim().to_owned() })
    }

    pub fn expression(&self) -> &str {
        &self.expr
    }

    /// The time zone fire times are computed in.
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The first fire time strictly after `after`. For `@every`, one period after `after`
    /// truncated to the second (robfig/cron's `ConstantDelaySchedule`).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Cron(cron) => {
                let local = self.tz.from_utc_datetime(&after.naive_utc());
                cron.find_next_occurrence(&local, false).ok().map(|t| t.with_timezone(&Utc))
            }
            Kind::Every(period) => {
                let whole = after.timestamp();
                DateTime::from_timestamp(whole, 0).map(|t| t + chrono::Duration::from_std(*period).unwrap_or_default())
            }
        }
    }

    /// The next `n` fire times after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut t = after;
        while out.len() < n {
            match self.next_after(t) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }
}

/// `@every`'s period: Go's `time.ParseDuration` syntax (`1h30m`, `90s`, `1.5h`, `500ms`),
/// whole seconds, at least one (robfig rounds below a second up to one and drops
/// fractions silently; both are refused here).
fn every(s: &str) -> Result<Duration, String> {
    let err = |why: &str| format!("@every needs a Go duration such as 1h30m or 90s{why}");
    if s.is_empty() {
        return Err(err(""));
    }
    let mut nanos: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..num_len].parse().map_err(|_| err(""))?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(err(" (units: h, m, s, ms, us, ns)")),
        };
        rest = &rest[unit_len..];
        nanos += number * scale;
    }
    if nanos < 1e9 {
        return Err(err(", of at least 1s"));
    }
    if nanos % 1e9 != 0.0 {
        return Err(err(", in whole seconds"));
    }
    Ok(Duration::from_secs((nanos / 1e9) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(expr: &str, after: &str, n: usize) -> Vec<String> {
        let s = Schedule::parse(expr, chrono_tz::Tz::UTC).unwrap();
        s.upcoming(at(after), n).iter().map(|t| t.format("%a %Y-%m-%d %H:%M").to_string()).collect()
    }

    #[test]
    fn the_seed_table() {
        // 2024-01-15 is a Monday.
        assert_eq!(next("0 2 * * *", "2024-01-15T02:00:00Z", 2), ["Tue 2024-01-16 02:00", "Wed 2024-01-17 02:00"]);
        assert_eq!(
            next("0 */6 * * *", "2024-01-15T01:00:00Z", 4),
            ["Mon 2024-01-15 06:00", "Mon 2024-01-15 12:00", "Mon 2024-01-15 18:00", "Tue 2024-01-16 00:00"]
        );
        assert_eq!(next("0 0 * * 0", "2024-01-15T00:00:00Z", 2), ["Sun 2024-01-21 00:00", "Sun 2024-01-28 00:00"]);
        assert_eq!(next("0 0 * * 7", "2024-01-15T00:00:00Z", 1), ["Sun 2024-01-21 00:00"]);
        assert_eq!(next("0 0 1 * *", "2024-01-15T00:00:00Z", 2), ["Thu 2024-02-01 00:00", "Fri 2024-03-01 00:00"]);
        assert_eq!(
            next("*/30 * * * *", "2024-01-15T10:10:00Z", 3),
            ["Mon 2024-01-15 10:30", "Mon 2024-01-15 11:00", "Mon 2024-01-15 11:30"]
        );
        // Hourly 09–17, Monday to Friday: Friday 17:00 is followed by Monday 09:00.
        assert_eq!(next("0 9-17 * * 1-5", "2024-01-19T16:30:00Z", 2), ["Fri 2024-01-19 17:00", "Mon 2024-01-22 09:00"]);
        let week: Vec<String> = next("0 9-17 * * 1-5", "2024-01-14T00:00:00Z", 45);
        assert_eq!(week.len(), 45);
        assert!(week.iter().all(|t| !t.starts_with("Sat") && !t.starts_with("Sun")));
        assert_eq!(week[0], "Mon 2024-01-15 09:00");
        assert_eq!(week[44], "Fri 2024-01-19 17:00");
    }

    #[test]
    fn day_of_month_and_day_of_week_combine_with_or() {
        // The 13th, or any Friday (Vixie cron).
        assert_eq!(
            next("0 0 13 * 5", "2024-01-10T00:00:00Z", 3),
            ["Fri 2024-01-12 00:00", "Sat 2024-01-13 00:00", "Fri 2024-01-19 00:00"]
        );
    }

    #[test]
    fn time_zones_shift_fire_times() {
        let s = Schedule::parse("0 2 * * *", chrono_tz::Europe::Berlin).unwrap();
        assert_eq!(s.next_after(at("2024-01-15T00:00:00Z")), Some(at("2024-01-15T01:00:00Z")));
        // Summer time: 02:00 in Berlin is 00:00 UTC.
        assert_eq!(s.next_after(at("2024-07-15T00:00:00Z")), Some(at("2024-07-16T00:00:00Z")));
    }

    #[test]
    fn go_descriptors_fire_as_robfig_cron_fires_them() {
        // 2024-01-15 is a Monday.
        assert_eq!(next("@hourly", "2024-01-15T10:10:00Z", 2), ["Mon 2024-01-15 11:00", "Mon 2024-01-15 12:00"]);
        assert_eq!(next("@daily", "2024-01-15T10:10:00Z", 1), ["Tue 2024-01-16 00:00"]);
        assert_eq!(next("@midnight", "2024-01-15T10:10:00Z", 1), ["Tue 2024-01-16 00:00"]);
        assert_eq!(next("@weekly", "2024-01-15T10:10:00Z", 1), ["Sun 2024-01-21 00:00"]);
        assert_eq!(next("@monthly", "2024-01-15T10:10:00Z", 1), ["Thu 2024-02-01 00:00"]);
        assert_eq!(next("@yearly", "2024-01-15T10:10:00Z", 1), ["Wed 2025-01-01 00:00"]);
        assert_eq!(next("@annually", "2024-01-15T10:10:00Z", 1), ["Wed 2025-01-01 00:00"]);
        assert_eq!(
            next("@every 1h30m", "2024-01-15T10:10:30.700Z", 3),
            ["Mon 2024-01-15 11:40", "Mon 2024-01-15 13:10", "Mon 2024-01-15 14:40"]
        );
        let s = Schedule::parse("@every 90s", chrono_tz::Tz::UTC).unwrap();
        assert_eq!(s.next_after(at("2024-01-15T10:00:00.5Z")), Some(at("2024-01-15T10:01:30Z")));
    }

    #[test]
    fn a_tz_prefix_overrides_the_configured_zone() {
        for expr in ["CRON_TZ=Asia/Seoul 0 13 * * *", "TZ=Asia/Seoul 0 13 * * *"] {
            let s = Schedule::parse(expr, chrono_tz::Tz::UTC).unwrap();
            // 13:00 in Seoul is 04:00 UTC.
            assert_eq!(s.next_after(at("2024-01-15T00:00:00Z")), Some(at("2024-01-15T04:00:00Z")), "{expr}");
            assert_eq!(s.timezone(), chrono_tz::Asia::Seoul);
        }
        let s = Schedule::parse("CRON_TZ=Europe/Berlin @daily", chrono_tz::Tz::UTC).unwrap();
        assert_eq!(s.next_after(at("2024-01-15T12:00:00Z")), Some(at("2024-01-15T23:00:00Z")));
    }

    #[test]
    fn bad_descriptors_periods_and_prefixes_are_refused() {
        for (expr, why) in [
            ("@reboot", "unknown descriptor"),
            ("@every", "Go duration"),
            ("@every 1d", "units"),
            ("@every 500ms", "at least 1s"),
            ("@every 1.5s", "whole seconds"),
            ("@every -5m", "Go duration"),
            ("CRON_TZ=Asia/Seoul", "nothing after"),
        ] {
            let e = Schedule::parse(expr, chrono_tz::Tz::UTC).unwrap_err().to_string();
            assert!(e.contains(why), "{expr}: {e}");
        }
        assert_eq!(
            Schedule::parse("TZ=Mars/Olympus @daily", chrono_tz::Tz::UTC).unwrap_err(),
            ScheduleError::TimeZone("Mars/Olympus".into())
        );
    }

    #[test]
    fn bad_expressions_and_zones_are_clear_errors() {
        assert!(matches!(Schedule::parse("0 0 2 * * *", chrono_tz::Tz::UTC), Err(ScheduleError::Expression { .. })));
        assert!(matches!(Schedule::parse("61 * * * *", chrono_tz::Tz::UTC), Err(ScheduleError::Expression { .. })));
        assert!(matches!(Schedule::parse("CRON_TZ=Mars/Olympus 0 2 * * *", Tz::UTC), Err(ScheduleError::TimeZone(_))));
    }
}
