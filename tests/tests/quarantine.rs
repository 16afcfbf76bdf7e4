//! Quarantine, never stall: one undecodable event is quarantined (listed by the
//! `AdminService`) and every case after it is routed, with health SERVING throughout; a
//! department stream skips what it cannot decode.

use futures::StreamExt as _;
use onecity_proto::v1 as pb;
use onecity_tests::{application, submission, tokens, TestServer};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

const CASES: usize = 200;

/// Appends an event of `event_type` whose payload (`ff ff`) does not decode, as a service
/// principal may; returns its position.
async fn append_poison(server: &TestServer, event_type: &str) -> u64 {
    let new = pb::NewEvent {
        metadata: Default::default(),
        event_id: uuid::Uuid::now_v7().to_string(),
        event_type: event_type.into(),
        actor: "service:test".into(),
        causation_id: String::new(),
        payload: vec![0xff, 0xff],
    };
    server
        .log(tokens::SERVICE)
        .await
        .append(pb::AppendRequest {
            case_id: uuid::Uuid::now_v7().to_string(),
            expected: Some(pb::ExpectedVersion {
                kind: pb::ExpectedKind::Any as i32,
                version: 0,
            }),
            events: vec![new],
            commit_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .expect("append the poison event")
        .into_inner()
        .last_position
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_quarantined_and_every_later_case_is_routed() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let poison = append_poison(&server, "onecity.v1.ApplicationSubmitted").await;
    append_poison(&server, "onecity.v1.ReferralIssued").await;

    let intake = server.intake(tokens::TERMINAL).await;
    let case_ids: Vec<String> = futures::stream::iter(0..CASES)
        .map(|i| {
            let mut intake = intake.clone();
            async move {
                intake
                    .submit_application(submission(application(i)))
                    .await
                    .expect("submit")
                    .into_inner()
                    .case_id
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for case_id in &case_ids {
        let case = server.handed_off(case_id).await;
        assert!(!case.assessments.is_empty(), "case {case_id} assessed");
    }
    assert_eq!(server.health("").await, ServingStatus::Serving);

    // A department stream passes the undecodable referral event (skipped) on to the
    // referrals after it.
    let first = server
        .handoff(tokens::CIVIL_AFFAIRS)
        .await
        .stream_referrals(pb::StreamReferralsRequest {
            after_cursor: String::new(),
        })
        .await
        .expect("stream")
        .into_inner()
        .next()
        .await
        .expect("a referral")
        .expect("the stream does not fail");
    assert!(first.referral.is_some());

    let mut admin = server.admin(tokens::ADMIN).await;
    let listed = admin
        .list_quarantined(pb::ListQuarantinedRequest {})
        .await
        .expect("list")
        .into_inner()
        .events;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].position, poison);
    assert_eq!(listed[0].consumer, "assessment");
    assert_eq!(listed[0].event_type, "onecity.v1.ApplicationSubmitted");

    // Still poison: the retry fails and it stays listed.
    let err = admin
        .retry_quarantined(pb::RetryQuarantinedRequest {
            position: poison,
            consumer: String::new(),
        })
        .await
        .expect_err("still poison");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let listed = admin
        .list_quarantined(pb::ListQuarantinedRequest {})
        .await
        .expect("list")
        .into_inner()
        .events;
    assert_eq!(listed.len(), 1);

    // Nothing quarantined there: NOT_FOUND. Not an admin: PERMISSION_DENIED.
    let err = admin
        .retry_quarantined(pb::RetryQuarantinedRequest {
            position: poison + 1,
            consumer: String::new(),
        })
        .await
        .expect_err("not quarantined");
    assert_eq!(err.code(), Code::NotFound);
    let err = server
        .admin(tokens::SERVICE)
        .await
        .list_quarantined(pb::ListQuarantinedRequest {})
        .await
        .expect_err("service is not admin");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(server.health("").await, ServingStatus::Serving);
    server.stop().await;
}
