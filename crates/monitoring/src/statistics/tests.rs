use onecity_domain::events::encode_warning;
use onecity_domain::{beijing_date, ids};
use onecity_eventlog::memory::MemoryLog;
use onecity_eventlog::{Expected, NewEvent};
use uuid::Uuid;

use super::*;

const HEXI: &str = "120103";
const HEPING: &str = "120101";

fn date(s: &str) -> NaiveDate {
    parse_date(s).unwrap()
}

fn district(code: &str) -> DistrictCode {
    DistrictCode::parse(code).unwrap()
}

fn query(from: &str, to: &str) -> StatsQuery {
    StatsQuery {
        district: None,
        programme: None,
        from: date(from),
        to: date(to),
    }
}

fn histogram(days: &[u32]) -> Counts {
    let mut c = Counts::default();
    for d in days {
        *c.days_to_decision.entry(*d).or_default() += 1;
    }
    c
}

#[test]
fn the_median_is_exact_for_odd_and_even_counts() {
    assert_eq!(histogram(&[]).median_days_to_decision(), None);
    assert_eq!(histogram(&[7]).median_days_to_decision(), Some(7.0));
    assert_eq!(histogram(&[9, 1, 4]).median_days_to_decision(), Some(4.0));
    assert_eq!(histogram(&[0, 3]).median_days_to_decision(), Some(1.5));
    assert_eq!(
        histogram(&[0, 0, 2, 30]).median_days_to_decision(),
        Some(1.0)
    );
    assert_eq!(
        histogram(&[5, 5, 5, 6]).median_days_to_decision(),
        Some(5.0)
    );
    // Merging buckets keeps every decision: the median of the union, not of medians.
    let mut sum = histogram(&[1, 1, 1]);
    sum.add(&histogram(&[10, 20]));
    assert_eq!(sum.median_days_to_decision(), Some(1.0));
    sum.add(&histogram(&[30]));
    assert_eq!(sum.median_days_to_decision(), Some(5.5));
}

/// A referral of `programme` at `unit`, issued at `issued_at`.
fn referral(case_id: Uuid, programme: pb::Programme, unit: &str, issued_at: &str) -> pb::Referral {
    let p = Programme::from_proto(programme as i32).unwrap();
    pb::Referral {
        referral_id: ids::referral_id(case_id, p).to_string(),
        case_id: case_id.to_string(),
        programme: programme as i32,
        department_unit: unit.into(),
        state: pb::ReferralState::Issued as i32,
        issued_at: issued_at.into(),
        due_at: "2027-02-01T02:00:00.000Z".into(),
        ..Default::default()
    }
}

fn decided(r: &pb::Referral, state: pb::ReferralState, decided_at: &str) -> CaseEvent {
    CaseEvent::ReferralDecided(pb::Referral {
        state: state as i32,
        decided_at: decided_at.into(),
        ..r.clone()
    })
}

fn warning(id: Uuid, district: &str, raised_at: &str) -> pb::Warning {
    pb::Warning {
        warning_id: id.to_string(),
        district_code: district.into(),
        unit: format!("civil-affairs@{district}"),
        raised_at: raised_at.into(),
        state: pb::WarningState::Open as i32,
        ..Default::default()
    }
}

/// Appends each commit, then applies the whole log to a fresh projection.
struct Scenario {
    log: MemoryLog,
}

impl Scenario {
    fn new() -> Self {
        Scenario {
            log: MemoryLog::new(),
        }
    }

    async fn commit(&self, stream: Uuid, events: Vec<(&str, Vec<u8>)>) {
        let events = events
            .into_iter()
            .map(|(t, p)| NewEvent::new(t, "test", p))
            .collect();
        self.log
            .append(stream, Expected::Any, events, Uuid::now_v7())
            .await
            .unwrap();
    }

    async fn case(&self, case_id: Uuid, events: &[CaseEvent]) {
        let events = events
            .iter()
            .map(|e| (e.event_type(), e.encode()))
            .collect();
        self.commit(case_id, events).await;
    }

    async fn warning(&self, event_type: &str, w: &pb::Warning) {
        let stream = Uuid::parse_str(&w.warning_id).unwrap();
        self.commit(stream, vec![(event_type, encode_warning(w))])
            .await;
    }

    async fn events(&self) -> Vec<RecordedEvent> {
        let head = self.log.head().await.unwrap();
        self.log.read_all(1, head as usize).await.unwrap()
    }

    async fn project(&self) -> Statistics {
        let statistics = Statistics::default();
        for e in self.events().await {
            statistics.apply_one(&e);
        }
        statistics
    }
}

