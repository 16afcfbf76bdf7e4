//! Person claims: at most one OPEN case per person, across every intake process
//! (docs/eventlog.md, "Person claims").
//!
//! The log is atomic per stream only, so a submission first claims each member on the
//! member's person stream (`ids::person_stream` of the keyed hash), all members at once,
//! each claim appended with the person stream's expected version after every earlier
//! claim there was judged not to block; then it opens the case with the case id its
//! claims name, expecting no stream. A claim whose case never opened is voided by a
//! `SubmissionAbandoned` written to that case id expecting no stream, so exactly one of
//! "the case opens" and "the claim is void" happens, whoever writes first.
//!
//! Claiming every member at once costs one round of appends instead of one per member,
//! but two submissions may then each hold a member the other needs. They never wait on
//! each other in a cycle ("wait-die"): a submission that meets the pending claim of an
//! older one (smaller case id: case ids are UUID v7, so older first) gives up at once,
//! voiding its own case id, and waits only for the older one's outcome; only an older
//! submission waits for a younger one to open or give up.

use std::time::{Duration, SystemTime};

use futures::StreamExt;
use onecity_domain::case::CaseStatus;
use onecity_domain::events::{PERSON_CLAIMED, SUBMISSION_ABANDONED};
use onecity_domain::ids;
use onecity_eventlog::{EventLog, Expected, NewEvent, RecordedEvent};
use onecity_proto::prost::Message;
use onecity_proto::v1 as pb;
use onecity_service::case::{load_case, MAX_CONFLICT_RETRIES};
use uuid::Uuid;

use crate::person::{PersonHash, PersonIndex};

/// How long a submission waits for the case of another submission's claim to open
/// before it answers that one is in progress.
pub const DEFAULT_CLAIM_WAIT: Duration = Duration::from_secs(5);
/// Age after which a claim whose case has not opened is voided by the next submission
/// naming the person: far beyond the time a live submission takes from its first
/// claim to its case (a few appends), so only a submission that died is voided.
pub const DEFAULT_CLAIM_STALE: Duration = Duration::from_secs(30);

/// Why a submission stops claiming.
#[derive(Debug)]
pub(crate) enum Stop {
    /// A member belongs to this open case.
    Exists(Uuid),
    /// This very submission (a retry, or a concurrent twin) already opened this case.
    Landed(Uuid),
    /// Another submission naming a member is between its claim and its case.
    InProgress,
    /// An older submission, its case not open yet, holds a member: this one gives up its
    /// claims and waits for that case's outcome.
    Younger(Uuid),
    /// The shared plumbing or the log failed.
    Service(onecity_service::Error),
}

impl From<onecity_eventlog::Error> for Stop {
    fn from(e: onecity_eventlog::Error) -> Self {
        Stop::Service(e.into())
    }
}

impl From<onecity_service::Error> for Stop {
    fn from(e: onecity_service::Error) -> Self {
        Stop::Service(e)
    }
}

/// Where the case a claim names stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    /// Not opened yet: in progress, or its submission died.
    Pending,
    /// Will never open.
    Void,
    /// Opened; now in this status.
    Opened(CaseStatus),
    /// Not opened yet, and older than the submission that asks: it does not wait.
    Older,
}

/// The claims of one submission.
pub(crate) struct Claims<'a> {
    pub log: &'a dyn EventLog,
    pub index: &'a PersonIndex,
    pub actor: &'a str,
    pub wait: Duration,
    pub stale: Duration,
}

/// Each distinct member once, as (hash, person stream).
pub(crate) fn persons(hashes: impl IntoIterator<Item = PersonHash>) -> Vec<(PersonHash, Uuid)> {
    let mut persons: Vec<(PersonHash, Uuid)> = hashes
        .into_iter()
        .map(|h| (h, ids::person_stream(&h)))
        .collect();
    persons.sort_by_key(|(_, stream)| *stream);
    persons.dedup_by_key(|(_, stream)| *stream);
    persons
}

