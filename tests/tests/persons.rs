//! The person index over gRPC: `FindCases` (who may call it, what it shows, its access
//! record, its answer after a restart) and the duplicate rule of `SubmitApplication` (a
//! person in one open case at a time, the override, the race between two terminals).

use std::time::Duration;

use onecity_proto::v1 as pb;
use onecity_tests::{sample_application, submission, tokens, IntakeClient, TestServer};
use tonic::Code;
use tonic_types::StatusExt as _;

/// `FindCases` for `id_number` once the index holds at least `at_least` cases for them
/// (the index is a projection: it follows the log within moments).
async fn find_at_least(
    intake: &mut IntakeClient,
    id_number: &str,
    at_least: usize,
) -> Vec<pb::FoundCase> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let cases = intake
            .find_cases(pb::FindCasesRequest {
                id_number: id_number.into(),
            })
            .await
            .expect("find cases")
            .into_inner()
            .cases;
        if cases.len() >= at_least {
            return cases;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the index did not reach {at_least} cases: {cases:?}"
        );
        tokio::task::yield_now().await;
    }
}

fn overriding(app: pb::Application, reason: &str) -> pb::SubmitApplicationRequest {
    pb::SubmitApplicationRequest {
        duplicate_override_reason: reason.into(),
        ..submission(app)
    }
}

