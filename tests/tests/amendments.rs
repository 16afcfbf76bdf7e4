//! Changes of circumstances over gRPC (`AmendApplication`): the assessment worker
//! re-assesses the case under the policy in force on the amendment date and the referrals
//! follow in the same commit: an open referral no longer met is cancelled with the reason,
//! a programme newly met gets a referral, a decided approval whose amount would change
//! goes to review (a closed case holding it re-opens). Bad input writes nothing; a retry
//! answers with the case and writes nothing either.

use onecity_domain::events::{
    CaseEvent, APPLICATION_AMENDED, ELIGIBILITY_REASSESSED, REVIEW_REQUESTED,
};
use onecity_proto::v1 as pb;
use onecity_tests::{
    decide, referral, sample_application, token_of, tokens, valid_id_number, TestServer,
};
use tonic::Code;
use tonic_types::StatusExt as _;

fn count(case: &pb::Case, event_type: &str) -> usize {
    case.events
        .iter()
        .filter(|e| e.event_type == event_type)
        .count()
}

/// The decoded events of `case_id` of `event_type`, in log order.
async fn events_of(server: &TestServer, case_id: &str, event_type: &str) -> Vec<CaseEvent> {
    server
        .whole_log()
        .await
        .into_iter()
        .filter(|e| e.case_id == case_id && e.event_type == event_type)
        .filter_map(|e| CaseEvent::decode(&e.event_type, &e.payload).unwrap())
        .collect()
}

fn amendment(
    case_id: &str,
    application: pb::Application,
    reason: &str,
) -> pb::AmendApplicationRequest {
    pb::AmendApplicationRequest {
        case_id: case_id.into(),
        request_id: uuid::Uuid::now_v7().to_string(),
        application: Some(application),
        reason: reason.into(),
    }
}

