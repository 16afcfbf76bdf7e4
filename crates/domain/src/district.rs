//! Tianjin's 16 districts (GB/T 2260 codes).

use std::fmt;
use std::str::FromStr;

use crate::Error;

// Sorted by code, so ordering by index is ordering by code.
const DISTRICTS: [(&str, &str); 16] = [
    ("120101", "Heping"),
    ("120102", "Hedong"),
    ("120103", "Hexi"),
    ("120104", "Nankai"),
    ("120105", "Hebei"),
    ("120106", "Hongqiao"),
    ("120110", "Dongli"),
    ("120111", "Xiqing"),
    ("120112", "Jinnan"),
    ("120113", "Beichen"),
    ("120114", "Wuqing"),
    ("120115", "Baodi"),
    ("120116", "Binhai New Area"),
    ("120117", "Ninghe"),
    ("120118", "Jinghai"),
    ("120119", "Jizhou"),
];

/// One of Tianjin's 16 district codes; no other value can be constructed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DistrictCode(u8);

impl DistrictCode {
    /// Number of districts.
    pub const COUNT: usize = DISTRICTS.len();

    /// Every district, in code order.
    pub fn all() -> impl ExactSizeIterator<Item = DistrictCode> + Clone {
        (0..DISTRICTS.len()).map(|i| DistrictCode(i as u8))
    }

    /// The district with this six-digit code, if it is one of the 16.
    pub fn parse(code: &str) -> Option<Self> {
        DISTRICTS
            .iter()
            .position(|(c, _)| *c == code)
            .map(|i| DistrictCode(i as u8))
    }

    /// The six-digit GB/T 2260 code, e.g. `120103`.
    pub fn code(self) -> &'static str {
        DISTRICTS[self.0 as usize].0
    }

    /// English name, e.g. `Hexi`.
    pub fn name(self) -> &'static str {
        DISTRICTS[self.0 as usize].1
    }
}

impl fmt::Debug for DistrictCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DistrictCode({} {})", self.code(), self.name())
    }
}

impl fmt::Display for DistrictCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for DistrictCode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s).ok_or_else(|| Error::UnknownDistrict(s.to_owned()))
    }
}

impl TryFrom<&str> for DistrictCode {
    type Error = Error;

    fn try_from(s: &str) -> Result<Self, Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_districts_round_trip() {
        assert_eq!(DistrictCode::all().len(), 16);
        for d in DistrictCode::all() {
            assert_eq!(d.code().parse::<DistrictCode>(), Ok(d));
        }
        assert_eq!(
            DistrictCode::parse("120116").map(DistrictCode::name),
            Some("Binhai New Area")
        );
    }

    #[test]
    fn rejects_other_codes() {
        for bad in [
            "", "120100", "120107", "120120", "110101", "12010", "1201010",
        ] {
            assert_eq!(
                bad.parse::<DistrictCode>(),
                Err(Error::UnknownDistrict(bad.to_owned()))
            );
        }
    }

    #[test]
    fn order_follows_code() {
        let codes: Vec<_> = DistrictCode::all().map(DistrictCode::code).collect();
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        assert_eq!(codes, sorted);
    }
}
