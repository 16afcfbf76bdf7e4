//! Intake over gRPC: idempotent submission, every validation rule (INVALID_ARGUMENT
//! naming the field, nothing written), screening and policy look-ups.

use onecity_proto::v1 as pb;
use onecity_tests::{sample_application, submission, today, tokens, valid_id_number, TestServer};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_request_id_gives_same_case_even_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut intake = server.intake(tokens::TERMINAL).await;
    let req = submission(sample_application());
    let first = intake
        .submit_application(req.clone())
        .await
        .unwrap()
        .into_inner();
    let again = intake
        .submit_application(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.case_id, first.case_id);
    assert!(again.duplicate);
    assert_eq!(again.submitted_at, first.submitted_at);
    let head = server.head().await;

    // Another terminal using the same request id is another request: the same household
    // in another case, which the duplicate rule refuses naming the first.
    let mut heping = server.intake(tokens::TERMINAL_HEPING).await;
    let other = heping.submit_application(req.clone()).await.unwrap_err();
    assert_eq!(other.code(), tonic::Code::AlreadyExists, "{other:?}");
    assert!(other.message().contains(&first.case_id));
    server.handed_off(&first.case_id).await;
    server.stop().await;

    let server = TestServer::start(dir.path()).await;
    let mut intake = server.intake(tokens::TERMINAL).await;
    let after_restart = intake.submit_application(req).await.unwrap().into_inner();
    assert_eq!(after_restart.case_id, first.case_id);
    assert!(after_restart.duplicate);
    assert!(server.head().await >= head);
    server.stop().await;
}

fn member(seq: u16, birth: &str, rel: pb::Relationship) -> pb::Person {
    let date = chrono::NaiveDate::parse_from_str(birth, "%Y-%m-%d").unwrap();
    pb::Person {
        id_number: valid_id_number("120103", date, seq),
        name: format!("member {seq}"),
        birth_date: birth.into(),
        relationship: rel as i32,
        disability: None,
        seriously_ill: false,
        employment: pb::Employment::Employed as i32,
        education: pb::EducationStage::None as i32,
        monthly_income_fen: 100_000,
        supporter: pb::Supporter::None as i32,
        age_years: 0,
    }
}

/// Each case: a mutation of a valid application, and the field it must be reported on.
/// A mutation of a valid request.
type Mutation = Box<dyn Fn(&mut pb::SubmitApplicationRequest)>;

