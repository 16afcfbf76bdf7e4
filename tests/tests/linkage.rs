//! The linkage over gRPC: a department's recognition decision reaches the linked
//! referrals (basis updated or referral cancelled with the reason, on their own unit's
//! stream only), and a case whose public referrals all ended gets one charity referral
//! when the household consented, none otherwise (and closes).

use std::time::Duration;

use futures::StreamExt;
use onecity_proto::v1 as pb;
use onecity_tests::{decide, referral, sample_application, tokens, TestServer};

const IDLE: Duration = Duration::from_secs(30);

fn linked_event_count(case: &pb::Case) -> usize {
    case.events
        .iter()
        .filter(|e| e.event_type == "onecity.v1.RecognitionLinked")
        .count()
}

/// Reads `stream` until a message for `referral_id` satisfies `done`.
async fn stream_until(
    stream: &mut tonic::Streaming<pb::StreamReferralsResponse>,
    unit: &str,
    referral_id: &str,
    done: impl Fn(&pb::Referral) -> bool,
) -> pb::Referral {
    loop {
        let msg = tokio::time::timeout(IDLE, stream.next())
            .await
            .expect("nothing new on the stream")
            .expect("stream ended")
            .expect("stream failed");
        let r = msg.referral.unwrap();
        assert_eq!(
            r.department_unit, unit,
            "a unit sees only its own referrals"
        );
        if r.referral_id == referral_id && done(&r) {
            return r;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_recognition_reaches_the_medical_unit() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let case = server.submit_handed_off(sample_application()).await;
    let case_id = case.case_id.clone();
    let dibao = referral(&case, pb::Programme::Dibao).clone();
    let extreme = referral(&case, pb::Programme::ExtremePoverty).clone();
    let medical = referral(&case, pb::Programme::Medical).clone();
    assert_eq!(medical.basis, pb::ReferralBasis::Predicted as i32);
    let mut medical_stream = server
        .handoff(tokens::MEDICAL)
        .await
        .stream_referrals(pb::StreamReferralsRequest {
            after_cursor: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut civil = server.handoff(tokens::CIVIL_AFFAIRS).await;
    let medical_unit = "medical-security@120103";

    // Dibao denied, extreme poverty still predicted: medical is still met, basis DENIED.
    civil
        .record_decision(decide(&dibao.referral_id, pb::Decision::Denied))
        .await
        .unwrap();
    let updated = stream_until(
        &mut medical_stream,
        medical_unit,
        &medical.referral_id,
        |r| r.basis == pb::ReferralBasis::RecognitionDenied as i32,
    )
    .await;
    assert_eq!(updated.state, pb::ReferralState::Issued as i32);
    assert_eq!(updated.basis_unit, "civil-affairs@120103");
    assert_eq!(updated.basis_decided_on, onecity_tests::today());

    // Extreme poverty denied too: nothing is left, medical is cancelled with the reason.
    civil
        .record_decision(decide(&extreme.referral_id, pb::Decision::Denied))
        .await
        .unwrap();
    let cancelled = stream_until(
        &mut medical_stream,
        medical_unit,
        &medical.referral_id,
        |r| r.state == pb::ReferralState::Cancelled as i32,
    )
    .await;
    assert_eq!(
        cancelled.cancel_reason,
        format!(
            "recognition denied by civil-affairs@120103 on {}",
            onecity_tests::today()
        )
    );
    // The medical unit's list shows it as well.
    let listed = server
        .handoff(tokens::MEDICAL)
        .await
        .list_referrals(pb::ListReferralsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .referrals;
    let listed = listed
        .iter()
        .find(|r| r.referral_id == medical.referral_id)
        .unwrap();
    assert_eq!(listed.cancel_reason, cancelled.cancel_reason);

    // Every public referral has ended and the household consented: one charity referral.
    let charity = server
        .wait_case(&case_id, |c| {
            c.referrals
                .iter()
                .any(|r| r.programme == pb::Programme::Charity as i32)
        })
        .await;
    assert_eq!(charity.status, pb::CaseStatus::Open as i32);
    let r = referral(&charity, pb::Programme::Charity);
    assert_eq!(r.department_unit, "charity@120103");
    assert!(
        r.summary.contains("dibao denied by civil-affairs@120103"),
        "{}",
        r.summary
    );
    let issued = server
        .whole_log()
        .await
        .iter()
        .filter(|e| e.case_id == case_id && e.event_type == "onecity.v1.ReferralIssued")
        .count();
    assert_eq!(issued, case.referrals.len() + 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_recognition_confirms_the_linked_referrals() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let case = server.submit_handed_off(sample_application()).await;
    let dibao = referral(&case, pb::Programme::Dibao).clone();
    server
        .handoff(tokens::CIVIL_AFFAIRS)
        .await
        .record_decision(decide(&dibao.referral_id, pb::Decision::Approved))
        .await
        .unwrap();
    let after = server
        .wait_case(&case.case_id, |c| linked_event_count(c) == 1)
        .await;
    let linked = [
        pb::Programme::Medical,
        pb::Programme::Education,
        pb::Programme::Housing,
        pb::Programme::Employment,
    ];
    for p in linked {
        let r = referral(&after, p);
        assert_eq!(
            r.basis,
            pb::ReferralBasis::RecognitionConfirmed as i32,
            "{p:?}"
        );
        assert_eq!(r.state, pb::ReferralState::Issued as i32);
    }
    // The housing unit reads the case and sees its own referral's basis, not the others'.
    let housing_view = server
        .intake(tokens::HOUSING)
        .await
        .get_case(pb::GetCaseRequest {
            case_id: case.case_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    assert!(housing_view
        .referrals
        .iter()
        .all(|r| r.department_unit == "housing@120103"));
    assert!(housing_view
        .events
        .iter()
        .all(|e| !e.summary.contains("medical")));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_consent_no_charity_and_the_case_closes() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut app = sample_application();
    app.consent_to_share = false;
    let case = server.submit_handed_off(app).await;
    let mut civil = server.handoff(tokens::CIVIL_AFFAIRS).await;
    for p in [pb::Programme::Dibao, pb::Programme::ExtremePoverty] {
        civil
            .record_decision(decide(
                &referral(&case, p).referral_id,
                pb::Decision::Denied,
            ))
            .await
            .unwrap();
    }
    let closed = server
        .wait_case(&case.case_id, |c| c.status == pb::CaseStatus::Closed as i32)
        .await;
    assert!(closed
        .referrals
        .iter()
        .all(|r| r.programme != pb::Programme::Charity as i32));
    assert_eq!(linked_event_count(&closed), 2);
    for r in &closed.referrals {
        assert!(
            r.state == pb::ReferralState::Denied as i32
                || r.state == pb::ReferralState::Cancelled as i32,
            "{r:?}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_linkage_follows_a_transferred_referral_to_its_new_unit() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let case = server.submit_handed_off(sample_application()).await;
    let dibao = referral(&case, pb::Programme::Dibao).clone();
    let extreme = referral(&case, pb::Programme::ExtremePoverty).clone();
    let medical = referral(&case, pb::Programme::Medical).clone();
    // The medical unit moves its referral to the medical unit where the household lives.
    let moved = server
        .handoff(tokens::MEDICAL)
        .await
        .transfer_referral(pb::TransferReferralRequest {
            referral_id: medical.referral_id.clone(),
            request_id: String::new(),
            to_unit: "medical-security@120101".into(),
            reason: "household lives in Heping".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .issued
        .unwrap();

    // Both recognitions denied: the medical programme is no longer met, and it is the
    // referral at the new unit that is cancelled; the transferred one stays as it was.
    let mut civil = server.handoff(tokens::CIVIL_AFFAIRS).await;
    for r in [&dibao, &extreme] {
        civil
            .record_decision(decide(&r.referral_id, pb::Decision::Denied))
            .await
            .unwrap();
    }
    let done = server
        .wait_case(&case.case_id, |c| linked_event_count(c) == 2)
        .await;
    let state_of = |id: &str| {
        done.referrals
            .iter()
            .find(|r| r.referral_id == id)
            .unwrap()
            .clone()
    };
    let successor = state_of(&moved.referral_id);
    assert_eq!(successor.state, pb::ReferralState::Cancelled as i32);
    assert!(
        successor
            .cancel_reason
            .contains("recognition denied by civil-affairs@120103"),
        "{}",
        successor.cancel_reason
    );
    assert_eq!(
        state_of(&medical.referral_id).state,
        pb::ReferralState::Transferred as i32
    );
    // No new medical referral was issued beside them.
    let medical_referrals = done
        .referrals
        .iter()
        .filter(|r| r.programme == pb::Programme::Medical as i32)
        .count();
    assert_eq!(medical_referrals, 2);
}
