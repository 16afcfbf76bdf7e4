//! Conversions between assessments and their proto messages.

use onecity_domain::{DepartmentUnit, Outcome, Programme};
use onecity_proto::v1 as proto;

use crate::{Assessment, Error, RuleResult};

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
        Ok(Assessment {
            programme: Programme::try_from(programme)
                .map_err(|e| Error::conversion("assessment.programme", e))?,
            outcome: Outcome::try_from(outcome)
                .map_err(|e| Error::conversion("assessment.outcome", e))?,
            amount_fen,
            policy_version,
            department_unit: department_unit
                .parse()
                .map_err(|e| Error::conversion("assessment.department_unit", e))?,
            margin_fen,
            summary,
            rules: rules.into_iter().map(RuleResult::from).collect(),
        })
    }
}
