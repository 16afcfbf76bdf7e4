//! The linkage worker on a memory log: a recognition decision updates, cancels or issues
//! the linked referrals in one commit, exactly once; a dead end ends in one charity
//! referral when the household consented, and the case closes without.

use std::sync::Arc;

use onecity_domain::case::CaseStatus;
use onecity_domain::events::{
    CaseEvent, CASE_CLOSED, RECOGNITION_LINKED, REFERRAL_BASIS_UPDATED, REFERRAL_CANCELLED,
    REFERRAL_ISSUED,
};
use onecity_domain::fixtures::sample_application;
use onecity_domain::{ids, validate_application, Principal, Programme};
use onecity_eligibility::{assess, Catalogue, PolicyBook};
use onecity_eventlog::memory::MemoryLog;
use onecity_eventlog::{EventLog, Expected, NewEvent, RecordedEvent};
use onecity_handoff::{DecisionInput, Handoff, HandoffWorker, Inbox, LinkageWorker, Linked};
use onecity_proto::v1 as pb;
use onecity_service::case::load_case;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn log() -> Arc<dyn EventLog> {
    Arc::new(MemoryLog::new())
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

fn linkage(log: &Arc<dyn EventLog>) -> LinkageWorker {
    LinkageWorker::new(
        Arc::clone(log),
        Arc::new(PolicyBook::embedded_default()),
        Arc::new(Catalogue::embedded()),
    )
}

/// Submits, assesses (with the real rules) and hands off `app`; returns the case id.
async fn referred(log: &Arc<dyn EventLog>, app: pb::Application) -> Uuid {
    referred_with(log, app, |_| {}).await
}

/// [`referred`], with `edit` applied to the assessments before they are stored.
async fn referred_with(
    log: &Arc<dyn EventLog>,
    app: pb::Application,
    edit: impl FnOnce(&mut Vec<pb::Assessment>),
) -> Uuid {
    let case_id = Uuid::now_v7();
    let submitted = CaseEvent::ApplicationSubmitted(pb::ApplicationSubmitted {
        application: Some(app.clone()),
        terminal_id: "T-120103-01".into(),
        street_office: "Hexi".into(),
        request_id: case_id.to_string(),
        submitted_at: "2025-09-01T09:00:00Z".into(),
        duplicate_override_reason: String::new(),
    });
    append(log.as_ref(), case_id, &submitted).await;
    let valid = validate_application(app, onecity_domain::today()).unwrap();
    let policies = PolicyBook::embedded_default();
    let policy = policies.in_force(valid.application_date).unwrap();
    let mut assessments: Vec<pb::Assessment> = assess(&valid, policy, &Catalogue::embedded())
        .into_iter()
        .map(Into::into)
        .collect();
    edit(&mut assessments);
    let assessed = CaseEvent::EligibilityAssessed(pb::EligibilityAssessed {
        assessments,
        policy_version: policy.id().to_owned(),
    });
    let assessed = append(log.as_ref(), case_id, &assessed).await;
    HandoffWorker::new(Arc::clone(log), Arc::new(Catalogue::embedded()))
        .process(&assessed)
        .await
        .unwrap();
    case_id
}

fn handoff(log: &Arc<dyn EventLog>) -> Handoff {
    Handoff::new(
        Arc::clone(log),
        Inbox::start(Arc::clone(log), CancellationToken::new()),
    )
}

fn unit_of(r: &pb::Referral) -> Principal {
    Principal::Department {
        unit: r.department_unit.parse().unwrap(),
    }
}

/// Decides the referral of `programme` as its own department; returns the decision event.
async fn decide(
    log: &Arc<dyn EventLog>,
    case_id: Uuid,
    programme: Programme,
    approved: bool,
) -> RecordedEvent {
    let state = load_case(log.as_ref(), case_id).await.unwrap();
    let id = ids::referral_id(case_id, programme).to_string();
    let r = state.referral(&id).unwrap().clone();
    let decision = DecisionInput {
        decision: if approved {
            pb::Decision::Approved
        } else {
            pb::Decision::Denied
        } as i32,
        amount_fen: 0,
        note: String::new(),
    };
    handoff(log)
        .decide(&unit_of(&r), &id, decision)
        .await
        .unwrap();
    let events = log.read_case_all(case_id).await.unwrap();
    events
        .into_iter()
        .rev()
        .find(|e| e.event_type == onecity_domain::events::REFERRAL_DECIDED)
        .unwrap()
}

fn referral(state: &onecity_domain::case::CaseState, case_id: Uuid, p: Programme) -> pb::Referral {
    state
        .referral(&ids::referral_id(case_id, p).to_string())
        .unwrap_or_else(|| panic!("no {} referral", p.as_str()))
        .clone()
}

fn count(events: &[RecordedEvent], event_type: &str) -> usize {
    events.iter().filter(|e| e.event_type == event_type).count()
}

const LINKED: [Programme; 4] = [
    Programme::Medical,
    Programme::Education,
    Programme::Housing,
    Programme::Employment,
];
const CIVIL: &str = "civil-affairs@120103";

/// The sample household is predicted ELIGIBLE for dibao and extreme-poverty support, so
/// its medical, education, housing and employment referrals rest on the predicted
/// recognition. Denying dibao while extreme poverty is still predicted leaves them met:
/// each is updated to DENIED with the unit and date, in one commit, once.
#[tokio::test]
async fn a_denial_still_met_another_way_updates_the_basis_once() {
    let log = log();
    let case_id = referred(&log, sample_application()).await;
    let before = load_case(log.as_ref(), case_id).await.unwrap();
    for p in LINKED {
        assert_eq!(
            referral(&before, case_id, p).basis,
            pb::ReferralBasis::Predicted as i32
        );
    }
    assert_eq!(
        referral(&before, case_id, Programme::Dibao).basis,
        pb::ReferralBasis::Unspecified as i32
    );
    let decided = decide(&log, case_id, Programme::Dibao, false).await;
    let worker = linkage(&log);
    assert_eq!(
        worker.process(&decided).await.unwrap(),
        Linked {
            decisions: 1,
            charity: 0
        }
    );
    let events = log.read_case_all(case_id).await.unwrap();
    assert_eq!(count(&events, REFERRAL_BASIS_UPDATED), 4);
    assert_eq!(count(&events, RECOGNITION_LINKED), 1);
    let linked: Vec<&RecordedEvent> = events
        .iter()
        .filter(|e| e.version > decided.version)
        .collect();
    assert!(
        linked.iter().all(|e| e.commit_id == linked[0].commit_id),
        "one commit"
    );
    assert_eq!(
        linked[0].commit_id,
        ids::linkage_commit(
            case_id,
            &ids::referral_id(case_id, Programme::Dibao).to_string()
        )
    );
    let state = load_case(log.as_ref(), case_id).await.unwrap();
    let today = onecity_domain::format_date(onecity_domain::today());
    for p in LINKED {
        let r = referral(&state, case_id, p);
        assert_eq!(r.state, pb::ReferralState::Issued as i32);
        assert_eq!(r.basis, pb::ReferralBasis::RecognitionDenied as i32);
        assert_eq!(r.basis_unit, CIVIL);
        assert_eq!(r.basis_decided_on, today);
    }
    // Replays (the same event, a restart from an older checkpoint) write nothing.
    assert_eq!(worker.process(&decided).await.unwrap(), Linked::default());
    assert_eq!(
        linkage(&log).process(&decided).await.unwrap(),
        Linked::default()
    );
    assert_eq!(
        log.read_case_all(case_id).await.unwrap().len(),
        events.len()
    );
}

/// Once no recognition is left, the linked referrals are cancelled with the reason; every
/// public referral has then ended, and the consenting household gets exactly one charity
/// referral listing the denials. The case stays open for it.
#[tokio::test]
async fn no_recognition_left_cancels_and_ends_in_one_charity_referral() {
    let log = log();
    let case_id = referred(&log, sample_application()).await;
    let worker = linkage(&log);
    let first = decide(&log, case_id, Programme::Dibao, false).await;
    let second = decide(&log, case_id, Programme::ExtremePoverty, false).await;
    // One call catches up with both decisions, one commit each, then the charity one.
    assert_eq!(
        worker.process(&second).await.unwrap(),
        Linked {
            decisions: 2,
            charity: 1
        }
    );
    let state = load_case(log.as_ref(), case_id).await.unwrap();
    let today = onecity_domain::format_date(onecity_domain::today());
    for p in LINKED {
        let r = referral(&state, case_id, p);
        assert_eq!(
            r.state,
            pb::ReferralState::Cancelled as i32,
            "{}",
            p.as_str()
        );
        assert_eq!(r.basis, pb::ReferralBasis::RecognitionDenied as i32);
        assert!(
            r.cancel_reason
                .starts_with("recognition denied by civil-affairs@120103 on ")
                && r.cancel_reason.ends_with(&today),
            "{}",
            r.cancel_reason
        );
    }
    let charity = referral(&state, case_id, Programme::Charity);
    assert_eq!(charity.department_unit, "charity@120103");
    assert_eq!(charity.state, pb::ReferralState::Issued as i32);
    assert!(
        charity
            .summary
            .contains("dibao denied by civil-affairs@120103"),
        "{}",
        charity.summary
    );
    assert!(
        charity
            .summary
            .contains("medical cancelled: recognition denied"),
        "{}",
        charity.summary
    );
    assert_eq!(state.status, CaseStatus::Open);
    assert!(!state.charity_due());
    let events = log.read_case_all(case_id).await.unwrap();
    assert_eq!(count(&events, REFERRAL_CANCELLED), 4);
    assert_eq!(count(&events, RECOGNITION_LINKED), 2);
    // Replays of either decision write nothing more.
    for e in [&first, &second, &first] {
        assert_eq!(worker.process(e).await.unwrap(), Linked::default());
    }
    let again = log.read_case_all(case_id).await.unwrap();
    assert_eq!(again.len(), events.len());
    assert_eq!(
        again
            .iter()
            .filter(|e| e.event_type == REFERRAL_ISSUED && e.version > second.version)
            .count(),
        1
    );
    // The charity's own decision closes the case.
    decide(&log, case_id, Programme::Charity, false).await;
    let state = load_case(log.as_ref(), case_id).await.unwrap();
    assert_eq!(state.status, CaseStatus::Closed);
}

/// Without consent to share there is no charity referral: the linkage commit that ends
/// the last public referral closes the case.
#[tokio::test]
async fn without_consent_no_charity_and_the_case_closes() {
    let log = log();
    let mut app = sample_application();
    app.consent_to_share = false;
    let case_id = referred(&log, app).await;
    decide(&log, case_id, Programme::Dibao, false).await;
    let last = decide(&log, case_id, Programme::ExtremePoverty, false).await;
    let state = load_case(log.as_ref(), case_id).await.unwrap();
    assert_eq!(state.status, CaseStatus::Open, "linkage steps pending");
    assert_eq!(
        linkage(&log).process(&last).await.unwrap(),
        Linked {
            decisions: 2,
            charity: 0
        }
    );
    let state = load_case(log.as_ref(), case_id).await.unwrap();
    assert_eq!(state.status, CaseStatus::Closed);
    assert!(state
        .referral(&ids::referral_id(case_id, Programme::Charity).to_string())
        .is_none());
    let events = log.read_case_all(case_id).await.unwrap();
    assert_eq!(count(&events, CASE_CLOSED), 1);
    assert_eq!(events.last().unwrap().event_type, CASE_CLOSED);
}

/// An approval confirms the linked referrals; the case does not close while the approval
/// waits for its linkage step, even with every referral decided.
#[tokio::test]
async fn an_approval_confirms_and_the_case_waits_for_the_linkage_step() {
    let log = log();
    let case_id = referred(&log, sample_application()).await;
    let first = decide(&log, case_id, Programme::ExtremePoverty, true).await;
    let worker = linkage(&log);
    assert_eq!(worker.process(&first).await.unwrap().decisions, 1);
    let state = load_case(log.as_ref(), case_id).await.unwrap();
    for p in LINKED {
        let r = referral(&state, case_id, p);
        assert_eq!(r.basis, pb::ReferralBasis::RecognitionConfirmed as i32);
        assert_eq!(r.basis_unit, CIVIL);
    }
    for p in LINKED {
        decide(&log, case_id, p, true).await;
    }
    let last = decide(&log, case_id, Programme::Dibao, true).await;
    let state = load_case(log.as_ref(), case_id).await.unwrap();
    assert!(state.all_referrals_final());
    assert_eq!(state.status, CaseStatus::Open);
    assert!(!state.ready_to_close());
    assert_eq!(worker.process(&last).await.unwrap().decisions, 1);
    let state = load_case(log.as_ref(), case_id).await.unwrap();
    assert_eq!(state.status, CaseStatus::Closed);
    // Decided referrals keep their basis: a decision is final.
    assert_eq!(
        referral(&state, case_id, Programme::Medical).state,
        pb::ReferralState::Approved as i32
    );
}

/// A programme the decided recognition newly qualifies for is referred in the linkage
/// commit. Under today's rules a pending recognition already refers every linked
/// programme for review, so the case is built from an assessment in which the disability
/// subsidy was not referred (as an older policy's could be).
#[tokio::test]
async fn a_newly_qualifying_programme_is_referred_once() {
    let log = log();
    let mut app = sample_application();
    app.members[2].disability = Some(pb::Disability {
        kind: pb::DisabilityKind::try_from(1).unwrap() as i32,
        grade: 3,
    });
    let case_id = referred_with(&log, app, |assessments| {
        for a in assessments.iter_mut() {
            if a.programme == pb::Programme::DisabilitySubsidy as i32 {
                a.outcome = pb::Outcome::Ineligible as i32;
            }
        }
    })
    .await;
    let id = ids::referral_id(case_id, Programme::DisabilitySubsidy).to_string();
    let state = load_case(log.as_ref(), case_id).await.unwrap();
    assert!(state.referral(&id).is_none());
    let decided = decide(&log, case_id, Programme::Dibao, true).await;
    let worker = linkage(&log);
    assert_eq!(worker.process(&decided).await.unwrap().decisions, 1);
    assert_eq!(worker.process(&decided).await.unwrap(), Linked::default());
    let state = load_case(log.as_ref(), case_id).await.unwrap();
    let r = state.referral(&id).unwrap();
    assert_eq!(r.state, pb::ReferralState::Issued as i32);
    assert_eq!(r.outcome, pb::Outcome::Eligible as i32);
    assert_eq!(r.basis, pb::ReferralBasis::RecognitionConfirmed as i32);
    assert!(r.assessed_amount_fen > 0);
    let events = log.read_case_all(case_id).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event_type == REFERRAL_ISSUED && e.version > decided.version)
            .count(),
        1
    );
}

/// Events of other types, and cases of other partitions' workers, are left alone.
#[tokio::test]
async fn other_events_are_ignored() {
    let log = log();
    let case_id = referred(&log, sample_application()).await;
    let events = log.read_case_all(case_id).await.unwrap();
    for e in &events {
        assert_eq!(linkage(&log).process(e).await.unwrap(), Linked::default());
    }
    assert_eq!(
        log.read_case_all(case_id).await.unwrap().len(),
        events.len()
    );
}
