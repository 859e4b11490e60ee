//! Cron schedules: standard 5-field expressions with POSIX/Vixie semantics, in a time zone.
//!
//! Parsed with `croner` with seconds and years disallowed: minute, hour, day of month,
//! month, day of week (0–7, both 0 and 7 Sunday; `1-5` is Monday–Friday). When both
//! day fields are restricted a day matches if either does, as in Vixie cron. (The `cron`
//! crate needs a seconds field and numbers weekdays 1–7 from Sunday, so `1-5` there means
//! Sunday–Thursday; we do not use it.)

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// Why a schedule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("cron.schedule {expr:?} is not a valid 5-field cron expression: {message}")]
    Expression { expr: String, message: String },
    #[error("cron.timezone {0:?} is not a known time zone (e.g. UTC, Europe/Berlin, America/New_York)")]
    TimeZone(String),
}

/// A parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: Tz,
    expr: String,
}

impl Schedule {
    /// Parses `expr` for time zone `tz` (an IANA name such as `Europe/Berlin`, or `UTC`).
    pub fn parse(expr: &str, tz: &str) -> Result<Self, ScheduleError> {
        let bad = |message: String| ScheduleError::Expression { expr: expr.to_owned(), message };
        if expr.split_whitespace().count() != 5 {
            return Err(bad("expected 5 fields: minute hour day-of-month month day-of-week".into()));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| bad(e.to_string()))?;
        let tz: Tz = tz.parse().map_err(|_| ScheduleError::TimeZone(tz.to_owned()))?;
        Ok(Self { cron, tz, expr: expr.to_owned() })
    }

    pub fn expression(&self) -> &str {
        &self.expr
    }

    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = self.tz.from_utc_datetime(&after.naive_utc());
        self.cron.find_next_occurrence(&local, false).ok().map(|t| t.with_timezone(&Utc))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(expr: &str, after: &str, n: usize) -> Vec<String> {
        let s = Schedule::parse(expr, "UTC").unwrap();
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
        let s = Schedule::parse("0 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(s.next_after(at("2024-01-15T00:00:00Z")), Some(at("2024-01-15T01:00:00Z")));
        // Summer time: 02:00 in Berlin is 00:00 UTC.
        assert_eq!(s.next_after(at("2024-07-15T00:00:00Z")), Some(at("2024-07-16T00:00:00Z")));
    }

    #[test]
    fn bad_expressions_and_zones_are_clear_errors() {
        assert!(matches!(Schedule::parse("0 0 2 * * *", "UTC"), Err(ScheduleError::Expression { .. })));
        assert!(matches!(Schedule::parse("61 * * * *", "UTC"), Err(ScheduleError::Expression { .. })));
        assert!(matches!(Schedule::parse("0 2 * * *", "Mars/Olympus"), Err(ScheduleError::TimeZone(_))));
    }
}
