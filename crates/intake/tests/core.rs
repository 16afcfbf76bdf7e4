//! The intake core without a transport: submissions (accepted, retried, refused), case
//! views per principal, withdrawals, and backpressure.

use std::sync::Arc;

use onecity_domain::events::CaseEvent;
use onecity_domain::fixtures::sample_application;
use onecity_domain::{ids, Principal, Programme};
use onecity_eligibility::PolicyBook;
use onecity_eventlog::memory::MemoryLog;
use onecity_eventlog::{EventLog, Expected, NewEvent};
use onecity_intake::{Backpressure, Error, Intake, Watched};
use onecity_proto::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt as _;
use uuid::Uuid;

/// A fresh in-memory log: the core tests need the contract, not a disk.
fn log() -> Arc<dyn EventLog> {
    Arc::new(MemoryLog::new())
}

fn intake(log: &Arc<dyn EventLog>) -> Intake {
    Intake::new(Arc::clone(log), Arc::new(PolicyBook::embedded_default()))
}

fn terminal() -> Principal {
    Principal::Terminal {
        id: "T-120103-01".into(),
        district: "120103".parse().unwrap(),
        street_office: "Hexi street office".into(),
    }
}

fn department(unit: &str) -> Principal {
    Principal::Department {
        unit: unit.parse().unwrap(),
    }
}

fn admin() -> Principal {
    Principal::Admin { id: "a-1".into() }
}

/// The status the error answers with over gRPC.
fn status(e: Error) -> tonic::Status {
    e.into()
}

/// Issues a referral of `programme` in `case_id` to `unit`, as the handoff worker would.
async fn refer(log: &dyn EventLog, case_id: Uuid, programme: Programme, unit: &str) -> String {
    let referral_id = ids::referral_id(case_id, programme).to_string();
    let event = CaseEvent::ReferralIssued(pb::Referral {
        referral_id: referral_id.clone(),
        case_id: case_id.to_string(),
        programme: programme.to_proto(),
        department_unit: unit.into(),
        state: pb::ReferralState::Issued as i32,
        ..Default::default()
    });
    let new = NewEvent::new(event.event_type(), "service:handoff", event.encode());
    log.append(case_id, Expected::Any, vec![new], Uuid::now_v7())
        .await
        .unwrap();
    referral_id
}

#[tokio::test]
async fn a_terminal_opens_a_case_with_one_submission_event() {
    let log = log();
    let intake = intake(&log);
    let s = intake
        .submit(&terminal(), "req-1", Some(sample_application()))
        .await
        .unwrap();
    assert!(!s.duplicate);
    assert!(!s.submitted_at.is_empty());
    let events = log.read_case_all(s.case_id).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].event_type,
        onecity_domain::events::APPLICATION_SUBMITTED
    );
    assert_eq!(events[0].actor, "terminal:T-120103-01");
    assert_eq!(
        events[0].commit_id,
        ids::submit_commit("T-120103-01", "req-1")
    );
    let case = intake
        .get_case(&terminal().into(), &s.case_id.to_string())
        .await
        .unwrap();
    assert_eq!(case.status, pb::CaseStatus::Open as i32);
    assert_eq!(
        (case.version, case.terminal_id.as_str()),
        (1, "T-120103-01")
    );
    assert_eq!(case.submitted_at, s.submitted_at);
}

/// The same request id from the same terminal is the same case, answered with the original
/// submission time and writing nothing; another terminal's same request id is a new case.
#[tokio::test]
async fn a_retried_request_gets_the_original_case() {
    let log = log();
    let intake = intake(&log);
    let first = intake
        .submit(&terminal(), "req-1", Some(sample_application()))
        .await
        .unwrap();
    let head = log.head().await.unwrap();
    let again = intake
        .submit(&terminal(), "req-1", Some(sample_application()))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(
        (again.case_id, &again.submitted_at),
        (first.case_id, &first.submitted_at)
    );
    assert_eq!(log.head().await.unwrap(), head);

    let other = Principal::Terminal {
        id: "T-120104-02".into(),
        district: "120104".parse().unwrap(),
        street_office: "Nankai".into(),
    };
    let theirs = intake
        .submit(&other, "req-1", Some(sample_application()))
        .await
        .unwrap();
    assert!(!theirs.duplicate);
    assert_ne!(theirs.case_id, first.case_id);
}

