//! The re-assessments the assessment worker writes: after each `ApplicationAmended`, under
//! the policy in force on the amendment date. The effects are computed by the one core,
//! `onecity_eligibility::reassess`; this module reads the case, runs the core on the
//! blocking pool and appends its events as one commit.

use chrono::{DateTime, Utc};
use onecity_domain::case::{CaseState, CaseStatus};
use onecity_domain::events::CaseEvent;
use onecity_domain::{ids, parse_date, validate_application, Application};
use onecity_eligibility::reassess::{reassess, Input, Reassessment, Trigger};
use onecity_eventlog::{NewEvent, RecordedEvent};
use onecity_proto::v1 as pb;
use onecity_service::case::{append_with_retries, load_case, Commit, Outcome, Step};
use uuid::Uuid;

use crate::{Assessor, Done, Error, Result, ACTOR};

/// What one re-assessment is about, decided before the case is read.
pub(crate) struct Job {
    pub case_id: Uuid,
    pub trigger: Trigger,
    /// The policy version to assess under.
    pub policy: String,
    /// The new referrals' issue time.
    pub now: DateTime<Utc>,
    /// The causation id of the commit's events.
    pub caused_by: String,
}

impl Job {
    fn commit_id(&self) -> Uuid {
        ids::reassess_commit(self.case_id, self.trigger.kind(), &self.cause())
    }

    fn cause(&self) -> String {
        match &self.trigger {
            Trigger::Amendment { event_id, .. } => event_id.to_string(),
            Trigger::PolicyVersion => self.policy.clone(),
        }
    }
}

/// The commit of a re-assessment decided on the case at `version`.
pub(crate) fn commit(job: &Job, version: u64, reassessment: &Reassessment) -> Commit {
    Commit {
        version,
        events: reassessment
            .events
            .iter()
            .map(|e| {
                NewEvent::new(e.event_type(), ACTOR, e.encode()).caused_by(job.caused_by.clone())
            })
            .collect(),
        commit_id: job.commit_id(),
    }
}

impl Assessor {
    /// The job of the re-assessment `amended` asks for; `None` (logged) when the stored
    /// amendment cannot be assessed: damaged, or no policy in force on its date.
    pub(crate) fn amendment_job(&self, amended: &RecordedEvent) -> Result<Option<Job>> {
        let case_id = amended.case_id;
        let Some(CaseEvent::ApplicationAmended(a)) =
            CaseEvent::decode(&amended.event_type, &amended.payload)?
        else {
            return Ok(None);
        };
        let Some(on) = parse_date(&a.amended_on) else {
            tracing::error!(%case_id, "stored amendment has no valid date, not re-assessed");
            return Ok(None);
        };
        let Some(policy) = self.policies.in_force(on) else {
            tracing::error!(%case_id, date = %on, "no policy in force on the amendment date, not re-assessed");
            return Ok(None);
        };
        Ok(Some(Job {
            case_id,
            trigger: Trigger::Amendment {
                event_id: amended.event_id,
                reason: a.reason,
            },
            policy: policy.id().to_owned(),
            now: DateTime::<Utc>::from(amended.recorded_at),
            caused_by: amended.event_id.to_string(),
        }))
    }

    /// Re-assesses the case of `amended` once: skipped when the case was withdrawn, when
    /// this amendment was re-assessed already (a replay; the commit id is derived from the
    /// amendment too), or when a later amendment overtook it (its own re-assessment covers
    /// both).
    pub(crate) async fn process_amendment(&self, amended: &RecordedEvent) -> Result<Done> {
        let Some(job) = self.amendment_job(amended)? else {
            return Ok(Done::Skipped);
        };
        let payload = amended.payload.clone();
        let current = move |state: &CaseState| {
            state
                .amended
                .as_ref()
                .is_some_and(|a| CaseEvent::ApplicationAmended(a.clone()).encode() == payload)
        };
        self.reassess_case(&job, current).await
    }

    /// Appends `job`'s re-assessment when `wanted` holds for the case as it stands (and
    /// it is not withdrawn, nor re-assessed for this cause yet), deciding again after a
    /// concurrent write.
    pub(crate) async fn reassess_case(
        &self,
        job: &Job,
        wanted: impl Fn(&CaseState) -> bool,
    ) -> Result<Done> {
        let log = self.log.as_ref();
        let cause = job.cause();
        let (wanted, cause) = (&wanted, &cause);
        let outcome = append_with_retries(log, job.case_id, |_| async move {
            let state = load_case(log, job.case_id).await?;
            if state.status == CaseStatus::Withdrawn
                || state.reassessed.contains(cause)
                || !wanted(&state)
            {
                return Ok(Step::Done(()));
            }
            let version = state.version;
            let Some(reassessment) = self.blocking_reassess(job, state).await? else {
                return Ok(Step::Done(()));
            };
            Ok::<_, Error>(Step::Append(commit(job, version, &reassessment), ()))
        })
        .await?;
        Ok(match outcome {
            Outcome::Appended((), a) if !a.deduplicated => {
                tracing::info!(case_id = %job.case_id, policy = %job.policy, trigger = job.trigger.kind(), "case re-assessed");
                Done::Reassessed
            }
            Outcome::Appended(..) | Outcome::Unchanged(()) => Done::Skipped,
        })
    }

    /// [`Assessor::decide_reassessment`] on the blocking pool.
    async fn blocking_reassess(&self, job: &Job, state: CaseState) -> Result<Option<Reassessment>> {
        let worker = self.clone();
        let (case_id, trigger, policy, now) = (
            job.case_id,
            job.trigger.clone(),
            job.policy.clone(),
            job.now,
        );
        tokio::task::spawn_blocking(move || {
            worker.decide_reassessment(case_id, &state, &trigger, &policy, now)
        })
        .await
        .map_err(|e| Error::TaskFailed(e.to_string()))
    }

    /// The re-assessment of the case in `state` under `policy` (pure). `None` (logged)
    /// when the case's application does not validate or the policy is unknown.
    pub(crate) fn decide_reassessment(
        &self,
        case_id: Uuid,
        state: &CaseState,
        trigger: &Trigger,
        policy: &str,
        now: DateTime<Utc>,
    ) -> Option<Reassessment> {
        let app = current_application(case_id, state)?;
        let Some(policy) = self.policies.get(policy) else {
            tracing::error!(%case_id, %policy, "unknown policy version, not re-assessed");
            return None;
        };
        Some(reassess(Input {
            case_id,
            state,
            application: &app,
            policy,
            catalogue: &self.catalogue,
            now,
            trigger,
        }))
    }
}

/// The case's current application, validated; `None` (logged) when it does not validate
/// (only a damaged or foreign event gives one: intake validated it).
pub(crate) fn current_application(case_id: Uuid, state: &CaseState) -> Option<Application> {
    let app: pb::Application = state.application()?.clone();
    match validate_application(app, onecity_domain::today()) {
        Ok(app) => Some(app),
        Err(e) => {
            tracing::error!(%case_id, field = %e.field, reason = %e.reason, "stored application fails validation, not re-assessed");
            None
        }
    }
}
