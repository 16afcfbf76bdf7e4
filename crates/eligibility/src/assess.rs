//! The twelve programme rules and their explanations.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use onecity_domain::{
    Application, DepartmentUnit, DisabilityKind, EducationStage, Employment, Housing, Outcome,
    Person, Programme, Supporter,
};

use crate::format::{Times, Yuan};
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

/// How much of each assessment [`assess_with`] builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Detail {
    /// Every rule with its id, inputs, threshold and explanation: what the log stores and
    /// `Screen` returns in its FULL view.
    #[default]
    Full,
    /// Everything but the rules (`rules` is empty): outcome, amount, margin, unit, policy
    /// version and summary, each identical to [`Detail::Full`]'s. A rule's explanation is
    /// rendered only if the summary quotes it. The BASIC view of `Screen`, which would
    /// otherwise build ~40 explanation lines per call to throw them away.
    Summary,
}

/// Assesses all twelve programmes, in programme order, with `policy` (which the caller picks as
/// the version in force on the application date). Pure and integer-only. Every rule is
/// explained ([`Detail::Full`]).
pub fn assess(app: &Application, policy: &PolicyVersion, catalogue: &Catalogue) -> Vec<Assessment> {
    assess_with(app, policy, catalogue, Detail::Full)
}

/// [`assess`] with the rules only if `detail` asks for them.
pub fn assess_with(
    app: &Application,
    policy: &PolicyVersion,
    catalogue: &Catalogue,
    detail: Detail,
) -> Vec<Assessment> {
    let cx = Cx::new(app, policy, detail);

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
                rules: part
                    .rules
                    .into_iter()
                    .filter_map(Rule::into_result)
                    .collect(),
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

/// A rule while its programme is decided. With [`Detail::Full`] it is finished (id, inputs,
/// threshold, explanation); with [`Detail::Summary`] it keeps only what a summary may quote:
/// the id's parts, whether it held, and its explanation unrendered.
struct Rule<'c> {
    /// Programme part of the id (`dibao`).
    prog: &'static str,
    /// The rest of the id (`assets.financial`).
    name: &'static str,
    held: bool,
    body: Body<'c>,
}

enum Body<'c> {
    Full {
        inputs: BTreeMap<String, i64>,
        threshold: i64,
        explanation: String,
    },
    /// Renders the explanation. Boxed: most are never called, and a box of a few captured
    /// numbers costs far less than the formatting it defers.
    Later(Box<dyn Fn() -> String + 'c>),
}

impl fmt::Debug for Rule<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{} held={}", self.prog, self.name, self.held)
    }
}

impl Rule<'_> {
    /// Whether the id `prog.name` ends with `suffix` (without building the id).
    fn id_ends_with(&self, suffix: &str) -> bool {
        match suffix.strip_suffix(self.name) {
            None => self.name.ends_with(suffix),
            Some("") => true,
            Some(head) => head
                .strip_suffix('.')
                .is_some_and(|head| self.prog.ends_with(head)),
        }
    }

    fn explanation(&self) -> Cow<'_, str> {
        match &self.body {
            Body::Full { explanation, .. } => Cow::Borrowed(explanation),
            Body::Later(render) => Cow::Owned(render()),
        }
    }

    /// The finished rule (none in [`Detail::Summary`]).
    fn into_result(self) -> Option<RuleResult> {
        let Body::Full {
            inputs,
            threshold,
            explanation,
        } = self.body
        else {
            return None;
        };
        let mut rule = String::with_capacity(self.prog.len() + 1 + self.name.len());
        rule.push_str(self.prog);
        rule.push('.');
        rule.push_str(self.name);
        Some(RuleResult {
            rule,
            held: self.held,
            inputs,
            threshold,
            explanation,
        })
    }
}

/// The explanations of `rules`, joined by "; ".
fn joined<'r, 'c: 'r>(rules: impl Iterator<Item = &'r Rule<'c>>) -> String {
    let mut out = String::with_capacity(128);
    for (i, r) in rules.enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(&r.explanation());
    }
    out
}

#[derive(Debug)]
struct Part<'c> {
    outcome: Outcome,
    amount: i128,
    margin: i128,
    pay: Pay,
    rules: Vec<Rule<'c>>,
    /// Why ELIGIBLE or NEEDS_REVIEW (INELIGIBLE lists the rules that failed instead).
    reason: String,
    /// INELIGIBLE only because a higher tier already covers the household.
    covered: bool,
}

