//! The deadline worker: keeps the open referrals of its partition in memory and, as its
//! clock passes their instants, writes `ReferralDueSoon` (80 % of the period),
//! `ReferralOverdue` (`due_at`) and `ReferralEscalated` (`escalation_days` after `due_at`)
//! for referrals still ISSUED or ACKNOWLEDGED.
//!
//! It also re-verifies approved low-income recognitions: when the clock reaches an
//! approval's `review_due_on` (00:00 Beijing that day), it writes `ReverificationDue` and
//! the review referral in one commit, for a recognition still in force (no review issued,
//! case not withdrawn).
//!
//! It also escalates open warnings (docs/monitoring.md): when the clock passes a
//! warning's `due_at` with the warning still open, it writes `WarningEscalated` once.
//!
//! Its state is rebuilt from the log's referral events at every start, so it has no
//! checkpoint to trust; each event is written under a commit id derived from the referral
//! and the stage (or the approval under review), after checking the case as it stands, so
//! a restart, a replay or a second instance never writes one twice and a decided referral
//! never gets one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use onecity_domain::case::is_recognition;
use onecity_domain::events::{
    decode_warning, encode_warning, CaseEvent, REFERRAL_DUE_SOON, REFERRAL_ESCALATED,
    REFERRAL_OVERDUE, REFERRAL_PREFIX, WARNING_ESCALATED, WARNING_PREFIX,
};
use onecity_domain::referral::ReferralState;
use onecity_domain::{beijing_midnight, ids, parse_date, Partition};
use onecity_eligibility::Catalogue;
use onecity_eventlog::consumer::ChunkHandler;
use onecity_eventlog::{EventLog, Filter, NewEvent, RecordedEvent};
use onecity_service::case::{append_with_retries, load_case, Commit, Outcome, Step};
use onecity_service::clock::Clock;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{Error, Result, ACTOR, DEADLINES_CONSUMER};

/// Share of a referral's period after which it is due soon, in per mille.
const DUE_SOON_PER_MILLE: i64 = 800;

/// What the deadline worker needs from the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlinePolicy {
    /// Calendar days an overdue referral may stay undecided before it is escalated.
    pub escalation_days: u32,
    /// How often the worker compares its referrals with the clock.
    pub tick: Duration,
}

impl Default for DeadlinePolicy {
    fn default() -> Self {
        DeadlinePolicy {
            escalation_days: 5,
            tick: Duration::from_secs(30),
        }
    }
}

/// How far a referral's deadline has gone, in the order the events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
enum Stage {
    Running = 0,
    DueSoon = 1,
    Overdue = 2,
    Escalated = 3,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Running => "running",
            Stage::DueSoon => "due-soon",
            Stage::Overdue => "overdue",
            Stage::Escalated => "escalated",
        }
    }

    fn of_event(event_type: &str) -> Stage {
        match event_type {
            REFERRAL_DUE_SOON => Stage::DueSoon,
            REFERRAL_OVERDUE => Stage::Overdue,
            REFERRAL_ESCALATED => Stage::Escalated,
            _ => Stage::Running,
        }
    }
}

/// One open referral, kept small: the worker holds every open referral of its partition.
#[derive(Debug, Clone, Copy)]
struct Open {
    case_id: u128,
    issued_ms: i64,
    due_ms: i64,
    stage: Stage,
    /// NEEDS_INFO: the household owes the answer, the clock is paused.
    paused: bool,
}

/// One approved recognition waiting for its review date.
#[derive(Debug, Clone, Copy)]
struct Approved {
    case_id: u128,
    /// 00:00 Beijing of its `review_due_on`.
    review_ms: i64,
}

