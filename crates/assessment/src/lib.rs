//! Assessment: the eligibility role. [`Assessor`] follows the log, assesses every new
//! application under the policy in force on its date and appends one
//! `EligibilityAssessed` per case, and re-assesses a case after each change of
//! circumstances (`ApplicationAmended`, see `reassess.rs`); [`Screener`] answers dry runs (`Screen`) and policy
//! look-ups (`GetPolicy`) without writing anything. [`PolicySweeper`] re-assesses the
//! active cases when a new policy version takes effect (`sweep.rs`), and counts what a
//! version would change without writing. The rules themselves are the pure
//! functions of `onecity-eligibility`.

use std::sync::Arc;

use onecity_domain::case::CaseStatus;
use onecity_domain::events::{CaseEvent, APPLICATION_AMENDED, APPLICATION_SUBMITTED};
use onecity_domain::{ids, parse_date, validate_application, Partition, Principal};
use onecity_eligibility::{assess_with, decide, Catalogue, Detail, PolicyBook};
use onecity_eventlog::{EventLog, Filter, NewEvent, RecordedEvent};
use onecity_proto::v1 as pb;
use onecity_service::case::{
    append_with_retries, denied, load_case, Commit, Outcome, Step, Subject,
};
use onecity_service::{ErrorClass, Kind};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub mod grpc;
mod policy_record;
mod reassess;
mod sweep;

