//! Intake: the street office's side of onecity. A terminal submits a household once;
//! intake validates it, opens a case (UUID v7) with one durable `ApplicationSubmitted`
//! event and answers with the case id. Case views (`GetCase`, `WatchCase`) are folds of
//! the case stream, so they are always exactly what the log says.
//!
//! A change of the household's circumstances is recorded on the case
//! (`AmendApplication`, [`Intake::amend`]); the assessment worker re-assesses it.
//!
//! The core here never mentions tonic; [`grpc`] is the transport edge.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use onecity_domain::case::{CaseState, CaseStatus};
use onecity_domain::events::CaseEvent;
use onecity_domain::text::{check_request_id, check_text, TextKind};
use onecity_domain::{ids, validate_application, Principal};
use onecity_eligibility::{Catalogue, PolicyBook};
use onecity_eventlog::{Appended, EventLog, Expected, NewEvent};
use onecity_proto::v1 as pb;
use onecity_service::access::{Access, Reader};
use onecity_service::case::{
    append_case_commit, commit_events, decode_or_skip, denied, load_case, meta, recorded_commit,
    Commit, Outcome, Step, Subject,
};
use onecity_service::{ErrorClass, Kind};
use tracing::Instrument as _;
use uuid::Uuid;

mod backpressure;
mod claim;
pub mod grpc;
mod person;
mod view;

pub use backpressure::{
    Backpressure, ConsumerLag, Gauge, Watched, DEFAULT_MAX_ROUTING_LAG, LAG_REFRESH,
};
pub use claim::{DEFAULT_CLAIM_STALE, DEFAULT_CLAIM_WAIT};
pub use person::{IndexedCase, PersonCase, PersonHash, PersonIndex, PersonKey, MIN_KEY_BYTES};
pub use view::view;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an intake operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input; nothing was written.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Request field path, e.g. `application.members[2].id_number`.
        field: String,
        /// Why.
        reason: String,
    },
    /// The case is not in a state that allows this.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The shared case plumbing failed: no such case, permission denied, the case kept
    /// changing under every retry, or the log failed there.
    #[error(transparent)]
    Service(#[from] onecity_service::Error),
    /// The log failed.
    #[error(transparent)]
    Log(#[from] onecity_eventlog::Error),
    /// A stored event does not decode.
    #[error(transparent)]
    Corrupt(#[from] onecity_domain::events::DecodeError),
    /// A stored assessment does not read back (an unknown rule code, say): its words
    /// cannot be rendered.
    #[error("stored assessment unreadable: {0}")]
    Assessment(#[from] onecity_eligibility::Error),
    /// A referral transition (`ProvideInformation`) was refused or failed.
    #[error(transparent)]
    Referral(#[from] onecity_handoff::Error),
    /// A member of the household already belongs to an open case; no case was opened.
    #[error(
        "a member of this household already belongs to open case {case_id}; \
         set duplicate_override_reason to open another case anyway"
    )]
    AlreadyExists {
        /// The open case.
        case_id: Uuid,
    },
    /// Another submission naming a member of the household is under way; no case was
    /// opened.
    #[error(
        "another submission naming a member of this household is in progress; \
         retry the same request id in a few seconds"
    )]
    InProgress,
    /// The person index is not configured in this process.
    #[error("the person index is not available in this process")]
    NoIndex,
    /// The workers are too far behind to take new cases; nothing was written.
    #[error(
        "routing is behind: {consumer} has {lag} events waiting, over the bound of {max_lag}; \
         nothing was written: retry the same request id in a few seconds"
    )]
    Overloaded {
        /// The worker checkpoint (role and partition) furthest behind, e.g. `handoff-2of2`.
        consumer: String,
        /// Its routing lag, in log events.
        lag: u64,
        /// The configured bound.
        max_lag: u64,
    },
}

impl ErrorClass for Error {
    fn into_kind(self) -> Kind {
        match self {
            Error::Invalid { field, reason } => Kind::Invalid { field, reason },
            Error::FailedPrecondition(_) => Kind::FailedPrecondition,
            Error::Service(e) => e.into_kind(),
            Error::Log(e) => Kind::Log(e),
            Error::Corrupt(_) | Error::Assessment(_) => Kind::Internal,
            Error::Referral(e) => e.into_kind(),
            Error::Overloaded { .. } => Kind::ResourceExhausted,
            Error::AlreadyExists { case_id } => Kind::AlreadyExists {
                reason: "MEMBER_IN_OPEN_CASE",
                metadata: vec![("case_id".to_owned(), case_id.to_string())],
            },
            Error::InProgress | Error::NoIndex => Kind::Unavailable,
        }
    }
}

