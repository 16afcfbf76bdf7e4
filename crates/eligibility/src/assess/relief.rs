//! Programmes 9, 10 and 12, which do not depend on the low-income recognition: temporary
//! assistance in an emergency, disaster relief and the charity referral of last resort.

use onecity_domain::Outcome;

use super::{mul, Compared, Cx, Part, RuleKind};

impl<'a> Cx<'a> {
    pub(super) fn temporary(&self) -> Part {
        let p = self.p;
        let kind = self.app.emergency.as_ref().map(|e| e.kind);
        let declared = kind.is_some();
        let mut rules = vec![self.rule(
            RuleKind::TemporaryEmergencyDeclared,
            declared,
            &[(
                "emergency_kind",
                i128::from(kind.map_or(0, |k| k.to_proto())),
            )],
            0,
        )];
        let mut amount = 0;
        if declared {
            let months = mul(self.pi(p.temporary_months), self.sn);
            let cap = self.pi(p.temporary_cap_fen);
            amount = months.min(cap);
            rules.push(self.rule(
                RuleKind::TemporaryAmount,
                true,
                &[
                    ("temporary_months", self.pi(p.temporary_months)),
                    ("standard_fen", self.s),
                    ("members", self.n),
                    ("temporary_cap_fen", cap),
                    ("amount_fen", amount),
                ],
                cap,
            ));
        }
        let mut part = Part::new(
            if declared {
                Outcome::Eligible
            } else {
                Outcome::Ineligible
            },
            rules,
        );
        part.amount = amount;
        part
    }

    pub(super) fn disaster_relief(&self) -> Part {
        let affected = self.app.disaster_affected;
        let rules = vec![self.rule(
            RuleKind::DisasterReliefAffected,
            affected,
            &[("disaster_affected", i128::from(affected))],
            0,
        )];
        Part::new(
            if affected {
                Outcome::Eligible
            } else {
                Outcome::Ineligible
            },
            rules,
        )
    }

    pub(super) fn charity(&self, referred: usize) -> Part {
        let p = self.p;
        let consent = self.app.consent_to_share;
        let none_other = referred == 0;
        let c = self.pi(p.charity_multiple_bp);
        let (income, line) = self.income_rule(
            RuleKind::CharityIncome,
            Compared::Household,
            Some(c),
            &[("charity_multiple_bp", c)],
        );
        let income_ok = income.held;
        let rules = vec![
            self.rule(
                RuleKind::CharityConsent,
                consent,
                &[("consent_to_share", i128::from(consent))],
                0,
            ),
            self.rule(
                RuleKind::CharityNoOtherProgramme,
                none_other,
                &[("programmes_referred", referred as i128)],
                0,
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
            rules,
        );
        if !eligible && consent && none_other {
            part.margin = self.h - line + 1;
        }
        part
    }
}
