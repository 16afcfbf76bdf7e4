//! The deadline worker: keeps the open referrals of its partition in memory and, as its
//! clock passes their instants, writes `ReferralDueSoon` (80 % of the period),
//! `ReferralOverdue` (`due_at`) and `ReferralEscalated` (`escalation_days` after `due_at`)
//! for referrals still ISSUED or ACKNOWLEDGED.
//!
//! Its state is rebuilt from the log's referral events at every start, so it has no
//! checkpoint to trust; each event is written under a commit id derived from the referral
//! and the stage, after checking the case as it stands, so a restart, a replay or a second
//! instance never writes one twice and a decided referral never gets one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use onecity_domain::events::{
    CaseEvent, REFERRAL_DUE_SOON, REFERRAL_ESCALATED, REFERRAL_OVERDUE, REFERRAL_PREFIX,
};
use onecity_domain::referral::ReferralState;
use onecity_domain::{ids, Partition};
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

/// Appends the deadline events of open referrals as the clock passes their instants.
#[derive(Debug, Clone)]
pub struct DeadlineWorker {
    log: Arc<dyn EventLog>,
    clock: Arc<dyn Clock>,
    policy: DeadlinePolicy,
    partition: Partition,
    open: Arc<Mutex<HashMap<u128, Open>>>,
    ready: Arc<AtomicBool>,
}

impl DeadlineWorker {
    /// A worker over `log` that reads the time from `clock`.
    pub fn new(log: Arc<dyn EventLog>, clock: Arc<dyn Clock>, policy: DeadlinePolicy) -> Self {
        DeadlineWorker {
            log,
            clock,
            policy,
            partition: Partition::default(),
            open: Arc::default(),
            ready: Arc::default(),
        }
    }

    /// Makes this instance handle only the referrals of the cases of `partition`, with
    /// state of its own (a clone for another partition must not share it).
    pub fn with_partition(mut self, partition: Partition) -> Self {
        self.partition = partition;
        self.open = Arc::default();
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u128, Open>> {
        self.open
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
        let head = self.log.head().await?;
        if head == 0 {
            self.ready.store(true, Ordering::Release);
        }
        let mut stream = self
            .log
            .subscribe(1, Filter::prefixes([REFERRAL_PREFIX]))
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

    /// Writes every deadline event whose instant the clock has passed; returns how many it
    /// wrote.
    pub async fn tick(&self) -> Result<usize> {
        let now = self.clock.now().timestamp_millis();
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
        let mut written = 0;
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
