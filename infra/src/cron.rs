//! AWS cron expressions (EventBridge rules and Scheduler): six fields, `minutes hours
//! day-of-month month day-of-week year`, with `? L W #`. Parsed fully so bad ones fail
//! before anything touches AWS, and so run times can be computed.

use std::fmt;

use jiff::civil;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Timestamp, Zoned};

/// A parsed expression; `source` is the six fields as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    pub source: String,
    pub minutes: Vec<u8>,
    pub hours: Vec<u8>,
    pub day_of_month: DayOfMonth,
    pub months: Vec<u8>,
    pub day_of_week: DayOfWeek,
    /// `None`: every year.
    pub years: Option<Vec<u16>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DayOfMonth {
    /// `?`: the day is given by day-of-week.
    Any,
    Days(Vec<u8>),
    /// `L`: the last day of the month.
    Last,
    /// `LW`: the last weekday of the month.
    LastWeekday,
    /// `15W`: the weekday nearest the 15th, within the month.
    NearestWeekday(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DayOfWeek {
    /// `?`: the day is given by day-of-month.
    Any,
    /// 1 = Sunday ... 7 = Saturday.
    Days(Vec<u8>),
    /// `6L`: the last such weekday of the month.
    Last(u8),
    /// `2#1`: the first Monday of the month.
    Nth { day: u8, nth: u8 },
}

/// Why an expression is not valid, in words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronError(pub String);

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

struct Field {
    name: &'static str,
    min: u16,
    max: u16,
    names: &'static [&'static str],
}

const MINUTES: Field = Field {
    name: "minutes",
    min: 0,
    max: 59,
    names: &[],
};
const HOURS: Field = Field {
    name: "hours",
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &MONTHS,
};
const DOW: Field = Field {
    name: "day-of-week",
    min: 1,
    max: 7,
    names: &DAYS,
};
const YEAR: Field = Field {
    name: "year",
    min: 1970,
    max: 2199,
    names: &[],
};

impl Cron {
    /// Parses `"0 5 * * ? *"`; a `cron(...)` wrapper is accepted too.
    pub fn parse(text: &str) -> Result<Self, CronError> {
        let inner = text
            .trim()
            .strip_prefix("cron(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or(text.trim());
        let fields: Vec<&str> = inner.split_whitespace().collect();
        if fields.len() != 6 {
            return Err(CronError(format!(
                "has {} fields; AWS cron takes 6: minutes hours day-of-month month day-of-week year \
                 (e.g. \"0 5 * * ? *\" for 05:00 every day)",
                fields.len()
            )));
        }
        let (dom_text, dow_text) = (fields[2], fields[4]);
        match (dom_text == "?", dow_text == "?") {
            (true, true) => {
                return Err(CronError(
                    "has `?` in both day-of-month and day-of-week; exactly one of them must be `?`"
                        .into(),
                ));
            }
            (false, false) => {
                return Err(CronError(format!(
                    "sets both day-of-month ({dom_text}) and day-of-week ({dow_text}); AWS requires \
                     `?` in one of them"
                )));
            }
            _ => {}
        }
        Ok(Self {
            source: fields.join(" "),
            minutes: narrow(values(&MINUTES, fields[0])?),
            hours: narrow(values(&HOURS, fields[1])?),
            day_of_month: day_of_month(dom_text)?,
            months: narrow(values(&MONTH, fields[3])?),
            day_of_week: day_of_week(dow_text)?,
            years: if fields[5] == "*" {
                None
            } else {
                Some(values(&YEAR, fields[5])?)
            },
        })
    }

    /// Whether it fires exactly once on every day of every month and year.
    pub fn is_daily(&self) -> bool {
        let every_day = match (&self.day_of_month, &self.day_of_week) {
            (DayOfMonth::Days(d), DayOfWeek::Any) => d.len() == 31,
            (DayOfMonth::Any, DayOfWeek::Days(d)) => d.len() == 7,
            _ => false,
        };
        every_day
            && self.minutes.len() == 1
            && self.hours.len() == 1
            && self.months.len() == 12
            && self.years.is_none()
    }

    /// The form AWS takes: `cron(0 5 * * ? *)`.
    pub fn expression(&self) -> String {
        format!("cron({})", self.source)
    }
}

fn narrow(values: Vec<u16>) -> Vec<u8> {
    values
        .into_iter()
        .map(|v| u8::try_from(v).expect("field maximum is below 256"))
        .collect()
}

fn day_of_month(text: &str) -> Result<DayOfMonth, CronError> {
    Ok(match text {
        "?" => DayOfMonth::Any,
        "L" => DayOfMonth::Last,
        "LW" => DayOfMonth::LastWeekday,
        _ if text.len() > 1 && text.ends_with('W') => {
            let day = number(&DOM, &text[..text.len() - 1])?;
            DayOfMonth::NearestWeekday(narrow(vec![day])[0])
        }
        _ => DayOfMonth::Days(narrow(values(&DOM, text)?)),
    })
}

fn day_of_week(text: &str) -> Result<DayOfWeek, CronError> {
    if text == "?" {
        return Ok(DayOfWeek::Any);
    }
    if let Some((day, nth)) = text.split_once('#') {
        let day = narrow(vec![number(&DOW, day)?])[0];
        let Ok(nth @ 1..=5) = nth.parse::<u8>() else {
            return Err(CronError(format!(
                "day-of-week `{text}`: the number after `#` must be 1 to 5 (the week of the month)"
            )));
        };
        return Ok(DayOfWeek::Nth { day, nth });
    }
    if let Some(day) = text.strip_suffix('L') {
        let day = if day.is_empty() {
            7
        } else {
            number(&DOW, day)?
        };
        return Ok(DayOfWeek::Last(narrow(vec![day])[0]));
    }
    Ok(DayOfWeek::Days(narrow(values(&DOW, text)?)))
}

/// Expands `*`, `a`, `a-b`, `a/s`, `a-b/s`, `*/s` and comma lists into sorted values.
fn values(field: &Field, text: &str) -> Result<Vec<u16>, CronError> {
    let mut out = Vec::new();
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step = step.parse::<u16>().ok().filter(|s| *s > 0).ok_or_else(|| {
                    CronError(format!(
                        "{} `{part}`: the step after `/` must be a positive number",
                        field.name
                    ))
                })?;
                (range, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (field.min, field.max)
        } else if let Some((lo, hi)) = range.split_once('-') {
            (number(field, lo)?, number(field, hi)?)
        } else {
            let v = number(field, range)?;
            (v, if part.contains('/') { field.max } else { v })
        };
        if lo > hi {
            return Err(CronError(format!(
                "{} `{part}`: the range runs backwards; write the smaller value first",
                field.name
            )));
        }
        out.extend((lo..=hi).step_by(usize::from(step)));
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn number(field: &Field, text: &str) -> Result<u16, CronError> {
    let upper = text.to_ascii_uppercase();
    let value = field
        .names
        .iter()
        .position(|n| *n == upper)
        .map(|i| u16::try_from(i).expect("at most 12 names") + field.min)
        .or_else(|| text.parse().ok());
    match value {
        Some(v) if (field.min..=field.max).contains(&v) => Ok(v),
        _ => {
            let names = if field.names.is_empty() {
                String::new()
            } else {
                format!(
                    " or {}-{}",
                    field.names[0],
                    field.names[field.names.len() - 1]
                )
            };
            Err(CronError(format!(
                "{} `{text}` is not valid; use {}-{}{names}, `*`, lists, ranges or steps",
                field.name, field.min, field.max
            )))
        }
    }
}

impl Cron {
    /// The next `count` times after `after` when EventBridge Scheduler runs this
    /// expression in `tz`: a time skipped by a spring-forward change does not run, and a
    /// time repeated by a fall-back change runs once, at its first occurrence.
    pub fn next_runs(&self, tz: &TimeZone, after: Timestamp, count: usize) -> Vec<Zoned> {
        let mut runs = Vec::new();
        let start = after.to_zoned(tz.clone()).date();
        // Bounded: an expression may match rarely (a leap day, one year) or never again.
        for day in 0..(366 * 30) {
            let Ok(date) = start.checked_add(jiff::Span::new().days(day)) else {
                break;
            };
            if !self.matches_date(date) {
                continue;
            }
            for &hour in &self.hours {
                for &minute in &self.minutes {
                    let time = civil::time(
                        i8::try_from(hour).unwrap_or(0),
                        i8::try_from(minute).unwrap_or(0),
                        0,
                        0,
                    );
                    let ambiguous = tz.to_ambiguous_zoned(date.to_datetime(time));
                    if matches!(ambiguous.offset(), AmbiguousOffset::Gap { .. }) {
                        continue;
                    }
                    let Ok(zoned) = ambiguous.earlier() else {
                        continue;
                    };
                    if zoned.timestamp() > after {
                        runs.push(zoned);
                        if runs.len() == count {
                            return runs;
                        }
                    }
                }
            }
        }
        runs
    }

    fn matches_date(&self, date: civil::Date) -> bool {
        let month = u8::try_from(date.month()).unwrap_or(0);
        if !self.months.contains(&month) {
            return false;
        }
        if let Some(years) = &self.years
            && !years.contains(&u16::try_from(date.year()).unwrap_or(0))
        {
            return false;
        }
        let day = u8::try_from(date.day()).unwrap_or(0);
        let last = u8::try_from(date.days_in_month()).unwrap_or(0);
        let weekday = u8::try_from(date.weekday().to_sunday_one_offset()).unwrap_or(0);
        let dom = match &self.day_of_month {
            DayOfMonth::Any => true,
            DayOfMonth::Days(days) => days.contains(&day),
            DayOfMonth::Last => day == last,
            DayOfMonth::LastWeekday => day == nearest_weekday(date, last),
            DayOfMonth::NearestWeekday(n) => *n <= last && day == nearest_weekday(date, *n),
        };
        let dow = match &self.day_of_week {
            DayOfWeek::Any => true,
            DayOfWeek::Days(days) => days.contains(&weekday),
            DayOfWeek::Last(d) => *d == weekday && day + 7 > last,
            DayOfWeek::Nth { day: d, nth } => *d == weekday && (day - 1) / 7 + 1 == *nth,
        };
        dom && dow
    }
}

/// The weekday (Monday to Friday) nearest day `n` of `date`'s month, within the month.
fn nearest_weekday(date: civil::Date, n: u8) -> u8 {
    let last = u8::try_from(date.days_in_month()).unwrap_or(28);
    let target = date
        .first_of_month()
        .checked_add(jiff::Span::new().days(i64::from(n) - 1))
        .unwrap_or(date);
    match target.weekday().to_sunday_one_offset() {
        // Saturday: the Friday before, unless that is last month; then the Monday after.
        7 => {
            if n > 1 {
                n - 1
            } else {
                n + 2
            }
        }
        // Sunday: the Monday after, unless that is next month; then the Friday before.
        1 => {
            if n < last {
                n + 1
            } else {
                n - 2
            }
        }
        _ => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_at_five_parses_to_single_minute_and_hour() {
        let c = Cron::parse("0 5 * * ? *").unwrap();
        assert_eq!((&c.minutes, &c.hours), (&vec![0], &vec![5]));
        assert_eq!(c.day_of_month, DayOfMonth::Days((1..=31).collect()));
        assert_eq!(c.day_of_week, DayOfWeek::Any);
        assert_eq!(c.expression(), "cron(0 5 * * ? *)");
        assert!(c.is_daily());
        assert!(Cron::parse("0 5 ? * * *").unwrap().is_daily());
        assert!(!Cron::parse("0 9 4 * ? *").unwrap().is_daily());
        assert!(!Cron::parse("0 5,17 * * ? *").unwrap().is_daily());
        assert!(!Cron::parse("0 5 ? * MON-FRI *").unwrap().is_daily());
    }

    #[test]
    fn wrapper_names_steps_and_special_days_parse() {
        let c = Cron::parse("cron(*/15 9-17 ? JAN-MAR MON#1 2027)").unwrap();
        assert_eq!(c.minutes, vec![0, 15, 30, 45]);
        assert_eq!(c.hours.len(), 9);
        assert_eq!(c.months, vec![1, 2, 3]);
        assert_eq!(c.day_of_week, DayOfWeek::Nth { day: 2, nth: 1 });
        assert_eq!(c.years, Some(vec![2027]));
        assert_eq!(
            Cron::parse("0 0 L * ? *").unwrap().day_of_month,
            DayOfMonth::Last
        );
        assert_eq!(
            Cron::parse("0 0 15W * ? *").unwrap().day_of_month,
            DayOfMonth::NearestWeekday(15)
        );
        assert_eq!(
            Cron::parse("0 0 ? * 6L *").unwrap().day_of_week,
            DayOfWeek::Last(6)
        );
    }

    #[test]
    fn invalid_expressions_say_what_is_wrong() {
        let err = |s| Cron::parse(s).unwrap_err().0;
        assert!(err("0 5 * * *").contains("has 5 fields"));
        assert!(err("0 5 * * * *").contains("sets both day-of-month"));
        assert!(err("0 5 ? * ? *").contains("`?` in both"));
        assert!(err("60 5 * * ? *").contains("minutes `60` is not valid"));
        assert!(err("0 24 * * ? *").contains("hours `24`"));
        assert!(err("0 5 * FOO ? *").contains("month `FOO`"));
        assert!(err("0 5 ? * MON#6 *").contains("1 to 5"));
        assert!(err("*/0 5 * * ? *").contains("positive number"));
        assert!(err("0 9-5 * * ? *").contains("runs backwards"));
    }

    fn la() -> TimeZone {
        TimeZone::get("America/Los_Angeles").unwrap()
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn runs(cron: &str, after: &str, n: usize) -> Vec<String> {
        Cron::parse(cron)
            .unwrap()
            .next_runs(&la(), at(after), n)
            .iter()
            .map(|z| z.timestamp().to_string())
            .collect()
    }

    #[test]
    fn daily_five_am_keeps_local_time_across_the_march_change() {
        // DST starts 2027-03-14 in Los Angeles: 05:00 is 13:00Z before, 12:00Z after.
        assert_eq!(
            runs("0 5 * * ? *", "2027-03-13T00:00:00Z", 3),
            [
                "2027-03-13T13:00:00Z",
                "2027-03-14T12:00:00Z",
                "2027-03-15T12:00:00Z"
            ]
        );
    }

    #[test]
    fn daily_five_am_keeps_local_time_across_the_november_change() {
        // DST ends 2026-11-01: 05:00 is 12:00Z before, 13:00Z after.
        assert_eq!(
            runs("0 5 * * ? *", "2026-10-31T00:00:00Z", 3),
            [
                "2026-10-31T12:00:00Z",
                "2026-11-01T13:00:00Z",
                "2026-11-02T13:00:00Z"
            ]
        );
    }

    #[test]
    fn a_skipped_time_does_not_run_and_a_repeated_time_runs_once() {
        // 02:30 does not exist on 2027-03-14; 01:30 happens twice on 2026-11-01.
        assert_eq!(
            runs("30 2 * * ? *", "2027-03-13T00:00:00Z", 2),
            ["2027-03-13T10:30:00Z", "2027-03-15T09:30:00Z"]
        );
        assert_eq!(
            runs("30 1 * * ? *", "2026-10-31T12:00:00Z", 2),
            ["2026-11-01T08:30:00Z", "2026-11-02T09:30:00Z"]
        );
    }

    #[test]
    fn monthly_on_the_fourth_and_special_days() {
        assert_eq!(
            runs("0 9 4 * ? *", "2026-11-22T00:00:00Z", 3),
            [
                "2026-12-04T17:00:00Z",
                "2027-01-04T17:00:00Z",
                "2027-02-04T17:00:00Z"
            ]
        );
        // The last day of February 2027, the first Monday of March, the last Friday.
        assert_eq!(
            runs("0 12 L * ? *", "2027-02-01T00:00:00Z", 1),
            ["2027-02-28T20:00:00Z"]
        );
        assert_eq!(
            runs("0 12 ? * MON#1 *", "2027-02-15T00:00:00Z", 1),
            ["2027-03-01T20:00:00Z"]
        );
        assert_eq!(
            runs("0 12 ? * 6L *", "2027-04-01T00:00:00Z", 1),
            ["2027-04-30T19:00:00Z"]
        );
        // 2027-05-15 is a Saturday: the nearest weekday is Friday the 14th.
        assert_eq!(
            runs("0 12 15W * ? *", "2027-05-01T00:00:00Z", 1),
            ["2027-05-14T19:00:00Z"]
        );
        assert!(runs("0 12 1 1 ? 2020", "2026-01-01T00:00:00Z", 1).is_empty());
    }
}
