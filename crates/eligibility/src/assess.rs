//! The twelve programme rules and their explanations.

use std::collections::BTreeMap;

use onecity_domain::{
    Application, DepartmentUnit, DisabilityKind, EducationStage, Employment, Housing, Outcome,
    Person, Programme, Supporter,
};

use crate::format::{times, yuan};
use crate::{Catalogue, Parameters, PolicyVersion};

/// One evaluated rule: what was compared, against what, and whether it held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleResult {
    /// Stable id, `<programme>.<rule>` (e.g. `dibao.income_below_standard`).
    pub rule: String,
    /// Whether the rule's condition held.
    pub held: bool,
    /// Named inputs (fen, counts, ages, basis points; booleans as 0 or 1).
    pub inputs: BTreeMap<String, i64>,
    /// The threshold compared against, in the rule's unit; 0 when the rule has none.
    pub threshold: i64,
    /// One human-readable line.
    pub explanation: String,
}

/// The explained result of one programme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// The programme.
    pub programme: Programme,
    /// The outcome.
    pub outcome: Outcome,
    /// Monthly (one-off for temporary assistance) amount in fen; 0 unless ELIGIBLE with a formula.
    pub amount_fen: i64,
    /// Id of the policy version used.
    pub policy_version: String,
    /// Unit that runs the programme for the applicant's district.
    pub department_unit: DepartmentUnit,
    /// For an unmet income test, the smallest drop in monthly income (fen) that would make it
    /// hold with everything else unchanged; 0 otherwise (see docs/policy.md, per programme).
    pub margin_fen: i64,
    /// One line for the clerk, with the margin and the next tier when not eligible.
    pub summary: String,
    /// Rules evaluated, in order.
    pub rules: Vec<RuleResult>,
}

/// Whether the household is recognised as low-income (programmes 1 to 4), which the
/// departmental programmes are linked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Linked {
    /// None of programmes 1 to 4 is ELIGIBLE or NEEDS_REVIEW.
    No,
    /// None is ELIGIBLE, at least one NEEDS_REVIEW.
    Pending,
    /// At least one is ELIGIBLE.
    Yes,
}

impl Linked {
    /// Linked status from assessments (only programmes 1 to 4 are looked at).
    pub fn from_assessments(assessments: &[Assessment]) -> Linked {
        Linked::from_outcomes(
            assessments
                .iter()
                .filter(|a| LOW_INCOME_TIERS.contains(&a.programme))
                .map(|a| a.outcome),
        )
    }

    fn from_outcomes(outcomes: impl IntoIterator<Item = Outcome>) -> Linked {
        outcomes.into_iter().fold(Linked::No, |acc, o| {
            acc.max(match o {
                Outcome::Eligible => Linked::Yes,
                Outcome::NeedsReview => Linked::Pending,
                Outcome::Ineligible => Linked::No,
            })
        })
    }

    fn as_input(self) -> i128 {
        match self {
            Linked::No => 0,
            Linked::Pending => 1,
            Linked::Yes => 2,
        }
    }
}

const LOW_INCOME_TIERS: [Programme; 4] = [
    Programme::Dibao,
    Programme::ExtremePoverty,
    Programme::LowIncomeMarginal,
    Programme::RigidExpenditure,
];

