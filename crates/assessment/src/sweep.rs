//! Policy changes reach every active case: when a new policy version takes effect (the
//! clock, injectable, passes its `effective_from`), [`PolicySweeper`] records it
//! (`policy_record`) and re-assesses once under it every active case (open, or closed
//! holding an approval in force) opened before that record and assessed under an older
//! version, through the same core as an amendment (`onecity_eligibility::reassess`).
//! [`PolicySweeper::impact`] counts what a version would change, by the same core,
//! writing nothing.
//!
//! Which cases are active comes from [`ActiveCases`], a projection rebuilt from the log on
//! start and kept current by a subscription: a sweep reads only the cases it re-assesses,
//! never the whole log. The projection is a cheap superset (a closed case that was ever
//! approved stays in it); the case's fold decides, with the state check of exactly once:
//! a case re-assessed for the version, or already under it, is skipped, and the commit id
//! is derived from the case and the version, so a sweep cut by a restart resumes where
//! the log says it stopped.
//!
//! Throughput: the cases of a batch are read concurrently, their rules run on the blocking
//! pool in one task, and their commits are appended concurrently so they share the log's
//! group commit.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{StreamExt as _, TryStreamExt as _};
use onecity_domain::case::{CaseState, CaseStatus};
use onecity_domain::events::{
    APPLICATION_AMENDED, APPLICATION_SUBMITTED, APPLICATION_WITHDRAWN, CASE_CLOSED,
    ELIGIBILITY_ASSESSED, ELIGIBILITY_REASSESSED, REFERRAL_DECIDED, REVERIFICATION_DUE,
};
use onecity_domain::{beijing_date, Partition, Programme};
use onecity_eligibility::reassess::{Effect, Trigger};
use onecity_eligibility::PolicyBook;
use onecity_eventlog::quarantine::{Failure, Redo};
use onecity_eventlog::retry;
use onecity_eventlog::{EventLog, Expected, RecordedEvent};
use onecity_proto::prost::Message as _;
use onecity_proto::v1 as pb;
use onecity_service::case::load_case;
use onecity_service::clock::Clock;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::reassess::{commit, Job};
use crate::{policy_record, Assessor, Done, Error, Result};

/// Name of the policy sweep (its lease group and health name; it keeps no checkpoint).
pub const SWEEP_CONSUMER: &str = "policy-sweep";
/// Cases read, assessed and appended together.
pub const DEFAULT_SWEEP_BATCH: usize = 512;
/// Cases of a batch read at once.
const READS_IN_FLIGHT: usize = 64;
/// Batches under way at once: one reads while another's rules run.
const BATCHES_IN_FLIGHT: usize = 2;

/// The projection's mark of a case not assessed yet.
const UNASSESSED: u16 = u16::MAX;
/// The projection's mark of a case assessed under a version the policy file lacks.
const UNKNOWN: u16 = u16::MAX - 1;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Log position of its submission.
    opened_at: u64,
    /// Index in the policy book of its current assessment's version.
    version: u16,
    status: CaseStatus,
    /// Some referral of it was approved once.
    approved: bool,
}

/// The cases a new policy version may reach (see the module documentation).
#[derive(Debug)]
pub struct ActiveCases {
    versions: Vec<String>,
    cases: RwLock<HashMap<Uuid, Entry>>,
    applied: watch::Sender<u64>,
}

/// The event types the projection follows.
pub const FOLLOWS: [&str; 8] = [
    APPLICATION_SUBMITTED,
    APPLICATION_AMENDED,
    ELIGIBILITY_ASSESSED,
    ELIGIBILITY_REASSESSED,
    REFERRAL_DECIDED,
    REVERIFICATION_DUE,
    APPLICATION_WITHDRAWN,
    CASE_CLOSED,
];

/// What the projection reads of an `EligibilityAssessed` or `EligibilityReassessed`:
/// `policy_version = 2` in both. prost steps over the assessments without building them.
#[derive(Clone, PartialEq, prost::Message)]
struct PolicyOf {
    #[prost(string, tag = "2")]
    policy_version: String,
}

