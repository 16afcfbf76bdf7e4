//! The back-office API core: departments list and stream their referrals, acknowledge,
//! decide and transfer them and ask the household for information; district supervisors
//! list and stream their district's referrals and transfer them. [`ReferralWriter`] writes
//! every transition, also intake's `ProvideInformation`.

use onecity_domain::rfc3339;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use onecity_domain::case::CaseState;
use onecity_domain::events::{CaseEvent, REFERRAL_PREFIX};
use onecity_domain::referral::{self, ReferralAction};
use onecity_domain::text::{check_request_id, check_text, TextKind};
use onecity_domain::{ids, DepartmentUnit, Principal, Programme};
use onecity_eligibility::{Catalogue, PolicyBook};
use onecity_eventlog::{Appended, EventLog, Filter, NewEvent};
use onecity_proto::v1 as pb;
use onecity_service::access::{Access, Reader};
use onecity_service::case::{
    append_case_commit, commit_events, decode_or_skip, denied, recorded_commit, Commit, Outcome,
    Step, Subject,
};
use onecity_service::clock::{Clock, SystemClock};
use uuid::Uuid;

use crate::inbox::{ReferralFilter, Scope};
use crate::{invalid, Error, Inbox, Result, MAX_NOTE_CHARS, MAX_PAGE_SIZE};

/// The back-office API core.
#[derive(Debug, Clone)]
pub struct Handoff {
    log: Arc<dyn EventLog>,
    inbox: Arc<Inbox>,
    access: Access,
    writer: ReferralWriter,
    catalogue: Arc<Catalogue>,
    policies: Arc<PolicyBook>,
}

/// A transfer as asked: where to and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// The receiving unit, `<department>@<district>`.
    pub to_unit: String,
    /// Why, shown to both units and on the case.
    pub reason: String,
}

/// A required free-text field: 1..=[`MAX_NOTE_CHARS`] characters, not only blanks.
fn required_text(field: &str, value: &str) -> Result<()> {
    check_text(field, value, MAX_NOTE_CHARS, TextKind::Paragraph)?;
    if value.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    Ok(())
}

/// The methods whose reads are recorded, as access records name them.
const LIST_REFERRALS: &str = "onecity.v1.HandoffService/ListReferrals";
const STREAM_REFERRALS: &str = "onecity.v1.HandoffService/StreamReferrals";
/// Most streamed referrals recorded as read in one access record.
const STREAM_RECORD_BATCH: usize = 256;

/// The distinct cases of `referrals`, in order of first appearance.
fn cases_of(referrals: &[pb::Referral]) -> Vec<Uuid> {
    let mut cases: Vec<Uuid> = Vec::new();
    for r in referrals {
        if let Ok(id) = r.case_id.parse::<Uuid>() {
            if !cases.contains(&id) {
                cases.push(id);
            }
        }
    }
    cases
}

/// A referral state given by a client: 0 means "any".
fn state_filter(state: i32) -> Result<Option<i32>> {
    match pb::ReferralState::try_from(state) {
        Ok(pb::ReferralState::Unspecified) => Ok(None),
        Ok(s) => Ok(Some(s as i32)),
        Err(_) => Err(invalid("state", format!("unknown referral state {state}"))),
    }
}

/// The filters of `ListReferrals` as the client gave them: 0, `false` and empty admit all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// `ReferralState` value.
    pub state: i32,
    /// `Programme` value.
    pub programme: i32,
    /// Only overdue referrals not yet final.
    pub overdue_only: bool,
    /// RFC 3339 instant: only referrals due strictly before it.
    pub due_before: String,
}