impl<'c> Part<'c> {
    fn new(outcome: Outcome, pay: Pay, rules: Vec<Rule<'c>>) -> Self {
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

    /// The explanations of the rules whose id ends with `rule_suffix`, joined by "; ".
    fn explanation(&self, rule_suffix: &str) -> String {
        joined(self.rules.iter().filter(|r| r.id_ends_with(rule_suffix)))
    }
}

#[derive(Debug, Clone, Copy)]
struct LinkInfo {
    linked: Linked,
    tiers: [(Programme, Outcome); 4],
}

impl LinkInfo {
    /// The explanation of every `<programme>.linked` rule.
    fn explanation(&self) -> String {
        let list = |want: Outcome| {
            self.tiers
                .iter()
                .filter(|(_, o)| *o == want)
                .map(|(p, _)| p.label())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self.linked {
            Linked::Yes => format!("low-income recognition: yes ({} ELIGIBLE)", list(Outcome::Eligible)),
            Linked::Pending => format!(
                "low-income recognition: pending ({} NEEDS_REVIEW)",
                list(Outcome::NeedsReview)
            ),
            Linked::No => "low-income recognition: none (no dibao, extreme-poverty, marginal or rigid-expenditure result)".into(),
        }
    }
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
    detail: Detail,
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
    fn new(app: &'a Application, policy: &'a PolicyVersion, detail: Detail) -> Self {
        let n = app.members.len() as i128;
        let s = i128::from(policy.standard_for(app.district));
        Cx {
            app,
            p: policy.params(),
            detail,
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
    fn n_standard(&self) -> NStandard {
        NStandard(self.n, self.s)
    }

    /// The explanation of a `review_band` rule (dibao and the low-income marginal tier
    /// word it alike): household income against `band_bp` × n × standard.
    fn review_band_line(&self, in_band: bool, band_bp: i128, band: i128) -> String {
        format!(
            "household income {} yuan {} {} × {} = {} (review band)",
            Yuan(self.h),
            lt(in_band),
            Times(band_bp),
            self.n_standard(),
            Yuan(band)
        )
    }

    /// One evaluated rule, `prog.name`. `explain` renders its line: at once with
    /// [`Detail::Full`], only if a summary quotes it with [`Detail::Summary`] (which builds
    /// neither the id nor the inputs either).
    fn rule<'c>(
        &self,
        prog: &'static str,
        name: &'static str,
        held: bool,
        inputs: &[(&str, i128)],
        threshold: i128,
        explain: impl Fn() -> String + 'c,
    ) -> Rule<'c> {
        let body = match self.detail {
            Detail::Full => Body::Full {
                inputs: inputs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), sat(*v)))
                    .collect(),
                threshold: sat(threshold),
                explanation: explain(),
            },
            Detail::Summary => Body::Later(Box::new(explain)),
        };
        Rule {
            prog,
            name,
            held,
            body,
        }
    }

    /// Household income compared with `bp`·S·n: `(held, threshold)`.
    fn income_vs(&self, income: i128, bp: i128) -> (bool, i128) {
        (mul(income, 10_000) < mul(bp, self.sn), ceil_bp(bp, self.sn))
    }

    fn assets(&self, prog: &'static str) -> (bool, Vec<Rule<'_>>) {
        let p = self.p;
        let assets = self.pi(self.app.financial_assets_fen);
        let limit = mul(self.pi(p.asset_limit_months), self.sn);
        let fin = assets <= limit;
        let homes = i128::from(self.app.homes_owned);
        let homes_ok = homes <= self.pi(p.max_homes);
        let vehicles = i128::from(self.app.vehicles_owned);
        let vehicles_ok = vehicles <= self.pi(p.max_vehicles);
        let rules = vec![
            self.rule(
                prog,
                "assets.financial",
                fin,
                &[
                    ("financial_assets_fen", assets),
                    ("asset_limit_months", self.pi(p.asset_limit_months)),
                    ("standard_fen", self.s),
                    ("members", self.n),
                ],
                limit,
                move || {
                    format!(
                        "financial assets {} yuan {} {} months × {} = {}",
                        Yuan(assets),
                        le(fin),
                        p.asset_limit_months,
                        self.n_standard(),
                        Yuan(limit)
                    )
                },
            ),
            self.rule(
                prog,
                "assets.homes",
                homes_ok,
                &[("homes_owned", homes), ("max_homes", self.pi(p.max_homes))],
                self.pi(p.max_homes),
                move || format!("homes owned {homes} {} {}", le(homes_ok), p.max_homes),
            ),
            self.rule(
                prog,
                "assets.vehicles",
                vehicles_ok,
                &[
                    ("vehicles_owned", vehicles),
                    ("max_vehicles", self.pi(p.max_vehicles)),
                ],
                self.pi(p.max_vehicles),
                move || {
                    format!(
                        "vehicles owned {vehicles} {} {}",
                        le(vehicles_ok),
                        p.max_vehicles
                    )
                },
            ),
        ];
        (fin && homes_ok && vehicles_ok, rules)
    }

    fn is_special(&self, m: &Person, age: i128) -> bool {
        age >= self.pi(self.p.elderly_age)
            || m.disability_grade().is_some_and(|g| g <= 2)
            || m.seriously_ill
    }

    fn dibao(&self) -> Part<'_> {
        let p = self.p;
        let (assets_ok, mut rules) = self.assets("dibao");
        let below = self.h < self.sn;
        rules.push(self.rule(
            "dibao",
            "income_below_standard",
            below,
            &[
                ("household_income_fen", self.h),
                ("standard_fen", self.s),
                ("members", self.n),
            ],
            self.sn,
            move || {
                format!(
                    "household income {} yuan {} {} = {}",
                    Yuan(self.h),
                    lt(below),
                    self.n_standard(),
                    Yuan(self.sn)
                )
            },
        ));
        let band_bp = 10_000 + self.pi(p.review_band_bp);
        let (in_band, band) = self.income_vs(self.h, band_bp);
        rules.push(self.rule(
            "dibao",
            "review_band",
            in_band,
            &[
                ("household_income_fen", self.h),
                ("review_band_bp", self.pi(p.review_band_bp)),
                ("standard_fen", self.s),
                ("members", self.n),
            ],
            band,
            move || self.review_band_line(in_band, band_bp, band),
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
                part.rules.push(self.rule(
                    "dibao", "amount",
                    true,
                    &[
                        ("gap_fen", gap),
                        ("floor_fen", floor),
                        ("special_members", special),
                        ("supplement_fen", supplement),
                        ("amount_fen", amount),
                    ],
                    0,
                    move || format!(
                        "amount = max({} − {} = {}, floor {} × {} = {}) + {} (aged ≥ {}, disability grade 1–2 or seriously ill) × {} × standard {} = {} yuan",
                        Yuan(self.sn),
                        Yuan(self.h),
                        Yuan(gap),
                        Times(self.pi(p.dibao_floor_bp)),
                        Yuan(self.sn),
                        Yuan(floor),
                        Plural(special, "special member", "special members"),
                        p.elderly_age,
                        Times(self.pi(p.special_supplement_bp)),
                        Yuan(self.s),
                        Yuan(amount)
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

    fn extreme_poverty(&self) -> Part<'_> {
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
            rules.push(self.rule(
                "extreme_poverty",
                "member",
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
                move || {
                    format!(
                        "member {}: {}; own income {} yuan {} standard {}; {} → {}",
                        i + 1,
                        why.as_deref().map_or_else(
                            || format!("has labour capacity (aged {age})"),
                            |w| format!("no labour capacity ({w})")
                        ),
                        Yuan(income),
                        lt(income_ok),
                        Yuan(self.s),
                        supporter,
                        if held {
                            "qualifies"
                        } else {
                            "does not qualify"
                        }
                    )
                },
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
                Plural(count, "member", "members"),
                count,
                Times(self.pi(p.extreme_poverty_multiple_bp)),
                Yuan(self.s),
                Yuan(each)
            );
        } else if assets_ok {
            part.margin = margin.unwrap_or(0);
        }
        part
    }

    fn marginal(&self, dibao: Outcome) -> Part<'_> {
        let p = self.p;
        let covered = dibao == Outcome::Eligible;
        let mut rules = vec![self.rule(
            "low_income_marginal",
            "not_covered_by_dibao",
            !covered,
            &[("dibao_eligible", i128::from(covered))],
            0,
            move || {
                format!(
                    "dibao outcome {dibao}{}",
                    if covered { ": covered by dibao" } else { "" }
                )
            },
        )];
        let (assets_ok, asset_rules) = self.assets("low_income_marginal");
        rules.extend(asset_rules);
        let m = self.pi(p.marginal_multiple_bp);
        let (income_ok, line) = self.income_vs(self.h, m);
        rules.push(self.rule(
            "low_income_marginal",
            "income",
            income_ok,
            &[
                ("household_income_fen", self.h),
                ("marginal_multiple_bp", m),
                ("standard_fen", self.s),
                ("members", self.n),
            ],
            line,
            move || {
                format!(
                    "household income {} yuan {} {} × {} = {}",
                    Yuan(self.h),
                    lt(income_ok),
                    Times(m),
                    self.n_standard(),
                    Yuan(line)
                )
            },
        ));
        let band_bp = m + self.pi(p.review_band_bp);
        let (in_band, band) = self.income_vs(self.h, band_bp);
        rules.push(self.rule(
            "low_income_marginal",
            "review_band",
            in_band,
            &[
                ("household_income_fen", self.h),
                ("marginal_multiple_bp", m),
                ("review_band_bp", self.pi(p.review_band_bp)),
                ("standard_fen", self.s),
                ("members", self.n),
            ],
            band,
            move || self.review_band_line(in_band, band_bp, band),
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

    fn rigid(&self, dibao: Outcome, marginal: Outcome) -> Part<'_> {
        let p = self.p;
        let covered = dibao == Outcome::Eligible || marginal == Outcome::Eligible;
        let mut rules = vec![self.rule(
            "rigid_expenditure",
            "not_covered",
            !covered,
            &[
                ("dibao_eligible", i128::from(dibao == Outcome::Eligible)),
                (
                    "marginal_eligible",
                    i128::from(marginal == Outcome::Eligible),
                ),
            ],
            0,
            move || {
                format!(
                    "dibao outcome {dibao}, low-income marginal outcome {marginal}{}",
                    if covered {
                        ": covered by a higher tier"
                    } else {
                        ""
                    }
                )
            },
        )];
        let (assets_ok, asset_rules) = self.assets("rigid_expenditure");
        rules.extend(asset_rules);
        let med = self.pi(self.app.medical_expense_12m_fen);
        let other = self.pi(self.app.other_rigid_expense_12m_fen);
        let monthly = med.saturating_add(other).div_euclid(12);
        let adjusted = (self.h - monthly).max(0);
        let m = self.pi(p.marginal_multiple_bp);
        let (income_ok, line) = self.income_vs(adjusted, m);
        rules.push(self.rule(
            "rigid_expenditure", "income_after_expenses",
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
            move || format!(
                "household income {} yuan − rigid expenses ({} + {}) / 12 = {} → {} yuan {} {} × {} = {}",
                Yuan(self.h),
                Yuan(med),
                Yuan(other),
                Yuan(monthly),
                Yuan(adjusted),
                lt(income_ok),
                Times(m),
                self.n_standard(),
                Yuan(line)
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

    fn linked_rule(&self, prog: &'static str, link: LinkInfo) -> Rule<'_> {
        self.rule(
            prog,
            "linked",
            link.linked == Linked::Yes,
            &[("linked", link.linked.as_input())],
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

    fn medical(&self, link: &LinkInfo) -> Part<'_> {
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

    fn education(&self, link: &LinkInfo) -> Part<'_> {
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

    fn housing(&self, link: &LinkInfo) -> Part<'_> {
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

    fn employment(&self, link: &LinkInfo) -> Part<'_> {
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

    fn temporary(&self) -> Part<'_> {
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

    fn disaster_relief(&self) -> Part<'_> {
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

    fn disability(&self, link: &LinkInfo) -> Part<'_> {
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

    fn charity(&self, referred: usize) -> Part<'_> {
        let p = self.p;
        let consent = self.app.consent_to_share;
        let none_other = referred == 0;
        let c = self.pi(p.charity_multiple_bp);
        let (income_ok, line) = self.income_vs(self.h, c);
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
            self.rule(
                "charity",
                "income",
                income_ok,
                &[
                    ("household_income_fen", self.h),
                    ("charity_multiple_bp", c),
                    ("standard_fen", self.s),
                    ("members", self.n),
                ],
                line,
                move || {
                    format!(
                        "household income {} yuan {} {} × {} = {}",
                        Yuan(self.h),
                        lt(income_ok),
                        Times(c),
                        self.n_standard(),
                        Yuan(line)
                    )
                },
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

fn summary(programme: Programme, part: &Part<'_>, outcomes: &[(Programme, Outcome)]) -> String {
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
