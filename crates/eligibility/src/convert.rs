//! Conversions between assessments and their proto messages: the rendered form every API
//! answer carries ([`Assessment`]), and the stored form the log keeps ([`LeanAssessment`]),
//! with [`explain_stored`] to render what was read back.

use onecity_domain::{DepartmentUnit, Outcome, Programme};
use onecity_proto::v1 as proto;

use crate::{explain, Assessment, Detail, Error, LeanAssessment, LeanRule, RuleKind, RuleResult};

/// By reference: a clone, then the by-value conversion (which names every field).
impl From<&RuleResult> for proto::RuleResult {
    fn from(r: &RuleResult) -> Self {
        Self::from(r.clone())
    }
}

/// By value: moves the rule id, inputs and explanation (what `Screen` and the assessment
/// worker use, since they convert assessments they just made and then drop).
impl From<RuleResult> for proto::RuleResult {
    fn from(r: RuleResult) -> Self {
        let RuleResult {
            rule,
            held,
            inputs,
            threshold,
            explanation,
        } = r;
        proto::RuleResult {
            rule,
            held,
            inputs,
            threshold,
            explanation,
            code: 0,
            values: Vec::new(),
        }
    }
}

impl From<proto::RuleResult> for RuleResult {
    fn from(r: proto::RuleResult) -> Self {
        let proto::RuleResult {
            rule,
            held,
            inputs,
            threshold,
            explanation,
            code: _,
            values: _,
        } = r;
        RuleResult {
            rule,
            held,
            inputs,
            threshold,
            explanation,
        }
    }
}

/// By reference: a clone, then the by-value conversion (which names every field).
impl From<&Assessment> for proto::Assessment {
    fn from(a: &Assessment) -> Self {
        Self::from(a.clone())
    }
}

/// `department@district`, as `Display` writes it, without the formatting machinery: a
/// `Screen` writes twelve.
fn unit_string(unit: DepartmentUnit) -> String {
    let (department, district) = (unit.department.as_str(), unit.district.code());
    let mut s = String::with_capacity(department.len() + 1 + district.len());
    s.push_str(department);
    s.push('@');
    s.push_str(district);
    s
}

/// By value: moves every string and rule instead of cloning them (a `Screen` converts
/// twelve explained assessments per call, so copies would show in its server CPU).
impl From<Assessment> for proto::Assessment {
    fn from(a: Assessment) -> Self {
        let Assessment {
            programme,
            outcome,
            amount_fen,
            policy_version,
            department_unit,
            margin_fen,
            summary,
            rules,
        } = a;
        proto::Assessment {
            programme: programme.to_proto(),
            outcome: outcome.to_proto(),
            amount_fen,
            policy_version,
            rules: rules.into_iter().map(proto::RuleResult::from).collect(),
            department_unit: unit_string(department_unit),
            margin_fen,
            summary,
        }
    }
}

/// The programme, outcome and department unit of a stored assessment, each valid.
fn identity(
    programme: i32,
    outcome: i32,
    department_unit: &str,
) -> Result<(Programme, Outcome, DepartmentUnit), Error> {
    Ok((
        Programme::try_from(programme).map_err(|e| Error::conversion("assessment.programme", e))?,
        Outcome::try_from(outcome).map_err(|e| Error::conversion("assessment.outcome", e))?,
        department_unit
            .parse()
            .map_err(|e| Error::conversion("assessment.department_unit", e))?,
    ))
}

/// Reads a stored assessment back; the programme, outcome and department unit must be valid.
impl TryFrom<proto::Assessment> for Assessment {
    type Error = Error;

    fn try_from(a: proto::Assessment) -> Result<Self, Error> {
        let proto::Assessment {
            programme,
            outcome,
            amount_fen,
            policy_version,
            rules,
            department_unit,
            margin_fen,
            summary,
        } = a;
        let (programme, outcome, department_unit) = identity(programme, outcome, &department_unit)?;
        Ok(Assessment {
            programme,
            outcome,
            amount_fen,
            policy_version,
            department_unit,
            margin_fen,
            summary,
            rules: rules.into_iter().map(RuleResult::from).collect(),
        })
    }
}

