//! The one place an assessment's words are written: each rule's explanation from its kind,
//! result, inputs and threshold, and each programme's summary from its rules and the other
//! programmes' outcomes. Nothing else goes in: an assessment read back from the log
//! ([`LeanAssessment`]) renders exactly as it did when it was made, for as long as this
//! module renders every shipped policy version's golden households the same
//! (`crates/bench/src/golden.rs`).

use std::fmt::{self, Write as _};

use onecity_domain::{DisabilityKind, EmergencyKind, Housing, Outcome, Programme, Supporter};

use super::kind::{RuleKind, Shape};
use super::{floor_bp, mul, Assessment, LeanAssessment, LeanRule, Linked, RuleResult};
use crate::format::{Times, Yuan};

/// How a rule ends when it is a review band.
const REVIEW_BAND: &str = " (review band)";

/// Room for a summary's own words and numbers besides its reason.
const SUMMARY_CAPACITY: usize = 160;

impl LeanRule {
    /// The input named `key` (0 if the kind has no such input, which the tests rule out
    /// for every name used here).
    fn v(&self, key: &str) -> i128 {
        let at = self.kind.keys().iter().position(|k| *k == key);
        debug_assert!(at.is_some(), "{:?} has no input {key}", self.kind);
        at.and_then(|i| self.values.get(i))
            .map_or(0, |v| i128::from(*v))
    }

