//! One household, end to end over real gRPC: submit at a terminal → assessed → one
//! referral per entitled programme at the right unit with the right deadline →
//! departments acknowledge and decide → the case closes.

use std::collections::BTreeMap;

use onecity_proto::v1 as pb;
use onecity_tests::{sample_application, submission, tokens, TestServer};

/// The catalogue of the issue: programme → (department, deadline in days).
fn catalogue() -> BTreeMap<i32, (&'static str, i64)> {
    use pb::Programme as P;
    [
        (P::Dibao, ("civil-affairs", 30)),
        (P::ExtremePoverty, ("civil-affairs", 20)),
        (P::LowIncomeMarginal, ("civil-affairs", 30)),
        (P::RigidExpenditure, ("civil-affairs", 30)),
        (P::Medical, ("medical-security", 15)),
        (P::Education, ("education", 15)),
        (P::Housing, ("housing", 30)),
        (P::Employment, ("human-resources", 15)),
        (P::Temporary, ("civil-affairs", 1)),
        (P::DisasterRelief, ("emergency-management", 3)),
        (P::DisabilitySubsidy, ("disabled-persons-federation", 20)),
        (P::Charity, ("charity", 10)),
    ]
    .into_iter()
    .map(|(p, v)| (p as i32, v))
    .collect()
}

fn department_token(unit: &str) -> String {
    let (dept, district) = unit.split_once('@').unwrap();
    format!("demo-{dept}-{district}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn household_reaches_every_programme_and_case_closes() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut intake = server.intake(tokens::TERMINAL).await;
    let submitted = intake
        .submit_application(submission(sample_application()))
        .await
        .unwrap()
        .into_inner();
    let case_id = submitted.case_id.clone();
    assert_eq!(
        uuid::Uuid::parse_str(&case_id).unwrap().get_version_num(),
        7
    );
    assert!(!submitted.duplicate);

    let case = server.handed_off(&case_id).await;
    assert_eq!(case.assessments.len(), 12, "every programme is assessed");
    let referred: Vec<&pb::Assessment> = case
        .assessments
        .iter()
        .filter(|a| {
            a.outcome == pb::Outcome::Eligible as i32
                || a.outcome == pb::Outcome::NeedsReview as i32
        })
        .collect();
    // The sample household: 3 people on 2,000 yuan, renting, unemployed applicant,
    // a child at primary school.
    for p in [
        pb::Programme::Dibao,
        pb::Programme::Medical,
        pb::Programme::Education,
        pb::Programme::Housing,
        pb::Programme::Employment,
    ] {
        assert!(
            referred.iter().any(|a| a.programme == p as i32),
            "{p:?} should be referred"
        );
    }
    assert!(
        !referred
            .iter()
            .any(|a| a.programme == pb::Programme::Charity as i32),
        "charity only when nothing else fits"
    );
    assert_eq!(
        case.referrals.len(),
        referred.len(),
        "one referral per entitled programme"
    );
    let submitted_at = chrono::DateTime::parse_from_rfc3339(&case.submitted_at).unwrap();
    let cat = catalogue();
    for r in &case.referrals {
        let (dept, days) = cat[&r.programme];
        assert_eq!(r.department_unit, format!("{dept}@120103"));
        assert_eq!(r.state, pb::ReferralState::Issued as i32);
        let due = chrono::DateTime::parse_from_rfc3339(&r.due_at).unwrap();
        let programme = onecity_domain::Programme::from_proto(r.programme).unwrap();
        let shipped = onecity_eligibility::Catalogue::embedded();
        assert_eq!(
            shipped.deadline_days(programme),
            u32::try_from(days).unwrap()
        );
        assert_eq!(
            due,
            shipped.due_at(programme, submitted_at.with_timezone(&chrono::Utc)),
            "deadline of programme {}",
            r.programme
        );
        if shipped.deadline_unit(programme) == onecity_eligibility::DeadlineUnit::Calendar {
            assert_eq!(due - submitted_at, chrono::TimeDelta::days(days));
        } else {
            assert!(due - submitted_at >= chrono::TimeDelta::days(days));
        }
        assert_eq!(r.case_id, case_id);
    }
    assert_eq!(case.status, pb::CaseStatus::Open as i32);

    // Each department acknowledges and decides its own referrals.
    let last = case.referrals.len() - 1;
    for (i, r) in case.referrals.iter().enumerate() {
        let mut dept = server.handoff(&department_token(&r.department_unit)).await;
        let listed = dept
            .list_referrals(pb::ListReferralsRequest {
                state: pb::ReferralState::Issued as i32,
                page_size: 0,
                page_token: String::new(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(listed
            .referrals
            .iter()
            .any(|x| x.referral_id == r.referral_id));
        assert!(listed
            .referrals
            .iter()
            .all(|x| x.department_unit == r.department_unit));
        let acked = dept
            .acknowledge_referral(pb::AcknowledgeReferralRequest {
                referral_id: r.referral_id.clone(),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .referral
            .unwrap();
        assert_eq!(acked.state, pb::ReferralState::Acknowledged as i32);
        let (decision, amount) = if i % 2 == 0 {
            (pb::Decision::Approved, r.assessed_amount_fen)
        } else {
            (pb::Decision::Denied, 0)
        };
        let decided = dept
            .record_decision(pb::RecordDecisionRequest {
                referral_id: r.referral_id.clone(),
                decision: decision as i32,
                amount_fen: amount,
                note: "checked at home visit".into(),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .referral
            .unwrap();
        assert_eq!(decided.decided_amount_fen, amount);
        let status = intake
            .get_case(pb::GetCaseRequest {
                case_id: case_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .case
            .unwrap()
            .status;
        let want = if i == last {
            pb::CaseStatus::Closed
        } else {
            pb::CaseStatus::Open
        };
        assert_eq!(status, want as i32, "after {} decisions", i + 1);
    }
    let closed = intake
        .get_case(pb::GetCaseRequest {
            case_id: case_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    assert!(closed
        .referrals
        .iter()
        .all(|r| r.state == pb::ReferralState::Approved as i32
            || r.state == pb::ReferralState::Denied as i32));
    assert_eq!(
        closed.events.last().unwrap().event_type,
        "onecity.v1.CaseClosed"
    );
    // The history is the log: versions 1..=n without gaps.
    for (i, e) in closed.events.iter().enumerate() {
        assert_eq!(e.version, i as u64 + 1);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn household_above_every_threshold_is_closed_with_the_assessments_or_sent_to_charity() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut app = sample_application();
    for m in &mut app.members {
        m.monthly_income_fen = 2_000_000;
    }
    app.housing = pb::Housing::OwnedAdequate as i32;
    app.homes_owned = 1;
    app.consent_to_share = false;
    let case = server.submit_handed_off(app).await;
    assert!(case.referrals.is_empty());
    assert_eq!(
        case.status,
        pb::CaseStatus::Closed as i32,
        "no referral: closed with the assessments as the answer"
    );
    assert_eq!(case.assessments.len(), 12);
    server.stop().await;
}
