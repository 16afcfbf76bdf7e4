//! Exactly once across worker restarts: whatever point the workers are stopped at, and
//! even when they replay the whole log (as after a crash between writing and saving a
//! checkpoint), each case is assessed once and each (case, programme) referred once.

use std::collections::{BTreeMap, HashMap};

use onecity_domain::events::CaseEvent;
use onecity_proto::v1 as pb;
use onecity_tests::{sample_application, submission, tokens, TestServer};

async fn whole_log(server: &TestServer) -> Vec<pb::RecordedEvent> {
    let mut log = server.log(tokens::SERVICE).await;
    let mut out = Vec::new();
    loop {
        let page = log
            .read_all(pb::ReadAllRequest {
                from_position: out.len() as u64 + 1,
                limit: 1000,
            })
            .await
            .unwrap()
            .into_inner()
            .events;
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// Rewinds both workers' checkpoints to the start of the log, so they replay it all.
async fn replay_from_start(server: &TestServer) {
    let mut log = server.log(tokens::SERVICE).await;
    for consumer in ["assessment", "handoff"] {
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
    let mut assessed: HashMap<&str, usize> = HashMap::new();
    let mut referrals: BTreeMap<(&str, i32), usize> = BTreeMap::new();
    let mut submitted = 0;
    for e in events {
        match CaseEvent::decode(&e.event_type, &e.payload).unwrap() {
            Some(CaseEvent::ApplicationSubmitted(_)) => submitted += 1,
            Some(CaseEvent::EligibilityAssessed(_)) => {
                *assessed.entry(&e.case_id).or_default() += 1
            }
            Some(CaseEvent::ReferralIssued(r)) => {
                *referrals.entry((&e.case_id, r.programme)).or_default() += 1
            }
            _ => {}
        }
    }
    assert_eq!(assessed.len(), submitted, "every case assessed");
    assert!(assessed.values().all(|n| *n == 1), "a case assessed twice");
    assert!(
        referrals.values().all(|n| *n == 1),
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
                    let mut c = pb::intake_service_client::IntakeServiceClient::with_interceptor(
                        ch,
                        onecity_tests::Bearer::new(tokens::TERMINAL).unwrap(),
                    );
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
    let events = whole_log(&server).await;
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
    let events = whole_log(&server).await;
    assert_eq!(check_exactly_once(&events), case_ids.len() + 1);
    server.stop().await;
}
