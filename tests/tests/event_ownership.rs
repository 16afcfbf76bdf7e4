//! Roles own event types, over real gRPC: a service token with `roles` may append only its
//! roles' event types and save only its roles' checkpoints; the roles, each in its own
//! server reaching one log server with its own role's token, still route, decide and
//! withdraw cases end to end.

use onecity::config::{LogSpec, PrincipalKind, Role, TokenConfig};
use onecity_proto::v1 as pb;
use onecity_tests::{referral, sample_application, submission, tokens, TestServer};
use tonic::Code;
use uuid::Uuid;

const INTAKE: &str = "token-of-intake-1";
const ELIGIBILITY: &str = "token-of-eligibility-1";
const HANDOFF: &str = "token-of-handoff-1";

fn service(token: &str, id: &str, roles: &[Role]) -> TokenConfig {
    TokenConfig {
        roles: Some(roles.to_vec()),
        ..TokenConfig::named(token, PrincipalKind::Service, id)
    }
}

/// A log server whose tokens include one service token per role.
async fn log_server(dir: &std::path::Path) -> TestServer {
    TestServer::start_with(dir, |c| {
        c.roles = vec![Role::Log];
        c.tokens.push(service(INTAKE, "intake-1", &[Role::Intake]));
        c.tokens
            .push(service(ELIGIBILITY, "eligibility-1", &[Role::Eligibility]));
        c.tokens
            .push(service(HANDOFF, "handoff-1", &[Role::Handoff]));
    })
    .await
}