/// Assesses all twelve programmes, in programme order, with `policy` (which the caller picks as
/// the version in force on the application date). Pure and integer-only.
pub fn assess(app: &Application, policy: &PolicyVersion, catalogue: &Catalogue) -> Vec<Assessment> {
    let cx = Cx::new(app, policy);

    let dibao = cx.dibao();
    let extreme = cx.extreme_poverty();
    let marginal = cx.marginal(dibao.outcome);
    let rigid = cx.rigid(dibao.outcome, marginal.outcome);
    let tiers = [
        (Programme::Dibao, dibao.outcome),
        (Programme::ExtremePoverty, extreme.outcome),
        (Programme::LowIncomeMarginal, marginal.outcome),
        (Programme::RigidExpenditure, rigid.outcome),
    ];
    let linked = Linked::from_outcomes(tiers.iter().map(|t| t.1));
    let link = LinkInfo { linked, tiers };

    let mut parts = vec![
        dibao,
        extreme,
        marginal,
        rigid,
        cx.medical(&link),
        cx.education(&link),
        cx.housing(&link),
        cx.employment(&link),
        cx.temporary(),
        cx.disaster_relief(),
        cx.disability(&link),
    ];
    let referred_before_charity = parts.iter().filter(|p| p.outcome.is_referred()).count();
    parts.push(cx.charity(referred_before_charity));

    let outcomes: Vec<(Programme, Outcome)> = Programme::ALL
        .iter()
        .copied()
        .zip(parts.iter().map(|p| p.outcome))
        .collect();
    Programme::ALL
        .iter()
        .copied()
        .zip(parts)
        .map(|(programme, part)| {
            let summary = summary(programme, &part, &outcomes);
            Assessment {
                programme,
                outcome: part.outcome,
                amount_fen: if part.outcome == Outcome::Eligible {
                    sat(part.amount)
                } else {
                    0
                },
                policy_version: policy.id().to_owned(),
                department_unit: catalogue.unit(programme, app.district),
                margin_fen: if part.outcome == Outcome::Eligible {
                    0
                } else {
                    sat(part.margin)
                },
                summary,
                rules: part.rules,
            }
        })
        .collect()
}

/// How a programme's amount is paid, for the summary line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pay {
    Monthly,
    OneOff,
    NoAmount,
}

#[derive(Debug)]
struct Part {
    outcome: Outcome,
    amount: i128,
    margin: i128,
    pay: Pay,
    rules: Vec<RuleResult>,
    /// Why ELIGIBLE or NEEDS_REVIEW (INELIGIBLE lists the rules that failed instead).
    reason: String,
    /// INELIGIBLE only because a higher tier already covers the household.
    covered: bool,
}

impl Part {
    fn new(outcome: Outcome, pay: Pay, rules: Vec<RuleResult>) -> Self {
        Part {
            outcome,
            amount: 0,
            margin: 0,
            pay,
            rules,
            reason: String::new(),
            covered: false,
        }
    }

    fn explanation(&self, rule_suffix: &str) -> String {
        self.rules
            .iter()
            .filter(|r| r.rule.ends_with(rule_suffix))
            .map(|r| r.explanation.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

struct LinkInfo {
    linked: Linked,
    tiers: [(Programme, Outcome); 4],
}

/// Saturating conversion for values that only overflow i64 with absurd hand-built inputs.
fn sat(x: i128) -> i64 {
    i64::try_from(x).unwrap_or(if x < 0 { i64::MIN } else { i64::MAX })
}

fn mul(a: i128, b: i128) -> i128 {
    a.saturating_mul(b)
}

/// floor(bp · t / 10000).
fn floor_bp(bp: i128, t: i128) -> i128 {
    mul(bp, t).div_euclid(10_000)
}

/// ceil(bp · t / 10000): for whole fen x, `x < ceil_bp(bp, t)` exactly when `x·10000 < bp·t`.
fn ceil_bp(bp: i128, t: i128) -> i128 {
    let x = mul(bp, t);
    x.div_euclid(10_000) + i128::from(x.rem_euclid(10_000) != 0)
}

fn rule(
    id: String,
    held: bool,
    inputs: &[(&str, i128)],
    threshold: i128,
    explanation: String,
) -> RuleResult {
    RuleResult {
        rule: id,
        held,
        inputs: inputs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), sat(*v)))
            .collect(),
        threshold: sat(threshold),
        explanation,
    }
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

fn plural(n: i128, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn kind_name(k: DisabilityKind) -> &'static str {
    match k {
        DisabilityKind::Physical => "physical",
        DisabilityKind::Visual => "visual",
        DisabilityKind::Hearing => "hearing",
        DisabilityKind::Speech => "speech",
        DisabilityKind::Intellectual => "intellectual",
        DisabilityKind::Mental => "mental",
        DisabilityKind::Multiple => "multiple",
    }
}

fn housing_name(h: Housing) -> &'static str {
    match h {
        Housing::OwnedAdequate => "owns adequate housing",
        Housing::Renting => "renting",
        Housing::NoHome => "no home",
        Housing::Dilapidated => "dilapidated home",
    }
}

