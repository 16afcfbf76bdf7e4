//! Which service role owns which event types and which checkpoints: the one table the log
//! service applies to `service` principals through the `roles` of their `[[tokens]]` entry
//! (docs/operations.md, "Roles own event types"). A role's process writes only these, so a
//! stolen token, or a compromised process, of one role cannot write another's facts: an
//! intake node cannot forge a department's decision.
//!
//! A principal holding every role (`roles` omitted or `all`, e.g. the demo's
//! `demo-service`) may write anything, event types this table does not know included (the
//! tests' and the bench's own types). A principal with named roles may write only what the
//! table gives them: an unknown type is refused, so a new event type is writable over the
//! log service only once it is given an owner here.

use std::sync::Arc;

use onecity_domain::events::{
    APPLICATION_AMENDED, APPLICATION_SUBMITTED, APPLICATION_WITHDRAWN, CASE_CLOSED,
    ELIGIBILITY_ASSESSED, ELIGIBILITY_REASSESSED, PERSON_CLAIMED, POLICY_VERSION_RECORDED,
    RECOGNITION_LINKED, REFERRAL_ACKNOWLEDGED, REFERRAL_BASIS_UPDATED, REFERRAL_CANCELLED,
    REFERRAL_DECIDED, REFERRAL_DUE_SOON, REFERRAL_ESCALATED, REFERRAL_INFORMATION_PROVIDED,
    REFERRAL_INFORMATION_REQUESTED, REFERRAL_ISSUED, REFERRAL_OVERDUE, REFERRAL_TRANSFERRED,
    REVERIFICATION_DUE, REVIEW_REQUESTED, SIGNAL_REPORTED, SUBMISSION_ABANDONED, WARNING_ESCALATED,
    WARNING_RAISED, WARNING_RESOLVED,
};
use onecity_eventlog::access::PERSONAL_DATA_READ;
use onecity_eventlog::quarantine::{EVENT_QUARANTINED, QUARANTINE_RELEASED};
use onecity_eventlog_grpc::Grant;

use crate::config::Role;

use Role::{Eligibility, Handoff, Intake};

/// Event type → the roles that write it.
pub const EVENT_TYPES: &[(&str, &[Role])] = &[
    (APPLICATION_SUBMITTED, &[Intake]),
    (APPLICATION_WITHDRAWN, &[Intake]),
    // The person claims of a submission (docs/eventlog.md, "Person claims").
    (PERSON_CLAIMED, &[Intake]),
    (SUBMISSION_ABANDONED, &[Intake]),
    // A change of circumstances, recorded at a terminal.
    (APPLICATION_AMENDED, &[Intake]),
    (ELIGIBILITY_ASSESSED, &[Eligibility]),
    // A re-assessment (the assessment worker, after an amendment or a new policy version)
    // writes its referral effects in its own commit: new referrals, cancellations, reviews
    // and the closing when nothing is left open.
    (ELIGIBILITY_REASSESSED, &[Eligibility]),
    (REVIEW_REQUESTED, &[Eligibility]),
    // The policy versions in force, recorded by the role that assesses under them.
    (POLICY_VERSION_RECORDED, &[Eligibility]),
    (REFERRAL_ISSUED, &[Eligibility, Handoff]),
    (REFERRAL_ACKNOWLEDGED, &[Handoff]),
    (REFERRAL_DECIDED, &[Handoff]),
    // A withdrawal (intake) cancels the case's open referrals in the same commit.
    (REFERRAL_CANCELLED, &[Intake, Eligibility, Handoff]),
    // The deadline worker runs in the handoff role.
    (REFERRAL_DUE_SOON, &[Handoff]),
    (REFERRAL_OVERDUE, &[Handoff]),
    (REFERRAL_ESCALATED, &[Handoff]),
    // So does its re-verification of approved recognitions.
    (REVERIFICATION_DUE, &[Handoff]),
    // A transfer (issuing the new referral in the same commit) and a request for
    // information are the departments' and supervisors' acts, served by the handoff role;
    // the household's answer comes through a terminal, served by intake.
    (REFERRAL_TRANSFERRED, &[Handoff]),
    (REFERRAL_INFORMATION_REQUESTED, &[Handoff]),
    (REFERRAL_INFORMATION_PROVIDED, &[Intake]),
    (CASE_CLOSED, &[Eligibility, Handoff]),
    // The linkage worker runs with the handoff.
    (REFERRAL_BASIS_UPDATED, &[Handoff]),
    (RECOGNITION_LINKED, &[Handoff]),
    // Written by the workers' consumer loops, and by the admin's retry, which runs only in
    // a process that runs the worker.
    (EVENT_QUARANTINED, &[Eligibility, Handoff]),
    (QUARANTINE_RELEASED, &[Eligibility, Handoff]),
    // Signals and warnings: the monitoring service runs in the handoff role (a death's
    // reviews are referrals), and so does the deadline worker that escalates warnings.
    (SIGNAL_REPORTED, &[Handoff]),
    (WARNING_RAISED, &[Handoff]),
    (WARNING_RESOLVED, &[Handoff]),
    (WARNING_ESCALATED, &[Handoff]),
    // Every role that answers reads of residents' data records them.
    (PERSONAL_DATA_READ, &[Intake, Eligibility, Handoff]),
];

