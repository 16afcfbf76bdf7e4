//! The handoff core without a transport: the worker issues a case's referrals once, and
//! department back offices acknowledge and decide their own referrals (the last decision
//! closing the case), never another unit's.

use std::sync::Arc;

use onecity_domain::case::CaseStatus;
use onecity_domain::events::{
    CaseEvent, CASE_CLOSED, REFERRAL_ACKNOWLEDGED, REFERRAL_DECIDED, REFERRAL_ISSUED,
};
use onecity_domain::fixtures::sample_application;
use onecity_domain::{ids, Partition, Principal, Programme};
use onecity_eligibility::Catalogue;
use onecity_eventlog::memory::MemoryLog;
use onecity_eventlog::{EventLog, Expected, NewEvent, RecordedEvent};
use onecity_handoff::{DecisionInput, Done, Error, Handoff, HandoffWorker, Inbox};
use onecity_proto::v1 as pb;
use onecity_service::case::load_case;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use uuid::Uuid;

const CIVIL: &str = "civil-affairs@120103";
const MEDICAL: &str = "medical-security@120103";

/// A fresh in-memory log: the core tests need the contract, not a disk.
fn log() -> Arc<dyn EventLog> {
    Arc::new(MemoryLog::new())
}

fn handoff(log: &Arc<dyn EventLog>) -> Handoff {
    let inbox = Inbox::start(Arc::clone(log), CancellationToken::new());
    Handoff::new(Arc::clone(log), inbox)
}

fn department(unit: &str) -> Principal {
    Principal::Department {
        unit: unit.parse().unwrap(),
    }
}

fn status(e: Error) -> tonic::Status {
    e.into()
}

async fn append(log: &dyn EventLog, case_id: Uuid, event: &CaseEvent) -> RecordedEvent {
    let new = NewEvent::new(event.event_type(), "test", event.encode());
    let a = log
        .append(case_id, Expected::Any, vec![new], Uuid::now_v7())
        .await
        .unwrap();
    log.read_case(case_id, a.last_version, 1)
        .await
        .unwrap()
        .remove(0)
}

fn assessment(programme: Programme, outcome: pb::Outcome, unit: &str) -> pb::Assessment {
    pb::Assessment {
        programme: programme.to_proto(),
        outcome: outcome as i32,
        amount_fen: 50_000,
        policy_version: "2025-07".into(),
        department_unit: unit.into(),
        ..Default::default()
    }
}

/// A submitted and assessed case: Dibao eligible (civil affairs), medical aid for review
/// (medical security), housing ineligible. Returns the case and its assessment event.
async fn assessed_case(log: &dyn EventLog) -> (Uuid, RecordedEvent) {
    assessed_case_with(
        log,
        vec![
            assessment(Programme::Dibao, pb::Outcome::Eligible, CIVIL),
            assessment(Programme::Medical, pb::Outcome::NeedsReview, MEDICAL),
            assessment(
                Programme::Housing,
                pb::Outcome::Ineligible,
                "housing@120103",
            ),
        ],
    )
    .await
}

/// A submitted case assessed as `assessments`.
async fn assessed_case_with(
    log: &dyn EventLog,
    assessments: Vec<pb::Assessment>,
) -> (Uuid, RecordedEvent) {
    let case_id = Uuid::now_v7();
    let submitted = CaseEvent::ApplicationSubmitted(pb::ApplicationSubmitted {
        application: Some(sample_application()),
        terminal_id: "T-120103-01".into(),
        street_office: "Hexi".into(),
        request_id: "req-1".into(),
        submitted_at: "2025-09-01T09:00:00Z".into(),
        duplicate_override_reason: String::new(),
    });
    append(log, case_id, &submitted).await;
    let assessed = CaseEvent::EligibilityAssessed(pb::EligibilityAssessed {
        assessments,
        policy_version: "2025-07".into(),
    });
    let assessed = append(log, case_id, &assessed).await;
    (case_id, assessed)
}

