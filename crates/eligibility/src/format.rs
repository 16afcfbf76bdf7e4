//! Number formatting for explanations.
//!
//! The [`fmt::Display`] wrappers ([`Yuan`], [`Times`]) write straight into the string being
//! built, so an explanation is one allocation instead of one per number in it (formatting
//! numbers was most of an assessment's cost).

use std::fmt;

/// Fen as yuan with thousands separators and two decimals: `246000` → `2,460.00`.
pub fn yuan(fen: i128) -> String {
    Yuan(fen).to_string()
}

/// Basis points as a multiplier: `15000` → `1.5`, `10500` → `1.05`, `20000` → `2`.
pub fn times(bp: i128) -> String {
    Times(bp).to_string()
}

/// Displays fen as [`yuan`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Yuan(pub i128);

impl fmt::Display for Yuan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Filled from the right: sign, up to 37 digits with 12 separators, '.', 2 digits.
        let mut buf = [0u8; 56];
        let mut at = buf.len();
        let abs = self.0.unsigned_abs();
        let mut put = |b: u8| {
            at -= 1;
            buf[at] = b;
        };
        let cents = (abs % 100) as u8;
        put(b'0' + cents % 10);
        put(b'0' + cents / 10);
        put(b'.');
        let mut whole = abs / 100;
        let mut digits = 0;
        loop {
            if digits > 0 && digits % 3 == 0 {
                put(b',');
            }
            // u64 arithmetic whenever it fits: u128 division is a library call.
            let digit = match u64::try_from(whole) {
                Ok(w) => {
                    whole = u128::from(w / 10);
                    (w % 10) as u8
                }
                Err(_) => {
                    let d = (whole % 10) as u8;
                    whole /= 10;
                    d
                }
            };
            put(b'0' + digit);
            digits += 1;
            if whole == 0 {
                break;
            }
        }
        if self.0 < 0 {
            put(b'-');
        }
        // Only ASCII digits, separators and signs were written.
        f.write_str(std::str::from_utf8(&buf[at..]).map_err(|_| fmt::Error)?)
    }
}

/// Displays basis points as [`times`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times(pub i128);

impl fmt::Display for Times {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 10_000;
        let frac = (self.0 % 10_000).unsigned_abs() as u16;
        // i64 when it fits: i128 formatting takes a slower path.
        match i64::try_from(whole) {
            Ok(w) => write!(f, "{w}")?,
            Err(_) => write!(f, "{whole}")?,
        }
        if frac == 0 {
            return Ok(());
        }
        // Four digits with the trailing zeros trimmed: 500 → ".05", 2000 → ".2".
        let digits = [
            b'.',
            b'0' + (frac / 1000) as u8,
            b'0' + (frac / 100 % 10) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ];
        let mut len = digits.len();
        while digits[len - 1] == b'0' {
            len -= 1;
        }
        // Only ASCII was written.
        f.write_str(std::str::from_utf8(&digits[..len]).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuan_groups_thousands() {
        assert_eq!(yuan(0), "0.00");
        assert_eq!(yuan(7), "0.07");
        assert_eq!(yuan(107_000), "1,070.00");
        assert_eq!(yuan(321_000), "3,210.00");
        assert_eq!(yuan(100_000_001), "1,000,000.01");
        assert_eq!(yuan(-12_345), "-123.45");
        assert_eq!(yuan(i128::from(i64::MAX)), "92,233,720,368,547,758.07");
        assert_eq!(
            yuan(i128::MIN),
            "-1,701,411,834,604,692,317,316,873,037,158,841,057.28"
        );
        assert_eq!(
            yuan(i128::MAX),
            "1,701,411,834,604,692,317,316,873,037,158,841,057.27"
        );
    }

    #[test]
    fn multipliers() {
        assert_eq!(times(15_000), "1.5");
        assert_eq!(times(10_500), "1.05");
        assert_eq!(times(20_000), "2");
        assert_eq!(times(2_000), "0.2");
        assert_eq!(times(1), "0.0001");
    }

    /// The formatting of before the `Display` wrappers, kept as the reference.
    fn yuan_reference(fen: i128) -> String {
        let sign = if fen < 0 { "-" } else { "" };
        let abs = fen.unsigned_abs();
        let whole = (abs / 100).to_string();
        let mut grouped = String::with_capacity(whole.len() + whole.len() / 3);
        for (i, c) in whole.chars().enumerate() {
            if i > 0 && (whole.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(c);
        }
        format!("{sign}{grouped}.{:02}", abs % 100)
    }

    fn times_reference(bp: i128) -> String {
        let whole = bp / 10_000;
        let frac = (bp % 10_000).unsigned_abs();
        if frac == 0 {
            return whole.to_string();
        }
        let digits = format!("{frac:04}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    }

    proptest::proptest! {
        #[test]
        fn same_text_as_the_reference(x in proptest::prelude::any::<i128>(), small in -10_000_000i128..10_000_000) {
            proptest::prop_assert_eq!(yuan(x), yuan_reference(x));
            proptest::prop_assert_eq!(yuan(small), yuan_reference(small));
            proptest::prop_assert_eq!(times(x), times_reference(x));
            proptest::prop_assert_eq!(times(small), times_reference(small));
        }
    }
}