impl Claims<'_> {
    /// Claims `person` for `case_id` on behalf of `submission` (its commit id). With
    /// `overriding`, open cases naming the person do not stop it.
    pub async fn claim(
        &self,
        (person, stream): (PersonHash, Uuid),
        case_id: Uuid,
        submission: Uuid,
        overriding: bool,
    ) -> Result<(), Stop> {
        let submission_str = submission.to_string();
        let case_str = case_id.to_string();
        for _ in 0..MAX_CONFLICT_RETRIES {
            let events = match self.log.read_case_all(stream).await {
                Err(onecity_eventlog::Error::NotFound(_)) => Vec::new(),
                other => other?,
            };
            let version = events.last().map_or(0, |e| e.version);
            let mut claimed = Vec::with_capacity(events.len());
            for e in &events {
                let Some(claim) = decode_claim(e) else {
                    continue;
                };
                if claim.case_id == case_str {
                    // Our own claim, written by an earlier round of this loop.
                    return Ok(());
                }
                let Ok(holder_id) = Uuid::parse_str(&claim.case_id) else {
                    continue;
                };
                claimed.push(holder_id);
                let own = claim.submission == submission_str;
                // Wait-die (module docs): only an older submission waits.
                let waits = own || holder_id > case_id;
                match self.settle(holder_id, e.recorded_at, own, waits).await? {
                    Holder::Older => return Err(Stop::Younger(holder_id)),
                    Holder::Void | Holder::Opened(CaseStatus::Closed | CaseStatus::Withdrawn) => {}
                    Holder::Opened(CaseStatus::Open) if own => return Err(Stop::Landed(holder_id)),
                    Holder::Opened(CaseStatus::Open) if overriding => {}
                    Holder::Opened(CaseStatus::Open) => return Err(Stop::Exists(holder_id)),
                    Holder::Pending => return Err(Stop::InProgress),
                }
            }
            // Cases opened before claims existed are known to the index only.
            if !overriding {
                for c in self.index.cases_of(&person) {
                    if c.case.status != CaseStatus::Open || claimed.contains(&c.case.case_id) {
                        continue;
                    }
                    if load_case(self.log, c.case.case_id).await?.status == CaseStatus::Open {
                        return Err(Stop::Exists(c.case.case_id));
                    }
                }
            }
            let event = pb::PersonClaimed {
                case_id: case_str.clone(),
                submission: submission_str.clone(),
                r#override: overriding,
            };
            let new = NewEvent::new(PERSON_CLAIMED, self.actor, event.encode_to_vec())
                .caused_by(submission_str.clone());
            match self
                .log
                .append(
                    stream,
                    Expected::Exact(version),
                    vec![new],
                    ids::claim_commit(case_id, stream),
                )
                .await
            {
                Ok(_) => return Ok(()),
                // Another claim came first: judge it too.
                Err(onecity_eventlog::Error::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Stop::Service(
            onecity_service::Error::ConflictRetriesExhausted { case_id: stream },
        ))
    }

    /// Where the case of a claim recorded at `claimed_at` stands, once settled: a pending
    /// one is voided when stale (at once when it is `own`: an earlier attempt of the same
    /// submission, which a retry replaces), else waited for when the asker `waits`
    /// ([`Holder::Older`] when it does not). Still pending and not stale after the wait:
    /// [`Holder::Pending`].
    async fn settle(
        &self,
        case_id: Uuid,
        claimed_at: SystemTime,
        own: bool,
        waits: bool,
    ) -> Result<Holder, Stop> {
        let holder = self.holder(case_id).await?;
        if holder != Holder::Pending {
            return Ok(holder);
        }
        let stale = claimed_at.elapsed().unwrap_or_default() >= self.stale;
        if !own && !waits && !stale {
            return Ok(Holder::Older);
        }
        if !own {
            let holder = self.wait_pending(case_id).await?;
            let age = claimed_at.elapsed().unwrap_or_default();
            if holder != Holder::Pending || age < self.stale {
                return Ok(holder);
            }
            tracing::warn!(%case_id, age_secs = age.as_secs(), "stale person claim voided");
        }
        self.void(case_id, "its claim went stale").await
    }

    async fn holder(&self, case_id: Uuid) -> Result<Holder, Stop> {
        // Closed and withdrawn are final: the index's word is enough for them.
        if let Some(s @ (CaseStatus::Closed | CaseStatus::Withdrawn)) = self.index.status(case_id) {
            return Ok(Holder::Opened(s));
        }
        let first = match self.log.read_case(case_id, 1, 1).await {
            Err(onecity_eventlog::Error::NotFound(_)) => return Ok(Holder::Pending),
            other => other?,
        };
        match first.first() {
            None => Ok(Holder::Pending),
            Some(e) if e.event_type == SUBMISSION_ABANDONED => Ok(Holder::Void),
            Some(_) => Ok(Holder::Opened(load_case(self.log, case_id).await?.status)),
        }
    }

    /// The outcome of the older submission `case_id` that a younger one gave way to: waits
    /// for it to open or give up, like any pending claim.
    pub async fn outcome(&self, case_id: Uuid) -> Result<Holder, Stop> {
        match self.holder(case_id).await? {
            Holder::Pending => self.wait_pending(case_id).await,
            holder => Ok(holder),
        }
    }

    /// Waits up to the claim wait for the pending `case_id` to open or be voided, and says
    /// where it then stands.
    async fn wait_pending(&self, case_id: Uuid) -> Result<Holder, Stop> {
        // The case's own stream, from its first event: wakes as soon as it opens (or is
        // voided).
        let mut first = self.log.subscribe_case(case_id, 1).await?;
        let _ = tokio::time::timeout(self.wait, first.next()).await;
        self.holder(case_id).await
    }

    /// Voids `case_id` unless it opened first; where it then stands.
    pub async fn void(&self, case_id: Uuid, reason: &str) -> Result<Holder, Stop> {
        let event = pb::SubmissionAbandoned {
            reason: reason.to_owned(),
        };
        let new = NewEvent::new(SUBMISSION_ABANDONED, self.actor, event.encode_to_vec());
        match self
            .log
            .append(
                case_id,
                Expected::NoStream,
                vec![new],
                ids::abandon_commit(case_id),
            )
            .await
        {
            Ok(_) => Ok(Holder::Void),
            Err(onecity_eventlog::Error::Conflict { .. }) => self.holder(case_id).await,
            Err(e) => Err(e.into()),
        }
    }
}

fn decode_claim(e: &RecordedEvent) -> Option<pb::PersonClaimed> {
    if e.event_type != PERSON_CLAIMED {
        return None;
    }
    match pb::PersonClaimed::decode(e.payload.as_slice()) {
        Ok(c) => Some(c),
        Err(err) => {
            tracing::error!(error = %err, position = e.position, "undecodable person claim skipped");
            None
        }
    }
}

#[cfg(test)]
mod tests;