/// An assessed case with its referrals issued by the worker: (case, Dibao referral id,
/// medical referral id).
async fn referred_case(log: &Arc<dyn EventLog>) -> (Uuid, String, String) {
    let (case_id, assessed) = assessed_case(log.as_ref()).await;
    let worker = HandoffWorker::new(Arc::clone(log), Arc::new(Catalogue::embedded()));
    assert_eq!(worker.process(&assessed).await.unwrap(), Done::Issued(2));
    (
        case_id,
        ids::referral_id(case_id, Programme::Dibao).to_string(),
        ids::referral_id(case_id, Programme::Medical).to_string(),
    )
}

fn types(events: &[RecordedEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

fn approve(amount_fen: i64) -> DecisionInput {
    DecisionInput {
        decision: pb::Decision::Approved as i32,
        amount_fen,
        note: "ok".into(),
    }
}

/// The worker issues one referral per referred programme in one commit, with the
/// deterministic ids, and a replay changes nothing.
#[tokio::test]
async fn the_worker_issues_referrals_once() {
    let log = log();
    let (case_id, assessed) = assessed_case(log.as_ref()).await;
    let worker = HandoffWorker::new(Arc::clone(&log), Arc::new(Catalogue::embedded()));
    assert_eq!(worker.process(&assessed).await.unwrap(), Done::Issued(2));
    let events = log.read_case_all(case_id).await.unwrap();
    assert_eq!(&types(&events)[2..], [REFERRAL_ISSUED, REFERRAL_ISSUED]);
    assert!(events[2..]
        .iter()
        .all(|e| e.commit_id == ids::handoff_commit(case_id)));
    let state = load_case(log.as_ref(), case_id).await.unwrap();
    let units: Vec<_> = state
        .referrals
        .iter()
        .map(|r| (r.referral_id.clone(), r.department_unit.as_str()))
        .collect();
    assert_eq!(
        units,
        [
            (
                ids::referral_id(case_id, Programme::Dibao).to_string(),
                CIVIL
            ),
            (
                ids::referral_id(case_id, Programme::Medical).to_string(),
                MEDICAL
            ),
        ]
    );
    assert_eq!(worker.process(&assessed).await.unwrap(), Done::Skipped);
    assert_eq!(log.read_case_all(case_id).await.unwrap().len(), 4);

    assert_eq!(
        HandoffWorker::consumer_name(&Partition::default()),
        "handoff"
    );
    assert_eq!(
        HandoffWorker::consumer_name(&Partition::new(1, 3).unwrap()),
        "handoff-1of3"
    );
}

/// A unit acknowledges its issued referral; acknowledging again returns it unchanged and
/// writes nothing.
#[tokio::test]
async fn acknowledging_is_recorded_once() {
    let log = log();
    let handoff = handoff(&log);
    let (case_id, dibao, _) = referred_case(&log).await;
    let r = handoff
        .acknowledge(&department(CIVIL), &dibao)
        .await
        .unwrap();
    assert_eq!(r.state, pb::ReferralState::Acknowledged as i32);
    let head = log.head().await.unwrap();
    let again = handoff
        .acknowledge(&department(CIVIL), &dibao)
        .await
        .unwrap();
    assert_eq!(again, r);
    assert_eq!(log.head().await.unwrap(), head);
    let events = log.read_case_all(case_id).await.unwrap();
    assert_eq!(types(&events).last(), Some(&REFERRAL_ACKNOWLEDGED));
    assert_eq!(events.last().unwrap().actor, format!("department:{CIVIL}"));
}

/// A decision is recorded with its amount and note; a decided referral cannot be decided or
/// acknowledged again.
#[tokio::test]
async fn a_decision_is_final() {
    let log = log();
    let handoff = handoff(&log);
    let (case_id, dibao, _) = referred_case(&log).await;
    let r = handoff
        .decide(&department(CIVIL), &dibao, approve(42_000))
        .await
        .unwrap();
    assert_eq!(r.state, pb::ReferralState::Approved as i32);
    assert_eq!((r.decided_amount_fen, r.note.as_str()), (42_000, "ok"));
    // One of two referrals decided: the case stays open.
    let state = load_case(log.as_ref(), case_id).await.unwrap();
    assert_eq!(state.status, CaseStatus::Open);

    for err in [
        handoff
            .decide(&department(CIVIL), &dibao, approve(1))
            .await
            .unwrap_err(),
        handoff
            .acknowledge(&department(CIVIL), &dibao)
            .await
            .unwrap_err(),
    ] {
        let status = status(err);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(
            status.message().ends_with(&format!(
                "referral {dibao}: it is already decided (APPROVED)"
            )),
            "{status:?}"
        );
    }
}

/// The decision on the last open referral closes the case in the same commit (with no
/// recognition referral: a recognition decision waits for its linkage step, see
/// tests/linkage.rs).
#[tokio::test]
async fn the_last_decision_closes_the_case() {
    let log = log();
    let handoff = handoff(&log);
    let (case_id, assessed) = assessed_case_with(
        log.as_ref(),
        vec![
            assessment(Programme::Temporary, pb::Outcome::Eligible, CIVIL),
            assessment(Programme::Medical, pb::Outcome::NeedsReview, MEDICAL),
        ],
    )
    .await;
    HandoffWorker::new(Arc::clone(&log), Arc::new(Catalogue::embedded()))
        .process(&assessed)
        .await
        .unwrap();
    let temporary = ids::referral_id(case_id, Programme::Temporary).to_string();
    let medical = ids::referral_id(case_id, Programme::Medical).to_string();
    handoff
        .decide(&department(CIVIL), &temporary, approve(42_000))
        .await
        .unwrap();
    let denied = DecisionInput {
        decision: pb::Decision::Denied as i32,
        amount_fen: 0,
        note: "not in need of it".into(),
    };
    let r = handoff
        .decide(&department(MEDICAL), &medical, denied)
        .await
        .unwrap();
    assert_eq!(r.state, pb::ReferralState::Denied as i32);
    let events = log.read_case_all(case_id).await.unwrap();
    let n = events.len();
    assert_eq!(&types(&events)[n - 2..], [REFERRAL_DECIDED, CASE_CLOSED]);
    assert_eq!(events[n - 2].commit_id, events[n - 1].commit_id);
    let state = load_case(log.as_ref(), case_id).await.unwrap();
    assert_eq!(state.status, CaseStatus::Closed);
}

/// A unit may act on its own referrals only; other principals on none.
#[tokio::test]
async fn another_unit_or_a_non_department_is_refused() {
    let log = log();
    let handoff = handoff(&log);
    let (_, dibao, _) = referred_case(&log).await;
    let head = log.head().await.unwrap();
    let err = handoff
        .acknowledge(&department(MEDICAL), &dibao)
        .await
        .unwrap_err();
    let refused = status(err);
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(
        refused.message(),
        "permission denied: department principals may not acknowledge referrals of another unit"
    );
    let err = handoff
        .decide(&department("civil-affairs@120104"), &dibao, approve(1))
        .await
        .unwrap_err();
    assert_eq!(status(err).code(), Code::PermissionDenied);
    for who in [
        Principal::Admin { id: "a".into() },
        Principal::Terminal {
            id: "T-120103-01".into(),
            district: "120103".parse().unwrap(),
            street_office: "Hexi".into(),
        },
    ] {
        let err = handoff.acknowledge(&who, &dibao).await.unwrap_err();
        let refused = status(err);
        assert_eq!(refused.code(), Code::PermissionDenied);
        assert_eq!(
            refused.message(),
            format!(
                "permission denied: {} principals may not acknowledge referrals",
                who.kind()
            )
        );
    }
    assert_eq!(log.head().await.unwrap(), head);
}

#[tokio::test]
async fn unknown_and_malformed_referral_ids() {
    let log = log();
    let handoff = handoff(&log);
    referred_case(&log).await;
    let unknown = Uuid::now_v7().to_string();
    let err = handoff
        .acknowledge(&department(CIVIL), &unknown)
        .await
        .unwrap_err();
    let not_found = status(err);
    assert_eq!(not_found.code(), Code::NotFound);
    assert_eq!(not_found.message(), format!("referral {unknown} not found"));
    let err = handoff
        .decide(&department(CIVIL), "not-a-uuid", approve(1))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Invalid { field, .. } if field == "referral_id"),
        "{err}"
    );
}

