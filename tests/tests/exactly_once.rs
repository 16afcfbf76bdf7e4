//! Exactly once across worker restarts: whatever point the workers are stopped at, and
//! even when they replay the whole log (as after a crash between writing and saving a
//! checkpoint), each case is assessed once and each (case, programme) referred once.

use onecity_proto::v1 as pb;
use onecity_tests::{intake, sample_application, submission, tokens, Routed, TestServer};

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