fn append(event_type: &str) -> pb::AppendRequest {
    pb::AppendRequest {
        case_id: Uuid::now_v7().to_string(),
        expected: Some(pb::ExpectedVersion {
            kind: pb::ExpectedKind::Any as i32,
            version: 0,
        }),
        events: vec![pb::NewEvent {
            metadata: Default::default(),
            event_id: Uuid::now_v7().to_string(),
            event_type: event_type.into(),
            actor: "test".into(),
            causation_id: String::new(),
            payload: Vec::new(),
        }],
        commit_id: Uuid::now_v7().to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intake_token_cannot_decide_a_referral_or_move_the_handoff_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let server = log_server(dir.path()).await;
    let mut intake = server.log(INTAKE).await;
    let mut handoff = server.log(HANDOFF).await;

    intake
        .append(append("onecity.v1.ApplicationSubmitted"))
        .await
        .expect("intake appends a submission");

    let err = intake
        .append(append("onecity.v1.ReferralDecided"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("onecity.v1.ReferralDecided")
            && err.message().contains("roles [intake]")
            && err.message().contains("service:intake-1"),
        "{}",
        err.message()
    );
    assert!(!err.message().contains(INTAKE), "token echoed");

    // One foreign event in a commit refuses the whole commit.
    let mut mixed = append("onecity.v1.ApplicationSubmitted");
    let mut decided = append("onecity.v1.ReferralDecided").events;
    mixed.events.append(&mut decided);
    let err = intake.append(mixed).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Types no role owns are for principals holding every role only.
    let err = intake
        .append(append("onecity.test.Probe"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    server
        .log(tokens::SERVICE)
        .await
        .append(append("onecity.test.Probe"))
        .await
        .expect("the demo service token holds every role");

    for consumer in ["handoff", "handoff-0of2", "assessment"] {
        let err = intake
            .save_checkpoint(pb::SaveCheckpointRequest {
                consumer: consumer.into(),
                position: 1_000,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{consumer}");
        assert!(err.message().contains(consumer), "{}", err.message());
    }
    let at = |c: &str| pb::LoadCheckpointRequest { consumer: c.into() };
    assert_eq!(
        handoff
            .load_checkpoint(at("handoff"))
            .await
            .unwrap()
            .into_inner()
            .position,
        0,
        "the refused save changed nothing"
    );

    handoff
        .append(append("onecity.v1.ReferralDecided"))
        .await
        .expect("handoff appends a decision");
    handoff
        .save_checkpoint(pb::SaveCheckpointRequest {
            consumer: "handoff-1of2".into(),
            position: 1,
        })
        .await
        .expect("handoff saves its own checkpoint");
    let err = handoff
        .append(append("onecity.v1.EligibilityAssessed"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Exactly the three allowed appends were written.
    let events = server.whole_log().await;
    let written: Vec<_> = events
        .iter()
        .filter(|e| e.event_type != "onecity.v1.PersonalDataRead")
        .map(|e| (e.event_type.as_str(), e.appended_by.as_str()))
        .collect();
    assert_eq!(
        written,
        [
            ("onecity.v1.ApplicationSubmitted", "service:intake-1"),
            ("onecity.test.Probe", "service:demo-service"),
            ("onecity.v1.ReferralDecided", "service:handoff-1"),
        ]
    );
}

/// Each role in its own server with its own role's token: everything each legitimately
/// writes (submission, reads, assessment, referrals, decision, withdrawal with its
/// cancellations, closing) passes the log server's check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_with_their_own_tokens_route_decide_and_withdraw() {
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_server(log_dir.path()).await;
    let role = |role: Role, token: &'static str| {
        let url = log.url.clone();
        move |c: &mut onecity::config::Config| {
            c.roles = vec![role];
            c.log = Some(LogSpec::Remote(url));
            c.log_token = Some(token.to_owned());
        }
    };
    let dirs = [(); 3].map(|_| tempfile::tempdir().unwrap());
    let intake = TestServer::start_with(dirs[0].path(), role(Role::Intake, INTAKE)).await;
    let _eligibility =
        TestServer::start_with(dirs[1].path(), role(Role::Eligibility, ELIGIBILITY)).await;
    let handoff = TestServer::start_with(dirs[2].path(), role(Role::Handoff, HANDOFF)).await;

    let mut terminal = intake.intake(tokens::TERMINAL).await;
    let submit = || async {
        terminal
            .clone()
            .submit_application(submission(sample_application()))
            .await
            .expect("submit")
            .into_inner()
            .case_id
    };
    let (decided, withdrawn) = (submit().await, submit().await);
    let decided = intake.handed_off(&decided).await;
    let withdrawn = intake.handed_off(&withdrawn).await;

    let mut civil = handoff.handoff(tokens::CIVIL_AFFAIRS).await;
    let dibao = referral(&decided, pb::Programme::Dibao);
    civil
        .acknowledge_referral(pb::AcknowledgeReferralRequest {
            referral_id: dibao.referral_id.clone(),
            ..Default::default()
        })
        .await
        .expect("acknowledge");
    civil
        .record_decision(pb::RecordDecisionRequest {
            referral_id: dibao.referral_id.clone(),
            decision: pb::Decision::Approved as i32,
            amount_fen: 1_000,
            ..Default::default()
        })
        .await
        .expect("decide");
    let after = terminal
        .withdraw_application(pb::WithdrawApplicationRequest {
            case_id: withdrawn.case_id.clone(),
            reason: "moved away".into(),
            request_id: String::new(),
        })
        .await
        .expect("withdraw")
        .into_inner()
        .case
        .unwrap();
    assert_eq!(after.status, pb::CaseStatus::Withdrawn as i32);

    let events = log.whole_log().await;
    let by = |t: &str| -> Vec<&str> {
        let mut v: Vec<&str> = events
            .iter()
            .filter(|e| e.event_type == t)
            .map(|e| e.appended_by.as_str())
            .collect();
        v.dedup();
        v
    };
    assert_eq!(by("onecity.v1.ApplicationSubmitted"), ["service:intake-1"]);
    assert_eq!(
        by("onecity.v1.EligibilityAssessed"),
        ["service:eligibility-1"]
    );
    assert_eq!(by("onecity.v1.ReferralIssued"), ["service:handoff-1"]);
    assert_eq!(by("onecity.v1.ReferralAcknowledged"), ["service:handoff-1"]);
    assert_eq!(by("onecity.v1.ReferralDecided"), ["service:handoff-1"]);
    assert_eq!(by("onecity.v1.ReferralCancelled"), ["service:intake-1"]);
    assert_eq!(by("onecity.v1.ApplicationWithdrawn"), ["service:intake-1"]);
    assert!(
        events
            .iter()
            .any(|e| e.event_type == "onecity.v1.PersonalDataRead"
                && e.appended_by == "service:intake-1"),
        "intake recorded the reads it answered"
    );
}
