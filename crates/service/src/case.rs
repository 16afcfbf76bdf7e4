//! A case stream as the services use it: fold it from the log, append a commit to it with
//! the expected version (retrying when someone else wrote first), refuse a principal.

use std::future::Future;

use onecity_domain::case::{CaseState, EventMeta};
use onecity_domain::events::CaseEvent;
use onecity_domain::Principal;
use onecity_eventlog::{Appended, EventLog, Expected, NewEvent, RecordedEvent};
use onecity_proto::v1 as pb;
use uuid::Uuid;

use crate::{Error, Result};

/// How many times a case commit meets a concurrent write before the call gives up with
/// [`Error::ConflictRetriesExhausted`].
pub const MAX_CONFLICT_RETRIES: usize = 16;

/// A stored event's metadata, as the case projection keeps it.
pub fn meta(e: &RecordedEvent) -> EventMeta {
    EventMeta {
        version: e.version,
        position: e.position,
        event_type: e.event_type.clone(),
        actor: e.actor.clone(),
        recorded_at: e.recorded_at_rfc3339(),
    }
}

/// A stored event decoded for a stream a department or terminal follows (`WatchCase`,
/// `StreamReferrals`): `None` when it does not decode, logged with its position and
/// skipped, so one bad event cannot break every stream that passes it (the workers
/// quarantine it). `Some(None)` is an event type this version does not know.
pub fn decode_or_skip(e: &RecordedEvent) -> Option<Option<CaseEvent>> {
    match CaseEvent::decode(&e.event_type, &e.payload) {
        Ok(event) => Some(event),
        Err(err) => {
            tracing::warn!(
                position = e.position,
                event_type = %e.event_type,
                error = %err,
                "undecodable event skipped in a stream"
            );
            None
        }
    }
}

/// Reads and folds a whole case stream ([`Error::CaseNotFound`] when it has no events).
pub async fn load_case(log: &dyn EventLog, case_id: Uuid) -> Result<CaseState> {
    let events = match log.read_case_all(case_id).await {
        Err(onecity_eventlog::Error::NotFound(_)) => return Err(Error::CaseNotFound(case_id)),
        other => other?,
    };
    Ok(CaseState::from_stored(
        events.iter().map(|e| (meta(e), e.payload.as_slice())),
    )?)
}

/// A signal stream as it stands: its version, its report and its warning (the latest
/// warning event's), if it raised one. `None` when the stream has no events.
pub async fn load_signal(
    log: &dyn EventLog,
    signal_id: Uuid,
) -> Result<Option<(u64, pb::SignalReported, Option<pb::Warning>)>> {
    let events = match log.read_case_all(signal_id).await {
        Err(onecity_eventlog::Error::NotFound(_)) => return Ok(None),
        other => other?,
    };
    let Some(last) = events.last() else {
        return Ok(None);
    };
    let mut report = None;
    let mut warning = None;
    for e in &events {
        if e.event_type == onecity_domain::events::SIGNAL_REPORTED {
            report = Some(
                <pb::SignalReported as onecity_proto::prost::Message>::decode(e.payload.as_slice())
                    .map_err(|err| onecity_domain::events::DecodeError {
                        event_type: e.event_type.clone(),
                        reason: err.to_string(),
                    })?,
            );
        } else if let Some(w) = onecity_domain::events::decode_warning(&e.event_type, &e.payload)? {
            warning = Some(w);
        }
    }
    Ok(report.map(|r| (last.version, r, warning)))
}

/// What a refused action was about, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// Nothing in particular (e.g. a listing).
    Nothing,
    /// A case.
    Case(Uuid),
    /// A referral, by the id the caller gave.
    Referral(&'a str),
}

/// Refuses `action` to `principal`: logs the refusal and returns the error callers read,
/// `<kind> principals may not <action>`.
pub fn denied(principal: &Principal, action: &str, subject: Subject<'_>) -> Error {
    let kind = principal.kind();
    match subject {
        Subject::Nothing => {
            tracing::warn!(principal = %principal, kind, action, "permission denied");
        }
        Subject::Case(case_id) => {
            tracing::warn!(principal = %principal, kind, action, %case_id, "permission denied");
        }
        Subject::Referral(referral) => {
            tracing::warn!(principal = %principal, kind, action, referral, "permission denied");
        }
    }
    Error::PermissionDenied(format!("{kind} principals may not {action}"))
}