/// Appends the deadline events of open referrals as the clock passes their instants, and
/// the review of approved recognitions as it reaches their review dates.
#[derive(Debug, Clone)]
pub struct DeadlineWorker {
    log: Arc<dyn EventLog>,
    clock: Arc<dyn Clock>,
    policy: DeadlinePolicy,
    catalogue: Arc<Catalogue>,
    partition: Partition,
    open: Arc<Mutex<HashMap<u128, Open>>>,
    approved: Arc<Mutex<HashMap<u128, Approved>>>,
    /// Open, unescalated warnings → their `due_at` in ms.
    warnings: Arc<Mutex<HashMap<u128, i64>>>,
    ready: Arc<AtomicBool>,
}

impl DeadlineWorker {
    /// A worker over `log` that reads the time from `clock`.
    pub fn new(log: Arc<dyn EventLog>, clock: Arc<dyn Clock>, policy: DeadlinePolicy) -> Self {
        DeadlineWorker {
            log,
            clock,
            policy,
            catalogue: Arc::new(Catalogue::embedded()),
            partition: Partition::default(),
            open: Arc::default(),
            approved: Arc::default(),
            warnings: Arc::default(),
            ready: Arc::default(),
        }
    }

    /// Gives review referrals their deadline from `catalogue` (by default the embedded
    /// one).
    pub fn with_catalogue(mut self, catalogue: Arc<Catalogue>) -> Self {
        self.catalogue = catalogue;
        self
    }

    /// Makes this instance handle only the referrals of the cases of `partition`, with
    /// state of its own (a clone for another partition must not share it).
    pub fn with_partition(mut self, partition: Partition) -> Self {
        self.partition = partition;
        self.open = Arc::default();
        self.approved = Arc::default();
        self.warnings = Arc::default();
        self.ready = Arc::default();
        self
    }

    /// The checkpoint name of the worker of `partition`.
    pub fn consumer_name(partition: &Partition) -> String {
        format!("{DEADLINES_CONSUMER}{}", partition.consumer_suffix())
    }

    /// Whether the start-up rebuild has reached the log's head as it was at start.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// How many open referrals the worker holds.
    pub fn open_referrals(&self) -> usize {
        self.lock().len()
    }

