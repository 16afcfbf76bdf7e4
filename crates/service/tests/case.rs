//! The shared case plumbing against a real log: folds, commits with the expected version,
//! conflict retries, refusals, and the statuses errors answer with.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use onecity_domain::case::CaseState;
use onecity_domain::events::CaseEvent;
use onecity_domain::Principal;
use onecity_eventlog::memory::MemoryLog;
use onecity_eventlog::{EventLog, Expected, NewEvent};
use onecity_proto::v1 as pb;
use onecity_service::case::{
    append_case_commit, append_with_retries, denied, load_case, Commit, Outcome, Step, Subject,
    MAX_CONFLICT_RETRIES,
};
use onecity_service::{grpc, Error, ErrorClass, Kind};
use tonic_types::StatusExt as _;
use uuid::Uuid;

/// A fresh in-memory log: the core tests need the contract, not a disk.
fn log() -> Arc<dyn EventLog> {
    Arc::new(MemoryLog::new())
}

fn withdrawn(reason: &str) -> NewEvent {
    let e = CaseEvent::ApplicationWithdrawn(pb::ApplicationWithdrawn {
        reason: reason.into(),
    });
    NewEvent::new(e.event_type(), "test", e.encode())
}

async fn open_case(log: &dyn EventLog) -> Uuid {
    let case_id = Uuid::now_v7();
    let e = CaseEvent::ApplicationSubmitted(pb::ApplicationSubmitted::default());
    let new = NewEvent::new(e.event_type(), "test", e.encode());
    log.append(case_id, Expected::NoStream, vec![new], Uuid::now_v7())
        .await
        .unwrap();
    case_id
}

#[tokio::test]
async fn load_case_folds_the_stream_and_names_a_missing_case() {
    let log = log();
    let case_id = open_case(log.as_ref()).await;
    let state = load_case(log.as_ref(), case_id).await.unwrap();
    assert_eq!(state.version, 1);
    assert!(state.submitted.is_some());
    let missing = Uuid::now_v7();
    let err = load_case(log.as_ref(), missing).await.unwrap_err();
    assert!(
        matches!(err, Error::CaseNotFound(id) if id == missing),
        "{err}"
    );
    assert_eq!(err.to_string(), format!("case {missing} not found"));
}

/// A commit decided on a version someone else moved past is decided again from the case as
/// it now is, and written once.
#[tokio::test]
async fn a_conflict_decides_again_from_the_new_version() {
    let log = log();
    let case_id = open_case(log.as_ref()).await;
    let attempts = AtomicUsize::new(0);
    let outcome = append_with_retries(log.as_ref(), case_id, |n| {
        let log = Arc::clone(&log);
        let attempts = &attempts;
        async move {
            attempts.fetch_add(1, Ordering::Relaxed);
            let version = load_case(log.as_ref(), case_id).await?.version;
            if n == 0 {
                // Someone else writes between this attempt's read and its append.
                log.append(
                    case_id,
                    Expected::Any,
                    vec![withdrawn("other")],
                    Uuid::now_v7(),
                )
                .await?;
            }
            Ok::<_, Error>(Step::<(), u64>::Append(
                Commit {
                    version,
                    events: vec![withdrawn("mine")],
                    commit_id: Uuid::now_v7(),
                },
                version,
            ))
        }
    })
    .await
    .unwrap();
    assert_eq!(attempts.load(Ordering::Relaxed), 2);
    let Outcome::Appended(decided_on, appended) = outcome else {
        panic!("nothing appended");
    };
    assert_eq!((decided_on, appended.first_version), (2, 3));
    assert!(!appended.deduplicated);
}

