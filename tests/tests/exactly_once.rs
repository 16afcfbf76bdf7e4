//! Exactly once across worker restarts: whatever point the workers are stopped at, and
//! even when they replay the whole log (as after a crash between writing and saving a
//! checkpoint), each case is assessed once and each (case, programme) referred once; each
//! recognition decision is linked once, and a dead end gets one charity referral.

use std::collections::HashMap;

use futures::StreamExt;
use onecity_proto::v1 as pb;
use onecity_tests::{intake, sample_application, submission, tokens, Routed, TestServer};

/// Rewinds the workers' checkpoints to the start of the log, so they replay it all.
async fn replay_from_start(server: &TestServer) {
    let mut log = server.log(tokens::SERVICE).await;
    for consumer in ["assessment", "handoff", "linkage"] {
        log.save_checkpoint(pb::SaveCheckpointRequest {
            consumer: consumer.into(),
            position: 0,
        })
        .await
        .unwrap();
    }
}

/// Checks the invariants over the whole log and returns the number of cases.
fn check_exactly_once(events: &[pb::RecordedEvent]) -> usize {
    let routed = Routed::of(events);
    let submitted: usize = routed.submitted.values().sum();
    assert_eq!(routed.assessed.len(), submitted, "every case assessed");
    assert!(
        routed.assessed.values().all(|n| *n == 1),
        "a case assessed twice"
    );
    assert!(
        routed.referred.values().all(|n| *n == 1),
        "a (case, programme) referred twice"
    );
    submitted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_and_full_replays_never_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let mut case_ids = Vec::new();
    for round in 0..3 {
        let server = TestServer::start(dir.path()).await;
        // Submit a burst and stop at once: the workers are stopped mid-stream.
        let submits: Vec<_> = (0..20)
            .map(|_| {
                let url = server.url.clone();
                tokio::spawn(async move {
                    let ch = tonic::transport::Channel::from_shared(url)
                        .unwrap()
                        .connect()
                        .await
                        .unwrap();
                    let mut c = intake(ch, tokens::TERMINAL);
                    c.submit_application(submission(sample_application()))
                        .await
                        .unwrap()
                        .into_inner()
                        .case_id
                })
            })
            .collect();
        for s in submits {
            case_ids.push(s.await.unwrap());
        }
        if round == 1 {
            // As if both workers crashed after writing but before checkpointing, forever.
            replay_from_start(&server).await;
        }
        server.stop().await;
    }
    let server = TestServer::start(dir.path()).await;
    for c in &case_ids {
        server.handed_off(c).await;
    }
    let events = server.whole_log().await;
    assert_eq!(check_exactly_once(&events), case_ids.len());
    // Replay everything once more from the start and check again.
    replay_from_start(&server).await;
    server.stop().await;
    let server = TestServer::start(dir.path()).await;
    // A new submission goes through the replaying workers: once it is handed off, the
    // replay has passed every older case.
    let last = server
        .intake(tokens::TERMINAL)
        .await
        .submit_application(submission(sample_application()))
        .await
        .unwrap()
        .into_inner()
        .case_id;
    server.handed_off(&last).await;
    let events = server.whole_log().await;
    assert_eq!(check_exactly_once(&events), case_ids.len() + 1);
    server.stop().await;
}

