//! Monitoring: signals about residents and the warnings they raise (docs/monitoring.md).
//!
//! A department or another service reports a signal ([`Monitoring::report_signal`]): a
//! medical bill, a lost job, a disability recognised, a death, a disaster, a drop in
//! income. Each signal gets a stream of its own, its id derived from the source and the
//! source's record id, so a retry names the same signal. A signal that crosses its policy
//! threshold raises a warning on that stream, for civil affairs of the district of the case
//! naming the person (found through the person index), or of the signal's district when no
//! case does. A death also asks for the review of the household's approved recognitions,
//! with the re-verification's review referral. Civil affairs lists and resolves warnings;
//! the deadline worker escalates those left open past their deadline.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use onecity_domain::case::CaseStatus;
use onecity_domain::events::{
    encode_warning, CaseEvent, SIGNAL_REPORTED, WARNING_RAISED, WARNING_RESOLVED,
};
use onecity_domain::text::{check_name, check_request_id, check_text, TextKind};
use onecity_domain::{
    beijing_date, format_date, ids, parse_date, rfc3339, Department, DistrictCode, IdNumber,
    Principal, Programme,
};
use onecity_eligibility::{Catalogue, PolicyBook, PolicyVersion};
use onecity_eventlog::{EventLog, Expected, NewEvent};
use onecity_intake::PersonIndex;
use onecity_proto::prost::Message;
use onecity_proto::v1 as pb;
use onecity_service::access::{Access, Reader};
use onecity_service::case::{
    append_with_retries, commit_events, denied, load_case, load_signal, recorded_commit, Commit,
    Outcome, Step, Subject,
};
use onecity_service::clock::{Clock, SystemClock};
use onecity_service::{ErrorClass, Kind};
use uuid::Uuid;

pub mod grpc;
mod statistics;
mod warnings;

