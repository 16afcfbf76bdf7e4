//! The twelve programme rules and their explanations.
//!
//! This module holds what every programme shares: the public results, the assessment of all
//! twelve in order, and the context the rules read ([`Cx`], with the household-income test
//! most of them apply). The programmes live by concern: the low-income recognition tiers
//! (programmes 1 to 4) in [`recognition`], the departmental programmes linked to that
//! recognition in [`special`], the relief that is not (temporary, disaster, charity) in
//! [`relief`]; [`summary`] writes the clerk's line.

mod recognition;
mod relief;
mod rule;
mod special;
mod summary;

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use onecity_domain::{Application, DepartmentUnit, Outcome, Person, Programme};

use crate::format::{Times, Yuan};
use crate::{Catalogue, Parameters, PolicyVersion};
use rule::{joined, Body, Rule};
use summary::summary;

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
    /// otherwise render every rule's explanation only to throw it away.
    Summary,
}

/// A recognition programme's department decision, which the departmental rules take in
/// place of the predicted outcome of that programme ([`assess_decided`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decided {
    /// One of dibao, extreme poverty, low-income marginal, rigid expenditure (a decision of
    /// any other programme is not a recognition and is ignored).
    pub programme: Programme,
    /// Approved (recognised) or denied.
    pub approved: bool,
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
    assess_decided(app, policy, catalogue, detail, &[])
}

/// [`assess_with`] with the household's recognition as decided so far: a recognition
/// programme in `decided` counts as ELIGIBLE (approved) or INELIGIBLE (denied) for the
/// departmental programmes linked to it, the others as predicted, and the `.linked` rules
/// say which kind each was. The recognition programmes' own assessments stay as predicted.
/// With nothing decided this is exactly [`assess_with`].
pub fn assess_decided(
    app: &Application,
    policy: &PolicyVersion,
    catalogue: &Catalogue,
    detail: Detail,
    decided: &[Decided],
) -> Vec<Assessment> {
    let cx = Cx::new(app, policy, detail);

    let dibao = cx.dibao();
    let extreme = cx.extreme_poverty();
    let marginal = cx.marginal(dibao.outcome);
    let rigid = cx.rigid(dibao.outcome, marginal.outcome);
    let mut tiers = [
        (Programme::Dibao, dibao.outcome),
        (Programme::ExtremePoverty, extreme.outcome),
        (Programme::LowIncomeMarginal, marginal.outcome),
        (Programme::RigidExpenditure, rigid.outcome),
    ];
    let mut decisions = [None; 4];
    for d in decided {
        if let Some(i) = tiers.iter().position(|(p, _)| *p == d.programme) {
            decisions[i] = Some(d.approved);
            tiers[i].1 = if d.approved {
                Outcome::Eligible
            } else {
                Outcome::Ineligible
            };
        }
    }
    let linked = Linked::from_outcomes(tiers.iter().map(|t| t.1));
    let link = LinkInfo {
        linked,
        tiers,
        decisions,
    };

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
    /// Each tier's outcome as the linked programmes take it: decided when decided.
    tiers: [(Programme, Outcome); 4],
    /// Each tier's department decision (approved), if any.
    decisions: [Option<bool>; 4],
}

impl LinkInfo {
    /// How many tiers are decided (an input of the `.linked` rules only when not 0, so an
    /// assessment with nothing decided is unchanged).
    fn decided_count(&self) -> i128 {
        self.decisions.iter().filter(|d| d.is_some()).count() as i128
    }