    /// How many approved recognitions wait for their review date.
    pub fn approvals_awaiting_review(&self) -> usize {
        self.lock_approved().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u128, Open>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many open warnings wait for their deadline.
    pub fn open_warnings(&self) -> usize {
        self.lock_warnings().len()
    }

    fn lock_warnings(&self) -> std::sync::MutexGuard<'_, HashMap<u128, i64>> {
        self.warnings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_approved(&self) -> std::sync::MutexGuard<'_, HashMap<u128, Approved>> {
        self.approved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Rebuilds from the log, then follows it and ticks until `shutdown`. Log errors are
    /// retried with backoff (a new subscription rebuilds from the start).
    pub async fn run(self, shutdown: CancellationToken) {
        let mut delays = onecity_eventlog::retry::Backoff::new();
        while !shutdown.is_cancelled() {
            match self.follow(&shutdown).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, consumer = DEADLINES_CONSUMER, "deadline worker failed, restarting");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(delays.next_delay()) => {}
                    }
                }
            }
        }
    }

    async fn follow(&self, shutdown: &CancellationToken) -> Result<()> {
        self.ready.store(false, Ordering::Release);
        self.lock().clear();
        self.lock_approved().clear();
        self.lock_warnings().clear();
        let head = self.log.head().await?;
        if head == 0 {
            self.ready.store(true, Ordering::Release);
        }
        let mut stream = self
            .log
            .subscribe(1, Filter::prefixes([REFERRAL_PREFIX, WARNING_PREFIX]))
            .await?;
        let mut tick = tokio::time::interval(self.policy.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                next = stream.next() => {
                    let Some(event) = next else { return Ok(()) };
                    let event = event?;
                    let position = event.position;
                    self.apply(&event)?;
                    if !self.is_ready() && position >= head {
                        self.ready.store(true, Ordering::Release);
                        tracing::info!(open = self.open_referrals(), consumer = DEADLINES_CONSUMER, "deadline worker ready");
                    }
                }
                _ = tick.tick(), if self.is_ready() => {
                    if let Err(e) = self.tick().await {
                        tracing::warn!(error = %e, "deadline tick failed, retried at the next");
                    }
                }
            }
        }
    }

    /// Applies one referral event to the in-memory state. Events of other partitions and
    /// other types are ignored; a referral event that does not decode is an error.
    pub fn apply(&self, event: &RecordedEvent) -> Result<()> {
        if !self.partition.owns(event.case_id.as_bytes()) {
            return Ok(());
        }
        if let Some(w) = decode_warning(&event.event_type, &event.payload)? {
            let key = event.case_id.as_u128();
            let mut warnings = self.lock_warnings();
            match millis(&w.due_at) {
                Some(due)
                    if w.state == onecity_proto::v1::WarningState::Open as i32
                        && w.escalated_at.is_empty() =>
                {
                    warnings.insert(key, due);
                }
                _ => {
                    warnings.remove(&key);
                }
            }
            return Ok(());
        }
        let Some(decoded) = CaseEvent::decode(&event.event_type, &event.payload)? else {
            return Ok(());
        };
        let Some(r) = decoded.referral() else {
            return Ok(());
        };
        let Ok(referral_id) = Uuid::parse_str(&r.referral_id) else {
            return Ok(());
        };
        let key = referral_id.as_u128();
        let state = ReferralState::from_proto(r.state);
        self.track_review(event.case_id.as_u128(), key, r, state);
        let mut open = self.lock();
        match state {
            Some(s) if !s.is_final() => {
                let stage = Stage::of_event(&event.event_type);
                let (Some(issued), Some(due)) = (millis(&r.issued_at), millis(&r.due_at)) else {
                    open.remove(&key);
                    return Ok(());
                };
                let entry = open.entry(key).or_insert(Open {
                    case_id: event.case_id.as_u128(),
                    issued_ms: issued,
                    due_ms: due,
                    stage,
                    paused: false,
                });
                entry.issued_ms = issued;
                entry.due_ms = due;
                entry.stage = entry.stage.max(stage);
                entry.paused = !s.deadline_runs();
            }
            _ => {
                open.remove(&key);
            }
        }
        Ok(())
    }

    /// Keeps the approvals that will fall due for review: an approved recognition with a
    /// review date waits for it; a review referral (`reviews`) ends the wait of the
    /// approval it reviews.
    fn track_review(
        &self,
        case_id: u128,
        key: u128,
        r: &onecity_proto::v1::Referral,
        state: Option<ReferralState>,
    ) {
        let mut approved = self.lock_approved();
        if let Ok(reviewed) = Uuid::parse_str(&r.reviews) {
            approved.remove(&reviewed.as_u128());
        }
        let review_date = parse_date(&r.review_due_on);
        if let (Some(ReferralState::Approved), true, Some(date)) =
            (state, is_recognition(r.programme), review_date)
        {
            approved.entry(key).or_insert(Approved {
                case_id,
                review_ms: beijing_midnight(date).timestamp_millis(),
            });
        }
    }

    /// Writes every deadline event whose instant the clock has passed, after the reviews
    /// that fell due; returns how many commits it wrote.
    pub async fn tick(&self) -> Result<usize> {
        let now = self.clock.now().timestamp_millis();
        let mut written = self.review_due(now).await;
        written += self.warnings_due(now).await;
        let escalate_ms = i64::from(self.policy.escalation_days) * 86_400_000;
        let due: Vec<(u128, Open, Stage)> = self
            .lock()
            .iter()
            .filter(|(_, o)| !o.paused)
            .filter_map(|(k, o)| {
                let soon = o.issued_ms + (o.due_ms - o.issued_ms) * DUE_SOON_PER_MILLE / 1000;
                let reached = if now >= o.due_ms + escalate_ms {
                    Stage::Escalated
                } else if now >= o.due_ms {
                    Stage::Overdue
                } else if now >= soon {
                    Stage::DueSoon
                } else {
                    Stage::Running
                };
                (reached > o.stage).then_some((*k, *o, reached))
            })
            .collect();
        for (key, open, reached) in due {
            let mut stage = open.stage;
            while stage < reached {
                stage = match stage {
                    Stage::Running => Stage::DueSoon,
                    Stage::DueSoon => Stage::Overdue,
                    Stage::Overdue | Stage::Escalated => Stage::Escalated,
                };
                let referral_id = Uuid::from_u128(key);
                match self
                    .write(Uuid::from_u128(open.case_id), referral_id, stage, now)
                    .await?
                {
                    Written::Yes => written += 1,
                    Written::Already => {}
                    Written::Closed => {
                        self.lock().remove(&key);
                        break;
                    }
                }
                if let Some(o) = self.lock().get_mut(&key) {
                    o.stage = o.stage.max(stage);
                }
            }
        }
        Ok(written)
    }

    async fn write(
        &self,
        case_id: Uuid,
        referral_id: Uuid,
        stage: Stage,
        now_ms: i64,
    ) -> Result<Written> {
        let log = self.log.as_ref();
        let rid = referral_id.to_string();
        let commit_id = ids::deadline_commit(referral_id, stage.name());
        let at = DateTime::<Utc>::UNIX_EPOCH + TimeDelta::milliseconds(now_ms);
        let outcome = append_with_retries(log, case_id, |_| {
            let rid = rid.clone();
            async move {
                let state = load_case(log, case_id).await?;
                let Some(current) = state.referral(&rid) else {
                    return Ok::<_, Error>(Step::Done(Written::Closed));
                };
                let running = ReferralState::from_proto(current.state)
                    .is_some_and(ReferralState::deadline_runs);
                if !running {
                    return Ok(Step::Done(Written::Closed));
                }
                let mut r = current.clone();
                let event = match stage {
                    Stage::Running | Stage::DueSoon => CaseEvent::ReferralDueSoon(r),
                    Stage::Overdue => {
                        r.overdue = true;
                        CaseEvent::ReferralOverdue(r)
                    }
                    Stage::Escalated => {
                        r.overdue = true;
                        r.escalated_at = onecity_domain::rfc3339(at);
                        CaseEvent::ReferralEscalated(r)
                    }
                };
                Ok(Step::Append(
                    Commit {
                        version: state.version,
                        events: vec![NewEvent::new(event.event_type(), ACTOR, event.encode())],
                        commit_id,
                    },
                    Written::Yes,
                ))
            }
        })
        .await?;
        Ok(match outcome {
            Outcome::Appended(_, a) if a.deduplicated => Written::Already,
            Outcome::Appended(w, _) => {
                tracing::info!(%case_id, referral = %referral_id, stage = stage.name(), "deadline event written");
                w
            }
            Outcome::Unchanged(w) => w,
        })
    }
}

