//! Signals and warnings over gRPC (docs/monitoring.md): a signal is idempotent per source
//! record; one that crosses its threshold raises one warning for civil affairs of the
//! case's district, one below it none; a person no case names is warned about in the
//! signal's district; the resolutions and their refusals; a death puts the household's
//! approved recognitions under review; an open warning past its deadline is escalated
//! (manual clock); civil affairs of another district does not see the warnings.

use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use onecity_domain::events::{REVERIFICATION_DUE, SIGNAL_REPORTED, WARNING_ESCALATED};
use onecity_domain::ids;
use onecity_proto::v1 as pb;
use onecity_proto::v1::monitoring_service_client::MonitoringServiceClient;
use onecity_service::clock::{ManualClock, SharedClock};
use onecity_tests::{
    bearer, referral, sample_application, tokens, valid_id_number, Authed, TestServer,
};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(30);
const SUPERVISOR: &str = "demo-supervisor-120103";

type Client = MonitoringServiceClient<Authed>;

async fn monitoring(server: &TestServer, token: &str) -> Client {
    MonitoringServiceClient::with_interceptor(server.raw().await, bearer(token))
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A person no case names, another at each call.
fn stranger() -> String {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    valid_id_number(
        "120101",
        NaiveDate::from_ymd_opt(1970, 1, 1).unwrap(),
        NEXT.fetch_add(1, Ordering::Relaxed),
    )
}

fn signal(
    source_id: &str,
    id_number: &str,
    kind: pb::SignalKind,
    amount_fen: i64,
    district: &str,
) -> pb::ReportSignalRequest {
    pb::ReportSignalRequest {
        source: "medical-insurance".into(),
        source_id: source_id.into(),
        id_number: id_number.into(),
        kind: kind as i32,
        occurred_on: "2025-10-01".into(),
        amount_fen,
        district_code: district.into(),
    }
}

async fn report(client: &mut Client, req: pb::ReportSignalRequest) -> pb::ReportSignalResponse {
    client.report_signal(req).await.unwrap().into_inner()
}

/// A medical-insurance bill of `amount_fen` for `person`, reported in `district`.
async fn medical_bill(
    client: &mut Client,
    source_id: &str,
    person: &str,
    amount_fen: i64,
    district: &str,
) -> pb::ReportSignalResponse {
    let kind = pb::SignalKind::MedicalExpense;
    report(
        client,
        signal(source_id, person, kind, amount_fen, district),
    )
    .await
}

fn resolve(
    warning_id: &str,
    request_id: &str,
    outcome: pb::WarningOutcome,
    case_id: &str,
) -> pb::ResolveWarningRequest {
    pb::ResolveWarningRequest {
        warning_id: warning_id.into(),
        request_id: request_id.into(),
        outcome: outcome as i32,
        case_id: case_id.into(),
        note: "visited on 2025-10-03".into(),
    }
}

/// Polls (bounded) until `check` returns something.
async fn poll<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(t) = check().await {
            return t;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn list(server: &TestServer, token: &str, req: pb::ListWarningsRequest) -> Vec<pb::Warning> {
    monitoring(server, token)
        .await
        .list_warnings(req)
        .await
        .unwrap()
        .into_inner()
        .warnings
}

/// The warning `id` as `token` lists it, once the projection holds it in a state `done`
/// accepts.
async fn listed(
    server: &TestServer,
    token: &str,
    id: &str,
    done: impl Fn(&pb::Warning) -> bool,
) -> pb::Warning {
    poll("the warning listed", || async {
        list(server, token, pb::ListWarningsRequest::default())
            .await
            .into_iter()
            .find(|w| w.warning_id == id && done(w))
    })
    .await
}

/// Waits until the person index names `id_number` (it follows the log within moments).
async fn indexed(server: &TestServer, id_number: &str) {
    let intake = server.intake(tokens::ADMIN).await;
    poll("the person indexed", || {
        let mut intake = intake.clone();
        async move {
            let found = intake
                .find_cases(pb::FindCasesRequest {
                    id_number: id_number.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .cases;
            (!found.is_empty()).then_some(())
        }
    })
    .await;
}

async fn count(server: &TestServer, stream: &str, event_type: &str) -> usize {
    server
        .whole_log()
        .await
        .iter()
        .filter(|e| e.case_id == stream && e.event_type == event_type)
        .count()
}

fn code_and_message(status: &tonic::Status) -> (Code, String) {
    (status.code(), status.message().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_is_idempotent_and_an_unknown_person_is_warned_about_in_its_district() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut medical = monitoring(&server, tokens::MEDICAL).await;
    let person = stranger();
    let req = signal(
        "claim-1",
        &person,
        pb::SignalKind::Unemployment,
        0,
        "120101",
    );

    let first = report(&mut medical, req.clone()).await;
    let warning = first.warning.clone().expect("unemployment always warns");
    assert_eq!(warning.unit, "civil-affairs@120101");
    assert_eq!(warning.district_code, "120101");
    assert!(warning.case_ids.is_empty(), "nobody names the person");
    assert_eq!(warning.state, pb::WarningState::Open as i32);
    assert_eq!(
        first.signal_id,
        ids::signal_stream("medical-insurance", "claim-1").to_string()
    );
    assert_eq!(warning.warning_id, first.signal_id);

    // A retry, also from another principal, answers the same and writes nothing.
    let again = report(&mut monitoring(&server, tokens::SERVICE).await, req.clone()).await;
    assert_eq!(again, first);
    assert_eq!(count(&server, &first.signal_id, SIGNAL_REPORTED).await, 1);

    // The same source record with other content is refused.
    let other = pb::ReportSignalRequest {
        amount_fen: 5,
        ..req.clone()
    };
    let err = medical.report_signal(other).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let other_person = pb::ReportSignalRequest {
        id_number: stranger(),
        ..req.clone()
    };
    let err = medical.report_signal(other_person).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // Invalid input names the field and writes nothing; no identity number in the message.
    let head = server.head().await;
    for (bad, field) in [
        (
            pb::ReportSignalRequest {
                id_number: "12010119700101000".into(),
                source_id: "claim-2".into(),
                ..req.clone()
            },
            "id_number",
        ),
        (
            pb::ReportSignalRequest {
                kind: 0,
                source_id: "claim-2".into(),
                ..req.clone()
            },
            "kind",
        ),
        (
            pb::ReportSignalRequest {
                source: String::new(),
                ..req.clone()
            },
            "source",
        ),
        (
            pb::ReportSignalRequest {
                occurred_on: "2999-01-01".into(),
                source_id: "claim-2".into(),
                ..req.clone()
            },
            "occurred_on",
        ),
        (
            pb::ReportSignalRequest {
                amount_fen: -1,
                source_id: "claim-2".into(),
                ..req.clone()
            },
            "amount_fen",
        ),
        (
            pb::ReportSignalRequest {
                district_code: "999999".into(),
                source_id: "claim-2".into(),
                ..req.clone()
            },
            "district_code",
        ),
    ] {
        let (code, message) = code_and_message(&medical.report_signal(bad).await.unwrap_err());
        assert_eq!(code, Code::InvalidArgument, "{field}: {message}");
        assert!(message.contains(field), "{field}: {message}");
        assert!(!message.contains(&person), "{message}");
    }
    assert_eq!(server.head().await, head, "nothing written");

    // Terminals, supervisors and admins do not report signals.
    for token in [tokens::TERMINAL, SUPERVISOR, tokens::ADMIN] {
        let err = monitoring(&server, token)
            .await
            .report_signal(signal(
                "claim-3",
                &person,
                pb::SignalKind::Death,
                0,
                "120101",
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{token}");
    }

    // Civil affairs of Heping sees it; Hexi's civil affairs and supervisor do not; other
    // departments may not list warnings at all; admins see every district's.
    listed(
        &server,
        tokens::CIVIL_AFFAIRS_HEPING,
        &warning.warning_id,
        |_| true,
    )
    .await;
    for token in [tokens::CIVIL_AFFAIRS, SUPERVISOR] {
        let seen = list(&server, token, pb::ListWarningsRequest::default()).await;
        assert!(
            seen.iter().all(|w| w.warning_id != warning.warning_id),
            "{token} sees another district's warning"
        );
    }
    let err = monitoring(&server, tokens::HOUSING)
        .await
        .list_warnings(pb::ListWarningsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    listed(&server, tokens::ADMIN, &warning.warning_id, |_| true).await;

    // The listing left an access record naming the warning.
    let log = server.whole_log().await;
    assert!(
        log.iter()
            .any(|e| e.event_type == "onecity.v1.PersonalDataRead"
                && String::from_utf8_lossy(&e.payload).contains(&warning.warning_id)),
        "no access record of the listing"
    );
    // No identity number anywhere in the log's signal events.
    for e in log.iter().filter(|e| e.case_id == first.signal_id) {
        assert!(!String::from_utf8_lossy(&e.payload).contains(&person));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_crossed_warns_the_case_district_once_and_one_below_it_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let app = sample_application();
    // The sample household earns 2,000.00 yuan a month: 24,000.00 a year; the policy's
    // catastrophic share is 50 %, 12,000.00 yuan.
    let income: i64 = app.members.iter().map(|m| m.monthly_income_fen).sum();
    assert_eq!(income, 200_000);
    let child = app.members[2].id_number.clone();
    let case = server.submit_handed_off(app).await;
    indexed(&server, &child).await;
    let mut medical = monitoring(&server, tokens::MEDICAL).await;

    // Reported in Heping, but the household's case is in Hexi.
    let below = medical_bill(&mut medical, "bill-1", &child, 1_199_999, "120101").await;
    assert_eq!(below.warning, None, "below the threshold");
    let above = medical_bill(&mut medical, "bill-2", &child, 1_200_000, "120101").await;
    let warning = above.warning.expect("at the threshold");
    assert_eq!(warning.unit, "civil-affairs@120103");
    assert_eq!(warning.case_ids, vec![case.case_id.clone()]);
    assert!(warning.reason.contains("50.00 %"), "{}", warning.reason);

    // An income drop of 30 % of the monthly income warns, one below does not.
    let small = report(
        &mut medical,
        signal(
            "drop-1",
            &child,
            pb::SignalKind::IncomeDrop,
            59_999,
            "120103",
        ),
    )
    .await;
    assert_eq!(small.warning, None);

    // Exactly one warning for the household, to Hexi's civil affairs, and its supervisor
    // sees it too.
    listed(&server, tokens::CIVIL_AFFAIRS, &warning.warning_id, |_| {
        true
    })
    .await;
    listed(&server, SUPERVISOR, &warning.warning_id, |_| true).await;
    let hexi = list(
        &server,
        tokens::CIVIL_AFFAIRS,
        pb::ListWarningsRequest::default(),
    )
    .await;
    assert_eq!(hexi.len(), 1, "{hexi:?}");
    let heping = list(
        &server,
        tokens::CIVIL_AFFAIRS_HEPING,
        pb::ListWarningsRequest::default(),
    )
    .await;
    assert!(heping.is_empty(), "{heping:?}");
}

/// A signal is measured against the household as it now stands: after an amendment that
/// halves its income, a medical bill of half the amended yearly income warns (against the
/// submitted income it would be far below the share).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_is_measured_against_the_household_as_amended() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let app = sample_application();
    let child = app.members[2].id_number.clone();
    let case = server.submit_handed_off(app.clone()).await;
    indexed(&server, &child).await;
    let mut amended = app;
    for m in &mut amended.members {
        m.monthly_income_fen /= 2;
    }
    let income: i64 = amended.members.iter().map(|m| m.monthly_income_fen).sum();
    assert_eq!(income, 100_000);
    server
        .intake(tokens::TERMINAL)
        .await
        .amend_application(pb::AmendApplicationRequest {
            case_id: case.case_id.clone(),
            request_id: uuid::Uuid::now_v7().to_string(),
            application: Some(amended),
            reason: "the applicant's hours were cut".into(),
        })
        .await
        .unwrap();
    let mut medical = monitoring(&server, tokens::MEDICAL).await;
    // The catastrophic share is 50 % of 12 months of the amended 1,000.00 yuan.
    let below = medical_bill(&mut medical, "bill-1", &child, 599_999, "120103").await;
    assert_eq!(below.warning, None, "below the amended threshold");
    let at = medical_bill(&mut medical, "bill-2", &child, 600_000, "120103").await;
    let warning = at.warning.expect("at the amended threshold");
    assert_eq!(warning.case_ids, vec![case.case_id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_are_resolved_by_civil_affairs_of_their_district_with_an_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let case = server.submit_handed_off(sample_application()).await;
    let mut service = monitoring(&server, tokens::SERVICE).await;
    let mut warnings = Vec::new();
    for i in 0..3 {
        let w = report(
            &mut service,
            signal(
                &format!("flood-{i}"),
                &stranger(),
                pb::SignalKind::Disaster,
                0,
                "120103",
            ),
        )
        .await
        .warning
        .expect("a disaster always warns");
        warnings.push(w.warning_id);
    }
    let mut civil = monitoring(&server, tokens::CIVIL_AFFAIRS).await;

    // Refusals: another district's civil affairs, another department, a bad outcome,
    // CASE_OPENED without a case or with one that does not exist, an unknown warning.
    let err = monitoring(&server, tokens::CIVIL_AFFAIRS_HEPING)
        .await
        .resolve_warning(resolve(
            &warnings[0],
            "r-1",
            pb::WarningOutcome::VisitedNoNeed,
            "",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = monitoring(&server, tokens::HOUSING)
        .await
        .resolve_warning(resolve(
            &warnings[0],
            "r-1",
            pb::WarningOutcome::VisitedNoNeed,
            "",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let mut bad = resolve(&warnings[0], "r-1", pb::WarningOutcome::VisitedNoNeed, "");
    bad.outcome = 99;
    let (code, message) = code_and_message(&civil.resolve_warning(bad).await.unwrap_err());
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("outcome"), "{message}");
    for case_id in ["", &uuid::Uuid::now_v7().to_string()] {
        let (code, message) = code_and_message(
            &civil
                .resolve_warning(resolve(
                    &warnings[0],
                    "r-1",
                    pb::WarningOutcome::CaseOpened,
                    case_id,
                ))
                .await
                .unwrap_err(),
        );
        assert_eq!(code, Code::InvalidArgument, "{case_id:?}");
        assert!(message.contains("case_id"), "{message}");
    }
    let err = civil
        .resolve_warning(resolve(
            &uuid::Uuid::now_v7().to_string(),
            "r-1",
            pb::WarningOutcome::VisitedNoNeed,
            "",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // The three outcomes.
    let opened = civil
        .resolve_warning(resolve(
            &warnings[0],
            "r-1",
            pb::WarningOutcome::CaseOpened,
            &case.case_id,
        ))
        .await
        .unwrap()
        .into_inner()
        .warning
        .unwrap();
    assert_eq!(opened.state, pb::WarningState::Resolved as i32);
    assert_eq!(opened.outcome, pb::WarningOutcome::CaseOpened as i32);
    assert_eq!(opened.resolved_case_id, case.case_id);
    assert_eq!(opened.resolved_by, "department:civil-affairs@120103");
    // A retry answers the same; another resolution of a resolved warning is refused.
    let retried = civil
        .resolve_warning(resolve(
            &warnings[0],
            "r-1",
            pb::WarningOutcome::CaseOpened,
            &case.case_id,
        ))
        .await
        .unwrap()
        .into_inner()
        .warning
        .unwrap();
    assert_eq!(retried, opened);
    let err = civil
        .resolve_warning(resolve(
            &warnings[0],
            "r-9",
            pb::WarningOutcome::VisitedNoNeed,
            "",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    // The same request id for another warning is refused, not taken as a retry.
    let err = civil
        .resolve_warning(resolve(
            &warnings[1],
            "r-1",
            pb::WarningOutcome::VisitedNoNeed,
            "",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    for (id, outcome) in [
        (&warnings[1], pb::WarningOutcome::VisitedNoNeed),
        (&warnings[2], pb::WarningOutcome::ReferredToCharity),
    ] {
        let w = civil
            .resolve_warning(resolve(id, &format!("r-{id}"), outcome, ""))
            .await
            .unwrap()
            .into_inner()
            .warning
            .unwrap();
        assert_eq!(w.outcome, outcome as i32);
    }
    for id in &warnings {
        listed(&server, tokens::CIVIL_AFFAIRS, id, |w| {
            w.state == pb::WarningState::Resolved as i32
        })
        .await;
    }
    let open = list(
        &server,
        tokens::CIVIL_AFFAIRS,
        pb::ListWarningsRequest {
            open_only: true,
            ..Default::default()
        },
    )
    .await;
    assert!(open.is_empty(), "{open:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_death_puts_the_households_approved_recognition_under_review() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let app = sample_application();
    let applicant = app.members[0].id_number.clone();
    let case = server.submit_handed_off(app).await;
    let dibao = referral(&case, pb::Programme::Dibao).clone();
    server
        .handoff(tokens::CIVIL_AFFAIRS)
        .await
        .record_decision(pb::RecordDecisionRequest {
            referral_id: dibao.referral_id.clone(),
            decision: pb::Decision::Approved as i32,
            amount_fen: 0,
            note: String::new(),
            request_id: String::new(),
        })
        .await
        .unwrap();
    indexed(&server, &applicant).await;

    let mut registry = monitoring(&server, tokens::SERVICE).await;
    let mut req = signal("death-1", &applicant, pb::SignalKind::Death, 0, "120103");
    req.source = "civil-registry".into();
    let reported = report(&mut registry, req.clone()).await;
    let review_id = ids::review_referral(&dibao.referral_id).to_string();
    assert_eq!(reported.review_referral_ids, vec![review_id.clone()]);
    let warning = reported.warning.clone().expect("a death warns");
    assert_eq!(warning.unit, "civil-affairs@120103");

    // The review referral went to the deciding unit, its ReverificationDue names the
    // signal; a retry asks for nothing more and answers the same.
    let case_now = server.handed_off(&case.case_id).await;
    let review = case_now
        .referrals
        .iter()
        .find(|r| r.referral_id == review_id)
        .expect("the review referral");
    assert_eq!(review.reviews, dibao.referral_id);
    assert_eq!(review.department_unit, dibao.department_unit);
    assert_eq!(count(&server, &case.case_id, REVERIFICATION_DUE).await, 1);
    let due = server
        .whole_log()
        .await
        .into_iter()
        .find(|e| e.case_id == case.case_id && e.event_type == REVERIFICATION_DUE)
        .unwrap();
    assert!(String::from_utf8_lossy(&due.payload).contains(&reported.signal_id));
    let again = report(&mut registry, req).await;
    assert_eq!(again, reported);
    assert_eq!(count(&server, &case.case_id, REVERIFICATION_DUE).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_warning_past_its_deadline_is_escalated_once() {
    let dir = tempfile::tempdir().unwrap();
    // 10:00 in Beijing on 1 October 2025; warnings are due 7 days after they are raised.
    let clock = ManualClock::new(at("2025-10-01T02:00:00Z"));
    let shared = SharedClock(std::sync::Arc::new(clock.clone()));
    let server = TestServer::start_with(dir.path(), move |c| {
        c.clock = shared;
        c.deadline_tick_ms = 20;
    })
    .await;
    let mut service = monitoring(&server, tokens::SERVICE).await;
    let warning = report(
        &mut service,
        signal(
            "job-1",
            &stranger(),
            pb::SignalKind::Unemployment,
            0,
            "120103",
        ),
    )
    .await
    .warning
    .unwrap();
    assert_eq!(warning.due_at, "2025-10-08T02:00:00.000Z");
    let overdue = || pb::ListWarningsRequest {
        overdue_only: true,
        ..Default::default()
    };
    listed(&server, SUPERVISOR, &warning.warning_id, |_| true).await;
    assert!(list(&server, SUPERVISOR, overdue()).await.is_empty());

    clock.set(at("2025-10-08T02:00:00Z"));
    let escalated = listed(&server, SUPERVISOR, &warning.warning_id, |w| {
        !w.escalated_at.is_empty()
    })
    .await;
    assert_eq!(escalated.escalated_at, "2025-10-08T02:00:00.000Z");
    assert_eq!(escalated.state, pb::WarningState::Open as i32);
    let shown = list(&server, SUPERVISOR, overdue()).await;
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(
        count(&server, &warning.warning_id, WARNING_ESCALATED).await,
        1
    );

    // Resolved late, it is no longer overdue.
    monitoring(&server, tokens::CIVIL_AFFAIRS)
        .await
        .resolve_warning(resolve(
            &warning.warning_id,
            "late",
            pb::WarningOutcome::VisitedNoNeed,
            "",
        ))
        .await
        .unwrap();
    listed(&server, SUPERVISOR, &warning.warning_id, |w| {
        w.state == pb::WarningState::Resolved as i32
    })
    .await;
    assert!(list(&server, SUPERVISOR, overdue()).await.is_empty());
}