pub use statistics::{Counts, Statistics, StatsQuery, MAX_RANGE_DAYS};
pub use warnings::Warnings;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a monitoring operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input; nothing written.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Request field.
        field: String,
        /// Why.
        reason: String,
    },
    /// No such warning.
    #[error("warning {0} not found")]
    NotFound(String),
    /// The request conflicts with what is recorded.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The shared case plumbing failed.
    #[error(transparent)]
    Service(#[from] onecity_service::Error),
    /// The log failed.
    #[error(transparent)]
    Log(#[from] onecity_eventlog::Error),
    /// A stored event does not decode.
    #[error(transparent)]
    Corrupt(#[from] onecity_domain::events::DecodeError),
}

impl ErrorClass for Error {
    fn into_kind(self) -> Kind {
        match self {
            Error::Invalid { field, reason } => Kind::Invalid { field, reason },
            Error::NotFound(_) => Kind::NotFound,
            Error::FailedPrecondition(_) => Kind::FailedPrecondition,
            Error::Service(e) => e.into_kind(),
            Error::Log(e) => Kind::Log(e),
            Error::Corrupt(_) => Kind::Internal,
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

fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The actor the service's own writes (the death reviews) are recorded as.
pub const ACTOR: &str = "service:monitoring";
/// Longest source name or source record id.
pub const MAX_SOURCE_CHARS: usize = 128;
/// Longest resolution note.
pub const MAX_NOTE_CHARS: usize = 2_000;
/// Largest amount a signal may carry, fen (10^13: a hundred billion yuan).
pub const MAX_AMOUNT_FEN: i64 = 10_000_000_000_000;

/// A validated `ReportSignal` request.
#[derive(Debug, Clone)]
pub struct Signal {
    /// Reporting system.
    pub source: String,
    /// Its record id.
    pub source_id: String,
    /// The resident (never logged, never stored).
    pub id_number: IdNumber,
    /// What happened.
    pub kind: pb::SignalKind,
    /// When.
    pub occurred_on: NaiveDate,
    /// Amount in fen.
    pub amount_fen: i64,
    /// District reported.
    pub district: DistrictCode,
}

impl Signal {
    /// Validates `req` on `today` (Beijing): every field named on failure.
    pub fn parse(req: pb::ReportSignalRequest, today: NaiveDate) -> Result<Signal> {
        let pb::ReportSignalRequest {
            source,
            source_id,
            id_number,
            kind,
            occurred_on,
            amount_fen,
            district_code,
        } = req;
        check_name("source", &source, MAX_SOURCE_CHARS)?;
        check_name("source_id", &source_id, MAX_SOURCE_CHARS)?;
        let id_number =
            IdNumber::parse(&id_number).map_err(|e| invalid("id_number", e.to_string()))?;
        let kind = match pb::SignalKind::try_from(kind) {
            Ok(pb::SignalKind::Unspecified) | Err(_) => {
                return Err(invalid("kind", format!("unknown signal kind {kind}")))
            }
            Ok(k) => k,
        };
        let occurred_on = parse_date(&occurred_on)
            .ok_or_else(|| invalid("occurred_on", "must be a date YYYY-MM-DD"))?;
        if occurred_on > today {
            return Err(invalid("occurred_on", "must not be in the future"));
        }
        if !(0..=MAX_AMOUNT_FEN).contains(&amount_fen) {
            return Err(invalid(
                "amount_fen",
                format!("must be between 0 and {MAX_AMOUNT_FEN}"),
            ));
        }
        let district = DistrictCode::parse(&district_code)
            .ok_or_else(|| invalid("district_code", "not a district of the city"))?;
        Ok(Signal {
            source,
            source_id,
            id_number,
            kind,
            occurred_on,
            amount_fen,
            district,
        })
    }
}

/// How civil affairs resolved a warning.
#[derive(Debug, Clone)]
pub struct Resolution {
    /// The warning.
    pub warning_id: Uuid,
    /// Idempotency key.
    pub request_id: String,
    /// The outcome.
    pub outcome: pb::WarningOutcome,
    /// The case opened (CASE_OPENED only).
    pub case_id: Option<Uuid>,
    /// The note.
    pub note: String,
}

impl TryFrom<pb::ResolveWarningRequest> for Resolution {
    type Error = Error;

    fn try_from(req: pb::ResolveWarningRequest) -> Result<Self> {
        let pb::ResolveWarningRequest {
            warning_id,
            request_id,
            outcome,
            case_id,
            note,
        } = req;
        let warning_id =
            Uuid::parse_str(&warning_id).map_err(|_| invalid("warning_id", "must be a UUID"))?;
        check_request_id("request_id", &request_id)?;
        let outcome = match pb::WarningOutcome::try_from(outcome) {
            Ok(pb::WarningOutcome::Unspecified) | Err(_) => {
                return Err(invalid("outcome", format!("unknown outcome {outcome}")))
            }
            Ok(o) => o,
        };
        let case_id = match (outcome, case_id.is_empty()) {
            (pb::WarningOutcome::CaseOpened, true) => {
                return Err(invalid("case_id", "required with CASE_OPENED"))
            }
            (pb::WarningOutcome::CaseOpened, false) => {
                Some(Uuid::parse_str(&case_id).map_err(|_| invalid("case_id", "must be a UUID"))?)
            }
            (_, true) => None,
            (_, false) => return Err(invalid("case_id", "only with CASE_OPENED")),
        };
        check_text("note", &note, MAX_NOTE_CHARS, TextKind::Paragraph)?;
        Ok(Resolution {
            warning_id,
            request_id,
            outcome,
            case_id,
            note,
        })
    }
}

/// What `ListWarnings` asks for.
#[derive(Debug, Clone, Default)]
pub struct WarningQuery {
    /// Only open warnings.
    pub open_only: bool,
    /// Only open warnings past their deadline.
    pub overdue_only: bool,
    /// Admins: only this district's.
    pub district: Option<DistrictCode>,
}

/// The monitoring service's core.
#[derive(Debug, Clone)]
pub struct Monitoring {
    log: Arc<dyn EventLog>,
    persons: Arc<PersonIndex>,
    warnings: Arc<Warnings>,
    statistics: Arc<Statistics>,
    policies: Arc<PolicyBook>,
    catalogue: Arc<Catalogue>,
    clock: Arc<dyn Clock>,
    access: Access,
}

/// What the household of the person looks like to the thresholds.
struct Household {
    /// Where the warning goes.
    district: DistrictCode,
    /// Cases naming the person, oldest first.
    case_ids: Vec<Uuid>,
    /// Monthly income of the household of the latest case (fen); `None` when no case
    /// names the person.
    monthly_income_fen: Option<i64>,
}

impl Monitoring {
    /// A service over `log`, finding people through `persons`, listing warnings from
    /// `warnings` and counting from `statistics`.
    pub fn new(
        log: Arc<dyn EventLog>,
        persons: Arc<PersonIndex>,
        warnings: Arc<Warnings>,
        statistics: Arc<Statistics>,
        policies: Arc<PolicyBook>,
    ) -> Self {
        let access = Access::new(Arc::clone(&log));
        Monitoring {
            log,
            persons,
            warnings,
            statistics,
            policies,
            catalogue: Arc::new(Catalogue::embedded()),
            clock: Arc::new(SystemClock),
            access,
        }
    }

    /// Gives review referrals their deadline from `catalogue`.
    pub fn with_catalogue(mut self, catalogue: Arc<Catalogue>) -> Self {
        self.catalogue = catalogue;
        self
    }

    /// Reads the time from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Records reads through `access`.
    pub fn with_access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// Records a signal (department and service principals) and raises its warning and,
    /// for a death, the household's reviews. A retry answers the same; the same source
    /// record with other content is refused.
    pub async fn report_signal(
        &self,
        principal: &Principal,
        signal: Signal,
    ) -> Result<pb::ReportSignalResponse> {
        if !matches!(
            principal,
            Principal::Department { .. } | Principal::Service { .. }
        ) {
            return Err(denied(principal, "report signals", Subject::Nothing).into());
        }
        let signal_id = ids::signal_stream(&signal.source, &signal.source_id);
        let person = self.persons.key().hash(&signal.id_number).to_vec();
        let now = self.clock.now();
        let report = match load_signal(self.log.as_ref(), signal_id).await? {
            Some((_, stored, warning)) => {
                same_signal(&stored, &signal, &person)?;
                (stored, warning)
            }
            None => {
                self.record(principal, &signal, signal_id, person, now)
                    .await?
            }
        };
        let (stored, warning) = report;
        let mut review_referral_ids = Vec::new();
        if signal.kind == pb::SignalKind::Death {
            for case_id in &stored.case_ids {
                let Ok(case_id) = Uuid::parse_str(case_id) else {
                    continue;
                };
                review_referral_ids.extend(self.death_review(signal_id, case_id, now).await?);
            }
        }
        Ok(pb::ReportSignalResponse {
            signal_id: signal_id.to_string(),
            warning,
            review_referral_ids,
        })
    }

    /// Writes the signal (and its warning), once.
    async fn record(
        &self,
        principal: &Principal,
        signal: &Signal,
        signal_id: Uuid,
        person: Vec<u8>,
        now: DateTime<Utc>,
    ) -> Result<(pb::SignalReported, Option<pb::Warning>)> {
        let household = self.household(&person, signal.district).await?;
        let report = pb::SignalReported {
            source: signal.source.clone(),
            source_id: signal.source_id.clone(),
            person,
            kind: signal.kind as i32,
            occurred_on: format_date(signal.occurred_on),
            amount_fen: signal.amount_fen,
            // The signal's own district; the warning goes to the household's.
            district_code: signal.district.code().to_owned(),
            case_ids: household.case_ids.iter().map(Uuid::to_string).collect(),
            reported_by: principal.actor(),
        };
        let policy = self
            .policies
            .in_force(beijing_date(now))
            .or_else(|| self.policies.versions().last())
            .ok_or_else(|| Error::FailedPrecondition("no policy version is loaded".into()))?;
        let warning = threshold(signal, household.monthly_income_fen, policy).map(|reason| {
            let district = household.district;
            pb::Warning {
                warning_id: signal_id.to_string(),
                kind: signal.kind as i32,
                source: signal.source.clone(),
                source_id: signal.source_id.clone(),
                occurred_on: report.occurred_on.clone(),
                amount_fen: signal.amount_fen,
                unit: format!("{}@{}", Department::CivilAffairs, district),
                district_code: district.code().to_owned(),
                case_ids: report.case_ids.clone(),
                reason,
                raised_at: rfc3339(now),
                due_at: rfc3339(now + TimeDelta::days(policy.params().warning_days)),
                state: pb::WarningState::Open as i32,
                ..Default::default()
            }
        });
        let mut events = vec![NewEvent::new(
            SIGNAL_REPORTED,
            principal.actor(),
            report.encode_to_vec(),
        )];
        if let Some(w) = &warning {
            events.push(NewEvent::new(
                WARNING_RAISED,
                principal.actor(),
                encode_warning(w),
            ));
        }
        match self
            .log
            .append(
                signal_id,
                Expected::NoStream,
                events,
                ids::signal_commit(signal_id),
            )
            .await
        {
            Ok(a) if !a.deduplicated => {
                tracing::info!(signal = %signal_id, kind = signal.kind.as_str_name(), warning = warning.is_some(), cases = report.case_ids.len(), "signal reported");
                Ok((report, warning))
            }
            // Written meanwhile by a concurrent report of the same source record: answer
            // what is stored, if it is the same signal.
            Ok(_) | Err(onecity_eventlog::Error::Conflict { .. }) => {
                let Some((_, stored, warning)) = load_signal(self.log.as_ref(), signal_id).await?
                else {
                    return Err(Error::FailedPrecondition(format!(
                        "signal {signal_id} could not be read back"
                    )));
                };
                same_signal(&stored, signal, &report.person)?;
                Ok((stored, warning))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The household of `person` as the index and its latest case know it.
    async fn household(&self, person: &[u8], reported: DistrictCode) -> Result<Household> {
        let Ok(hash) = <[u8; 32]>::try_from(person) else {
            return Ok(Household {
                district: reported,
                case_ids: Vec::new(),
                monthly_income_fen: None,
            });
        };
        let cases = self.persons.cases_of(&hash);
        let case_ids: Vec<Uuid> = cases.iter().map(|c| c.case.case_id).collect();
        // The open case if there is one, else the latest: the household as last declared.
        let Some(latest) = cases
            .iter()
            .rev()
            .find(|c| c.case.status == CaseStatus::Open)
            .or_else(|| cases.last())
        else {
            return Ok(Household {
                district: reported,
                case_ids,
                monthly_income_fen: None,
            });
        };
        let district = DistrictCode::parse(&latest.case.district_code).unwrap_or(reported);
        let state = load_case(self.log.as_ref(), latest.case.case_id).await?;
        // As the household now stands: the latest amendment's, else the submission's.
        let monthly_income_fen = state.application().map(|a| {
            a.members
                .iter()
                .map(|m| m.monthly_income_fen.max(0))
                .sum::<i64>()
        });
        Ok(Household {
            district,
            case_ids,
            monthly_income_fen,
        })
    }

    /// Asks for the review of every approved recognition of `case_id` still in force, with
    /// the re-verification's review referral (once per signal and case); the review
    /// referral ids.
    async fn death_review(
        &self,
        signal_id: Uuid,
        case_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        let log = self.log.as_ref();
        let commit_id = ids::death_review_commit(signal_id, case_id);
        let catalogue = &self.catalogue;
        let outcome = append_with_retries(log, case_id, |_| async move {
            let state = load_case(log, case_id).await?;
            let mut events = Vec::new();
            let mut reviews = Vec::new();
            for r in &state.referrals {
                let Some(approved) = state.review_due(&r.referral_id) else {
                    continue;
                };
                let [due, review] =
                    onecity_handoff::review_events(catalogue, case_id, approved, now);
                let due = match due {
                    CaseEvent::ReverificationDue(mut d) => {
                        d.cause = "death of a member reported".into();
                        d.signal_id = signal_id.to_string();
                        CaseEvent::ReverificationDue(d)
                    }
                    other => other,
                };
                if let Some(r) = review.referral() {
                    reviews.push(r.referral_id.clone());
                }
                events.push(due);
                events.push(review);
            }
            if events.is_empty() {
                return Ok::<_, Error>(Step::Done(Vec::<String>::new()));
            }
            Ok(Step::Append(
                Commit {
                    version: state.version,
                    events: events
                        .iter()
                        .map(|e| NewEvent::new(e.event_type(), ACTOR, e.encode()))
                        .collect(),
                    commit_id,
                },
                reviews,
            ))
        })
        .await?;
        match outcome {
            Outcome::Appended(reviews, a) if !a.deduplicated => {
                tracing::info!(%case_id, signal = %signal_id, reviews = reviews.len(), "death reported, approvals put under review");
                Ok(reviews)
            }
            Outcome::Appended(..) | Outcome::Unchanged(_) => {
                // A retry: the reviews this signal asked for before, from its commit.
                let probe = NewEvent::new(SIGNAL_REPORTED, ACTOR, Vec::new());
                let Some(original) = recorded_commit(log, commit_id, probe).await? else {
                    return Ok(Vec::new());
                };
                Ok(commit_events(log, &original)
                    .await?
                    .iter()
                    .filter_map(|e| CaseEvent::decode(&e.event_type, &e.payload).ok().flatten())
                    .filter_map(|e| match e {
                        CaseEvent::ReferralIssued(r) => Some(r.referral_id),
                        _ => None,
                    })
                    .collect())
            }
        }
    }

    /// The warnings `reader` may see (civil affairs and the supervisor of a district: its
    /// own; admins: all, or one district's), oldest first. The read is recorded, naming
    /// the warnings' cases and streams, before it is answered.
    pub async fn list_warnings(
        &self,
        reader: &Reader,
        query: WarningQuery,
    ) -> Result<Vec<pb::Warning>> {
        let principal = &reader.principal;
        let district = match principal {
            Principal::Department { unit } if unit.department == Department::CivilAffairs => {
                Some(unit.district)
            }
            Principal::Supervisor { district } => Some(*district),
            Principal::Admin { .. } => query.district,
            _ => return Err(denied(principal, "list warnings", Subject::Nothing).into()),
        };
        let now = rfc3339(self.clock.now());
        let open = pb::WarningState::Open as i32;
        let shown: Vec<pb::Warning> = self
            .warnings
            .all()
            .into_iter()
            .filter(|w| district.is_none_or(|d| w.district_code == d.code()))
            .filter(|w| !query.open_only || w.state == open)
            // RFC 3339 UTC instants written by one formatter compare as text.
            .filter(|w| !query.overdue_only || (w.state == open && w.due_at <= now))
            .collect();
        let mut streams: Vec<Uuid> = Vec::new();
        for w in &shown {
            streams.extend(w.case_ids.iter().filter_map(|c| Uuid::parse_str(c).ok()));
            streams.extend(Uuid::parse_str(&w.warning_id).ok());
        }
        streams.sort_unstable();
        streams.dedup();
        self.access
            .record(reader, "onecity.v1.MonitoringService/ListWarnings", streams)
            .await?;
        Ok(shown)
    }

    /// Resolves an open warning (civil affairs of its district only). A retry with the
    /// same request id answers the same resolution.
    pub async fn resolve_warning(
        &self,
        principal: &Principal,
        resolution: Resolution,
    ) -> Result<pb::Warning> {
        let Principal::Department { unit } = principal else {
            return Err(denied(principal, "resolve warnings", Subject::Nothing).into());
        };
        let warning_id = resolution.warning_id;
        let actor = principal.actor();
        if let Some(case_id) = resolution.case_id {
            match load_case(self.log.as_ref(), case_id).await {
                Ok(_) => {}
                Err(onecity_service::Error::CaseNotFound(_)) => {
                    return Err(invalid("case_id", "no such case"))
                }
                Err(e) => return Err(e.into()),
            }
        }
        let log = self.log.as_ref();
        let commit_id = ids::request_commit(&actor, &resolution.request_id);
        let now = rfc3339(self.clock.now());
        let resolution = &resolution;
        let (unit, actor, now) = (unit.to_string(), &actor, &now);
        let outcome = append_with_retries(log, warning_id, |_| {
            let unit = unit.clone();
            async move {
                let Some((version, _, Some(warning))) = load_signal(log, warning_id).await? else {
                    return Err(Error::NotFound(warning_id.to_string()));
                };
                if warning.unit != unit {
                    return Err(denied(
                        principal,
                        "resolve another unit's warnings",
                        Subject::Nothing,
                    )
                    .into());
                }
                let case_id = resolution
                    .case_id
                    .map(|c| c.to_string())
                    .unwrap_or_default();
                if warning.state == pb::WarningState::Resolved as i32 {
                    let same = warning.resolved_by == *actor
                        && warning.outcome == resolution.outcome as i32
                        && warning.resolved_case_id == case_id
                        && warning.note == resolution.note;
                    return if same {
                        Ok(Step::Done(warning))
                    } else {
                        Err(Error::FailedPrecondition(format!(
                            "warning {warning_id} is already resolved"
                        )))
                    };
                }
                let resolved = pb::Warning {
                    state: pb::WarningState::Resolved as i32,
                    outcome: resolution.outcome as i32,
                    resolved_case_id: case_id,
                    note: resolution.note.clone(),
                    resolved_by: actor.clone(),
                    resolved_at: now.clone(),
                    ..warning
                };
                Ok(Step::Append(
                    Commit {
                        version,
                        events: vec![NewEvent::new(
                            WARNING_RESOLVED,
                            actor.clone(),
                            encode_warning(&resolved),
                        )],
                        commit_id,
                    },
                    resolved,
                ))
            }
        })
        .await?;
        match outcome {
            Outcome::Appended(_, a) if a.case_id != warning_id => Err(Error::FailedPrecondition(
                "request_id was already used for another request".into(),
            )),
            Outcome::Appended(w, a) => {
                if !a.deduplicated {
                    tracing::info!(warning = %warning_id, outcome = resolution.outcome.as_str_name(), department = %unit, "warning resolved");
                }
                Ok(w)
            }
            Outcome::Unchanged(w) => Ok(w),
        }
    }
}

impl Monitoring {
    /// The statistics `principal` may read (docs/monitoring.md, "Statistics"): a
    /// supervisor its own district's, an admin any district's or every district's;
    /// everyone else is refused. Counts only, from the projection: the log is not read.
    pub fn statistics(
        &self,
        principal: &Principal,
        query: StatsQuery,
    ) -> Result<pb::GetStatisticsResponse> {
        let query = match (principal, query.district) {
            (Principal::Supervisor { district }, None) => StatsQuery {
                district: Some(*district),
                ..query
            },
            (Principal::Supervisor { district }, Some(asked)) if asked != *district => {
                return Err(denied(
                    principal,
                    "read another district's statistics",
                    Subject::Nothing,
                )
                .into())
            }
            (Principal::Supervisor { .. } | Principal::Admin { .. }, _) => query,
            _ => return Err(denied(principal, "read statistics", Subject::Nothing).into()),
        };
        let counts = self.statistics.totals(&query);
        Ok(pb::GetStatisticsResponse {
            district_code: query
                .district
                .map(|d| d.code().to_owned())
                .unwrap_or_default(),
            programme: query.programme.map_or(0, Programme::to_proto),
            from: format_date(query.from),
            to: format_date(query.to),
            referrals_issued: counts.issued,
            referrals_decided: counts.decided,
            referrals_approved: counts.approved,
            referrals_overdue: counts.overdue,
            median_days_to_decision: counts.median_days_to_decision().unwrap_or(0.0),
            warnings_raised: counts.warnings_raised,
            warnings_resolved: counts.warnings_resolved,
            reverifications_due: counts.reverifications_due,
            reverifications_done: counts.reverifications_done,
        })
    }
}

/// Refuses a report whose source record is stored with other content.
fn same_signal(stored: &pb::SignalReported, signal: &Signal, person: &[u8]) -> Result<()> {
    let same = stored.person == person
        && stored.kind == signal.kind as i32
        && stored.occurred_on == format_date(signal.occurred_on)
        && stored.amount_fen == signal.amount_fen
        && stored.district_code == signal.district.code();
    if same {
        Ok(())
    } else {
        Err(Error::FailedPrecondition(format!(
            "source record {} of {} was reported with other content",
            signal.source_id, signal.source
        )))
    }
}

/// Whether `signal` crosses its threshold under `policy` (docs/monitoring.md,
/// "Thresholds"), and why; `monthly_income_fen` is the household's, `None` for a person
/// no case names (whose need nobody has assessed, so any such signal warns).
pub fn threshold(
    signal: &Signal,
    monthly_income_fen: Option<i64>,
    policy: &PolicyVersion,
) -> Option<String> {
    let p = policy.params();
    let amount = i128::from(signal.amount_fen);
    let share = |bp: i64| format!("{}.{:02} %", bp / 100, bp % 100);
    match (signal.kind, monthly_income_fen) {
        (pb::SignalKind::MedicalExpense, Some(income)) => {
            let annual = i128::from(income) * 12;
            (amount > 0 && amount * 10_000 >= i128::from(p.catastrophic_medical_bp) * annual)
                .then(|| {
                format!(
                    "medical expense {} fen is at least {} of the household's annual income {annual} fen",
                    signal.amount_fen,
                    share(p.catastrophic_medical_bp)
                )
            })
        }
        (pb::SignalKind::IncomeDrop, Some(income)) => {
            (amount > 0
                && amount * 10_000 >= i128::from(p.income_drop_warning_bp) * i128::from(income))
                .then(
                || {
                    format!(
                        "monthly income lost {} fen is at least {} of the household's monthly income {income} fen",
                        signal.amount_fen,
                        share(p.income_drop_warning_bp)
                    )
                },
            )
        }
        (pb::SignalKind::MedicalExpense | pb::SignalKind::IncomeDrop, None) => {
            Some("no case names the person: the household's need is unknown".into())
        }
        (kind, _) => Some(format!(
            "{} always warns",
            kind.as_str_name()
                .trim_start_matches("SIGNAL_KIND_")
                .to_lowercase()
                .replace('_', " ")
        )),
    }
}