impl DeadlineWorker {
    /// Escalates every open warning whose deadline `now_ms` has passed.
    async fn warnings_due(&self, now_ms: i64) -> usize {
        let due: Vec<u128> = self
            .lock_warnings()
            .iter()
            .filter(|(_, due)| now_ms >= **due)
            .map(|(k, _)| *k)
            .collect();
        let mut written = 0;
        for key in due {
            let warning_id = Uuid::from_u128(key);
            match self.escalate_warning(warning_id, now_ms).await {
                Ok(w) => {
                    written += usize::from(w == Written::Yes);
                    self.lock_warnings().remove(&key);
                }
                Err(e) => {
                    tracing::warn!(error = %e, warning = %warning_id, "warning escalation failed, retried at the next tick");
                }
            }
        }
        written
    }

    async fn escalate_warning(&self, warning_id: Uuid, now_ms: i64) -> Result<Written> {
        let log = self.log.as_ref();
        let at = DateTime::<Utc>::UNIX_EPOCH + TimeDelta::milliseconds(now_ms);
        let outcome = append_with_retries(log, warning_id, |_| async move {
            let Some((version, _, Some(warning))) =
                onecity_service::case::load_signal(log, warning_id).await?
            else {
                return Ok::<_, Error>(Step::Done(Written::Closed));
            };
            if warning.state != onecity_proto::v1::WarningState::Open as i32
                || !warning.escalated_at.is_empty()
            {
                return Ok(Step::Done(Written::Closed));
            }
            let mut w = warning;
            w.escalated_at = onecity_domain::rfc3339(at);
            Ok(Step::Append(
                Commit {
                    version,
                    events: vec![NewEvent::new(WARNING_ESCALATED, ACTOR, encode_warning(&w))],
                    commit_id: ids::warning_escalation_commit(warning_id),
                },
                Written::Yes,
            ))
        })
        .await?;
        Ok(match outcome {
            Outcome::Appended(_, a) if a.deduplicated => Written::Already,
            Outcome::Appended(w, _) => {
                tracing::info!(warning = %warning_id, "open warning past its deadline escalated");
                w
            }
            Outcome::Unchanged(w) => w,
        })
    }