/// A case that changes under every attempt ends the call with its own error, not as an
/// unavailable log.
#[tokio::test]
async fn endless_conflicts_are_their_own_error() {
    let log = log();
    let case_id = open_case(log.as_ref()).await;
    let attempts = AtomicUsize::new(0);
    let err = append_with_retries(log.as_ref(), case_id, |_| {
        let log = Arc::clone(&log);
        let attempts = &attempts;
        async move {
            attempts.fetch_add(1, Ordering::Relaxed);
            let version = load_case(log.as_ref(), case_id).await?.version;
            log.append(
                case_id,
                Expected::Any,
                vec![withdrawn("other")],
                Uuid::now_v7(),
            )
            .await?;
            Ok::<_, Error>(Step::<()>::Append(
                Commit {
                    version,
                    events: vec![withdrawn("mine")],
                    commit_id: Uuid::now_v7(),
                },
                (),
            ))
        }
    })
    .await
    .unwrap_err();
    assert_eq!(attempts.load(Ordering::Relaxed), MAX_CONFLICT_RETRIES);
    assert!(
        matches!(err, Error::ConflictRetriesExhausted { case_id: c } if c == case_id),
        "{err}"
    );
    let status = grpc::status(err);
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(
        status.message(),
        format!("case {case_id} kept changing; try again")
    );
}

/// Nothing to write writes nothing; the same commit id twice is written once.
#[tokio::test]
async fn done_writes_nothing_and_a_replayed_commit_is_deduplicated() {
    let log = log();
    let case_id = open_case(log.as_ref()).await;
    let outcome = append_case_commit(log.as_ref(), case_id, |state| {
        Ok::<_, Error>(Step::<u64>::Done(state.version))
    })
    .await
    .unwrap();
    assert!(matches!(outcome, Outcome::Unchanged(1)));
    assert_eq!(log.head().await.unwrap(), 1);

    let commit_id = Uuid::now_v7();
    let write = |_: &CaseState| {
        Ok::<_, Error>(Step::Append(
            Commit {
                version: 1,
                events: vec![withdrawn("once")],
                commit_id,
            },
            "written",
        ))
    };
    let first = append_case_commit(log.as_ref(), case_id, write)
        .await
        .unwrap();
    assert!(matches!(first, Outcome::Appended("written", a) if !a.deduplicated));
    // Decided again on the version it first extended: answered by the commit id.
    let again = append_case_commit(log.as_ref(), case_id, write)
        .await
        .unwrap();
    assert!(matches!(again, Outcome::Appended(_, a) if a.deduplicated));
    assert_eq!(again.into_answer(), "written");
    assert_eq!(log.head().await.unwrap(), 2);
}

#[test]
fn denied_names_the_kind_of_principal_and_the_action() {
    let principal = Principal::Service { id: "s".into() };
    let err = denied(&principal, "read cases", Subject::Case(Uuid::nil()));
    assert_eq!(
        err.to_string(),
        "permission denied: service principals may not read cases"
    );
    let status = grpc::status(err);
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        status.message(),
        "permission denied: service principals may not read cases"
    );
}

/// A service error of bad input answers INVALID_ARGUMENT with its message and a
/// `BadRequest` field violation naming the field.
#[test]
fn invalid_input_carries_a_field_violation() {
    #[derive(Debug, thiserror::Error)]
    #[error("invalid {field}: {reason}")]
    struct Invalid {
        field: String,
        reason: String,
    }
    impl ErrorClass for Invalid {
        fn into_kind(self) -> Kind {
            Kind::Invalid {
                field: self.field,
                reason: self.reason,
            }
        }
    }
    let status = grpc::status(Invalid {
        field: "application.members[2].id_number".into(),
        reason: "bad check digit".into(),
    });
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "invalid application.members[2].id_number: bad check digit"
    );
    let bad = status.get_details_bad_request().expect("a BadRequest");
    assert_eq!(bad.field_violations.len(), 1);
    assert_eq!(
        bad.field_violations[0].field,
        "application.members[2].id_number"
    );
    assert_eq!(bad.field_violations[0].description, "bad check digit");
}

/// Log errors answer the way the log answers them.
#[test]
fn log_errors_keep_the_log_mapping() {
    let status = grpc::status(Error::Log(onecity_eventlog::Error::Unavailable(
        "closing".into(),
    )));
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(status.message(), "event log unavailable: closing");
}