/// The deadline worker across restarts: its state is rebuilt from the log each time and
/// the server is stopped while it writes, yet each referral gets each deadline event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_events_are_written_once_across_restarts() {
    use onecity_domain::events::{
        CaseEvent, REFERRAL_DUE_SOON, REFERRAL_ESCALATED, REFERRAL_OVERDUE,
    };
    use onecity_service::clock::{ManualClock, SharedClock};
    use std::collections::BTreeMap;

    let dir = tempfile::tempdir().unwrap();
    // Far enough ahead that every referral is due soon, overdue and escalated at once.
    let clock = ManualClock::new(chrono::Utc::now() + chrono::TimeDelta::days(90));
    let start = |clock: &ManualClock| {
        let clock = SharedClock(std::sync::Arc::new(clock.clone()));
        TestServer::start_with(dir.path(), move |c| {
            c.clock = clock;
            c.deadline_tick_ms = 5;
        })
    };
    let mut case_ids = Vec::new();
    for _ in 0..3 {
        let server = start(&clock).await;
        let mut c = server.intake(tokens::TERMINAL).await;
        for _ in 0..5 {
            case_ids.push(
                c.submit_application(submission(sample_application()))
                    .await
                    .unwrap()
                    .into_inner()
                    .case_id,
            );
        }
        server.stop().await;
    }
    let server = start(&clock).await;
    let mut referrals = Vec::new();
    for c in &case_ids {
        referrals.extend(server.handed_off(c).await.referrals);
    }
    let counts = |events: &[pb::RecordedEvent]| {
        let mut n: BTreeMap<(String, String), usize> = BTreeMap::new();
        for e in events {
            if ![REFERRAL_DUE_SOON, REFERRAL_OVERDUE, REFERRAL_ESCALATED]
                .contains(&e.event_type.as_str())
            {
                continue;
            }
            let event = CaseEvent::decode(&e.event_type, &e.payload)
                .unwrap()
                .unwrap();
            let r = event.referral().unwrap();
            *n.entry((r.referral_id.clone(), e.event_type.clone()))
                .or_default() += 1;
        }
        n
    };
    let expected = referrals.len() * 3;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let seen = loop {
        let seen = counts(&server.whole_log().await);
        if seen.len() == expected {
            break seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {expected} deadline events",
            seen.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(
        seen.values().all(|n| *n == 1),
        "a deadline event written twice"
    );
    server.stop().await;
}

/// Watches `case_id` until it holds `n` events of `event_type`; panics when it stays
/// silent for 30 s before that.
async fn wait_for(server: &TestServer, case_id: &str, event_type: &str, n: usize) {
    let mut intake = server.intake(tokens::ADMIN).await;
    let mut watch = intake
        .watch_case(pb::WatchCaseRequest {
            case_id: case_id.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = 0;
    while seen < n {
        let next = tokio::time::timeout(std::time::Duration::from_secs(30), watch.next())
            .await
            .unwrap_or_else(|_| panic!("case {case_id}: {seen} of {n} {event_type}"))
            .expect("watch ended")
            .expect("watch failed");
        if next.event.is_some_and(|e| e.event_type == event_type) {
            seen += 1;
        }
    }
}

/// Counts `event_type` per case.
fn per_case(events: &[pb::RecordedEvent], event_type: &str) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for e in events.iter().filter(|e| e.event_type == event_type) {
        *n.entry(e.case_id.clone()).or_insert(0) += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linkage_restarts_and_replays_never_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut cases = Vec::new();
    for _ in 0..6 {
        cases.push(server.submit_handed_off(sample_application()).await);
    }
    let mut civil = server.handoff(tokens::CIVIL_AFFAIRS).await;
    // Both recognitions denied for every case, and the server stopped at once: the
    // linkage worker is stopped mid-stream.
    for case in &cases {
        for p in [pb::Programme::Dibao, pb::Programme::ExtremePoverty] {
            let id = onecity_tests::referral(case, p).referral_id.clone();
            civil
                .record_decision(pb::RecordDecisionRequest {
                    referral_id: id,
                    decision: pb::Decision::Denied as i32,
                    amount_fen: 0,
                    note: String::new(),
                    request_id: String::new(),
                })
                .await
                .unwrap();
        }
    }
    server.stop().await;
    // As if the worker crashed after writing but before checkpointing, twice.
    for _ in 0..2 {
        let server = TestServer::start(dir.path()).await;
        replay_from_start(&server).await;
        server.stop().await;
    }
    let server = TestServer::start(dir.path()).await;
    for case in &cases {
        wait_for(&server, &case.case_id, "onecity.v1.RecognitionLinked", 2).await;
    }
    // A last case goes through after the replay: once it is linked, the replay has
    // passed every older decision.
    let last = server.submit_handed_off(sample_application()).await;
    let id = onecity_tests::referral(&last, pb::Programme::Dibao)
        .referral_id
        .clone();
    server
        .handoff(tokens::CIVIL_AFFAIRS)
        .await
        .record_decision(pb::RecordDecisionRequest {
            referral_id: id,
            decision: pb::Decision::Approved as i32,
            amount_fen: 1,
            note: String::new(),
            request_id: String::new(),
        })
        .await
        .unwrap();
    wait_for(&server, &last.case_id, "onecity.v1.RecognitionLinked", 1).await;
    for case in &cases {
        wait_for(
            &server,
            &case.case_id,
            "onecity.v1.ReferralIssued",
            case.referrals.len() + 1,
        )
        .await;
    }
    let events = server.whole_log().await;
    check_exactly_once(&events);
    let linked = per_case(&events, "onecity.v1.RecognitionLinked");
    let updated = per_case(&events, "onecity.v1.ReferralBasisUpdated");
    let cancelled = per_case(&events, "onecity.v1.ReferralCancelled");
    for case in &cases {
        assert_eq!(linked[&case.case_id], 2, "each decision linked once");
        // Dibao's denial updates the four linked referrals, extreme poverty's cancels them.
        assert_eq!(updated[&case.case_id], 4);
        assert_eq!(cancelled[&case.case_id], 4);
    }
    assert_eq!(linked[&last.case_id], 1);
    server.stop().await;
}