/// The stored form: the rule's code and values, no id, names or words.
impl From<&LeanRule> for proto::RuleResult {
    fn from(r: &LeanRule) -> Self {
        let LeanRule {
            kind,
            held,
            values,
            threshold,
        } = r;
        proto::RuleResult {
            rule: String::new(),
            held: *held,
            inputs: Default::default(),
            threshold: *threshold,
            explanation: String::new(),
            code: kind.code(),
            values: values.clone(),
        }
    }
}

/// Reads a stored rule back: its code must name a rule, with a value for each of its inputs.
impl TryFrom<proto::RuleResult> for LeanRule {
    type Error = Error;

    fn try_from(r: proto::RuleResult) -> Result<Self, Error> {
        let proto::RuleResult {
            rule: _,
            held,
            inputs: _,
            threshold,
            explanation: _,
            code,
            values,
        } = r;
        let kind = RuleKind::from_code(code)
            .ok_or_else(|| Error::conversion("rule.code", format!("no rule has code {code}")))?;
        if values.len() != kind.keys().len() {
            return Err(Error::conversion(
                "rule.values",
                format!(
                    "{} has {} inputs, the record {}",
                    kind.id(),
                    kind.keys().len(),
                    values.len()
                ),
            ));
        }
        Ok(LeanRule {
            kind,
            held,
            values,
            threshold,
        })
    }
}

/// The stored form: what the log keeps of an assessment (no summary, rules as codes and
/// values).
impl From<&LeanAssessment> for proto::Assessment {
    fn from(a: &LeanAssessment) -> Self {
        let LeanAssessment {
            programme,
            outcome,
            amount_fen,
            policy_version,
            department_unit,
            margin_fen,
            rules,
        } = a;
        proto::Assessment {
            programme: programme.to_proto(),
            outcome: outcome.to_proto(),
            amount_fen: *amount_fen,
            policy_version: policy_version.clone(),
            rules: rules.iter().map(proto::RuleResult::from).collect(),
            department_unit: unit_string(*department_unit),
            margin_fen: *margin_fen,
            summary: String::new(),
        }
    }
}

/// Reads a stored assessment back (the stored form: every rule with its code).
impl TryFrom<proto::Assessment> for LeanAssessment {
    type Error = Error;

    fn try_from(a: proto::Assessment) -> Result<Self, Error> {
        let proto::Assessment {
            programme,
            outcome,
            amount_fen,
            policy_version,
            rules,
            department_unit,
            margin_fen,
            summary: _,
        } = a;
        let (programme, outcome, department_unit) = identity(programme, outcome, &department_unit)?;
        Ok(LeanAssessment {
            programme,
            outcome,
            amount_fen,
            policy_version,
            department_unit,
            margin_fen,
            rules: rules
                .into_iter()
                .map(LeanRule::try_from)
                .collect::<Result<_, _>>()?,
        })
    }
}

/// Whether `a` is in the stored form: its rules carry codes. Every programme has at least
/// one rule, so an assessment stored before the stored form existed (its rules with ids and
/// explanations) is told apart by its first.
fn is_stored_form(a: &proto::Assessment) -> bool {
    a.rules.first().is_some_and(|r| r.code != 0)
}

/// Assessments as read from an `EligibilityAssessed` or `EligibilityReassessed` in the form
/// every answer carries: those in the stored form rendered (summary, rule ids, inputs and
/// explanations, exactly as when they were made), those stored rendered (events written
/// before the stored form) as they are.
///
/// # Errors
/// A stored assessment that does not read back ([`Error::Conversion`]): an unknown rule
/// code, a rule with the wrong number of values, or the two forms mixed in one event.
pub fn explain_stored(
    assessments: Vec<proto::Assessment>,
) -> Result<Vec<proto::Assessment>, Error> {
    let stored = assessments.iter().filter(|a| is_stored_form(a)).count();
    if stored == 0 {
        return Ok(assessments);
    }
    if stored != assessments.len() {
        return Err(Error::conversion(
            "assessments",
            "stored and rendered assessments mixed in one event",
        ));
    }
    let lean = assessments
        .into_iter()
        .map(LeanAssessment::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(explain(&lean, Detail::Full)
        .into_iter()
        .map(proto::Assessment::from)
        .collect())
}
