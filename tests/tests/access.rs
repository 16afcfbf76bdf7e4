//! Identity and access over gRPC: tokens, principals and what each may do.

use onecity_proto::v1 as pb;
use onecity_tests::{sample_application, submission, tokens, TestServer};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_roles_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;

    // No token, malformed header, unknown token.
    let mut anonymous = pb::intake_service_client::IntakeServiceClient::new(server.raw().await);
    let err = anonymous
        .submit_application(submission(sample_application()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut unknown = server.intake("not-a-token").await;
    assert_eq!(
        unknown
            .get_case(pb::GetCaseRequest {
                case_id: uuid::Uuid::now_v7().to_string()
            })
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    let mut req = tonic::Request::new(pb::GetCaseRequest {
        case_id: String::new(),
    });
    req.metadata_mut()
        .insert("authorization", "Basic abc".parse().unwrap());
    assert_eq!(
        anonymous.get_case(req).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // Health and reflection need no token.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.raw().await);
    let h = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        h.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let h = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "onecity.v1.IntakeService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        h.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // Only terminals submit.
    for token in [tokens::CIVIL_AFFAIRS, tokens::ADMIN, tokens::SERVICE] {
        let err = server
            .intake(token)
            .await
            .submit_application(submission(sample_application()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{token}");
    }
    // Any terminal of the city may read any case (one-city link).
    let case = server.submit_handed_off(sample_application()).await;
    let case_id = case.case_id.clone();
    let get = |c: &str| pb::GetCaseRequest { case_id: c.into() };
    server
        .intake(tokens::TERMINAL_HEPING)
        .await
        .get_case(get(&case_id))
        .await
        .unwrap();

    // A department sees a case only through its own referrals, with identity numbers masked.
    let seen = server
        .intake(tokens::CIVIL_AFFAIRS)
        .await
        .get_case(get(&case_id))
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    assert!(!seen.referrals.is_empty());
    assert!(seen
        .referrals
        .iter()
        .all(|r| r.department_unit == "civil-affairs@120103"));
    assert!(seen.assessments.len() < 12);
    for m in &seen.application.unwrap().members {
        assert!(
            m.id_number.contains("********"),
            "identity numbers are masked for departments"
        );
    }
    let err = server
        .intake(tokens::CIVIL_AFFAIRS_HEPING)
        .await
        .get_case(get(&case_id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = server
        .intake(tokens::SERVICE)
        .await
        .get_case(get(&case_id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // A department acts only on its own unit's referrals; admins and terminals act on none.
    let medical = case
        .referrals
        .iter()
        .find(|r| r.department_unit == "medical-security@120103")
        .unwrap();
    let ack = |id: &str| pb::AcknowledgeReferralRequest {
        referral_id: id.into(),
        request_id: String::new(),
    };
    for token in [
        tokens::CIVIL_AFFAIRS,
        tokens::CIVIL_AFFAIRS_HEPING,
        tokens::ADMIN,
        tokens::TERMINAL,
    ] {
        let err = server
            .handoff(token)
            .await
            .acknowledge_referral(ack(&medical.referral_id))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{token}");
    }
    server
        .handoff(tokens::MEDICAL)
        .await
        .acknowledge_referral(ack(&medical.referral_id))
        .await
        .unwrap();

    // Lists are scoped: a unit sees only its own; admin sees all; terminals none.
    let list = pb::ListReferralsRequest {
        state: 0,
        page_size: 0,
        page_token: String::new(),
    };
    let heping = server
        .handoff(tokens::CIVIL_AFFAIRS_HEPING)
        .await
        .list_referrals(list.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(heping.referrals.is_empty());
    let all = server
        .handoff(tokens::ADMIN)
        .await
        .list_referrals(list.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.referrals.len(), case.referrals.len());
    let err = server
        .handoff(tokens::TERMINAL)
        .await
        .list_referrals(list)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // The log's own face is for services and admins only.
    let err = server
        .log(tokens::TERMINAL)
        .await
        .get_head(pb::GetHeadRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    server
        .log(tokens::ADMIN)
        .await
        .get_head(pb::GetHeadRequest {})
        .await
        .unwrap();
    server.stop().await;
}