/// Consumer (checkpoint name) → the role whose worker it is. A partition's checkpoint is
/// the name followed by `-<index>of<count>`.
pub const CHECKPOINTS: &[(&str, Role)] = &[
    (onecity_assessment::CONSUMER, Eligibility),
    (onecity_handoff::CONSUMER, Handoff),
    (onecity_handoff::DEADLINES_CONSUMER, Handoff),
    (onecity_handoff::LINKAGE_CONSUMER, Handoff),
];

/// The roles a service token may name: the ones that own something.
pub const GRANTABLE: &[Role] = &[Intake, Eligibility, Handoff];

/// What a principal holding `roles` may write. `None`, or a list holding `all`, is every
/// role: anything at all.
pub fn grant(roles: Option<&[Role]>) -> Grant {
    let Some(roles) = roles.filter(|r| !r.contains(&Role::All)) else {
        return Grant::All;
    };
    let holds = |owners: &[Role]| owners.iter().any(|o| roles.contains(o));
    let names: Vec<&str> = GRANTABLE
        .iter()
        .filter(|r| roles.contains(r))
        .map(|r| r.as_str())
        .collect();
    Grant::Only {
        holder: format!("roles [{}]", names.join(", ")),
        event_types: EVENT_TYPES
            .iter()
            .filter(|(_, owners)| holds(owners))
            .map(|(t, _)| (*t).to_owned())
            .collect(),
        consumers: CHECKPOINTS
            .iter()
            .filter(|(_, owner)| roles.contains(owner))
            .map(|(c, _)| (*c).to_owned())
            .collect(),
    }
}

/// [`grant`], shared.
pub fn shared_grant(roles: Option<&[Role]>) -> Arc<Grant> {
    Arc::new(grant(roles))
}

#[cfg(test)]
mod tests {
    use super::*;
    use onecity_domain::events::CaseEvent;
    use onecity_proto::v1 as pb;