struct Cx<'a> {
    app: &'a Application,
    p: &'a Parameters,
    /// n: members.
    n: i128,
    /// H: household monthly income.
    h: i128,
    /// S: the district's standard.
    s: i128,
    /// S·n.
    sn: i128,
    /// Ages on the application date, by member.
    ages: Vec<i128>,
}

impl<'a> Cx<'a> {
    fn new(app: &'a Application, policy: &'a PolicyVersion) -> Self {
        let n = app.members.len() as i128;
        let s = i128::from(policy.standard_for(app.district));
        Cx {
            app,
            p: policy.params(),
            n,
            h: app
                .members
                .iter()
                .map(|m| i128::from(m.monthly_income_fen))
                .sum(),
            s,
            sn: mul(s, n),
            ages: app
                .members
                .iter()
                .map(|m| i128::from(m.age_on(app.application_date)))
                .collect(),
        }
    }

    fn pi(&self, v: i64) -> i128 {
        i128::from(v)
    }

    fn members(&self) -> impl Iterator<Item = (usize, &'a Person, i128)> + '_ {
        self.app
            .members
            .iter()
            .zip(self.ages.iter().copied())
            .enumerate()
            .map(|(i, (m, age))| (i, m, age))
    }

    /// "n × standard S"
    fn n_standard(&self) -> String {
        format!("{} × standard {}", self.n, yuan(self.s))
    }

    /// Household income compared with `bp`·S·n: `(held, threshold)`.
    fn income_vs(&self, income: i128, bp: i128) -> (bool, i128) {
        (mul(income, 10_000) < mul(bp, self.sn), ceil_bp(bp, self.sn))
    }

    fn assets(&self, prog: &str) -> (bool, Vec<RuleResult>) {
        let p = self.p;
        let assets = self.pi(self.app.financial_assets_fen);
        let limit = mul(self.pi(p.asset_limit_months), self.sn);
        let fin = assets <= limit;
        let homes = i128::from(self.app.homes_owned);
        let homes_ok = homes <= self.pi(p.max_homes);
        let vehicles = i128::from(self.app.vehicles_owned);
        let vehicles_ok = vehicles <= self.pi(p.max_vehicles);
        let rules = vec![
            rule(
                format!("{prog}.assets.financial"),
                fin,
                &[
                    ("financial_assets_fen", assets),
                    ("asset_limit_months", self.pi(p.asset_limit_months)),
                    ("standard_fen", self.s),
                    ("members", self.n),
                ],
                limit,
                format!(
                    "financial assets {} yuan {} {} months × {} = {}",
                    yuan(assets),
                    le(fin),
                    p.asset_limit_months,
                    self.n_standard(),
                    yuan(limit)
                ),
            ),
            rule(
                format!("{prog}.assets.homes"),
                homes_ok,
                &[("homes_owned", homes), ("max_homes", self.pi(p.max_homes))],
                self.pi(p.max_homes),
                format!("homes owned {homes} {} {}", le(homes_ok), p.max_homes),
            ),
            rule(
                format!("{prog}.assets.vehicles"),
                vehicles_ok,
                &[
                    ("vehicles_owned", vehicles),
                    ("max_vehicles", self.pi(p.max_vehicles)),
                ],
                self.pi(p.max_vehicles),
                format!(
                    "vehicles owned {vehicles} {} {}",
                    le(vehicles_ok),
                    p.max_vehicles
                ),
            ),
        ];
        (fin && homes_ok && vehicles_ok, rules)
    }

    fn is_special(&self, m: &Person, age: i128) -> bool {
        age >= self.pi(self.p.elderly_age)
            || m.disability_grade().is_some_and(|g| g <= 2)
            || m.seriously_ill
    }

    fn dibao(&self) -> Part {
        let p = self.p;
        let (assets_ok, mut rules) = self.assets("dibao");
        let below = self.h < self.sn;
        rules.push(rule(
            "dibao.income_below_standard".into(),
            below,
            &[
                ("household_income_fen", self.h),
                ("standard_fen", self.s),
                ("members", self.n),
            ],
            self.sn,
            format!(
                "household income {} yuan {} {} = {}",
                yuan(self.h),
                lt(below),
                self.n_standard(),
                yuan(self.sn)
            ),
        ));
        let band_bp = 10_000 + self.pi(p.review_band_bp);
        let (in_band, band) = self.income_vs(self.h, band_bp);
        rules.push(rule(
            "dibao.review_band".into(),
            in_band,
            &[
                ("household_income_fen", self.h),
                ("review_band_bp", self.pi(p.review_band_bp)),
                ("standard_fen", self.s),
                ("members", self.n),
            ],
            band,
            format!(
                "household income {} yuan {} {} × {} = {} (review band)",
                yuan(self.h),
                lt(in_band),
                times(band_bp),
                self.n_standard(),
                yuan(band)
            ),
        ));
        let outcome = if !assets_ok {
            Outcome::Ineligible
        } else if below {
            Outcome::Eligible
        } else if in_band {
            Outcome::NeedsReview
        } else {
            Outcome::Ineligible
        };
        let mut part = Part::new(outcome, Pay::Monthly, rules);
        match outcome {
            Outcome::Eligible => {
                let gap = self.sn - self.h;
                let floor = floor_bp(self.pi(p.dibao_floor_bp), self.sn);
                let special = self
                    .members()
                    .filter(|(_, m, a)| self.is_special(m, *a))
                    .count() as i128;
                let supplement = floor_bp(self.pi(p.special_supplement_bp), self.s);
                let amount = gap.max(floor).saturating_add(mul(special, supplement));
                part.rules.push(rule(
                    "dibao.amount".into(),
                    true,
                    &[
                        ("gap_fen", gap),
                        ("floor_fen", floor),
                        ("special_members", special),
                        ("supplement_fen", supplement),
                        ("amount_fen", amount),
                    ],
                    0,
                    format!(
                        "amount = max({} − {} = {}, floor {} × {} = {}) + {} (aged ≥ {}, disability grade 1–2 or seriously ill) × {} × standard {} = {} yuan",
                        yuan(self.sn),
                        yuan(self.h),
                        yuan(gap),
                        times(self.pi(p.dibao_floor_bp)),
                        yuan(self.sn),
                        yuan(floor),
                        plural(special, "special member", "special members"),
                        p.elderly_age,
                        times(self.pi(p.special_supplement_bp)),
                        yuan(self.s),
                        yuan(amount)
                    ),
                ));
                part.amount = amount;
                part.reason = part.explanation("dibao.income_below_standard");
            }
            Outcome::NeedsReview => {
                part.reason = format!(
                    "{}, but within the review band: {}",
                    part.explanation("dibao.income_below_standard"),
                    part.explanation("dibao.review_band")
                );
            }
            Outcome::Ineligible => {}
        }
        if assets_ok && !below {
            part.margin = self.h - self.sn + 1;
        }
        part
    }

    fn no_labour_capacity(&self, m: &Person, age: i128) -> Option<String> {
        let p = self.p;
        if age >= self.pi(p.elderly_age) {
            return Some(format!("aged {age} ≥ {}", p.elderly_age));
        }
        if age < self.pi(p.minor_age) {
            return Some(format!("aged {age} < {}", p.minor_age));
        }
        let d = m.disability?;
        let qualifies = match d.kind {
            DisabilityKind::Intellectual | DisabilityKind::Mental => d.grade <= 3,
            DisabilityKind::Physical => d.grade <= 2,
            DisabilityKind::Visual => d.grade == 1,
            DisabilityKind::Hearing | DisabilityKind::Speech | DisabilityKind::Multiple => false,
        };
        qualifies.then(|| format!("{} disability grade {}", kind_name(d.kind), d.grade))
    }

    fn extreme_poverty(&self) -> Part {
        let p = self.p;
        let (assets_ok, mut rules) = self.assets("extreme_poverty");
        let mut count = 0i128;
        let mut margin: Option<i128> = None;
        for (i, m, age) in self.members() {
            let why = self.no_labour_capacity(m, age);
            let income = self.pi(m.monthly_income_fen);
            let income_ok = income < self.s;
            let supporter_ok = matches!(m.supporter, Supporter::None | Supporter::Unable);
            let held = why.is_some() && income_ok && supporter_ok;
            if held {
                count += 1;
            } else if why.is_some() && supporter_ok {
                let need = income - self.s + 1;
                margin = Some(margin.map_or(need, |x| x.min(need)));
            }
            let supporter = match m.supporter {
                Supporter::None => "no supporter",
                Supporter::Unable => "supporter unable to support",
                Supporter::Able => "a supporter able to support",
            };
            rules.push(rule(
                "extreme_poverty.member".into(),
                held,
                &[
                    ("member", i as i128),
                    ("age", age),
                    ("no_labour_capacity", i128::from(why.is_some())),
                    ("own_income_fen", income),
                    ("standard_fen", self.s),
                    ("supporter_ok", i128::from(supporter_ok)),
                ],
                self.s,
                format!(
                    "member {}: {}; own income {} yuan {} standard {}; {} → {}",
                    i + 1,
                    why.as_deref().map_or_else(
                        || format!("has labour capacity (aged {age})"),
                        |w| format!("no labour capacity ({w})")
                    ),
                    yuan(income),
                    lt(income_ok),
                    yuan(self.s),
                    supporter,
                    if held {
                        "qualifies"
                    } else {
                        "does not qualify"
                    }
                ),
            ));
        }
        let eligible = assets_ok && count > 0;
        let mut part = Part::new(
            if eligible {
                Outcome::Eligible
            } else {
                Outcome::Ineligible
            },
            Pay::Monthly,
            rules,
        );
        if eligible {
            let each = floor_bp(self.pi(p.extreme_poverty_multiple_bp), self.s);
            part.amount = mul(count, each);
            part.reason = format!(
                "{} qualifying; {} × {} × standard {} = {} yuan each",
                plural(count, "member", "members"),
                count,
                times(self.pi(p.extreme_poverty_multiple_bp)),
                yuan(self.s),
                yuan(each)
            );
        } else if assets_ok {
            part.margin = margin.unwrap_or(0);
        }
        part
    }

    fn marginal(&self, dibao: Outcome) -> Part {
        let p = self.p;
        let covered = dibao == Outcome::Eligible;
        let mut rules = vec![rule(
            "low_income_marginal.not_covered_by_dibao".into(),
            !covered,
            &[("dibao_eligible", i128::from(covered))],
            0,
            format!(
                "dibao outcome {dibao}{}",
                if covered { ": covered by dibao" } else { "" }
            ),
        )];
        let (assets_ok, asset_rules) = self.assets("low_income_marginal");
        rules.extend(asset_rules);
        let m = self.pi(p.marginal_multiple_bp);
        let (income_ok, line) = self.income_vs(self.h, m);
        rules.push(rule(
            "low_income_marginal.income".into(),
            income_ok,
            &[
                ("household_income_fen", self.h),
                ("marginal_multiple_bp", m),
                ("standard_fen", self.s),
                ("members", self.n),
            ],
            line,
            format!(
                "household income {} yuan {} {} × {} = {}",
                yuan(self.h),
                lt(income_ok),
                times(m),
                self.n_standard(),
                yuan(line)
            ),
        ));
        let band_bp = m + self.pi(p.review_band_bp);
        let (in_band, band) = self.income_vs(self.h, band_bp);
        rules.push(rule(
            "low_income_marginal.review_band".into(),
            in_band,
            &[
                ("household_income_fen", self.h),
                ("marginal_multiple_bp", m),
                ("review_band_bp", self.pi(p.review_band_bp)),
                ("standard_fen", self.s),
                ("members", self.n),
            ],
            band,
            format!(
                "household income {} yuan {} {} × {} = {} (review band)",
                yuan(self.h),
                lt(in_band),
                times(band_bp),
                self.n_standard(),
                yuan(band)
            ),
        ));
        let outcome = if covered {
            Outcome::Ineligible
        } else if assets_ok && income_ok {
            Outcome::Eligible
        } else if assets_ok && in_band {
            Outcome::NeedsReview
        } else {
            Outcome::Ineligible
        };
        let mut part = Part::new(outcome, Pay::NoAmount, rules);
        part.covered = covered;
        part.reason = match outcome {
            Outcome::Eligible => part.explanation(".income"),
            Outcome::NeedsReview => format!(
                "{}, but within the review band: {}",
                part.explanation(".income"),
                part.explanation(".review_band")
            ),
            Outcome::Ineligible if covered => "covered by dibao, the higher tier".into(),
            Outcome::Ineligible => String::new(),
        };
        if !covered && assets_ok && !income_ok {
            part.margin = self.h - line + 1;
        }
        part
    }

    fn rigid(&self, dibao: Outcome, marginal: Outcome) -> Part {
        let p = self.p;
        let covered = dibao == Outcome::Eligible || marginal == Outcome::Eligible;
        let mut rules = vec![rule(
            "rigid_expenditure.not_covered".into(),
            !covered,
            &[
                ("dibao_eligible", i128::from(dibao == Outcome::Eligible)),
                (
                    "marginal_eligible",
                    i128::from(marginal == Outcome::Eligible),
                ),
            ],
            0,
            format!(
                "dibao outcome {dibao}, low-income marginal outcome {marginal}{}",
                if covered {
                    ": covered by a higher tier"
                } else {
                    ""
                }
            ),
        )];
        let (assets_ok, asset_rules) = self.assets("rigid_expenditure");
        rules.extend(asset_rules);
        let med = self.pi(self.app.medical_expense_12m_fen);
        let other = self.pi(self.app.other_rigid_expense_12m_fen);
        let monthly = med.saturating_add(other).div_euclid(12);
        let adjusted = (self.h - monthly).max(0);
        let m = self.pi(p.marginal_multiple_bp);
        let (income_ok, line) = self.income_vs(adjusted, m);
        rules.push(rule(
            "rigid_expenditure.income_after_expenses".into(),
            income_ok,
            &[
                ("household_income_fen", self.h),
                ("medical_expense_12m_fen", med),
                ("other_rigid_expense_12m_fen", other),
                ("monthly_rigid_expense_fen", monthly),
                ("adjusted_income_fen", adjusted),
                ("marginal_multiple_bp", m),
                ("standard_fen", self.s),
                ("members", self.n),
            ],
            line,
            format!(
                "household income {} yuan − rigid expenses ({} + {}) / 12 = {} → {} yuan {} {} × {} = {}",
                yuan(self.h),
                yuan(med),
                yuan(other),
                yuan(monthly),
                yuan(adjusted),
                lt(income_ok),
                times(m),
                self.n_standard(),
                yuan(line)
            ),
        ));
        let outcome = if !covered && assets_ok && income_ok {
            Outcome::Eligible
        } else {
            Outcome::Ineligible
        };
        let mut part = Part::new(outcome, Pay::NoAmount, rules);
        part.covered = covered;
        part.reason = match outcome {
            Outcome::Eligible => part.explanation(".income_after_expenses"),
            _ if covered => "covered by a higher tier".into(),
            _ => String::new(),
        };
        if !covered && assets_ok && !income_ok {
            part.margin = adjusted - line + 1;
        }
        part
    }

    fn linked_rule(&self, prog: &str, link: &LinkInfo) -> RuleResult {
        let list = |want: Outcome| {
            link.tiers
                .iter()
                .filter(|(_, o)| *o == want)
                .map(|(p, _)| p.label())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let explanation = match link.linked {
            Linked::Yes => format!("low-income recognition: yes ({} ELIGIBLE)", list(Outcome::Eligible)),
            Linked::Pending => format!(
                "low-income recognition: pending ({} NEEDS_REVIEW)",
                list(Outcome::NeedsReview)
            ),
            Linked::No => "low-income recognition: none (no dibao, extreme-poverty, marginal or rigid-expenditure result)".into(),
        };
        rule(
            format!("{prog}.linked"),
            link.linked == Linked::Yes,
            &[("linked", link.linked.as_input())],
            0,
            explanation,
        )
    }

    /// EDUCATION, HOUSING and EMPLOYMENT share this shape.
    fn linked_programme(&self, prog: &str, condition: RuleResult, link: &LinkInfo) -> Part {
        let cond = condition.held;
        let rules = vec![condition, self.linked_rule(prog, link)];
        let outcome = match (cond, link.linked) {
            (true, Linked::Yes) => Outcome::Eligible,
            (true, Linked::Pending) => Outcome::NeedsReview,
            _ => Outcome::Ineligible,
        };
        let mut part = Part::new(outcome, Pay::NoAmount, rules);
        if outcome.is_referred() {
            part.reason = part
                .rules
                .iter()
                .map(|r| r.explanation.as_str())
                .collect::<Vec<_>>()
                .join("; ");
        }
        part
    }

    fn medical(&self, link: &LinkInfo) -> Part {
        let p = self.p;
        let expense = self.pi(self.app.medical_expense_12m_fen);
        let cat = self.pi(p.catastrophic_medical_bp);
        let annual = mul(12, self.h);
        let catastrophic = mul(expense, 10_000) > mul(cat, annual);
        let line = floor_bp(cat, annual);
        let rules = vec![
            self.linked_rule("medical", link),
            rule(
                "medical.catastrophic".into(),
                catastrophic,
                &[
                    ("medical_expense_12m_fen", expense),
                    ("household_income_fen", self.h),
                    ("catastrophic_medical_bp", cat),
                ],
                line,
                format!(
                    "medical expenses {} yuan over 12 months {} {} × 12 × household income {} = {}",
                    yuan(expense),
                    if catastrophic { ">" } else { "≤" },
                    times(cat),
                    yuan(self.h),
                    yuan(line)
                ),
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

    fn education(&self, link: &LinkInfo) -> Part {
        let count = self
            .app
            .members
            .iter()
            .filter(|m| m.education != EducationStage::None)
            .count() as i128;
        let cond = rule(
            "education.member_in_education".into(),
            count > 0,
            &[("members_in_education", count)],
            0,
            format!("{} in education", plural(count, "member", "members")),
        );
        self.linked_programme("education", cond, link)
    }

    fn housing(&self, link: &LinkInfo) -> Part {
        let h = self.app.housing;
        let need = matches!(h, Housing::Renting | Housing::NoHome | Housing::Dilapidated);
        let cond = rule(
            "housing.housing_need".into(),
            need,
            &[("housing", i128::from(h.to_proto()))],
            0,
            format!(
                "housing: {}{}",
                housing_name(h),
                if need { "" } else { " (no housing need)" }
            ),
        );
        self.linked_programme("housing", cond, link)
    }

    fn employment(&self, link: &LinkInfo) -> Part {
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
        let cond = rule(
            "employment.unemployed_working_age_member".into(),
            count > 0,
            &[
                ("members", count),
                ("working_age_min", self.pi(p.working_age_min)),
                ("working_age_max", self.pi(p.working_age_max)),
            ],
            0,
            format!(
                "{} aged {}–{}, unemployed, without disability grade 1–2 and not seriously ill",
                plural(count, "member", "members"),
                p.working_age_min,
                p.working_age_max
            ),
        );
        self.linked_programme("employment", cond, link)
    }

    fn temporary(&self) -> Part {
        let p = self.p;
        let kind = self.app.emergency.as_ref().map(|e| e.kind);
        let declared = kind.is_some();
        let mut rules = vec![rule(
            "temporary.emergency_declared".into(),
            declared,
            &[(
                "emergency_kind",
                i128::from(kind.map_or(0, |k| k.to_proto())),
            )],
            0,
            match kind {
                Some(k) => format!("emergency declared: {}", format!("{k:?}").to_lowercase()),
                None => "no emergency declared".into(),
            },
        )];
        let mut part_amount = 0;
        if declared {
            let months = mul(self.pi(p.temporary_months), self.sn);
            let cap = self.pi(p.temporary_cap_fen);
            part_amount = months.min(cap);
            rules.push(rule(
                "temporary.amount".into(),
                true,
                &[
                    ("temporary_months", self.pi(p.temporary_months)),
                    ("standard_fen", self.s),
                    ("members", self.n),
                    ("temporary_cap_fen", cap),
                    ("amount_fen", part_amount),
                ],
                cap,
                format!(
                    "amount = min({} months × {} = {}, cap {}) = {} yuan",
                    p.temporary_months,
                    self.n_standard(),
                    yuan(months),
                    yuan(cap),
                    yuan(part_amount)
                ),
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

    fn disaster_relief(&self) -> Part {
        let affected = self.app.disaster_affected;
        let rules = vec![rule(
            "disaster_relief.affected".into(),
            affected,
            &[("disaster_affected", i128::from(affected))],
            0,
            if affected {
                "affected by a natural disaster".into()
            } else {
                "not affected by a natural disaster".into()
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

    fn disability(&self, link: &LinkInfo) -> Part {
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
            self.linked_rule("disability_subsidy", link),
            rule(
                "disability_subsidy.living".into(),
                living > 0,
                &[
                    ("disabled_members", disabled),
                    ("linked", link.linked.as_input()),
                    ("living_members", living),
                    ("living_subsidy_fen", living_fen),
                ],
                0,
                format!(
                    "living subsidy: {} with disability grade 1–4{} → {} × {} yuan",
                    plural(disabled, "member", "members"),
                    if link.linked == Linked::Yes {
                        " in a low-income household"
                    } else {
                        ", but the household has no low-income recognition"
                    },
                    living,
                    yuan(living_fen)
                ),
            ),
            rule(
                "disability_subsidy.care".into(),
                severe > 0,
                &[
                    ("severely_disabled_members", severe),
                    ("care_subsidy_fen", care_fen),
                ],
                0,
                format!(
                    "care subsidy: {} with disability grade 1–2 → {} × {} yuan",
                    plural(severe, "member", "members"),
                    severe,
                    yuan(care_fen)
                ),
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
                    plural(disabled, "member", "members"),
                    part.explanation(".linked")
                );
            }
            Outcome::Ineligible => {}
        }
        part
    }

    fn charity(&self, referred: usize) -> Part {
        let p = self.p;
        let consent = self.app.consent_to_share;
        let none_other = referred == 0;
        let c = self.pi(p.charity_multiple_bp);
        let (income_ok, line) = self.income_vs(self.h, c);
        let rules = vec![
            rule(
                "charity.consent".into(),
                consent,
                &[("consent_to_share", i128::from(consent))],
                0,
                if consent {
                    "consent to share with charities given".into()
                } else {
                    "no consent to share with charities".into()
                },
            ),
            rule(
                "charity.no_other_programme".into(),
                none_other,
                &[("programmes_referred", referred as i128)],
                0,
                format!("{} of programmes 1–11 ELIGIBLE or NEEDS_REVIEW", referred),
            ),
            rule(
                "charity.income".into(),
                income_ok,
                &[
                    ("household_income_fen", self.h),
                    ("charity_multiple_bp", c),
                    ("standard_fen", self.s),
                    ("members", self.n),
                ],
                line,
                format!(
                    "household income {} yuan {} {} × {} = {}",
                    yuan(self.h),
                    lt(income_ok),
                    times(c),
                    self.n_standard(),
                    yuan(line)
                ),
            ),
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

fn summary(programme: Programme, part: &Part, outcomes: &[(Programme, Outcome)]) -> String {
    match part.outcome {
        Outcome::Eligible => match part.pay {
            Pay::Monthly => format!(
                "eligible: {} yuan a month; {}",
                yuan(part.amount),
                part.reason
            ),
            Pay::OneOff => format!("eligible: {} yuan once; {}", yuan(part.amount), part.reason),
            Pay::NoAmount => format!("eligible: {}", part.reason),
        },
        Outcome::NeedsReview => format!("needs review: {}", part.reason),
        Outcome::Ineligible => {
            let mut s = String::from("ineligible: ");
            if part.reason.is_empty() {
                let failed: Vec<&str> = part
                    .rules
                    .iter()
                    .filter(|r| !r.held)
                    .map(|r| r.explanation.as_str())
                    .collect();
                s.push_str(&failed.join("; "));
            } else {
                s.push_str(&part.reason);
            }
            if part.margin > 0 {
                s.push_str(&format!(
                    "; missed by {} yuan of monthly income",
                    yuan(part.margin)
                ));
            }
            let next = next_tiers(programme).iter().find_map(|t| {
                outcomes
                    .iter()
                    .find(|(p, o)| p == t && o.is_referred())
                    .map(|(p, o)| format!("; next tier: {} ({o})", p.label()))
            });
            let on_ladder =
                next_tiers(programme).len() > 1 || programme == Programme::RigidExpenditure;
            match next {
                Some(n) => s.push_str(&n),
                None if on_ladder && !part.covered => s.push_str("; no lower tier applies"),
                None => {}
            }
            s
        }
    }
}