/// Decisions are checked before anything is read or written.
#[tokio::test]
async fn invalid_decisions_name_the_field() {
    let log = log();
    let handoff = handoff(&log);
    let (_, dibao, _) = referred_case(&log).await;
    let head = log.head().await.unwrap();
    let cases = [
        (
            DecisionInput {
                decision: pb::Decision::Unspecified as i32,
                ..approve(0)
            },
            "decision",
        ),
        (approve(-1), "amount_fen"),
        (
            DecisionInput {
                decision: pb::Decision::Denied as i32,
                ..approve(5)
            },
            "amount_fen",
        ),
        (
            DecisionInput {
                note: "x".repeat(onecity_handoff::MAX_NOTE_CHARS + 1),
                ..approve(1)
            },
            "note",
        ),
    ];
    for (input, field) in cases {
        let err = handoff
            .decide(&department(CIVIL), &dibao, input)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Invalid { field: f, .. } if f == field),
            "{field}: {err}"
        );
        assert_eq!(status(err).code(), Code::InvalidArgument);
    }
    assert_eq!(log.head().await.unwrap(), head);
}

/// A referral cancelled by a withdrawal cannot be acted on.
#[tokio::test]
async fn a_cancelled_referral_is_refused() {
    let log = log();
    let handoff = handoff(&log);
    let (case_id, dibao, _) = referred_case(&log).await;
    let state = load_case(log.as_ref(), case_id).await.unwrap();
    let cancelled = CaseEvent::ReferralCancelled(pb::Referral {
        state: pb::ReferralState::Cancelled as i32,
        ..state.referral(&dibao).unwrap().clone()
    });
    append(log.as_ref(), case_id, &cancelled).await;
    let err = handoff
        .decide(&department(CIVIL), &dibao, approve(1))
        .await
        .unwrap_err();
    let status = status(err);
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        format!("cannot approve referral {dibao}: it is CANCELLED")
    );
}

