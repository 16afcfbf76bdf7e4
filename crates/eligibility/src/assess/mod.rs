//! The twelve programme rules.
//!
//! This module holds what every programme shares: the public results, the assessment of all
//! twelve in order, and the context the rules read ([`Cx`], with the household-income test
//! most of them apply). The programmes live by concern: the low-income recognition tiers
//! (programmes 1 to 4) in [`recognition`], the departmental programmes linked to that
//! recognition in [`special`], the relief that is not (temporary, disaster, charity) in
//! [`relief`].
//!
//! Deciding and explaining are apart: [`decide`] gives each programme's outcome, amount and
//! margin with its rules as kinds, results, inputs and thresholds ([`LeanAssessment`], what
//! the log stores), and [`explain`] writes the words ([`render`]) from that alone, so an
//! assessment read back from the log explains itself exactly as it did when it was made.

mod kind;
mod recognition;
mod relief;
mod render;
mod special;

use onecity_domain::{Application, DepartmentUnit, Outcome, Person, Programme};

use crate::{Catalogue, Parameters, PolicyVersion};
pub use kind::RuleKind;

/// One evaluated rule, explained: what was compared, against what, whether it held and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleResult {
    /// Stable id, `<programme>.<rule>` (e.g. `dibao.income_below_standard`).
    pub rule: String,
    /// Whether the rule's condition held.
    pub held: bool,
    /// Named inputs (fen, counts, ages, basis points; booleans as 0 or 1).
    pub inputs: std::collections::BTreeMap<String, i64>,
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

/// One evaluated rule without its words: what the log stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeanRule {
    /// Which rule.
    pub kind: RuleKind,
    /// Whether its condition held.
    pub held: bool,
    /// Its inputs, one per name of [`RuleKind::keys`], in that order.
    pub values: Vec<i64>,
    /// The threshold compared against, in the rule's unit; 0 when the rule has none.
    pub threshold: i64,
}

/// The result of one programme without its words: everything [`Assessment`] holds but the
/// summary and the explanations, which [`explain`] renders from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeanAssessment {
    /// The programme.
    pub programme: Programme,
    /// The outcome.
    pub outcome: Outcome,
    /// As [`Assessment::amount_fen`].
    pub amount_fen: i64,
    /// Id of the policy version used.
    pub policy_version: String,
    /// Unit that runs the programme for the applicant's district.
    pub department_unit: DepartmentUnit,
    /// As [`Assessment::margin_fen`].
    pub margin_fen: i64,
    /// Rules evaluated, in order.
    pub rules: Vec<LeanRule>,
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

    /// The `linked` input of the rules that read it.
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

/// How much of each assessment [`explain`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Detail {
    /// Every rule with its id, inputs, threshold and explanation: `Screen`'s FULL view and
    /// what a case shows.
    #[default]
    Full,
    /// Everything but the rules (`rules` is empty): outcome, amount, margin, unit, policy
    /// version and summary, each identical to [`Detail::Full`]'s. A rule's explanation is
    /// rendered only if the summary quotes it. The BASIC view of `Screen`.
    Summary,
}

/// A recognition programme's department decision, which the departmental rules take in
/// place of the predicted outcome of that programme ([`decide`]).
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
    explain(&decide(app, policy, catalogue, &[]), detail)
}

/// The words of `assessments` (all twelve, in programme order, as [`decide`] gives them or
/// as read back from the log): each summary, and each rule's explanation if `detail` asks.
/// The same lean assessments always give the same words.
pub fn explain(assessments: &[LeanAssessment], detail: Detail) -> Vec<Assessment> {
    assessments
        .iter()
        .map(|a| a.explained(assessments, detail == Detail::Full))
        .collect()
}