fn invalid_cases() -> Vec<(&'static str, Mutation, &'static str)> {
    fn app(r: &mut pb::SubmitApplicationRequest) -> &mut pb::Application {
        r.application.as_mut().unwrap()
    }
    vec![
        (
            "empty request id",
            Box::new(|r| r.request_id.clear()),
            "request_id",
        ),
        (
            "request id too long",
            Box::new(|r| r.request_id = "x".repeat(129)),
            "request_id",
        ),
        (
            "no application",
            Box::new(|r| r.application = None),
            "application",
        ),
        (
            "unknown district",
            Box::new(|r| app(r).district_code = "110101".into()),
            "application.district_code",
        ),
        (
            "no members",
            Box::new(|r| app(r).members.clear()),
            "application.members",
        ),
        (
            "21 members",
            Box::new(|r| {
                let a = app(r);
                for i in 0..18 {
                    a.members
                        .push(member(100 + i, "1990-01-01", pb::Relationship::Other));
                }
            }),
            "application.members",
        ),
        (
            "no applicant",
            Box::new(|r| app(r).members[0].relationship = pb::Relationship::Sibling as i32),
            "application.members",
        ),
        (
            "two applicants",
            Box::new(|r| app(r).members[1].relationship = pb::Relationship::Applicant as i32),
            "application.members",
        ),
        (
            "bad check character",
            Box::new(|r| {
                let id = &mut app(r).members[2].id_number;
                let last = if id.ends_with('0') { "1" } else { "0" };
                id.replace_range(17..18, last);
            }),
            "application.members[2].id_number",
        ),
        (
            "short id number",
            Box::new(|r| app(r).members[1].id_number.truncate(15)),
            "application.members[1].id_number",
        ),
        (
            "birth date disagrees with id number",
            Box::new(|r| app(r).members[0].birth_date = "1980-03-16".into()),
            "application.members[0].id_number",
        ),
        (
            "duplicate id numbers",
            Box::new(|r| {
                let a = app(r);
                a.members[1] = pb::Person {
                    relationship: pb::Relationship::Spouse as i32,
                    ..a.members[0].clone()
                };
            }),
            "application.members[1].id_number",
        ),
        (
            "empty name",
            Box::new(|r| app(r).members[1].name.clear()),
            "application.members[1].name",
        ),
        (
            "name too long",
            Box::new(|r| app(r).members[1].name = "名".repeat(65)),
            "application.members[1].name",
        ),
        (
            "negative income",
            Box::new(|r| app(r).members[1].monthly_income_fen = -1),
            "application.members[1].monthly_income_fen",
        ),
        (
            "negative assets",
            Box::new(|r| app(r).financial_assets_fen = -1),
            "application.financial_assets_fen",
        ),
        (
            "negative homes",
            Box::new(|r| app(r).homes_owned = -1),
            "application.homes_owned",
        ),
        (
            "negative vehicles",
            Box::new(|r| app(r).vehicles_owned = -1),
            "application.vehicles_owned",
        ),
        (
            "negative medical",
            Box::new(|r| app(r).medical_expense_12m_fen = -5),
            "application.medical_expense_12m_fen",
        ),
        (
            "unset housing",
            Box::new(|r| app(r).housing = 0),
            "application.housing",
        ),
        (
            "unknown housing",
            Box::new(|r| app(r).housing = 99),
            "application.housing",
        ),
        (
            "not a date",
            Box::new(|r| app(r).application_date = "2025-02-30".into()),
            "application.application_date",
        ),
        (
            "future date",
            Box::new(|r| app(r).application_date = "2999-01-01".into()),
            "application.application_date",
        ),
        (
            "phone too long",
            Box::new(|r| app(r).contact_phone = "1".repeat(33)),
            "application.contact_phone",
        ),
        (
            "description too long",
            Box::new(|r| {
                app(r).emergency = Some(pb::Emergency {
                    kind: pb::EmergencyKind::Fire as i32,
                    description: "x".repeat(2001),
                })
            }),
            "application.emergency.description",
        ),
        (
            "disability grade out of range",
            Box::new(|r| {
                app(r).members[0].disability = Some(pb::Disability {
                    kind: pb::DisabilityKind::Physical as i32,
                    grade: 5,
                })
            }),
            "application.members[0].disability.grade",
        ),
        (
            "unset employment",
            Box::new(|r| app(r).members[0].employment = 0),
            "application.members[0].employment",
        ),
        (
            "unset supporter",
            Box::new(|r| app(r).members[0].supporter = 0),
            "application.members[0].supporter",
        ),
        (
            "unset education",
            Box::new(|r| app(r).members[0].education = 0),
            "application.members[0].education",
        ),
        (
            "date before any policy",
            Box::new(|r| app(r).application_date = "2020-01-01".into()),
            "application.application_date",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_validation_rule_names_its_field_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut intake = server.intake(tokens::TERMINAL).await;
    let mut screen = server.eligibility(tokens::TERMINAL).await;
    let head = server.head().await;
    for (name, mutate, field) in invalid_cases() {
        let mut req = submission(sample_application());
        mutate(&mut req);
        let err = intake
            .submit_application(req.clone())
            .await
            .expect_err(name);
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
        assert!(
            err.message().contains(field),
            "{name}: expected field {field} in {:?}",
            err.message()
        );
        if field.starts_with("application.") && field != "application.application_date"
            || name == "future date"
        {
            let err = screen
                .screen(pb::ScreenRequest {
                    application: req.application,
                    view: 0,
                })
                .await
                .expect_err(name);
            assert_eq!(err.code(), Code::InvalidArgument, "screen {name}");
        }
    }
    assert_eq!(
        server.head().await,
        head,
        "a refused request writes nothing"
    );
    // The valid application is accepted, dated today too.
    let mut ok = sample_application();
    ok.application_date = today();
    let case_id = intake
        .submit_application(submission(ok))
        .await
        .unwrap()
        .into_inner()
        .case_id;
    // The workers may already have written more; the members' claims (one each) and the
    // submission are the next events.
    let next = server
        .log(tokens::SERVICE)
        .await
        .read_all(pb::ReadAllRequest {
            from_position: head + 1,
            limit: 4,
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let types: Vec<&str> = next.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "onecity.v1.PersonClaimed",
            "onecity.v1.PersonClaimed",
            "onecity.v1.PersonClaimed",
            "onecity.v1.ApplicationSubmitted"
        ]
    );
    assert_eq!(next[3].case_id, case_id);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screening_assesses_without_writing_and_policy_is_dated() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut eligibility = server.eligibility(tokens::TERMINAL).await;
    let head = server.head().await;
    let screen = |view: pb::ScreenView| pb::ScreenRequest {
        application: Some(sample_application()),
        view: view as i32,
    };
    let screened = eligibility
        .screen(screen(pb::ScreenView::Full))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(screened.assessments.len(), 12);
    let dibao = &screened.assessments[0];
    assert_eq!(dibao.programme, pb::Programme::Dibao as i32);
    assert_eq!(dibao.outcome, pb::Outcome::Eligible as i32);
    assert!(dibao.amount_fen > 0);
    assert!(!dibao.rules.is_empty() && !dibao.rules[0].explanation.is_empty());
    // The default view is BASIC: the same assessments without their rules.
    for view in [pb::ScreenView::Unspecified, pb::ScreenView::Basic] {
        let basic = eligibility.screen(screen(view)).await.unwrap().into_inner();
        let without_rules: Vec<_> = screened
            .assessments
            .iter()
            .map(|a| pb::Assessment {
                rules: Vec::new(),
                ..a.clone()
            })
            .collect();
        assert_eq!(basic.assessments, without_rules, "{view:?}");
    }
    let err = eligibility
        .screen(pb::ScreenRequest {
            view: 7,
            ..screen(pb::ScreenView::Full)
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("view"), "{}", err.message());
    assert_eq!(server.head().await, head, "screening writes nothing");

    let p = |as_of: &str| pb::GetPolicyRequest {
        as_of: as_of.into(),
    };
    let old = eligibility
        .get_policy(p("2026-06-30"))
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    let new = eligibility
        .get_policy(p("2026-07-01"))
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    assert_ne!(old.version_id, new.version_id);
    assert_eq!(new.effective_from, "2026-07-01");
    assert_eq!(new.district_standards.len(), 16);
    for name in [
        "dibao_standard_fen",
        "asset_limit_months",
        "marginal_multiple_bp",
        "charity_multiple_bp",
    ] {
        assert!(new.parameters.contains_key(name), "{name}");
    }
    let err = eligibility.get_policy(p("2020-01-01")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = eligibility.get_policy(p("yesterday")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("as_of"));
    server.stop().await;
}