    /// Issues the review of every approval whose review date `now_ms` has reached.
    async fn review_due(&self, now_ms: i64) -> usize {
        let due: Vec<(u128, Approved)> = self
            .lock_approved()
            .iter()
            .filter(|(_, a)| now_ms >= a.review_ms)
            .map(|(k, a)| (*k, *a))
            .collect();
        let mut written = 0;
        for (key, approved) in due {
            let case_id = Uuid::from_u128(approved.case_id);
            match self
                .write_review(case_id, Uuid::from_u128(key), now_ms)
                .await
            {
                Ok(outcome) => {
                    if outcome == Written::Yes {
                        written += 1;
                    }
                    // Reviewed now or before, or no longer in force: nothing more to wait for.
                    self.lock_approved().remove(&key);
                }
                // Kept for the next tick; one case that fails must not hold up the
                // deadlines of every other.
                Err(e) => {
                    tracing::warn!(error = %e, %case_id, "re-verification failed, retried at the next tick");
                }
            }
        }
        written
    }

    async fn write_review(&self, case_id: Uuid, referral_id: Uuid, now_ms: i64) -> Result<Written> {
        let log = self.log.as_ref();
        let rid = referral_id.to_string();
        let commit_id = ids::reverification_commit(&rid);
        let now = DateTime::<Utc>::UNIX_EPOCH + TimeDelta::milliseconds(now_ms);
        let outcome = append_with_retries(log, case_id, |_| {
            let rid = rid.clone();
            async move {
                let state = load_case(log, case_id).await?;
                let Some(approved) = state.review_due(&rid) else {
                    return Ok::<_, Error>(Step::Done(Written::Closed));
                };
                let events = onecity_eligibility::reassess::review_events(
                    &self.catalogue,
                    case_id,
                    approved,
                    now,
                );
                Ok(Step::Append(
                    Commit {
                        version: state.version,
                        events: events
                            .iter()
                            .map(|e| NewEvent::new(e.event_type(), ACTOR, e.encode()))
                            .collect(),
                        commit_id,
                    },
                    Written::Yes,
                ))
            }
        })
        .await?;
        Ok(match outcome {
            Outcome::Appended(_, a) if a.deduplicated => Written::Already,
            Outcome::Appended(w, _) => {
                tracing::info!(%case_id, referral = %referral_id, "recognition due for re-verification, review referral issued");
                w
            }
            Outcome::Unchanged(w) => w,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    Yes,
    Already,
    Closed,
}

fn millis(rfc3339: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[async_trait::async_trait]
impl ChunkHandler for DeadlineWorker {
    type Error = Error;

    async fn handle(&self, events: &[RecordedEvent]) -> Result<()> {
        for e in events {
            self.apply(e)?;
        }
        Ok(())
    }

    fn is_poison(err: &Error) -> bool {
        matches!(err, Error::Corrupt(_))
    }
}