/// Decides all twelve programmes, in programme order, under `policy` (which the caller picks
/// as the version in force on the application date), without words: pure and integer-only.
///
/// `decided` is the household's recognition as decided so far: a recognition programme in
/// it counts as ELIGIBLE (approved) or INELIGIBLE (denied) for the departmental programmes
/// linked to it, the others as predicted, and the `.linked` rules say which kind each was.
/// The recognition programmes' own results stay as predicted.
pub fn decide(
    app: &Application,
    policy: &PolicyVersion,
    catalogue: &Catalogue,
    decided: &[Decided],
) -> Vec<LeanAssessment> {
    let cx = Cx::new(app, policy);

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

    Programme::ALL
        .iter()
        .copied()
        .zip(parts)
        .map(|(programme, part)| {
            let eligible = part.outcome == Outcome::Eligible;
            LeanAssessment {
                programme,
                outcome: part.outcome,
                amount_fen: if eligible { sat(part.amount) } else { 0 },
                policy_version: policy.id().to_owned(),
                department_unit: catalogue.unit(programme, app.district),
                margin_fen: if eligible { 0 } else { sat(part.margin) },
                rules: part.rules,
            }
        })
        .collect()
}

#[derive(Debug)]
struct Part {
    outcome: Outcome,
    amount: i128,
    margin: i128,
    rules: Vec<LeanRule>,
}

impl Part {
    fn new(outcome: Outcome, rules: Vec<LeanRule>) -> Self {
        Part {
            outcome,
            amount: 0,
            margin: 0,
            rules,
        }
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
    /// The inputs of every `<programme>.linked` rule: enough to say which tiers count and
    /// which of them a department decided.
    fn inputs(&self) -> [(&'static str, i128); 10] {
        let outcome = |i: usize| i128::from(self.tiers[i].1.to_proto());
        let decision = |i: usize| match self.decisions[i] {
            None => 0,
            Some(true) => render::DECISION_APPROVED,
            Some(false) => render::DECISION_DENIED,
        };
        [
            ("linked", self.linked.as_input()),
            (
                "decided_recognitions",
                self.decisions.iter().filter(|d| d.is_some()).count() as i128,
            ),
            ("dibao_outcome", outcome(0)),
            ("extreme_poverty_outcome", outcome(1)),
            ("low_income_marginal_outcome", outcome(2)),
            ("rigid_expenditure_outcome", outcome(3)),
            ("dibao_decision", decision(0)),
            ("extreme_poverty_decision", decision(1)),
            ("low_income_marginal_decision", decision(2)),
            ("rigid_expenditure_decision", decision(3)),
        ]
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

    /// One evaluated rule. `inputs` are the inputs of `kind` in the order of
    /// [`RuleKind::keys`], each with its name: the names are checked in debug builds (the
    /// tests), and only the values are kept.
    fn rule(
        &self,
        kind: RuleKind,
        held: bool,
        inputs: &[(&str, i128)],
        threshold: i128,
    ) -> LeanRule {
        debug_assert!(
            inputs
                .iter()
                .map(|(k, _)| *k)
                .eq(kind.keys().iter().copied()),
            "{kind:?} takes {:?}, given {inputs:?}",
            kind.keys()
        );
        LeanRule {
            kind,
            held,
            values: inputs.iter().map(|(_, v)| sat(*v)).collect(),
            threshold: sat(threshold),
        }
    }

    /// The test most programmes share: the household income (or what [`Compared`] leaves of
    /// it) below `multiple` × n × standard, as rule `kind`. `multiple` is in basis points;
    /// `None` is the standard itself. `params` are the rule's own parameters, recorded as
    /// inputs next to the income, the standard and the members. Returns the rule and its
    /// line (the threshold).
    fn income_rule(
        &self,
        kind: RuleKind,
        compared: Compared,
        multiple: Option<i128>,
        params: &[(&'static str, i128)],
    ) -> (LeanRule, i128) {
        let income = match compared {
            Compared::Household => self.h,
            Compared::AfterExpenses { adjusted, .. } => adjusted,
        };
        let (held, line) = match multiple {
            None => (income < self.sn, self.sn),
            Some(bp) => (mul(income, 10_000) < mul(bp, self.sn), ceil_bp(bp, self.sn)),
        };
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
        (self.rule(kind, held, &inputs[..len], line), line)
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