impl onecity_eventlog::projection::Projection for ActiveCases {
    fn name(&self) -> &'static str {
        "active cases"
    }
    fn prefixes(&self) -> Vec<&'static str> {
        FOLLOWS.to_vec()
    }
    fn applied(&self) -> u64 {
        ActiveCases::applied(self)
    }
    fn apply(&self, events: &[RecordedEvent]) {
        ActiveCases::apply(self, events);
    }
}

impl ActiveCases {
    /// An empty projection over the versions of `policies`, fed by
    /// [`ActiveCases::apply`].
    pub fn new(policies: &PolicyBook) -> Self {
        ActiveCases {
            versions: policies
                .versions()
                .iter()
                .map(|v| v.id().to_owned())
                .collect(),
            cases: RwLock::default(),
            applied: watch::channel(0).0,
        }
    }

    /// Starts the projection: replays the log from the beginning, then follows it until
    /// `shutdown`.
    pub fn start(
        log: Arc<dyn EventLog>,
        policies: &PolicyBook,
        shutdown: CancellationToken,
    ) -> Arc<ActiveCases> {
        onecity_eventlog::projection::start(Arc::new(ActiveCases::new(policies)), log, shutdown)
    }

    /// Position of the last event applied.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until the projection has applied everything up to `position` (durable, e.g.
    /// the head): the last event it follows at or before `position`, found by reading the
    /// log back from there (a page, usually) down to what it has applied.
    pub async fn wait_for(&self, log: &dyn EventLog, position: u64) -> Result<()> {
        const PAGE: u64 = 256;
        let floor = self.applied();
        let target = onecity_eventlog::projection::last_read_at_or_before(
            log, &FOLLOWS, floor, position, PAGE,
        )
        .await?
        .unwrap_or(floor);
        let mut rx = self.applied.subscribe();
        let _ = rx.wait_for(|p| *p >= target).await;
        Ok(())
    }

    fn version_index(&self, id: &str) -> u16 {
        self.versions
            .iter()
            .position(|v| v == id)
            .and_then(|i| u16::try_from(i).ok())
            .unwrap_or(UNKNOWN)
    }

    /// Applies events in position order; one at or below the applied position is skipped,
    /// so a replay changes nothing.
    pub fn apply(&self, events: &[RecordedEvent]) {
        let mut last = None;
        {
            let mut cases = self.cases.write().unwrap_or_else(|p| p.into_inner());
            let applied = self.applied();
            for e in events.iter().filter(|e| e.position > applied) {
                last = Some(e.position);
                if e.event_type == APPLICATION_SUBMITTED {
                    cases.entry(e.case_id).or_insert(Entry {
                        opened_at: e.position,
                        version: UNASSESSED,
                        status: CaseStatus::Open,
                        approved: false,
                    });
                    continue;
                }
                let Some(entry) = cases.get_mut(&e.case_id) else {
                    continue;
                };
                match e.event_type.as_str() {
                    ELIGIBILITY_ASSESSED | ELIGIBILITY_REASSESSED => {
                        match PolicyOf::decode(e.payload.as_slice()) {
                            Ok(p) => entry.version = self.version_index(&p.policy_version),
                            Err(err) => {
                                tracing::error!(error = %err, position = e.position, "undecodable assessment skipped by the active cases");
                            }
                        }
                        if e.event_type == ELIGIBILITY_REASSESSED {
                            reopen(entry);
                        }
                    }
                    APPLICATION_AMENDED | REVERIFICATION_DUE => reopen(entry),
                    REFERRAL_DECIDED => {
                        let approved = pb::ReferralIssued::decode(e.payload.as_slice())
                            .ok()
                            .and_then(|r| r.referral)
                            .is_some_and(|r| r.state == pb::ReferralState::Approved as i32);
                        entry.approved |= approved;
                    }
                    APPLICATION_WITHDRAWN => entry.status = CaseStatus::Withdrawn,
                    CASE_CLOSED if entry.status == CaseStatus::Open => {
                        entry.status = CaseStatus::Closed;
                    }
                    _ => {}
                }
            }
        }
        if let Some(p) = last {
            self.applied.send_replace(p);
        }
    }