impl ListQuery {
    fn filter(&self) -> Result<ReferralFilter> {
        let programme = match pb::Programme::try_from(self.programme) {
            Ok(pb::Programme::Unspecified) => None,
            Ok(p) => Some(p as i32),
            Err(_) => {
                return Err(invalid(
                    "programme",
                    format!("unknown programme {}", self.programme),
                ))
            }
        };
        let due_before_ms = if self.due_before.is_empty() {
            None
        } else {
            let t = chrono::DateTime::parse_from_rfc3339(&self.due_before)
                .map_err(|_| invalid("due_before", "not an rfc 3339 instant"))?;
            Some(t.timestamp_millis())
        };
        Ok(ReferralFilter {
            state: state_filter(self.state)?,
            programme,
            overdue_only: self.overdue_only,
            due_before_ms,
        })
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
        Handoff {
            access: Access::new(Arc::clone(&log)),
            writer: ReferralWriter::new(Arc::clone(&log)),
            catalogue: Arc::new(Catalogue::embedded()),
            policies: Arc::new(PolicyBook::embedded_default()),
            log,
            inbox,
        }
    }

    /// Dates the re-verification of an approved recognition under `policies` (by default
    /// the embedded ones).
    pub fn with_policies(mut self, policies: Arc<PolicyBook>) -> Self {
        self.policies = policies;
        self
    }

    /// Gives a transferred referral its fresh deadline from `catalogue` (by default the
    /// embedded one).
    pub fn with_catalogue(mut self, catalogue: Arc<Catalogue>) -> Self {
        self.catalogue = catalogue;
        self
    }

