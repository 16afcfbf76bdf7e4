//! Handoff: the departments' side of onecity.
//!
//! - [`HandoffWorker`] follows the log and, for each assessed case, issues one referral
//!   per ELIGIBLE or NEEDS_REVIEW programme to the department unit of the application's
//!   district, in one commit (or closes the case when nothing is referred).
//! - [`Inbox`] is the department-side projection: every referral in its latest state,
//!   rebuilt from the log on start and kept current by a subscription.
//! - [`Handoff`] serves back offices: list and stream their referrals, acknowledge and
//!   decide them. Every transition is an event on the case stream, written with the
//!   case's expected version, so two offices cannot both win a race.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::{Stream, StreamExt};
use onecity_domain::case::{is_final, CaseState, CaseStatus, EventMeta};
use onecity_domain::events::{
    CaseEvent, APPLICATION_WITHDRAWN, CASE_CLOSED, ELIGIBILITY_ASSESSED, REFERRAL_PREFIX,
};
use onecity_domain::{Partition, Principal, Programme};
use onecity_eligibility::Catalogue;
use onecity_eventlog::{EventLog, Expected, Filter, NewEvent, RecordedEvent, MAX_READ_LIMIT};
use onecity_proto::v1 as pb;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub mod grpc;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a handoff operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input; nothing written.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Request field.
        field: String,
        /// Why.
        reason: String,
    },
    /// No such referral.
    #[error("referral {0} not found")]
    NotFound(String),
    /// The caller may not do this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The referral is not in a state that allows this.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The log failed.
    #[error(transparent)]
    Log(#[from] onecity_eventlog::Error),
    /// A stored event does not decode.
    #[error(transparent)]
    Corrupt(#[from] onecity_domain::events::DecodeError),
}

fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

const ID_NAMESPACE: Uuid = Uuid::from_bytes(onecity_domain::ID_NAMESPACE);
/// Consumer name of the handoff worker's checkpoint.
pub const CONSUMER: &str = "handoff";
/// Longest decision note.
pub const MAX_NOTE_CHARS: usize = 2_000;
/// Largest page of `ListReferrals`.
pub const MAX_PAGE_SIZE: u32 = 500;
const MAX_CONFLICT_RETRIES: usize = 16;

fn meta(e: &RecordedEvent) -> EventMeta {
    EventMeta {
        version: e.version,
        position: e.position,
        event_type: e.event_type.clone(),
        actor: e.actor.clone(),
        recorded_at: e.recorded_at_rfc3339(),
    }
}

async fn load_case(log: &dyn EventLog, case_id: Uuid) -> Result<CaseState> {
    let events = log.read_case_all(case_id).await?;
    Ok(CaseState::from_stored(
        events.iter().map(|e| (meta(e), e.payload.as_slice())),
    )?)
}

/// The deterministic id of the referral of `programme` in `case_id`: a replayed handoff
/// derives the same id, so a referral can never exist twice.
pub fn referral_id(case_id: Uuid, programme: Programme) -> Uuid {
    Uuid::new_v5(
        &ID_NAMESPACE,
        format!("referral\u{0}{case_id}\u{0}{}", programme.as_str()).as_bytes(),
    )
}

/// Issues referrals for assessed cases.
#[derive(Debug, Clone)]
pub struct HandoffWorker {
    log: Arc<dyn EventLog>,
    catalogue: Arc<Catalogue>,
    partition: Partition,
}

/// What the worker did with one assessment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Issued this many referrals (0 = closed the case with the assessments as the answer).
    Issued(usize),
    /// Already handed off (a replay), or the case was withdrawn.
    Skipped,
}

impl HandoffWorker {
    /// A worker over `log`; deadlines come from `catalogue`.
    pub fn new(log: Arc<dyn EventLog>, catalogue: Arc<Catalogue>) -> Self {
        HandoffWorker {
            log,
            catalogue,
            partition: Partition::default(),
        }
    }

    /// Makes this instance handle only the cases of `partition` (with its own checkpoint),
    /// so several instances share the work and exactly one decides for each case.
    pub fn with_partition(mut self, partition: Partition) -> Self {
        self.partition = partition;
        self
    }

    /// Follows the log from the saved checkpoint until `shutdown`. At-least-once: after a
    /// crash it replays from the checkpoint, and [`HandoffWorker::process`] makes a replay a
    /// no-op. Transient log errors are retried with backoff.
    pub async fn run(self, shutdown: CancellationToken) {
        let consumer = format!("{CONSUMER}{}", self.partition.consumer_suffix());
        let filter = Filter::prefixes([ELIGIBILITY_ASSESSED]);
        onecity_eventlog::consumer::run(Arc::clone(&self.log), &consumer, filter, shutdown, &self)
            .await;
    }

