//! `MonitoringService.GetStatistics` over gRPC with a manual clock (docs/monitoring.md,
//! "Statistics"): two households submitted, decisions on several days (the exact median
//! over ranges of odd and even counts), a warning raised and resolved, referrals left to
//! go overdue, a re-verification due and decided; each counted on its day. A supervisor
//! reads its own district only, an admin any; departments are refused; bad input names
//! its field.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use onecity::config::TokenConfig;
use onecity_domain::{beijing_date, beijing_midnight, parse_date};
use onecity_proto::v1 as pb;
use onecity_proto::v1::monitoring_service_client::MonitoringServiceClient;
use onecity_service::clock::{ManualClock, SharedClock};
use onecity_tests::{
    bearer, decide, referral, sample_application, tokens, valid_id_number, TestServer,
};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(30);
const SUPERVISOR: &str = "demo-supervisor-120103";
const SUPERVISOR_HEPING: &str = "test-supervisor-120101";
const HEXI: &str = "120103";

async fn start(dir: &std::path::Path, clock: &ManualClock) -> TestServer {
    let clock = SharedClock(std::sync::Arc::new(clock.clone()));
    TestServer::start_with(dir, move |c| {
        c.clock = clock;
        c.deadline_tick_ms = 20;
        c.tokens
            .push(TokenConfig::supervisor(SUPERVISOR_HEPING, "120101"));
    })
    .await
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn day_of(instant: &str) -> NaiveDate {
    beijing_date(at(instant))
}

fn ask(district: &str, programme: pb::Programme, from: &str, to: &str) -> pb::GetStatisticsRequest {
    pb::GetStatisticsRequest {
        district_code: district.into(),
        programme: programme as i32,
        from: from.into(),
        to: to.into(),
    }
}

fn all(from: &str, to: &str) -> pb::GetStatisticsRequest {
    ask("", pb::Programme::Unspecified, from, to)
}

async fn statistics(
    server: &TestServer,
    token: &str,
    req: pb::GetStatisticsRequest,
) -> Result<pb::GetStatisticsResponse, tonic::Status> {
    MonitoringServiceClient::with_interceptor(server.raw().await, bearer(token))
        .get_statistics(req)
        .await
        .map(tonic::Response::into_inner)
}

/// Polls (bounded) until the statistics `token` reads for `req` satisfy `done`: the
/// projection follows the log within moments.
async fn counted(
    server: &TestServer,
    token: &str,
    req: pb::GetStatisticsRequest,
    what: &str,
    done: impl Fn(&pb::GetStatisticsResponse) -> bool,
) -> pb::GetStatisticsResponse {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = statistics(server, token, req.clone()).await.unwrap();
        if done(&got) {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn linked(case: &pb::Case) -> usize {
    case.events
        .iter()
        .filter(|e| e.event_type == "onecity.v1.RecognitionLinked")
        .count()
}

/// Waits until `linked` recognition decisions of the case are linked (a linkage may issue
/// or cancel referrals); the case then.
async fn linked_case(server: &TestServer, case_id: &str, want: usize) -> pb::Case {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let case = server.case(case_id).await;
        if linked(&case) >= want {
            return case;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "linkage of {case_id}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Referrals issued (not by a transfer) by Beijing day of issue.
fn issued_by_day<'a>(
    referrals: impl Iterator<Item = &'a pb::Referral>,
) -> BTreeMap<NaiveDate, u64> {
    let mut days = BTreeMap::new();
    for r in referrals.filter(|r| r.transferred_from.is_empty()) {
        *days.entry(day_of(&r.issued_at)).or_default() += 1;
    }
    days
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_count_each_event_on_its_day_for_those_who_may_read_them() {
    let dir = tempfile::tempdir().unwrap();
    // The handoff worker stamps the first referrals' `issued_at` with the system time: the
    // manual clock starts there, and day 0 is the day they were issued.
    let clock = ManualClock::new(Utc::now());
    let server = start(dir.path(), &clock).await;
    let a = server.submit_handed_off(sample_application()).await;
    let b = server.submit_handed_off(sample_application()).await;
    let day0 = day_of(&referral(&a, pb::Programme::Dibao).issued_at);
    let d = |n: i64| (day0 + TimeDelta::days(n)).format("%Y-%m-%d").to_string();
    // Decisions from 10:00 Beijing on day 0.
    clock.set(beijing_midnight(day0) + TimeDelta::hours(10));
    let mut civil = server.handoff(tokens::CIVIL_AFFAIRS).await;
    let id = |case: &pb::Case, p| referral(case, p).referral_id.clone();

    // Day 0: a's dibao approved, its extreme poverty denied (0 days each).
    let approved = civil
        .record_decision(decide(
            &id(&a, pb::Programme::Dibao),
            pb::Decision::Approved,
        ))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    civil
        .record_decision(decide(
            &id(&a, pb::Programme::ExtremePoverty),
            pb::Decision::Denied,
        ))
        .await
        .unwrap();
    // Day 2: b's dibao approved (2 days); day 3: b's extreme poverty denied (3 days).
    clock.advance(TimeDelta::days(2));
    let approved_b = civil
        .record_decision(decide(
            &id(&b, pb::Programme::Dibao),
            pb::Decision::Approved,
        ))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    clock.advance(TimeDelta::days(1));
    civil
        .record_decision(decide(
            &id(&b, pb::Programme::ExtremePoverty),
            pb::Decision::Denied,
        ))
        .await
        .unwrap();

    // Day 3: a warning about a person no case names, in Hexi; resolved on day 4.
    let stranger = valid_id_number("120103", NaiveDate::from_ymd_opt(1970, 1, 1).unwrap(), 42);
    let warning =
        MonitoringServiceClient::with_interceptor(server.raw().await, bearer(tokens::MEDICAL))
            .report_signal(pb::ReportSignalRequest {
                source: "employment-office".into(),
                source_id: "U-1".into(),
                id_number: stranger,
                kind: pb::SignalKind::Unemployment as i32,
                occurred_on: d(1),
                amount_fen: 0,
                district_code: HEXI.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .warning
            .expect("unemployment always warns");
    clock.advance(TimeDelta::days(1));
    MonitoringServiceClient::with_interceptor(server.raw().await, bearer(tokens::CIVIL_AFFAIRS))
        .resolve_warning(pb::ResolveWarningRequest {
            warning_id: warning.warning_id.clone(),
            request_id: "R-1".into(),
            outcome: pb::WarningOutcome::VisitedNoNeed as i32,
            case_id: String::new(),
            note: String::new(),
        })
        .await
        .unwrap();

    let a = linked_case(&server, &a.case_id, 2).await;
    let b = linked_case(&server, &b.case_id, 2).await;
    let issued = issued_by_day(a.referrals.iter().chain(&b.referrals));
    let issued_total: u64 = issued.values().sum();
    assert_eq!(issued.keys().next(), Some(&day0));

    // Days 0 to 3: four decisions (0, 0, 2, 3 days): the median of an even count.
    let got = counted(
        &server,
        SUPERVISOR,
        all(&d(0), &d(3)),
        "the decisions and the warning",
        |s| {
            s.referrals_decided == 4 && s.warnings_raised == 1 && s.referrals_issued == issued_total
        },
    )
    .await;
    assert_eq!(got.district_code, HEXI, "a supervisor's own district");
    assert_eq!((got.from.clone(), got.to.clone()), (d(0), d(3)));
    assert_eq!(got.referrals_approved, 2);
    assert_eq!(got.median_days_to_decision, 1.0);
    assert_eq!(
        (got.warnings_raised, got.warnings_resolved),
        (1, 0),
        "resolved on day 4"
    );
    assert_eq!((got.reverifications_due, got.reverifications_done), (0, 0));
    // Days 0 to 2: three (0, 0, 2): odd. Days 2 to 3: two (2, 3).
    let odd = statistics(&server, SUPERVISOR, all(&d(0), &d(2)))
        .await
        .unwrap();
    assert_eq!(
        (odd.referrals_decided, odd.median_days_to_decision),
        (3, 0.0)
    );
    let late = statistics(&server, SUPERVISOR, all(&d(2), &d(3)))
        .await
        .unwrap();
    assert_eq!(
        (late.referrals_decided, late.median_days_to_decision),
        (2, 2.5)
    );
    // Day 0 alone: the referrals issued that day, the two decisions taken that day.
    let first = statistics(&server, SUPERVISOR, all(&d(0), &d(0)))
        .await
        .unwrap();
    assert_eq!(first.referrals_issued, issued[&day0]);
    assert_eq!((first.referrals_decided, first.referrals_approved), (2, 1));
    assert_eq!(
        (first.median_days_to_decision, first.warnings_raised),
        (0.0, 0)
    );
    // The warning's resolution on day 4.
    let fourth = statistics(&server, SUPERVISOR, all(&d(4), &d(4)))
        .await
        .unwrap();
    assert_eq!((fourth.warnings_resolved, fourth.referrals_decided), (1, 0));
    // One programme: dibao's referrals (0 and 2 days), and the warnings of no programme.
    let dibao = statistics(
        &server,
        SUPERVISOR,
        ask(HEXI, pb::Programme::Dibao, &d(0), &d(3)),
    )
    .await
    .unwrap();
    assert_eq!(
        (
            dibao.referrals_issued,
            dibao.referrals_decided,
            dibao.referrals_approved
        ),
        (2, 2, 2)
    );
    assert_eq!(dibao.median_days_to_decision, 1.0);
    assert_eq!(dibao.warnings_raised, 1);
    assert_eq!(dibao.programme, pb::Programme::Dibao as i32);

    // Every referral still open goes overdue, on the Beijing day of its deadline.
    let open: Vec<&pb::Referral> = a
        .referrals
        .iter()
        .chain(&b.referrals)
        .filter(|r| {
            [
                pb::ReferralState::Issued as i32,
                pb::ReferralState::Acknowledged as i32,
            ]
            .contains(&r.state)
                || r.overdue
        })
        .collect();
    assert!(!open.is_empty(), "referrals left undecided");
    let mut overdue_days: BTreeMap<NaiveDate, u64> = BTreeMap::new();
    for r in &open {
        *overdue_days.entry(day_of(&r.due_at)).or_default() += 1;
    }
    clock.set(beijing_midnight(day0) + TimeDelta::days(92));
    let autumn = all(&d(0), &d(92));
    let got = counted(
        &server,
        tokens::ADMIN,
        autumn.clone(),
        "the overdue referrals",
        |s| s.referrals_overdue == open.len() as u64,
    )
    .await;
    assert_eq!(got.district_code, "", "an admin's every district");
    assert_eq!(got.referrals_decided, 4);
    let (due_day, due_count) = overdue_days.iter().next_back().unwrap();
    let due_day = due_day.format("%Y-%m-%d").to_string();
    let one_day = statistics(&server, tokens::ADMIN, all(&due_day, &due_day))
        .await
        .unwrap();
    assert_eq!(one_day.referrals_overdue, *due_count);

    // a's dibao falls due for review at 00:00 Beijing on its review date (six months on:
    // the sample household's income is unstable; b's falls due days later); the review is
    // approved that day.
    let review_day = approved.review_due_on.clone();
    clock.set(beijing_midnight(parse_date(&review_day).unwrap()));
    let review_date = all(&review_day, &review_day);
    // Both fall due together when a month end cuts b's two days short.
    let due = 1 + u64::from(approved_b.review_due_on == review_day);
    counted(
        &server,
        SUPERVISOR,
        review_date.clone(),
        "the re-verification",
        |s| s.reverifications_due == due,
    )
    .await;
    let review = poll_review(&server, &a.case_id, &id(&a, pb::Programme::Dibao)).await;
    civil
        .record_decision(decide(&review, pb::Decision::Approved))
        .await
        .unwrap();
    let got = counted(
        &server,
        SUPERVISOR,
        review_date,
        "the review decided",
        |s| s.reverifications_done == 1,
    )
    .await;
    assert_eq!(
        (
            got.referrals_issued,
            got.referrals_decided,
            got.referrals_approved
        ),
        (due, 1, 1),
        "the review referral is a referral too"
    );
    assert_eq!(got.median_days_to_decision, 0.0);
    // Counted once, on its day: the autumn is as it was.
    let again = statistics(&server, tokens::ADMIN, autumn).await.unwrap();
    assert_eq!(
        (
            again.reverifications_due,
            again.referrals_decided,
            again.referrals_overdue
        ),
        (0, 4, open.len() as u64)
    );

    // Who may read: the supervisor of another district reads only its own (nothing here).
    let heping = statistics(&server, SUPERVISOR_HEPING, all(&d(0), &review_day))
        .await
        .unwrap();
    assert_eq!(heping.district_code, "120101");
    assert_eq!(
        (
            heping.referrals_issued,
            heping.referrals_decided,
            heping.warnings_raised
        ),
        (0, 0, 0)
    );
    for (token, district) in [
        (SUPERVISOR_HEPING, HEXI),
        (SUPERVISOR, "120101"),
        (tokens::CIVIL_AFFAIRS, ""),
        (tokens::CIVIL_AFFAIRS, HEXI),
        (tokens::MEDICAL, HEXI),
        (tokens::TERMINAL, HEXI),
        (tokens::SERVICE, ""),
    ] {
        let req = ask(district, pb::Programme::Unspecified, &d(0), &d(3));
        let err = statistics(&server, token, req).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::PermissionDenied,
            "{token} {district}: {err:?}"
        );
    }
    let hexi = statistics(
        &server,
        tokens::ADMIN,
        ask(HEXI, pb::Programme::Unspecified, &d(0), &d(3)),
    )
    .await
    .unwrap();
    assert_eq!(
        (hexi.district_code.as_str(), hexi.referrals_decided),
        (HEXI, 4)
    );

    // Bad input names its field.
    for (req, field) in [
        (all("", "2027-09-03"), "from"),
        (all("2027-09-31", "2027-10-01"), "from"),
        (all("2027-09-03", ""), "to"),
        (all("2027-09-03", "2027-09-02"), "to"),
        (all("2027-01-01", "2028-01-02"), "to"),
        (
            ask(
                "999999",
                pb::Programme::Unspecified,
                "2027-09-01",
                "2027-09-02",
            ),
            "district_code",
        ),
        (
            pb::GetStatisticsRequest {
                programme: 99,
                ..all("2027-09-01", "2027-09-02")
            },
            "programme",
        ),
    ] {
        let err = statistics(&server, SUPERVISOR, req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(
            err.message().starts_with(&format!("invalid {field}:")),
            "{field}: {}",
            err.message()
        );
    }
}

/// The review referral issued for `under_review`, once the case shows it.
async fn poll_review(server: &TestServer, case_id: &str, under_review: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let case = server.case(case_id).await;
        if let Some(r) = case.referrals.iter().find(|r| r.reviews == under_review) {
            return r.referral_id.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no review referral");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