/// One commit to append to a case stream.
#[derive(Debug)]
pub struct Commit {
    /// The case version the commit was decided on: the append expects exactly it.
    pub version: u64,
    /// The events, in order.
    pub events: Vec<NewEvent>,
    /// The commit id (deterministic for a step that must happen once, see
    /// `onecity_domain::ids`).
    pub commit_id: Uuid,
}

/// What one attempt at a case commit decided, from the case as it read it.
#[derive(Debug)]
pub enum Step<D, A = D> {
    /// Nothing to write: the answer as the case stands.
    Done(D),
    /// Append the commit; `A` is the answer once it is in the log.
    Append(Commit, A),
}

/// What came of a case commit.
#[derive(Debug)]
pub enum Outcome<D, A = D> {
    /// An attempt decided there was nothing to write.
    Unchanged(D),
    /// The commit is in the log: written now, or already there under its commit id
    /// ([`Appended::deduplicated`]).
    Appended(A, Appended),
}

impl<T> Outcome<T> {
    /// The answer, whether or not anything was written.
    pub fn into_answer(self) -> T {
        match self {
            Outcome::Unchanged(t) | Outcome::Appended(t, _) => t,
        }
    }
}

/// Appends a case commit with the case's expected version, deciding again when someone
/// else wrote to the case first.
///
/// `attempt(n)` (n = 0, 1, …) reads what it needs of the case and decides; its commit is
/// appended expecting exactly the version it read. On a version conflict the next attempt
/// decides again from the case as it now is, up to [`MAX_CONFLICT_RETRIES`] attempts, then
/// [`Error::ConflictRetriesExhausted`]. Any other error ends the call.
pub async fn append_with_retries<D, A, E, F, Fut>(
    log: &dyn EventLog,
    case_id: Uuid,
    mut attempt: F,
) -> Result<Outcome<D, A>, E>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<Step<D, A>, E>>,
    E: From<Error>,
{
    for n in 0..MAX_CONFLICT_RETRIES {
        let (commit, answer) = match attempt(n).await? {
            Step::Done(d) => return Ok(Outcome::Unchanged(d)),
            Step::Append(commit, answer) => (commit, answer),
        };
        let Commit {
            version,
            events,
            commit_id,
        } = commit;
        match log
            .append(case_id, Expected::Exact(version), events, commit_id)
            .await
        {
            Ok(appended) => return Ok(Outcome::Appended(answer, appended)),
            Err(onecity_eventlog::Error::Conflict { .. }) => continue,
            Err(e) => return Err(Error::Log(e).into()),
        }
    }
    Err(Error::ConflictRetriesExhausted { case_id }.into())
}

/// [`append_with_retries`] where each attempt folds the whole case ([`load_case`]) and
/// `decide`s from its state.
pub async fn append_case_commit<D, A, E, F>(
    log: &dyn EventLog,
    case_id: Uuid,
    decide: F,
) -> Result<Outcome<D, A>, E>
where
    F: Fn(&CaseState) -> Result<Step<D, A>, E>,
    E: From<Error>,
{
    let decide = &decide;
    append_with_retries(log, case_id, |_| async move {
        let state = load_case(log, case_id).await?;
        decide(&state)
    })
    .await
}

/// The commit already in the log under `commit_id`, if any; writes nothing either way.
///
/// The log contract has no lookup by commit id, only the commit-id check every append makes
/// before its version check. So this asks with an append that the version check always
/// refuses: `probe` on a fresh case id expecting version 1, which a stream without events
/// never is. A known commit id is answered by the commit-id check with the original commit
/// (deduplicated); an unknown one ends in the conflict, and nothing is written.
pub async fn recorded_commit(
    log: &dyn EventLog,
    commit_id: Uuid,
    probe: NewEvent,
) -> Result<Option<Appended>> {
    match log
        .append(Uuid::now_v7(), Expected::Exact(1), vec![probe], commit_id)
        .await
    {
        Ok(original) => Ok(Some(original)),
        Err(onecity_eventlog::Error::Conflict { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The events a commit wrote, as the log answered for it (written now or earlier).
pub async fn commit_events(log: &dyn EventLog, appended: &Appended) -> Result<Vec<RecordedEvent>> {
    let n = appended.last_version + 1 - appended.first_version;
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    Ok(log
        .read_case(appended.case_id, appended.first_version, n)
        .await?)
}