    /// The cases of `partition` opened before `cutoff` that may be active and were
    /// assessed under a version older than the one at `target`, and how many such cases
    /// are not assessed yet (a sweep waits for them).
    fn candidates(&self, target: u16, cutoff: u64, partition: &Partition) -> (Vec<Uuid>, usize) {
        let cases = self.cases.read().unwrap_or_else(|p| p.into_inner());
        let mut due = Vec::new();
        let mut waiting = 0;
        for (id, e) in cases.iter() {
            let may_be_active = match e.status {
                CaseStatus::Open => true,
                CaseStatus::Closed => e.approved,
                CaseStatus::Withdrawn => false,
            };
            if e.opened_at >= cutoff || !may_be_active || !partition.owns(id.as_bytes()) {
                continue;
            }
            match e.version {
                UNASSESSED => waiting += 1,
                UNKNOWN => due.push(*id),
                v if v < target => due.push(*id),
                _ => {}
            }
        }
        due.sort_unstable();
        (due, waiting)
    }

    /// Marks `case_id` as done for the version at `target` (re-assessed, or found not to
    /// need it), so the next tick does not read it again before its events are applied.
    fn settle(&self, case_id: Uuid, target: u16) {
        let mut cases = self.cases.write().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = cases.get_mut(&case_id) {
            if e.version != UNASSESSED {
                e.version = e.version.max(target);
            }
        }
    }
}

fn reopen(entry: &mut Entry) {
    if entry.status == CaseStatus::Closed {
        entry.status = CaseStatus::Open;
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Swept {
    /// Cases re-assessed now.
    pub reassessed: usize,
    /// Cases read and found done already or not active.
    pub skipped: usize,
    /// Cases opened before the version took effect and not assessed yet.
    pub waiting: usize,
}

/// Changes of one programme or district.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Programmes newly met.
    pub newly_eligible: u64,
    /// Programmes no longer met.
    pub no_longer_eligible: u64,
    /// Approvals still met with another outcome or amount.
    pub amount_changed: u64,
}

impl Counts {
    fn add(&mut self, effect: Effect) {
        match effect {
            Effect::NewlyEligible => self.newly_eligible += 1,
            Effect::NoLongerEligible => self.no_longer_eligible += 1,
            Effect::AmountChanged => self.amount_changed += 1,
        }
    }
}

/// What a policy version would change ([`PolicySweeper::impact`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Impact {
    /// The version.
    pub version_id: String,
    /// Active cases it would re-assess.
    pub cases: u64,
    /// Of those, the ones whose re-assessment changes nothing.
    pub unchanged: u64,
    /// By programme, in programme order (programmes with a change only).
    pub by_programme: BTreeMap<Programme, Counts>,
    /// By district code (districts with a change only).
    pub by_district: BTreeMap<String, Counts>,
    /// Active cases read to find them.
    pub read: u64,
}

/// How far an impact report is: of the active cases it reads (every case it may count),
/// how many it has read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImpactProgress {
    /// Cases read so far.
    pub read: u64,
    /// Cases to read in all.
    pub to_read: u64,
}

/// Re-assesses the active cases when a new policy version takes effect (see the module
/// documentation).
#[derive(Debug, Clone)]
pub struct PolicySweeper {
    assessor: Assessor,
    active: Arc<ActiveCases>,
    clock: Arc<dyn Clock>,
    tick: Duration,
    batch: usize,
    partition: Partition,
    /// The first record's position of each version recorded by this process.
    recorded: Arc<Mutex<HashMap<String, u64>>>,
}

impl PolicySweeper {
    /// A sweeper re-assessing with `assessor`'s log, policies and catalogue, over the
    /// cases of `active`, looking at `clock` every `tick`.
    pub fn new(
        assessor: Assessor,
        active: Arc<ActiveCases>,
        clock: Arc<dyn Clock>,
        tick: Duration,
    ) -> Self {
        PolicySweeper {
            assessor,
            active,
            clock,
            tick,
            batch: DEFAULT_SWEEP_BATCH,
            partition: Partition::default(),
            recorded: Arc::default(),
        }
    }