    /// The explanation of every `<programme>.linked` rule.
    fn explanation(&self) -> String {
        if self.decided_count() > 0 {
            return self.decided_explanation();
        }
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

    /// The explanation once a department decided: each tier that counts, marked decided or
    /// predicted.
    fn decided_explanation(&self) -> String {
        let tier = |i: usize| {
            let (p, o) = self.tiers[i];
            match self.decisions[i] {
                Some(true) => format!("{} approved (decided)", p.label()),
                Some(false) => format!("{} denied (decided)", p.label()),
                None => format!("{} {} (predicted)", p.label(), o.as_str()),
            }
        };
        let list = |keep: &dyn Fn(usize) -> bool| {
            (0..4)
                .filter(|i| keep(*i))
                .map(tier)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self.linked {
            Linked::Yes => format!(
                "low-income recognition: yes ({})",
                list(&|i| self.tiers[i].1 == Outcome::Eligible)
            ),
            Linked::Pending => format!(
                "low-income recognition: pending ({}; {})",
                list(&|i| self.tiers[i].1 == Outcome::NeedsReview),
                list(&|i| self.decisions[i].is_some())
            ),
            Linked::No => format!(
                "low-income recognition: none ({}; no other result predicted)",
                list(&|i| self.decisions[i].is_some())
            ),
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

    /// The test most programmes share: the household income (or what [`Compared`] leaves of
    /// it) below `multiple` × n × standard, as rule `prog.name`. `multiple` is in basis
    /// points; `None` is the standard itself, worded without a multiple. `params` are the
    /// rule's own parameters, recorded as inputs next to the income, the standard and the
    /// members; `note` ends the explanation. Returns the rule and its line (the threshold).
    fn income_rule<'c>(
        &'c self,
        prog: &'static str,
        name: &'static str,
        compared: Compared,
        multiple: Option<i128>,
        params: &[(&'static str, i128)],
        note: &'static str,
    ) -> (Rule<'c>, i128) {
        let income = match compared {
            Compared::Household => self.h,
            Compared::AfterExpenses { adjusted, .. } => adjusted,
        };
        let (held, line) = match multiple {
            None => (income < self.sn, self.sn),
            Some(bp) => (mul(income, 10_000) < mul(bp, self.sn), ceil_bp(bp, self.sn)),
        };
        // On the stack: the inputs are only read in [`Detail::Full`].
        let mut inputs = [("", 0i128); MAX_INCOME_INPUTS];
        let mut len = 0;
        let mut push = |kv: (&'static str, i128)| {
            inputs[len] = kv;
            len += 1;
        };
        push(("household_income_fen", self.h));
        if let Compared::AfterExpenses {
            medical,
            other,
            monthly,
            adjusted,
        } = compared
        {
            push(("medical_expense_12m_fen", medical));
            push(("other_rigid_expense_12m_fen", other));
            push(("monthly_rigid_expense_fen", monthly));
            push(("adjusted_income_fen", adjusted));
        }
        params.iter().copied().for_each(&mut push);
        push(("standard_fen", self.s));
        push(("members", self.n));
        let rule = self.rule(prog, name, held, &inputs[..len], line, move || {
            let mut s = String::with_capacity(96);
            // `write!` to a `String` cannot fail.
            let _ = match compared {
                Compared::Household => write!(s, "household income {} yuan", Yuan(self.h)),
                Compared::AfterExpenses {
                    medical,
                    other,
                    monthly,
                    adjusted,
                } => write!(
                    s,
                    "household income {} yuan − rigid expenses ({} + {}) / 12 = {} → {} yuan",
                    Yuan(self.h),
                    Yuan(medical),
                    Yuan(other),
                    Yuan(monthly),
                    Yuan(adjusted)
                ),
            };
            let _ = write!(s, " {} ", lt(held));
            if let Some(bp) = multiple {
                let _ = write!(s, "{} × ", Times(bp));
            }
            let _ = write!(s, "{} = {}{note}", self.n_standard(), Yuan(line));
            s
        });
        (rule, line)
    }
}

/// What an income rule compares with its line.
#[derive(Debug, Clone, Copy)]
enum Compared {
    /// The household's monthly income.
    Household,
    /// The household's monthly income less a twelfth of its rigid expenses over 12 months.
    AfterExpenses {
        /// Medical expenses over 12 months.
        medical: i128,
        /// Other rigid expenses over 12 months.
        other: i128,
        /// Both, per month.
        monthly: i128,
        /// The income less `monthly`, at least 0.
        adjusted: i128,
    },
}

/// Inputs of an income rule: the income, four more after expenses, two parameters, the
/// standard and the members.
const MAX_INCOME_INPUTS: usize = 9;