pub use policy_record::{check_in_force, record as record_policy_version};
pub use sweep::{
    ActiveCases, Counts, Impact, ImpactProgress, PolicySweeper, Swept, DEFAULT_SWEEP_BATCH,
    SWEEP_CONSUMER,
};

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an assessment operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Request field path.
        field: String,
        /// Why.
        reason: String,
    },
    /// Nothing to return (e.g. no policy in force on a date).
    #[error("{0}")]
    NotFound(String),
    /// The shared case plumbing failed: permission denied, a case kept changing under
    /// every retry, or the log failed there.
    #[error(transparent)]
    Service(#[from] onecity_service::Error),
    /// The log failed.
    #[error(transparent)]
    Log(#[from] onecity_eventlog::Error),
    /// A stored event does not decode.
    #[error(transparent)]
    Corrupt(#[from] onecity_domain::events::DecodeError),
    /// A policy version in force differs from what the log recorded of it.
    #[error("{0}")]
    PolicyChanged(String),
    /// The blocking task that applies the rules to a chunk failed (it panicked or was
    /// cancelled); nothing of the chunk was written.
    #[error("assessment did not finish: {0}")]
    TaskFailed(String),
}

impl ErrorClass for Error {
    fn into_kind(self) -> Kind {
        match self {
            Error::Invalid { field, reason } => Kind::Invalid { field, reason },
            Error::NotFound(_) => Kind::NotFound,
            Error::PolicyChanged(_) => Kind::FailedPrecondition,
            Error::Service(e) => e.into_kind(),
            Error::Log(e) => Kind::Log(e),
            Error::Corrupt(_) | Error::TaskFailed(_) => Kind::Internal,
        }
    }
}

/// Consumer name of the assessment worker's checkpoint.
pub const CONSUMER: &str = "assessment";
/// The actor the assessment worker writes its events as.
pub const ACTOR: &str = "service:assessment";

/// How much of each assessment [`Screener::screen`] returns (the `ScreenView` of the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum View {
    /// Outcome, amount, margin, department unit, policy version and summary; no rules.
    /// What a clerk reads; a small part of the bytes of [`View::Full`].
    #[default]
    Basic,
    /// Every rule with its inputs, threshold and explanation as well.
    Full,
}

impl View {
    /// From the `ScreenView` proto value (0 = the default, [`View::Basic`]).
    pub fn from_proto(view: i32) -> Result<View> {
        match pb::ScreenView::try_from(view) {
            Ok(pb::ScreenView::Unspecified | pb::ScreenView::Basic) => Ok(View::Basic),
            Ok(pb::ScreenView::Full) => Ok(View::Full),
            Err(_) => Err(Error::Invalid {
                field: "view".into(),
                reason: format!("unknown screen view {view}"),
            }),
        }
    }
}

/// Dry-run assessments and policy look-ups.
#[derive(Debug, Clone)]
pub struct Screener {
    policies: Arc<PolicyBook>,
    catalogue: Arc<Catalogue>,
}

impl Screener {
    /// A screener over the given policy and catalogue.
    pub fn new(policies: Arc<PolicyBook>, catalogue: Arc<Catalogue>) -> Self {
        Screener {
            policies,
            catalogue,
        }
    }

    /// Assesses all twelve programmes for an application, writing nothing. Validated
    /// exactly like a submission. Terminals and administrators only. `view` says whether
    /// the rules come with it.
    pub fn screen(
        &self,
        principal: &Principal,
        application: Option<pb::Application>,
        view: View,
    ) -> Result<Vec<pb::Assessment>> {
        if !matches!(
            principal,
            Principal::Terminal { .. } | Principal::Admin { .. }
        ) {
            return Err(denied(principal, "screen applications", Subject::Nothing).into());
        }
        let application = application.ok_or_else(|| Error::Invalid {
            field: "application".into(),
            reason: "is required".into(),
        })?;
        let app = validate_application(application, onecity_domain::today()).map_err(|e| {
            Error::Invalid {
                field: e.field,
                reason: e.reason,
            }
        })?;
        let policy = self
            .policies
            .in_force(app.application_date)
            .ok_or_else(|| Error::Invalid {
                field: "application.application_date".into(),
                reason: "no policy version is in force on that date".into(),
            })?;
        // BASIC leaves the rules out, so they are not even built (their explanations were
        // most of a BASIC `Screen`'s cost).
        let detail = match view {
            View::Basic => Detail::Summary,
            View::Full => Detail::Full,
        };
        Ok(assess_with(&app, policy, &self.catalogue, detail)
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// The policy version in force on `as_of` (`YYYY-MM-DD`; empty = today in Beijing).
    pub fn policy(&self, as_of: &str) -> Result<pb::Policy> {
        let date = if as_of.is_empty() {
            onecity_domain::today()
        } else {
            parse_date(as_of).ok_or_else(|| Error::Invalid {
                field: "as_of".into(),
                reason: "not a real date in YYYY-MM-DD form".into(),
            })?
        };
        let policy = self
            .policies
            .in_force(date)
            .ok_or_else(|| Error::NotFound(format!("no policy version is in force on {date}")))?;
        Ok(policy.into())
    }
}

/// The assessment worker.
#[derive(Debug, Clone)]
pub struct Assessor {
    log: Arc<dyn EventLog>,
    policies: Arc<PolicyBook>,
    catalogue: Arc<Catalogue>,
    partition: Partition,
}

/// What the worker did with one submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Appended the assessment.
    Assessed,
    /// Appended a re-assessment (and its referral effects).
    Reassessed,
    /// Already assessed (a replay), or the case was withdrawn first.
    Skipped,
}

impl Assessor {
    /// A worker over `log`.
    pub fn new(
        log: Arc<dyn EventLog>,
        policies: Arc<PolicyBook>,
        catalogue: Arc<Catalogue>,
    ) -> Self {
        Assessor {
            log,
            policies,
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

    /// The event type the worker follows to open cases (every case's first event): what
    /// intake's backpressure waits on.
    pub const FOLLOWS: &'static str = APPLICATION_SUBMITTED;
    /// Every event type the worker follows: submissions, and amendments to re-assess.
    pub const FOLLOWS_ALL: [&'static str; 2] = [APPLICATION_SUBMITTED, APPLICATION_AMENDED];

    /// The checkpoint name of the worker that handles `partition`: [`CONSUMER`], with the
    /// partition's suffix when there are several.
    pub fn consumer_name(partition: &Partition) -> String {
        format!("{CONSUMER}{}", partition.consumer_suffix())
    }

    /// Follows the log from the saved checkpoint until `shutdown`. At-least-once: after a
    /// crash it replays from the checkpoint, and [`Assessor::process`] makes a replay a
    /// no-op. Transient log errors are retried with backoff.
    pub async fn run(self, shutdown: CancellationToken) {
        let consumer = Self::consumer_name(&self.partition);
        let filter = Filter::prefixes(Self::FOLLOWS_ALL);
        onecity_eventlog::consumer::run(Arc::clone(&self.log), &consumer, filter, shutdown, &self)
            .await;
    }

    /// Assesses the case opened by `submitted`, exactly once per case: the commit id is
    /// derived from the case, and a case already assessed (or withdrawn) is skipped. An
    /// `ApplicationAmended` is re-assessed instead, once per amendment.
    pub async fn process(&self, submitted: &RecordedEvent) -> Result<Done> {
        if submitted.event_type == APPLICATION_AMENDED {
            return self.process_amendment(submitted).await;
        }
        match self.decide(submitted)? {
            Some(decided) => self.record(decided).await,
            None => Ok(Done::Skipped),
        }
    }

    /// The assessment of the case opened by `submitted`, encoded and ready to append
    /// (`None`: nothing to assess). Pure computation, no I/O: the chunk handler runs it
    /// on the blocking pool, so a chunk's rules never hold up a runtime thread.
    fn decide(&self, submitted: &RecordedEvent) -> Result<Option<Decided>> {
        let case_id = submitted.case_id;
        let Some(CaseEvent::ApplicationSubmitted(s)) =
            CaseEvent::decode(&submitted.event_type, &submitted.payload)?
        else {
            return Ok(None);
        };
        let application = s.application.unwrap_or_default();
        // Validated at intake; re-validating guards against a damaged or foreign event.
        let app = match validate_application(application, onecity_domain::today()) {
            Ok(app) => app,
            Err(e) => {
                tracing::error!(%case_id, field = %e.field, reason = %e.reason, "stored application fails validation, not assessed");
                return Ok(None);
            }
        };
        let Some(policy) = self.policies.in_force(app.application_date) else {
            tracing::error!(%case_id, date = %app.application_date, "no policy in force, not assessed");
            return Ok(None);
        };
        // The stored form: rule codes and inputs, the words rendered when read.
        let assessments: Vec<pb::Assessment> = decide(&app, policy, &self.catalogue, &[])
            .iter()
            .map(Into::into)
            .collect();
        let event = CaseEvent::EligibilityAssessed(pb::EligibilityAssessed {
            assessments,
            policy_version: policy.id().to_owned(),
        });
        Ok(Some(Decided {
            case_id,
            after: submitted.version,
            cause: submitted.event_id.to_string(),
            event_type: event.event_type(),
            payload: event.encode(),
            policy: policy.id().to_owned(),
        }))
    }

    /// Appends a decided assessment, unless the case was assessed or withdrawn meanwhile.
    async fn record(&self, decided: Decided) -> Result<Done> {
        let Decided {
            case_id,
            after,
            cause,
            event_type,
            payload,
            policy,
        } = decided;
        let commit_id = ids::assess_commit(case_id);
        let log = self.log.as_ref();
        let (payload, cause) = (&payload, &cause);
        let outcome = append_with_retries(log, case_id, |attempt| async move {
            // The first attempt goes right after the submission without reading the case:
            // that is where a new case stands, and if anything came after it (an
            // assessment, a withdrawal) the append conflicts and the case is read and
            // judged. A replay of a case already assessed is answered by the commit id
            // before the version is checked.
            let version = if attempt == 0 {
                after
            } else {
                let state = load_case(log, case_id).await?;
                if state.assessed.is_some() || state.status == CaseStatus::Withdrawn {
                    return Ok(Step::Done(()));
                }
                state.version
            };
            let new = NewEvent::new(event_type, ACTOR, payload.clone()).caused_by(cause.clone());
            Ok::<_, Error>(Step::Append(
                Commit {
                    version,
                    events: vec![new],
                    commit_id,
                },
                (),
            ))
        })
        .await?;
        Ok(match outcome {
            Outcome::Appended((), a) if !a.deduplicated => {
                tracing::info!(%case_id, %policy, "case assessed");
                Done::Assessed
            }
            Outcome::Appended(..) | Outcome::Unchanged(()) => Done::Skipped,
        })
    }
}

/// An assessment computed by [`Assessor::decide`], waiting to be appended.
struct Decided {
    case_id: Uuid,
    /// Version of the submission it assesses: where a new case stands.
    after: u64,
    /// Event id of the submission (the causation id).
    cause: String,
    event_type: &'static str,
    payload: Vec<u8>,
    policy: String,
}

#[async_trait::async_trait]
impl onecity_eventlog::consumer::ChunkHandler for Assessor {
    type Error = Error;
    /// Chunks overlap safely: a case has one submission, every write is checked against
    /// the case's version, and a re-assessment reads what is done from the case.
    const IN_FLIGHT: usize = 4;

    /// A chunk holds at most one submission per case, so its cases are processed
    /// concurrently: their writes share the log's group commit instead of each waiting for
    /// its own fsync. Then its amendments: one case's in order, the cases concurrently.
    ///
    /// The rules run on the blocking pool: a chunk's rules are enough computation to stall,
    /// on a runtime thread, every request and stream scheduled behind them.
    async fn handle(&self, events: &[RecordedEvent]) -> Result<()> {
        let (owned, amendments): (Vec<RecordedEvent>, Vec<RecordedEvent>) = events
            .iter()
            .filter(|e| self.partition.owns(e.case_id.as_bytes()))
            .cloned()
            .partition(|e| e.event_type != APPLICATION_AMENDED);
        self.handle_submissions(owned).await?;
        let mut cases: Vec<Vec<&RecordedEvent>> = Vec::new();
        for e in &amendments {
            match cases.iter_mut().find(|c| c[0].case_id == e.case_id) {
                Some(case) => case.push(e),
                None => cases.push(vec![e]),
            }
        }
        futures::future::try_join_all(cases.into_iter().map(|case| async move {
            for e in case {
                self.process_amendment(e).await?;
            }
            Ok::<_, Error>(())
        }))
        .await
        .map(drop)
    }

    /// A stored event that does not decode never will: the consumer quarantines it.
    fn is_poison(err: &Error) -> bool {
        matches!(err, Error::Corrupt(_))
    }
}

impl Assessor {
    /// The submissions of a chunk (see [`ChunkHandler::handle`]).
    ///
    /// [`ChunkHandler::handle`]: onecity_eventlog::consumer::ChunkHandler::handle
    async fn handle_submissions(&self, owned: Vec<RecordedEvent>) -> Result<()> {
        let worker = self.clone();
        let decided = tokio::task::spawn_blocking(move || {
            owned
                .iter()
                .map(|e| worker.decide(e))
                .collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(|e| Error::TaskFailed(e.to_string()))??;
        futures::future::try_join_all(decided.into_iter().flatten().map(|d| self.record(d)))
            .await
            .map(drop)
    }
}