/// A unit lists its own referrals, an administrator every unit's, others none.
#[tokio::test]
async fn listing_is_scoped_to_the_unit() {
    let log = log();
    let handoff = handoff(&log);
    let (_, dibao, medical) = referred_case(&log).await;
    let (mine, next) = handoff
        .list(&department(CIVIL).into(), 0, 0, "")
        .await
        .unwrap();
    assert_eq!(next, "");
    assert_eq!(
        mine.iter().map(|r| &r.referral_id).collect::<Vec<_>>(),
        [&dibao]
    );
    let admin = Principal::Admin { id: "a".into() };
    let (first, next) = handoff.list(&admin.clone().into(), 0, 1, "").await.unwrap();
    assert_eq!(first[0].referral_id, dibao);
    let (second, last) = handoff
        .list(&admin.clone().into(), 0, 1, &next)
        .await
        .unwrap();
    assert_eq!(second[0].referral_id, medical);
    assert_eq!(last, "");
    let acknowledged = pb::ReferralState::Acknowledged as i32;
    let (none, _) = handoff
        .list(&admin.clone().into(), acknowledged, 0, "")
        .await
        .unwrap();
    assert!(none.is_empty());
    let err = handoff
        .list(&Principal::Service { id: "s".into() }.into(), 0, 0, "")
        .await
        .unwrap_err();
    assert_eq!(status(err).code(), Code::PermissionDenied);
}

