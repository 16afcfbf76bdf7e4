//! Person claims over a shared log: several intake instances (as several processes over
//! one JetStream log: they share only the log) open at most one case per person, and a
//! claim whose case never opened is recovered.

use std::sync::Arc;
use std::time::Duration;

use onecity_domain::events::{PERSON_CLAIMED, SUBMISSION_ABANDONED};
use onecity_domain::fixtures::sample_application;
use onecity_domain::{ids, IdNumber, Principal};
use onecity_eligibility::PolicyBook;
use onecity_eventlog::memory::MemoryLog;
use onecity_eventlog::{EventLog, Expected, NewEvent};
use onecity_intake::{Error, Intake, PersonIndex, PersonKey};
use onecity_proto::prost::Message;
use onecity_proto::v1 as pb;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn key() -> PersonKey {
    PersonKey::new(&[42; 32]).unwrap()
}

/// An intake instance of its own (its own index) over `log`.
fn instance(log: &Arc<dyn EventLog>, stop: &CancellationToken) -> Intake {
    Intake::new(Arc::clone(log), Arc::new(PolicyBook::embedded_default()))
        .with_person_index(PersonIndex::start(Arc::clone(log), key(), stop.clone()))
}

fn terminal(n: u8) -> Principal {
    Principal::Terminal {
        id: format!("T-120103-0{n}"),
        district: "120103".parse().unwrap(),
        street_office: "Hexi street office".into(),
    }
}

/// A household of its own: the sample with member numbers from sequence `seq` on.
fn household(seq: u16) -> pb::Application {
    let mut app = sample_application();
    for (i, m) in app.members.iter_mut().enumerate() {
        let birth = chrono::NaiveDate::parse_from_str(&m.birth_date, "%Y-%m-%d").unwrap();
        m.id_number = onecity_domain::fixtures::valid_id_number(
            "120104",
            birth,
            seq.wrapping_mul(3) + i as u16,
        );
    }
    app
}

async fn opened_cases(log: &dyn EventLog) -> Vec<Uuid> {
    log.read_all(1, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == onecity_domain::events::APPLICATION_SUBMITTED)
        .map(|e| e.case_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_racing_on_one_person_open_exactly_one_case() {
    let log: Arc<dyn EventLog> = Arc::new(MemoryLog::new());
    let stop = CancellationToken::new();
    let (a, b) = (instance(&log, &stop), instance(&log, &stop));
    let mut winners = Vec::new();
    for round in 0..60u16 {
        let app = household(round);
        let (a, b, app_a, app_b) = (a.clone(), b.clone(), app.clone(), app);
        let ta = tokio::spawn(async move {
            a.submit(&terminal(1), &format!("a-{round}"), Some(app_a))
                .await
        });
        let tb = tokio::spawn(async move {
            b.submit(&terminal(2), &format!("b-{round}"), Some(app_b))
                .await
        });
        let (ra, rb) = (ta.await.unwrap(), tb.await.unwrap());
        let (won, lost) = match (ra, rb) {
            (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
            other => panic!("round {round}: not exactly one case: {other:?}"),
        };
        match lost {
            Error::AlreadyExists { case_id } => assert_eq!(case_id, won.case_id),
            other => panic!("round {round}: {other:?}"),
        }
        winners.push(won.case_id);
    }
    assert_eq!(opened_cases(log.as_ref()).await, winners);
    stop.cancel();
}

/// Writes a claim of the first sample member for `case_id` by `submission`, as a
/// submission that died before its case would have left it.
async fn dead_claim(log: &dyn EventLog, app: &pb::Application, case_id: Uuid, submission: Uuid) {
    let person = key().hash(&IdNumber::parse(&app.members[0].id_number).unwrap());
    let stream = ids::person_stream(&person);
    let claim = pb::PersonClaimed {
        case_id: case_id.to_string(),
        submission: submission.to_string(),
        r#override: false,
    };
    let new = NewEvent::new(PERSON_CLAIMED, "terminal:dead", claim.encode_to_vec());
    log.append(stream, Expected::Any, vec![new], Uuid::now_v7())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_claim_whose_case_never_opened_blocks_while_young_and_is_voided_when_stale() {
    let log: Arc<dyn EventLog> = Arc::new(MemoryLog::new());
    let stop = CancellationToken::new();
    let app = household(1);
    let dead = Uuid::now_v7();
    dead_claim(log.as_ref(), &app, dead, Uuid::now_v7()).await;

    // Young: the submission waits, then says another is in progress; nothing opens.
    let young = instance(&log, &stop)
        .with_claim_timing(Duration::from_millis(50), Duration::from_secs(3600));
    let err = young
        .submit(&terminal(1), "r-1", Some(app.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InProgress), "{err:?}");
    let status: tonic::Status = err.into();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(opened_cases(log.as_ref()).await.is_empty());

    // Stale: voided, and the submission opens its case.
    let stale = instance(&log, &stop).with_claim_timing(Duration::from_millis(50), Duration::ZERO);
    let opened = stale
        .submit(&terminal(1), "r-1", Some(app.clone()))
        .await
        .unwrap();
    assert_eq!(opened_cases(log.as_ref()).await, [opened.case_id]);
    let voided = log.read_case_all(dead).await.unwrap();
    assert_eq!(voided.len(), 1);
    assert_eq!(voided[0].event_type, SUBMISSION_ABANDONED);
    // The dead submission can no longer open its case.
    let late = NewEvent::new("onecity.v1.ApplicationSubmitted", "terminal:dead", vec![]);
    let err = log
        .append(dead, Expected::NoStream, vec![late], Uuid::now_v7())
        .await
        .unwrap_err();
    assert!(matches!(err, onecity_eventlog::Error::Conflict { .. }));
    // A voided case id is no case.
    let reader = onecity_service::access::Reader::from(Principal::Admin { id: "a".into() });
    let err = stale
        .get_case(&reader, &dead.to_string())
        .await
        .unwrap_err();
    let status: tonic::Status = err.into();
    assert_eq!(status.code(), tonic::Code::NotFound);
    stop.cancel();
}

#[tokio::test]
async fn a_retry_replaces_its_own_dead_attempt_at_once() {
    let log: Arc<dyn EventLog> = Arc::new(MemoryLog::new());
    let stop = CancellationToken::new();
    let app = household(2);
    let principal = terminal(1);
    let Principal::Terminal { id, .. } = &principal else {
        unreachable!()
    };
    let dead = Uuid::now_v7();
    dead_claim(log.as_ref(), &app, dead, ids::submit_commit(id, "r-1")).await;
    // Even with a claim that would count as young for an hour, the same request opens its
    // case: the claim is its own.
    let intake = instance(&log, &stop)
        .with_claim_timing(Duration::from_secs(3600), Duration::from_secs(3600));
    let opened = tokio::time::timeout(
        Duration::from_secs(10),
        intake.submit(&principal, "r-1", Some(app.clone())),
    )
    .await
    .expect("no wait for its own claim")
    .unwrap();
    assert!(!opened.duplicate);
    assert_eq!(opened_cases(log.as_ref()).await, [opened.case_id]);
    // And its retry is the same case.
    let again = intake.submit(&principal, "r-1", Some(app)).await.unwrap();
    assert_eq!((again.case_id, again.duplicate), (opened.case_id, true));
    stop.cancel();
}