    /// Issues the referrals of the case assessed by `assessed`, exactly once per case.
    ///
    /// The referrals come from the assessment in hand; the case is read only for its
    /// submission (version 1, for the deadlines) and for what happened after the
    /// assessment, so the 7.8 KiB assessment is decoded once, not again through a fold of
    /// the whole case. Exactly once as before: a deterministic commit id, the case's
    /// expected version, and a case already handed off, withdrawn or closed is skipped.
    pub async fn process(&self, assessed: &RecordedEvent) -> Result<Done> {
        let case_id = assessed.case_id;
        if assessed.event_type != ELIGIBILITY_ASSESSED {
            return Ok(Done::Skipped);
        }
        let assessment = <AssessedRefs as prost::Message>::decode(assessed.payload.as_slice())
            .map_err(|e| onecity_domain::events::DecodeError {
                event_type: assessed.event_type.clone(),
                reason: e.to_string(),
            })?;
        // Version 1 of every case is its submission (intake opens the stream with it).
        let first = self.log.read_case(case_id, 1, 1).await?;
        let submitted = match first.first() {
            Some(e) => match CaseEvent::decode(&e.event_type, &e.payload)? {
                Some(CaseEvent::ApplicationSubmitted(s)) => s,
                _ => {
                    tracing::error!(%case_id, event_type = %e.event_type, "assessed case does not start with a submission, skipped");
                    return Ok(Done::Skipped);
                }
            },
            None => {
                tracing::error!(%case_id, "assessed case without a submission, skipped");
                return Ok(Done::Skipped);
            }
        };
        let events = self.referrals(case_id, &submitted, &assessment);
        let issued = events
            .iter()
            .filter(|e| matches!(e, CaseEvent::ReferralIssued(_)))
            .count();
        let commit_id = Uuid::new_v5(&ID_NAMESPACE, format!("handoff\u{0}{case_id}").as_bytes());
        for _ in 0..MAX_CONFLICT_RETRIES {
            let Some(version) = self.version_if_waiting(assessed).await? else {
                return Ok(Done::Skipped);
            };
            let new: Vec<NewEvent> = events
                .iter()
                .map(|e| {
                    NewEvent::new(e.event_type(), "service:handoff", e.encode())
                        .caused_by(assessed.event_id.to_string())
                })
                .collect();
            match self
                .log
                .append(case_id, Expected::Exact(version), new, commit_id)
                .await
            {
                Ok(a) if a.deduplicated => return Ok(Done::Skipped),
                Ok(_) => {
                    tracing::info!(%case_id, referrals = issued, "referrals issued");
                    return Ok(Done::Issued(issued));
                }
                Err(onecity_eventlog::Error::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Log(onecity_eventlog::Error::Unavailable(format!(
            "case {case_id} kept changing"
        ))))
    }

    /// The case's version when it still waits for its referrals after `assessed`; `None`
    /// when it has moved on: referrals issued (a replay), withdrawn or closed. Reads only
    /// the events after the assessment (decoding none of them): nothing that ends the
    /// wait can come before it, since the assessor skips withdrawn cases and referrals
    /// follow the assessment.
    async fn version_if_waiting(&self, assessed: &RecordedEvent) -> Result<Option<u64>> {
        let mut version = assessed.version;
        loop {
            let later = self
                .log
                .read_case(assessed.case_id, version + 1, MAX_READ_LIMIT)
                .await?;
            let moved_on = later.iter().any(|e| {
                e.event_type.starts_with(REFERRAL_PREFIX)
                    || e.event_type == APPLICATION_WITHDRAWN
                    || e.event_type == CASE_CLOSED
            });
            if moved_on {
                return Ok(None);
            }
            let Some(last) = later.last() else {
                return Ok(Some(version));
            };
            version = last.version;
            if later.len() < MAX_READ_LIMIT {
                return Ok(Some(version));
            }
        }
    }

    fn referrals(
        &self,
        case_id: Uuid,
        submitted: &pb::ApplicationSubmitted,
        assessed: &AssessedRefs,
    ) -> Vec<CaseEvent> {
        let submitted_at = chrono::DateTime::parse_from_rfc3339(&submitted.submitted_at)
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or_else(|_| chrono::Utc::now());
        let issued_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut events = Vec::new();
        for a in &assessed.assessments {
            let referred = a.outcome == pb::Outcome::Eligible as i32
                || a.outcome == pb::Outcome::NeedsReview as i32;
            let Some(programme) = Programme::from_proto(a.programme) else {
                continue;
            };
            if !referred {
                continue;
            }
            let days = i64::from(self.catalogue.deadline_days(programme));
            let due_at = (submitted_at + chrono::TimeDelta::days(days))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            events.push(CaseEvent::ReferralIssued(pb::Referral {
                referral_id: referral_id(case_id, programme).to_string(),
                case_id: case_id.to_string(),
                programme: a.programme,
                department_unit: a.department_unit.clone(),
                state: pb::ReferralState::Issued as i32,
                due_at,
                outcome: a.outcome,
                assessed_amount_fen: a.amount_fen,
                decided_amount_fen: 0,
                note: String::new(),
                issued_at: issued_at.clone(),
                policy_version: a.policy_version.clone(),
            }));
        }
        if events.is_empty() {
            events.push(CaseEvent::CaseClosed(pb::CaseClosed {
                reason: "no programme to refer: the assessments are the answer".into(),
            }));
        }
        events
    }
}

/// What the handoff reads of `onecity.v1.EligibilityAssessed`: the fields a referral is
/// built from, at their numbers in `proto/onecity/v1/events.proto` (`assessments = 1`) and
/// `eligibility.proto` (`Assessment`). prost steps over the fields a message does not
/// declare, so decoding this instead of the whole event passes over the ~7 KiB of rule
/// explanations without allocating them (they were most of the handoff's cost per case).
/// `tests::assessed_refs_read_what_the_full_event_holds` keeps the two in step.
#[derive(Clone, PartialEq, prost::Message)]
struct AssessedRefs {
    #[prost(message, repeated, tag = "1")]
    assessments: Vec<AssessmentRef>,
}

/// The referral-relevant fields of one `onecity.v1.Assessment`.
#[derive(Clone, PartialEq, prost::Message)]
struct AssessmentRef {
    /// `Programme`, as its wire value.
    #[prost(int32, tag = "1")]
    programme: i32,
    /// `Outcome`, as its wire value.
    #[prost(int32, tag = "2")]
    outcome: i32,
    #[prost(int64, tag = "3")]
    amount_fen: i64,
    #[prost(string, tag = "4")]
    policy_version: String,
    #[prost(string, tag = "6")]
    department_unit: String,
}

/// One referral in the inbox: just enough to route, filter and find its latest event.
/// Kept small on purpose (about 90 bytes with its id's map entry) because the inbox
/// holds every referral ever issued; the full referral is read back from the log when
/// listed.
#[derive(Debug, Clone, Copy)]
struct Slot {
    case_id: Uuid,
    state: i32,
    /// Position of the referral's latest event.
    latest: u64,
}

#[derive(Debug, Default)]
struct InboxState {
    /// Interned department units.
    units: Vec<String>,
    unit_ids: HashMap<String, u32>,
    /// Per unit, referrals by the position of their `ReferralIssued` event (issue order).
    by_unit: HashMap<u32, Issued>,
    /// Referral id to (unit, issue position).
    ids: HashMap<Uuid, (u32, u64)>,
}

/// One unit's referrals in issue order, keyed by issue position. The inbox applies
/// events in log order, so positions arrive ascending and a sorted `Vec` (40 bytes a
/// referral) serves where a `BTreeMap` filled in order costs ~75: at a million cases
/// (3M referrals) that is ~100 MiB of a cold start's peak memory.
#[derive(Debug, Default)]
struct Issued(Vec<(u64, Slot)>);

impl Issued {
    fn find(&self, at: u64) -> Result<usize, usize> {
        self.0.binary_search_by_key(&at, |(p, _)| *p)
    }

    fn get(&self, at: u64) -> Option<&Slot> {
        self.find(at).ok().map(|i| &self.0[i].1)
    }

    fn get_mut(&mut self, at: u64) -> Option<&mut Slot> {
        self.find(at).ok().map(|i| &mut self.0[i].1)
    }

    fn insert(&mut self, at: u64, slot: Slot) {
        match self.0.last() {
            Some((last, _)) if *last >= at => match self.find(at) {
                Ok(i) => self.0[i].1 = slot,
                Err(i) => self.0.insert(i, (at, slot)),
            },
            _ => self.0.push((at, slot)),
        }
    }

    /// Referrals issued after position `after`, in issue order.
    fn after(&self, after: u64) -> impl Iterator<Item = (&u64, &Slot)> {
        let start = self.0.partition_point(|(p, _)| *p <= after);
        self.0[start..].iter().map(|(p, s)| (p, s))
    }
}

impl InboxState {
    fn unit_id(&mut self, unit: &str) -> u32 {
        if let Some(id) = self.unit_ids.get(unit) {
            return *id;
        }
        let id = self.units.len() as u32;
        self.units.push(unit.to_owned());
        self.unit_ids.insert(unit.to_owned(), id);
        id
    }
}

/// Where an inbox referral stands, without reading the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEntry {
    /// The case.
    pub case_id: Uuid,
    /// `<department>@<district>`.
    pub department_unit: String,
    /// `ReferralState` value.
    pub state: i32,
    /// Position of the referral's latest event in the log.
    pub latest: u64,
}

/// The department-side projection of every referral, rebuilt from the log on start.
///
/// It subscribes to referral events only, so its start-up reads ~0.5 KiB referral events
/// rather than decoding every event of every case (7.8 KiB of them the assessment).
/// Without the other events it does not see the log's head, so [`Inbox::wait_for`] finds
/// the last referral event at or before the position it waits for and waits for that.
#[derive(Debug)]
pub struct Inbox {
    log: Arc<dyn EventLog>,
    state: RwLock<InboxState>,
    /// Position of the last referral event applied: every referral event up to it is in.
    applied: watch::Sender<u64>,
    /// `(checked, last)`: the last referral event at or before position `checked` is at
    /// `last` (0 = none). The log only grows, so a later wait scans back only to `checked`.
    scanned: Mutex<(u64, u64)>,
}

/// Events read per page while looking back for the last referral event.
const SCAN_PAGE: u64 = 32;

impl Inbox {
    /// Starts the projection: it replays the log's referral events from the beginning,
    /// then follows them.
    pub fn start(log: Arc<dyn EventLog>, shutdown: CancellationToken) -> Arc<Inbox> {
        let (applied, _) = watch::channel(0);
        let inbox = Arc::new(Inbox {
            log: Arc::clone(&log),
            state: RwLock::new(InboxState::default()),
            applied,
            scanned: Mutex::new((0, 0)),
        });
        let feeder = Arc::clone(&inbox);
        tokio::spawn(async move { feeder.feed(log, shutdown).await });
        inbox
    }