#[tokio::test]
async fn counts_each_event_on_its_day_in_its_district_and_programme() {
    let s = Scenario::new();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    // Case a in Hexi, issued 10:00 Beijing on 1 January 2027.
    let dibao = referral(
        a,
        pb::Programme::Dibao,
        "civil-affairs@120103",
        "2027-01-01T02:00:00.000Z",
    );
    let medical = referral(
        a,
        pb::Programme::Medical,
        "medical-security@120103",
        "2027-01-01T02:00:00.000Z",
    );
    // Case b in Heping, issued at 01:00 Beijing on 2 January (17:00 UTC on the 1st).
    let housing = referral(
        b,
        pb::Programme::Housing,
        "housing@120101",
        "2027-01-01T17:00:00.000Z",
    );
    s.case(
        a,
        &[
            CaseEvent::ReferralIssued(dibao.clone()),
            CaseEvent::ReferralIssued(medical.clone()),
        ],
    )
    .await;
    s.case(b, &[CaseEvent::ReferralIssued(housing.clone())])
        .await;
    // Decisions: dibao approved on 4 January (3 days), medical denied on 2 January
    // (1 day), housing approved at 00:30 Beijing on 3 January (1 day).
    s.case(
        a,
        &[decided(
            &dibao,
            pb::ReferralState::Approved,
            "2027-01-04T03:00:00.000Z",
        )],
    )
    .await;
    s.case(
        a,
        &[decided(
            &medical,
            pb::ReferralState::Denied,
            "2027-01-02T09:00:00.000Z",
        )],
    )
    .await;
    s.case(
        b,
        &[decided(
            &housing,
            pb::ReferralState::Approved,
            "2027-01-02T16:30:00.000Z",
        )],
    )
    .await;
    // An overdue referral counts on the day of its deadline.
    let employment = pb::Referral {
        due_at: "2027-01-20T16:00:00.000Z".into(),
        overdue: true,
        ..referral(
            a,
            pb::Programme::Employment,
            "human-resources@120103",
            "2027-01-01T02:00:00.000Z",
        )
    };
    s.case(
        a,
        &[
            CaseEvent::ReferralIssued(employment.clone()),
            CaseEvent::ReferralOverdue(employment),
        ],
    )
    .await;
    // A warning raised in Hexi on 5 January and resolved on 8 January.
    let w = warning(Uuid::now_v7(), HEXI, "2027-01-05T01:00:00.000Z");
    s.warning(WARNING_RAISED, &w).await;
    let resolved = pb::Warning {
        state: pb::WarningState::Resolved as i32,
        resolved_at: "2027-01-08T01:00:00.000Z".into(),
        ..w.clone()
    };
    s.warning(WARNING_RESOLVED, &resolved).await;
    // An escalation is no count of its own.
    s.warning(onecity_domain::events::WARNING_ESCALATED, &w)
        .await;

    let stats = s.project().await;
    let all = stats.totals(&query("2027-01-01", "2027-01-31"));
    assert_eq!(
        (all.issued, all.decided, all.approved, all.overdue),
        (4, 3, 2, 1)
    );
    assert_eq!((all.warnings_raised, all.warnings_resolved), (1, 1));
    assert_eq!(all.days_to_decision, BTreeMap::from([(1, 2), (3, 1)]));
    assert_eq!(all.median_days_to_decision(), Some(1.0));

    // The range is of days, both ends included.
    let first = stats.totals(&query("2027-01-01", "2027-01-01"));
    assert_eq!((first.issued, first.decided), (3, 0));
    assert_eq!(first.median_days_to_decision(), None);
    let second = stats.totals(&query("2027-01-02", "2027-01-02"));
    assert_eq!((second.issued, second.decided), (1, 1));
    let to_third = stats.totals(&query("2027-01-02", "2027-01-03"));
    assert_eq!((to_third.decided, to_third.approved), (2, 1));
    assert_eq!(to_third.median_days_to_decision(), Some(1.0));
    let overdue = stats.totals(&query("2027-01-21", "2027-01-21"));
    assert_eq!(overdue.overdue, 1, "overdue on the Beijing day of due_at");
    assert_eq!(stats.totals(&query("2027-01-20", "2027-01-20")).overdue, 0);
    let warnings = stats.totals(&query("2027-01-06", "2027-01-08"));
    assert_eq!(
        (warnings.warnings_raised, warnings.warnings_resolved),
        (0, 1)
    );
    assert_eq!(
        stats.totals(&query("2026-12-31", "2026-12-31")),
        Counts::default()
    );

    // One district.
    let hexi = stats.totals(&StatsQuery {
        district: Some(district(HEXI)),
        ..query("2027-01-01", "2027-01-31")
    });
    assert_eq!(
        (
            hexi.issued,
            hexi.decided,
            hexi.approved,
            hexi.warnings_raised
        ),
        (3, 2, 1, 1)
    );
    assert_eq!(hexi.median_days_to_decision(), Some(2.0));
    let heping = stats.totals(&StatsQuery {
        district: Some(district(HEPING)),
        ..query("2027-01-01", "2027-01-31")
    });
    assert_eq!(
        (heping.issued, heping.decided, heping.warnings_raised),
        (1, 1, 0)
    );

    // One programme: its referrals, and the warnings (of no programme).
    let dibao_only = stats.totals(&StatsQuery {
        programme: Some(Programme::Dibao),
        ..query("2027-01-01", "2027-01-31")
    });
    assert_eq!(
        (dibao_only.issued, dibao_only.decided, dibao_only.approved),
        (1, 1, 1)
    );
    assert_eq!(dibao_only.median_days_to_decision(), Some(3.0));
    assert_eq!(dibao_only.warnings_raised, 1);

    // A replay of what is applied changes nothing.
    for e in s.events().await {
        stats.apply_one(&e);
    }
    assert_eq!(stats.totals(&query("2027-01-01", "2027-01-31")), all);
}