    fn outcome(&self, key: &str) -> &'static str {
        i32::try_from(self.v(key))
            .ok()
            .and_then(Outcome::from_proto)
            .map_or("UNSPECIFIED", Outcome::as_str)
    }

    /// The rule's one line.
    pub fn explanation(&self) -> String {
        let mut s = String::with_capacity(96);
        // `write!` to a `String` cannot fail.
        let _ = self.write_explanation(&mut s);
        s
    }

    fn write_explanation(&self, s: &mut String) -> fmt::Result {
        let held = self.held;
        let v = |k| self.v(k);
        let n_standard = || NStandard(v("members"), v("standard_fen"));
        match self.kind.shape() {
            Shape::AssetsFinancial => write!(
                s,
                "financial assets {} yuan {} {} months × {} = {}",
                Yuan(v("financial_assets_fen")),
                le(held),
                v("asset_limit_months"),
                n_standard(),
                Yuan(self.threshold.into())
            ),
            Shape::AssetsHomes => write!(
                s,
                "homes owned {} {} {}",
                v("homes_owned"),
                le(held),
                v("max_homes")
            ),
            Shape::AssetsVehicles => write!(
                s,
                "vehicles owned {} {} {}",
                v("vehicles_owned"),
                le(held),
                v("max_vehicles")
            ),
            Shape::Income {
                after_expenses,
                review_band,
            } => {
                if after_expenses {
                    write!(
                        s,
                        "household income {} yuan − rigid expenses ({} + {}) / 12 = {} → {} yuan",
                        Yuan(v("household_income_fen")),
                        Yuan(v("medical_expense_12m_fen")),
                        Yuan(v("other_rigid_expense_12m_fen")),
                        Yuan(v("monthly_rigid_expense_fen")),
                        Yuan(v("adjusted_income_fen"))
                    )?;
                } else {
                    write!(
                        s,
                        "household income {} yuan",
                        Yuan(v("household_income_fen"))
                    )?;
                }
                write!(s, " {} ", lt(held))?;
                if let Some(bp) = self.multiple() {
                    write!(s, "{} × ", Times(bp))?;
                }
                write!(
                    s,
                    "{} = {}{}",
                    n_standard(),
                    Yuan(self.threshold.into()),
                    if review_band { REVIEW_BAND } else { "" }
                )
            }
            Shape::DibaoAmount => {
                let sn = mul(v("standard_fen"), v("members"));
                write!(
                    s,
                    "amount = max({} − {} = {}, floor {} × {} = {}) + {} (aged ≥ {}, disability grade 1–2 or seriously ill) × {} × standard {} = {} yuan",
                    Yuan(sn),
                    Yuan(v("household_income_fen")),
                    Yuan(v("gap_fen")),
                    Times(v("dibao_floor_bp")),
                    Yuan(sn),
                    Yuan(v("floor_fen")),
                    Plural(v("special_members"), "special member", "special members"),
                    v("elderly_age"),
                    Times(v("special_supplement_bp")),
                    Yuan(v("standard_fen")),
                    Yuan(v("amount_fen"))
                )
            }
            Shape::ExtremePovertyMember => {
                let (age, income, standard) = (v("age"), v("own_income_fen"), v("standard_fen"));
                write!(s, "member {}: ", v("member") + 1)?;
                if v("no_labour_capacity") == 0 {
                    write!(s, "has labour capacity (aged {age})")?;
                } else if age >= v("elderly_age") {
                    write!(s, "no labour capacity (aged {age} ≥ {})", v("elderly_age"))?;
                } else if age < v("minor_age") {
                    write!(s, "no labour capacity (aged {age} < {})", v("minor_age"))?;
                } else {
                    write!(
                        s,
                        "no labour capacity ({} disability grade {})",
                        kind_name(v("disability_kind")),
                        v("disability_grade")
                    )?;
                }
                write!(
                    s,
                    "; own income {} yuan {} standard {}; {} → {}",
                    Yuan(income),
                    lt(income < standard),
                    Yuan(standard),
                    supporter_name(v("supporter")),
                    if held {
                        "qualifies"
                    } else {
                        "does not qualify"
                    }
                )
            }
            Shape::MarginalNotCovered => write!(
                s,
                "dibao outcome {}{}",
                self.outcome("dibao_outcome"),
                if held { "" } else { ": covered by dibao" }
            ),
            Shape::RigidNotCovered => write!(
                s,
                "dibao outcome {}, low-income marginal outcome {}{}",
                self.outcome("dibao_outcome"),
                self.outcome("marginal_outcome"),
                if held {
                    ""
                } else {
                    ": covered by a higher tier"
                }
            ),
            Shape::Linked => self.write_linked(s),
            Shape::Catastrophic => write!(
                s,
                "medical expenses {} yuan over 12 months {} {} × 12 × household income {} = {}",
                Yuan(v("medical_expense_12m_fen")),
                if held { ">" } else { "≤" },
                Times(v("catastrophic_medical_bp")),
                Yuan(v("household_income_fen")),
                Yuan(self.threshold.into())
            ),
            Shape::InEducation => write!(
                s,
                "{} in education",
                Plural(v("members_in_education"), "member", "members")
            ),
            Shape::HousingNeed => write!(
                s,
                "housing: {}{}",
                housing_name(v("housing")),
                if held { "" } else { " (no housing need)" }
            ),
            Shape::Unemployed => write!(
                s,
                "{} aged {}–{}, unemployed, without disability grade 1–2 and not seriously ill",
                Plural(v("members"), "member", "members"),
                v("working_age_min"),
                v("working_age_max")
            ),
            Shape::Emergency => {
                match i32::try_from(v("emergency_kind"))
                    .ok()
                    .and_then(EmergencyKind::from_proto)
                {
                    Some(k) => write!(s, "emergency declared: {}", format!("{k:?}").to_lowercase()),
                    None => s.write_str("no emergency declared"),
                }
            }
            Shape::TemporaryAmount => write!(
                s,
                "amount = min({} months × {} = {}, cap {}) = {} yuan",
                v("temporary_months"),
                n_standard(),
                Yuan(mul(
                    v("temporary_months"),
                    mul(v("standard_fen"), v("members"))
                )),
                Yuan(v("temporary_cap_fen")),
                Yuan(v("amount_fen"))
            ),
            Shape::DisasterAffected => s.write_str(if held {
                "affected by a natural disaster"
            } else {
                "not affected by a natural disaster"
            }),
            Shape::DisabilityLiving => write!(
                s,
                "living subsidy: {} with disability grade 1–4{} → {} × {} yuan",
                Plural(v("disabled_members"), "member", "members"),
                if v("linked") == Linked::Yes.as_input() {
                    " in a low-income household"
                } else {
                    ", but the household has no low-income recognition"
                },
                v("living_members"),
                Yuan(v("living_subsidy_fen"))
            ),
            Shape::DisabilityCare => write!(
                s,
                "care subsidy: {} with disability grade 1–2 → {} × {} yuan",
                Plural(v("severely_disabled_members"), "member", "members"),
                v("severely_disabled_members"),
                Yuan(v("care_subsidy_fen"))
            ),
            Shape::Consent => s.write_str(if held {
                "consent to share with charities given"
            } else {
                "no consent to share with charities"
            }),
            Shape::NoOtherProgramme => write!(
                s,
                "{} of programmes 1–11 ELIGIBLE or NEEDS_REVIEW",
                v("programmes_referred")
            ),
        }
    }

    /// The multiple of n × standard an income rule compares with, in basis points (none:
    /// the standard itself, worded without a multiple).
    fn multiple(&self) -> Option<i128> {
        match self.kind {
            RuleKind::DibaoIncomeBelowStandard => None,
            RuleKind::DibaoReviewBand => Some(10_000 + self.v("review_band_bp")),
            RuleKind::MarginalReviewBand => {
                Some(self.v("marginal_multiple_bp") + self.v("review_band_bp"))
            }
            RuleKind::MarginalIncome | RuleKind::RigidIncomeAfterExpenses => {
                Some(self.v("marginal_multiple_bp"))
            }
            RuleKind::CharityIncome => Some(self.v("charity_multiple_bp")),
            _ => None,
        }
    }

    /// A `.linked` rule: the recognition tiers as the linked programme takes them, each
    /// marked decided or predicted once a department decided one.
    fn write_linked(&self, s: &mut String) -> fmt::Result {
        const TIERS: [(Programme, &str, &str); 4] = [
            (Programme::Dibao, "dibao_outcome", "dibao_decision"),
            (
                Programme::ExtremePoverty,
                "extreme_poverty_outcome",
                "extreme_poverty_decision",
            ),
            (
                Programme::LowIncomeMarginal,
                "low_income_marginal_outcome",
                "low_income_marginal_decision",
            ),
            (
                Programme::RigidExpenditure,
                "rigid_expenditure_outcome",
                "rigid_expenditure_decision",
            ),
        ];
        let outcome = |i: usize| {
            i32::try_from(self.v(TIERS[i].1))
                .ok()
                .and_then(Outcome::from_proto)
        };
        let decision = |i: usize| self.v(TIERS[i].2);
        let linked = self.v("linked");
        let list = |keep: &dyn Fn(usize) -> bool, each: &dyn Fn(usize) -> String| {
            (0..4)
                .filter(|i| keep(*i))
                .map(each)
                .collect::<Vec<_>>()
                .join(", ")
        };
        if self.v("decided_recognitions") == 0 {
            let label = |i: usize| TIERS[i].0.label().to_owned();
            return if linked == Linked::Yes.as_input() {
                write!(
                    s,
                    "low-income recognition: yes ({} ELIGIBLE)",
                    list(&|i| outcome(i) == Some(Outcome::Eligible), &label)
                )
            } else if linked == Linked::Pending.as_input() {
                write!(
                    s,
                    "low-income recognition: pending ({} NEEDS_REVIEW)",
                    list(&|i| outcome(i) == Some(Outcome::NeedsReview), &label)
                )
            } else {
                s.write_str("low-income recognition: none (no dibao, extreme-poverty, marginal or rigid-expenditure result)")
            };
        }
        let tier = |i: usize| {
            let label = TIERS[i].0.label();
            match decision(i) {
                DECISION_APPROVED => format!("{label} approved (decided)"),
                DECISION_DENIED => format!("{label} denied (decided)"),
                _ => format!(
                    "{label} {} (predicted)",
                    outcome(i).map_or("UNSPECIFIED", Outcome::as_str)
                ),
            }
        };
        let decided = |i: usize| decision(i) != 0;
        if linked == Linked::Yes.as_input() {
            write!(
                s,
                "low-income recognition: yes ({})",
                list(&|i| outcome(i) == Some(Outcome::Eligible), &tier)
            )
        } else if linked == Linked::Pending.as_input() {
            write!(
                s,
                "low-income recognition: pending ({}; {})",
                list(&|i| outcome(i) == Some(Outcome::NeedsReview), &tier),
                list(&decided, &tier)
            )
        } else {
            write!(
                s,
                "low-income recognition: none ({}; no other result predicted)",
                list(&decided, &tier)
            )
        }
    }

    /// The rule with its id, named inputs and explanation.
    pub fn explained(&self) -> RuleResult {
        RuleResult {
            rule: self.kind.id().to_owned(),
            held: self.held,
            inputs: self
                .kind
                .keys()
                .iter()
                .zip(&self.values)
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            threshold: self.threshold,
            explanation: self.explanation(),
        }
    }
}

