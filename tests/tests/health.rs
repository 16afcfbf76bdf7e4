//! Health tells the truth: a log that refuses writes makes the server NOT_SERVING, for every
//! service and overall, until a write succeeds again; a log that cannot be reached, until it
//! answers again.

use onecity_tests::{sample_application, submission, tokens, FaultyLog, TestServer};
use tonic_health::pb::health_check_response::ServingStatus;

const SERVICES: [&str; 5] = [
    "",
    "onecity.v1.IntakeService",
    "onecity.v1.EligibilityService",
    "onecity.v1.HandoffService",
    "onecity.v1.EventLogService",
];

async fn all_are(server: &TestServer, want: ServingStatus) {
    for service in SERVICES {
        assert_eq!(server.health(service).await, want, "{service:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_failure_turns_health_not_serving() {
    let dir = tempfile::tempdir().unwrap();
    let log = FaultyLog::sled(&dir.path().join("log"));
    let server = TestServer::start_with_log(dir.path(), log.clone()).await;
    all_are(&server, ServingStatus::Serving).await;

    log.fail_appends(true);
    let mut intake = server.intake(tokens::TERMINAL).await;
    intake
        .submit_application(submission(sample_application()))
        .await
        .expect_err("the log refuses writes");
    all_are(&server, ServingStatus::NotServing).await;

    log.fail_appends(false);
    let case_id = intake
        .submit_application(submission(sample_application()))
        .await
        .expect("the log accepts writes again")
        .into_inner()
        .case_id;
    all_are(&server, ServingStatus::Serving).await;
    server.handed_off(&case_id).await;
    server.stop().await;
}

/// A log whose servers are all down (every call `Unavailable`) makes the server NOT_SERVING;
/// once it answers again, the server's own probe notices (no request has to succeed first,
/// since a NOT_SERVING server gets none) and it serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_log_turns_health_not_serving_until_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let log = FaultyLog::sled(&dir.path().join("log"));
    let server = TestServer::start_with_log(dir.path(), log.clone()).await;
    all_are(&server, ServingStatus::Serving).await;

    log.unreachable(true);
    let mut intake = server.intake(tokens::TERMINAL).await;
    let err = intake
        .submit_application(submission(sample_application()))
        .await
        .expect_err("the log cannot be reached");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    all_are(&server, ServingStatus::NotServing).await;

    log.unreachable(false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server.health("").await != ServingStatus::Serving {
        assert!(
            std::time::Instant::now() < deadline,
            "health did not recover once the log answered"
        );
        tokio::task::yield_now().await;
    }
    all_are(&server, ServingStatus::Serving).await;
    let case_id = intake
        .submit_application(submission(sample_application()))
        .await
        .expect("the log answers again")
        .into_inner()
        .case_id;
    server.handed_off(&case_id).await;
    server.stop().await;
}
