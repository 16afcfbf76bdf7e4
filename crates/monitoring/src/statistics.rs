//! The statistics projection (docs/monitoring.md, "Statistics"): counters of the referral,
//! warning and re-verification events by Beijing day, district and programme, and for the
//! decisions of each bucket a histogram of whole days from issue to decision, so that a
//! count, or an exact median, over any range of days is a sum of buckets and never a scan
//! of the log. Rebuilt from the log on start and kept current by a subscription
//! (`GetStatistics` reads it).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, NaiveDate, Utc};
use onecity_domain::events::{
    decode_warning, CaseEvent, REFERRAL_PREFIX, REVERIFICATION_DUE, WARNING_PREFIX, WARNING_RAISED,
    WARNING_RESOLVED,
};
use onecity_domain::{beijing_date, parse_date, DistrictCode, Programme};
use onecity_eventlog::{EventLog, RecordedEvent};
use onecity_proto::v1 as pb;
use tokio_util::sync::CancellationToken;

use crate::{invalid, Error, Result};
use onecity_eventlog::projection::{self, Projection};

/// Longest range of days a query may cover, `from` and `to` included: a leap year.
pub const MAX_RANGE_DAYS: i64 = 366;

/// The programme number warnings are counted under: they belong to no programme.
const NO_PROGRAMME: i32 = pb::Programme::Unspecified as i32;

/// What is counted of one bucket, or of a sum of buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Referrals issued (transfers left out).
    pub issued: u64,
    /// Referrals decided.
    pub decided: u64,
    /// Referrals approved.
    pub approved: u64,
    /// Referrals that passed their deadline undecided.
    pub overdue: u64,
    /// Warnings raised.
    pub warnings_raised: u64,
    /// Warnings resolved.
    pub warnings_resolved: u64,
    /// `ReverificationDue` events.
    pub reverifications_due: u64,
    /// Decisions of the review referrals `ReverificationDue` issued.
    pub reverifications_done: u64,
    /// Decisions by whole days from issue to decision: enough to give the exact median of
    /// any sum of buckets.
    pub days_to_decision: BTreeMap<u32, u64>,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.issued += other.issued;
        self.decided += other.decided;
        self.approved += other.approved;
        self.overdue += other.overdue;
        self.warnings_raised += other.warnings_raised;
        self.warnings_resolved += other.warnings_resolved;
        self.reverifications_due += other.reverifications_due;
        self.reverifications_done += other.reverifications_done;
        for (days, n) in &other.days_to_decision {
            *self.days_to_decision.entry(*days).or_default() += n;
        }
    }

    /// The median of the days to decision (the mean of the two middle values for an even
    /// count); `None` when nothing was decided.
    pub fn median_days_to_decision(&self) -> Option<f64> {
        let n: u64 = self.days_to_decision.values().sum();
        if n == 0 {
            return None;
        }
        let nth = |rank: u64| {
            let mut seen = 0;
            for (days, count) in &self.days_to_decision {
                seen += count;
                if seen >= rank {
                    return *days;
                }
            }
            0
        };
        // 1-based ranks of the two middle values, the same one for an odd count.
        let (lower, upper) = (n.div_ceil(2), n / 2 + 1);
        Some((f64::from(nth(lower)) + f64::from(nth(upper))) / 2.0)
    }
}

/// A validated `GetStatistics` request: which buckets to sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsQuery {
    /// One district's, or every district's.
    pub district: Option<DistrictCode>,
    /// One programme's referrals, or every programme's.
    pub programme: Option<Programme>,
    /// First day (Beijing).
    pub from: NaiveDate,
    /// Last day, included.
    pub to: NaiveDate,
}

impl TryFrom<pb::GetStatisticsRequest> for StatsQuery {
    type Error = Error;