/// A `.linked` rule's `<tier>_decision` input.
pub(super) const DECISION_APPROVED: i128 = 1;
/// A `.linked` rule's `<tier>_decision` input.
pub(super) const DECISION_DENIED: i128 = 2;

/// How a programme's amount is paid, for the summary line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pay {
    Monthly,
    OneOff,
    NoAmount,
}

fn pay(p: Programme) -> Pay {
    match p {
        Programme::Dibao | Programme::ExtremePoverty | Programme::DisabilitySubsidy => Pay::Monthly,
        Programme::Temporary => Pay::OneOff,
        _ => Pay::NoAmount,
    }
}

impl LeanAssessment {
    /// The explanations of its rules whose id ends with `suffix`, joined by "; ".
    fn explanation(&self, suffix: &str) -> String {
        joined(self.rules.iter().filter(|r| r.kind.id_ends_with(suffix)))
    }

    fn rule(&self, kind: RuleKind) -> Option<&LeanRule> {
        self.rules.iter().find(|r| r.kind == kind)
    }

    /// INELIGIBLE only because a higher tier already covers the household.
    fn covered(&self) -> bool {
        [
            RuleKind::MarginalNotCoveredByDibao,
            RuleKind::RigidNotCovered,
        ]
        .iter()
        .any(|k| self.rule(*k).is_some_and(|r| !r.held))
    }

