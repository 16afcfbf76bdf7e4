//! The domain events of a case, as stored in the event log. The payload of each event is
//! the protobuf message of the same name in `proto/onecity/v1/events.proto`; the log's
//! event type is its fully qualified name. Fields are only ever added, so every event
//! ever written stays readable.

use onecity_proto::prost::Message;
use onecity_proto::v1 as pb;

/// Event type prefix shared by every onecity event.
pub const PREFIX: &str = "onecity.v1.";
/// `ApplicationSubmitted`: opens a case.
pub const APPLICATION_SUBMITTED: &str = "onecity.v1.ApplicationSubmitted";
/// `EligibilityAssessed`: all twelve programmes assessed.
pub const ELIGIBILITY_ASSESSED: &str = "onecity.v1.EligibilityAssessed";
/// `ReferralIssued`.
pub const REFERRAL_ISSUED: &str = "onecity.v1.ReferralIssued";
/// `ReferralAcknowledged`.
pub const REFERRAL_ACKNOWLEDGED: &str = "onecity.v1.ReferralAcknowledged";
/// `ReferralDecided`.
pub const REFERRAL_DECIDED: &str = "onecity.v1.ReferralDecided";
/// `ReferralCancelled`.
pub const REFERRAL_CANCELLED: &str = "onecity.v1.ReferralCancelled";
/// `ReferralDueSoon`.
pub const REFERRAL_DUE_SOON: &str = "onecity.v1.ReferralDueSoon";
/// `ReferralOverdue`.
pub const REFERRAL_OVERDUE: &str = "onecity.v1.ReferralOverdue";
/// `ReferralEscalated`.
pub const REFERRAL_ESCALATED: &str = "onecity.v1.ReferralEscalated";
/// Prefix of every referral event.
pub const REFERRAL_PREFIX: &str = "onecity.v1.Referral";
/// `ApplicationWithdrawn`.
pub const APPLICATION_WITHDRAWN: &str = "onecity.v1.ApplicationWithdrawn";
/// `CaseClosed`.
pub const CASE_CLOSED: &str = "onecity.v1.CaseClosed";
/// `ReferralBasisUpdated`: a recognition decision changed an open referral's basis.
pub const REFERRAL_BASIS_UPDATED: &str = "onecity.v1.ReferralBasisUpdated";
/// `RecognitionLinked`: the linkage worker applied one recognition decision.
pub const RECOGNITION_LINKED: &str = "onecity.v1.RecognitionLinked";
/// `ReferralTransferred`: a referral moved to another unit.
pub const REFERRAL_TRANSFERRED: &str = "onecity.v1.ReferralTransferred";
/// `ReferralInformationRequested`: the department asked the household for information.
pub const REFERRAL_INFORMATION_REQUESTED: &str = "onecity.v1.ReferralInformationRequested";
/// `ReferralInformationProvided`: a terminal provided it.
pub const REFERRAL_INFORMATION_PROVIDED: &str = "onecity.v1.ReferralInformationProvided";
/// `ReverificationDue`: an approved recognition reached its review date; a review
/// referral is issued in the same commit.
pub const REVERIFICATION_DUE: &str = "onecity.v1.ReverificationDue";
/// `ApplicationAmended`: a terminal recorded a change of the household's circumstances.
pub const APPLICATION_AMENDED: &str = "onecity.v1.ApplicationAmended";
/// `EligibilityReassessed`: a case assessed again (after an amendment or a new policy
/// version), with its referral effects in the same commit.
pub const ELIGIBILITY_REASSESSED: &str = "onecity.v1.EligibilityReassessed";
/// `ReviewRequested`: a re-assessment would change a decided approval; a review referral
/// is issued in the same commit.
pub const REVIEW_REQUESTED: &str = "onecity.v1.ReviewRequested";
/// `PolicyVersionRecorded`: the parameters of a policy version in force (on the policy
/// stream, never a case).
pub const POLICY_VERSION_RECORDED: &str = "onecity.v1.PolicyVersionRecorded";
/// `PersonClaimed`: a submission claims a person (on a person stream, never a case).
pub const PERSON_CLAIMED: &str = "onecity.v1.PersonClaimed";
/// `SubmissionAbandoned`: the first and only event of a case id that will never open.
pub const SUBMISSION_ABANDONED: &str = "onecity.v1.SubmissionAbandoned";