    fn try_from(req: pb::GetStatisticsRequest) -> Result<Self> {
        let pb::GetStatisticsRequest {
            district_code,
            programme,
            from,
            to,
        } = req;
        let district = if district_code.is_empty() {
            None
        } else {
            Some(
                DistrictCode::parse(&district_code)
                    .ok_or_else(|| invalid("district_code", "not a district of the city"))?,
            )
        };
        let programme = match pb::Programme::try_from(programme) {
            Ok(pb::Programme::Unspecified) => None,
            Ok(p) => Programme::from_proto(p as i32),
            Err(_) => {
                return Err(invalid(
                    "programme",
                    format!("unknown programme {programme}"),
                ))
            }
        };
        let from = day("from", &from)?;
        let to = day("to", &to)?;
        if to < from {
            return Err(invalid("to", "must not be before from"));
        }
        if (to - from).num_days() >= MAX_RANGE_DAYS {
            return Err(invalid(
                "to",
                format!("the range may cover at most {MAX_RANGE_DAYS} days"),
            ));
        }
        Ok(StatsQuery {
            district,
            programme,
            from,
            to,
        })
    }
}

fn day(field: &str, s: &str) -> Result<NaiveDate> {
    if s.is_empty() {
        return Err(invalid(field, "required"));
    }
    parse_date(s).ok_or_else(|| invalid(field, "must be a date YYYY-MM-DD"))
}

#[derive(Debug, Default)]
struct State {
    applied: u64,
    /// Day → (district, programme number) → counts.
    days: BTreeMap<NaiveDate, HashMap<(DistrictCode, i32), Counts>>,
    /// Review referrals a `ReverificationDue` issued, not yet decided or cancelled (a
    /// transfer moves the id to the referral replacing it).
    reviews: HashSet<String>,
    /// Review referrals whose `ReverificationDue` is applied and whose `ReferralIssued`,
    /// written after it in the same commit (`onecity_handoff::review_events`), is not yet:
    /// the review counts on the day it is issued.
    awaiting_issue: HashSet<String>,
}

impl State {
    fn bucket(&mut self, day: NaiveDate, district: DistrictCode, programme: i32) -> &mut Counts {
        self.days
            .entry(day)
            .or_default()
            .entry((district, programme))
            .or_default()
    }

    fn apply_case_event(&mut self, event: CaseEvent, recorded: NaiveDate) {
        if let CaseEvent::ReverificationDue(d) = &event {
            self.reviews.insert(d.review_referral_id.clone());
            self.awaiting_issue.insert(d.review_referral_id.clone());
            return;
        }
        let Some(r) = event.referral() else { return };
        if let CaseEvent::ReferralCancelled(_) = &event {
            self.reviews.remove(&r.referral_id);
            return;
        }
        let Some(district) = r
            .department_unit
            .rsplit_once('@')
            .and_then(|(_, d)| DistrictCode::parse(d))
        else {
            return;
        };
        if r.programme == NO_PROGRAMME {
            return;
        }
        match &event {
            CaseEvent::ReferralIssued(r) if !r.transferred_from.is_empty() => self.moved(r),
            CaseEvent::ReferralIssued(r) => {
                let due = self.awaiting_issue.remove(&r.referral_id);
                let b = self.bucket(day_of(&r.issued_at, recorded), district, r.programme);
                b.issued += 1;
                b.reverifications_due += u64::from(due);
            }
            CaseEvent::ReferralDecided(r) => {
                // Decisions recorded before `decided_at` existed: the log's recording time.
                let decided = day_of(&r.decided_at, recorded);
                let days = (decided - day_of(&r.issued_at, decided)).num_days();
                let review = self.reviews.remove(&r.referral_id);
                let b = self.bucket(decided, district, r.programme);
                b.decided += 1;
                b.approved += u64::from(r.state == pb::ReferralState::Approved as i32);
                b.reverifications_done += u64::from(review);
                *b.days_to_decision
                    .entry(u32::try_from(days).unwrap_or(0))
                    .or_default() += 1;
            }
            CaseEvent::ReferralOverdue(r) => {
                self.bucket(day_of(&r.due_at, recorded), district, r.programme)
                    .overdue += 1;
            }
            _ => {}
        }
    }

