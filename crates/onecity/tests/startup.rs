//! A role started before its JetStream cluster is up waits for it instead of exiting:
//! meanwhile it listens, says NOT_SERVING and answers calls UNAVAILABLE; once the log is
//! reachable it serves and routes cases.

use std::time::Duration;

use onecity::config::{LogSpec, Role};
use onecity_eventlog_jetstream::testing::{free_port, NatsServer};
use onecity_tests::{sample_application, submission, tokens, TestServer};
use tonic_health::pb::health_check_response::ServingStatus;

/// The services this process serves, and `""` (the whole server).
const SERVICES: [&str; 5] = [
    "",
    "onecity.v1.IntakeService",
    "onecity.v1.EligibilityService",
    "onecity.v1.HandoffService",
    "onecity.v1.AdminService",
];

/// Retries back off to 5 s between attempts, and a fresh stream takes a moment.
const DEADLINE: Duration = Duration::from_secs(60);

async fn all_are(server: &TestServer, want: ServingStatus) {
    for service in SERVICES {
        assert_eq!(server.health(service).await, want, "{service:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_started_before_any_nats_node_serves_once_the_cluster_is_up() {
    onecity_eventlog_jetstream::testing::find_binary().expect("nats-server installed");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let server = TestServer::start_with(dir.path(), |c| {
        c.log = Some(LogSpec::JetStream {
            urls: format!("nats://127.0.0.1:{port}"),
            replicas: 1,
            prefix: "onecity".into(),
        });
        c.roles = vec![Role::Intake, Role::Eligibility, Role::Handoff];
    })
    .await;

    // Alive but not ready: health answers, the role services refuse retryably.
    all_are(&server, ServingStatus::NotServing).await;
    let mut intake = server.intake(tokens::TERMINAL).await;
    let refused = intake
        .submit_application(submission(sample_application()))
        .await
        .expect_err("no log yet");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("event log"), "{refused:?}");

    let nats = tokio::task::spawn_blocking(move || NatsServer::start_on(port))
        .await
        .unwrap()
        .expect("nats-server starts");

    let deadline = tokio::time::Instant::now() + DEADLINE;
    while server.health("").await != ServingStatus::Serving {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not serving {DEADLINE:?} after nats-server came up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    all_are(&server, ServingStatus::Serving).await;

    let case = server.submit_handed_off(sample_application()).await;
    assert!(!case.assessments.is_empty(), "assessed: {case:?}");
    server.stop().await;
    drop(nats);
}

/// Shutdown while the log is still out of reach ends the process cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_waiting_for_the_log_ends_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let server = TestServer::start_with(dir.path(), |c| {
        c.log = Some(LogSpec::JetStream {
            urls: format!("nats://127.0.0.1:{port}"),
            replicas: 1,
            prefix: "onecity".into(),
        });
        c.roles = vec![Role::Intake];
    })
    .await;
    all_are_intake_not_serving(&server).await;
    tokio::time::timeout(Duration::from_secs(20), server.stop())
        .await
        .expect("stops while waiting for the log");
}

async fn all_are_intake_not_serving(server: &TestServer) {
    for service in ["", "onecity.v1.IntakeService", "onecity.v1.AdminService"] {
        assert_eq!(
            server.health(service).await,
            ServingStatus::NotServing,
            "{service:?}"
        );
    }
}
