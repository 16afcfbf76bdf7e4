//! Referrals that move to other hands, over gRPC: a transfer to the right unit (exactly
//! once, the old referral TRANSFERRED, the case showing the trail), the district
//! supervisor (lists and transfers in its district, decides nothing, sees escalations),
//! and the request for information that pauses the deadline until a terminal answers.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use onecity_domain::events::{
    CaseEvent, REFERRAL_DUE_SOON, REFERRAL_INFORMATION_PROVIDED, REFERRAL_INFORMATION_REQUESTED,
    REFERRAL_OVERDUE, REFERRAL_TRANSFERRED,
};
use onecity_domain::Programme;
use onecity_proto::v1 as pb;
use onecity_service::clock::{Clock as _, ManualClock, SharedClock};
use onecity_tests::{referral, sample_application, tokens, TestServer};
use tonic::Code;

const SUPERVISOR: &str = "demo-supervisor-120103";

async fn start(dir: &std::path::Path, clock: &ManualClock) -> TestServer {
    let clock = SharedClock(std::sync::Arc::new(clock.clone()));
    TestServer::start_with(dir, move |c| {
        c.clock = clock;
        c.escalation_days = 5;
        c.deadline_tick_ms = 20;
    })
    .await
}

/// A manual clock at now, to the millisecond (the precision of every stored instant).
fn clock() -> ManualClock {
    ManualClock::new(DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap())
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn transfer(referral_id: &str, to_unit: &str, reason: &str) -> pb::TransferReferralRequest {
    pb::TransferReferralRequest {
        referral_id: referral_id.into(),
        request_id: String::new(),
        to_unit: to_unit.into(),
        reason: reason.into(),
    }
}

/// Asserts an error's code, and that its message names `mentions`.
fn refused<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, mentions: &str) {
    let status = r.expect_err("must be refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(mentions),
        "{:?} does not mention {mentions:?}",
        status.message()
    );
}

/// The referral events of type `event_type` for `referral_id` in the log.
async fn events_of(server: &TestServer, referral_id: &str, event_type: &str) -> usize {
    server
        .whole_log()
        .await
        .into_iter()
        .filter(|e| e.event_type == event_type)
        .filter_map(|e| CaseEvent::decode(&e.event_type, &e.payload).unwrap())
        .filter(|e| e.referral().is_some_and(|r| r.referral_id == referral_id))
        .count()
}