impl Error {
    fn invalid(field: &str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}

impl From<onecity_domain::Invalid> for Error {
    fn from(e: onecity_domain::Invalid) -> Self {
        Error::Invalid {
            field: e.field,
            reason: e.reason,
        }
    }
}

/// Longest terminal request id.
pub use onecity_domain::text::MAX_REQUEST_ID_CHARS;
/// Longest withdrawal reason.
pub const MAX_REASON_CHARS: usize = 2_000;
/// Longest duplicate override reason.
pub const MAX_OVERRIDE_REASON_CHARS: usize = 2_000;
/// How many times a submission starts over after another voided its case id (it took
/// too long between its claims and its case) before it gives up.
const MAX_SUBMIT_ATTEMPTS: usize = 4;

/// The answer to a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The case.
    pub case_id: Uuid,
    /// True when the terminal had already submitted this request id.
    pub duplicate: bool,
    /// When the case was opened (RFC 3339, UTC).
    pub submitted_at: String,
}

/// The answer to an amendment.
#[derive(Debug, Clone, PartialEq)]
pub struct Amended {
    /// The case after the amendment was recorded.
    pub case: pb::Case,
    /// True when the terminal had already recorded this request id for this amendment.
    pub duplicate: bool,
}

/// The intake service core.
#[derive(Debug, Clone)]
pub struct Intake {
    log: Arc<dyn EventLog>,
    clock: Arc<dyn onecity_service::clock::Clock>,
    policies: Arc<PolicyBook>,
    catalogue: Arc<Catalogue>,
    backpressure: Option<Arc<backpressure::Gauge>>,
    access: Access,
    referrals: onecity_handoff::ReferralWriter,
    persons: Option<Persons>,
}

/// The person index and the claim timing (see `claim.rs`).
#[derive(Debug, Clone)]
struct Persons {
    index: Arc<PersonIndex>,
    wait: std::time::Duration,
    stale: std::time::Duration,
    /// Whether submissions claim their members (see [`Intake::without_duplicate_check`]).
    check: bool,
}

/// The methods whose reads are recorded, as access records name them.
const GET_CASE: &str = "onecity.v1.IntakeService/GetCase";
const WATCH_CASE: &str = "onecity.v1.IntakeService/WatchCase";
const FIND_CASES: &str = "onecity.v1.IntakeService/FindCases";

/// A stream without a submission is a case id voided before it opened (see `claim.rs`):
/// no case.
fn not_void(case_id: Uuid, state: &CaseState) -> Result<()> {
    match state.submitted {
        Some(_) => Ok(()),
        None => Err(onecity_service::Error::CaseNotFound(case_id).into()),
    }
}

fn parse_case_id(s: &str) -> Result<Uuid> {
    let id = Uuid::parse_str(s).map_err(|_| Error::invalid("case_id", "not a uuid"))?;
    if id.is_nil() {
        return Err(Error::invalid("case_id", "must not be the nil uuid"));
    }
    Ok(id)
}

fn now_rfc3339() -> String {
    onecity_domain::rfc3339(chrono::Utc::now())
}

impl Intake {
    /// Intake over `log`, checking that a policy is in force on each application date.
    pub fn new(log: Arc<dyn EventLog>, policies: Arc<PolicyBook>) -> Self {
        Intake {
            access: Access::new(Arc::clone(&log)),
            referrals: onecity_handoff::ReferralWriter::new(Arc::clone(&log)),
            clock: Arc::new(onecity_service::clock::SystemClock),
            log,
            policies,
            catalogue: Arc::new(Catalogue::embedded()),
            backpressure: None,
            persons: None,
        }
    }

    /// Reads the time of `ProvideInformation` and of amendments from `clock` (by default
    /// the system clock).
    pub fn with_clock(mut self, clock: Arc<dyn onecity_service::clock::Clock>) -> Self {
        self.referrals = self.referrals.with_clock(Arc::clone(&clock));
        self.clock = clock;
        self
    }

    /// Records that the household provided what a department asked for on a NEEDS_INFO
    /// referral of `case_id` (terminals only): ACKNOWLEDGED again, its deadline moved
    /// later by the time it was paused. See [`onecity_handoff::ReferralWriter`].
    pub async fn provide_information(
        &self,
        principal: &Principal,
        case_id: &str,
        referral_id: &str,
        note: &str,
        request_id: Option<&str>,
    ) -> Result<pb::Referral> {
        Ok(self
            .referrals
            .provide_information(principal, case_id, referral_id, note, request_id)
            .await?)
    }