    async fn feed(&self, log: Arc<dyn EventLog>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            let from = *self.applied.borrow() + 1;
            let stream = match log
                .subscribe(from, Filter::prefixes([REFERRAL_PREFIX]))
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "inbox subscription failed, retrying");
                    tokio::select! { () = tokio::time::sleep(backoff) => {}, () = shutdown.cancelled() => return }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            // Apply what is ready in chunks: one lock and one watch update per chunk.
            let mut chunks = stream.ready_chunks(1024);
            loop {
                let next =
                    tokio::select! { n = chunks.next() => n, () = shutdown.cancelled() => return };
                let Some(chunk) = next else { break };
                let mut ok = Vec::with_capacity(chunk.len());
                let mut broke = false;
                for item in chunk {
                    match item {
                        Ok(e) => ok.push(e),
                        Err(e) => {
                            tracing::warn!(error = %e, "inbox subscription broke, resuming");
                            broke = true;
                            break;
                        }
                    }
                }
                if !ok.is_empty() {
                    backoff = Duration::from_millis(100);
                    self.apply(&ok);
                }
                if broke {
                    break;
                }
            }
            tokio::select! { () = tokio::time::sleep(backoff) => {}, () = shutdown.cancelled() => return }
        }
    }

    fn apply(&self, events: &[RecordedEvent]) {
        let mut last = None;
        {
            let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
            for e in events {
                last = Some(e.position);
                if !e.event_type.starts_with(REFERRAL_PREFIX) {
                    continue;
                }
                let ev = match CaseEvent::decode(&e.event_type, &e.payload) {
                    Ok(Some(ev)) => ev,
                    Ok(None) => continue,
                    Err(err) => {
                        tracing::error!(error = %err, position = e.position, "undecodable referral event skipped");
                        continue;
                    }
                };
                let Some(r) = ev.referral() else { continue };
                let Ok(id) = Uuid::parse_str(&r.referral_id) else {
                    continue;
                };
                match st.ids.get(&id).copied() {
                    Some((unit, at)) => {
                        if let Some(slot) = st.by_unit.get_mut(&unit).and_then(|m| m.get_mut(at)) {
                            slot.state = r.state;
                            slot.latest = e.position;
                        }
                    }
                    None => {
                        let unit = st.unit_id(&r.department_unit);
                        st.ids.insert(id, (unit, e.position));
                        let slot = Slot {
                            case_id: e.case_id,
                            state: r.state,
                            latest: e.position,
                        };
                        st.by_unit.entry(unit).or_default().insert(e.position, slot);
                    }
                }
            }
        }
        if let Some(p) = last {
            self.applied.send_replace(p);
        }
    }

    /// Waits until the projection has applied everything up to `position` (a durable
    /// position, e.g. the log's head): it waits for the last referral event at or before
    /// `position`, since the subscription delivers referral events in order.
    pub async fn wait_for(&self, position: u64) -> Result<()> {
        if *self.applied.borrow() >= position {
            return Ok(());
        }
        let target = self.last_referral_at_or_before(position).await?;
        let mut rx = self.applied.subscribe();
        // The sender lives as long as `self`, and every referral event up to `position`
        // is durable, so the subscription delivers `target` and this ends.
        let _ = rx.wait_for(|p| *p >= target).await;
        Ok(())
    }

    /// Position of the last referral event at or before `position` (or a position the
    /// projection has already applied, when there is none after it; or, when an earlier
    /// scan covered `position`, that scan's answer). Reads the log backwards from
    /// `position`, page by page, down to what is known: the applied position or the
    /// previous scan. Usually a page: the last referral is a few events behind the head.
    async fn last_referral_at_or_before(&self, position: u64) -> Result<u64> {
        let applied = *self.applied.borrow();
        let (checked, last) = *self.scanned.lock().unwrap_or_else(|p| p.into_inner());
        if position <= checked {
            // A concurrent wait already scanned further. Its answer is the last referral at
            // or before `position`, or a later durable one: waiting for it waits a little
            // longer at most, where scanning back from `position` to `applied` could read
            // much of the log while the inbox is still replaying it.
            return Ok(last);
        }
        let floor = checked.max(applied);
        let mut hi = position;
        let mut found = None;
        while hi > floor && found.is_none() {
            let lo = hi.saturating_sub(SCAN_PAGE - 1).max(floor + 1);
            let events = self.log.read_all(lo, (hi - lo + 1) as usize).await?;
            found = events
                .iter()
                .rev()
                .find(|e| e.position <= hi && e.event_type.starts_with(REFERRAL_PREFIX))
                .map(|e| e.position);
            hi = lo - 1;
        }
        // Nothing after the floor: the previous scan's answer, or one at or below the
        // applied position (already in).
        let target = found.unwrap_or(last);
        let mut memo = self.scanned.lock().unwrap_or_else(|p| p.into_inner());
        if position > memo.0 {
            *memo = (position, target);
        }
        Ok(target)
    }

    /// Where the referral with this id stands.
    pub fn get(&self, referral_id: &str) -> Option<InboxEntry> {
        let id = Uuid::parse_str(referral_id).ok()?;
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        let (unit, at) = *st.ids.get(&id)?;
        let slot = st.by_unit.get(&unit)?.get(at)?;
        Some(InboxEntry {
            case_id: slot.case_id,
            department_unit: st.units[unit as usize].clone(),
            state: slot.state,
            latest: slot.latest,
        })
    }

    /// Latest-event positions of up to `limit` referrals issued after `after` (an issue
    /// position), filtered by unit and state, in issue order, and the issue position to
    /// continue from when more remain.
    pub fn page(
        &self,
        unit: Option<&str>,
        state: Option<i32>,
        after: u64,
        limit: usize,
    ) -> (Vec<u64>, Option<u64>) {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        let units: Vec<u32> = match unit {
            Some(u) => st.unit_ids.get(u).copied().into_iter().collect(),
            None => st.by_unit.keys().copied().collect(),
        };
        // Issue order across the selected units: a k-way merge by issue position.
        let mut iters: Vec<_> = units
            .iter()
            .filter_map(|u| st.by_unit.get(u))
            .map(|m| {
                m.after(after)
                    .filter(|(_, s)| state.is_none_or(|want| s.state == want))
                    .peekable()
            })
            .collect();
        let mut out = Vec::new();
        loop {
            let next = iters
                .iter_mut()
                .enumerate()
                .filter_map(|(i, it)| it.peek().map(|(at, _)| (**at, i)))
                .min();
            let Some((at, i)) = next else {
                return (out, None);
            };
            if out.len() == limit {
                return (out, Some(at - 1));
            }
            let (_, slot) = iters[i].next().expect("peeked");
            out.push(slot.latest);
        }
    }
}

