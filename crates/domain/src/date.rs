//! Dates: strict `YYYY-MM-DD` parsing, ages and "today" in Tianjin.

use chrono::{Datelike, NaiveDate, TimeDelta, Utc};

/// Parses a real calendar date written exactly as `YYYY-MM-DD` (no signs, no single digits,
/// no surrounding spaces), which chrono's own parser is more lenient about.
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    date_from_digits(&b[0..4], &b[5..7], &b[8..10])
}

/// The date of eight ASCII digits `YYYYMMDD` (as embedded in an identity number), by the
/// rules of [`parse_date`].
pub(crate) fn parse_compact_date(b: &[u8]) -> Option<NaiveDate> {
    if b.len() != 8 {
        return None;
    }
    date_from_digits(&b[0..4], &b[4..6], &b[6..8])
}

fn date_from_digits(year: &[u8], month: &[u8], day: &[u8]) -> Option<NaiveDate> {
    let digits = |b: &[u8]| -> Option<u32> {
        b.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let year = i32::try_from(digits(year)?).ok()?;
    NaiveDate::from_ymd_opt(year, digits(month)?, digits(day)?)
}

/// Formats a date as `YYYY-MM-DD`.
pub fn format_date(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// Age in whole years on `on`; 0 if `on` is before `birth`.
///
/// Comparing (month, day) pairs makes someone born on 29 February a year older on 1 March in
/// common years, as the policy requires.
pub fn age_on(birth: NaiveDate, on: NaiveDate) -> u32 {
    if on < birth {
        return 0;
    }
    let mut years = on.year() - birth.year();
    if (on.month(), on.day()) < (birth.month(), birth.day()) {
        years -= 1;
    }
    u32::try_from(years).unwrap_or(0)
}

/// An instant as every onecity timestamp is written: RFC 3339, UTC, milliseconds
/// (`2026-12-04T08:30:00.000Z`).
pub fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Today's date in Tianjin (China Standard Time, UTC+8, no daylight saving).
///
/// UTC would put a street office's morning (00:00 to 08:00 local) on the previous day and refuse
/// applications dated today as "in the future".
pub fn today() -> NaiveDate {
    (Utc::now() + TimeDelta::hours(8)).date_naive()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        parse_date(s).unwrap()
    }

    #[test]
    fn parses_only_strict_real_dates() {
        assert_eq!(
            parse_date("2024-02-29"),
            NaiveDate::from_ymd_opt(2024, 2, 29)
        );
        for bad in [
            "2023-02-29",
            "2024-2-29",
            "2024-02-30",
            "2024-13-01",
            "2024-00-10",
            "+024-02-01",
            " 2024-02-01",
            "2024/02/01",
            "20240201",
            "",
            "2024-02-01T00:00",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_round_trip() {
        assert_eq!(format_date(d("0999-01-02")), "0999-01-02");
        assert_eq!(format_date(d("2026-07-01")), "2026-07-01");
    }

    #[test]
    fn whole_years() {
        let cases = [
            ("1966-07-01", "2026-06-30", 59),
            ("1966-07-01", "2026-07-01", 60),
            ("1966-07-01", "2026-07-02", 60),
            ("2008-01-01", "2025-12-31", 17),
            ("2008-01-01", "2026-01-01", 18),
            ("2020-05-05", "2020-05-05", 0),
            ("2020-05-05", "2019-05-05", 0),
        ];
        for (birth, on, age) in cases {
            assert_eq!(age_on(d(birth), d(on)), age, "{birth} on {on}");
        }
    }

    #[test]
    fn leap_day_birthdays_advance_on_first_of_march_in_common_years() {
        let birth = d("2008-02-29");
        assert_eq!(age_on(birth, d("2026-02-28")), 17);
        assert_eq!(age_on(birth, d("2026-03-01")), 18);
        assert_eq!(age_on(birth, d("2028-02-28")), 19);
        assert_eq!(age_on(birth, d("2028-02-29")), 20);
        assert_eq!(age_on(birth, d("2009-02-28")), 0);
        assert_eq!(age_on(birth, d("2009-03-01")), 1);
        // In a leap year the birthday is 29 February itself.
        assert_eq!(age_on(d("1964-02-29"), d("2024-02-28")), 59);
        assert_eq!(age_on(d("1964-02-29"), d("2024-02-29")), 60);
        assert_eq!(age_on(d("1965-02-28"), d("2025-02-28")), 60);
    }
}
