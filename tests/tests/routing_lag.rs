//! The routing lag is visible: `AdminService.GetRoutingLag` reports every routing worker
//! checkpoint (role and partition) against the log's head, and who holds its partition.

use std::time::Duration;

use onecity_proto::v1 as pb;
use onecity_tests::{sample_application, submission, tokens, TestServer};

async fn lag(server: &TestServer) -> Vec<pb::ConsumerLag> {
    server
        .admin(tokens::ADMIN)
        .await
        .get_routing_lag(pb::GetRoutingLagRequest {})
        .await
        .expect("routing lag")
        .into_inner()
        .consumers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routing_lag_goes_to_zero_once_the_workers_have_routed() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let consumers = lag(&server).await;
    let names: Vec<&str> = consumers.iter().map(|c| c.consumer.as_str()).collect();
    assert_eq!(names, ["assessment", "handoff"], "{consumers:?}");

    let mut intake = server.intake(tokens::TERMINAL).await;
    let mut cases = Vec::new();
    for _ in 0..5 {
        let case_id = intake
            .submit_application(submission(sample_application()))
            .await
            .expect("submit")
            .into_inner()
            .case_id;
        cases.push(case_id);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let consumers = lag(&server).await;
        let head = server.head().await;
        if consumers.iter().all(|c| c.lag == 0) {
            for c in &consumers {
                assert!(c.checkpoint > 0 && c.head > 0 && c.head <= head, "{c:?}");
                assert!(
                    !c.holder.is_empty(),
                    "a worker of this process holds it: {c:?}"
                );
            }
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still behind after 30 s: {consumers:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for case_id in &cases {
        server.handed_off(case_id).await;
    }
    // Only admins may ask.
    let refused = server
        .admin(tokens::TERMINAL)
        .await
        .get_routing_lag(pb::GetRoutingLagRequest {})
        .await
        .expect_err("not an admin");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    server.stop().await;
}