/// The back-office API core.
#[derive(Debug, Clone)]
pub struct Handoff {
    log: Arc<dyn EventLog>,
    inbox: Arc<Inbox>,
}

fn denied(principal: &Principal, action: &str, referral: Option<&str>) -> Error {
    tracing::warn!(principal = %principal, kind = principal.kind(), action, referral = ?referral, "permission denied");
    Error::PermissionDenied(format!("{} principals may not {action}", principal.kind()))
}

/// A referral state given by a client: 0 means "any".
fn state_filter(state: i32) -> Result<Option<i32>> {
    match pb::ReferralState::try_from(state) {
        Ok(pb::ReferralState::Unspecified) => Ok(None),
        Ok(s) => Ok(Some(s as i32)),
        Err(_) => Err(invalid("state", format!("unknown referral state {state}"))),
    }
}

/// The decision a department records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionInput {
    /// `Decision` proto value.
    pub decision: i32,
    /// Decided amount in fen.
    pub amount_fen: i64,
    /// Note.
    pub note: String,
}

impl Handoff {
    /// The API over `log`, answering lists from `inbox`.
    pub fn new(log: Arc<dyn EventLog>, inbox: Arc<Inbox>) -> Self {
        Handoff { log, inbox }
    }

    /// The unit a principal may see: a department its own, an admin every unit.
    fn scope(principal: &Principal, action: &str) -> Result<Option<String>> {
        match principal {
            Principal::Department { unit } => Ok(Some(unit.to_string())),
            Principal::Admin { .. } => Ok(None),
            _ => Err(denied(principal, action, None)),
        }
    }