/// The open case an ALREADY_EXISTS names, from its `ErrorInfo`; checks the message names
/// it too.
fn named_case(status: &tonic::Status) -> String {
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    let info = status.get_details_error_info().expect("error info");
    assert_eq!(info.reason, "MEMBER_IN_OPEN_CASE");
    let case_id = info.metadata.get("case_id").expect("case_id").clone();
    assert!(status.message().contains(&case_id), "{}", status.message());
    case_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_cases_finds_every_case_of_a_person_masked_and_only_for_terminals_and_admins() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut hexi = server.intake(tokens::TERMINAL).await;
    let mut heping = server.intake(tokens::TERMINAL_HEPING).await;
    let app = sample_application();
    let spouse = app.members[1].id_number.clone();
    let first = hexi
        .submit_application(submission(app.clone()))
        .await
        .unwrap()
        .into_inner();
    // The spouse applies again in Heping, with the child: the same two people, another
    // district, another case (with the override, since the first is open).
    let mut second_app = app.clone();
    second_app.district_code = "120101".into();
    second_app.members.remove(0);
    second_app.members[0].relationship = pb::Relationship::Applicant as i32;
    second_app.members[1].relationship = pb::Relationship::Child as i32;
    let second = heping
        .submit_application(overriding(second_app, "moved to Heping with the child"))
        .await
        .unwrap()
        .into_inner();

    let mut admin = server.intake(tokens::ADMIN).await;
    for who in [&mut hexi, &mut heping, &mut admin] {
        let found = find_at_least(who, &spouse, 2).await;
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].case_id, first.case_id);
        assert_eq!(found[1].case_id, second.case_id);
        assert_eq!(
            (
                found[0].district_code.as_str(),
                found[1].district_code.as_str()
            ),
            ("120103", "120101")
        );
        assert_eq!(found[0].relationship, pb::Relationship::Spouse as i32);
        assert_eq!(found[1].relationship, pb::Relationship::Applicant as i32);
        assert!(found
            .iter()
            .all(|c| c.status == pb::CaseStatus::Open as i32));
        assert_eq!(found[0].submitted_date, &first.submitted_at[..10]);
        // Members masked: names, relationships and ages, no number, no birth date.
        assert_eq!(found[0].members.len(), 3);
        assert_eq!(found[1].members.len(), 2);
        onecity_tests::assert_nothing_identifying(&format!("{found:?}"), &app);
        assert!(found[0]
            .members
            .iter()
            .all(|m| m.id_number.contains("********")));
        assert_eq!(found[0].members[0].name, app.members[0].name);
        assert!(found[0].members[0].age_years > 0);
    }
    // The applicant of the first case only.
    let applicant = find_at_least(&mut admin, &app.members[0].id_number, 1).await;
    assert_eq!(applicant.len(), 1);
    // Nobody known: nothing.
    let stranger = sample_application().members[0].id_number.clone();
    let none = admin
        .find_cases(pb::FindCasesRequest {
            id_number: stranger,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.cases.is_empty());

    // Departments and services are refused, whatever the number.
    for token in [tokens::CIVIL_AFFAIRS, tokens::HOUSING, tokens::SERVICE] {
        let err = server
            .intake(token)
            .await
            .find_cases(pb::FindCasesRequest {
                id_number: spouse.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{token}: {err:?}");
    }
    // A bad number is INVALID_ARGUMENT naming the field.
    for bad in [
        "",
        "12010319800315001",
        "120103198003150019",
        "12010319800315001Y",
    ] {
        let err = admin
            .find_cases(pb::FindCasesRequest {
                id_number: bad.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}: {err:?}");
        let violations = err
            .get_details_bad_request()
            .expect("bad request")
            .field_violations;
        assert_eq!(violations[0].field, "id_number", "{bad}");
    }

    // Every answer was recorded: the admin's reads name both cases.
    let log = server.whole_log().await;
    let admin_reads = log
        .iter()
        .filter(|e| e.event_type == "onecity.v1.PersonalDataRead" && e.actor.starts_with("admin:"))
        .count();
    assert!(admin_reads >= 2, "{admin_reads} admin reads recorded");
    // The person claims hold no identity number (their streams are keyed hashes).
    let claims: Vec<_> = log
        .iter()
        .filter(|e| e.event_type == "onecity.v1.PersonClaimed")
        .collect();
    assert_eq!(claims.len(), 5, "one claim per member of each case");
    for c in claims {
        let text = String::from_utf8_lossy(&c.payload);
        onecity_tests::assert_nothing_identifying(&text, &app);
        assert!(app
            .members
            .iter()
            .all(|m| !c.case_id.contains(&m.id_number)));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_of_an_open_case_is_refused_unless_overridden_and_the_department_sees_why() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut hexi = server.intake(tokens::TERMINAL).await;
    let mut heping = server.intake(tokens::TERMINAL_HEPING).await;
    let app = sample_application();
    let req = submission(app.clone());
    let first = hexi
        .submit_application(req.clone())
        .await
        .unwrap()
        .into_inner();

    // The same household at a second office: refused, naming the open case.
    let err = heping
        .submit_application(submission(app.clone()))
        .await
        .unwrap_err();
    assert_eq!(named_case(&err), first.case_id);
    // One member in another household is enough.
    let mut other = sample_application();
    other.members[2] = app.members[2].clone();
    let err = heping
        .submit_application(submission(other))
        .await
        .unwrap_err();
    assert_eq!(named_case(&err), first.case_id);
    // The retry of the first request is still its case, not a refusal.
    let again = hexi.submit_application(req).await.unwrap().into_inner();
    assert_eq!(
        (again.case_id.as_str(), again.duplicate),
        (first.case_id.as_str(), true)
    );
    // A bad override reason is INVALID_ARGUMENT naming the field, and writes nothing.
    let head = server.head().await;
    let err = heping
        .submit_application(overriding(app.clone(), &"x".repeat(2_001)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let violations = err
        .get_details_bad_request()
        .expect("bad request")
        .field_violations;
    assert_eq!(violations[0].field, "duplicate_override_reason");
    assert_eq!(server.head().await, head);

    // With a reason: a second case, recording it, shown to its department.
    let reason = "the first office's case is for the old address";
    let second = heping
        .submit_application(overriding(app.clone(), reason))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(second.case_id, first.case_id);
    let case = server.handed_off(&second.case_id).await;
    assert_eq!(case.duplicate_override_reason, reason);
    let unit = case
        .referrals
        .first()
        .expect("the sample household is referred")
        .department_unit
        .clone();
    let token = match unit.as_str() {
        "civil-affairs@120103" => tokens::CIVIL_AFFAIRS,
        "medical-security@120103" => tokens::MEDICAL,
        "housing@120103" => tokens::HOUSING,
        other => panic!("no test token for {other}"),
    };
    let seen = server
        .intake(token)
        .await
        .get_case(pb::GetCaseRequest {
            case_id: second.case_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    assert_eq!(seen.duplicate_override_reason, reason);
    let first_case = server.handed_off(&first.case_id).await;
    assert!(first_case.duplicate_override_reason.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawn_and_closed_cases_do_not_block() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut hexi = server.intake(tokens::TERMINAL).await;
    // Withdrawn.
    let app = sample_application();
    let first = hexi
        .submit_application(submission(app.clone()))
        .await
        .unwrap()
        .into_inner();
    hexi.withdraw_application(pb::WithdrawApplicationRequest {
        case_id: first.case_id.clone(),
        reason: "moving away".into(),
        request_id: String::new(),
    })
    .await
    .unwrap();
    let again = hexi
        .submit_application(submission(app.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(again.case_id, first.case_id);

    // Closed: a household no programme refers closes at handoff.
    let mut rich = sample_application();
    for m in &mut rich.members {
        m.monthly_income_fen = 5_000_000;
    }
    rich.members[0].employment = pb::Employment::Employed as i32;
    rich.financial_assets_fen = 1_000_000_000;
    rich.housing = pb::Housing::OwnedAdequate as i32;
    rich.consent_to_share = false;
    let closed = server.submit_handed_off(rich.clone()).await;
    assert_eq!(closed.status, pb::CaseStatus::Closed as i32, "{closed:?}");
    let reopened = hexi
        .submit_application(submission(rich.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(reopened.case_id, closed.case_id);
    // The index shows both, in their statuses.
    let found = find_at_least(&mut hexi, &rich.members[0].id_number, 2).await;
    let statuses: Vec<i32> = found.iter().map(|c| c.status).collect();
    assert_eq!(statuses[0], pb::CaseStatus::Closed as i32, "{found:?}");
    server.stop().await;
}

/// Two terminals submit the same household at the same moment, round after round:
/// exactly one case opens each time, and the other terminal is told which.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_submissions_of_one_person_open_exactly_one_case() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let hexi = server.intake(tokens::TERMINAL).await;
    let heping = server.intake(tokens::TERMINAL_HEPING).await;
    const ROUNDS: usize = 25;
    let mut opened = Vec::new();
    for round in 0..ROUNDS {
        let app = sample_application();
        // Different households sharing one person (the child), or the same household.
        let mut other = if round % 2 == 0 {
            app.clone()
        } else {
            let mut o = sample_application();
            o.members[2] = app.members[2].clone();
            o
        };
        other.district_code = "120101".into();
        let (mut a, mut b) = (hexi.clone(), heping.clone());
        let (ra, rb) = tokio::join!(
            a.submit_application(submission(app)),
            b.submit_application(submission(other)),
        );
        let (won, lost) = match (ra, rb) {
            (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w.into_inner(), l),
            (ra, rb) => panic!("round {round}: not exactly one case: {ra:?} {rb:?}"),
        };
        assert_eq!(named_case(&lost), won.case_id, "round {round}");
        opened.push(won.case_id);
    }
    let submitted: Vec<String> = server
        .whole_log()
        .await
        .into_iter()
        .filter(|e| e.event_type == "onecity.v1.ApplicationSubmitted")
        .map(|e| e.case_id)
        .collect();
    assert_eq!(submitted, opened);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_is_rebuilt_after_a_restart_with_the_same_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut hexi = server.intake(tokens::TERMINAL).await;
    let app = sample_application();
    let first = hexi
        .submit_application(submission(app.clone()))
        .await
        .unwrap()
        .into_inner();
    hexi.withdraw_application(pb::WithdrawApplicationRequest {
        case_id: first.case_id.clone(),
        reason: "moving away".into(),
        request_id: String::new(),
    })
    .await
    .unwrap();
    hexi.submit_application(submission(app.clone()))
        .await
        .unwrap();
    let id = app.members[1].id_number.clone();
    let before = loop {
        let found = find_at_least(&mut hexi, &id, 2).await;
        if found[0].status == pb::CaseStatus::Withdrawn as i32 {
            break found;
        }
    };
    server.stop().await;

    let server = TestServer::start(dir.path()).await;
    let mut hexi = server.intake(tokens::TERMINAL).await;
    let after = loop {
        let found = find_at_least(&mut hexi, &id, 2).await;
        if found[0].status == pb::CaseStatus::Withdrawn as i32 {
            break found;
        }
    };
    let ages = |cases: &[pb::FoundCase]| format!("{cases:?}");
    assert_eq!(ages(&before), ages(&after));
    // The key was kept: the rule still holds across the restart.
    let err = hexi.submit_application(submission(app)).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    server.stop().await;
}

/// `--role intake` twice over one JetStream log, each with its own index and sharing only
/// the log and the key: terminals racing through the two open exactly one case per person.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_intake_processes_over_jetstream_open_exactly_one_case() {
    use onecity::config::{LogSpec, Role};
    let url =
        tokio::task::spawn_blocking(|| onecity_eventlog_jetstream::testing::shared_server().url())
            .await
            .unwrap();
    let prefix = onecity_eventlog_jetstream::testing::fresh_prefix();
    let spec: LogSpec = format!("jetstream:{url}?replicas=1&prefix={prefix}")
        .parse()
        .unwrap();
    let shared = tempfile::tempdir().unwrap();
    let key = shared.path().join("person-index.key");
    std::fs::write(&key, "c3".repeat(32)).unwrap();
    let start = |dir: std::path::PathBuf| {
        let (spec, key) = (spec.clone(), key.clone());
        async move {
            TestServer::start_with(&dir, move |c| {
                c.log = Some(spec);
                c.roles = vec![Role::Intake];
                c.person_index_key_file = Some(key);
                // No workers run here: nothing routes, so nothing to hold back for.
                c.max_routing_lag = 0;
            })
            .await
        }
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start(dir_a.path().to_path_buf()).await;
    let b = start(dir_b.path().to_path_buf()).await;
    // Both serve once their log is open (health says so; no sleeping).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for server in [&a, &b] {
        while server.health("onecity.v1.IntakeService").await
            != tonic_health::pb::health_check_response::ServingStatus::Serving
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "intake never served"
            );
            tokio::task::yield_now().await;
        }
    }
    let hexi = a.intake(tokens::TERMINAL).await;
    let heping = b.intake(tokens::TERMINAL_HEPING).await;
    for round in 0..20 {
        let app = sample_application();
        let (mut x, mut y) = (hexi.clone(), heping.clone());
        let (rx, ry) = tokio::join!(
            x.submit_application(submission(app.clone())),
            y.submit_application(submission(app)),
        );
        let (won, lost) = match (rx, ry) {
            (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w.into_inner(), l),
            (rx, ry) => panic!("round {round}: not exactly one case: {rx:?} {ry:?}"),
        };
        assert_eq!(named_case(&lost), won.case_id, "round {round}");
    }
    a.stop().await;
    b.stop().await;
}