    /// Re-assesses `batch` cases at a time (at least 1).
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Makes this instance sweep only the cases of `partition`.
    pub fn with_partition(mut self, partition: Partition) -> Self {
        self.partition = partition;
        self
    }

    /// The name of the instance that sweeps `partition`.
    pub fn consumer_name(partition: &Partition) -> String {
        format!("{SWEEP_CONSUMER}{}", partition.consumer_suffix())
    }

    /// Sweeps at every tick until `shutdown`, once the projection has caught up with the
    /// log as it was at start. A failed sweep is logged and tried again at the next tick.
    pub async fn run(self, shutdown: CancellationToken) {
        let head = retry::until_ok(
            &shutdown,
            || self.assessor.log.head(),
            |e, delay| tracing::warn!(error = %e, ?delay, "log head unavailable, retrying"),
        )
        .await;
        let Some(head) = head else { return };
        tokio::select! {
            caught_up = self.active.wait_for(self.assessor.log.as_ref(), head) => {
                if let Err(e) = caught_up {
                    tracing::warn!(error = %e, "active cases not caught up at start, sweeping as they come");
                }
            }
            () = shutdown.cancelled() => return,
        }
        loop {
            match self.sweep().await {
                Ok(s) if s.reassessed > 0 => {
                    tracing::info!(
                        reassessed = s.reassessed,
                        skipped = s.skipped,
                        waiting = s.waiting,
                        "policy sweep"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "policy sweep failed, retrying at the next tick")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.tick) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// One sweep under the version in force now: records it if the log has not, then
    /// re-assesses every case due.
    pub async fn sweep(&self) -> Result<Swept> {
        let now = self.clock.now();
        let policies = Arc::clone(&self.assessor.policies);
        let Some(target) = policies.in_force(beijing_date(now)) else {
            return Ok(Swept::default());
        };
        let cutoff = self.cutoff(target.id(), now).await?;
        let index = self.active.version_index(target.id());
        let (cases, waiting) = self.active.candidates(index, cutoff, &self.partition);
        let mut swept = Swept {
            waiting,
            ..Swept::default()
        };
        let batches = cases.chunks(self.batch).map(<[Uuid]>::to_vec);
        let mut done = futures::stream::iter(batches)
            .map(|batch| self.sweep_batch(batch, target.id(), index, now))
            .buffer_unordered(BATCHES_IN_FLIGHT);
        while let Some(outcome) = done.next().await {
            let (reassessed, skipped) = outcome?;
            swept.reassessed += reassessed;
            swept.skipped += skipped;
        }
        Ok(swept)
    }

    /// The position of `version`'s first record, recording it first if needed.
    async fn cutoff(&self, version: &str, now: DateTime<Utc>) -> Result<u64> {
        if let Some(p) = self.lock().get(version) {
            return Ok(*p);
        }
        let Some(v) = self.assessor.policies.get(version) else {
            return Err(Error::NotFound(format!("no policy version {version}")));
        };
        let position = policy_record::record(self.assessor.log.as_ref(), v, now).await?;
        self.lock().insert(version.to_owned(), position);
        Ok(position)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.recorded.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn load(&self, batch: Vec<Uuid>) -> Result<Vec<(Uuid, CaseState)>> {
        let log = self.assessor.log.as_ref();
        futures::stream::iter(batch)
            .map(|id| async move { Ok::<_, Error>((id, load_case(log, id).await?)) })
            .buffered(READS_IN_FLIGHT)
            .try_collect()
            .await
    }

    /// Re-assesses the cases of `batch` that are due under `target`: (re-assessed,
    /// skipped).
    async fn sweep_batch(
        &self,
        batch: Vec<Uuid>,
        target: &str,
        index: u16,
        now: DateTime<Utc>,
    ) -> Result<(usize, usize)> {
        let states = self.load(batch).await?;
        let worker = self.assessor.clone();
        let version = target.to_owned();
        let decided = tokio::task::spawn_blocking(move || {
            states
                .into_iter()
                .map(|(id, state)| {
                    let r = due(&worker.policies, &state, &version)
                        .then(|| {
                            worker.decide_reassessment(
                                id,
                                &state,
                                &Trigger::PolicyVersion,
                                &version,
                                now,
                            )
                        })
                        .flatten();
                    (id, state.version, r)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| Error::TaskFailed(e.to_string()))?;
        let log = self.assessor.log.as_ref();
        let outcomes = futures::future::try_join_all(decided.into_iter().map(
            |(case_id, version, reassessment)| async move {
                let Some(reassessment) = reassessment else {
                    self.active.settle(case_id, index);
                    return Ok::<_, Error>(Done::Skipped);
                };
                let job = Job {
                    case_id,
                    trigger: Trigger::PolicyVersion,
                    policy: target.to_owned(),
                    now,
                    caused_by: format!("policy:{target}"),
                };
                let c = commit(&job, version, &reassessment);
                let done = match log
                    .append(case_id, Expected::Exact(version), c.events, c.commit_id)
                    .await
                {
                    Ok(a) if !a.deduplicated => Done::Reassessed,
                    Ok(_) => Done::Skipped,
                    // Someone wrote first: decide again from the case as it now is.
                    Err(onecity_eventlog::Error::Conflict { .. }) => {
                        let policies = Arc::clone(&self.assessor.policies);
                        self.assessor
                            .reassess_case(&job, move |s| due(&policies, s, target))
                            .await?
                    }
                    Err(e) => return Err(e.into()),
                };
                self.active.settle(case_id, index);
                Ok(done)
            },
        ))
        .await?;
        let reassessed = outcomes.iter().filter(|d| **d == Done::Reassessed).count();
        Ok((reassessed, outcomes.len() - reassessed))
    }

    /// `NotFound` unless the policy file has version `version_id`.
    pub fn check_version(&self, version_id: &str) -> Result<()> {
        match self.assessor.policies.get(version_id) {
            Some(_) => Ok(()),
            None => Err(Error::NotFound(format!(
                "the policy file has no version {version_id}"
            ))),
        }
    }

    /// What `version_id` would change if it took effect now (see [`Impact`]), over every
    /// partition's cases; writes nothing.
    pub async fn impact(&self, version_id: &str) -> Result<Impact> {
        self.impact_with(version_id, |_| {}).await
    }

    /// [`PolicySweeper::impact`], telling `progress` how far it is: once the cases to read
    /// are known, then after each batch.
    pub async fn impact_with(
        &self,
        version_id: &str,
        mut progress: impl FnMut(ImpactProgress) + Send,
    ) -> Result<Impact> {
        self.check_version(version_id)?;
        let log = self.assessor.log.as_ref();
        let cutoff = match policy_record::first_record(log, version_id).await? {
            Some(p) => p,
            None => log.head().await? + 1,
        };
        // The projection has every case up to now.
        self.active.wait_for(log, log.head().await?).await?;
        let index = self.active.version_index(version_id);
        let (cases, _) = self.active.candidates(index, cutoff, &Partition::default());
        let now = self.clock.now();
        let mut impact = Impact {
            version_id: version_id.to_owned(),
            ..Impact::default()
        };
        let mut at = ImpactProgress {
            read: 0,
            to_read: cases.len() as u64,
        };
        progress(at);
        for batch in cases.chunks(self.batch) {
            let states = self.load(batch.to_vec()).await?;
            let worker = self.assessor.clone();
            let version = version_id.to_owned();
            let changes = tokio::task::spawn_blocking(move || {
                states
                    .into_iter()
                    .filter(|(_, state)| due(&worker.policies, state, &version))
                    .filter_map(|(id, state)| {
                        let r = worker.decide_reassessment(
                            id,
                            &state,
                            &Trigger::PolicyVersion,
                            &version,
                            now,
                        )?;
                        let district = state
                            .application()
                            .map(|a| a.district_code.clone())
                            .unwrap_or_default();
                        Some((district, r.changes))
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(|e| Error::TaskFailed(e.to_string()))?;
            for (district, changes) in changes {
                impact.cases += 1;
                if changes.is_empty() {
                    impact.unchanged += 1;
                }
                for c in changes {
                    impact
                        .by_programme
                        .entry(c.programme)
                        .or_default()
                        .add(c.effect);
                    impact
                        .by_district
                        .entry(district.clone())
                        .or_default()
                        .add(c.effect);
                }
            }
            at.read += batch.len() as u64;
            progress(at);
        }
        impact.read = at.read;
        Ok(impact)
    }
}

/// Whether a new policy version `target` reaches the case in `state`: active, assessed,
/// not re-assessed for it yet, and assessed under an older version (or one the file no
/// longer has). The one place the sweep's state check is written.
fn due(policies: &PolicyBook, state: &CaseState, target: &str) -> bool {
    let (Some(target_version), Some(_)) = (policies.get(target), state.assessed.as_ref()) else {
        return false;
    };
    let older = policies
        .get(state.policy_version())
        .is_none_or(|v| v.effective_from() < target_version.effective_from());
    state.is_active() && !state.reassessed.iter().any(|c| c == target) && older
}

/// The sweep follows no events, so nothing of it is ever quarantined or retried.
#[async_trait::async_trait]
impl Redo for PolicySweeper {
    async fn redo(&self, _event: &RecordedEvent) -> std::result::Result<(), Failure> {
        Err(Failure::Poison("the policy sweep follows no events".into()))
    }
}

#[cfg(test)]
mod tests {
    use onecity_domain::events::CaseEvent;

    use super::*;

    fn assessed(version: &str) -> CaseEvent {
        CaseEvent::EligibilityAssessed(pb::EligibilityAssessed {
            assessments: vec![pb::Assessment::default(); 12],
            policy_version: version.into(),
        })
    }

    #[test]
    fn the_projection_keeps_the_cases_a_version_may_reach() {
        let book = PolicyBook::embedded_default();
        let active = ActiveCases::new(&book);
        let case = |n: u128| Uuid::from_u128(n);
        let submitted = CaseEvent::ApplicationSubmitted(pb::ApplicationSubmitted::default());
        let closed = CaseEvent::CaseClosed(pb::CaseClosed::default());
        let approved = CaseEvent::ReferralDecided(pb::Referral {
            state: pb::ReferralState::Approved as i32,
            ..Default::default()
        });
        let withdrawn = CaseEvent::ApplicationWithdrawn(pb::ApplicationWithdrawn::default());
        let mut p = 0;
        let mut next = || {
            p += 1;
            p
        };
        let mut events = Vec::new();
        for n in 1..=6 {
            events.push(RecordedEvent::for_test(case(n), next(), &submitted));
        }
        // 1 open under 2025-07; 2 already under 2026-07; 3 closed; 4 closed with an
        // approval; 5 withdrawn; 6 not assessed yet.
        for n in 1..=5 {
            let v = if n == 2 { "2026-07" } else { "2025-07" };
            events.push(RecordedEvent::for_test(case(n), next(), &assessed(v)));
        }
        events.push(RecordedEvent::for_test(case(3), next(), &closed));
        events.push(RecordedEvent::for_test(case(4), next(), &approved));
        events.push(RecordedEvent::for_test(case(4), next(), &closed));
        events.push(RecordedEvent::for_test(case(5), next(), &withdrawn));
        active.apply(&events);
        active.apply(&events);
        let target = active.version_index("2026-07");
        let (due, waiting) = active.candidates(target, u64::MAX, &Partition::default());
        assert_eq!(due, [case(1), case(4)]);
        assert_eq!(waiting, 1);
        // Cases opened at or after the cutoff are not the version's.
        let (due, _) = active.candidates(target, 2, &Partition::default());
        assert_eq!(due, [case(1)]);
        // Settled, a case is not read again; a later case opened under it, neither.
        active.settle(case(1), target);
        let (due, _) = active.candidates(target, u64::MAX, &Partition::default());
        assert_eq!(due, [case(4)]);
        // An amendment re-opens a closed case.
        let amended = CaseEvent::ApplicationAmended(pb::ApplicationAmended::default());
        active.apply(&[RecordedEvent::for_test(case(3), next(), &amended)]);
        let (due, _) = active.candidates(target, u64::MAX, &Partition::default());
        assert_eq!(due, [case(3), case(4)]);
    }
}