    /// Why ELIGIBLE or NEEDS_REVIEW, or why INELIGIBLE when that is not simply the rules
    /// that failed (empty then).
    fn reason(&self) -> String {
        use Outcome::*;
        let outcome = self.outcome;
        match self.programme {
            Programme::Dibao => match outcome {
                Eligible => self.explanation("dibao.income_below_standard"),
                NeedsReview => format!(
                    "{}, but within the review band: {}",
                    self.explanation("dibao.income_below_standard"),
                    self.explanation("dibao.review_band")
                ),
                Ineligible => String::new(),
            },
            Programme::ExtremePoverty if outcome == Eligible => {
                let members: Vec<&LeanRule> = self
                    .rules
                    .iter()
                    .filter(|r| r.kind == RuleKind::ExtremePovertyMember)
                    .collect();
                let count = members.iter().filter(|r| r.held).count() as i128;
                let (multiple, standard) = members.first().map_or((0, 0), |r| {
                    (r.v("extreme_poverty_multiple_bp"), r.v("standard_fen"))
                });
                format!(
                    "{} qualifying; {} × {} × standard {} = {} yuan each",
                    Plural(count, "member", "members"),
                    count,
                    Times(multiple),
                    Yuan(standard),
                    Yuan(floor_bp(multiple, standard))
                )
            }
            Programme::LowIncomeMarginal => match outcome {
                Eligible => self.explanation(".income"),
                NeedsReview => format!(
                    "{}, but within the review band: {}",
                    self.explanation(".income"),
                    self.explanation(".review_band")
                ),
                Ineligible if self.covered() => "covered by dibao, the higher tier".into(),
                Ineligible => String::new(),
            },
            Programme::RigidExpenditure => match outcome {
                Eligible => self.explanation(".income_after_expenses"),
                _ if self.covered() => "covered by a higher tier".into(),
                _ => String::new(),
            },
            Programme::Medical => match outcome {
                Eligible
                    if self
                        .rule(RuleKind::MedicalLinked)
                        .is_some_and(|r| r.v("linked") == Linked::Yes.as_input()) =>
                {
                    self.explanation(".linked")
                }
                Eligible => self.explanation(".catastrophic"),
                NeedsReview => self.explanation(".linked"),
                Ineligible => String::new(),
            },
            Programme::Education | Programme::Housing | Programme::Employment
                if outcome.is_referred() =>
            {
                joined(self.rules.iter())
            }
            Programme::Temporary => self.explanation(".emergency_declared"),
            Programme::DisasterRelief => self.explanation(".affected"),
            Programme::DisabilitySubsidy => {
                let living = self.rule(RuleKind::DisabilityLiving);
                let v = |k| living.map_or(0, |r| r.v(k));
                match outcome {
                    Eligible => {
                        let mut reason = format!(
                            "{}; {}",
                            self.explanation(".living"),
                            self.explanation(".care")
                        );
                        if v("living_members") == 0
                            && v("disabled_members") > 0
                            && v("linked") == Linked::Pending.as_input()
                        {
                            reason.push_str("; the living subsidy awaits the low-income review");
                        }
                        reason
                    }
                    NeedsReview => format!(
                        "{} with disability grade 3–4; {}",
                        Plural(v("disabled_members"), "member", "members"),
                        self.explanation(".linked")
                    ),
                    Ineligible => String::new(),
                }
            }
            Programme::Charity if outcome == Eligible => format!(
                "no public programme applies; {}",
                self.explanation(".income")
            ),
            _ => String::new(),
        }
    }