    #[test]
    fn every_case_event_type_has_an_owner() {
        let events = [
            CaseEvent::ApplicationSubmitted(pb::ApplicationSubmitted::default()),
            CaseEvent::EligibilityAssessed(pb::EligibilityAssessed::default()),
            CaseEvent::ReferralIssued(pb::Referral::default()),
            CaseEvent::ReferralAcknowledged(pb::Referral::default()),
            CaseEvent::ReferralDecided(pb::Referral::default()),
            CaseEvent::ReferralCancelled(pb::Referral::default()),
            CaseEvent::ReferralDueSoon(pb::Referral::default()),
            CaseEvent::ReferralOverdue(pb::Referral::default()),
            CaseEvent::ReferralEscalated(pb::Referral::default()),
            CaseEvent::ApplicationWithdrawn(pb::ApplicationWithdrawn::default()),
            CaseEvent::CaseClosed(pb::CaseClosed::default()),
            CaseEvent::ReferralBasisUpdated(pb::Referral::default()),
            CaseEvent::RecognitionLinked(pb::RecognitionLinked::default()),
            CaseEvent::ReverificationDue(pb::ReverificationDue::default()),
            CaseEvent::ReferralTransferred(pb::Referral::default()),
            CaseEvent::ReferralInformationRequested(pb::Referral::default()),
            CaseEvent::ReferralInformationProvided(pb::Referral::default()),
            CaseEvent::ApplicationAmended(pb::ApplicationAmended::default()),
            CaseEvent::EligibilityReassessed(pb::EligibilityReassessed::default()),
            CaseEvent::ReviewRequested(pb::ReviewRequested::default()),
        ];
        for e in events {
            let t = e.event_type();
            assert!(
                EVENT_TYPES.iter().any(|(owned, _)| *owned == t),
                "{t} has no owner"
            );
        }
        for (t, owners) in EVENT_TYPES {
            assert!(!owners.is_empty(), "{t}");
            assert!(owners.iter().all(|o| GRANTABLE.contains(o)), "{t}");
        }
    }

    #[test]
    fn intake_cannot_decide_and_handoff_can() {
        let intake = grant(Some(&[Intake]));
        assert!(intake.may_append(APPLICATION_SUBMITTED));
        assert!(intake.may_append(APPLICATION_WITHDRAWN));
        assert!(intake.may_append(REFERRAL_CANCELLED));
        assert!(intake.may_append(PERSONAL_DATA_READ));
        assert!(intake.may_append(REFERRAL_INFORMATION_PROVIDED));
        assert!(intake.may_append(APPLICATION_AMENDED));
        for t in [
            REFERRAL_DECIDED,
            REFERRAL_TRANSFERRED,
            REFERRAL_INFORMATION_REQUESTED,
            REFERRAL_ISSUED,
            ELIGIBILITY_ASSESSED,
            ELIGIBILITY_REASSESSED,
            REVIEW_REQUESTED,
            CASE_CLOSED,
            EVENT_QUARANTINED,
            "onecity.test.Anything",
        ] {
            assert!(!intake.may_append(t), "{t}");
        }
        assert!(!intake.may_checkpoint("handoff"));
        assert!(!intake.may_checkpoint("assessment-0of2"));

        let handoff = grant(Some(&[Handoff]));
        assert!(handoff.may_append(REFERRAL_DECIDED));
        assert!(handoff.may_append(CASE_CLOSED));
        assert!(handoff.may_append(QUARANTINE_RELEASED));
        assert!(!handoff.may_append(APPLICATION_SUBMITTED));
        assert!(!handoff.may_append(ELIGIBILITY_ASSESSED));
        assert!(handoff.may_checkpoint("handoff-1of2"));
        assert!(!handoff.may_checkpoint("assessment"));

        let eligibility = grant(Some(&[Eligibility]));
        assert!(eligibility.may_append(ELIGIBILITY_ASSESSED));
        assert!(eligibility.may_checkpoint("assessment"));
        // A re-assessment's referral effects, but no department's decision.
        assert!(eligibility.may_append(REFERRAL_ISSUED));
        assert!(eligibility.may_append(REVIEW_REQUESTED));
        assert!(!eligibility.may_append(REFERRAL_DECIDED));
        assert!(!eligibility.may_append(APPLICATION_AMENDED));
    }

    #[test]
    fn every_role_may_write_anything() {
        for roles in [None, Some(&[Role::All][..]), Some(&[Intake, Role::All][..])] {
            let g = grant(roles);
            assert_eq!(g, Grant::All);
            assert!(g.may_append("onecity.test.Anything"));
        }
    }

    #[test]
    fn the_holder_names_the_roles() {
        let Grant::Only { holder, .. } = grant(Some(&[Handoff, Intake])) else {
            panic!("named roles are limited");
        };
        assert_eq!(holder, "roles [intake, handoff]");
    }
}