/// Bad input names the field, in the message and as a `BadRequest` field violation, and
/// writes nothing.
#[tokio::test]
async fn invalid_input_names_the_field_and_writes_nothing() {
    let log = log();
    let intake = intake(&log);
    let mut bad_member = sample_application();
    // A wrong check digit.
    let id = &mut bad_member.members[1].id_number;
    let wrong = if id.ends_with('1') { '2' } else { '1' };
    id.pop();
    id.push(wrong);
    let mut no_policy = sample_application();
    no_policy.application_date = "2025-06-30".into();
    let cases = [
        ("", Some(sample_application()), "request_id"),
        ("bad\u{7}id", Some(sample_application()), "request_id"),
        ("req-1", None, "application"),
        (
            "req-2",
            Some(bad_member),
            "application.members[1].id_number",
        ),
        ("req-3", Some(no_policy), "application.application_date"),
    ];
    for (request_id, application, field) in cases {
        let err = intake
            .submit(&terminal(), request_id, application)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Invalid { field: f, .. } if f == field),
            "{field}: {err}"
        );
        let status = status(err);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with(&format!("invalid {field}: ")));
        let violations = status.get_details_bad_request().unwrap().field_violations;
        assert_eq!(violations[0].field, field);
    }
    assert_eq!(log.head().await.unwrap(), 0);
}

/// Only terminals submit.
#[tokio::test]
async fn only_terminals_submit() {
    let log = log();
    let intake = intake(&log);
    for (who, kind) in [
        (department("civil-affairs@120103"), "department"),
        (admin(), "admin"),
        (Principal::Service { id: "s".into() }, "service"),
    ] {
        let err = intake
            .submit(&who, "req-1", Some(sample_application()))
            .await
            .unwrap_err();
        let status = status(err);
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(
            status.message(),
            format!("permission denied: {kind} principals may not submit an application")
        );
    }
    assert_eq!(log.head().await.unwrap(), 0);
}

/// Terminals and administrators see the whole case; a department unit only a case it holds
/// a referral of, then only its own referrals and the identity numbers masked; a service
/// nothing.
#[tokio::test]
async fn case_views_per_principal() {
    let log = log();
    let intake = intake(&log);
    let s = intake
        .submit(&terminal(), "req-1", Some(sample_application()))
        .await
        .unwrap();
    let case_id = s.case_id.to_string();
    let mine = refer(
        log.as_ref(),
        s.case_id,
        Programme::Dibao,
        "civil-affairs@120103",
    )
    .await;
    refer(
        log.as_ref(),
        s.case_id,
        Programme::Medical,
        "medical-security@120103",
    )
    .await;

    let full_ids: Vec<String> = sample_application()
        .members
        .iter()
        .map(|m| m.id_number.clone())
        .collect();
    for who in [terminal(), admin()] {
        let case = intake
            .get_case(&who.clone().into(), &case_id)
            .await
            .unwrap();
        assert_eq!(case.referrals.len(), 2);
        let ids: Vec<_> = case
            .application
            .unwrap()
            .members
            .into_iter()
            .map(|m| m.id_number)
            .collect();
        assert_eq!(ids, full_ids);
    }

    let case = intake
        .get_case(&department("civil-affairs@120103").into(), &case_id)
        .await
        .unwrap();
    assert_eq!(case.referrals.len(), 1);
    assert_eq!(case.referrals[0].referral_id, mine);
    assert!(case
        .assessments
        .iter()
        .all(|a| a.programme == Programme::Dibao.to_proto()));
    for (m, full) in case.application.unwrap().members.iter().zip(&full_ids) {
        assert_ne!(&m.id_number, full);
        assert!(m.id_number.contains('*'), "{}", m.id_number);
    }

    for who in [
        department("civil-affairs@120104"),
        Principal::Service { id: "s".into() },
    ] {
        let err = intake
            .get_case(&who.clone().into(), &case_id)
            .await
            .unwrap_err();
        assert_eq!(status(err).code(), Code::PermissionDenied);
    }
}