/// `SignalReported`: the first event of a signal stream (never a case).
pub const SIGNAL_REPORTED: &str = "onecity.v1.SignalReported";
/// `WarningRaised`: a signal crossed its threshold (on the signal's stream).
pub const WARNING_RAISED: &str = "onecity.v1.WarningRaised";
/// `WarningResolved`: civil affairs resolved a warning.
pub const WARNING_RESOLVED: &str = "onecity.v1.WarningResolved";
/// `WarningEscalated`: an open warning passed its deadline.
pub const WARNING_ESCALATED: &str = "onecity.v1.WarningEscalated";
/// Prefix of every warning event.
pub const WARNING_PREFIX: &str = "onecity.v1.Warning";

/// The warning a warning event carries (every warning message shares one shape, field 1
/// = Warning); `Ok(None)` for any other event type.
pub fn decode_warning(
    event_type: &str,
    payload: &[u8],
) -> Result<Option<pb::Warning>, DecodeError> {
    if !matches!(
        event_type,
        WARNING_RAISED | WARNING_RESOLVED | WARNING_ESCALATED
    ) {
        return Ok(None);
    }
    let corrupt = |reason: String| DecodeError {
        event_type: event_type.to_owned(),
        reason,
    };
    pb::WarningRaised::decode(payload)
        .map_err(|e| corrupt(e.to_string()))?
        .warning
        .map(Some)
        .ok_or_else(|| corrupt("missing warning".into()))
}

/// A warning event of `event_type` carrying `warning`, encoded.
pub fn encode_warning(warning: &pb::Warning) -> Vec<u8> {
    pb::WarningRaised {
        warning: Some(warning.clone()),
    }
    .encode_to_vec()
}

/// One event of a case stream.
#[derive(Debug, Clone, PartialEq)]
pub enum CaseEvent {
    /// The application was accepted at a street office.
    ApplicationSubmitted(pb::ApplicationSubmitted),
    /// Every programme was assessed.
    EligibilityAssessed(pb::EligibilityAssessed),
    /// A referral was issued (the referral as issued).
    ReferralIssued(pb::Referral),
    /// A department acknowledged a referral (the referral after it).
    ReferralAcknowledged(pb::Referral),
    /// A department decided a referral (the referral after it).
    ReferralDecided(pb::Referral),
    /// A referral was cancelled by withdrawal or by a recognition denial (the referral
    /// after it).
    ReferralCancelled(pb::Referral),
    /// 80 % of a referral's period passed undecided (the referral at that instant).
    ReferralDueSoon(pb::Referral),
    /// A referral reached its deadline undecided (the referral, `overdue` set).
    ReferralOverdue(pb::Referral),
    /// An overdue referral was escalated (the referral, `escalated_at` set).
    ReferralEscalated(pb::Referral),
    /// The applicant withdrew.
    ApplicationWithdrawn(pb::ApplicationWithdrawn),
    /// The case closed.
    CaseClosed(pb::CaseClosed),
    /// A recognition decision changed an open referral's basis (the referral after it).
    ReferralBasisUpdated(pb::Referral),
    /// The linkage worker applied one recognition decision to the other programmes.
    RecognitionLinked(pb::RecognitionLinked),
    /// A referral moved to another unit (the old referral, TRANSFERRED).
    ReferralTransferred(pb::Referral),
    /// The department asked the household for information (the referral, NEEDS_INFO).
    ReferralInformationRequested(pb::Referral),
    /// A terminal provided it (the referral, ACKNOWLEDGED, deadline moved).
    ReferralInformationProvided(pb::Referral),
    /// An approved recognition reached its review date (the review referral is issued in
    /// the same commit).
    ReverificationDue(pb::ReverificationDue),
    /// A terminal recorded a change of circumstances (the application as it now stands).
    ApplicationAmended(pb::ApplicationAmended),
    /// The case was assessed again; from now on its current assessment.
    EligibilityReassessed(pb::EligibilityReassessed),
    /// A re-assessment asks the deciding unit to review an approval (the review referral
    /// is issued in the same commit).
    ReviewRequested(pb::ReviewRequested),
}

