//! Re-verification of approved low-income recognitions: the review date an approval
//! carries, and the review referral issued when it falls due. The decision path
//! ([`crate::Handoff`]) sets the date; the deadline worker ([`crate::DeadlineWorker`])
//! issues the review (its events are built with the re-assessment's, in
//! `onecity_eligibility::reassess`); the linkage worker applies the review's decision like
//! any recognition decision.

use chrono::{DateTime, NaiveDate, Utc};
use onecity_domain::case::{is_recognition, CaseState};
use onecity_domain::{beijing_date, format_date, today, validate_application};
use onecity_eligibility::{review, PolicyBook};
use onecity_proto::v1 as pb;

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
        .application()
        .cloned()
        .and_then(|a| validate_application(a, today()).ok())?;
    let policy = policies.in_force(approved_on).or_else(|| {
        state
            .assessed
            .as_ref()
            .and_then(|a| policies.get(&a.policy_version))
    })?;
    Some(review::review_due_on(&app, policy, approved_on))
}
