//! Referral lifecycle over gRPC: invalid transitions, withdrawal, paging and streaming.

use futures::StreamExt;
use onecity_proto::v1 as pb;
use onecity_tests::{referral, sample_application, submission, tokens, TestServer};
use tonic::Code;

fn decide(id: &str, decision: pb::Decision, amount: i64) -> pb::RecordDecisionRequest {
    pb::RecordDecisionRequest {
        referral_id: id.into(),
        decision: decision as i32,
        amount_fen: amount,
        note: String::new(),
        request_id: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_transitions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let case = server.submit_handed_off(sample_application()).await;
    let dibao = referral(&case, pb::Programme::Dibao);
    let mut civil = server.handoff(tokens::CIVIL_AFFAIRS).await;

    for (req, field) in [
        (
            decide(&dibao.referral_id, pb::Decision::Unspecified, 0),
            "decision",
        ),
        (
            decide(&dibao.referral_id, pb::Decision::Approved, -1),
            "amount_fen",
        ),
        (
            decide(&dibao.referral_id, pb::Decision::Denied, 5),
            "amount_fen",
        ),
        (
            pb::RecordDecisionRequest {
                note: "n".repeat(2001),
                ..decide(&dibao.referral_id, pb::Decision::Denied, 0)
            },
            "note",
        ),
        (decide("not-a-uuid", pb::Decision::Denied, 0), "referral_id"),
    ] {
        let err = civil.record_decision(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains(field), "{field}: {}", err.message());
    }
    let err = civil
        .record_decision(decide(
            &uuid::Uuid::now_v7().to_string(),
            pb::Decision::Denied,
            0,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let ack = pb::AcknowledgeReferralRequest {
        referral_id: dibao.referral_id.clone(),
        request_id: String::new(),
    };
    civil.acknowledge_referral(ack.clone()).await.unwrap();
    // Acknowledging again is harmless and changes nothing.
    let head = server.head().await;
    let again = civil
        .acknowledge_referral(ack.clone())
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(again.state, pb::ReferralState::Acknowledged as i32);
    assert_eq!(server.head().await, head);
    civil
        .record_decision(decide(&dibao.referral_id, pb::Decision::Approved, 12_300))
        .await
        .unwrap();
    let err = civil
        .record_decision(decide(&dibao.referral_id, pb::Decision::Denied, 0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "deciding twice");
    let err = civil.acknowledge_referral(ack).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "acknowledging a decided referral"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawal_cancels_open_referrals() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut intake = server.intake(tokens::TERMINAL).await;
    let case = server.submit_handed_off(sample_application()).await;
    let case_id = case.case_id.clone();
    let dibao = referral(&case, pb::Programme::Dibao);
    let mut civil = server.handoff(tokens::CIVIL_AFFAIRS).await;
    civil
        .record_decision(decide(&dibao.referral_id, pb::Decision::Approved, 1_000))
        .await
        .unwrap();

    let withdraw = pb::WithdrawApplicationRequest {
        case_id: case_id.clone(),
        reason: "moved away".into(),
        request_id: String::new(),
    };
    let err = server
        .intake(tokens::CIVIL_AFFAIRS)
        .await
        .withdraw_application(withdraw.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let after = intake
        .withdraw_application(withdraw.clone())
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    assert_eq!(after.status, pb::CaseStatus::Withdrawn as i32);
    for r in &after.referrals {
        let want = if r.referral_id == dibao.referral_id {
            pb::ReferralState::Approved
        } else {
            pb::ReferralState::Cancelled
        };
        assert_eq!(
            r.state, want as i32,
            "decided referrals stay decided, open ones are cancelled"
        );
    }
    // Withdrawing again changes nothing; acting on a cancelled referral is refused.
    let head = server.head().await;
    intake.withdraw_application(withdraw).await.unwrap();
    assert_eq!(server.head().await, head);
    let other = after.referrals.iter().find(|r| {
        r.department_unit == "civil-affairs@120103" && r.referral_id != dibao.referral_id
    });
    if let Some(other) = other {
        let err = civil
            .record_decision(decide(&other.referral_id, pb::Decision::Denied, 0))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
    }
    let cancelled = civil
        .list_referrals(pb::ListReferralsRequest {
            state: pb::ReferralState::Cancelled as i32,
            page_size: 0,
            page_token: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(cancelled
        .referrals
        .iter()
        .all(|r| r.state == pb::ReferralState::Cancelled as i32));
    assert_eq!(
        cancelled.referrals.len(),
        after
            .referrals
            .iter()
            .filter(|r| r.department_unit == "civil-affairs@120103"
                && r.state == pb::ReferralState::Cancelled as i32)
            .count()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrals_page_and_stream_resumably() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut intake = server.intake(tokens::TERMINAL).await;
    let mut cases = Vec::new();
    for _ in 0..5 {
        let id = intake
            .submit_application(submission(sample_application()))
            .await
            .unwrap()
            .into_inner()
            .case_id;
        cases.push(id);
    }
    for c in &cases {
        server.handed_off(c).await;
    }
    let mut civil = server.handoff(tokens::CIVIL_AFFAIRS).await;
    // Page through in pages of 3.
    let mut token = String::new();
    let mut paged = Vec::new();
    loop {
        let page = civil
            .list_referrals(pb::ListReferralsRequest {
                state: 0,
                page_size: 3,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.referrals.len() <= 3);
        paged.extend(page.referrals);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let per_case = paged.len() / cases.len();
    assert!(per_case >= 1);
    assert_eq!(paged.len(), per_case * cases.len());
    let mut ids: Vec<_> = paged.iter().map(|r| r.referral_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), paged.len(), "no referral twice across pages");
    let err = civil
        .list_referrals(pb::ListReferralsRequest {
            state: 0,
            page_size: 501,
            page_token: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Stream: backlog, then resume after a cursor, then live.
    let mut stream = civil
        .stream_referrals(pb::StreamReferralsRequest {
            after_cursor: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while got.len() < paged.len() {
        got.push(stream.next().await.unwrap().unwrap());
    }
    assert!(got
        .iter()
        .all(|m| m.referral.as_ref().unwrap().department_unit == "civil-affairs@120103"));
    let cursor = got[1].cursor.clone();
    let mut resumed = civil
        .stream_referrals(pb::StreamReferralsRequest {
            after_cursor: cursor,
        })
        .await
        .unwrap()
        .into_inner();
    let third = resumed.next().await.unwrap().unwrap();
    assert_eq!(
        third.referral.unwrap().referral_id,
        got[2].referral.as_ref().unwrap().referral_id
    );
    let first = got[0].referral.clone().unwrap();
    civil
        .acknowledge_referral(pb::AcknowledgeReferralRequest {
            referral_id: first.referral_id.clone(),
            request_id: String::new(),
        })
        .await
        .unwrap();
    let live = stream.next().await.unwrap().unwrap().referral.unwrap();
    assert_eq!(live.referral_id, first.referral_id);
    assert_eq!(live.state, pb::ReferralState::Acknowledged as i32);
    server.stop().await;
}
