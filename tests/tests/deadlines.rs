//! Deadlines over gRPC with a manual clock: due-soon, overdue and escalation at their
//! instants, none for a decided referral, none twice across restarts.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use onecity_domain::events::{CaseEvent, REFERRAL_DUE_SOON, REFERRAL_ESCALATED, REFERRAL_OVERDUE};
use onecity_proto::v1 as pb;
use onecity_service::clock::{ManualClock, SharedClock};
use onecity_tests::{referral, sample_application, tokens, TestServer};

const ESCALATION_DAYS: u32 = 5;

async fn start(dir: &std::path::Path, clock: &ManualClock) -> TestServer {
    let clock = SharedClock(std::sync::Arc::new(clock.clone()));
    TestServer::start_with(dir, move |c| {
        c.clock = clock;
        c.escalation_days = ESCALATION_DAYS;
        c.deadline_tick_ms = 20;
    })
    .await
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The deadline events of `referral_id` in the log, as (type, referral).
async fn deadline_events(server: &TestServer, referral_id: &str) -> Vec<(String, pb::Referral)> {
    server
        .whole_log()
        .await
        .into_iter()
        .filter(|e| {
            [REFERRAL_DUE_SOON, REFERRAL_OVERDUE, REFERRAL_ESCALATED]
                .contains(&e.event_type.as_str())
        })
        .filter_map(|e| {
            let r = CaseEvent::decode(&e.event_type, &e.payload)
                .unwrap()?
                .referral()?
                .clone();
            (r.referral_id == referral_id).then_some((e.event_type, r))
        })
        .collect()
}

/// Polls the log (bounded by a deadline) until `referral_id` has an event of `event_type`.
async fn wait_for(server: &TestServer, referral_id: &str, event_type: &str) -> pb::Referral {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let found = deadline_events(server, referral_id)
            .await
            .into_iter()
            .find(|(t, _)| t == event_type);
        if let Some((_, r)) = found {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {event_type} for referral {referral_id}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn types(events: &[(String, pb::Referral)]) -> Vec<&str> {
    events.iter().map(|(t, _)| t.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_events_come_at_their_instants_once_and_never_for_decided_referrals() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Utc::now());
    let server = start(dir.path(), &clock).await;
    let case = server.submit_handed_off(sample_application()).await;
    let dibao = referral(&case, pb::Programme::Dibao).clone();
    let medical = referral(&case, pb::Programme::Medical).clone();

    // Deadlines in the unit the catalogue gives: dibao calendar days, medical working
    // days over the holiday calendar.
    let submitted = at(&case.submitted_at);
    let shipped = onecity_eligibility::Catalogue::embedded();
    for r in [&dibao, &medical] {
        let p = onecity_domain::Programme::from_proto(r.programme).unwrap();
        assert_eq!(
            at(&r.due_at),
            shipped.due_at(p, submitted),
            "{}",
            r.programme
        );
    }
    assert_eq!(at(&dibao.due_at) - submitted, TimeDelta::days(30));
    assert_eq!(
        shipped.deadline_unit(onecity_domain::Programme::Medical),
        onecity_eligibility::DeadlineUnit::Working
    );

    // Medical is decided at once: it must never get a deadline event, although its
    // instants all come before dibao's.
    let mut medical_dept = server.handoff(tokens::MEDICAL).await;
    medical_dept
        .record_decision(pb::RecordDecisionRequest {
            referral_id: medical.referral_id.clone(),
            decision: pb::Decision::Denied as i32,
            amount_fen: 0,
            note: String::new(),
            request_id: String::new(),
        })
        .await
        .unwrap();
    assert!(at(&medical.due_at) < at(&dibao.due_at));

    let issued = at(&dibao.issued_at);
    let due = at(&dibao.due_at);
    let due_soon = issued + (due - issued) * 4 / 5;

    clock.set(due_soon + TimeDelta::seconds(1));
    wait_for(&server, &dibao.referral_id, REFERRAL_DUE_SOON).await;
    // Written in the same tick as the due-soon, had it been due: not yet overdue.
    assert_eq!(
        types(&deadline_events(&server, &dibao.referral_id).await),
        [REFERRAL_DUE_SOON]
    );

    clock.set(due + TimeDelta::seconds(1));
    let overdue = wait_for(&server, &dibao.referral_id, REFERRAL_OVERDUE).await;
    assert!(overdue.overdue);
    assert!(overdue.escalated_at.is_empty());
    assert_eq!(
        types(&deadline_events(&server, &dibao.referral_id).await),
        [REFERRAL_DUE_SOON, REFERRAL_OVERDUE]
    );
    // Every tick up to this one looked at medical too.
    assert!(deadline_events(&server, &medical.referral_id)
        .await
        .is_empty());

    let escalate = due + TimeDelta::days(ESCALATION_DAYS.into());
    clock.set(escalate + TimeDelta::seconds(1));
    let escalated = wait_for(&server, &dibao.referral_id, REFERRAL_ESCALATED).await;
    assert_eq!(
        at(&escalated.escalated_at),
        escalate + TimeDelta::seconds(1)
    );
    assert!(escalated.overdue);
    assert_eq!(escalated.state, pb::ReferralState::Issued as i32);

    // The department sees it on its list.
    let mut civil = server.handoff(tokens::CIVIL_AFFAIRS).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let listed = civil
            .list_referrals(pb::ListReferralsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .referrals;
        let mine = listed
            .iter()
            .find(|r| r.referral_id == dibao.referral_id)
            .unwrap();
        if !mine.escalated_at.is_empty() {
            assert!(mine.overdue);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "list never showed it"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The listing filters: overdue only, programme, due before.
    let list = |q: pb::ListReferralsRequest| {
        let mut civil = civil.clone();
        async move {
            civil.list_referrals(q).await.map(|r| {
                r.into_inner()
                    .referrals
                    .into_iter()
                    .map(|r| r.referral_id)
                    .collect::<Vec<_>>()
            })
        }
    };
    let overdue = list(pb::ListReferralsRequest {
        overdue_only: true,
        ..Default::default()
    })
    .await
    .unwrap();
    // Every open civil-affairs referral of the case is past its (shorter or equal)
    // deadline by now.
    let civil_open: Vec<String> = case
        .referrals
        .iter()
        .filter(|r| r.department_unit == dibao.department_unit)
        .map(|r| r.referral_id.clone())
        .collect();
    assert!(overdue.contains(&dibao.referral_id));
    assert_eq!(overdue.len(), civil_open.len(), "{overdue:?}");
    // The decided medical referral is never overdue for its unit.
    let medical_overdue = medical_dept
        .list_referrals(pb::ListReferralsRequest {
            overdue_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .referrals;
    assert!(medical_overdue.is_empty(), "{medical_overdue:?}");
    let other_programme = list(pb::ListReferralsRequest {
        programme: pb::Programme::Housing as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(!other_programme.contains(&dibao.referral_id));
    let dibao_only = list(pb::ListReferralsRequest {
        programme: pb::Programme::Dibao as i32,
        due_before: (due + TimeDelta::seconds(1)).to_rfc3339(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(dibao_only, std::slice::from_ref(&dibao.referral_id));
    let none_yet = list(pb::ListReferralsRequest {
        due_before: due.to_rfc3339(),
        programme: pb::Programme::Dibao as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(none_yet.is_empty(), "{none_yet:?}");
    let err = list(pb::ListReferralsRequest {
        due_before: "tomorrow".into(),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("due_before"), "{err:?}");

    // Restart twice with time moved on: the rebuilt worker writes nothing again. A new
    // case, already past its due-soon instant on the moved clock, shows the restarted
    // worker has rebuilt and ticked.
    server.stop().await;
    for i in 0..2 {
        server_restart_check(&dir, &clock, i + 1, &dibao, &medical).await;
    }
}

async fn server_restart_check(
    dir: &tempfile::TempDir,
    clock: &ManualClock,
    household: usize,
    dibao: &pb::Referral,
    medical: &pb::Referral,
) {
    clock.advance(TimeDelta::days(1));
    let server = start(dir.path(), clock).await;
    let fresh = server
        .submit_handed_off(onecity_tests::application(household))
        .await;
    let first = fresh.referrals.first().expect("a referral");
    wait_for(&server, &first.referral_id, REFERRAL_DUE_SOON).await;
    assert_eq!(
        types(&deadline_events(&server, &dibao.referral_id).await),
        [REFERRAL_DUE_SOON, REFERRAL_OVERDUE, REFERRAL_ESCALATED]
    );
    assert!(deadline_events(&server, &medical.referral_id)
        .await
        .is_empty());
    server.stop().await;
}