    /// Keeps at most one open case per person (see [`Intake::submit`]) and answers
    /// [`Intake::find_cases`] from `index`. Without it neither is done.
    pub fn with_person_index(mut self, index: Arc<PersonIndex>) -> Self {
        self.persons = Some(Persons {
            index,
            wait: DEFAULT_CLAIM_WAIT,
            stale: DEFAULT_CLAIM_STALE,
            check: true,
        });
        self
    }

    /// Submissions open their case without claiming their members: no duplicate check,
    /// while `FindCases` still answers. Only to measure what the check costs.
    pub fn without_duplicate_check(mut self) -> Self {
        if let Some(p) = &mut self.persons {
            p.check = false;
        }
        self
    }

    /// How long a submission waits for another submission's claimed case to open
    /// (`wait`), and the age at which such a claim counts as abandoned (`stale`); the
    /// defaults are [`DEFAULT_CLAIM_WAIT`] and [`DEFAULT_CLAIM_STALE`]. Needs
    /// [`Intake::with_person_index`] first.
    pub fn with_claim_timing(
        mut self,
        wait: std::time::Duration,
        stale: std::time::Duration,
    ) -> Self {
        if let Some(p) = &mut self.persons {
            p.wait = wait;
            p.stale = stale;
        }
        self
    }

    /// Records reads through `access` (by default every read is recorded in the log).
    pub fn with_access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// Shows departments the facts `catalogue` lists for their programmes (see
    /// [`view()`]); without it, the embedded catalogue's.
    pub fn with_catalogue(mut self, catalogue: Arc<Catalogue>) -> Self {
        self.catalogue = catalogue;
        self
    }

    /// Refuses new cases ([`Error::Overloaded`]) while the routing lag of the watched
    /// workers is over the bound. Without it intake accepts whatever the log takes.
    pub fn with_backpressure(mut self, config: Backpressure) -> Self {
        self.backpressure = Some(Arc::new(backpressure::Gauge::new(config)));
        self
    }

    /// The case as `principal` may see it today, under this intake's catalogue.
    fn view(&self, principal: &Principal, case_id: Uuid, state: &CaseState) -> Result<pb::Case> {
        not_void(case_id, state)?;
        view(
            principal,
            case_id,
            state,
            &self.catalogue,
            onecity_domain::today(),
        )
    }

    /// Validates and records an application. Only terminals submit. The same request id
    /// from the same terminal always yields the same case, across restarts: the commit
    /// id is derived from (terminal, request id) and the log never forgets a commit id.
    pub async fn submit(
        &self,
        principal: &Principal,
        request_id: &str,
        application: Option<pb::Application>,
    ) -> Result<Submitted> {
        self.submit_with_override(principal, request_id, application, "")
            .await
    }