#[tokio::test]
async fn re_verifications_count_when_due_and_when_their_review_is_decided() {
    let s = Scenario::new();
    let case = Uuid::now_v7();
    let unit = "civil-affairs@120103";
    let dibao = referral(case, pb::Programme::Dibao, unit, "2027-01-01T02:00:00.000Z");
    s.case(case, &[CaseEvent::ReferralIssued(dibao.clone())])
        .await;
    let approved = pb::Referral {
        state: pb::ReferralState::Approved as i32,
        decided_at: "2027-01-02T02:00:00.000Z".into(),
        review_due_on: "2027-07-02".into(),
        ..dibao.clone()
    };
    s.case(case, &[CaseEvent::ReferralDecided(approved.clone())])
        .await;
    // Due at 00:00 Beijing on 2 July: the review referral issued with it.
    let review = pb::Referral {
        referral_id: ids::review_referral(&dibao.referral_id).to_string(),
        reviews: dibao.referral_id.clone(),
        state: pb::ReferralState::Issued as i32,
        issued_at: "2027-07-01T16:00:00.000Z".into(),
        decided_at: String::new(),
        review_due_on: String::new(),
        ..dibao.clone()
    };
    let due = pb::ReverificationDue {
        referral_id: dibao.referral_id.clone(),
        programme: dibao.programme,
        department_unit: unit.into(),
        review_due_on: "2027-07-02".into(),
        review_referral_id: review.referral_id.clone(),
        ..Default::default()
    };
    s.case(
        case,
        &[
            CaseEvent::ReverificationDue(due),
            CaseEvent::ReferralIssued(review.clone()),
        ],
    )
    .await;
    // The review moves to another unit before its decision: the moved referral's decision
    // is the review's.
    let moved = pb::Referral {
        referral_id: ids::transferred_referral(&review.referral_id, "civil-affairs@120101")
            .to_string(),
        transferred_from: review.referral_id.clone(),
        department_unit: "civil-affairs@120101".into(),
        issued_at: "2027-07-05T02:00:00.000Z".into(),
        ..review.clone()
    };
    s.case(
        case,
        &[
            CaseEvent::ReferralTransferred(pb::Referral {
                state: pb::ReferralState::Transferred as i32,
                ..review.clone()
            }),
            CaseEvent::ReferralIssued(moved.clone()),
        ],
    )
    .await;
    s.case(
        case,
        &[decided(
            &moved,
            pb::ReferralState::Denied,
            "2027-07-10T02:00:00.000Z",
        )],
    )
    .await;
    // An ordinary decision is no re-verification.
    let medical = referral(
        case,
        pb::Programme::Medical,
        "medical-security@120103",
        "2027-07-01T02:00:00.000Z",
    );
    s.case(
        case,
        &[
            CaseEvent::ReferralIssued(medical.clone()),
            decided(
                &medical,
                pb::ReferralState::Approved,
                "2027-07-03T02:00:00.000Z",
            ),
        ],
    )
    .await;

    let stats = s.project().await;
    let july = stats.totals(&query("2027-07-01", "2027-07-31"));
    assert_eq!(
        (july.reverifications_due, july.reverifications_done),
        (1, 1)
    );
    // Issued: the review and the medical referral; the transfer is not issued again.
    assert_eq!((july.issued, july.decided, july.approved), (2, 2, 1));
    // The review was issued on 2 July (Beijing), the moved referral on 5 July and decided
    // on the 10th: 5 days from the move; medical: 2 days.
    assert_eq!(july.median_days_to_decision(), Some(3.5));
    let due_day = stats.totals(&query("2027-07-02", "2027-07-02"));
    assert_eq!((due_day.reverifications_due, due_day.issued), (1, 1));
    let hexi = stats.totals(&StatsQuery {
        district: Some(district(HEXI)),
        ..query("2027-07-01", "2027-07-31")
    });
    assert_eq!(
        (hexi.reverifications_due, hexi.reverifications_done),
        (1, 0)
    );
    let heping = stats.totals(&StatsQuery {
        district: Some(district(HEPING)),
        ..query("2027-07-01", "2027-07-31")
    });
    assert_eq!((heping.reverifications_done, heping.decided), (1, 1));
    let january = stats.totals(&query("2027-01-01", "2027-01-31"));
    assert_eq!((january.reverifications_due, january.approved), (0, 1));
}