#[tokio::test]
async fn unknown_and_malformed_case_ids() {
    let log = log();
    let intake = intake(&log);
    let missing = Uuid::now_v7();
    let err = intake
        .get_case(&terminal().into(), &missing.to_string())
        .await
        .unwrap_err();
    let not_found = status(err);
    assert_eq!(not_found.code(), Code::NotFound);
    assert_eq!(not_found.message(), format!("case {missing} not found"));
    let nil = Uuid::nil().to_string();
    for (bad, why) in [
        ("nope", "not a uuid"),
        (&nil[..], "must not be the nil uuid"),
    ] {
        let err = intake.get_case(&terminal().into(), bad).await.unwrap_err();
        assert!(
            matches!(&err, Error::Invalid { field, reason } if field == "case_id" && reason == why),
            "{err}"
        );
    }
}

/// A withdrawal cancels the open referrals in the same commit; withdrawing again changes
/// nothing; departments may not withdraw.
#[tokio::test]
async fn withdrawing_cancels_open_referrals_once() {
    let log = log();
    let intake = intake(&log);
    let s = intake
        .submit(&terminal(), "req-1", Some(sample_application()))
        .await
        .unwrap();
    let case_id = s.case_id.to_string();
    refer(
        log.as_ref(),
        s.case_id,
        Programme::Dibao,
        "civil-affairs@120103",
    )
    .await;

    let err = intake
        .withdraw(&department("civil-affairs@120103"), &case_id, "no")
        .await
        .unwrap_err();
    assert_eq!(status(err).code(), Code::PermissionDenied);

    let case = intake
        .withdraw(&terminal(), &case_id, "moved away")
        .await
        .unwrap();
    assert_eq!(case.status, pb::CaseStatus::Withdrawn as i32);
    assert_eq!(case.version, 4);
    assert_eq!(case.referrals[0].state, pb::ReferralState::Cancelled as i32);
    let events = log.read_case_all(s.case_id).await.unwrap();
    assert_eq!(events[2].commit_id, events[3].commit_id);
    assert_eq!(events[2].commit_id, ids::withdraw_commit(s.case_id, 2));

    let head = log.head().await.unwrap();
    let again = intake.withdraw(&admin(), &case_id, "again").await.unwrap();
    assert_eq!(again, case);
    assert_eq!(log.head().await.unwrap(), head);

    let long = "x".repeat(onecity_intake::MAX_REASON_CHARS + 1);
    let err = intake
        .withdraw(&terminal(), &case_id, &long)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Invalid { field, .. } if field == "reason"),
        "{err}"
    );
}

/// A closed case (every referral decided) cannot be withdrawn.
#[tokio::test]
async fn a_closed_case_cannot_be_withdrawn() {
    let log = log();
    let intake = intake(&log);
    let s = intake
        .submit(&terminal(), "req-1", Some(sample_application()))
        .await
        .unwrap();
    let closed = CaseEvent::CaseClosed(pb::CaseClosed {
        reason: "no programme to refer".into(),
    });
    let new = NewEvent::new(closed.event_type(), "service:handoff", closed.encode());
    log.append(s.case_id, Expected::Exact(1), vec![new], Uuid::now_v7())
        .await
        .unwrap();
    let err = intake
        .withdraw(&terminal(), &s.case_id.to_string(), "")
        .await
        .unwrap_err();
    let status = status(err);
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        format!("case {} is closed: every referral is decided", s.case_id)
    );
}

/// Over the routing-lag bound a new request is refused and writes nothing, while a retry
/// of an accepted request still gets its case.
/// The refusal names the partition that is behind, not just a number.
#[tokio::test]
async fn the_refusal_names_the_partition_that_is_behind() {
    let log = log();
    let watched = |consumer: &str| Watched {
        consumer: consumer.into(),
        event_type: onecity_domain::events::APPLICATION_SUBMITTED.into(),
    };
    let intake = intake(&log).with_backpressure(Backpressure {
        max_lag: 1,
        watched: vec![watched("assessment-1of2"), watched("assessment-2of2")],
    });
    for request in ["req-1", "req-2"] {
        intake
            .submit(&terminal(), request, Some(sample_application()))
            .await
            .unwrap();
    }
    log.save_checkpoint("assessment-1of2", log.head().await.unwrap())
        .await
        .unwrap();
    tokio::time::sleep(onecity_intake::LAG_REFRESH * 2).await;
    let err = intake
        .submit(&terminal(), "req-3", Some(sample_application()))
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with(
            "routing is behind: assessment-2of2 has 2 events waiting, over the bound of 1;"
        ),
        "{message}"
    );
    assert!(message.contains("retry the same request id"), "{message}");
    assert_eq!(status(err).code(), Code::ResourceExhausted);
}

