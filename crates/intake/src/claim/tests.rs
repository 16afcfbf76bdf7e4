//! Wait-die between submissions that each claim every member at once (module docs).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use onecity_domain::events::{CaseEvent, APPLICATION_SUBMITTED, SUBMISSION_ABANDONED};
use onecity_domain::fixtures::sample_application;
use onecity_domain::{DistrictCode, IdNumber, Principal};
use onecity_eligibility::PolicyBook;
use onecity_eventlog::memory::MemoryLog;
use onecity_eventlog::{EventLog, Expected, Filter, NewEvent};
use onecity_proto::prost::Message;
use onecity_proto::v1 as pb;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{Error, Intake, PersonIndex, PersonKey};

/// Guards against a hang only: every wait below ends on an event of the log.
const GUARD: Duration = Duration::from_secs(20);

struct Setup {
    log: Arc<MemoryLog>,
    intake: Intake,
    stop: CancellationToken,
    app: pb::Application,
    /// The person stream of the application's first member.
    stream: Uuid,
}

fn setup() -> Setup {
    let log = Arc::new(MemoryLog::new());
    let key = PersonKey::new(&[7; 32]).unwrap();
    let app = sample_application();
    let id = IdNumber::parse(&app.members[0].id_number).unwrap();
    let stream = onecity_domain::ids::person_stream(&key.hash(&id));
    let stop = CancellationToken::new();
    let dyn_log: Arc<dyn EventLog> = log.clone();
    let index = PersonIndex::start(Arc::clone(&dyn_log), key, stop.clone());
    // Long enough that a submission which waited instead of giving way would trip GUARD.
    let intake = Intake::new(dyn_log, Arc::new(PolicyBook::embedded_default()))
        .with_person_index(index)
        .with_claim_timing(Duration::from_secs(60), Duration::from_secs(3600));
    Setup {
        log,
        intake,
        stop,
        app,
        stream,
    }
}

fn terminal() -> Principal {
    Principal::Terminal {
        id: "T-120103-01".into(),
        district: DistrictCode::parse("120103").unwrap(),
        street_office: "Youyi Road street office".into(),
    }
}

/// Another submission's claim of the first member for `holder`, its case not open yet.
async fn pending_claim(s: &Setup, holder: Uuid) {
    let claim = pb::PersonClaimed {
        case_id: holder.to_string(),
        submission: Uuid::now_v7().to_string(),
        r#override: false,
    };
    let event = NewEvent::new(
        onecity_domain::events::PERSON_CLAIMED,
        "terminal:T-120101-01",
        claim.encode_to_vec(),
    );
    s.log
        .append(s.stream, Expected::NoStream, vec![event], Uuid::now_v7())
        .await
        .unwrap();
}

/// Opens `holder` with the same household.
async fn open(s: &Setup, holder: Uuid) {
    let event = CaseEvent::ApplicationSubmitted(pb::ApplicationSubmitted {
        application: Some(s.app.clone()),
        ..Default::default()
    });
    let new = NewEvent::new(
        APPLICATION_SUBMITTED,
        "terminal:T-120101-01",
        event.encode(),
    );
    s.log
        .append(holder, Expected::NoStream, vec![new], Uuid::now_v7())
        .await
        .unwrap();
}

/// Position of the first event of `event_type` on `case_id` (or on any case but it, with
/// `other`), waiting for it.
async fn position_of(s: &Setup, event_type: &str, case: Uuid, other: bool) -> (Uuid, u64) {
    let mut events = s
        .log
        .subscribe(1, Filter::prefixes([event_type]))
        .await
        .unwrap();
    tokio::time::timeout(GUARD, async {
        while let Some(e) = events.next().await {
            let e = e.unwrap();
            if (e.case_id == case) != other {
                return (e.case_id, e.position);
            }
        }
        panic!("subscription ended")
    })
    .await
    .expect("the event never came")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_younger_submission_gives_way_at_once_to_an_older_pending_one() {
    let s = setup();
    let older = Uuid::now_v7();
    pending_claim(&s, older).await;
    let submit = {
        let (intake, app) = (s.intake.clone(), s.app.clone());
        tokio::spawn(async move { intake.submit(&terminal(), "req-1", Some(app)).await })
    };
    // It voids its own case id while the older one is still pending: it did not wait.
    let (own, voided_at) = position_of(&s, SUBMISSION_ABANDONED, older, true).await;
    assert_ne!(own, older);
    open(&s, older).await;
    let (_, opened_at) = position_of(&s, APPLICATION_SUBMITTED, older, false).await;
    assert!(voided_at < opened_at);
    match tokio::time::timeout(GUARD, submit).await.unwrap().unwrap() {
        Err(Error::AlreadyExists { case_id }) => assert_eq!(case_id, older),
        other => panic!("expected ALREADY_EXISTS naming the older case, got {other:?}"),
    }
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_submission_waits_for_a_younger_one_and_never_voids_first() {
    let s = setup();
    // A case id from an hour ahead: younger than any the submission takes.
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        (chrono::Utc::now().timestamp() + 3600) as u64,
        0,
    );
    let younger = Uuid::new_v7(ts);
    pending_claim(&s, younger).await;
    let submit = {
        let (intake, app) = (s.intake.clone(), s.app.clone());
        tokio::spawn(async move { intake.submit(&terminal(), "req-2", Some(app)).await })
    };
    open(&s, younger).await;
    match tokio::time::timeout(GUARD, submit).await.unwrap().unwrap() {
        Err(Error::AlreadyExists { case_id }) => assert_eq!(case_id, younger),
        other => panic!("expected ALREADY_EXISTS naming the younger case, got {other:?}"),
    }
    // Whatever it voided, it voided after the case it waited for opened.
    let (_, opened_at) = position_of(&s, APPLICATION_SUBMITTED, younger, false).await;
    let head = s.log.head().await.unwrap();
    let voids: Vec<u64> = s
        .log
        .read_all(1, head as usize)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == SUBMISSION_ABANDONED)
        .map(|e| e.position)
        .collect();
    assert!(
        voids.iter().all(|p| *p > opened_at),
        "{voids:?} vs {opened_at}"
    );
    s.stop.cancel();
}
