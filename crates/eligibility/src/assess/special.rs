//! Programmes 5 to 8 and 11, run by departments and linked to the low-income recognition:
//! medical, education, housing and employment assistance, and the disability subsidies.

use onecity_domain::{EducationStage, Employment, Housing, Outcome};

use super::{floor_bp, joined, mul, Cx, LinkInfo, Linked, Part, Pay, Plural, Rule};
use crate::format::{Times, Yuan};

fn housing_name(h: Housing) -> &'static str {
    match h {
        Housing::OwnedAdequate => "owns adequate housing",
        Housing::Renting => "renting",
        Housing::NoHome => "no home",
        Housing::Dilapidated => "dilapidated home",
    }
}

impl<'a> Cx<'a> {
    fn linked_rule(&self, prog: &'static str, link: LinkInfo) -> Rule<'_> {
        let decided = link.decided_count();
        let inputs = [
            ("linked", link.linked.as_input()),
            ("decided_recognitions", decided),
        ];
        self.rule(
            prog,
            "linked",
            link.linked == Linked::Yes,
            &inputs[..if decided > 0 { 2 } else { 1 }],
            0,
            move || link.explanation(),
        )
    }

    /// EDUCATION, HOUSING and EMPLOYMENT share this shape.
    fn linked_programme<'c>(
        &'c self,
        prog: &'static str,
        condition: Rule<'c>,
        link: &LinkInfo,
    ) -> Part<'c> {
        let cond = condition.held;
        let rules = vec![condition, self.linked_rule(prog, *link)];
        let outcome = match (cond, link.linked) {
            (true, Linked::Yes) => Outcome::Eligible,
            (true, Linked::Pending) => Outcome::NeedsReview,
            _ => Outcome::Ineligible,
        };
        let mut part = Part::new(outcome, Pay::NoAmount, rules);
        if outcome.is_referred() {
            part.reason = joined(part.rules.iter());
        }
        part
    }

    pub(super) fn medical(&self, link: &LinkInfo) -> Part<'_> {
        let p = self.p;
        let expense = self.pi(self.app.medical_expense_12m_fen);
        let cat = self.pi(p.catastrophic_medical_bp);
        let annual = mul(12, self.h);
        let catastrophic = mul(expense, 10_000) > mul(cat, annual);
        let line = floor_bp(cat, annual);
        let rules = vec![
            self.linked_rule("medical", *link),
            self.rule(
                "medical",
                "catastrophic",
                catastrophic,
                &[
                    ("medical_expense_12m_fen", expense),
                    ("household_income_fen", self.h),
                    ("catastrophic_medical_bp", cat),
                ],
                line,
                move || {
                    format!(
                    "medical expenses {} yuan over 12 months {} {} × 12 × household income {} = {}",
                    Yuan(expense),
                    if catastrophic { ">" } else { "≤" },
                    Times(cat),
                    Yuan(self.h),
                    Yuan(line)
                )
                },
            ),
        ];
        let outcome = if link.linked == Linked::Yes || catastrophic {
            Outcome::Eligible
        } else if link.linked == Linked::Pending {
            Outcome::NeedsReview
        } else {
            Outcome::Ineligible
        };
        let mut part = Part::new(outcome, Pay::NoAmount, rules);
        part.reason = match outcome {
            Outcome::Eligible if link.linked == Linked::Yes => part.explanation(".linked"),
            Outcome::Eligible => part.explanation(".catastrophic"),
            Outcome::NeedsReview => part.explanation(".linked"),
            Outcome::Ineligible => String::new(),
        };
        part
    }

    pub(super) fn education(&self, link: &LinkInfo) -> Part<'_> {
        let count = self
            .app
            .members
            .iter()
            .filter(|m| m.education != EducationStage::None)
            .count() as i128;
        let cond = self.rule(
            "education",
            "member_in_education",
            count > 0,
            &[("members_in_education", count)],
            0,
            move || format!("{} in education", Plural(count, "member", "members")),
        );
        self.linked_programme("education", cond, link)
    }

    pub(super) fn housing(&self, link: &LinkInfo) -> Part<'_> {
        let h = self.app.housing;
        let need = matches!(h, Housing::Renting | Housing::NoHome | Housing::Dilapidated);
        let cond = self.rule(
            "housing",
            "housing_need",
            need,
            &[("housing", i128::from(h.to_proto()))],
            0,
            move || {
                format!(
                    "housing: {}{}",
                    housing_name(h),
                    if need { "" } else { " (no housing need)" }
                )
            },
        );
        self.linked_programme("housing", cond, link)
    }

    pub(super) fn employment(&self, link: &LinkInfo) -> Part<'_> {
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
            "employment",
            "unemployed_working_age_member",
            count > 0,
            &[
                ("members", count),
                ("working_age_min", self.pi(p.working_age_min)),
                ("working_age_max", self.pi(p.working_age_max)),
            ],
            0,
            move || {
                format!(
                    "{} aged {}–{}, unemployed, without disability grade 1–2 and not seriously ill",
                    Plural(count, "member", "members"),
                    p.working_age_min,
                    p.working_age_max
                )
            },
        );
        self.linked_programme("employment", cond, link)
    }

    pub(super) fn disability(&self, link: &LinkInfo) -> Part<'_> {
        let p = self.p;
        let link = *link;
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
            self.linked_rule("disability_subsidy", link),
            self.rule(
                "disability_subsidy",
                "living",
                living > 0,
                &[
                    ("disabled_members", disabled),
                    ("linked", link.linked.as_input()),
                    ("living_members", living),
                    ("living_subsidy_fen", living_fen),
                ],
                0,
                move || {
                    format!(
                        "living subsidy: {} with disability grade 1–4{} → {} × {} yuan",
                        Plural(disabled, "member", "members"),
                        if link.linked == Linked::Yes {
                            " in a low-income household"
                        } else {
                            ", but the household has no low-income recognition"
                        },
                        living,
                        Yuan(living_fen)
                    )
                },
            ),
            self.rule(
                "disability_subsidy",
                "care",
                severe > 0,
                &[
                    ("severely_disabled_members", severe),
                    ("care_subsidy_fen", care_fen),
                ],
                0,
                move || {
                    format!(
                        "care subsidy: {} with disability grade 1–2 → {} × {} yuan",
                        Plural(severe, "member", "members"),
                        severe,
                        Yuan(care_fen)
                    )
                },
            ),
        ];
        let outcome = if living + severe > 0 {
            Outcome::Eligible
        } else if disabled > 0 && link.linked == Linked::Pending {
            Outcome::NeedsReview
        } else {
            Outcome::Ineligible
        };
        let mut part = Part::new(outcome, Pay::Monthly, rules);
        match outcome {
            Outcome::Eligible => {
                part.amount = mul(living, living_fen).saturating_add(mul(severe, care_fen));
                part.reason = format!(
                    "{}; {}",
                    part.explanation(".living"),
                    part.explanation(".care")
                );
                if living == 0 && disabled > 0 && link.linked == Linked::Pending {
                    part.reason
                        .push_str("; the living subsidy awaits the low-income review");
                }
            }
            Outcome::NeedsReview => {
                part.reason = format!(
                    "{} with disability grade 3–4; {}",
                    Plural(disabled, "member", "members"),
                    part.explanation(".linked")
                );
            }
            Outcome::Ineligible => {}
        }
        part
    }
}
