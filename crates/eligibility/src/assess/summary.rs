//! The clerk's one line per programme: the outcome with its amount and reason, or the
//! failed rules, the margin and the next tier to look at.

use std::fmt::Write as _;

use onecity_domain::{Outcome, Programme};

use super::{Part, Pay};
use crate::format::Yuan;

/// Room for a summary's own words and numbers besides its reason; an ineligible summary
/// quoting several failed rules may still grow once.
const SUMMARY_CAPACITY: usize = 160;

/// Where a clerk looks next when a programme is not granted.
fn next_tiers(p: Programme) -> &'static [Programme] {
    use Programme::*;
    match p {
        ExtremePoverty => &[Dibao, LowIncomeMarginal, RigidExpenditure, Charity],
        Dibao => &[LowIncomeMarginal, RigidExpenditure, Charity],
        LowIncomeMarginal => &[RigidExpenditure, Charity],
        RigidExpenditure => &[Charity],
        Charity => &[],
        _ => &[Charity],
    }
}

pub(super) fn summary(
    programme: Programme,
    part: &Part<'_>,
    outcomes: &[(Programme, Outcome)],
) -> String {
    // Sized for the whole line up front and written in place (`write!` to a `String` cannot
    // fail): growing it piece by piece cost more reallocations than the text itself.
    let mut s = String::with_capacity(SUMMARY_CAPACITY + part.reason.len());
    match part.outcome {
        Outcome::Eligible => {
            s.push_str("eligible: ");
            match part.pay {
                Pay::Monthly => {
                    let _ = write!(s, "{} yuan a month; ", Yuan(part.amount));
                }
                Pay::OneOff => {
                    let _ = write!(s, "{} yuan once; ", Yuan(part.amount));
                }
                Pay::NoAmount => {}
            }
            s.push_str(&part.reason);
            s
        }
        Outcome::NeedsReview => {
            s.push_str("needs review: ");
            s.push_str(&part.reason);
            s
        }
        Outcome::Ineligible => {
            s.push_str("ineligible: ");
            if part.reason.is_empty() {
                for (i, r) in part.rules.iter().filter(|r| !r.held).enumerate() {
                    if i > 0 {
                        s.push_str("; ");
                    }
                    s.push_str(&r.explanation());
                }
            } else {
                s.push_str(&part.reason);
            }
            if part.margin > 0 {
                let _ = write!(
                    s,
                    "; missed by {} yuan of monthly income",
                    Yuan(part.margin)
                );
            }
            let next = next_tiers(programme).iter().find_map(|t| {
                outcomes
                    .iter()
                    .find(|(p, o)| p == t && o.is_referred())
                    .copied()
            });
            let on_ladder =
                next_tiers(programme).len() > 1 || programme == Programme::RigidExpenditure;
            match next {
                Some((p, o)) => {
                    let _ = write!(s, "; next tier: {} ({o})", p.label());
                }
                None if on_ladder && !part.covered => s.push_str("; no lower tier applies"),
                None => {}
            }
            s
        }
    }
}
