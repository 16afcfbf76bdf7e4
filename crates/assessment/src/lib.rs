//! Assessment: the eligibility role. [`Assessor`] follows the log, assesses every new
//! application under the policy in force on its date and appends one
//! `EligibilityAssessed` per case; [`Screener`] answers dry runs (`Screen`) and policy
//! look-ups (`GetPolicy`) without writing anything. The rules themselves are the pure
//! functions of `onecity-eligibility`.

use std::sync::Arc;

use onecity_domain::case::{CaseState, CaseStatus, EventMeta};
use onecity_domain::events::{CaseEvent, APPLICATION_SUBMITTED};
use onecity_domain::{parse_date, validate_application, Partition, Principal};
use onecity_eligibility::{assess, assess_with, Catalogue, Detail, PolicyBook};
use onecity_eventlog::{EventLog, Expected, Filter, NewEvent, RecordedEvent};
use onecity_proto::v1 as pb;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub mod grpc;

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
    /// The caller may not do this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The log failed.
    #[error(transparent)]
    Log(#[from] onecity_eventlog::Error),
    /// A stored event does not decode.
    #[error(transparent)]
    Corrupt(#[from] onecity_domain::events::DecodeError),
}

const ID_NAMESPACE: Uuid = Uuid::from_bytes(onecity_domain::ID_NAMESPACE);
/// Consumer name of the assessment worker's checkpoint.
pub const CONSUMER: &str = "assessment";

/// How much of each assessment [`Screener::screen`] returns (the `ScreenView` of the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum View {
    /// Outcome, amount, margin, department unit, policy version and summary; no rules.
    /// What a clerk reads; a seventh of the bytes of [`View::Full`].
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
            tracing::warn!(principal = %principal, action = "screen", "permission denied");
            return Err(Error::PermissionDenied(format!(
                "{} principals may not screen applications",
                principal.kind()
            )));
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
    /// Already assessed (a replay), or the case was withdrawn first.
    Skipped,
}

fn meta(e: &RecordedEvent) -> EventMeta {
    EventMeta {
        version: e.version,
        position: e.position,
        event_type: e.event_type.clone(),
        actor: e.actor.clone(),
        recorded_at: e.recorded_at_rfc3339(),
    }
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

    /// Follows the log from the saved checkpoint until `shutdown`. At-least-once: after a
    /// crash it replays from the checkpoint, and [`Assessor::process`] makes a replay a
    /// no-op. Transient log errors are retried with backoff.
    pub async fn run(self, shutdown: CancellationToken) {
        let consumer = format!("{CONSUMER}{}", self.partition.consumer_suffix());
        let filter = Filter::prefixes([APPLICATION_SUBMITTED]);
        onecity_eventlog::consumer::run(Arc::clone(&self.log), &consumer, filter, shutdown, &self)
            .await;
    }

    /// Assesses the case opened by `submitted`, exactly once per case: the commit id is
    /// derived from the case, and a case already assessed (or withdrawn) is skipped.
    pub async fn process(&self, submitted: &RecordedEvent) -> Result<Done> {
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
        let assessments: Vec<pb::Assessment> = assess(&app, policy, &self.catalogue)
            .into_iter()
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
        let commit_id = Uuid::new_v5(&ID_NAMESPACE, format!("assess\u{0}{case_id}").as_bytes());
        // First try right after the submission without reading the case: that is where a
        // new case stands, and if anything came after it (an assessment, a withdrawal) the
        // append conflicts and the case is read and judged below. A replay of a case
        // already assessed is answered by the commit id before the version is checked.
        let mut expected = after;
        for _ in 0..16 {
            let new = NewEvent::new(event_type, "service:assessment", payload.clone())
                .caused_by(cause.clone());
            match self
                .log
                .append(case_id, Expected::Exact(expected), vec![new], commit_id)
                .await
            {
                Ok(a) => {
                    if !a.deduplicated {
                        tracing::info!(%case_id, %policy, "case assessed");
                    }
                    return Ok(if a.deduplicated {
                        Done::Skipped
                    } else {
                        Done::Assessed
                    });
                }
                Err(onecity_eventlog::Error::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let events = self.log.read_case_all(case_id).await?;
            let state =
                CaseState::from_stored(events.iter().map(|e| (meta(e), e.payload.as_slice())))?;
            if state.assessed.is_some() || state.status == CaseStatus::Withdrawn {
                return Ok(Done::Skipped);
            }
            expected = state.version;
        }
        Err(Error::Log(onecity_eventlog::Error::Unavailable(format!(
            "case {case_id} kept changing"
        ))))
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
    /// Chunks overlap safely: a case has one submission, and every write is checked
    /// against the case's version.
    const IN_FLIGHT: usize = 4;

    /// A chunk holds at most one such event per case, so its cases are processed
    /// concurrently: their writes share the log's group commit instead of each waiting for
    /// its own fsync.
    ///
    /// The rules run on the blocking pool: a chunk is milliseconds of computation, which on
    /// a runtime thread would stall every request and stream scheduled behind it.
    async fn handle(&self, events: &[RecordedEvent]) -> Result<()> {
        let owned: Vec<RecordedEvent> = events
            .iter()
            .filter(|e| self.partition.owns(e.case_id.as_bytes()))
            .cloned()
            .collect();
        let worker = self.clone();
        let decided = tokio::task::spawn_blocking(move || {
            owned
                .iter()
                .map(|e| worker.decide(e))
                .collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(|e| {
            Error::Log(onecity_eventlog::Error::Unavailable(format!(
                "assessment did not finish: {e}"
            )))
        })??;
        futures::future::try_join_all(decided.into_iter().flatten().map(|d| self.record(d)))
            .await
            .map(drop)
    }
}