    /// Reads the time of transfers and information requests from `clock` (by default the
    /// system clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.writer = self.writer.with_clock(clock);
        self
    }

    /// Records reads through `access` (by default every read is recorded in the log).
    pub fn with_access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// The referrals a principal may see: a department its unit's, a supervisor its
    /// district's, an admin every unit's.
    fn scope(principal: &Principal, action: &str) -> Result<Scope> {
        match principal {
            Principal::Department { unit } => Ok(Scope::Unit(unit.to_string())),
            Principal::Supervisor { district } => Ok(Scope::District(district.to_string())),
            Principal::Admin { .. } => Ok(Scope::All),
            _ => Err(denied(principal, action, Subject::Nothing).into()),
        }
    }

    /// A page of the caller's referrals (all states when `state` is 0), in issue order.
    pub async fn list(
        &self,
        reader: &Reader,
        state: i32,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<pb::Referral>, String)> {
        let query = ListQuery {
            state,
            ..ListQuery::default()
        };
        self.list_where(reader, &query, page_size, page_token).await
    }

    /// [`Handoff::list`] with every filter of `ListReferrals`.
    pub async fn list_where(
        &self,
        reader: &Reader,
        query: &ListQuery,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<pb::Referral>, String)> {
        let scope = Self::scope(&reader.principal, "list referrals")?;
        let filter = query.filter()?;
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
        let (latest, next) = self.inbox.page_where(&scope, &filter, after, limit);
        let mut page = Vec::with_capacity(latest.len());
        for p in latest {
            page.push(self.referral_at(p).await?);
        }
        self.access
            .record(reader, LIST_REFERRALS, cases_of(&page))
            .await?;
        Ok((page, next.map(|n| n.to_string()).unwrap_or_default()))
    }

    /// The caller's referrals as they are issued and change: the log after `after_cursor`,
    /// then live. Each item carries the cursor to resume after it.
    ///
    /// Every referral is recorded as read (an access record naming its case) before it is
    /// delivered: the stream's reads are not known when it opens. The referrals ready at
    /// once are recorded together, in one record, so a stream catching up on a backlog
    /// costs one durable append per batch rather than one per referral (which capped a
    /// stream at the log's fsync rate).
    pub async fn stream(
        &self,
        reader: &Reader,
        after_cursor: &str,
    ) -> Result<impl Stream<Item = Result<(pb::Referral, String)>> + Send + 'static> {
        let scope = Self::scope(&reader.principal, "stream referrals")?;
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
        let (access, reader) = (self.access.clone(), reader.clone());
        Ok(stream
            .filter_map(move |r| {
                let out = match r {
                    Err(e) => Some(Err(Error::from(e))),
                    Ok(e) => decode_or_skip(&e)
                        .flatten()
                        .as_ref()
                        .and_then(CaseEvent::referral)
                        .filter(|r| scope.admits(&r.department_unit))
                        .map(|r| Ok((r.clone(), e.position.to_string()))),
                };
                futures::future::ready(out)
            })
            .ready_chunks(STREAM_RECORD_BATCH)
            .then(move |chunk| {
                let (access, reader) = (access.clone(), reader.clone());
                async move {
                    // What precedes an error is recorded and delivered, then the error ends
                    // the chunk: nothing after it goes out unrecorded.
                    let mut chunk = chunk;
                    if let Some(bad) = chunk.iter().position(Result::is_err) {
                        chunk.truncate(bad + 1);
                    }
                    let ok: Vec<pb::Referral> = chunk
                        .iter()
                        .filter_map(|item| item.as_ref().ok().map(|(r, _)| r.clone()))
                        .collect();
                    if let Err(e) = access
                        .record(&reader, STREAM_REFERRALS, cases_of(&ok))
                        .await
                    {
                        return vec![Err(Error::from(e))];
                    }
                    chunk
                }
            })
            .flat_map(futures::stream::iter))
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

    /// Finds a referral the principal may act on as its department.
    async fn own_referral(
        &self,
        principal: &Principal,
        referral_id: &str,
        action: &str,
    ) -> Result<(Uuid, String)> {
        let Principal::Department { unit } = principal else {
            return Err(denied(principal, action, Subject::Referral(referral_id)).into());
        };
        let (case_id, at) = self.find(referral_id).await?;
        if at != unit.to_string() {
            return Err(denied(
                principal,
                &format!("{action} of another unit"),
                Subject::Referral(referral_id),
            )
            .into());
        }
        Ok((case_id, at))
    }

    /// The case and current unit of a referral, waiting for the inbox to catch up with the
    /// log before saying it does not exist.
    async fn find(&self, referral_id: &str) -> Result<(Uuid, String)> {
        Uuid::parse_str(referral_id).map_err(|_| invalid("referral_id", "not a uuid"))?;
        let found = match self.inbox.get(referral_id) {
            Some(r) => Some(r),
            None => {
                self.inbox.wait_for(self.log.head().await?).await?;
                self.inbox.get(referral_id)
            }
        };
        let r = found.ok_or_else(|| Error::NotFound(referral_id.to_owned()))?;
        Ok((r.case_id, r.department_unit))
    }

    /// Marks an ISSUED referral ACKNOWLEDGED (acknowledging again returns it unchanged).
    pub async fn acknowledge(
        &self,
        principal: &Principal,
        referral_id: &str,
    ) -> Result<pb::Referral> {
        self.acknowledge_with_request_id(principal, referral_id, None)
            .await
    }

    /// [`Handoff::acknowledge`] under an idempotency key (see [`RequestKey`]).
    pub async fn acknowledge_with_request_id(
        &self,
        principal: &Principal,
        referral_id: &str,
        request_id: Option<&str>,
    ) -> Result<pb::Referral> {
        let (case_id, _) = self
            .own_referral(principal, referral_id, "acknowledge referrals")
            .await?;
        let key = RequestKey::new(
            principal,
            request_id,
            |e| matches!(e, CaseEvent::ReferralAcknowledged(r) if r.referral_id == referral_id),
        )?;
        self.writer
            .transition(principal, case_id, referral_id, key.as_ref(), |r| {
                if r.state == pb::ReferralState::Acknowledged as i32 {
                    return Ok(None);
                }
                let state = allowed(r, ReferralAction::Acknowledge)?;
                Ok(Some(vec![CaseEvent::ReferralAcknowledged(pb::Referral {
                    state: state as i32,
                    ..r.clone()
                })]))
            })
            .await
            .map(first)
    }

    /// Records the decision on an ISSUED or ACKNOWLEDGED referral; closes the case in the
    /// same commit when it was the last open referral. An approved recognition carries its
    /// re-verification date (`review_due_on`) in the same event.
    pub async fn decide(
        &self,
        principal: &Principal,
        referral_id: &str,
        input: DecisionInput,
    ) -> Result<pb::Referral> {
        self.decide_with_request_id(principal, referral_id, input, None)
            .await
    }

    /// [`Handoff::decide`] under an idempotency key (see [`RequestKey`]): a retry returns
    /// the referral as the decision left it, even though it is decided now.
    pub async fn decide_with_request_id(
        &self,
        principal: &Principal,
        referral_id: &str,
        input: DecisionInput,
        request_id: Option<&str>,
    ) -> Result<pb::Referral> {
        let (state, action) = match pb::Decision::try_from(input.decision) {
            Ok(pb::Decision::Approved) => (pb::ReferralState::Approved, ReferralAction::Approve),
            Ok(pb::Decision::Denied) => (pb::ReferralState::Denied, ReferralAction::Deny),
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
        check_text("note", &input.note, MAX_NOTE_CHARS, TextKind::Paragraph)?;
        let (case_id, _) = self
            .own_referral(principal, referral_id, "decide referrals")
            .await?;
        let key = RequestKey::new(principal, request_id, |e| {
            matches!(e, CaseEvent::ReferralDecided(r) if r.referral_id == referral_id
                && r.state == state as i32
                && r.decided_amount_fen == input.amount_fen
                && r.note == input.note)
        })?;
        let now = self.writer.clock.now();
        self.writer
            .transition_in_case(principal, case_id, referral_id, key.as_ref(), |case, r| {
                allowed(r, action)?;
                let review_due_on = if state == pb::ReferralState::Approved {
                    crate::reverification::review_due_on(&self.policies, case, r, now)
                } else {
                    String::new()
                };
                Ok(Some(vec![CaseEvent::ReferralDecided(pb::Referral {
                    state: state as i32,
                    decided_amount_fen: input.amount_fen,
                    note: input.note.clone(),
                    review_due_on,
                    decided_at: rfc3339(now),
                    ..r.clone()
                })]))
            })
            .await
            .map(first)
    }

    /// Moves an open referral to another unit: the old referral ends TRANSFERRED and the
    /// receiving unit gets a new referral, ISSUED with a fresh deadline, in one commit. A
    /// department moves its own referral to its department in another district (the
    /// household lives elsewhere than its registration); a supervisor moves any referral of
    /// its district to another unit of its district. Returns (old, new).
    pub async fn transfer(
        &self,
        principal: &Principal,
        referral_id: &str,
        transfer: &Transfer,
        request_id: Option<&str>,
    ) -> Result<(pb::Referral, pb::Referral)> {
        Uuid::parse_str(referral_id).map_err(|_| invalid("referral_id", "not a uuid"))?;
        let to: DepartmentUnit = transfer.to_unit.parse().map_err(|e| {
            invalid(
                "to_unit",
                format!("{e} (expected <department>@<district code>)"),
            )
        })?;
        required_text("reason", &transfer.reason)?;
        let subject = Subject::Referral(referral_id);
        let (case_id, from) = match principal {
            Principal::Department { unit } => {
                let found = self
                    .own_referral(principal, referral_id, "transfer referrals")
                    .await?;
                if to.department != unit.department {
                    return Err(denied(
                        principal,
                        "transfer a referral to another department",
                        subject,
                    )
                    .into());
                }
                found
            }
            Principal::Supervisor { district } => {
                let (case_id, from) = self.find(referral_id).await?;
                if !Scope::District(district.to_string()).admits(&from) {
                    return Err(denied(
                        principal,
                        "transfer a referral of another district",
                        subject,
                    )
                    .into());
                }
                if to.district != *district {
                    return Err(denied(
                        principal,
                        "transfer a referral out of its district",
                        subject,
                    )
                    .into());
                }
                (case_id, from)
            }
            _ => return Err(denied(principal, "transfer referrals", subject).into()),
        };
        let to_unit = to.to_string();
        if from == to_unit {
            return Err(invalid(
                "to_unit",
                format!("the referral is already at {to_unit}"),
            ));
        }
        let key = RequestKey::new(principal, request_id, |e| {
            matches!(e, CaseEvent::ReferralTransferred(r) if r.referral_id == referral_id
                && r.transfer_unit == to_unit
                && r.transfer_reason == transfer.reason)
        })?;
        let now = self.writer.clock.now();
        let actor = principal.actor();
        let written = self
            .writer
            .transition(principal, case_id, referral_id, key.as_ref(), |r| {
                let state = allowed(r, ReferralAction::Transfer)?;
                let programme = Programme::from_proto(r.programme).ok_or_else(|| {
                    Error::FailedPrecondition(format!(
                        "cannot transfer referral {referral_id}: its programme {} is unknown",
                        r.programme
                    ))
                })?;
                let new_id = ids::transferred_referral(referral_id, &to_unit).to_string();
                let old = pb::Referral {
                    state: state as i32,
                    transferred_to: new_id.clone(),
                    transfer_unit: to_unit.clone(),
                    transfer_reason: transfer.reason.clone(),
                    transferred_by: actor.clone(),
                    ..r.clone()
                };
                let new = pb::Referral {
                    referral_id: new_id,
                    department_unit: to_unit.clone(),
                    state: pb::ReferralState::Issued as i32,
                    due_at: rfc3339(self.catalogue.due_at(programme, now)),
                    issued_at: rfc3339(now),
                    decided_amount_fen: 0,
                    note: String::new(),
                    overdue: false,
                    escalated_at: String::new(),
                    transferred_to: String::new(),
                    transferred_from: referral_id.to_owned(),
                    transfer_unit: from.clone(),
                    transfer_reason: transfer.reason.clone(),
                    transferred_by: actor.clone(),
                    information_requested: String::new(),
                    information_requested_at: String::new(),
                    information_provided: String::new(),
                    information_provided_at: String::new(),
                    ..r.clone()
                };
                Ok(Some(vec![
                    CaseEvent::ReferralTransferred(old),
                    CaseEvent::ReferralIssued(new),
                ]))
            })
            .await?;
        match <[pb::Referral; 2]>::try_from(written) {
            Ok([old, new]) => {
                tracing::info!(%case_id, referral = referral_id, department = %from, to = %to_unit, "referral transferred");
                Ok((old, new))
            }
            Err(_) => Err(Error::FailedPrecondition(format!(
                "request id {:?} was used for a different request",
                request_id.unwrap_or_default()
            ))),
        }
    }

    /// Asks the household for information on an ISSUED or ACKNOWLEDGED referral (its
    /// department only): the referral is NEEDS_INFO and its deadline pauses until a
    /// terminal provides it ([`ReferralWriter::provide_information`]).
    pub async fn request_information(
        &self,
        principal: &Principal,
        referral_id: &str,
        what: &str,
        request_id: Option<&str>,
    ) -> Result<pb::Referral> {
        required_text("what", what)?;
        let (case_id, _) = self
            .own_referral(principal, referral_id, "request information")
            .await?;
        let key = RequestKey::new(principal, request_id, |e| {
            matches!(e, CaseEvent::ReferralInformationRequested(r) if r.referral_id == referral_id
                && r.information_requested == what)
        })?;
        let now = rfc3339(self.writer.clock.now());
        self.writer
            .transition(principal, case_id, referral_id, key.as_ref(), |r| {
                let state = allowed(r, ReferralAction::RequestInformation)?;
                Ok(Some(vec![CaseEvent::ReferralInformationRequested(
                    pb::Referral {
                        state: state as i32,
                        information_requested: what.to_owned(),
                        information_requested_at: now.clone(),
                        information_provided: String::new(),
                        information_provided_at: String::new(),
                        ..r.clone()
                    },
                )]))
            })
            .await
            .map(first)
    }
}

