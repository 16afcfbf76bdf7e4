//! The assessment worker against a real sled log: one assessment per case, appended right
//! after the submission, none for a case withdrawn first, and replays change nothing.

use std::sync::Arc;

use onecity_assessment::{Assessor, Done};
use onecity_domain::events::{CaseEvent, APPLICATION_WITHDRAWN, ELIGIBILITY_ASSESSED};
use onecity_domain::fixtures::sample_application;
use onecity_eligibility::{Catalogue, PolicyBook};
use onecity_eventlog::{EventLog, Expected, NewEvent, RecordedEvent};
use onecity_eventlog_sled::{SledConfig, SledLog};
use onecity_proto::v1 as pb;
use uuid::Uuid;

struct Setup {
    _dir: tempfile::TempDir,
    log: Arc<SledLog>,
    worker: Assessor,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(SledLog::open(dir.path(), SledConfig::default()).unwrap());
    let worker = Assessor::new(
        Arc::clone(&log) as Arc<dyn EventLog>,
        Arc::new(PolicyBook::embedded_default()),
        Arc::new(Catalogue::embedded()),
    );
    Setup {
        _dir: dir,
        log,
        worker,
    }
}

async fn append(log: &SledLog, case_id: Uuid, event: &CaseEvent) {
    let new = NewEvent::new(event.event_type(), "test", event.encode());
    log.append(case_id, Expected::Any, vec![new], Uuid::now_v7())
        .await
        .unwrap();
}

/// Opens a case with the fixture household and returns its submission as stored.
async fn submit(log: &SledLog) -> RecordedEvent {
    let case_id = Uuid::now_v7();
    let submitted = CaseEvent::ApplicationSubmitted(pb::ApplicationSubmitted {
        application: Some(sample_application()),
        terminal_id: "T-120103-01".into(),
        street_office: "demo".into(),
        request_id: case_id.to_string(),
        submitted_at: "2025-09-01T09:00:00Z".into(),
        duplicate_override_reason: String::new(),
    });
    append(log, case_id, &submitted).await;
    log.read_case(case_id, 1, 1).await.unwrap().remove(0)
}

fn types(events: &[RecordedEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

#[tokio::test]
async fn a_new_case_is_assessed_once_and_a_replay_changes_nothing() {
    let s = setup();
    let submitted = submit(&s.log).await;
    assert_eq!(s.worker.process(&submitted).await.unwrap(), Done::Assessed);
    assert_eq!(s.worker.process(&submitted).await.unwrap(), Done::Skipped);
    let events = s.log.read_case_all(submitted.case_id).await.unwrap();
    assert_eq!(types(&events)[1..], [ELIGIBILITY_ASSESSED]);
    let assessed = &events[1];
    assert_eq!(
        assessed.causation_id,
        submitted.event_id.to_string(),
        "the assessment names the submission it assessed"
    );
    let Some(CaseEvent::EligibilityAssessed(a)) =
        CaseEvent::decode(&assessed.event_type, &assessed.payload).unwrap()
    else {
        panic!("an assessment decodes as one");
    };
    assert_eq!(a.assessments.len(), 12);
}

/// The first append expects the case right after its submission; a withdrawal in between
/// makes it conflict, and the case read then shows there is nothing to assess.
#[tokio::test]
async fn a_case_withdrawn_before_its_assessment_is_not_assessed() {
    let s = setup();
    let submitted = submit(&s.log).await;
    let withdrawn = CaseEvent::ApplicationWithdrawn(pb::ApplicationWithdrawn {
        reason: "resident moved away".into(),
    });
    append(&s.log, submitted.case_id, &withdrawn).await;
    assert_eq!(s.worker.process(&submitted).await.unwrap(), Done::Skipped);
    let events = s.log.read_case_all(submitted.case_id).await.unwrap();
    assert_eq!(types(&events)[1..], [APPLICATION_WITHDRAWN]);
}

/// The worker names its own checkpoint, per partition.
#[test]
fn the_worker_owns_its_checkpoint_names() {
    use onecity_domain::Partition;
    assert_eq!(Assessor::consumer_name(&Partition::default()), "assessment");
    assert_eq!(
        Assessor::consumer_name(&Partition::new(0, 2).unwrap()),
        "assessment-0of2"
    );
}