#[tokio::test]
async fn over_the_bound_only_retries_get_through() {
    let log = log();
    let intake = intake(&log).with_backpressure(Backpressure {
        max_lag: 1,
        watched: vec![Watched {
            consumer: "assessment".into(),
            event_type: onecity_domain::events::APPLICATION_SUBMITTED.into(),
        }],
    });
    let first = intake
        .submit(&terminal(), "req-1", Some(sample_application()))
        .await
        .unwrap();
    intake
        .submit(&terminal(), "req-2", Some(sample_application()))
        .await
        .unwrap();
    // Let the lag measurement that admitted the second request expire.
    tokio::time::sleep(onecity_intake::LAG_REFRESH * 2).await;
    let err = intake
        .submit(&terminal(), "req-3", Some(sample_application()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Overloaded {
                lag: 2,
                max_lag: 1,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(status(err).code(), Code::ResourceExhausted);
    assert_eq!(log.head().await.unwrap(), 2);

    let retry = intake
        .submit(&terminal(), "req-1", Some(sample_application()))
        .await
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(
        (retry.case_id, retry.submitted_at),
        (first.case_id, first.submitted_at)
    );
    assert_eq!(log.head().await.unwrap(), 2);
}

/// A request id reused by the same terminal for a different application is refused and
/// writes nothing; an equal application (even encoded differently) is the same request.
#[tokio::test]
async fn a_request_id_reused_for_another_application_is_refused() {
    let log = log();
    let intake = intake(&log);
    let first = intake
        .submit(&terminal(), "req-1", Some(sample_application()))
        .await
        .unwrap();
    let head = log.head().await.unwrap();

    let mut other = sample_application();
    other.financial_assets_fen += 1;
    let err = intake
        .submit(&terminal(), "req-1", Some(other))
        .await
        .unwrap_err();
    let status = status(err);
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status
            .message()
            .contains("\"req-1\" was used for a different application"),
        "{status:?}"
    );
    assert!(status.message().contains(&first.case_id.to_string()));
    assert_eq!(log.head().await.unwrap(), head);

    // Validation canonicalises: an unspecified emergency kind drops its description, so
    // this differs on the wire and is the same application.
    let mut equal = sample_application();
    equal.emergency = Some(pb::Emergency {
        kind: pb::EmergencyKind::Unspecified as i32,
        description: "ignored".into(),
    });
    let mut plain = sample_application();
    plain.emergency = None;
    assert_ne!(equal, plain);
    let second = intake
        .submit(&terminal(), "req-2", Some(plain))
        .await
        .unwrap();
    let again = intake
        .submit(&terminal(), "req-2", Some(equal))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.case_id, second.case_id);
}

/// A withdrawal under a request id is answered again on a retry; the same request id on
/// another case or with another reason is refused.
#[tokio::test]
async fn a_retried_withdrawal_is_answered_once() {
    let log = log();
    let intake = intake(&log);
    let a = intake
        .submit(&terminal(), "req-a", Some(sample_application()))
        .await
        .unwrap();
    let mut app_b = sample_application();
    app_b.financial_assets_fen += 1;
    let b = intake
        .submit(&terminal(), "req-b", Some(app_b))
        .await
        .unwrap();
    let case_a = a.case_id.to_string();
    let case = intake
        .withdraw_with_request_id(&terminal(), &case_a, "moved away", Some("w-1"))
        .await
        .unwrap();
    assert_eq!(case.status, pb::CaseStatus::Withdrawn as i32);
    let events = log.read_case_all(a.case_id).await.unwrap();
    assert_eq!(
        events.last().unwrap().commit_id,
        ids::request_commit(&terminal().actor(), "w-1")
    );
    let head = log.head().await.unwrap();
    let again = intake
        .withdraw_with_request_id(&terminal(), &case_a, "moved away", Some("w-1"))
        .await
        .unwrap();
    assert_eq!(again, case);
    for (case_id, reason) in [
        (case_a.clone(), "other"),
        (b.case_id.to_string(), "moved away"),
    ] {
        let err = intake
            .withdraw_with_request_id(&terminal(), &case_id, reason, Some("w-1"))
            .await
            .unwrap_err();
        assert_eq!(status(err).code(), Code::FailedPrecondition);
    }
    assert_eq!(log.head().await.unwrap(), head);

    let err = intake
        .withdraw(&terminal(), &b.case_id.to_string(), "moved\u{202E}away")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Invalid { field, .. } if field == "reason"),
        "{err}"
    );
}

