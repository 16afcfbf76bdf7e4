//! Identity and access over gRPC: tokens, principals and what each may do.

use onecity_proto::v1 as pb;
use onecity_tests::{
    assert_nothing_identifying, referral, sample_application, submission, tokens, watched,
    TestServer,
};
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
        ..Default::default()
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

/// Data minimisation: a department reads of a case only what deciding its own referrals
/// needs, in `GetCase` and in `WatchCase` alike; terminals and admins read all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn departments_see_only_what_their_referrals_need() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let submitted = sample_application();
    let case = server.submit_handed_off(submitted.clone()).await;
    let case_id = case.case_id.clone();
    let get = || pb::GetCaseRequest {
        case_id: case_id.clone(),
    };
    // Another unit acts on its referral, with a note the others must not read.
    let medical = referral(&case, pb::Programme::Medical).clone();
    let secret = "medical security's own note";
    server
        .handoff(tokens::MEDICAL)
        .await
        .record_decision(pb::RecordDecisionRequest {
            referral_id: medical.referral_id.clone(),
            decision: pb::Decision::Denied as i32,
            amount_fen: 0,
            note: secret.into(),
            request_id: String::new(),
        })
        .await
        .unwrap();

    let terminal = server
        .intake(tokens::TERMINAL)
        .await
        .get_case(get())
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    let seen = server
        .intake(tokens::CIVIL_AFFAIRS)
        .await
        .get_case(get())
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    let text = format!("{seen:?}");
    assert_nothing_identifying(&text, &submitted);
    assert!(!text.contains(secret), "another unit's note in {text}");
    assert!(!text.contains("medical-security"), "another unit in {text}");
    let unit = "civil-affairs@120103";
    assert!(seen.referrals.iter().all(|r| r.department_unit == unit));
    let own: Vec<i32> = seen.referrals.iter().map(|r| r.programme).collect();
    assert!(!seen.assessments.is_empty());
    assert!(seen.assessments.iter().all(|a| own.contains(&a.programme)));
    // Its own referrals' history and the case-level entries; nothing of other units.
    assert!(seen.events.len() < terminal.events.len());
    assert!(seen
        .events
        .iter()
        .all(|e| !e.event_type.starts_with("onecity.v1.Referral") || e.summary.contains(unit)));
    assert_eq!(seen.events[0].event_type, "onecity.v1.ApplicationSubmitted");
    // Members: who they are and their age, never the birth date; the contact phone once,
    // the applicant's.
    let app = seen.application.clone().unwrap();
    for (m, s) in app.members.iter().zip(&submitted.members) {
        assert_eq!((&m.name, m.relationship), (&s.name, s.relationship));
        assert!(m.birth_date.is_empty());
        assert!(m.id_number.contains("********"));
        assert!(m.age_years > 0);
    }
    assert_eq!(text.matches(&submitted.contact_phone).count(), 1);
    // Only the facts its programmes read: civil affairs' rules never read the housing
    // situation or schooling (the sample household rents and has a schoolchild).
    assert_eq!(app.housing, 0);
    assert!(app.members.iter().all(|m| m.education == 0));
    assert_eq!(
        app.members
            .iter()
            .map(|m| m.monthly_income_fen)
            .sum::<i64>(),
        submitted
            .members
            .iter()
            .map(|m| m.monthly_income_fen)
            .sum::<i64>()
    );

    // WatchCase streams the same history, and nothing more.
    let streamed = watched(
        &mut server.intake(tokens::CIVIL_AFFAIRS).await,
        &case_id,
        std::time::Duration::from_millis(500),
    )
    .await;
    let text = format!("{streamed:?}");
    assert_nothing_identifying(&text, &submitted);
    assert!(!text.contains("medical-security"), "another unit in {text}");
    let events: Vec<pb::CaseEvent> = streamed.into_iter().filter_map(|w| w.event).collect();
    assert_eq!(events, seen.events);

    // Terminals (any district) and admins: the whole case, as submitted, plus ages.
    for token in [tokens::TERMINAL, tokens::TERMINAL_HEPING, tokens::ADMIN] {
        let full = server
            .intake(token)
            .await
            .get_case(get())
            .await
            .unwrap()
            .into_inner()
            .case
            .unwrap();
        assert_eq!(full.version, full.events.len() as u64, "{token}");
        assert_eq!(full.assessments.len(), 12, "{token}");
        assert!(full.referrals.iter().any(|r| r.note == secret), "{token}");
        let mut app = full.application.unwrap();
        assert!(app.members.iter().all(|m| m.age_years > 0), "{token}");
        for m in &mut app.members {
            m.age_years = 0;
        }
        assert_eq!(app, submitted, "{token}");
        let streamed = watched(
            &mut server.intake(token).await,
            &case_id,
            std::time::Duration::from_millis(300),
        )
        .await;
        let events: Vec<pb::CaseEvent> = streamed.into_iter().filter_map(|w| w.event).collect();
        assert_eq!(events, full.events, "{token}");
    }
    server.stop().await;
}
