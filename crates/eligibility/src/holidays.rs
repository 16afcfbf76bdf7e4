//! Working days: the holiday calendar (`policy/holidays.toml`, dated data beside the policy)
//! and the deadline arithmetic that uses it.
//!
//! Deadlines are counted in Tianjin's calendar (UTC+8): a referral submitted late in the
//! evening local time is submitted on that local date, whatever the UTC date says.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc, Weekday};
use onecity_domain::parse_date;
use serde::Deserialize;

use crate::{Error, Result};

const EMBEDDED: &str = include_str!("../policy/holidays.toml");
const EMBEDDED_NAME: &str = "crates/eligibility/policy/holidays.toml";

/// Offset of Tianjin local time from UTC.
const LOCAL_OFFSET_HOURS: i64 = 8;

/// How a programme's deadline is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeadlineUnit {
    /// Every day counts.
    #[default]
    Calendar,
    /// Only working days count (see [`HolidayCalendar::is_working_day`]).
    Working,
}

impl DeadlineUnit {
    /// The catalogue's spelling (`calendar`, `working`).
    pub fn as_str(self) -> &'static str {
        match self {
            DeadlineUnit::Calendar => "calendar",
            DeadlineUnit::Working => "working",
        }
    }
}

/// Official holidays and the weekend days declared working days in their place.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HolidayCalendar {
    holidays: BTreeSet<NaiveDate>,
    working_weekends: BTreeSet<NaiveDate>,
    sample: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCalendar {
    sample: Option<bool>,
    years: Option<Vec<i32>>,
    holidays: Option<Vec<String>>,
    working_weekends: Option<Vec<String>>,
}

impl HolidayCalendar {
    /// The calendar shipped in `policy/holidays.toml` (a labelled sample).
    ///
    /// # Panics
    /// Never for the shipped file, which a unit test parses.
    pub fn embedded() -> Self {
        Self::from_toml_str(EMBEDDED, EMBEDDED_NAME)
            .unwrap_or_else(|e| panic!("embedded holiday calendar is invalid: {e}"))
    }

    /// Reads a calendar file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let (text, name) = crate::error::read_source(path.as_ref())?;
        Self::from_toml_str(&text, &name)
    }

    /// Parses calendar TOML; `source_name` names it in errors. Every date must be a strict
    /// `YYYY-MM-DD` in one of `years`, a working weekend must fall on a Saturday or Sunday,
    /// and no date may be both.
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<Self> {
        let raw: RawCalendar =
            toml::from_str(text).map_err(|e| Error::from_toml(source_name, text, &e))?;
        let err = |field: String, reason: String| Error::config(source_name, field, reason);
        let years = raw.years.unwrap_or_default();
        let dates = |name: &str, list: Option<Vec<String>>| -> Result<BTreeSet<NaiveDate>> {
            let mut out = BTreeSet::new();
            for (i, s) in list.unwrap_or_default().iter().enumerate() {
                let at = format!("{name}[{i}]");
                let d = parse_date(s)
                    .ok_or_else(|| err(at.clone(), format!("not a YYYY-MM-DD date: {s:?}")))?;
                if !years.contains(&d.year()) {
                    return Err(err(at, format!("{s} is not in one of the listed years")));
                }
                if !out.insert(d) {
                    return Err(err(at, format!("duplicate date {s}")));
                }
            }
            Ok(out)
        };
        let holidays = dates("holidays", raw.holidays)?;
        let working_weekends = dates("working_weekends", raw.working_weekends)?;
        if let Some(d) = working_weekends.iter().find(|d| !is_weekend(**d)) {
            return Err(err(
                "working_weekends".into(),
                format!("{d} is not a saturday or sunday"),
            ));
        }
        if let Some(d) = holidays.intersection(&working_weekends).next() {
            return Err(err(
                "working_weekends".into(),
                format!("{d} is also a holiday"),
            ));
        }
        Ok(HolidayCalendar {
            holidays,
            working_weekends,
            sample: raw.sample.unwrap_or(false),
        })
    }

    /// Whether the file says its dates are a sample rather than the published notice.
    pub fn is_sample(&self) -> bool {
        self.sample
    }

    /// Monday to Friday and not a holiday, or a declared working weekend.
    pub fn is_working_day(&self, d: NaiveDate) -> bool {
        if self.working_weekends.contains(&d) {
            return true;
        }
        !is_weekend(d) && !self.holidays.contains(&d)
    }

    /// The `n`th working day after `from` (`from` itself never counts, as the day of
    /// submission is not a full day).
    pub fn add_working_days(&self, from: NaiveDate, n: u32) -> NaiveDate {
        let mut d = from;
        let mut left = n;
        while left > 0 {
            d = d.succ_opt().unwrap_or(d);
            if self.is_working_day(d) {
                left -= 1;
            }
        }
        d
    }

    /// The deadline of a period of `days` in `unit` starting at `start`: the same local time
    /// of day on the local date `days` calendar or working days later.
    pub fn due_at(&self, start: DateTime<Utc>, days: u32, unit: DeadlineUnit) -> DateTime<Utc> {
        match unit {
            DeadlineUnit::Calendar => start + TimeDelta::days(i64::from(days)),
            DeadlineUnit::Working => {
                let local = start + TimeDelta::hours(LOCAL_OFFSET_HOURS);
                let from = local.date_naive();
                let to = self.add_working_days(from, days);
                start + (to - from)
            }
        }
    }
}