/// A decision under a request id has the deterministic commit id; retrying it returns the
/// original referral (not "already decided") and writes nothing; the same request id with
/// another amount, note or referral is FAILED_PRECONDITION and writes nothing.
#[tokio::test]
async fn a_retried_decision_returns_the_original_referral() {
    let log = log();
    let handoff = handoff(&log);
    let (case_id, dibao, medical) = referred_case(&log).await;
    let civil = department(CIVIL);
    let first = handoff
        .decide_with_request_id(&civil, &dibao, approve(42_000), Some("decide-1"))
        .await
        .unwrap();
    assert_eq!(first.state, pb::ReferralState::Approved as i32);
    let events = log.read_case_all(case_id).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(
        last.commit_id,
        ids::request_commit(&civil.actor(), "decide-1")
    );
    assert_eq!(last.causation_id, "decide-1");
    let head = log.head().await.unwrap();

    let again = handoff
        .decide_with_request_id(&civil, &dibao, approve(42_000), Some("decide-1"))
        .await
        .unwrap();
    assert_eq!(again, first);

    for (referral, input) in [
        (&dibao, approve(41_000)),
        (
            &dibao,
            DecisionInput {
                note: "other".into(),
                ..approve(42_000)
            },
        ),
    ] {
        let err = handoff
            .decide_with_request_id(&civil, referral, input, Some("decide-1"))
            .await
            .unwrap_err();
        let status = status(err);
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(status.message().contains("different request"), "{status:?}");
    }
    // The medical referral belongs to another unit: that unit's key space is its own, so
    // the same request id there is a new request.
    let r = handoff
        .decide_with_request_id(&department(MEDICAL), &medical, approve(1), Some("decide-1"))
        .await
        .unwrap();
    assert_eq!(r.state, pb::ReferralState::Approved as i32);
    // The medical decision alone: the case waits for the linkage step of the dibao
    // decision before it closes.
    let head = head + 1;
    assert_eq!(log.head().await.unwrap(), head);

    // A key used for an acknowledgement is not a decision.
    let err = handoff
        .acknowledge_with_request_id(&civil, &dibao, Some("decide-1"))
        .await
        .unwrap_err();
    assert_eq!(status(err).code(), Code::FailedPrecondition);
    // Without a key a retry is what it always was.
    let err = handoff
        .decide(&civil, &dibao, approve(42_000))
        .await
        .unwrap_err();
    assert_eq!(status(err).code(), Code::FailedPrecondition);
    assert_eq!(log.head().await.unwrap(), head);
}

/// An acknowledgement under a request id is recorded once and answered again on a retry;
/// a malformed request id names the field.
#[tokio::test]
async fn a_retried_acknowledgement_returns_the_original_referral() {
    let log = log();
    let handoff = handoff(&log);
    let (_, dibao, _) = referred_case(&log).await;
    let civil = department(CIVIL);
    let first = handoff
        .acknowledge_with_request_id(&civil, &dibao, Some("ack-1"))
        .await
        .unwrap();
    assert_eq!(first.state, pb::ReferralState::Acknowledged as i32);
    handoff.decide(&civil, &dibao, approve(1)).await.unwrap();
    let head = log.head().await.unwrap();
    let again = handoff
        .acknowledge_with_request_id(&civil, &dibao, Some("ack-1"))
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(log.head().await.unwrap(), head);

    for bad in ["", &"x".repeat(129), "a\u{7}b"] {
        let err = handoff
            .acknowledge_with_request_id(&civil, &dibao, Some(bad))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Invalid { field, .. } if field == "request_id"),
            "{err}"
        );
    }
}

/// Notes refuse control and bidirectional formatting characters, naming the field.
#[tokio::test]
async fn notes_refuse_formatting_characters() {
    let log = log();
    let handoff = handoff(&log);
    let (_, dibao, _) = referred_case(&log).await;
    let head = log.head().await.unwrap();
    for note in ["ok\u{202E}kcab", "a\u{1b}[2Jb", "\u{2066}x"] {
        let err = handoff
            .decide(
                &department(CIVIL),
                &dibao,
                DecisionInput {
                    note: note.into(),
                    ..approve(1)
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Invalid { field, .. } if field == "note"),
            "{err}"
        );
    }
    assert_eq!(log.head().await.unwrap(), head);
}