#[tokio::test]
async fn a_decision_without_its_time_counts_on_the_day_the_log_recorded_it() {
    let s = Scenario::new();
    let case = Uuid::now_v7();
    let dibao = referral(
        case,
        pb::Programme::Dibao,
        "civil-affairs@120103",
        "2020-01-01T02:00:00.000Z",
    );
    s.case(case, &[CaseEvent::ReferralIssued(dibao.clone())])
        .await;
    s.case(case, &[decided(&dibao, pb::ReferralState::Approved, "")])
        .await;
    let recorded = s.events().await.last().unwrap().recorded_at;
    let day = beijing_date(DateTime::<Utc>::from(recorded));
    let stats = s.project().await;
    let that_day = stats.totals(&StatsQuery {
        from: day,
        to: day,
        ..query("2020-01-01", "2020-01-01")
    });
    assert_eq!(that_day.decided, 1);
    let days = (day - date("2020-01-01")).num_days();
    assert_eq!(that_day.median_days_to_decision(), Some(days as f64));
}

#[tokio::test]
async fn the_projection_follows_the_log() {
    let log = Arc::new(MemoryLog::new());
    let shutdown = CancellationToken::new();
    let stats = Statistics::start(log.clone(), shutdown.clone());
    let case = Uuid::now_v7();
    let dibao = referral(
        case,
        pb::Programme::Dibao,
        "civil-affairs@120103",
        "2027-01-01T02:00:00.000Z",
    );
    let e = CaseEvent::ReferralIssued(dibao);
    let at = log
        .append(
            case,
            Expected::Any,
            vec![NewEvent::new(e.event_type(), "test", e.encode())],
            Uuid::now_v7(),
        )
        .await
        .unwrap()
        .last_position;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while stats.applied() < at {
        assert!(tokio::time::Instant::now() < deadline, "not applied");
        tokio::task::yield_now().await;
    }
    assert_eq!(stats.totals(&query("2027-01-01", "2027-01-01")).issued, 1);
    shutdown.cancel();
}

fn request(district: &str, programme: i32, from: &str, to: &str) -> pb::GetStatisticsRequest {
    pb::GetStatisticsRequest {
        district_code: district.into(),
        programme,
        from: from.into(),
        to: to.into(),
    }
}

fn field_of(req: pb::GetStatisticsRequest) -> String {
    match StatsQuery::try_from(req) {
        Err(Error::Invalid { field, .. }) => field,
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn a_query_is_validated_field_by_field() {
    let ok = StatsQuery::try_from(request(HEXI, 1, "2027-01-01", "2027-12-31")).unwrap();
    assert_eq!(ok.district, Some(district(HEXI)));
    assert_eq!(ok.programme, Some(Programme::Dibao));
    let all = StatsQuery::try_from(request("", 0, "2028-01-01", "2028-12-31")).unwrap();
    assert_eq!((all.district, all.programme), (None, None));
    // 2028 is a leap year: 366 days fit, 367 do not.
    assert_eq!(field_of(request("", 0, "2028-01-01", "2029-01-01")), "to");
    assert_eq!(field_of(request("", 0, "2027-01-02", "2027-01-01")), "to");
    StatsQuery::try_from(request("", 0, "2027-01-01", "2027-01-01")).unwrap();
    assert_eq!(field_of(request("", 0, "", "2027-01-01")), "from");
    assert_eq!(field_of(request("", 0, "2027-02-30", "2027-03-01")), "from");
    assert_eq!(field_of(request("", 0, "2027-01-01", "")), "to");
    assert_eq!(field_of(request("", 0, "2027-01-01", "1/2/2027")), "to");
    assert_eq!(
        field_of(request("999999", 0, "2027-01-01", "2027-01-02")),
        "district_code"
    );
    assert_eq!(
        field_of(request("", 99, "2027-01-01", "2027-01-02")),
        "programme"
    );
}