    /// A page of the caller's referrals (all states when `state` is 0), in issue order.
    pub async fn list(
        &self,
        principal: &Principal,
        state: i32,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<pb::Referral>, String)> {
        let unit = Self::scope(principal, "list referrals")?;
        let state = state_filter(state)?;
        let limit = match page_size {
            0 => 100,
            n if n > MAX_PAGE_SIZE => {
                return Err(invalid("page_size", format!("at most {MAX_PAGE_SIZE}")))
            }
            n => n as usize,
        };
        let after = if page_token.is_empty() {
            0
        } else {
            page_token
                .parse()
                .map_err(|_| invalid("page_token", "not a token from a previous page"))?
        };
        // Read-your-writes: include everything durable when the call arrived.
        self.inbox.wait_for(self.log.head().await?).await?;
        let (latest, next) = self.inbox.page(unit.as_deref(), state, after, limit);
        let mut page = Vec::with_capacity(latest.len());
        for p in latest {
            page.push(self.referral_at(p).await?);
        }
        Ok((page, next.map(|n| n.to_string()).unwrap_or_default()))
    }

    /// The caller's referrals as they are issued and change: the log after `after_cursor`,
    /// then live. Each item carries the cursor to resume after it.
    pub async fn stream(
        &self,
        principal: &Principal,
        after_cursor: &str,
    ) -> Result<impl Stream<Item = Result<(pb::Referral, String)>> + Send + 'static> {
        let unit = Self::scope(principal, "stream referrals")?;
        let after: u64 = if after_cursor.is_empty() {
            0
        } else {
            after_cursor
                .parse()
                .map_err(|_| invalid("after_cursor", "not a cursor from this stream"))?
        };
        let stream = self
            .log
            .subscribe(after + 1, Filter::prefixes([REFERRAL_PREFIX]))
            .await?;
        Ok(stream.filter_map(move |r| {
            let out = match r {
                Err(e) => Some(Err(Error::from(e))),
                Ok(e) => match CaseEvent::decode(&e.event_type, &e.payload) {
                    Err(err) => Some(Err(Error::from(err))),
                    Ok(ev) => ev
                        .as_ref()
                        .and_then(CaseEvent::referral)
                        .filter(|r| unit.as_ref().is_none_or(|u| &r.department_unit == u))
                        .map(|r| Ok((r.clone(), e.position.to_string()))),
                },
            };
            futures::future::ready(out)
        }))
    }

    /// The referral as written by the event at `position`.
    async fn referral_at(&self, position: u64) -> Result<pb::Referral> {
        let events = self.log.read_all(position, 1).await?;
        let e = events.first().ok_or_else(|| {
            Error::Log(onecity_eventlog::Error::Storage(format!(
                "inbox points at missing position {position}"
            )))
        })?;
        match CaseEvent::decode(&e.event_type, &e.payload)? {
            Some(ev) => ev.referral().cloned().ok_or_else(|| {
                Error::Log(onecity_eventlog::Error::Storage(format!(
                    "position {position} is not a referral event"
                )))
            }),
            None => Err(Error::Log(onecity_eventlog::Error::Storage(format!(
                "position {position} is not a referral event"
            )))),
        }
    }

    /// Finds a referral the principal may act on.
    async fn own_referral(
        &self,
        principal: &Principal,
        referral_id: &str,
        action: &str,
    ) -> Result<(Uuid, String)> {
        let Principal::Department { unit } = principal else {
            return Err(denied(principal, action, Some(referral_id)));
        };
        Uuid::parse_str(referral_id).map_err(|_| invalid("referral_id", "not a uuid"))?;
        let found = match self.inbox.get(referral_id) {
            Some(r) => Some(r),
            None => {
                self.inbox.wait_for(self.log.head().await?).await?;
                self.inbox.get(referral_id)
            }
        };
        let r = found.ok_or_else(|| Error::NotFound(referral_id.to_owned()))?;
        if r.department_unit != unit.to_string() {
            return Err(denied(
                principal,
                &format!("{action} of another unit"),
                Some(referral_id),
            ));
        }
        Ok((r.case_id, r.department_unit))
    }

    /// Marks an ISSUED referral ACKNOWLEDGED (acknowledging again returns it unchanged).
    pub async fn acknowledge(
        &self,
        principal: &Principal,
        referral_id: &str,
    ) -> Result<pb::Referral> {
        let (case_id, _) = self
            .own_referral(principal, referral_id, "acknowledge referrals")
            .await?;
        self.transition(principal, case_id, referral_id, |r| {
            if r.state == pb::ReferralState::Acknowledged as i32 {
                return Ok(None);
            }
            check_open(r)?;
            Ok(Some(CaseEvent::ReferralAcknowledged(pb::Referral {
                state: pb::ReferralState::Acknowledged as i32,
                ..r.clone()
            })))
        })
        .await
    }

    /// Records the decision on an ISSUED or ACKNOWLEDGED referral; closes the case in the
    /// same commit when it was the last open referral.
    pub async fn decide(
        &self,
        principal: &Principal,
        referral_id: &str,
        input: DecisionInput,
    ) -> Result<pb::Referral> {
        let state = match pb::Decision::try_from(input.decision) {
            Ok(pb::Decision::Approved) => pb::ReferralState::Approved,
            Ok(pb::Decision::Denied) => pb::ReferralState::Denied,
            _ => return Err(invalid("decision", "must be APPROVED or DENIED")),
        };
        if input.amount_fen < 0 {
            return Err(invalid("amount_fen", "must not be negative"));
        }
        if state == pb::ReferralState::Denied && input.amount_fen != 0 {
            return Err(invalid(
                "amount_fen",
                "must be 0 when the referral is denied",
            ));
        }
        if input.note.chars().count() > MAX_NOTE_CHARS {
            return Err(invalid(
                "note",
                format!("longer than {MAX_NOTE_CHARS} characters"),
            ));
        }
        let (case_id, _) = self
            .own_referral(principal, referral_id, "decide referrals")
            .await?;
        self.transition(principal, case_id, referral_id, |r| {
            check_open(r)?;
            Ok(Some(CaseEvent::ReferralDecided(pb::Referral {
                state: state as i32,
                decided_amount_fen: input.amount_fen,
                note: input.note.clone(),
                ..r.clone()
            })))
        })
        .await
    }

    /// Applies `change` to the referral's current state and appends the result with the
    /// case's expected version, retrying on a concurrent write. `Ok(None)` from `change`
    /// means "nothing to do": the current referral is returned.
    async fn transition(
        &self,
        principal: &Principal,
        case_id: Uuid,
        referral_id: &str,
        change: impl Fn(&pb::Referral) -> Result<Option<CaseEvent>>,
    ) -> Result<pb::Referral> {
        for _ in 0..MAX_CONFLICT_RETRIES {
            let state = load_case(self.log.as_ref(), case_id).await?;
            let current = state
                .referral(referral_id)
                .ok_or_else(|| Error::NotFound(referral_id.to_owned()))?;
            let Some(event) = change(current)? else {
                return Ok(current.clone());
            };
            let updated = event.referral().cloned().unwrap_or_default();
            let mut events = vec![event];
            let mut after = state.clone();
            after.apply(
                EventMeta {
                    version: state.version + 1,
                    position: 0,
                    event_type: events[0].event_type().into(),
                    actor: String::new(),
                    recorded_at: String::new(),
                },
                Some(&events[0]),
            );
            if after.status == CaseStatus::Open && after.all_referrals_final() {
                events.push(CaseEvent::CaseClosed(pb::CaseClosed {
                    reason: "every referral is decided".into(),
                }));
            }
            let actor = principal.actor();
            let new: Vec<NewEvent> = events
                .iter()
                .map(|e| NewEvent::new(e.event_type(), actor.clone(), e.encode()))
                .collect();
            let commit_id = Uuid::now_v7();
            match self
                .log
                .append(case_id, Expected::Exact(state.version), new, commit_id)
                .await
            {
                Ok(_) => {
                    tracing::info!(%case_id, referral = referral_id, state = updated.state, department = %updated.department_unit, "referral updated");
                    return Ok(updated);
                }
                Err(onecity_eventlog::Error::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Log(onecity_eventlog::Error::Unavailable(format!(
            "case {case_id} kept changing"
        ))))
    }
}

fn check_open(r: &pb::Referral) -> Result<()> {
    if r.state == pb::ReferralState::Cancelled as i32 {
        return Err(Error::FailedPrecondition(format!(
            "referral {} was cancelled: the application was withdrawn",
            r.referral_id
        )));
    }
    if is_final(r.state) {
        return Err(Error::FailedPrecondition(format!(
            "referral {} is already decided",
            r.referral_id
        )));
    }
    Ok(())
}

#[async_trait::async_trait]
impl onecity_eventlog::consumer::ChunkHandler for HandoffWorker {
    type Error = Error;
    /// Chunks overlap safely: a case is assessed once, and every write is checked against
    /// the case's version.
    const IN_FLIGHT: usize = 4;

    /// A chunk holds at most one such event per case, so its cases are processed
    /// concurrently: their writes share the log's group commit instead of each waiting for
    /// its own fsync.
    async fn handle(&self, events: &[RecordedEvent]) -> Result<()> {
        let owned = events
            .iter()
            .filter(|e| self.partition.owns(e.case_id.as_bytes()));
        futures::future::try_join_all(owned.map(|e| self.process(e)))
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    /// The partial view reads exactly what the whole event holds in the fields it declares,
    /// and steps over the rest (rules with inputs and explanations, margin, summary, the
    /// event's own policy version).
    #[test]
    fn assessed_refs_read_what_the_full_event_holds() {
        let full = pb::EligibilityAssessed {
            assessments: (0..12)
                .map(|i: i32| pb::Assessment {
                    programme: i + 1,
                    outcome: i % 4,
                    amount_fen: i64::from(i) * 123_456 - 7,
                    policy_version: format!("2026-0{}", i % 3 + 1),
                    rules: (0..4)
                        .map(|r| pb::RuleResult {
                            rule: format!("rule.{i}.{r}"),
                            held: r % 2 == 0,
                            inputs: [("income_fen".to_owned(), i64::from(r) * 1000)].into(),
                            threshold: 99,
                            explanation: "x".repeat(200),
                        })
                        .collect(),
                    department_unit: format!("civil-affairs@12010{i}"),
                    margin_fen: -5,
                    summary: "s".repeat(100),
                })
                .collect(),
            policy_version: "2026-01".into(),
        };
        let bytes = full.encode_to_vec();
        let refs = AssessedRefs::decode(bytes.as_slice()).unwrap();
        assert_eq!(refs.assessments.len(), full.assessments.len());
        for (r, a) in refs.assessments.iter().zip(&full.assessments) {
            assert_eq!(r.programme, a.programme);
            assert_eq!(r.outcome, a.outcome);
            assert_eq!(r.amount_fen, a.amount_fen);
            assert_eq!(r.policy_version, a.policy_version);
            assert_eq!(r.department_unit, a.department_unit);
        }
    }

    #[test]
    fn issued_keeps_issue_order_whatever_the_arrival_order() {
        let slot = |latest| Slot {
            case_id: Uuid::nil(),
            state: 1,
            latest,
        };
        let mut m = Issued::default();
        for at in [3, 7, 9, 5, 1] {
            m.insert(at, slot(at));
        }
        let order: Vec<u64> = m.after(0).map(|(p, _)| *p).collect();
        assert_eq!(order, vec![1, 3, 5, 7, 9]);
        assert_eq!(m.after(5).map(|(p, _)| *p).collect::<Vec<_>>(), vec![7, 9]);
        assert_eq!(m.after(9).count(), 0);
        m.get_mut(5).unwrap().latest = 42;
        assert_eq!(m.get(5).unwrap().latest, 42);
        assert!(m.get(4).is_none() && m.get_mut(10).is_none());
        m.insert(7, slot(70));
        assert_eq!(m.get(7).unwrap().latest, 70);
        assert_eq!(m.after(0).count(), 5);
    }
    use onecity_eventlog_sled::{SledConfig, SledLog};

    async fn append(log: &SledLog, case_id: Uuid, event: CaseEvent) -> u64 {
        let new = NewEvent::new(event.event_type(), "test", event.encode());
        log.append(case_id, Expected::Any, vec![new], Uuid::now_v7())
            .await
            .unwrap()
            .last_position
    }

    fn issued(case_id: Uuid, programme: Programme) -> CaseEvent {
        CaseEvent::ReferralIssued(pb::Referral {
            referral_id: referral_id(case_id, programme).to_string(),
            case_id: case_id.to_string(),
            programme: programme.to_proto(),
            department_unit: "civil-affairs@120103".into(),
            state: pb::ReferralState::Issued as i32,
            ..Default::default()
        })
    }

    /// The inbox follows referral events only, yet waiting for a head that is not a
    /// referral event ends, with every referral before it applied (a wait for the head
    /// itself would never end: the subscription never delivers that event).
    #[tokio::test]
    async fn wait_for_a_head_past_the_last_referral() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(SledLog::open(dir.path(), SledConfig::default()).unwrap());
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        append(&log, a, issued(a, Programme::Dibao)).await;
        let submitted = CaseEvent::ApplicationSubmitted(pb::ApplicationSubmitted::default());
        let head = append(&log, b, submitted.clone()).await;
        let inbox = Inbox::start(log.clone(), CancellationToken::new());
        inbox.wait_for(head).await.unwrap();
        let first = referral_id(a, Programme::Dibao).to_string();
        assert_eq!(inbox.get(&first).unwrap().case_id, a);

        // Again after the first scan: a new referral, then more events that are not.
        append(&log, b, issued(b, Programme::Medical)).await;
        for _ in 0..(SCAN_PAGE + 3) {
            append(&log, Uuid::now_v7(), submitted.clone()).await;
        }
        let head = log.head().await.unwrap();
        inbox.wait_for(head).await.unwrap();
        let second = referral_id(b, Programme::Medical).to_string();
        assert_eq!(inbox.get(&second).unwrap().case_id, b);
        // A position the previous scans cover answers at once.
        inbox.wait_for(head - 1).await.unwrap();
    }
}