/// The first referral of a transition's answer (every transition answers at least one).
fn first(referrals: Vec<pb::Referral>) -> pb::Referral {
    referrals.into_iter().next().unwrap_or_default()
}

/// Writes referral transitions: the change applied to the referral as the case stands,
/// appended with the case's expected version and retried on a concurrent write, the case
/// closed in the same commit when that leaves it ready, and an optional idempotency key.
/// The one way a referral moves, whichever service asks.
#[derive(Debug, Clone)]
pub struct ReferralWriter {
    log: Arc<dyn EventLog>,
    clock: Arc<dyn Clock>,
}

impl ReferralWriter {
    /// A writer over `log`, reading the time from the system clock.
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        ReferralWriter {
            log,
            clock: Arc::new(SystemClock),
        }
    }

    /// Reads the time from `clock` instead.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Records that the household provided what the department asked for (terminals
    /// only): the NEEDS_INFO referral of `case_id` is ACKNOWLEDGED again and its `due_at`
    /// moves later by the time it was paused, so the department loses none of its period
    /// to the household's delay.
    pub async fn provide_information(
        &self,
        principal: &Principal,
        case_id: &str,
        referral_id: &str,
        note: &str,
        request_id: Option<&str>,
    ) -> Result<pb::Referral> {
        if !matches!(principal, Principal::Terminal { .. }) {
            return Err(denied(
                principal,
                "provide information",
                Subject::Referral(referral_id),
            )
            .into());
        }
        let case_id = Uuid::parse_str(case_id).map_err(|_| invalid("case_id", "not a uuid"))?;
        Uuid::parse_str(referral_id).map_err(|_| invalid("referral_id", "not a uuid"))?;
        required_text("note", note)?;
        let key = RequestKey::new(principal, request_id, |e| {
            matches!(e, CaseEvent::ReferralInformationProvided(r) if r.referral_id == referral_id
                && r.information_provided == note)
        })?;
        let now = self.clock.now();
        self.transition(principal, case_id, referral_id, key.as_ref(), |r| {
            let state = allowed(r, ReferralAction::ProvideInformation)?;
            let paused = chrono::DateTime::parse_from_rfc3339(&r.information_requested_at)
                .map(|asked| (now - asked.to_utc()).max(chrono::TimeDelta::zero()))
                .unwrap_or_default();
            let due_at = chrono::DateTime::parse_from_rfc3339(&r.due_at)
                .map(|due| rfc3339(due.to_utc() + paused))
                .unwrap_or_else(|_| r.due_at.clone());
            Ok(Some(vec![CaseEvent::ReferralInformationProvided(
                pb::Referral {
                    state: state as i32,
                    due_at,
                    information_provided: note.to_owned(),
                    information_provided_at: rfc3339(now),
                    ..r.clone()
                },
            )]))
        })
        .await
        .map(first)
    }

    /// Applies `change` to the referral's current state and appends the events it returns
    /// with the case's expected version, retrying on a concurrent write. `Ok(None)` from
    /// `change` means "nothing to do". Answers the referrals the events carry, in order
    /// (the current referral when nothing was written).
    async fn transition(
        &self,
        principal: &Principal,
        case_id: Uuid,
        referral_id: &str,
        key: Option<&RequestKey<'_>>,
        change: impl Fn(&pb::Referral) -> Result<Option<Vec<CaseEvent>>>,
    ) -> Result<Vec<pb::Referral>> {
        self.transition_in_case(principal, case_id, referral_id, key, |_, r| change(r))
            .await
    }

    /// [`ReferralWriter::transition`] for a change that reads the rest of the case too.
    async fn transition_in_case(
        &self,
        principal: &Principal,
        case_id: Uuid,
        referral_id: &str,
        key: Option<&RequestKey<'_>>,
        change: impl Fn(&CaseState, &pb::Referral) -> Result<Option<Vec<CaseEvent>>>,
    ) -> Result<Vec<pb::Referral>> {
        if let Some(answer) = self.answered_before(key).await? {
            return Ok(answer);
        }
        let outcome = append_case_commit(
            self.log.as_ref(),
            case_id,
            |state| -> Result<Step<Vec<pb::Referral>>> {
                let current = state
                    .referral(referral_id)
                    .ok_or_else(|| Error::NotFound(referral_id.to_owned()))?;
                let Some(mut events) = change(state, current)? else {
                    return Ok(Step::Done(vec![current.clone()]));
                };
                let updated: Vec<pb::Referral> = events
                    .iter()
                    .filter_map(|e| e.referral().cloned())
                    .collect();
                // A pending linkage step or a charity referral due closes it later, from
                // the linkage worker.
                events.extend(state.closed_by(&events));
                let actor = principal.actor();
                let commit = Commit {
                    version: state.version,
                    events: events
                        .iter()
                        .map(|e| {
                            let new = NewEvent::new(e.event_type(), actor.clone(), e.encode());
                            match key {
                                Some(key) => new.caused_by(key.request_id),
                                None => new,
                            }
                        })
                        .collect(),
                    commit_id: key.map_or_else(Uuid::now_v7, |k| k.commit_id),
                };
                Ok(Step::Append(commit, updated))
            },
        )
        .await?;
        if let (Outcome::Appended(_, appended), Some(key)) = (&outcome, key) {
            if appended.deduplicated {
                // A concurrent retry of the same keyed request wrote first.
                return key.original(self.log.as_ref(), appended).await;
            }
        }
        if let Outcome::Appended(updated, _) = &outcome {
            for r in updated {
                tracing::info!(%case_id, referral = %r.referral_id, state = r.state, department = %r.department_unit, "referral updated");
            }
        }
        Ok(outcome.into_answer())
    }

    /// The original answer when the keyed request's commit is already in the log.
    async fn answered_before(
        &self,
        key: Option<&RequestKey<'_>>,
    ) -> Result<Option<Vec<pb::Referral>>> {
        let Some(key) = key else { return Ok(None) };
        let probe = NewEvent::new(REFERRAL_PROBE_TYPE, key.actor.clone(), Vec::new());
        match recorded_commit(self.log.as_ref(), key.commit_id, probe).await? {
            Some(original) => Ok(Some(key.original(self.log.as_ref(), &original).await?)),
            None => Ok(None),
        }
    }
}

