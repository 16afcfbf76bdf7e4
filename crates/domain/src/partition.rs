//! Partitions of the case space, so several instances of a worker role share the work
//! while exactly one instance decides for any given case.

use std::fmt;
use std::str::FromStr;

/// Instance `index` of `count`: owns the cases whose id hashes to `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Partition {
    index: u32,
    count: u32,
}

impl Default for Partition {
    fn default() -> Self {
        Partition { index: 0, count: 1 }
    }
}

/// A partition spec that is not `INDEX/COUNT` with `INDEX < COUNT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("partition {0:?}: expected INDEX/COUNT with 0 <= INDEX < COUNT, e.g. 0/2")]
pub struct BadPartition(pub String);

impl Partition {
    /// Instance `index` of `count`.
    pub fn new(index: u32, count: u32) -> Result<Self, BadPartition> {
        if count == 0 || index >= count {
            return Err(BadPartition(format!("{index}/{count}")));
        }
        Ok(Partition { index, count })
    }

    /// Which partition this is, `0..count`.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// How many partitions there are.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether this instance owns the case with these id bytes. Uses the low 64 bits of
    /// the UUID, which are random in a v7 id (the high bits are a timestamp and would
    /// send a whole burst of cases to one instance).
    pub fn owns(&self, case_id: &[u8; 16]) -> bool {
        let mut low = [0u8; 8];
        low.copy_from_slice(&case_id[8..]);
        u64::from_be_bytes(low) % u64::from(self.count) == u64::from(self.index)
    }

    /// Suffix for per-partition checkpoint names (empty for the single partition, so a
    /// single instance keeps the plain consumer name).
    pub fn consumer_suffix(&self) -> String {
        if self.count == 1 {
            String::new()
        } else {
            format!("-{}of{}", self.index, self.count)
        }
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Partition {
    type Err = BadPartition;

    fn from_str(s: &str) -> Result<Self, BadPartition> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| BadPartition(s.to_owned()))?;
        let i = i.trim().parse().map_err(|_| BadPartition(s.to_owned()))?;
        let n = n.trim().parse().map_err(|_| BadPartition(s.to_owned()))?;
        Partition::new(i, n).map_err(|_| BadPartition(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!(
            "1/3".parse::<Partition>().unwrap(),
            Partition::new(1, 3).unwrap()
        );
        for bad in ["3/3", "0/0", "x", "1-2", "/2", "-1/2"] {
            assert!(bad.parse::<Partition>().is_err(), "{bad}");
        }
        assert_eq!(Partition::default().consumer_suffix(), "");
        assert_eq!(Partition::new(1, 2).unwrap().consumer_suffix(), "-1of2");
    }

    proptest! {
        #[test]
        fn every_case_has_exactly_one_owner(id in any::<[u8; 16]>(), n in 1u32..8) {
            let owners = (0..n).filter(|i| Partition::new(*i, n).unwrap().owns(&id)).count();
            prop_assert_eq!(owners, 1);
        }
    }
}