    /// The clerk's one line: the outcome with its amount and reason, or the failed rules,
    /// the margin and the next tier to look at. `all` is every programme's assessment (the
    /// next tier is the first of them referred).
    fn summary(&self, all: &[LeanAssessment]) -> String {
        let reason = self.reason();
        let mut s = String::with_capacity(SUMMARY_CAPACITY + reason.len());
        let amount = i128::from(self.amount_fen);
        match self.outcome {
            Outcome::Eligible => {
                s.push_str("eligible: ");
                match pay(self.programme) {
                    Pay::Monthly => {
                        let _ = write!(s, "{} yuan a month; ", Yuan(amount));
                    }
                    Pay::OneOff => {
                        let _ = write!(s, "{} yuan once; ", Yuan(amount));
                    }
                    Pay::NoAmount => {}
                }
                s.push_str(&reason);
            }
            Outcome::NeedsReview => {
                s.push_str("needs review: ");
                s.push_str(&reason);
            }
            Outcome::Ineligible => {
                s.push_str("ineligible: ");
                if reason.is_empty() {
                    s.push_str(&joined(self.rules.iter().filter(|r| !r.held)));
                } else {
                    s.push_str(&reason);
                }
                if self.margin_fen > 0 {
                    let _ = write!(
                        s,
                        "; missed by {} yuan of monthly income",
                        Yuan(self.margin_fen.into())
                    );
                }
                let programme = self.programme;
                let next = next_tiers(programme).iter().find_map(|t| {
                    all.iter()
                        .find(|a| a.programme == *t && a.outcome.is_referred())
                        .map(|a| (a.programme, a.outcome))
                });
                let on_ladder =
                    next_tiers(programme).len() > 1 || programme == Programme::RigidExpenditure;
                match next {
                    Some((p, o)) => {
                        let _ = write!(s, "; next tier: {} ({o})", p.label());
                    }
                    None if on_ladder && !self.covered() => s.push_str("; no lower tier applies"),
                    None => {}
                }
            }
        }
        s
    }

    /// The assessment with its words: the summary, and with `rules` every rule explained
    /// (without, `rules` is empty). `all` is every programme's assessment.
    pub(super) fn explained(&self, all: &[LeanAssessment], rules: bool) -> Assessment {
        Assessment {
            programme: self.programme,
            outcome: self.outcome,
            amount_fen: self.amount_fen,
            policy_version: self.policy_version.clone(),
            department_unit: self.department_unit,
            margin_fen: self.margin_fen,
            summary: self.summary(all),
            rules: if rules {
                self.rules.iter().map(LeanRule::explained).collect()
            } else {
                Vec::new()
            },
        }
    }
}

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

/// The explanations of `rules`, joined by "; ".
fn joined<'r>(rules: impl Iterator<Item = &'r LeanRule>) -> String {
    let mut out = String::with_capacity(128);
    for (i, r) in rules.enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        let _ = r.write_explanation(&mut out);
    }
    out
}

fn lt(held: bool) -> &'static str {
    if held {
        "<"
    } else {
        "≥"
    }
}

fn le(held: bool) -> &'static str {
    if held {
        "≤"
    } else {
        ">"
    }
}

/// "1 member", "2 members".
struct Plural(i128, &'static str, &'static str);

impl fmt::Display for Plural {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Plural(n, one, many) = *self;
        write!(f, "{n} {}", if n == 1 { one } else { many })
    }
}

/// "n × standard S".
struct NStandard(i128, i128);

impl fmt::Display for NStandard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} × standard {}", self.0, Yuan(self.1))
    }
}

fn kind_name(code: i128) -> &'static str {
    match i32::try_from(code)
        .ok()
        .and_then(DisabilityKind::from_proto)
    {
        Some(DisabilityKind::Physical) => "physical",
        Some(DisabilityKind::Visual) => "visual",
        Some(DisabilityKind::Hearing) => "hearing",
        Some(DisabilityKind::Speech) => "speech",
        Some(DisabilityKind::Intellectual) => "intellectual",
        Some(DisabilityKind::Mental) => "mental",
        Some(DisabilityKind::Multiple) => "multiple",
        None => "unknown",
    }
}

fn supporter_name(code: i128) -> &'static str {
    match i32::try_from(code).ok().and_then(Supporter::from_proto) {
        Some(Supporter::None) => "no supporter",
        Some(Supporter::Unable) => "supporter unable to support",
        Some(Supporter::Able) => "a supporter able to support",
        None => "supporter unknown",
    }
}

fn housing_name(code: i128) -> &'static str {
    match i32::try_from(code).ok().and_then(Housing::from_proto) {
        Some(Housing::OwnedAdequate) => "owns adequate housing",
        Some(Housing::Renting) => "renting",
        Some(Housing::NoHome) => "no home",
        Some(Housing::Dilapidated) => "dilapidated home",
        None => "unknown",
    }
}
