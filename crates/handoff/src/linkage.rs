//! The linkage worker: once a recognition programme's department decides (dibao, extreme
//! poverty, low-income marginal, rigid expenditure), the departmental programmes linked to
//! the recognition are assessed again with the decided recognition, and their referrals
//! follow in one commit per decision (a review referral's decision is one more decision
//! of its programme, replacing the one it reviewed); once every public referral of a consenting
//! household ended denied or cancelled, the charity referral of last resort is issued.

use onecity_domain::rfc3339;
use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use onecity_domain::case::{
    is_decided, is_dependent, is_final, is_recognition, CaseState, CaseStatus, DEPENDENT_PROGRAMMES,
};
use onecity_domain::events::{CaseEvent, REFERRAL_CANCELLED, REFERRAL_DECIDED};
use onecity_domain::{ids, validate_application, DistrictCode, Partition, Programme};
use onecity_eligibility::{decide, Catalogue, Decided, PolicyBook};
use onecity_eventlog::{EventLog, Filter, NewEvent, RecordedEvent};
use onecity_proto::v1 as pb;
use onecity_service::case::{append_with_retries, meta, Commit, Outcome, Step};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{referral_id, Error, Result};

/// Consumer name of the linkage worker's checkpoint.
pub const LINKAGE_CONSUMER: &str = "linkage";
/// The actor the linkage worker writes its events as.
pub const LINKAGE_ACTOR: &str = "service:linkage";

/// Applies recognition decisions to the linked programmes, and issues the charity referral
/// when a case would otherwise end with nothing.
#[derive(Debug, Clone)]
pub struct LinkageWorker {
    log: Arc<dyn EventLog>,
    policies: Arc<PolicyBook>,
    catalogue: Arc<Catalogue>,
    partition: Partition,
}

/// What the worker did for one case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Linked {
    /// Recognition decisions applied (one commit each).
    pub decisions: usize,
    /// Charity referrals issued (at most one per case).
    pub charity: usize,
}

/// One step the case is waiting for, decided from its state.
enum Pending {
    Decision(Box<pb::Referral>),
    Charity,
}

impl LinkageWorker {
    /// A worker over `log`, re-assessing under `policies` with `catalogue`'s units and
    /// deadlines.
    pub fn new(
        log: Arc<dyn EventLog>,
        policies: Arc<PolicyBook>,
        catalogue: Arc<Catalogue>,
    ) -> Self {
        LinkageWorker {
            log,
            policies,
            catalogue,
            partition: Partition::default(),
        }
    }

    /// Makes this instance handle only the cases of `partition` (with its own checkpoint).
    pub fn with_partition(mut self, partition: Partition) -> Self {
        self.partition = partition;
        self
    }