/// Polls (bounded) until `referral_id` has an event of `event_type` in the log.
async fn wait_for_event(server: &TestServer, referral_id: &str, event_type: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while events_of(server, referral_id, event_type).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {event_type} for referral {referral_id}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn list(server: &TestServer, token: &str, q: pb::ListReferralsRequest) -> Vec<pb::Referral> {
    server
        .handoff(token)
        .await
        .list_referrals(q)
        .await
        .unwrap()
        .into_inner()
        .referrals
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_department_transfers_its_referral_once_to_its_department_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let server = start(dir.path(), &clock).await;
    let case = server.submit_handed_off(sample_application()).await;
    let dibao = referral(&case, pb::Programme::Dibao).clone();
    assert_eq!(dibao.department_unit, "civil-affairs@120103");
    let mut civil = server.handoff(tokens::CIVIL_AFFAIRS).await;
    let head = server.head().await;

    // Refusals, each naming its reason, none writing anything.
    refused(
        civil
            .transfer_referral(transfer(
                &dibao.referral_id,
                "medical-security@120101",
                "moved",
            ))
            .await,
        Code::PermissionDenied,
        "another department",
    );
    refused(
        civil
            .transfer_referral(transfer(
                &dibao.referral_id,
                "civil-affairs@120103",
                "moved",
            ))
            .await,
        Code::InvalidArgument,
        "to_unit",
    );
    refused(
        civil
            .transfer_referral(transfer(&dibao.referral_id, "civil-affairs", "moved"))
            .await,
        Code::InvalidArgument,
        "to_unit",
    );
    refused(
        civil
            .transfer_referral(transfer(&dibao.referral_id, "civil-affairs@120101", "  "))
            .await,
        Code::InvalidArgument,
        "reason",
    );
    refused(
        server
            .handoff(tokens::MEDICAL)
            .await
            .transfer_referral(transfer(
                &dibao.referral_id,
                "civil-affairs@120101",
                "moved",
            ))
            .await,
        Code::PermissionDenied,
        "another unit",
    );
    refused(
        server
            .handoff(tokens::TERMINAL)
            .await
            .transfer_referral(transfer(
                &dibao.referral_id,
                "civil-affairs@120101",
                "moved",
            ))
            .await,
        Code::PermissionDenied,
        "transfer",
    );
    assert_eq!(server.head().await, head, "a refusal wrote something");

    // The transfer: one commit, the old referral TRANSFERRED, a new one at Heping with a
    // fresh deadline from the catalogue, counted from the transfer.
    let reason = "household lives in Heping";
    let keyed = pb::TransferReferralRequest {
        request_id: "transfer-1".into(),
        ..transfer(&dibao.referral_id, "civil-affairs@120101", reason)
    };
    let moved = civil
        .transfer_referral(keyed.clone())
        .await
        .unwrap()
        .into_inner();
    let (old, new) = (moved.transferred.unwrap(), moved.issued.unwrap());
    assert_eq!(old.referral_id, dibao.referral_id);
    assert_eq!(old.state, pb::ReferralState::Transferred as i32);
    assert_eq!(old.transferred_to, new.referral_id);
    assert_eq!(old.transfer_unit, "civil-affairs@120101");
    assert_eq!(new.state, pb::ReferralState::Issued as i32);
    assert_eq!(new.department_unit, "civil-affairs@120101");
    assert_eq!(new.transferred_from, dibao.referral_id);
    assert_eq!(new.transfer_unit, "civil-affairs@120103");
    assert_eq!(new.transfer_reason, reason);
    assert_eq!(new.transferred_by, "department:civil-affairs@120103");
    assert_eq!(new.programme, dibao.programme);
    assert_eq!(new.case_id, case.case_id);
    assert_eq!(at(&new.issued_at), clock.now());
    assert_eq!(
        at(&new.due_at),
        onecity_eligibility::Catalogue::embedded().due_at(Programme::Dibao, at(&new.issued_at))
    );

    // A retry with the key answers the same, writing nothing; without it, the machine
    // refuses naming the state.
    let again = civil.transfer_referral(keyed).await.unwrap().into_inner();
    assert_eq!(again.issued.unwrap().referral_id, new.referral_id);
    assert_eq!(
        events_of(&server, &dibao.referral_id, REFERRAL_TRANSFERRED).await,
        1
    );
    refused(
        civil
            .transfer_referral(transfer(&dibao.referral_id, "civil-affairs@120101", reason))
            .await,
        Code::FailedPrecondition,
        "TRANSFERRED",
    );
    refused(
        civil
            .acknowledge_referral(pb::AcknowledgeReferralRequest {
                referral_id: dibao.referral_id.clone(),
                request_id: String::new(),
            })
            .await,
        Code::FailedPrecondition,
        "TRANSFERRED",
    );

    // Heping's civil affairs holds it now; the case shows the trail to a terminal.
    let heping: Vec<String> = list(&server, tokens::CIVIL_AFFAIRS_HEPING, Default::default())
        .await
        .into_iter()
        .map(|r| r.referral_id)
        .collect();
    assert_eq!(heping, std::slice::from_ref(&new.referral_id));
    let seen = server.handed_off(&case.case_id).await;
    assert_eq!(seen.referrals.len(), case.referrals.len() + 1);
    let trail: Vec<&pb::CaseEvent> = seen
        .events
        .iter()
        .filter(|e| e.event_type == REFERRAL_TRANSFERRED)
        .collect();
    assert_eq!(trail.len(), 1);
    assert!(
        trail[0]
            .summary
            .contains("from civil-affairs@120103 to civil-affairs@120101"),
        "{}",
        trail[0].summary
    );
    assert_eq!(trail[0].actor, "department:civil-affairs@120103");

    // Exactly once across a restart: the same two referrals, no third.
    server.stop().await;
    let server = start(dir.path(), &clock).await;
    let heping = list(&server, tokens::CIVIL_AFFAIRS_HEPING, Default::default()).await;
    assert_eq!(heping.len(), 1);
    assert_eq!(
        events_of(&server, &dibao.referral_id, REFERRAL_TRANSFERRED).await,
        1
    );

    // The receiving unit decides it like any other.
    let decided = server
        .handoff(tokens::CIVIL_AFFAIRS_HEPING)
        .await
        .record_decision(pb::RecordDecisionRequest {
            referral_id: new.referral_id.clone(),
            decision: pb::Decision::Approved as i32,
            amount_fen: 120_000,
            note: String::new(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(decided.state, pb::ReferralState::Approved as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supervisor_sees_its_district_moves_referrals_in_it_and_decides_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let server = start(dir.path(), &clock).await;
    let case = server.submit_handed_off(sample_application()).await;
    let housing = referral(&case, pb::Programme::Housing).clone();
    // Another district's referral: moved to Heping by its department first.
    let dibao = referral(&case, pb::Programme::Dibao).clone();
    let heping = server
        .handoff(tokens::CIVIL_AFFAIRS)
        .await
        .transfer_referral(transfer(
            &dibao.referral_id,
            "civil-affairs@120101",
            "lives in Heping",
        ))
        .await
        .unwrap()
        .into_inner()
        .issued
        .unwrap();

    // Every unit's referrals of its district, and no other district's.
    let listed = list(&server, SUPERVISOR, Default::default()).await;
    let units: std::collections::BTreeSet<&str> =
        listed.iter().map(|r| r.department_unit.as_str()).collect();
    assert!(units.len() > 1, "{units:?}");
    assert!(units.iter().all(|u| u.ends_with("@120103")), "{units:?}");
    assert!(!listed.iter().any(|r| r.referral_id == heping.referral_id));
    assert_eq!(listed.len(), case.referrals.len());
    // With the department's filters.
    let only_housing = list(
        &server,
        SUPERVISOR,
        pb::ListReferralsRequest {
            programme: pb::Programme::Housing as i32,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(only_housing.len(), 1);
    assert_eq!(only_housing[0].referral_id, housing.referral_id);

    // It decides nothing, asks nothing and reads no application.
    let mut supervisor = server.handoff(SUPERVISOR).await;
    let head = server.head().await;
    refused(
        supervisor
            .acknowledge_referral(pb::AcknowledgeReferralRequest {
                referral_id: housing.referral_id.clone(),
                request_id: String::new(),
            })
            .await,
        Code::PermissionDenied,
        "acknowledge",
    );
    refused(
        supervisor
            .record_decision(pb::RecordDecisionRequest {
                referral_id: housing.referral_id.clone(),
                decision: pb::Decision::Approved as i32,
                amount_fen: 1,
                note: String::new(),
                request_id: String::new(),
            })
            .await,
        Code::PermissionDenied,
        "decide",
    );
    refused(
        supervisor
            .request_information(pb::RequestInformationRequest {
                referral_id: housing.referral_id.clone(),
                request_id: String::new(),
                what: "x".into(),
            })
            .await,
        Code::PermissionDenied,
        "request information",
    );
    refused(
        server
            .intake(SUPERVISOR)
            .await
            .get_case(pb::GetCaseRequest {
                case_id: case.case_id.clone(),
            })
            .await,
        Code::PermissionDenied,
        "read cases",
    );
    // Not out of its district, and not a referral of another district.
    refused(
        supervisor
            .transfer_referral(transfer(&housing.referral_id, "housing@120101", "x"))
            .await,
        Code::PermissionDenied,
        "out of its district",
    );
    refused(
        supervisor
            .transfer_referral(transfer(&heping.referral_id, "housing@120103", "x"))
            .await,
        Code::PermissionDenied,
        "another district",
    );
    assert_eq!(server.head().await, head, "a refusal wrote something");

    // Any unit of its district, another department included.
    let moved = supervisor
        .transfer_referral(transfer(
            &housing.referral_id,
            "civil-affairs@120103",
            "rental subsidy handled by civil affairs this year",
        ))
        .await
        .unwrap()
        .into_inner();
    let new = moved.issued.unwrap();
    assert_eq!(new.department_unit, "civil-affairs@120103");
    assert_eq!(new.transferred_by, "supervisor:120103");
    let civil = list(&server, tokens::CIVIL_AFFAIRS, Default::default()).await;
    assert!(civil.iter().any(|r| r.referral_id == new.referral_id));

    // Escalations reach the supervisor's stream.
    let due = case
        .referrals
        .iter()
        .filter(|r| r.department_unit.ends_with("@120103"))
        .map(|r| at(&r.due_at))
        .max()
        .unwrap()
        .max(at(&new.due_at));
    clock.set(due + TimeDelta::days(6));
    let mut stream = supervisor
        .stream_referrals(pb::StreamReferralsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let escalated = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let r = stream.message().await.unwrap().unwrap().referral.unwrap();
            assert!(
                r.department_unit.ends_with("@120103"),
                "{}",
                r.department_unit
            );
            if !r.escalated_at.is_empty() {
                return r;
            }
        }
    })
    .await
    .expect("the supervisor's stream shows an escalation");
    assert!(escalated.overdue);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_information_pauses_the_deadline_until_a_terminal_provides_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let server = start(dir.path(), &clock).await;
    let case = server.submit_handed_off(sample_application()).await;
    let dibao = referral(&case, pb::Programme::Dibao).clone();
    let medical = referral(&case, pb::Programme::Medical).clone();
    let mut civil = server.handoff(tokens::CIVIL_AFFAIRS).await;

    refused(
        civil
            .request_information(pb::RequestInformationRequest {
                referral_id: dibao.referral_id.clone(),
                request_id: String::new(),
                what: String::new(),
            })
            .await,
        Code::InvalidArgument,
        "what",
    );
    refused(
        server
            .handoff(tokens::MEDICAL)
            .await
            .request_information(pb::RequestInformationRequest {
                referral_id: dibao.referral_id.clone(),
                request_id: String::new(),
                what: "payslips".into(),
            })
            .await,
        Code::PermissionDenied,
        "another unit",
    );

    let what = "tenancy contract and last three payslips";
    let asked = civil
        .request_information(pb::RequestInformationRequest {
            referral_id: dibao.referral_id.clone(),
            request_id: "ask-1".into(),
            what: what.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(asked.state, pb::ReferralState::NeedsInfo as i32);
    assert_eq!(asked.information_requested, what);
    let asked_at = clock.now();
    assert_eq!(at(&asked.information_requested_at), asked_at);

    // The terminal sees what is asked for.
    let seen = server.handed_off(&case.case_id).await;
    let r = seen
        .referrals
        .iter()
        .find(|r| r.referral_id == dibao.referral_id)
        .unwrap();
    assert_eq!(r.state, pb::ReferralState::NeedsInfo as i32);
    assert_eq!(r.information_requested, what);
    assert!(seen
        .events
        .iter()
        .any(|e| e.event_type == REFERRAL_INFORMATION_REQUESTED && e.summary.contains(what)));

    // Nobody decides while the household owes the answer.
    refused(
        civil
            .record_decision(pb::RecordDecisionRequest {
                referral_id: dibao.referral_id.clone(),
                decision: pb::Decision::Approved as i32,
                amount_fen: 1,
                note: String::new(),
                request_id: String::new(),
            })
            .await,
        Code::FailedPrecondition,
        "NEEDS_INFO",
    );

    // Past dibao's deadline: the running medical referral goes overdue, the paused dibao
    // referral gets nothing (the tick that wrote medical's looked at dibao too).
    let paused = TimeDelta::days(40);
    assert!(asked_at + paused > at(&dibao.due_at));
    clock.advance(paused);
    wait_for_event(&server, &medical.referral_id, REFERRAL_OVERDUE).await;
    assert_eq!(
        events_of(&server, &dibao.referral_id, REFERRAL_OVERDUE).await,
        0
    );
    assert_eq!(
        events_of(&server, &dibao.referral_id, REFERRAL_DUE_SOON).await,
        0
    );

    // Only a terminal answers, on the right case, with something said.
    let provide = |case_id: &str, note: &str| pb::ProvideInformationRequest {
        case_id: case_id.into(),
        referral_id: dibao.referral_id.clone(),
        request_id: String::new(),
        note: note.into(),
    };
    refused(
        server
            .intake(tokens::CIVIL_AFFAIRS)
            .await
            .provide_information(provide(&case.case_id, "scanned"))
            .await,
        Code::PermissionDenied,
        "provide information",
    );
    refused(
        server
            .intake(tokens::TERMINAL)
            .await
            .provide_information(provide(&uuid::Uuid::now_v7().to_string(), "scanned"))
            .await,
        Code::NotFound,
        "",
    );
    refused(
        server
            .intake(tokens::TERMINAL)
            .await
            .provide_information(provide(&case.case_id, ""))
            .await,
        Code::InvalidArgument,
        "note",
    );

    let mut terminal = server.intake(tokens::TERMINAL).await;
    let keyed = pb::ProvideInformationRequest {
        request_id: "provide-1".into(),
        ..provide(&case.case_id, "contract and payslips scanned, 4 pages")
    };
    let resumed = terminal
        .provide_information(keyed.clone())
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(resumed.state, pb::ReferralState::Acknowledged as i32);
    // The department loses none of its period to the wait.
    assert_eq!(at(&resumed.due_at), at(&dibao.due_at) + paused);
    assert_eq!(
        resumed.information_provided,
        "contract and payslips scanned, 4 pages"
    );
    let again = terminal
        .provide_information(keyed)
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(again.due_at, resumed.due_at);
    // Counted by event, not by the log's head: the deadline worker is writing other
    // referrals' events meanwhile, the clock having jumped.
    assert_eq!(
        events_of(&server, &dibao.referral_id, REFERRAL_INFORMATION_PROVIDED).await,
        1,
        "the retry wrote again"
    );
    refused(
        terminal
            .provide_information(provide(&case.case_id, "more"))
            .await,
        Code::FailedPrecondition,
        "ACKNOWLEDGED",
    );

    // The clock runs again: past the moved deadline it is overdue.
    clock.set(at(&resumed.due_at) + TimeDelta::seconds(1));
    wait_for_event(&server, &dibao.referral_id, REFERRAL_OVERDUE).await;
}
