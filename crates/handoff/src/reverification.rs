//! Re-verification of approved low-income recognitions: the review date an approval
//! carries, and the review referral issued when it falls due. The decision path
//! ([`crate::Handoff`]) sets the date; the deadline worker ([`crate::DeadlineWorker`])
//! issues the review; the linkage worker applies the review's decision like any
//! recognition decision.

use chrono::{DateTime, NaiveDate, Utc};
use onecity_domain::case::{is_recognition, CaseState};
use onecity_domain::events::CaseEvent;
use onecity_domain::{
    beijing_date, format_date, ids, rfc3339, today, validate_application, Programme,
};
use onecity_eligibility::{review, Catalogue, PolicyBook};
use onecity_proto::v1 as pb;
use uuid::Uuid;

/// The review date of recognition referral `r` of the case, approved at `at`: the
/// approval date (Beijing) plus the household's interval under the policy in force that
/// day (the case's assessed version when none is). Empty for any other referral, and when
/// the stored application or the policy is missing (logged: such a recognition is never
/// reviewed automatically).
pub(crate) fn review_due_on(
    policies: &PolicyBook,
    state: &CaseState,
    r: &pb::Referral,
    at: DateTime<Utc>,
) -> String {
    if !is_recognition(r.programme) {
        return String::new();
    }
    let approved_on = beijing_date(at);
    match review_date(policies, state, approved_on) {
        Some(date) => format_date(date),
        None => {
            tracing::error!(case_id = %r.case_id, programme = r.programme, "no application or policy for the case, approval carries no review date");
            String::new()
        }
    }
}

fn review_date(
    policies: &PolicyBook,
    state: &CaseState,
    approved_on: NaiveDate,
) -> Option<NaiveDate> {
    let app = state
        .submitted
        .as_ref()
        .and_then(|s| s.application.clone())
        .and_then(|a| validate_application(a, today()).ok())?;
    let policy = policies.in_force(approved_on).or_else(|| {
        state
            .assessed
            .as_ref()
            .and_then(|a| policies.get(&a.policy_version))
    })?;
    Some(review::review_due_on(&app, policy, approved_on))
}

/// The events that put the approved recognition referral `under_review` under review at
/// `now`: `ReverificationDue` and the review referral (same programme, to the unit that
/// decided it, a fresh deadline from `catalogue`, `reviews` naming it).
pub fn review_events(
    catalogue: &Catalogue,
    case_id: Uuid,
    under_review: &pb::Referral,
    now: DateTime<Utc>,
) -> [CaseEvent; 2] {
    let review_id = ids::review_referral(&under_review.referral_id).to_string();
    let due_at = match Programme::from_proto(under_review.programme) {
        Some(p) => catalogue.due_at(p, now),
        // A recognition programme this version does not know cannot be stored approved
        // with a review date by it; the catalogue's longest default would be a guess.
        None => now,
    };
    let review = pb::Referral {
        referral_id: review_id.clone(),
        case_id: case_id.to_string(),
        programme: under_review.programme,
        department_unit: under_review.department_unit.clone(),
        state: pb::ReferralState::Issued as i32,
        due_at: rfc3339(due_at),
        outcome: under_review.outcome,
        assessed_amount_fen: under_review.assessed_amount_fen,
        issued_at: rfc3339(now),
        policy_version: under_review.policy_version.clone(),
        basis: under_review.basis,
        reviews: under_review.referral_id.clone(),
        ..Default::default()
    };
    [
        CaseEvent::ReverificationDue(pb::ReverificationDue {
            referral_id: under_review.referral_id.clone(),
            programme: under_review.programme,
            department_unit: under_review.department_unit.clone(),
            review_due_on: under_review.review_due_on.clone(),
            review_referral_id: review_id,
            // Set by the caller for a review asked for before its date (a death).
            cause: String::new(),
            signal_id: String::new(),
        }),
        CaseEvent::ReferralIssued(review),
    ]
}
