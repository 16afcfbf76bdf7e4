//! The department-side projection: every referral in its latest state, rebuilt from the
//! log on start and kept current by a subscription.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use onecity_domain::events::{CaseEvent, REFERRAL_PREFIX};
use onecity_eventlog::{EventLog, RecordedEvent};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Result;

/// One referral in the inbox: just enough to route, filter and find its latest event.
/// Kept small on purpose (no strings: the unit is interned) because the inbox holds every
/// referral ever issued; the full referral is read back from the log when listed.
#[derive(Debug, Clone, Copy)]
struct Slot {
    case_id: Uuid,
    state: i32,
    programme: i32,
    /// `due_at` in milliseconds since the epoch (`i64::MAX` when unreadable).
    due_ms: i64,
    overdue: bool,
    /// Escalated to the district supervisor (`escalated_at` set).
    escalated: bool,
    /// Position of the referral's latest event.
    latest: u64,
}

/// What [`Inbox::counts`] reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboxCounts {
    /// Referrals by `ReferralState` value.
    pub by_state: std::collections::BTreeMap<i32, u64>,
    /// Undecided referrals past their deadline.
    pub overdue: u64,
    /// Undecided referrals escalated to the district supervisor.
    pub escalated: u64,
}

/// Which referrals a listing wants; every `None`/`false` admits all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReferralFilter {
    /// Only this `ReferralState` value.
    pub state: Option<i32>,
    /// Only this `Programme` value.
    pub programme: Option<i32>,
    /// Only overdue referrals not yet in a final state.
    pub overdue_only: bool,
    /// Only referrals due strictly before this instant (milliseconds since the epoch).
    pub due_before_ms: Option<i64>,
}

impl ReferralFilter {
    fn admits(&self, s: &Slot) -> bool {
        self.state.is_none_or(|want| s.state == want)
            && self.programme.is_none_or(|want| s.programme == want)
            && (!self.overdue_only || (s.overdue && !onecity_domain::case::is_final(s.state)))
            && self.due_before_ms.is_none_or(|before| s.due_ms < before)
    }
}

/// Whose referrals a listing covers: the principal's reach, decided by the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every unit (an administrator).
    All,
    /// One unit, `<department>@<district>` (a department).
    Unit(String),
    /// Every unit of one district, by district code (a supervisor).
    District(String),
}

impl Scope {
    /// Whether the referrals of `unit` (`<department>@<district>`) are in scope.
    pub fn admits(&self, unit: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Unit(u) => u == unit,
            Scope::District(d) => unit
                .rsplit_once('@')
                .is_some_and(|(_, district)| district == d),
        }
    }
}

fn due_millis(due_at: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(due_at).map_or(i64::MAX, |t| t.timestamp_millis())
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
/// events in log order, so positions arrive ascending and a sorted `Vec` serves where a
/// `BTreeMap` filled in order costs much more memory a referral, which at a large log is
/// a good part of a cold start's peak memory (docs/performance.md).
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
/// It subscribes to referral events only, so its start-up reads the small referral events
/// rather than decoding every event of every case (the large assessments among them).
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

impl onecity_eventlog::projection::Projection for Inbox {
    fn name(&self) -> &'static str {
        "inbox"
    }
    fn prefixes(&self) -> Vec<&'static str> {
        vec![REFERRAL_PREFIX]
    }
    fn applied(&self) -> u64 {
        *self.applied.borrow()
    }
    fn apply(&self, events: &[RecordedEvent]) {
        Inbox::apply(self, events);
    }
}

/// Events read per page while looking back for the last referral event.
const SCAN_PAGE: u64 = 32;

impl Inbox {
    /// Starts the projection: it replays the log's referral events from the beginning,
    /// then follows them.
    pub fn start(log: Arc<dyn EventLog>, shutdown: CancellationToken) -> Arc<Inbox> {
        let inbox = Arc::new(Inbox::new(Arc::clone(&log)));
        onecity_eventlog::projection::start(inbox, log, shutdown)
    }

    /// An empty inbox over `log` (which answers its waits), fed by whoever follows the
    /// log for it ([`onecity_eventlog::projection::follow`]).
    pub fn new(log: Arc<dyn EventLog>) -> Inbox {
        Inbox {
            log,
            state: RwLock::new(InboxState::default()),
            applied: watch::channel(0).0,
            scanned: Mutex::new((0, 0)),
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
                            slot.due_ms = due_millis(&r.due_at);
                            slot.overdue = r.overdue;
                            slot.escalated = !r.escalated_at.is_empty();
                        }
                    }
                    None => {
                        let unit = st.unit_id(&r.department_unit);
                        st.ids.insert(id, (unit, e.position));
                        let slot = Slot {
                            case_id: e.case_id,
                            state: r.state,
                            programme: r.programme,
                            due_ms: due_millis(&r.due_at),
                            overdue: r.overdue,
                            escalated: !r.escalated_at.is_empty(),
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
        let found = onecity_eventlog::projection::last_read_at_or_before(
            self.log.as_ref(),
            &[REFERRAL_PREFIX],
            floor,
            position,
            SCAN_PAGE,
        )
        .await?;
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

    /// How many referrals stand in each `ReferralState` value, and how many undecided ones
    /// are overdue or escalated, for the metrics endpoint.
    pub fn counts(&self) -> InboxCounts {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        let mut counts = InboxCounts::default();
        for (_, slot) in st.by_unit.values().flat_map(|m| m.after(0)) {
            *counts.by_state.entry(slot.state).or_insert(0) += 1;
            if !onecity_domain::case::is_final(slot.state) {
                counts.overdue += u64::from(slot.overdue);
                counts.escalated += u64::from(slot.escalated);
            }
        }
        counts
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
        let filter = ReferralFilter {
            state,
            ..ReferralFilter::default()
        };
        let scope = unit.map_or(Scope::All, |u| Scope::Unit(u.to_owned()));
        self.page_where(&scope, &filter, after, limit)
    }

    /// [`Inbox::page`] with every filter of `ListReferrals`.
    pub fn page_where(
        &self,
        scope: &Scope,
        filter: &ReferralFilter,
        after: u64,
        limit: usize,
    ) -> (Vec<u64>, Option<u64>) {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        let units: Vec<u32> = match scope {
            Scope::Unit(u) => st.unit_ids.get(u).copied().into_iter().collect(),
            Scope::All => st.by_unit.keys().copied().collect(),
            Scope::District(_) => st
                .unit_ids
                .iter()
                .filter(|(name, _)| scope.admits(name))
                .map(|(_, id)| *id)
                .collect(),
        };
        // Issue order across the selected units: a k-way merge by issue position.
        let mut iters: Vec<_> = units
            .iter()
            .filter_map(|u| st.by_unit.get(u))
            .map(|m| m.after(after).filter(|(_, s)| filter.admits(s)).peekable())
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

#[cfg(test)]
mod tests {
    use onecity_domain::Programme;
    use onecity_eventlog::memory::MemoryLog;
    use onecity_eventlog::{Expected, NewEvent};
    use onecity_proto::v1 as pb;

    use super::*;
    use crate::referral_id;

    #[test]
    fn issued_keeps_issue_order_whatever_the_arrival_order() {
        let slot = |latest| Slot {
            case_id: Uuid::nil(),
            state: 1,
            programme: 1,
            due_ms: 0,
            overdue: false,
            escalated: false,
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

    async fn append(log: &MemoryLog, case_id: Uuid, event: CaseEvent) -> u64 {
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
        let log = Arc::new(MemoryLog::new());
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