/// An event payload that does not decode as its declared type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt {event_type} payload: {reason}")]
pub struct DecodeError {
    /// The declared event type.
    pub event_type: String,
    /// What the decoder said.
    pub reason: String,
}

impl CaseEvent {
    /// The event type written to the log.
    pub fn event_type(&self) -> &'static str {
        match self {
            CaseEvent::ApplicationSubmitted(_) => APPLICATION_SUBMITTED,
            CaseEvent::EligibilityAssessed(_) => ELIGIBILITY_ASSESSED,
            CaseEvent::ReferralIssued(_) => REFERRAL_ISSUED,
            CaseEvent::ReferralAcknowledged(_) => REFERRAL_ACKNOWLEDGED,
            CaseEvent::ReferralDecided(_) => REFERRAL_DECIDED,
            CaseEvent::ReferralCancelled(_) => REFERRAL_CANCELLED,
            CaseEvent::ReferralDueSoon(_) => REFERRAL_DUE_SOON,
            CaseEvent::ReferralOverdue(_) => REFERRAL_OVERDUE,
            CaseEvent::ReferralEscalated(_) => REFERRAL_ESCALATED,
            CaseEvent::ApplicationWithdrawn(_) => APPLICATION_WITHDRAWN,
            CaseEvent::CaseClosed(_) => CASE_CLOSED,
            CaseEvent::ReferralBasisUpdated(_) => REFERRAL_BASIS_UPDATED,
            CaseEvent::RecognitionLinked(_) => RECOGNITION_LINKED,
            CaseEvent::ReferralTransferred(_) => REFERRAL_TRANSFERRED,
            CaseEvent::ReferralInformationRequested(_) => REFERRAL_INFORMATION_REQUESTED,
            CaseEvent::ReferralInformationProvided(_) => REFERRAL_INFORMATION_PROVIDED,
            CaseEvent::ReverificationDue(_) => REVERIFICATION_DUE,
            CaseEvent::ApplicationAmended(_) => APPLICATION_AMENDED,
            CaseEvent::EligibilityReassessed(_) => ELIGIBILITY_REASSESSED,
            CaseEvent::ReviewRequested(_) => REVIEW_REQUESTED,
        }
    }

    /// The protobuf payload.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            CaseEvent::ApplicationSubmitted(m) => m.encode_to_vec(),
            CaseEvent::EligibilityAssessed(m) => m.encode_to_vec(),
            CaseEvent::ReferralIssued(m)
            | CaseEvent::ReferralAcknowledged(m)
            | CaseEvent::ReferralDecided(m)
            | CaseEvent::ReferralCancelled(m)
            | CaseEvent::ReferralDueSoon(m)
            | CaseEvent::ReferralOverdue(m)
            | CaseEvent::ReferralEscalated(m)
            | CaseEvent::ReferralBasisUpdated(m)
            | CaseEvent::ReferralTransferred(m)
            | CaseEvent::ReferralInformationRequested(m)
            | CaseEvent::ReferralInformationProvided(m) => pb::ReferralIssued {
                referral: Some(m.clone()),
            }
            .encode_to_vec(),
            CaseEvent::ApplicationWithdrawn(m) => m.encode_to_vec(),
            CaseEvent::CaseClosed(m) => m.encode_to_vec(),
            CaseEvent::RecognitionLinked(m) => m.encode_to_vec(),
            CaseEvent::ReverificationDue(m) => m.encode_to_vec(),
            CaseEvent::ApplicationAmended(m) => m.encode_to_vec(),
            CaseEvent::EligibilityReassessed(m) => m.encode_to_vec(),
            CaseEvent::ReviewRequested(m) => m.encode_to_vec(),
        }
    }

    /// Decodes a stored event. `Ok(None)` for a type this version does not know (written
    /// by a newer version, or not a case event): projections skip it rather than fail.
    pub fn decode(event_type: &str, payload: &[u8]) -> Result<Option<CaseEvent>, DecodeError> {
        let err = |e: onecity_proto::prost::DecodeError| DecodeError {
            event_type: event_type.to_owned(),
            reason: e.to_string(),
        };
        // Every referral message shares one shape (field 1 = Referral).
        let referral = |p: &[u8]| -> Result<pb::Referral, DecodeError> {
            pb::ReferralIssued::decode(p)
                .map_err(err)?
                .referral
                .ok_or_else(|| DecodeError {
                    event_type: event_type.to_owned(),
                    reason: "missing referral".into(),
                })
        };
        Ok(Some(match event_type {
            APPLICATION_SUBMITTED => CaseEvent::ApplicationSubmitted(
                pb::ApplicationSubmitted::decode(payload).map_err(err)?,
            ),
            ELIGIBILITY_ASSESSED => CaseEvent::EligibilityAssessed(
                pb::EligibilityAssessed::decode(payload).map_err(err)?,
            ),
            REFERRAL_ISSUED => CaseEvent::ReferralIssued(referral(payload)?),
            REFERRAL_ACKNOWLEDGED => CaseEvent::ReferralAcknowledged(referral(payload)?),
            REFERRAL_DECIDED => CaseEvent::ReferralDecided(referral(payload)?),
            REFERRAL_CANCELLED => CaseEvent::ReferralCancelled(referral(payload)?),
            REFERRAL_DUE_SOON => CaseEvent::ReferralDueSoon(referral(payload)?),
            REFERRAL_OVERDUE => CaseEvent::ReferralOverdue(referral(payload)?),
            REFERRAL_ESCALATED => CaseEvent::ReferralEscalated(referral(payload)?),
            APPLICATION_WITHDRAWN => CaseEvent::ApplicationWithdrawn(
                pb::ApplicationWithdrawn::decode(payload).map_err(err)?,
            ),
            CASE_CLOSED => CaseEvent::CaseClosed(pb::CaseClosed::decode(payload).map_err(err)?),
            REFERRAL_BASIS_UPDATED => CaseEvent::ReferralBasisUpdated(referral(payload)?),
            RECOGNITION_LINKED => {
                CaseEvent::RecognitionLinked(pb::RecognitionLinked::decode(payload).map_err(err)?)
            }
            REFERRAL_TRANSFERRED => CaseEvent::ReferralTransferred(referral(payload)?),
            REFERRAL_INFORMATION_REQUESTED => {
                CaseEvent::ReferralInformationRequested(referral(payload)?)
            }
            REFERRAL_INFORMATION_PROVIDED => {
                CaseEvent::ReferralInformationProvided(referral(payload)?)
            }
            REVERIFICATION_DUE => {
                CaseEvent::ReverificationDue(pb::ReverificationDue::decode(payload).map_err(err)?)
            }
            APPLICATION_AMENDED => {
                CaseEvent::ApplicationAmended(pb::ApplicationAmended::decode(payload).map_err(err)?)
            }
            ELIGIBILITY_REASSESSED => CaseEvent::EligibilityReassessed(
                pb::EligibilityReassessed::decode(payload).map_err(err)?,
            ),
            REVIEW_REQUESTED => {
                CaseEvent::ReviewRequested(pb::ReviewRequested::decode(payload).map_err(err)?)
            }
            _ => return Ok(None),
        }))
    }

    /// The referral carried by a referral event.
    pub fn referral(&self) -> Option<&pb::Referral> {
        match self {
            CaseEvent::ReferralIssued(r)
            | CaseEvent::ReferralAcknowledged(r)
            | CaseEvent::ReferralDecided(r)
            | CaseEvent::ReferralCancelled(r)
            | CaseEvent::ReferralDueSoon(r)
            | CaseEvent::ReferralOverdue(r)
            | CaseEvent::ReferralEscalated(r)
            | CaseEvent::ReferralBasisUpdated(r)
            | CaseEvent::ReferralTransferred(r)
            | CaseEvent::ReferralInformationRequested(r)
            | CaseEvent::ReferralInformationProvided(r) => Some(r),
            _ => None,
        }
    }

    /// One line for case histories (no personal data).
    pub fn summary(&self) -> String {
        let programme = |r: &pb::Referral| programme_name(r.programme);
        match self {
            CaseEvent::ApplicationSubmitted(s) => format!(
                "application submitted at {} by terminal {} ({} members, district {})",
                s.street_office,
                s.terminal_id,
                s.application.as_ref().map_or(0, |a| a.members.len()),
                s.application
                    .as_ref()
                    .map_or("", |a| a.district_code.as_str())
            ),
            CaseEvent::EligibilityAssessed(a) => {
                let referred = a
                    .assessments
                    .iter()
                    .filter(|x| {
                        x.outcome == pb::Outcome::Eligible as i32
                            || x.outcome == pb::Outcome::NeedsReview as i32
                    })
                    .count();
                format!(
                    "assessed under policy {}: {referred} programmes to refer",
                    a.policy_version
                )
            }
            CaseEvent::ReferralIssued(r) => {
                format!(
                    "referral {} issued to {}, due {}",
                    programme(r),
                    r.department_unit,
                    r.due_at
                )
            }
            CaseEvent::ReferralAcknowledged(r) => {
                format!(
                    "referral {} acknowledged by {}",
                    programme(r),
                    r.department_unit
                )
            }
            CaseEvent::ReferralDecided(r) => format!(
                "referral {} {} by {}",
                programme(r),
                if r.state == pb::ReferralState::Approved as i32 {
                    "approved"
                } else {
                    "denied"
                },
                r.department_unit
            ),
            CaseEvent::ReferralDueSoon(r) => {
                format!("referral {} due soon, at {}", programme(r), r.due_at)
            }
            CaseEvent::ReferralOverdue(r) => format!(
                "referral {} overdue since {} at {}",
                programme(r),
                r.due_at,
                r.department_unit
            ),
            CaseEvent::ReferralEscalated(r) => format!(
                "referral {} escalated to the supervisor at {}",
                programme(r),
                r.escalated_at
            ),
            CaseEvent::ReferralCancelled(r) if r.cancel_reason.is_empty() => {
                format!("referral {} cancelled", programme(r))
            }
            CaseEvent::ReferralCancelled(r) => {
                format!("referral {} cancelled: {}", programme(r), r.cancel_reason)
            }
            CaseEvent::ReferralBasisUpdated(r) => format!(
                "referral {} basis {} ({} on {})",
                programme(r),
                basis_name(r.basis),
                r.basis_unit,
                r.basis_decided_on
            ),
            CaseEvent::RecognitionLinked(l) => format!(
                "recognition {} {} by {} on {}: other programmes re-assessed",
                programme_name(l.programme),
                if l.approved { "approved" } else { "denied" },
                l.department_unit,
                l.decided_on
            ),
            CaseEvent::ReverificationDue(d) => format!(
                "recognition {} due for re-verification on {}: review referral issued to {}",
                programme_name(d.programme),
                d.review_due_on,
                d.department_unit
            ),
            CaseEvent::ReferralTransferred(r) => format!(
                "referral {} transferred from {} to {}: {}",
                programme(r),
                r.department_unit,
                r.transfer_unit,
                r.transfer_reason
            ),
            CaseEvent::ReferralInformationRequested(r) => format!(
                "referral {}: {} asks the household for information: {}",
                programme(r),
                r.department_unit,
                r.information_requested
            ),
            CaseEvent::ReferralInformationProvided(r) => format!(
                "referral {}: information provided ({}), due {}",
                programme(r),
                r.information_provided,
                r.due_at
            ),
            CaseEvent::ApplicationAmended(a) => format!(
                "application amended at {} by terminal {} ({} members): {}",
                a.street_office,
                a.terminal_id,
                a.application.as_ref().map_or(0, |a| a.members.len()),
                a.reason
            ),
            CaseEvent::EligibilityReassessed(a) => {
                let referred = a
                    .assessments
                    .iter()
                    .filter(|x| {
                        x.outcome == pb::Outcome::Eligible as i32
                            || x.outcome == pb::Outcome::NeedsReview as i32
                    })
                    .count();
                format!(
                    "re-assessed under policy {} ({}): {referred} programmes met",
                    a.policy_version, a.reason
                )
            }
            CaseEvent::ReviewRequested(r) => format!(
                "approval of {} to be reviewed by {}: {}",
                programme_name(r.programme),
                r.department_unit,
                r.cause
            ),
            CaseEvent::ApplicationWithdrawn(_) => "application withdrawn".into(),
            CaseEvent::CaseClosed(c) => format!("case closed: {}", c.reason),
        }
    }

    /// Which departments may read this event in a case history (terminals and
    /// administrators read every entry): a referral's events only its unit, so no unit
    /// learns another's outcomes or notes.
    pub fn audience(&self) -> Audience {
        match self {
            CaseEvent::ApplicationSubmitted(_)
            | CaseEvent::ApplicationWithdrawn(_)
            | CaseEvent::CaseClosed(_) => Audience::Case,
            // Every unit holding a referral reads the household's data; the reason is the
            // household's, not another unit's outcome.
            CaseEvent::ApplicationAmended(_) => Audience::Case,
            // The full summary counts the programmes met, other units' included.
            CaseEvent::EligibilityReassessed(a) => {
                Audience::CaseRedacted(format!("re-assessed under policy {}", a.policy_version))
            }
            // The review is the deciding unit's business, like its decision.
            CaseEvent::ReviewRequested(r) => Audience::Unit(r.department_unit.clone()),
            // The full summary counts the programmes referred, other units' included.
            CaseEvent::EligibilityAssessed(a) => {
                Audience::CaseRedacted(format!("assessed under policy {}", a.policy_version))
            }
            CaseEvent::ReferralIssued(r)
            | CaseEvent::ReferralAcknowledged(r)
            | CaseEvent::ReferralDecided(r)
            | CaseEvent::ReferralCancelled(r)
            | CaseEvent::ReferralDueSoon(r)
            | CaseEvent::ReferralOverdue(r)
            | CaseEvent::ReferralEscalated(r)
            | CaseEvent::ReferralBasisUpdated(r)
            | CaseEvent::ReferralTransferred(r)
            | CaseEvent::ReferralInformationRequested(r)
            | CaseEvent::ReferralInformationProvided(r) => {
                Audience::Unit(r.department_unit.clone())
            }
            // The recognition unit's own outcome: no other unit learns it from the history.
            CaseEvent::RecognitionLinked(l) => Audience::Unit(l.department_unit.clone()),
            // The review is the deciding unit's business, like its decision.
            CaseEvent::ReverificationDue(d) => Audience::Unit(d.department_unit.clone()),
        }
    }
}

