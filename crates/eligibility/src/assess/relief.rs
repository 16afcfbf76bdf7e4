//! Programmes 9, 10 and 12, which do not depend on the low-income recognition: temporary
//! assistance in an emergency, disaster relief and the charity referral of last resort.

use onecity_domain::Outcome;

use super::{mul, Compared, Cx, Part, Pay};
use crate::format::Yuan;

impl<'a> Cx<'a> {
    pub(super) fn temporary(&self) -> Part<'_> {
        let p = self.p;
        let kind = self.app.emergency.as_ref().map(|e| e.kind);
        let declared = kind.is_some();
        let mut rules = vec![self.rule(
            "temporary",
            "emergency_declared",
            declared,
            &[(
                "emergency_kind",
                i128::from(kind.map_or(0, |k| k.to_proto())),
            )],
            0,
            move || match kind {
                Some(k) => format!("emergency declared: {}", format!("{k:?}").to_lowercase()),
                None => "no emergency declared".into(),
            },
        )];
        let mut part_amount = 0;
        if declared {
            let months = mul(self.pi(p.temporary_months), self.sn);
            let cap = self.pi(p.temporary_cap_fen);
            part_amount = months.min(cap);
            rules.push(self.rule(
                "temporary",
                "amount",
                true,
                &[
                    ("temporary_months", self.pi(p.temporary_months)),
                    ("standard_fen", self.s),
                    ("members", self.n),
                    ("temporary_cap_fen", cap),
                    ("amount_fen", part_amount),
                ],
                cap,
                move || {
                    format!(
                        "amount = min({} months × {} = {}, cap {}) = {} yuan",
                        p.temporary_months,
                        self.n_standard(),
                        Yuan(months),
                        Yuan(cap),
                        Yuan(part_amount)
                    )
                },
            ));
        }
        let mut part = Part::new(
            if declared {
                Outcome::Eligible
            } else {
                Outcome::Ineligible
            },
            Pay::OneOff,
            rules,
        );
        part.amount = part_amount;
        part.reason = part.explanation(".emergency_declared");
        part
    }

    pub(super) fn disaster_relief(&self) -> Part<'_> {
        let affected = self.app.disaster_affected;
        let rules = vec![self.rule(
            "disaster_relief",
            "affected",
            affected,
            &[("disaster_affected", i128::from(affected))],
            0,
            move || {
                if affected {
                    "affected by a natural disaster".into()
                } else {
                    "not affected by a natural disaster".into()
                }
            },
        )];
        let mut part = Part::new(
            if affected {
                Outcome::Eligible
            } else {
                Outcome::Ineligible
            },
            Pay::NoAmount,
            rules,
        );
        part.reason = part.explanation(".affected");
        part
    }

    pub(super) fn charity(&self, referred: usize) -> Part<'_> {
        let p = self.p;
        let consent = self.app.consent_to_share;
        let none_other = referred == 0;
        let c = self.pi(p.charity_multiple_bp);
        let (income, line) = self.income_rule(
            "charity",
            "income",
            Compared::Household,
            Some(c),
            &[("charity_multiple_bp", c)],
            "",
        );
        let income_ok = income.held;
        let rules = vec![
            self.rule(
                "charity",
                "consent",
                consent,
                &[("consent_to_share", i128::from(consent))],
                0,
                move || {
                    if consent {
                        "consent to share with charities given".into()
                    } else {
                        "no consent to share with charities".into()
                    }
                },
            ),
            self.rule(
                "charity",
                "no_other_programme",
                none_other,
                &[("programmes_referred", referred as i128)],
                0,
                move || format!("{} of programmes 1–11 ELIGIBLE or NEEDS_REVIEW", referred),
            ),
            income,
        ];
        let eligible = consent && none_other && income_ok;
        let mut part = Part::new(
            if eligible {
                Outcome::Eligible
            } else {
                Outcome::Ineligible
            },
            Pay::NoAmount,
            rules,
        );
        if eligible {
            part.reason = format!(
                "no public programme applies; {}",
                part.explanation(".income")
            );
        } else if consent && none_other {
            part.margin = self.h - line + 1;
        }
        part
    }
}
