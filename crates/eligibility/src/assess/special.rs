//! Programmes 5 to 8 and 11, run by departments and linked to the low-income recognition:
//! medical, education, housing and employment assistance, and the disability subsidies.

use onecity_domain::{EducationStage, Employment, Housing, Outcome};

use super::{floor_bp, mul, Cx, LeanRule, LinkInfo, Linked, Part, RuleKind};

impl<'a> Cx<'a> {
    fn linked_rule(&self, kind: RuleKind, link: &LinkInfo) -> LeanRule {
        self.rule(kind, link.linked == Linked::Yes, &link.inputs(), 0)
    }

    /// EDUCATION, HOUSING and EMPLOYMENT share this shape.
    fn linked_programme(&self, condition: LeanRule, linked: RuleKind, link: &LinkInfo) -> Part {
        let cond = condition.held;
        let rules = vec![condition, self.linked_rule(linked, link)];
        let outcome = match (cond, link.linked) {
            (true, Linked::Yes) => Outcome::Eligible,
            (true, Linked::Pending) => Outcome::NeedsReview,
            _ => Outcome::Ineligible,
        };
        Part::new(outcome, rules)
    }

    pub(super) fn medical(&self, link: &LinkInfo) -> Part {
        let p = self.p;
        let expense = self.pi(self.app.medical_expense_12m_fen);
        let cat = self.pi(p.catastrophic_medical_bp);
        let annual = mul(12, self.h);
        let catastrophic = mul(expense, 10_000) > mul(cat, annual);
        let line = floor_bp(cat, annual);
        let rules = vec![
            self.linked_rule(RuleKind::MedicalLinked, link),
            self.rule(
                RuleKind::MedicalCatastrophic,
                catastrophic,
                &[
                    ("medical_expense_12m_fen", expense),
                    ("household_income_fen", self.h),
                    ("catastrophic_medical_bp", cat),
                ],
                line,
            ),
        ];
        let outcome = if link.linked == Linked::Yes || catastrophic {
            Outcome::Eligible
        } else if link.linked == Linked::Pending {
            Outcome::NeedsReview
        } else {
            Outcome::Ineligible
        };
        Part::new(outcome, rules)
    }

    pub(super) fn education(&self, link: &LinkInfo) -> Part {
        let count = self
            .app
            .members
            .iter()
            .filter(|m| m.education != EducationStage::None)
            .count() as i128;
        let cond = self.rule(
            RuleKind::EducationMemberInEducation,
            count > 0,
            &[("members_in_education", count)],
            0,
        );
        self.linked_programme(cond, RuleKind::EducationLinked, link)
    }

    pub(super) fn housing(&self, link: &LinkInfo) -> Part {
        let h = self.app.housing;
        let need = matches!(h, Housing::Renting | Housing::NoHome | Housing::Dilapidated);
        let cond = self.rule(
            RuleKind::HousingNeed,
            need,
            &[("housing", i128::from(h.to_proto()))],
            0,
        );
        self.linked_programme(cond, RuleKind::HousingLinked, link)
    }

    pub(super) fn employment(&self, link: &LinkInfo) -> Part {
        let p = self.p;
        let count = self
            .members()
            .filter(|(_, m, age)| {
                (self.pi(p.working_age_min)..=self.pi(p.working_age_max)).contains(age)
                    && m.employment == Employment::Unemployed
                    && m.disability_grade().is_none_or(|g| g > 2)
                    && !m.seriously_ill
            })
            .count() as i128;
        let cond = self.rule(
            RuleKind::EmploymentUnemployedWorkingAgeMember,
            count > 0,
            &[
                ("members", count),
                ("working_age_min", self.pi(p.working_age_min)),
                ("working_age_max", self.pi(p.working_age_max)),
            ],
            0,
        );
        self.linked_programme(cond, RuleKind::EmploymentLinked, link)
    }

    pub(super) fn disability(&self, link: &LinkInfo) -> Part {
        let p = self.p;
        let disabled = self
            .app
            .members
            .iter()
            .filter(|m| m.disability.is_some())
            .count() as i128;
        let severe = self
            .app
            .members
            .iter()
            .filter(|m| m.disability_grade().is_some_and(|g| g <= 2))
            .count() as i128;
        let living = if link.linked == Linked::Yes {
            disabled
        } else {
            0
        };
        let living_fen = self.pi(p.disability_living_subsidy_fen);
        let care_fen = self.pi(p.disability_care_subsidy_fen);
        let rules = vec![
            self.linked_rule(RuleKind::DisabilityLinked, link),
            self.rule(
                RuleKind::DisabilityLiving,
                living > 0,
                &[
                    ("disabled_members", disabled),
                    ("linked", link.linked.as_input()),
                    ("living_members", living),
                    ("living_subsidy_fen", living_fen),
                ],
                0,
            ),
            self.rule(
                RuleKind::DisabilityCare,
                severe > 0,
                &[
                    ("severely_disabled_members", severe),
                    ("care_subsidy_fen", care_fen),
                ],
                0,
            ),
        ];
        let outcome = if living + severe > 0 {
            Outcome::Eligible
        } else if disabled > 0 && link.linked == Linked::Pending {
            Outcome::NeedsReview
        } else {
            Outcome::Ineligible
        };
        let mut part = Part::new(outcome, rules);
        if outcome == Outcome::Eligible {
            part.amount = mul(living, living_fen).saturating_add(mul(severe, care_fen));
        }
        part
    }
}