/// Amends at the Hexi terminal and waits until the amendment is re-assessed.
async fn amend_and_wait(
    server: &TestServer,
    request: pb::AmendApplicationRequest,
) -> (pb::AmendApplicationResponse, pb::Case) {
    let case_id = request.case_id.clone();
    let before = count(&server.case(&case_id).await, ELIGIBILITY_REASSESSED);
    let resp = server
        .intake(tokens::TERMINAL)
        .await
        .amend_application(request)
        .await
        .unwrap()
        .into_inner();
    let case = server
        .wait_case(&case_id, |c| count(c, ELIGIBILITY_REASSESSED) > before)
        .await;
    (resp, case)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn income_above_the_line_cancels_the_open_dibao_referral_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let app = sample_application();
    let case = server.submit_handed_off(app.clone()).await;
    let dibao = referral(&case, pb::Programme::Dibao).clone();
    assert_eq!(dibao.state, pb::ReferralState::Issued as i32);

    // The spouse now earns 6,000.00 yuan a month, and the child has an able supporter.
    let mut amended = app.clone();
    amended.members[1].monthly_income_fen = 600_000;
    amended.members[2].supporter = pb::Supporter::Able as i32;
    let reason = "spouse started a new job in November";
    let (resp, _) =
        amend_and_wait(&server, amendment(&case.case_id, amended.clone(), reason)).await;
    assert!(!resp.duplicate);
    let after = resp.case.unwrap();
    assert_eq!(count(&after, APPLICATION_AMENDED), 1);
    assert_eq!(
        after.application.unwrap().members[1].monthly_income_fen,
        600_000,
        "the case shows the application as amended"
    );

    let case = server
        .wait_case(&case.case_id, |c| {
            referral(c, pb::Programme::Dibao).state == pb::ReferralState::Cancelled as i32
        })
        .await;
    let cancelled = referral(&case, pb::Programme::Dibao);
    assert_eq!(
        cancelled.cancel_reason,
        format!("no longer met after the change of circumstances: {reason}")
    );
    // The current assessment is the re-assessment's, under the policy in force today.
    let dibao_now = case
        .assessments
        .iter()
        .find(|a| a.programme == pb::Programme::Dibao as i32)
        .unwrap();
    assert_eq!(dibao_now.outcome, pb::Outcome::Ineligible as i32);
    let reassessed = events_of(&server, &case.case_id, ELIGIBILITY_REASSESSED).await;
    let [CaseEvent::EligibilityReassessed(r)] = reassessed.as_slice() else {
        panic!("one re-assessment: {reassessed:?}");
    };
    assert_eq!(r.trigger, pb::ReassessmentTrigger::Amendment as i32);
    assert_eq!(r.previous_policy_version, "2025-07");
    assert_eq!(r.policy_version, dibao_now.policy_version);
    // The civil-affairs unit reads the amendment and the cancellation in the history; the
    // medical unit does not read civil affairs' cancellation.
    let civil = server
        .intake(tokens::CIVIL_AFFAIRS)
        .await
        .get_case(pb::GetCaseRequest {
            case_id: case.case_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    assert!(civil
        .events
        .iter()
        .any(|e| e.event_type == APPLICATION_AMENDED));
    assert!(civil.events.iter().any(|e| e
        .summary
        .contains("referral dibao cancelled: no longer met")));
    let medical = server
        .intake(tokens::MEDICAL)
        .await
        .get_case(pb::GetCaseRequest {
            case_id: case.case_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    assert!(!medical
        .events
        .iter()
        .any(|e| e.summary.contains("referral dibao")));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_member_added_gets_a_disability_subsidy_referral() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let app = sample_application();
    let case = server.submit_handed_off(app.clone()).await;
    assert!(case
        .referrals
        .iter()
        .all(|r| r.programme != pb::Programme::DisabilitySubsidy as i32));
    let issued_before = case.referrals.len();

    // The applicant's mother, 72 and physically disabled (grade 2), moves in.
    let mut amended = app.clone();
    let birth = chrono::NaiveDate::from_ymd_opt(1954, 4, 9).unwrap();
    let mut mother = amended.members[0].clone();
    mother.id_number = valid_id_number("120103", birth, 402);
    mother.name = "王芳".into();
    mother.birth_date = "1954-04-09".into();
    mother.relationship = pb::Relationship::Parent as i32;
    mother.employment = pb::Employment::NotInLabourForce as i32;
    mother.monthly_income_fen = 0;
    mother.disability = Some(pb::Disability {
        kind: pb::DisabilityKind::Physical as i32,
        grade: 2,
    });
    amended.members.push(mother.clone());
    let (_, case) = amend_and_wait(
        &server,
        amendment(&case.case_id, amended, "the applicant's mother moved in"),
    )
    .await;
    let subsidy = referral(&case, pb::Programme::DisabilitySubsidy);
    assert_eq!(subsidy.state, pb::ReferralState::Issued as i32);
    assert_eq!(
        subsidy.department_unit,
        "disabled-persons-federation@120103"
    );
    assert_eq!(subsidy.outcome, pb::Outcome::Eligible as i32);
    assert!(subsidy.assessed_amount_fen > 0);
    assert_eq!(subsidy.basis, pb::ReferralBasis::Predicted as i32);
    // Nothing else was issued or cancelled: the other programmes are still met.
    assert_eq!(case.referrals.len(), issued_before + 1);
    assert!(case
        .referrals
        .iter()
        .all(|r| r.state == pb::ReferralState::Issued as i32));
    // The unit sees it in its inbox.
    let listed = server
        .handoff(&token_of("disabled-persons-federation@120103"))
        .await
        .list_referrals(pb::ListReferralsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .referrals;
    assert!(listed.iter().any(|r| r.referral_id == subsidy.referral_id));
    // The person index learned the new member.
    let found = server
        .intake(tokens::TERMINAL)
        .await
        .find_cases(pb::FindCasesRequest {
            id_number: mother.id_number.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .cases;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].case_id, case.case_id);
    assert_eq!(found[0].relationship, pb::Relationship::Parent as i32);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_case_with_an_approval_reopens_and_the_approval_goes_to_review() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let app = sample_application();
    let case = server.submit_handed_off(app.clone()).await;
    let case_id = case.case_id.clone();
    let dibao = referral(&case, pb::Programme::Dibao).clone();

    // A closed case without an approval cannot be amended.
    // Both recognitions denied cancel the linked referrals; without consent no charity
    // referral follows, so the case closes.
    let mut private = sample_application();
    private.consent_to_share = false;
    let other = server.submit_handed_off(private).await;
    for programme in [pb::Programme::Dibao, pb::Programme::ExtremePoverty] {
        let r = referral(&other, programme);
        server
            .handoff(&token_of(&r.department_unit))
            .await
            .record_decision(decide(&r.referral_id, pb::Decision::Denied))
            .await
            .unwrap();
    }
    let head = server
        .wait_case(&other.case_id, |c| {
            c.status == pb::CaseStatus::Closed as i32
        })
        .await;
    assert_eq!(head.status, pb::CaseStatus::Closed as i32);
    let err = server
        .intake(tokens::TERMINAL)
        .await
        .amend_application(amendment(
            &other.case_id,
            other.application.clone().unwrap(),
            "x",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // Dibao approved, everything else denied: the case closes with the approval in force.
    for r in &case.referrals {
        let decision = if r.referral_id == dibao.referral_id {
            pb::Decision::Approved
        } else {
            pb::Decision::Denied
        };
        server
            .handoff(&token_of(&r.department_unit))
            .await
            .record_decision(decide(&r.referral_id, decision))
            .await
            .unwrap();
    }
    let closed = server
        .wait_case(&case_id, |c| c.status == pb::CaseStatus::Closed as i32)
        .await;
    let approved = referral(&closed, pb::Programme::Dibao).clone();
    assert_eq!(approved.state, pb::ReferralState::Approved as i32);

    // The spouse earns 2,500.00 instead of 2,000.00 yuan: still under the dibao line, with
    // another amount. The case re-opens and the approval goes to review at its unit.
    let mut amended = app.clone();
    amended.members[1].monthly_income_fen = 250_000;
    let (resp, case) = amend_and_wait(
        &server,
        amendment(&case_id, amended, "spouse's pay went up"),
    )
    .await;
    assert_eq!(
        resp.case.unwrap().status,
        pb::CaseStatus::Open as i32,
        "the amendment re-opens the closed case"
    );
    let review = case
        .referrals
        .iter()
        .find(|r| r.reviews == dibao.referral_id)
        .expect("a review referral");
    assert_eq!(review.department_unit, dibao.department_unit);
    assert_eq!(review.state, pb::ReferralState::Issued as i32);
    assert_eq!(review.outcome, pb::Outcome::Eligible as i32);
    let dibao_now = case
        .assessments
        .iter()
        .find(|a| a.programme == pb::Programme::Dibao as i32)
        .unwrap();
    assert_eq!(review.assessed_amount_fen, dibao_now.amount_fen);
    assert_ne!(review.assessed_amount_fen, approved.assessed_amount_fen);
    assert!(!review.due_at.is_empty());
    assert_eq!(case.status, pb::CaseStatus::Open as i32);
    let requested = events_of(&server, &case_id, REVIEW_REQUESTED).await;
    let [CaseEvent::ReviewRequested(rr)] = requested.as_slice() else {
        panic!("one review requested: {requested:?}");
    };
    assert_eq!(rr.referral_id, dibao.referral_id);
    assert_eq!(rr.review_referral_id, review.referral_id);
    assert_eq!(rr.cause, "change of circumstances: spouse's pay went up");
    // The denied programmes still predicted met are not issued again: the denials stand.
    assert_eq!(case.referrals.len(), closed.referrals.len() + 1);

    // The review is decided like a re-verification: its approval renews the recognition,
    // and the linkage closes the case again.
    server
        .handoff(tokens::CIVIL_AFFAIRS)
        .await
        .record_decision(decide(&review.referral_id, pb::Decision::Approved))
        .await
        .unwrap();
    server
        .wait_case(&case_id, |c| c.status == pb::CaseStatus::Closed as i32)
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_amendments_write_nothing_and_a_retry_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let app = sample_application();
    let case = server.submit_handed_off(app.clone()).await;
    let case_id = case.case_id.clone();
    let head = server.head().await;
    let mut terminal = server.intake(tokens::TERMINAL).await;

    let invalid = |field: &'static str, request: pb::AmendApplicationRequest| (field, request);
    let mut bad_id = app.clone();
    bad_id.members[0].id_number = "120103198003150019".into();
    let mut moved = app.clone();
    moved.district_code = "120101".into();
    let cases = [
        invalid("reason", amendment(&case_id, app.clone(), "")),
        invalid("reason", amendment(&case_id, app.clone(), "  ")),
        invalid(
            "application.members[0].id_number",
            amendment(&case_id, bad_id, "x"),
        ),
        invalid(
            "application.district_code",
            amendment(&case_id, moved, "moved"),
        ),
        invalid("case_id", amendment("not-a-uuid", app.clone(), "x")),
        invalid(
            "application",
            pb::AmendApplicationRequest {
                application: None,
                ..amendment(&case_id, app.clone(), "x")
            },
        ),
        invalid(
            "request_id",
            pb::AmendApplicationRequest {
                request_id: String::new(),
                ..amendment(&case_id, app.clone(), "x")
            },
        ),
    ];
    for (field, request) in cases {
        let err = terminal.amend_application(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        let violations = err
            .get_details_bad_request()
            .expect("bad request")
            .field_violations;
        assert_eq!(violations[0].field, field);
    }
    let err = terminal
        .amend_application(amendment(
            &uuid::Uuid::now_v7().to_string(),
            app.clone(),
            "x",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    for token in [tokens::CIVIL_AFFAIRS, tokens::ADMIN] {
        let err = server
            .intake(token)
            .await
            .amend_application(amendment(&case_id, app.clone(), "x"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{token}: {err:?}");
    }
    assert_eq!(server.head().await, head, "nothing was written");

    // A retry of the same request answers with the case and writes nothing more.
    let mut amended = app.clone();
    amended.members[1].monthly_income_fen = 210_000;
    let request = amendment(&case_id, amended, "pay rise");
    let (first, _) = amend_and_wait(&server, request.clone()).await;
    assert!(!first.duplicate);
    let again = terminal
        .amend_application(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(again.duplicate);
    // The same key for another amendment is refused.
    let err = terminal
        .amend_application(pb::AmendApplicationRequest {
            reason: "another reason".into(),
            ..request.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(
        events_of(&server, &case_id, APPLICATION_AMENDED)
            .await
            .len(),
        1
    );
    assert_eq!(
        events_of(&server, &case_id, ELIGIBILITY_REASSESSED)
            .await
            .len(),
        1
    );

    // A withdrawn case cannot be amended.
    terminal
        .withdraw_application(pb::WithdrawApplicationRequest {
            case_id: case_id.clone(),
            reason: "moved away".into(),
            request_id: String::new(),
        })
        .await
        .unwrap();
    let err = terminal
        .amend_application(amendment(&case_id, app.clone(), "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    server.stop().await;
}