    /// The event types the worker follows: every decision or cancellation may be a
    /// recognition decision to apply, or the last public referral ending.
    pub const FOLLOWS: [&'static str; 2] = [REFERRAL_DECIDED, REFERRAL_CANCELLED];

    /// The checkpoint name of the worker that handles `partition`.
    pub fn consumer_name(partition: &Partition) -> String {
        format!("{LINKAGE_CONSUMER}{}", partition.consumer_suffix())
    }

    /// Follows the log from the saved checkpoint until `shutdown`. At-least-once delivery;
    /// [`LinkageWorker::process`] makes a replay a no-op.
    pub async fn run(self, shutdown: CancellationToken) {
        let consumer = Self::consumer_name(&self.partition);
        let filter = Filter::prefixes(Self::FOLLOWS);
        onecity_eventlog::consumer::run(Arc::clone(&self.log), &consumer, filter, shutdown, &self)
            .await;
    }

    /// Brings the case of `event` up to date: every recognition decision not yet applied,
    /// oldest first, one commit each (deterministic commit id, expected version), then the
    /// charity referral if it is due. What is pending is read from the case itself
    /// (`RecognitionLinked`, the referrals), so a replay or a second event of the same
    /// case finds nothing to do.
    pub async fn process(&self, event: &RecordedEvent) -> Result<Linked> {
        let mut done = Linked::default();
        if !Self::FOLLOWS.contains(&event.event_type.as_str()) {
            return Ok(done);
        }
        let case_id = event.case_id;
        // Each round writes one commit or ends; a case has at most four decisions and one
        // charity referral, so the bound only guards against a bug looping forever.
        for _ in 0..8 {
            let outcome = append_with_retries(self.log.as_ref(), case_id, |_| async move {
                let (state, decided_at) = self.load(case_id).await?;
                Ok::<_, Error>(match self.next_step(&state) {
                    None => Step::Done(()),
                    Some(Pending::Decision(r)) => {
                        let at = decided_at
                            .get(&r.referral_id)
                            .copied()
                            .unwrap_or_else(Utc::now);
                        let events = self.link(case_id, &state, &r, at)?;
                        let commit = self.commit(
                            &state,
                            events,
                            ids::linkage_commit(case_id, &r.referral_id),
                        );
                        Step::Append(commit, Pending::Decision(r))
                    }
                    Some(Pending::Charity) => match self.charity(case_id, &state) {
                        Some(referral) => {
                            let events = vec![CaseEvent::ReferralIssued(referral)];
                            let commit = self.commit(&state, events, ids::charity_commit(case_id));
                            Step::Append(commit, Pending::Charity)
                        }
                        None => Step::Done(()),
                    },
                })
            })
            .await?;
            match outcome {
                Outcome::Unchanged(_) => break,
                Outcome::Appended(step, appended) => {
                    if appended.deduplicated {
                        // Written before (a retry that lost its reply): the case has moved
                        // past it, so the next round reads on from there.
                        continue;
                    }
                    match step {
                        Pending::Decision(r) => {
                            done.decisions += 1;
                            tracing::info!(%case_id, programme = r.programme, department = %r.department_unit, "recognition decision linked");
                        }
                        Pending::Charity => {
                            done.charity += 1;
                            tracing::info!(%case_id, "charity referral issued");
                        }
                    }
                }
            }
        }
        Ok(done)
    }

    /// The case, and when each referral was decided (the recording time of its
    /// `ReferralDecided`).
    async fn load(&self, case_id: Uuid) -> Result<(CaseState, BTreeMap<String, DateTime<Utc>>)> {
        let events = self.log.read_case_all(case_id).await?;
        let mut state = CaseState::default();
        let mut decided_at = BTreeMap::new();
        for e in &events {
            let event = CaseEvent::decode(&e.event_type, &e.payload)?;
            if let Some(CaseEvent::ReferralDecided(r)) = &event {
                decided_at.insert(r.referral_id.clone(), DateTime::<Utc>::from(e.recorded_at));
            }
            state.apply(meta(e), event.as_ref());
        }
        Ok((state, decided_at))
    }

    fn next_step(&self, state: &CaseState) -> Option<Pending> {
        if state.status != CaseStatus::Open {
            return None;
        }
        if let Some(r) = state.linkage_pending().next() {
            return Some(Pending::Decision(Box::new(r.clone())));
        }
        state.charity_due().then_some(Pending::Charity)
    }

    /// One commit of `events`, closing the case too when they leave it ready to close.
    fn commit(&self, state: &CaseState, mut events: Vec<CaseEvent>, commit_id: Uuid) -> Commit {
        events.extend(state.closed_by(&events));
        Commit {
            version: state.version,
            events: events
                .iter()
                .map(|e| NewEvent::new(e.event_type(), LINKAGE_ACTOR, e.encode()))
                .collect(),
            commit_id,
        }
    }

    /// The events that apply the decision of recognition referral `decided` (decided at
    /// `at`) to the linked programmes, ending with its `RecognitionLinked`.
    fn link(
        &self,
        case_id: Uuid,
        state: &CaseState,
        decided: &pb::Referral,
        at: DateTime<Utc>,
    ) -> Result<Vec<CaseEvent>> {
        let approved = decided.state == pb::ReferralState::Approved as i32;
        let decided_on = onecity_domain::format_date((at + TimeDelta::hours(8)).date_naive());
        let unit = decided.department_unit.clone();
        let marker = CaseEvent::RecognitionLinked(pb::RecognitionLinked {
            referral_id: decided.referral_id.clone(),
            programme: decided.programme,
            approved,
            department_unit: unit.clone(),
            decided_on: decided_on.clone(),
        });
        let Some(app) = state
            .application()
            .cloned()
            .and_then(|a| validate_application(a, onecity_domain::today()).ok())
        else {
            tracing::error!(%case_id, "stored application fails validation, decision linked without re-assessment");
            return Ok(vec![marker]);
        };
        let policy = state
            .assessed
            .as_ref()
            .and_then(|a| self.policies.get(&a.policy_version))
            .or_else(|| self.policies.in_force(app.application_date));
        let Some(policy) = policy else {
            tracing::error!(%case_id, "no policy for the case, decision linked without re-assessment");
            return Ok(vec![marker]);
        };
        // The decisions already applied, and this one: the case's recognition as decided.
        // A review's decision (renewal or end) replaces the decision it reviewed.
        let counted: Vec<&pb::Referral> = state
            .referrals
            .iter()
            .filter(|r| {
                is_recognition(r.programme)
                    && is_decided(r.state)
                    && (state.linked.contains(&r.referral_id)
                        || r.referral_id == decided.referral_id)
            })
            .collect();
        let decisions: Vec<Decided> = counted
            .iter()
            .filter(|r| !counted.iter().any(|q| q.reviews == r.referral_id))
            .filter_map(|r| {
                Some(Decided {
                    programme: Programme::from_proto(r.programme)?,
                    approved: r.state == pb::ReferralState::Approved as i32,
                })
            })
            .collect();
        // Outcomes and amounts only: nothing here shows words.
        let assessments = decide(&app, policy, &self.catalogue, &decisions);
        // The basis names the decision in hand; whether the programme is still met comes
        // from every decision so far.
        let basis = if approved {
            pb::ReferralBasis::RecognitionConfirmed
        } else {
            pb::ReferralBasis::RecognitionDenied
        } as i32;
        let mut events = Vec::new();
        for programme in DEPENDENT_PROGRAMMES {
            let Some(p) = Programme::from_proto(programme as i32) else {
                continue;
            };
            let Some(a) = assessments.iter().find(|a| a.programme == p) else {
                continue;
            };
            let id = referral_id(case_id, p).to_string();
            let met = a.outcome.is_referred();
            let outcome = a.outcome.to_proto();
            // The programme's latest referral (a re-assessment may have issued one after the
            // first ended); a transferred referral lives on at the unit it was moved to.
            match state.current_referral(programme as i32) {
                Some(r) if is_final(r.state) => {}
                Some(r)
                    if met
                        && (r.basis != basis
                            || r.basis_unit != unit
                            || r.basis_decided_on != decided_on) =>
                {
                    events.push(CaseEvent::ReferralBasisUpdated(pb::Referral {
                        basis,
                        basis_unit: unit.clone(),
                        basis_decided_on: decided_on.clone(),
                        outcome,
                        assessed_amount_fen: a.amount_fen,
                        ..r.clone()
                    }));
                }
                Some(_) if met => {}
                Some(r) => events.push(CaseEvent::ReferralCancelled(pb::Referral {
                    state: pb::ReferralState::Cancelled as i32,
                    basis,
                    basis_unit: unit.clone(),
                    basis_decided_on: decided_on.clone(),
                    cancel_reason: if decided.reviews.is_empty() {
                        format!("recognition denied by {unit} on {decided_on}")
                    } else {
                        format!("recognition ended on re-verification by {unit} on {decided_on}")
                    },
                    ..r.clone()
                })),
                None if met => {
                    events.push(CaseEvent::ReferralIssued(pb::Referral {
                        referral_id: id,
                        case_id: case_id.to_string(),
                        programme: programme as i32,
                        department_unit: a.department_unit.to_string(),
                        state: pb::ReferralState::Issued as i32,
                        due_at: rfc3339(self.catalogue.due_at(p, at)),
                        outcome,
                        assessed_amount_fen: a.amount_fen,
                        decided_amount_fen: 0,
                        note: String::new(),
                        issued_at: rfc3339(at),
                        policy_version: a.policy_version.clone(),
                        basis,
                        basis_unit: unit.clone(),
                        basis_decided_on: decided_on.clone(),
                        cancel_reason: String::new(),
                        summary: String::new(),
                        ..Default::default()
                    }));
                }
                None => {}
            }
        }
        debug_assert!(events
            .iter()
            .all(|e| e.referral().is_some_and(|r| is_dependent(r.programme))));
        events.push(marker);
        Ok(events)
    }

    /// The charity referral of last resort, its summary listing how each public referral
    /// ended.
    fn charity(&self, case_id: Uuid, state: &CaseState) -> Option<pb::Referral> {
        let Some(district) = state
            .application()
            .and_then(|a| DistrictCode::parse(&a.district_code))
        else {
            tracing::error!(%case_id, "stored application has no district of the city, no charity referral");
            return None;
        };
        let ended: Vec<String> = state
            .referrals
            .iter()
            .map(|r| {
                let name = Programme::from_proto(r.programme).map_or("unknown", |p| p.as_str());
                if r.state == pb::ReferralState::Denied as i32 {
                    format!("{name} denied by {}", r.department_unit)
                } else if r.cancel_reason.is_empty() {
                    format!("{name} cancelled")
                } else {
                    format!("{name} cancelled: {}", r.cancel_reason)
                }
            })
            .collect();
        let now = Utc::now();
        Some(pb::Referral {
            referral_id: referral_id(case_id, Programme::Charity).to_string(),
            case_id: case_id.to_string(),
            programme: pb::Programme::Charity as i32,
            department_unit: self
                .catalogue
                .unit(Programme::Charity, district)
                .to_string(),
            state: pb::ReferralState::Issued as i32,
            due_at: rfc3339(self.catalogue.due_at(Programme::Charity, now)),
            outcome: pb::Outcome::NeedsReview as i32,
            assessed_amount_fen: 0,
            decided_amount_fen: 0,
            note: String::new(),
            issued_at: rfc3339(now),
            policy_version: state
                .assessed
                .as_ref()
                .map(|a| a.policy_version.clone())
                .unwrap_or_default(),
            basis: pb::ReferralBasis::Unspecified as i32,
            basis_unit: String::new(),
            basis_decided_on: String::new(),
            cancel_reason: String::new(),
            summary: format!("every public referral ended: {}", ended.join("; ")),
            ..Default::default()
        })
    }
}

#[async_trait::async_trait]
impl onecity_eventlog::consumer::ChunkHandler for LinkageWorker {
    type Error = Error;
    /// Chunks overlap safely: every write is checked against the case's version and what
    /// is pending is read from the case.
    const IN_FLIGHT: usize = 4;

    /// One case at a time per case in the chunk (several events of one case would only
    /// race each other for the same commits), the cases concurrently.
    async fn handle(&self, events: &[RecordedEvent]) -> Result<()> {
        let mut cases: Vec<&RecordedEvent> = Vec::new();
        for e in events
            .iter()
            .filter(|e| self.partition.owns(e.case_id.as_bytes()))
        {
            if !cases.iter().any(|c| c.case_id == e.case_id) {
                cases.push(e);
            }
        }
        futures::future::try_join_all(cases.into_iter().map(|e| self.process(e)))
            .await
            .map(drop)
    }

    /// A stored event that does not decode never will: the consumer quarantines it.
    fn is_poison(err: &Error) -> bool {
        matches!(err, Error::Corrupt(_))
    }
}