/// A log whose global subscription is refused: what still works on it reads case streams.
#[derive(Debug)]
struct CaseStreamsOnly(MemoryLog);

#[async_trait::async_trait]
impl EventLog for CaseStreamsOnly {
    async fn append_as(
        &self,
        appended_by: &str,
        case_id: Uuid,
        expected: Expected,
        events: Vec<NewEvent>,
        commit_id: Uuid,
    ) -> onecity_eventlog::Result<onecity_eventlog::Appended> {
        self.0
            .append_as(appended_by, case_id, expected, events, commit_id)
            .await
    }
    async fn read_case(
        &self,
        case_id: Uuid,
        from: u64,
        limit: usize,
    ) -> onecity_eventlog::Result<Vec<onecity_eventlog::RecordedEvent>> {
        self.0.read_case(case_id, from, limit).await
    }
    async fn read_all(
        &self,
        from: u64,
        limit: usize,
    ) -> onecity_eventlog::Result<Vec<onecity_eventlog::RecordedEvent>> {
        self.0.read_all(from, limit).await
    }
    async fn subscribe(
        &self,
        _from: u64,
        _filter: onecity_eventlog::Filter,
    ) -> onecity_eventlog::Result<onecity_eventlog::EventStream> {
        Err(onecity_eventlog::Error::Unavailable(
            "a case view must not follow the whole log".into(),
        ))
    }
    async fn subscribe_case(
        &self,
        case_id: Uuid,
        from: u64,
    ) -> onecity_eventlog::Result<onecity_eventlog::EventStream> {
        self.0.subscribe_case(case_id, from).await
    }
    async fn save_checkpoint(&self, consumer: &str, position: u64) -> onecity_eventlog::Result<()> {
        self.0.save_checkpoint(consumer, position).await
    }
    async fn load_checkpoint(&self, consumer: &str) -> onecity_eventlog::Result<u64> {
        self.0.load_checkpoint(consumer).await
    }
    async fn head(&self) -> onecity_eventlog::Result<u64> {
        self.0.head().await
    }
}

/// `WatchCase` follows the case's own stream (issue 13 item 8): it works on a log that
/// refuses every global subscription, and shows the case's later events, none of another
/// case's.
#[tokio::test]
async fn watching_a_case_reads_only_its_own_stream() {
    use futures::StreamExt as _;
    let log: Arc<dyn EventLog> = Arc::new(CaseStreamsOnly(MemoryLog::new()));
    let intake = intake(&log);
    let s = intake
        .submit(&terminal(), "req-watch", Some(sample_application()))
        .await
        .unwrap();
    let other = intake
        .submit(&terminal(), "req-other", Some(sample_application()))
        .await
        .unwrap();
    let mut watch = Box::pin(
        intake
            .watch_case(&terminal().into(), &s.case_id.to_string())
            .await
            .unwrap(),
    );
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.event.unwrap().version, 1);
    refer(
        log.as_ref(),
        other.case_id,
        Programme::Dibao,
        "civil-affairs@120103",
    )
    .await;
    refer(
        log.as_ref(),
        s.case_id,
        Programme::Medical,
        "medical-security@120103",
    )
    .await;
    let next = tokio::time::timeout(std::time::Duration::from_secs(20), watch.next())
        .await
        .expect("the watch delivers the case's next event")
        .unwrap()
        .unwrap()
        .event
        .unwrap();
    assert_eq!(next.version, 2);
    assert_eq!(next.event_type, "onecity.v1.ReferralIssued");
}