/// Event type of the probe that looks a commit id up; the probe is never written.
const REFERRAL_PROBE_TYPE: &str = "onecity.v1.ReferralDecided";

/// An idempotency key on a department's request: the commit id derived from the principal
/// and the request id ([`ids::request_commit`]), and how to recognise the request's own
/// first event in a commit found under it. The same key with other content (another
/// referral, action, decision, amount or note) is [`Error::FailedPrecondition`].
struct RequestKey<'a> {
    request_id: &'a str,
    actor: String,
    commit_id: Uuid,
    same_request: Box<dyn Fn(&CaseEvent) -> bool + Send + Sync + 'a>,
}

impl<'a> RequestKey<'a> {
    fn new(
        principal: &Principal,
        request_id: Option<&'a str>,
        same_request: impl Fn(&CaseEvent) -> bool + Send + Sync + 'a,
    ) -> Result<Option<Self>> {
        let Some(request_id) = request_id else {
            return Ok(None);
        };
        check_request_id("request_id", request_id)?;
        let actor = principal.actor();
        Ok(Some(RequestKey {
            request_id,
            commit_id: ids::request_commit(&actor, request_id),
            actor,
            same_request: Box::new(same_request),
        }))
    }

    /// The referrals as the commit found under this key left them, if the commit is this
    /// request.
    async fn original(&self, log: &dyn EventLog, appended: &Appended) -> Result<Vec<pb::Referral>> {
        let events = commit_events(log, appended).await?;
        let mut decoded = Vec::with_capacity(events.len());
        for e in &events {
            decoded.extend(CaseEvent::decode(&e.event_type, &e.payload)?);
        }
        match decoded.first() {
            Some(event) if (self.same_request)(event) => Ok(decoded
                .iter()
                .filter_map(|e| e.referral().cloned())
                .collect()),
            _ => Err(Error::FailedPrecondition(format!(
                "request id {:?} was used for a different request",
                self.request_id
            ))),
        }
    }
}

/// The state `action` moves `r` to, by the one state machine; anything it refuses is a
/// failed precondition naming the current state.
fn allowed(r: &pb::Referral, action: ReferralAction) -> Result<pb::ReferralState> {
    referral::next_state(r, action)
        .map(pb::ReferralState::from)
        .map_err(|e| Error::FailedPrecondition(e.to_string()))
}