fn is_weekend(d: NaiveDate) -> bool {
    matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        parse_date(s).unwrap()
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_shipped_calendar_parses_and_says_it_is_a_sample() {
        let c = HolidayCalendar::embedded();
        assert!(c.is_sample());
        assert!(!c.is_working_day(d("2026-10-01")), "national day");
        assert!(c.is_working_day(d("2026-10-10")), "working saturday");
        assert!(!c.is_working_day(d("2026-10-11")), "ordinary sunday");
        assert!(c.is_working_day(d("2026-10-09")), "ordinary friday");
    }

    #[test]
    fn working_days_skip_weekends_and_holidays_and_count_working_weekends() {
        let c = HolidayCalendar::embedded();
        // Wednesday 30 September 2026: 1-7 October are holidays, Saturday 10th works.
        assert_eq!(c.add_working_days(d("2026-09-30"), 1), d("2026-10-08"));
        assert_eq!(c.add_working_days(d("2026-09-30"), 2), d("2026-10-09"));
        assert_eq!(c.add_working_days(d("2026-09-30"), 3), d("2026-10-10"));
        assert_eq!(c.add_working_days(d("2026-09-30"), 4), d("2026-10-12"));
        // An ordinary week: Friday plus one is Monday.
        assert_eq!(c.add_working_days(d("2026-11-06"), 1), d("2026-11-09"));
        assert_eq!(c.add_working_days(d("2026-11-06"), 0), d("2026-11-06"));
        // Beyond the listed years only weekends are skipped.
        assert_eq!(c.add_working_days(d("2030-10-01"), 5), d("2030-10-08"));
    }

    #[test]
    fn due_at_keeps_the_time_of_day_and_counts_in_local_dates() {
        let c = HolidayCalendar::embedded();
        let start = t("2026-09-30T02:00:00Z");
        assert_eq!(
            c.due_at(start, 3, DeadlineUnit::Calendar),
            t("2026-10-03T02:00:00Z")
        );
        assert_eq!(
            c.due_at(start, 3, DeadlineUnit::Working),
            t("2026-10-10T02:00:00Z")
        );
        // 17:00 UTC on Tuesday 29 September is 01:00 on Wednesday the 30th in Tianjin.
        assert_eq!(
            c.due_at(t("2026-09-29T17:00:00Z"), 1, DeadlineUnit::Working),
            t("2026-10-07T17:00:00Z")
        );
    }

    #[test]
    fn malformed_calendars_are_refused_naming_the_field() {
        let refused = |text: &str, field: &str| {
            let e = HolidayCalendar::from_toml_str(text, "h.toml").unwrap_err();
            assert!(
                matches!(&e, Error::Config { field: f, .. } if f == field),
                "{e}"
            );
        };
        refused(
            "years = [2026]\nholidays = [\"2026-13-01\"]\n",
            "holidays[0]",
        );
        refused(
            "years = [2026]\nholidays = [\"2027-01-01\"]\n",
            "holidays[0]",
        );
        refused(
            "years = [2026]\nworking_weekends = [\"2026-10-09\"]\n",
            "working_weekends",
        );
        refused(
            "years = [2026]\nholidays = [\"2026-10-10\"]\nworking_weekends = [\"2026-10-10\"]\n",
            "working_weekends",
        );
        refused(
            "years = [2026]\nholidays = [\"2026-10-01\", \"2026-10-01\"]\n",
            "holidays[1]",
        );
        refused("colour = 1\n", "colour");
    }
}
