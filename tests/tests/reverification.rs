//! Re-verification over gRPC with a manual clock: an approved recognition falls due for
//! review at 00:00 Beijing on its documented date (calendar months from the approval, the
//! shorter interval for unstable income), exactly once also across a restart; the review's
//! approval renews it with the next date, its denial ends it and the linked referrals
//! follow; a closed case is re-opened for the review and closes again.

use std::time::Duration;

use chrono::{DateTime, Utc};
use onecity_domain::events::{CaseEvent, REFERRAL_ESCALATED, REFERRAL_ISSUED, REVERIFICATION_DUE};
use onecity_proto::v1 as pb;
use onecity_service::clock::{ManualClock, SharedClock};
use onecity_tests::{decide, referral, sample_application, token_of, tokens, TestServer};

const WAIT: Duration = Duration::from_secs(30);

async fn start(dir: &std::path::Path, clock: &ManualClock) -> TestServer {
    let clock = SharedClock(std::sync::Arc::new(clock.clone()));
    TestServer::start_with(dir, move |c| {
        c.clock = clock;
        c.deadline_tick_ms = 20;
    })
    .await
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The decoded events of `case_id` of `event_type`, in log order.
async fn events_of(server: &TestServer, case_id: &str, event_type: &str) -> Vec<CaseEvent> {
    server
        .whole_log()
        .await
        .into_iter()
        .filter(|e| e.case_id == case_id && e.event_type == event_type)
        .filter_map(|e| CaseEvent::decode(&e.event_type, &e.payload).unwrap())
        .collect()
}

/// The re-verifications of `case_id`.
async fn reverifications(server: &TestServer, case_id: &str) -> Vec<pb::ReverificationDue> {
    events_of(server, case_id, REVERIFICATION_DUE)
        .await
        .into_iter()
        .filter_map(|e| match e {
            CaseEvent::ReverificationDue(d) => Some(d),
            _ => None,
        })
        .collect()
}

/// Polls (bounded) until `check` returns something.
async fn poll<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(t) = check().await {
            return t;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the case satisfies `done`.
async fn wait_case(
    server: &TestServer,
    case_id: &str,
    what: &str,
    done: impl Fn(&pb::Case) -> bool,
) -> pb::Case {
    poll(what, || async {
        let case = server.case(case_id).await;
        done(&case).then_some(case)
    })
    .await
}

fn linked_count(case: &pb::Case) -> usize {
    case.events
        .iter()
        .filter(|e| e.event_type == "onecity.v1.RecognitionLinked")
        .count()
}

/// Proves the worker has looked at the clock as it stands now: a case submitted now has
/// referrals already past every deadline instant on the (future) manual clock, so their
/// escalation is written by a tick that read the clock after this call, and such a tick
/// handles the reviews first.
async fn ticked(server: &TestServer) {
    let fresh = server.submit_handed_off(sample_application()).await;
    let first = fresh
        .referrals
        .first()
        .expect("a referral")
        .referral_id
        .clone();
    let case_id = fresh.case_id.clone();
    poll("a tick after the clock moved", || async {
        let escalated = events_of(server, &case_id, REFERRAL_ESCALATED).await;
        escalated
            .iter()
            .any(|e| e.referral().is_some_and(|r| r.referral_id == first))
            .then_some(())
    })
    .await;
}

/// The review referral issued for `under_review`.
async fn review_of(server: &TestServer, case_id: &str, under_review: &str) -> pb::Referral {
    poll("the review referral", || async {
        events_of(server, case_id, REFERRAL_ISSUED)
            .await
            .into_iter()
            .filter_map(|e| e.referral().cloned())
            .find(|r| r.reviews == under_review)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_falls_due_once_renews_and_its_denial_ends_the_recognition() {
    let dir = tempfile::tempdir().unwrap();
    // 31 August 2027, 10:00 in Beijing. The sample household has working-age members in
    // the labour force (one unemployed, one employed): unstable income, 6 months.
    let clock = ManualClock::new(at("2027-08-31T02:00:00Z"));
    let server = start(dir.path(), &clock).await;
    let case = server.submit_handed_off(sample_application()).await;
    let case_id = case.case_id.clone();
    let dibao = referral(&case, pb::Programme::Dibao).clone();
    let extreme = referral(&case, pb::Programme::ExtremePoverty).clone();
    let medical = referral(&case, pb::Programme::Medical).clone();
    let mut civil = server.handoff(tokens::CIVIL_AFFAIRS).await;

    let denied = civil
        .record_decision(decide(&extreme.referral_id, pb::Decision::Denied))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    assert!(denied.review_due_on.is_empty(), "a denial is not reviewed");
    let approved = civil
        .record_decision(decide(&dibao.referral_id, pb::Decision::Approved))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    // 2027-08-31 + 6 calendar months: February has no 31st, and 2028 is a leap year.
    assert_eq!(approved.review_due_on, "2028-02-29");
    assert!(approved.reviews.is_empty());
    wait_case(&server, &case_id, "both decisions linked", |c| {
        linked_count(c) == 2
    })
    .await;

    // One minute before 00:00 Beijing on 29 February: not yet.
    clock.set(at("2028-02-28T15:59:00Z"));
    ticked(&server).await;
    assert!(reverifications(&server, &case_id).await.is_empty());

    // At 00:00 Beijing on the review date: the review referral to the deciding unit.
    let due_at = at("2028-02-28T16:00:00Z");
    clock.set(due_at);
    let review = review_of(&server, &case_id, &dibao.referral_id).await;
    let due = reverifications(&server, &case_id).await;
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].referral_id, dibao.referral_id);
    assert_eq!(due[0].review_due_on, "2028-02-29");
    assert_eq!(due[0].department_unit, "civil-affairs@120103");
    assert_eq!(due[0].review_referral_id, review.referral_id);
    assert_eq!(review.programme, pb::Programme::Dibao as i32);
    assert_eq!(review.department_unit, "civil-affairs@120103");
    assert_eq!(review.state, pb::ReferralState::Issued as i32);
    assert_eq!(at(&review.issued_at), due_at);
    let shipped = onecity_eligibility::Catalogue::embedded();
    assert_eq!(
        at(&review.due_at),
        shipped.due_at(onecity_domain::Programme::Dibao, due_at)
    );
    assert_ne!(review.referral_id, dibao.referral_id);

    // A restart rebuilds the worker from the log: nothing is issued again.
    server.stop().await;
    clock.set(at("2028-02-29T16:00:00Z"));
    let server = start(dir.path(), &clock).await;
    ticked(&server).await;
    assert_eq!(reverifications(&server, &case_id).await.len(), 1);
    let reviews = events_of(&server, &case_id, REFERRAL_ISSUED)
        .await
        .into_iter()
        .filter(|e| e.referral().is_some_and(|r| !r.reviews.is_empty()))
        .count();
    assert_eq!(reviews, 1);

    // The review approved on 1 March 2028 (Beijing): renewed, next review 1 September.
    let mut civil = server.handoff(tokens::CIVIL_AFFAIRS).await;
    let renewed = civil
        .record_decision(decide(&review.referral_id, pb::Decision::Approved))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(renewed.review_due_on, "2028-09-01");
    assert_eq!(renewed.reviews, dibao.referral_id);
    let after = wait_case(&server, &case_id, "the renewal linked", |c| {
        linked_count(c) == 3
    })
    .await;
    assert_eq!(
        referral(&after, pb::Programme::Medical).state,
        pb::ReferralState::Issued as i32,
        "the renewed recognition keeps the medical referral"
    );

    // The renewal falls due in turn; this time the review denies.
    clock.set(at("2028-08-31T16:00:00Z"));
    let second = review_of(&server, &case_id, &review.referral_id).await;
    assert_eq!(reverifications(&server, &case_id).await.len(), 2);
    civil
        .record_decision(decide(&second.referral_id, pb::Decision::Denied))
        .await
        .unwrap();
    // No recognition is left (extreme poverty was denied): the medical referral is
    // cancelled with the reason.
    let ended = wait_case(&server, &case_id, "medical cancelled", |c| {
        c.referrals.iter().any(|r| {
            r.referral_id == medical.referral_id && r.state == pb::ReferralState::Cancelled as i32
        })
    })
    .await;
    let cancelled = ended
        .referrals
        .iter()
        .find(|r| r.referral_id == medical.referral_id)
        .unwrap();
    assert_eq!(
        cancelled.cancel_reason,
        format!(
            "recognition ended on re-verification by civil-affairs@120103 on {}",
            onecity_tests::today()
        )
    );
    // The medical unit sees why on its own list.
    let listed = server
        .handoff(tokens::MEDICAL)
        .await
        .list_referrals(pb::ListReferralsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .referrals;
    assert!(listed.iter().any(
        |r| r.referral_id == medical.referral_id && r.cancel_reason == cancelled.cancel_reason
    ));

    // The ended recognition is never reviewed again.
    clock.set(at("2030-01-01T00:00:00Z"));
    ticked(&server).await;
    assert_eq!(reverifications(&server, &case_id).await.len(), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stable_household_is_reviewed_after_a_year_and_its_closed_case_reopens() {
    let dir = tempfile::tempdir().unwrap();
    // 31 January 2027, 10:00 in Beijing.
    let clock = ManualClock::new(at("2027-01-31T02:00:00Z"));
    let server = start(dir.path(), &clock).await;
    // Nobody of working age is in the labour force: stable income, 12 months.
    let mut app = sample_application();
    for m in &mut app.members {
        m.employment = pb::Employment::NotInLabourForce as i32;
    }
    app.consent_to_share = false;
    let case = server.submit_handed_off(app).await;
    let case_id = case.case_id.clone();
    let dibao = referral(&case, pb::Programme::Dibao).clone();

    // Dibao approved, every other referral denied (including any the linkage issues),
    // until the case closes.
    let approved = server
        .handoff(tokens::CIVIL_AFFAIRS)
        .await
        .record_decision(decide(&dibao.referral_id, pb::Decision::Approved))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(approved.review_due_on, "2028-01-31");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = server.case(&case_id).await;
        if now.status == pb::CaseStatus::Closed as i32 {
            break;
        }
        for r in &now.referrals {
            if r.state == pb::ReferralState::Issued as i32 {
                let _ = server
                    .handoff(&token_of(&r.department_unit))
                    .await
                    .record_decision(decide(&r.referral_id, pb::Decision::Denied))
                    .await;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the case never closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Reviewed at 00:00 Beijing on 31 January 2028, on the closed case, which re-opens.
    clock.set(at("2028-01-30T15:59:00Z"));
    ticked(&server).await;
    assert!(reverifications(&server, &case_id).await.is_empty());
    clock.set(at("2028-01-30T16:00:00Z"));
    let review = review_of(&server, &case_id, &dibao.referral_id).await;
    let reopened = server.case(&case_id).await;
    assert_eq!(reopened.status, pb::CaseStatus::Open as i32);

    // Renewed: the case closes again once the renewal is linked; next review in a year.
    let renewed = server
        .handoff(tokens::CIVIL_AFFAIRS)
        .await
        .record_decision(decide(&review.referral_id, pb::Decision::Approved))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(renewed.review_due_on, "2029-01-31");
    let closed = wait_case(&server, &case_id, "closed again", |c| {
        c.status == pb::CaseStatus::Closed as i32
    })
    .await;
    assert!(closed
        .events
        .iter()
        .any(|e| e.event_type == "onecity.v1.RecognitionLinked" && e.summary.contains("approved")));
    server.stop().await;
}
