//! Issue 13 over gRPC: an idempotency key means one request (a reuse for other content is
//! FAILED_PRECONDITION and writes nothing, a retry gets the original result), the raw log
//! is writable by service principals only, and the limits of a public service (message
//! size, free text) answer with their codes.

use onecity_proto::v1 as pb;
use onecity_tests::{referral, sample_application, submission, tokens, TestServer};
use tonic::Code;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_reused_for_another_application_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut intake = server.intake(tokens::TERMINAL).await;
    let req = submission(sample_application());
    let first = intake
        .submit_application(req.clone())
        .await
        .unwrap()
        .into_inner();
    server.handed_off(&first.case_id).await;
    let head = server.head().await;

    let mut other = req.clone();
    other.application.as_mut().unwrap().members[1].name = "李娜娜".into();
    let err = intake.submit_application(other).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message()
            .contains("was used for a different application"),
        "{err:?}"
    );
    assert_eq!(server.head().await, head);

    let again = intake.submit_application(req).await.unwrap().into_inner();
    assert!(again.duplicate);
    assert_eq!(again.case_id, first.case_id);
    assert_eq!(server.head().await, head);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_decision_returns_the_original_referral() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let case = server.submit_handed_off(sample_application()).await;
    let dibao = referral(&case, pb::Programme::Dibao);
    let mut civil = server.handoff(tokens::CIVIL_AFFAIRS).await;
    let decide = pb::RecordDecisionRequest {
        referral_id: dibao.referral_id.clone(),
        decision: pb::Decision::Approved as i32,
        amount_fen: 42_000,
        note: "home visit done".into(),
        request_id: "decision-7".into(),
    };
    let first = civil
        .record_decision(decide.clone())
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(first.state, pb::ReferralState::Approved as i32);
    // The linkage worker answers the dibao decision with a commit of its own: wait for it,
    // so the head below counts only what the retries could write.
    let mut intake = server.intake(tokens::ADMIN).await;
    let mut watch = intake
        .watch_case(pb::WatchCaseRequest {
            case_id: case.case_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    loop {
        let next = tokio::time::timeout(std::time::Duration::from_secs(30), watch.message())
            .await
            .expect("the linkage step did not come")
            .unwrap()
            .expect("watch ended");
        if next
            .event
            .is_some_and(|e| e.event_type == "onecity.v1.RecognitionLinked")
        {
            break;
        }
    }
    let head = server.head().await;

    let again = civil
        .record_decision(decide.clone())
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(again, first);

    let err = civil
        .record_decision(pb::RecordDecisionRequest {
            amount_fen: 41_000,
            ..decide.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("different request"), "{err:?}");

    // Without a request id a second decision is refused as before.
    let err = civil
        .record_decision(pb::RecordDecisionRequest {
            request_id: String::new(),
            ..decide
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("already decided"), "{err:?}");
    assert_eq!(server.head().await, head);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_service_principals_write_the_raw_log() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let append = || pb::AppendRequest {
        case_id: Uuid::now_v7().to_string(),
        expected: Some(pb::ExpectedVersion {
            kind: pb::ExpectedKind::NoStream as i32,
            version: 0,
        }),
        events: vec![pb::NewEvent {
            metadata: Default::default(),
            event_id: Uuid::now_v7().to_string(),
            event_type: "onecity.test.Probe".into(),
            actor: "test".into(),
            causation_id: String::new(),
            payload: vec![1, 2, 3],
        }],
        commit_id: Uuid::now_v7().to_string(),
    };
    let checkpoint = pb::SaveCheckpointRequest {
        consumer: "probe".into(),
        position: 1,
    };
    let head = server.head().await;
    let mut admin = server.log(tokens::ADMIN).await;
    let err = admin.append(append()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = admin.save_checkpoint(checkpoint.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(server.head().await, head);
    // Reads stay open to admins.
    admin.get_head(pb::GetHeadRequest {}).await.unwrap();

    let mut service = server.log(tokens::SERVICE).await;
    let written = service.append(append()).await.unwrap().into_inner();
    assert!(!written.deduplicated);
    // The log stamps the principal it authenticated on the commit (the request has no
    // field to name another).
    let stored = service
        .read_all(pb::ReadAllRequest {
            from_position: written.first_position,
            limit: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(stored[0].appended_by, "service:demo-service");
    service.save_checkpoint(checkpoint).await.unwrap();
    assert_eq!(server.head().await, head + 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_and_formatting_characters_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut intake = server.intake(tokens::TERMINAL).await;
    let head = server.head().await;

    let mut huge = submission(sample_application());
    huge.application.as_mut().unwrap().contact_phone = "9".repeat(2 * 1024 * 1024);
    let err = intake.submit_application(huge).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{err:?}"
    );

    for (edit, field) in [
        (
            Box::new(|a: &mut pb::Application| a.members[0].name = "张\u{202E}伟".into())
                as Box<dyn Fn(&mut pb::Application)>,
            "application.members[0].name",
        ),
        (
            Box::new(|a: &mut pb::Application| a.members[1].name = " \u{3000} ".into()),
            "application.members[1].name",
        ),
        (
            Box::new(|a: &mut pb::Application| a.contact_phone = "138\u{1b}[2J".into()),
            "application.contact_phone",
        ),
    ] {
        let mut req = submission(sample_application());
        edit(req.application.as_mut().unwrap());
        let err = intake.submit_application(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(field), "{field}: {err:?}");
    }
    assert_eq!(server.head().await, head);
    server.stop().await;
}

/// One principal holds at most `max_streams_per_principal` streams open, `WatchCase` and
/// `StreamReferrals` together; beyond it `RESOURCE_EXHAUSTED`. Another principal is not
/// affected, and a stream the caller closes frees its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_flood_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), |c| c.max_streams_per_principal = 2).await;
    // An open case (its referrals wait for decisions), so its watch stays open.
    let case = server.submit_handed_off(sample_application()).await;
    assert_eq!(case.status, pb::CaseStatus::Open as i32);
    let watch = || pb::WatchCaseRequest {
        case_id: case.case_id.clone(),
    };

    let mut admin_intake = server.intake(tokens::ADMIN).await;
    let first = admin_intake.watch_case(watch()).await.unwrap().into_inner();
    let mut admin_handoff = server.handoff(tokens::ADMIN).await;
    let _second = admin_handoff
        .stream_referrals(pb::StreamReferralsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let err = admin_intake.watch_case(watch()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let err = admin_handoff
        .stream_referrals(pb::StreamReferralsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    // Someone else's streams are their own.
    let _terminal = server
        .intake(tokens::TERMINAL)
        .await
        .watch_case(watch())
        .await
        .unwrap();

    // Closing a stream frees its slot once the server sees the stream gone.
    drop(first);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match admin_intake.watch_case(watch()).await {
            Ok(_) => break,
            Err(e) if e.code() == Code::ResourceExhausted => {
                assert!(tokio::time::Instant::now() < deadline, "slot never freed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}
