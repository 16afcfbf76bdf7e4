//! Number formatting for explanations.

/// Fen as yuan with thousands separators and two decimals: `246000` → `2,460.00`.
pub fn yuan(fen: i128) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    let whole = (abs / 100).to_string();
    let mut grouped = String::with_capacity(whole.len() + whole.len() / 3);
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{sign}{grouped}.{:02}", abs % 100)
}

/// Basis points as a multiplier: `15000` → `1.5`, `10500` → `1.05`, `20000` → `2`.
pub fn times(bp: i128) -> String {
    let whole = bp / 10_000;
    let frac = (bp % 10_000).unsigned_abs();
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:04}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
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
    }

    #[test]
    fn multipliers() {
        assert_eq!(times(15_000), "1.5");
        assert_eq!(times(10_500), "1.05");
        assert_eq!(times(20_000), "2");
        assert_eq!(times(2_000), "0.2");
        assert_eq!(times(1), "0.0001");
    }
}
