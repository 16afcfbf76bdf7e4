//! Resident identity numbers (GB 11643-1999).

use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;

const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK: [u8; 11] = *b"10X98765432";

/// Why a string is not a valid identity number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdNumberError {
    /// Not 18 characters long.
    #[error("must be 18 characters")]
    Length,
    /// One of the first 17 characters is not an ASCII digit.
    #[error("first 17 characters must be digits")]
    NotDigits,
    /// The last character is neither a digit nor `X`.
    #[error("last character must be a digit or X")]
    CheckCharacterFormat,
    /// The check character disagrees with the first 17 digits.
    #[error("check character does not match")]
    CheckMismatch,
    /// Characters 7 to 14 are not a real `YYYYMMDD` date.
    #[error("embedded birth date is not a real date")]
    BirthDate,
}

/// A resident identity number with a valid check character and a real embedded birth date.
///
/// Identity numbers are personal data: `Debug` and `Display` print the masked form
/// (`120103********123X`); the full number is only available through [`IdNumber::expose`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdNumber(String);

impl IdNumber {
    /// Validates `s`; a lowercase `x` check character is accepted and stored as `X`.
    pub fn parse(s: &str) -> Result<Self, IdNumberError> {
        if s.chars().count() != 18 {
            return Err(IdNumberError::Length);
        }
        let b = s.as_bytes();
        // 18 chars but not 18 bytes means a non-ASCII character somewhere.
        if b.len() != 18 || !b[..17].iter().all(u8::is_ascii_digit) {
            return Err(IdNumberError::NotDigits);
        }
        let last = b[17].to_ascii_uppercase();
        if !(last.is_ascii_digit() || last == b'X') {
            return Err(IdNumberError::CheckCharacterFormat);
        }
        if Some(char::from(last)) != Self::check_character(&s[..17]) {
            return Err(IdNumberError::CheckMismatch);
        }
        crate::date::parse_compact_date(&b[6..14]).ok_or(IdNumberError::BirthDate)?;
        let mut normalised = s[..17].to_owned();
        normalised.push(char::from(last));
        Ok(Self(normalised))
    }

    /// The GB 11643 check character for 17 digits, or `None` if `first17` is not 17 ASCII digits.
    pub fn check_character(first17: &str) -> Option<char> {
        let b = first17.as_bytes();
        if b.len() != 17 || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let sum: u32 = b
            .iter()
            .zip(WEIGHTS)
            .map(|(&c, w)| u32::from(c - b'0') * w)
            .sum();
        Some(char::from(CHECK[(sum % 11) as usize]))
    }

    /// The full number. Personal data: never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The six-digit region code of first registration (any region of China, not only Tianjin).
    pub fn region(&self) -> &str {
        &self.0[..6]
    }

    /// The birth date embedded in the number.
    pub fn birth_date(&self) -> NaiveDate {
        crate::date::parse_compact_date(&self.0.as_bytes()[6..14]).unwrap_or_default()
    }

    /// Masked form for logs and screens: first 6 characters, 8 stars, last 4.
    pub fn masked(&self) -> String {
        format!("{}********{}", &self.0[..6], &self.0[14..])
    }
}

impl fmt::Debug for IdNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdNumber({})", self.masked())
    }
}

impl fmt::Display for IdNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl FromStr for IdNumber {
    type Err = IdNumberError;

    fn from_str(s: &str) -> Result<Self, IdNumberError> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A widely published GB 11643 example number.
    const KNOWN: &str = "11010519491231002X";

    #[test]
    fn known_example_is_valid() {
        let id = IdNumber::parse(KNOWN).unwrap();
        assert_eq!(
            id.birth_date(),
            NaiveDate::from_ymd_opt(1949, 12, 31).unwrap()
        );
        assert_eq!(id.region(), "110105");
        assert_eq!(IdNumber::check_character("11010519491231002"), Some('X'));
    }

    #[test]
    fn lowercase_x_is_normalised() {
        let id = IdNumber::parse("11010519491231002x").unwrap();
        assert_eq!(id.expose(), KNOWN);
    }

    #[test]
    fn rejections() {
        let cases = [
            ("", IdNumberError::Length),
            ("11010519491231002", IdNumberError::Length),
            ("11010519491231002XX", IdNumberError::Length),
            ("1101051949123100AX", IdNumberError::NotDigits),
            ("1101051949123100é2", IdNumberError::NotDigits),
            ("110105194912310021", IdNumberError::CheckMismatch),
            ("11010519491231002Y", IdNumberError::CheckCharacterFormat),
        ];
        for (s, e) in cases {
            assert_eq!(IdNumber::parse(s), Err(e), "{s}");
        }
        // Right check character, impossible date.
        let first17 = "12010319490230002";
        let s = format!("{first17}{}", IdNumber::check_character(first17).unwrap());
        assert_eq!(IdNumber::parse(&s), Err(IdNumberError::BirthDate));
    }

    #[test]
    fn never_printed_in_full() {
        let id = IdNumber::parse(KNOWN).unwrap();
        assert_eq!(id.masked(), "110105********002X");
        assert_eq!(id.to_string(), "110105********002X");
        assert_eq!(format!("{id:?}"), "IdNumber(110105********002X)");
        assert!(!format!("{id:?}{id}").contains("19491231"));
    }
}