    /// [`Intake::submit`] with the duplicate check of the person index: when a member
    /// already belongs to an OPEN case the answer is [`Error::AlreadyExists`] naming it,
    /// unless `override_reason` (empty: none) says why another case is opened anyway; it
    /// is recorded on the case. Of concurrent submissions naming one person, across
    /// processes, at most one opens a case (see `claim.rs`); a retry of an accepted
    /// request gets its case back first.
    pub async fn submit_with_override(
        &self,
        principal: &Principal,
        request_id: &str,
        application: Option<pb::Application>,
        override_reason: &str,
    ) -> Result<Submitted> {
        let Principal::Terminal {
            id: terminal_id,
            street_office,
            ..
        } = principal
        else {
            return Err(denied(principal, "submit an application", Subject::Nothing).into());
        };
        check_request_id("request_id", request_id)?;
        let application =
            application.ok_or_else(|| Error::invalid("application", "is required"))?;
        let app = validate_application(application, onecity_domain::today())?;
        if self.policies.in_force(app.application_date).is_none() {
            return Err(Error::invalid(
                "application.application_date",
                "no policy version is in force on that date",
            ));
        }
        if !override_reason.is_empty() {
            check_text(
                "duplicate_override_reason",
                override_reason,
                MAX_OVERRIDE_REASON_CHARS,
                TextKind::Paragraph,
            )?;
        }
        let submitted_at = now_rfc3339();
        // The application as it is stored: a retry is compared with it in this form, so an
        // equal application encoded differently is still the same request.
        let canonical = pb::Application::from(&app);
        let event = CaseEvent::ApplicationSubmitted(pb::ApplicationSubmitted {
            application: Some(canonical.clone()),
            terminal_id: terminal_id.clone(),
            street_office: street_office.clone(),
            request_id: request_id.to_owned(),
            submitted_at: submitted_at.clone(),
            duplicate_override_reason: override_reason.to_owned(),
        });
        let commit_id = ids::submit_commit(terminal_id, request_id);
        let new = NewEvent::new(event.event_type(), principal.actor(), event.encode())
            .caused_by(request_id);
        if let Some(gauge) = &self.backpressure {
            if let Some(behind) = gauge.over(self.log.as_ref()).await? {
                // Over the bound nothing new is written, but a terminal retrying a request
                // that was accepted still gets its case back.
                return match recorded_commit(self.log.as_ref(), commit_id, new).await? {
                    Some(original) => {
                        self.duplicate(terminal_id, request_id, original.case_id, &canonical)
                            .await
                    }
                    None => {
                        let max_lag = gauge.max_lag();
                        tracing::debug!(
                            terminal = %terminal_id,
                            consumer = %behind.consumer,
                            lag = behind.lag,
                            max_lag,
                            "submission refused: routing is behind"
                        );
                        Err(Error::Overloaded {
                            consumer: behind.consumer,
                            lag: behind.lag,
                            max_lag,
                        })
                    }
                };
            }
        }
        let Some(persons) = self.persons.as_ref().filter(|p| p.check) else {
            let appended = self
                .log
                .append(Uuid::now_v7(), Expected::NoStream, vec![new], commit_id)
                .await?;
            return self
                .opened(
                    terminal_id,
                    request_id,
                    &canonical,
                    appended,
                    submitted_at,
                    &app,
                )
                .await;
        };
        let actor = principal.actor();
        let claims = claim::Claims {
            log: self.log.as_ref(),
            index: &persons.index,
            actor: &actor,
            wait: persons.wait,
            stale: persons.stale,
        };
        let key = persons.index.key();
        let members = claim::persons(app.members.iter().map(|m| key.hash(&m.id_number)));
        for _ in 0..MAX_SUBMIT_ATTEMPTS {
            let case_id = Uuid::now_v7();
            // The probe and the claims append to other streams than the case's: they run in
            // a span of their own, so the call's span names the case it opens.
            let claimed = async {
                // A retry of an accepted request is answered before any member is judged:
                // its own case names them all.
                if let Some(original) =
                    recorded_commit(self.log.as_ref(), commit_id, new.clone()).await?
                {
                    return Ok::<_, Error>(Err(claim::Stop::Landed(original.case_id)));
                }
                // Every member at once: one round of appends (claim.rs, "wait-die").
                let claimed = futures::future::try_join_all(members.iter().map(|person| {
                    claims.claim(*person, case_id, commit_id, !override_reason.is_empty())
                }))
                .await;
                if let Err(stop) = claimed {
                    // This case id will never open: void it, so its claims block nobody.
                    // If that fails too, the claims go stale and the next submission
                    // voids them.
                    if let Err(e) = claims.void(case_id, "a member could not be claimed").await {
                        tracing::warn!(%case_id, error = ?e, "abandoned case id not voided");
                    }
                    return Ok(Err(stop));
                }
                Ok(Ok(()))
            }
            .instrument(tracing::info_span!("claims", members = members.len()))
            .await?;
            if let Err(stop) = claimed {
                return match stop {
                    claim::Stop::Exists(open) => {
                        tracing::info!(case_id = %open, terminal = %terminal_id, "submission refused: a member belongs to an open case");
                        Err(Error::AlreadyExists { case_id: open })
                    }
                    claim::Stop::Landed(case_id) => {
                        self.duplicate(terminal_id, request_id, case_id, &canonical)
                            .await
                    }
                    claim::Stop::InProgress => Err(Error::InProgress),
                    claim::Stop::Service(e) => Err(e.into()),
                    // Gave way to an older submission: its outcome decides.
                    claim::Stop::Younger(older) => match claims
                        .outcome(older)
                        .instrument(tracing::info_span!("claims"))
                        .await
                    {
                        Ok(claim::Holder::Opened(CaseStatus::Open))
                            if override_reason.is_empty() =>
                        {
                            tracing::info!(case_id = %older, terminal = %terminal_id, "submission refused: a member belongs to an open case");
                            Err(Error::AlreadyExists { case_id: older })
                        }
                        Ok(claim::Holder::Pending) => Err(Error::InProgress),
                        // It opened (and this one overrides), closed or gave up:
                        // claim again under a new case id.
                        Ok(_) => continue,
                        Err(claim::Stop::Service(e)) => Err(e.into()),
                        Err(_) => Err(Error::InProgress),
                    },
                };
            }
            match self
                .log
                .append(case_id, Expected::NoStream, vec![new.clone()], commit_id)
                .await
            {
                Ok(appended) => {
                    if appended.deduplicated {
                        // A concurrent twin of this request opened its case first.
                        if let Err(e) = claims
                            .void(case_id, "the request opened another case")
                            .instrument(tracing::info_span!("claims"))
                            .await
                        {
                            tracing::warn!(%case_id, error = ?e, "abandoned case id not voided");
                        }
                    }
                    return self
                        .opened(
                            terminal_id,
                            request_id,
                            &canonical,
                            appended,
                            submitted_at,
                            &app,
                        )
                        .await;
                }
                // Another submission found our claims stale and voided this case id:
                // start over with a new one.
                Err(onecity_eventlog::Error::Conflict { .. }) => {
                    tracing::warn!(%case_id, terminal = %terminal_id, "case id voided before it opened, starting over");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::InProgress)
    }

    /// The answer to an append of a submission: the new case, or for a commit id already
    /// in the log, the original's (see [`Intake::duplicate`]).
    async fn opened(
        &self,
        terminal_id: &str,
        request_id: &str,
        canonical: &pb::Application,
        appended: Appended,
        submitted_at: String,
        app: &onecity_domain::Application,
    ) -> Result<Submitted> {
        if appended.deduplicated {
            return self
                .duplicate(terminal_id, request_id, appended.case_id, canonical)
                .await;
        }
        let case_id = appended.case_id;
        tracing::info!(%case_id, terminal = %terminal_id, district = %app.district, members = app.members.len(), "application submitted");
        Ok(Submitted {
            case_id,
            duplicate: false,
            submitted_at,
        })
    }

    /// The answer to a retry of an accepted submission: its case, with the original
    /// submission time; or, when the request id was used for another application,
    /// [`Error::FailedPrecondition`] (the log's answer was a deduplication, so nothing was
    /// written either way).
    async fn duplicate(
        &self,
        terminal_id: &str,
        request_id: &str,
        case_id: Uuid,
        application: &pb::Application,
    ) -> Result<Submitted> {
        let state = load_case(self.log.as_ref(), case_id).await?;
        let Some(submitted) = state.submitted else {
            return Err(Error::FailedPrecondition(format!(
                "request id {request_id:?} was used for a different application"
            )));
        };
        if submitted.application.as_ref() != Some(application) {
            tracing::info!(%case_id, terminal = %terminal_id, "submission refused: request id reused for a different application");
            return Err(Error::FailedPrecondition(format!(
                "request id {request_id:?} was used for a different application (case {case_id})"
            )));
        }
        let submitted_at = submitted.submitted_at;
        tracing::info!(%case_id, terminal = %terminal_id, "duplicate submission answered with the original case");
        Ok(Submitted {
            case_id,
            duplicate: true,
            submitted_at,
        })
    }

    /// The case as the principal may see it.
    ///
    /// The read is recorded (who, the case, the stated purpose) before the view is
    /// returned; a read that cannot be recorded is not answered.
    pub async fn get_case(&self, reader: &Reader, case_id: &str) -> Result<pb::Case> {
        let case_id = parse_case_id(case_id)?;
        let state = load_case(self.log.as_ref(), case_id).await?;
        let view = self.view(&reader.principal, case_id, &state)?;
        self.access.record(reader, GET_CASE, vec![case_id]).await?;
        Ok(view)
    }

    /// Every case naming the person with identity number `id_number`, from the person
    /// index, oldest first: for terminals and administrators (the one-city link: any
    /// district's). Members are shown masked. The read is recorded, naming every case
    /// shown, before it is answered.
    pub async fn find_cases(&self, reader: &Reader, id_number: &str) -> Result<Vec<pb::FoundCase>> {
        let principal = &reader.principal;
        if !matches!(
            principal,
            Principal::Terminal { .. } | Principal::Admin { .. }
        ) {
            return Err(
                denied(principal, "find cases by identity number", Subject::Nothing).into(),
            );
        }
        let id = onecity_domain::IdNumber::parse(id_number)
            .map_err(|e| Error::invalid("id_number", e.to_string()))?;
        let Some(persons) = &self.persons else {
            return Err(Error::NoIndex);
        };
        let found = persons.index.cases_of(&persons.index.key().hash(&id));
        let today = onecity_domain::today();
        let mut cases = Vec::with_capacity(found.len());
        for c in found {
            // The submission is the case's first event: one short read gives the members.
            let first = self.log.read_case(c.case.case_id, 1, 1).await?;
            let members = first
                .first()
                .and_then(|e| match CaseEvent::decode(&e.event_type, &e.payload) {
                    Ok(Some(CaseEvent::ApplicationSubmitted(s))) => s.application,
                    _ => None,
                })
                .map(|app| view::masked_members(app, today))
                .unwrap_or_default();
            cases.push(pb::FoundCase {
                case_id: c.case.case_id.to_string(),
                status: pb::CaseStatus::from(c.case.status) as i32,
                district_code: c.case.district_code,
                relationship: c.relationship,
                submitted_date: c.case.submitted_date,
                members,
            });
        }
        let shown = cases
            .iter()
            .filter_map(|c| Uuid::parse_str(&c.case_id).ok())
            .collect();
        self.access.record(reader, FIND_CASES, shown).await?;
        Ok(cases)
    }

    /// The case's events so far, then new ones as they are recorded. Ends after the case
    /// reaches a final state (closed or withdrawn) or when `shutdown` fires.
    ///
    /// One access record per watch, written before the first response: the watch shows
    /// one case, whatever it streams later.
    pub async fn watch_case(
        &self,
        reader: &Reader,
        case_id: &str,
    ) -> Result<impl Stream<Item = Result<pb::WatchCaseResponse>> + Send + 'static> {
        let principal = &reader.principal;
        let case_id = parse_case_id(case_id)?;
        let events = match self.log.read_case_all(case_id).await {
            Err(onecity_eventlog::Error::NotFound(_)) => {
                return Err(onecity_service::Error::CaseNotFound(case_id).into())
            }
            other => other?,
        };
        // One fold gives both the state to authorise against and, event by event, the
        // status to report with each backlog entry.
        let mut state = CaseState::default();
        let mut statuses = Vec::with_capacity(events.len());
        for e in &events {
            let Some(event) = decode_or_skip(e) else {
                continue;
            };
            state.apply(meta(e), event.as_ref());
            statuses.push(state.status);
        }
        self.view(principal, case_id, &state)?;
        self.access
            .record(reader, WATCH_CASE, vec![case_id])
            .await?;
        let from = events.last().map_or(1, |e| e.version + 1);
        let backlog: Vec<_> = state
            .history
            .iter()
            .zip(&state.audiences)
            .zip(statuses)
            .filter_map(|((event, audience), status)| {
                Some(Ok(pb::WatchCaseResponse {
                    event: Some(view::event(principal, event, audience)?),
                    status: pb::CaseStatus::from(status) as i32,
                }))
            })
            .collect();
        let finished = state.status != CaseStatus::Open;
        let live = if finished {
            None
        } else {
            // The case's own stream: a watch held open for days reads nothing else.
            Some(self.log.subscribe_case(case_id, from).await?)
        };
        let live = futures::stream::iter(live).flatten();
        let principal = principal.clone();
        let live = live
            .scan(state, move |state, r| {
                let item = match r {
                    Err(e) => Some(Err(Error::from(e))),
                    Ok(e) => decode_or_skip(&e).and_then(|ev| {
                        state.apply(meta(&e), ev.as_ref());
                        // An entry the principal may not see is skipped, not ended on: the
                        // case goes on.
                        let shown =
                            state.history.last().zip(state.audiences.last()).and_then(
                                |(event, audience)| view::event(&principal, event, audience),
                            );
                        shown.map(|event| {
                            Ok(pb::WatchCaseResponse {
                                event: Some(event),
                                status: pb::CaseStatus::from(state.status) as i32,
                            })
                        })
                    }),
                };
                // `None`: an event skipped (undecodable, or not for this principal); the
                // stream goes on.
                futures::future::ready(Some(item))
            })
            .filter_map(futures::future::ready);
        // Stop after the first response that reports a final status.
        let live = live.scan(false, |done, r| {
            if *done {
                return futures::future::ready(None);
            }
            if let Ok(w) = &r {
                *done = w.status != pb::CaseStatus::Open as i32;
            }
            futures::future::ready(Some(r))
        });
        Ok(futures::stream::iter(backlog).chain(live))
    }

    /// Withdraws an open case and cancels its open referrals, atomically. Withdrawing a
    /// withdrawn case returns it unchanged; a closed case cannot be withdrawn.
    pub async fn withdraw(
        &self,
        principal: &Principal,
        case_id: &str,
        reason: &str,
    ) -> Result<pb::Case> {
        self.withdraw_with_request_id(principal, case_id, reason, None)
            .await
    }

    /// [`Intake::withdraw`] under an idempotency key: the commit id is derived from the
    /// principal and `request_id`, so a retry returns the case instead of acting again, and
    /// the same key with another case or reason is [`Error::FailedPrecondition`].
    pub async fn withdraw_with_request_id(
        &self,
        principal: &Principal,
        case_id: &str,
        reason: &str,
        request_id: Option<&str>,
    ) -> Result<pb::Case> {
        if !matches!(
            principal,
            Principal::Terminal { .. } | Principal::Admin { .. }
        ) {
            return Err(denied(principal, "withdraw an application", Subject::Nothing).into());
        }
        let case_id = parse_case_id(case_id)?;
        check_text("reason", reason, MAX_REASON_CHARS, TextKind::Paragraph)?;
        let withdrawn = CaseEvent::ApplicationWithdrawn(pb::ApplicationWithdrawn {
            reason: reason.to_owned(),
        });
        let keyed = match request_id {
            None => None,
            Some(request_id) => {
                check_request_id("request_id", request_id)?;
                let commit_id = ids::request_commit(&principal.actor(), request_id);
                let probe = NewEvent::new(
                    withdrawn.event_type(),
                    principal.actor(),
                    withdrawn.encode(),
                );
                if let Some(original) = recorded_commit(self.log.as_ref(), commit_id, probe).await?
                {
                    return self
                        .withdrawn_before(principal, case_id, &withdrawn, request_id, original)
                        .await;
                }
                Some((request_id, commit_id))
            }
        };
        let outcome = append_case_commit(self.log.as_ref(), case_id, |state| {
            not_void(case_id, state)?;
            match state.status {
                CaseStatus::Withdrawn => {
                    return Ok(Step::Done(self.view(principal, case_id, state)?))
                }
                CaseStatus::Closed => {
                    return Err(Error::FailedPrecondition(format!(
                        "case {case_id} is closed: every referral is decided"
                    )))
                }
                CaseStatus::Open => {}
            }
            let mut events = vec![withdrawn.clone()];
            for r in state
                .referrals
                .iter()
                .filter(|r| !onecity_domain::case::is_final(r.state))
            {
                events.push(CaseEvent::ReferralCancelled(pb::Referral {
                    state: pb::ReferralState::Cancelled as i32,
                    ..r.clone()
                }));
            }
            let actor = principal.actor();
            let commit = Commit {
                version: state.version,
                events: events
                    .iter()
                    .map(|e| {
                        let new = NewEvent::new(e.event_type(), actor.clone(), e.encode());
                        match keyed {
                            Some((request_id, _)) => new.caused_by(request_id),
                            None => new,
                        }
                    })
                    .collect(),
                commit_id: keyed.map_or_else(
                    || ids::withdraw_commit(case_id, state.version),
                    |(_, commit_id)| commit_id,
                ),
            };
            Ok(Step::Append(commit, events.len() - 1))
        })
        .await?;
        match (outcome, keyed) {
            (Outcome::Unchanged(case), _) => Ok(case),
            // A concurrent retry of the same keyed request wrote first.
            (Outcome::Appended(_, appended), Some((request_id, _))) if appended.deduplicated => {
                self.withdrawn_before(principal, case_id, &withdrawn, request_id, appended)
                    .await
            }
            (Outcome::Appended(cancelled, _), _) => {
                tracing::info!(%case_id, cancelled, "application withdrawn");
                let state = load_case(self.log.as_ref(), case_id).await?;
                self.view(principal, case_id, &state)
            }
        }
    }

    /// Records a change of the household's circumstances on `case_id` (terminals only):
    /// `application` is the whole application as it now stands, validated like a
    /// submission (its district cannot change), `reason` says why (required). Open cases
    /// may be amended, and closed ones while a decided approval is in force (the case
    /// re-opens); withdrawn ones not. Idempotent per (terminal, `request_id`): a retry
    /// returns the case, the same key for another amendment is
    /// [`Error::FailedPrecondition`]. The assessment worker re-assesses the case under the
    /// policy in force on the amendment date (Beijing, by this intake's clock).
    pub async fn amend(
        &self,
        principal: &Principal,
        case_id: &str,
        request_id: &str,
        application: Option<pb::Application>,
        reason: &str,
    ) -> Result<Amended> {
        let Principal::Terminal {
            id: terminal_id,
            street_office,
            ..
        } = principal
        else {
            return Err(denied(principal, "amend an application", Subject::Nothing).into());
        };
        let case_id = parse_case_id(case_id)?;
        check_request_id("request_id", request_id)?;
        let application =
            application.ok_or_else(|| Error::invalid("application", "is required"))?;
        let app = validate_application(application, onecity_domain::today())?;
        if reason.trim().is_empty() {
            return Err(Error::invalid("reason", "is required"));
        }
        check_text("reason", reason, MAX_REASON_CHARS, TextKind::Paragraph)?;
        let now = self.clock.now();
        let amended_on = onecity_domain::beijing_date(now);
        if self.policies.in_force(amended_on).is_none() {
            return Err(Error::FailedPrecondition(format!(
                "no policy version is in force on {amended_on}"
            )));
        }
        let canonical = pb::Application::from(&app);
        let event = CaseEvent::ApplicationAmended(pb::ApplicationAmended {
            application: Some(canonical.clone()),
            reason: reason.to_owned(),
            amended_on: onecity_domain::format_date(amended_on),
            terminal_id: terminal_id.clone(),
            street_office: street_office.clone(),
            request_id: request_id.to_owned(),
            amended_at: onecity_domain::rfc3339(now),
        });
        let commit_id = ids::request_commit(&principal.actor(), request_id);
        let new = NewEvent::new(event.event_type(), principal.actor(), event.encode())
            .caused_by(request_id);
        if let Some(original) = recorded_commit(self.log.as_ref(), commit_id, new.clone()).await? {
            return self
                .amended_before(principal, case_id, &canonical, reason, request_id, original)
                .await;
        }
        // Every attempt appends or refuses: there is no answer without a write.
        let outcome: Outcome<std::convert::Infallible, CaseStatus> =
            append_case_commit(self.log.as_ref(), case_id, |state| {
            not_void(case_id, state)?;
            match state.status {
                CaseStatus::Withdrawn => {
                    return Err(Error::FailedPrecondition(format!(
                        "case {case_id} is withdrawn"
                    )))
                }
                CaseStatus::Closed if !state.holds_approval() => {
                    return Err(Error::FailedPrecondition(format!(
                        "case {case_id} is closed and holds no approval in force: submit a new application"
                    )))
                }
                CaseStatus::Open | CaseStatus::Closed => {}
            }
            let district = state.application().map(|a| a.district_code.as_str());
            if district.is_some_and(|d| d != canonical.district_code) {
                return Err(Error::invalid(
                    "application.district_code",
                    "an amendment cannot move the case to another district: withdraw it and apply there",
                ));
            }
            Ok(Step::Append(
                Commit {
                    version: state.version,
                    events: vec![new.clone()],
                    commit_id,
                },
                state.status,
            ))
        })
        .await?;
        match outcome {
            Outcome::Unchanged(never) => match never {},
            Outcome::Appended(_, appended) if appended.deduplicated => {
                self.amended_before(principal, case_id, &canonical, reason, request_id, appended)
                    .await
            }
            Outcome::Appended(was, _) => {
                tracing::info!(%case_id, terminal = %terminal_id, reopened = (was == CaseStatus::Closed), members = app.members.len(), "application amended");
                let state = load_case(self.log.as_ref(), case_id).await?;
                Ok(Amended {
                    case: self.view(principal, case_id, &state)?,
                    duplicate: false,
                })
            }
        }
    }

    /// The answer to an amendment whose commit id is already in the log: the case as it
    /// is now when that commit amended this case with the same application and reason,
    /// otherwise [`Error::FailedPrecondition`].
    async fn amended_before(
        &self,
        principal: &Principal,
        case_id: Uuid,
        application: &pb::Application,
        reason: &str,
        request_id: &str,
        original: Appended,
    ) -> Result<Amended> {
        let events = commit_events(self.log.as_ref(), &original).await?;
        let same = original.case_id == case_id
            && events.first().is_some_and(|e| {
                matches!(
                    CaseEvent::decode(&e.event_type, &e.payload),
                    Ok(Some(CaseEvent::ApplicationAmended(a)))
                        if a.application.as_ref() == Some(application) && a.reason == reason
                )
            });
        if !same {
            return Err(Error::FailedPrecondition(format!(
                "request id {request_id:?} was used for a different request"
            )));
        }
        tracing::info!(%case_id, "duplicate amendment answered with the case");
        let state = load_case(self.log.as_ref(), case_id).await?;
        Ok(Amended {
            case: self.view(principal, case_id, &state)?,
            duplicate: true,
        })
    }

    /// The answer to a keyed withdrawal whose commit is already in the log: the case as it
    /// is now when that commit withdrew this case for the same reason, otherwise
    /// [`Error::FailedPrecondition`].
    async fn withdrawn_before(
        &self,
        principal: &Principal,
        case_id: Uuid,
        withdrawn: &CaseEvent,
        request_id: &str,
        original: Appended,
    ) -> Result<pb::Case> {
        let events = commit_events(self.log.as_ref(), &original).await?;
        let same = original.case_id == case_id
            && events.first().is_some_and(|e| {
                e.event_type == withdrawn.event_type() && e.payload == withdrawn.encode()
            });
        if !same {
            return Err(Error::FailedPrecondition(format!(
                "request id {request_id:?} was used for a different request"
            )));
        }
        let state = load_case(self.log.as_ref(), case_id).await?;
        self.view(principal, case_id, &state)
    }
}
