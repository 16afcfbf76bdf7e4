//! The back-office API core: departments list and stream their referrals, acknowledge and
//! decide them.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use onecity_domain::case::{is_final, CaseStatus, EventMeta};
use onecity_domain::events::{CaseEvent, REFERRAL_PREFIX};
use onecity_domain::Principal;
use onecity_eventlog::{EventLog, Filter, NewEvent};
use onecity_proto::v1 as pb;
use onecity_service::case::{
    append_case_commit, decode_or_skip, denied, Commit, Outcome, Step, Subject,
};
use uuid::Uuid;

use crate::{invalid, Error, Inbox, Result, MAX_NOTE_CHARS, MAX_PAGE_SIZE};

/// The back-office API core.
#[derive(Debug, Clone)]
pub struct Handoff {
    log: Arc<dyn EventLog>,
    inbox: Arc<Inbox>,
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
            _ => Err(denied(principal, action, Subject::Nothing).into()),
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
                Ok(e) => decode_or_skip(&e)
                    .flatten()
                    .as_ref()
                    .and_then(CaseEvent::referral)
                    .filter(|r| unit.as_ref().is_none_or(|u| &r.department_unit == u))
                    .map(|r| Ok((r.clone(), e.position.to_string()))),
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
            return Err(denied(principal, action, Subject::Referral(referral_id)).into());
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
                Subject::Referral(referral_id),
            )
            .into());
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
        let outcome = append_case_commit(
            self.log.as_ref(),
            case_id,
            |state| -> Result<Step<pb::Referral>> {
                let current = state
                    .referral(referral_id)
                    .ok_or_else(|| Error::NotFound(referral_id.to_owned()))?;
                let Some(event) = change(current)? else {
                    return Ok(Step::Done(current.clone()));
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
                let commit = Commit {
                    version: state.version,
                    events: events
                        .iter()
                        .map(|e| NewEvent::new(e.event_type(), actor.clone(), e.encode()))
                        .collect(),
                    commit_id: Uuid::now_v7(),
                };
                Ok(Step::Append(commit, updated))
            },
        )
        .await?;
        if let Outcome::Appended(updated, _) = &outcome {
            tracing::info!(%case_id, referral = referral_id, state = updated.state, department = %updated.department_unit, "referral updated");
        }
        Ok(outcome.into_answer())
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