    /// A transfer issued `r` in place of the referral it names: a review stays a review.
    fn moved(&mut self, r: &pb::Referral) {
        if self.reviews.remove(&r.transferred_from) {
            self.reviews.insert(r.referral_id.clone());
        }
    }

    fn apply_warning(&mut self, event_type: &str, w: &pb::Warning, recorded: NaiveDate) {
        let Some(district) = DistrictCode::parse(&w.district_code) else {
            return;
        };
        match event_type {
            WARNING_RAISED => {
                self.bucket(day_of(&w.raised_at, recorded), district, NO_PROGRAMME)
                    .warnings_raised += 1;
            }
            WARNING_RESOLVED => {
                self.bucket(day_of(&w.resolved_at, recorded), district, NO_PROGRAMME)
                    .warnings_resolved += 1;
            }
            _ => {}
        }
    }
}

/// The Beijing day of an RFC 3339 instant written by the service, or `fallback` when there
/// is none.
fn day_of(instant: &str, fallback: NaiveDate) -> NaiveDate {
    DateTime::parse_from_rfc3339(instant)
        .map(|t| beijing_date(t.with_timezone(&Utc)))
        .unwrap_or(fallback)
}

/// Counters by day, district and programme.
#[derive(Debug, Default)]
pub struct Statistics {
    state: RwLock<State>,
}

impl Statistics {
    /// Starts the projection: replays the referral, re-verification and warning events
    /// from the beginning, then follows them until `shutdown`.
    pub fn start(log: Arc<dyn EventLog>, shutdown: CancellationToken) -> Arc<Statistics> {
        projection::start(Arc::new(Statistics::default()), log, shutdown)
    }

    /// The sum of the buckets `query` selects. With a programme, the warnings (of no
    /// programme) are still counted.
    pub fn totals(&self, query: &StatsQuery) -> Counts {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let programme = query.programme.map(Programme::to_proto);
        let mut total = Counts::default();
        for buckets in state.days.range(query.from..=query.to).map(|(_, b)| b) {
            for ((district, p), counts) in buckets {
                let district_ok = query.district.is_none_or(|d| d == *district);
                let programme_ok = programme.is_none_or(|want| *p == want || *p == NO_PROGRAMME);
                if district_ok && programme_ok {
                    total.add(counts);
                }
            }
        }
        total
    }
}

/// The event types the statistics read, by prefix.
const PREFIXES: [&str; 3] = [REFERRAL_PREFIX, REVERIFICATION_DUE, WARNING_PREFIX];

impl Projection for Statistics {
    fn name(&self) -> &'static str {
        "statistics"
    }

    fn prefixes(&self) -> Vec<&'static str> {
        PREFIXES.to_vec()
    }

    fn applied(&self) -> u64 {
        self.state.read().unwrap_or_else(|p| p.into_inner()).applied
    }

    fn apply(&self, events: &[RecordedEvent]) {
        for e in events {
            self.apply_one(e);
        }
    }
}

impl Statistics {
    /// Applies one event (others than [`PREFIXES`] are skipped, and so is an event at or
    /// below the applied position, so a replay changes nothing).
    fn apply_one(&self, event: &RecordedEvent) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        if event.position <= state.applied {
            return;
        }
        state.applied = event.position;
        if !PREFIXES.iter().any(|p| event.event_type.starts_with(p)) {
            return;
        }
        let recorded = beijing_date(DateTime::<Utc>::from(event.recorded_at));
        let decoded = if event.event_type.starts_with(WARNING_PREFIX) {
            decode_warning(&event.event_type, &event.payload)
                .map(|w| w.map(|w| state.apply_warning(&event.event_type, &w, recorded)))
        } else {
            CaseEvent::decode(&event.event_type, &event.payload)
                .map(|e| e.map(|e| state.apply_case_event(e, recorded)))
        };
        if let Err(e) = decoded {
            tracing::error!(error = %e, position = event.position, "undecodable event skipped by the statistics");
        }
    }
}

#[cfg(test)]
mod tests;