/// The lowercase name of a `Programme` value, e.g. `dibao`.
fn programme_name(programme: i32) -> String {
    pb::Programme::try_from(programme)
        .map(|p| {
            p.as_str_name()
                .trim_start_matches("PROGRAMME_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// The lowercase name of a `ReferralBasis` value, e.g. `recognition_denied`.
pub fn basis_name(basis: i32) -> String {
    pb::ReferralBasis::try_from(basis)
        .map(|b| {
            b.as_str_name()
                .trim_start_matches("REFERRAL_BASIS_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// Which departments may read one case-history entry; terminals and administrators read
/// them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Every department that may read the case: the entry carries no unit's data.
    Case,
    /// Every department that may read the case, with this summary in place of the full one.
    CaseRedacted(String),
    /// Only this department unit (`<department>@<district>`), the referral's.
    Unit(String),
    /// No department: an event this version does not understand, so nothing is known of it.
    Nobody,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_roundtrips() {
        let r = pb::Referral {
            referral_id: "r".into(),
            case_id: "c".into(),
            programme: pb::Programme::Dibao as i32,
            department_unit: "civil-affairs@120101".into(),
            state: pb::ReferralState::Issued as i32,
            ..Default::default()
        };
        let events = [
            CaseEvent::ApplicationSubmitted(pb::ApplicationSubmitted {
                terminal_id: "t".into(),
                ..Default::default()
            }),
            CaseEvent::EligibilityAssessed(pb::EligibilityAssessed {
                policy_version: "p".into(),
                ..Default::default()
            }),
            CaseEvent::ReferralIssued(r.clone()),
            CaseEvent::ReferralAcknowledged(r.clone()),
            CaseEvent::ReferralDecided(r.clone()),
            CaseEvent::ReferralCancelled(r.clone()),
            CaseEvent::ReferralDueSoon(r.clone()),
            CaseEvent::ReferralOverdue(r.clone()),
            CaseEvent::ReferralEscalated(r.clone()),
            CaseEvent::ReferralBasisUpdated(pb::Referral {
                basis: pb::ReferralBasis::RecognitionDenied as i32,
                ..r
            }),
            CaseEvent::RecognitionLinked(pb::RecognitionLinked {
                referral_id: "r".into(),
                approved: true,
                ..Default::default()
            }),
            CaseEvent::ReferralTransferred(pb::Referral {
                state: pb::ReferralState::Transferred as i32,
                transfer_unit: "civil-affairs@120103".into(),
                ..Default::default()
            }),
            CaseEvent::ReferralInformationRequested(pb::Referral {
                information_requested: "tenancy contract".into(),
                ..Default::default()
            }),
            CaseEvent::ReferralInformationProvided(pb::Referral {
                information_provided: "scanned".into(),
                ..Default::default()
            }),
            CaseEvent::ApplicationWithdrawn(pb::ApplicationWithdrawn { reason: "x".into() }),
            CaseEvent::CaseClosed(pb::CaseClosed { reason: "y".into() }),
            CaseEvent::ReverificationDue(pb::ReverificationDue {
                referral_id: "r".into(),
                programme: pb::Programme::Dibao as i32,
                department_unit: "civil-affairs@120101".into(),
                review_due_on: "2027-01-31".into(),
                review_referral_id: "v".into(),
                cause: "death of a member reported".into(),
                signal_id: "s".into(),
            }),
            CaseEvent::ApplicationAmended(pb::ApplicationAmended {
                reason: "new job".into(),
                amended_on: "2026-12-04".into(),
                ..Default::default()
            }),
            CaseEvent::EligibilityReassessed(pb::EligibilityReassessed {
                policy_version: "p".into(),
                trigger: pb::ReassessmentTrigger::Amendment as i32,
                cause: "e".into(),
                reason: "new job".into(),
                ..Default::default()
            }),
            CaseEvent::ReviewRequested(pb::ReviewRequested {
                referral_id: "r".into(),
                programme: pb::Programme::Dibao as i32,
                department_unit: "civil-affairs@120101".into(),
                review_referral_id: "v".into(),
                cause: "new job".into(),
                outcome: pb::Outcome::Ineligible as i32,
                ..Default::default()
            }),
        ];
        for e in events {
            let back = CaseEvent::decode(e.event_type(), &e.encode())
                .unwrap()
                .unwrap();
            assert_eq!(back, e);
            assert!(!e.summary().is_empty());
        }
    }

    #[test]
    fn unknown_types_are_skipped_and_garbage_is_an_error() {
        assert_eq!(CaseEvent::decode("onecity.v2.Future", b"\x01"), Ok(None));
        assert!(CaseEvent::decode(REFERRAL_ISSUED, b"").is_err());
        assert!(CaseEvent::decode(CASE_CLOSED, &[0xff, 0xff]).is_err());
    }
}
