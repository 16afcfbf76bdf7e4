//! Operating the workers: the events they quarantined, and their retry after a fix; the
//! audit of reads: who looked at a household; and what a policy version would change.
//!
//! [`Admin`] is the core of `onecity.v1.AdminService` (its gRPC face is [`grpc`]; who may
//! call it is decided in [`crate::auth`]). The quarantine records are in the log, so any
//! process lists them all; a retry needs the worker's handler, so a process retries only
//! for the workers it runs (its [`Workers`] registry).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt as _};

use onecity_eventlog::access;
use onecity_eventlog::leases::Leases;
use onecity_eventlog::quarantine::{self, Failure, Quarantined, Redo};
use onecity_eventlog::EventLog;
use onecity_intake::{ConsumerLag, Gauge};

pub mod grpc;

/// How often a running impact report says how far it is.
pub const IMPACT_PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// One message of a running impact report ([`Admin::policy_impact`]).
#[derive(Debug, Clone)]
pub enum ImpactUpdate {
    /// How far it is.
    Progress(onecity_assessment::ImpactProgress),
    /// The report; the last message.
    Done(onecity_assessment::Impact),
}

/// The handlers of the workers this process runs, by consumer (checkpoint) name.
pub type Workers = BTreeMap<String, Arc<dyn Redo>>;

/// Why an admin operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing is quarantined where the caller said.
    #[error("{0}")]
    NotFound(String),
    /// The request is ambiguous or malformed.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Request field at fault.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The operation cannot be done here or now (the worker is elsewhere, or fails again).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The log or the handler failed transiently.
    #[error(transparent)]
    Log(#[from] onecity_eventlog::Error),
    /// The policy impact report failed.
    #[error(transparent)]
    Assessment(#[from] onecity_assessment::Error),
    /// The handler failed transiently.
    #[error("{0}")]
    Unavailable(String),
}

/// Whose access records to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessSubject {
    /// Reads of this case's data.
    Case(uuid::Uuid),
    /// Reads by this principal, as recorded for actors.
    Principal(String),
}

/// A query of access records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessQuery {
    /// Whose.
    pub subject: AccessSubject,
    /// When.
    pub window: access::Window,
    /// Most records (0 means 1,000).
    pub limit: usize,
}

/// The routing lag of one worker checkpoint, and who works its partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingLag {
    /// Checkpoint, head and lag.
    pub lag: ConsumerLag,
    /// The instance holding the partition's lease, when one does and it is known here.
    pub holder: Option<String>,
}

/// What the routing lag is measured over: the routing workers' checkpoints, and the
/// leases their instances share the partitions through.
#[derive(Debug)]
struct Routing {
    gauge: Gauge,
    leases: Arc<dyn Leases>,
    /// The lease groups (worker roles) the watched checkpoints belong to.
    groups: Vec<String>,
}

/// The admin operations.
#[derive(Clone)]
pub struct Admin {
    log: Arc<dyn EventLog>,
    workers: Arc<Workers>,
    routing: Option<Arc<Routing>>,
    impact: Option<onecity_assessment::PolicySweeper>,
    /// Cancelled when the server stops: ends a running impact report.
    stop: tokio_util::sync::CancellationToken,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("workers", &self.workers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Admin {
    /// Admin over `log`, retrying with `workers`.
    pub fn new(log: Arc<dyn EventLog>, workers: Workers) -> Self {
        Admin {
            log,
            workers: Arc::new(workers),
            routing: None,
            impact: None,
            stop: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Ends a running impact report with `UNAVAILABLE` once `stop` is cancelled (the
    /// server stopping: a graceful shutdown waits for every open stream).
    pub fn with_stop(mut self, stop: tokio_util::sync::CancellationToken) -> Self {
        self.stop = stop;
        self
    }

    /// Answers [`Admin::policy_impact`] with `sweeper` (the eligibility role's); without
    /// it the report is refused as not run here.
    pub fn with_policy_impact(
        mut self,
        sweeper: Option<onecity_assessment::PolicySweeper>,
    ) -> Self {
        self.impact = sweeper;
        self
    }

    /// What policy version `version_id` would change if it took effect now, writing
    /// nothing (see `onecity_assessment::PolicySweeper::impact`), as it goes: progress
    /// about every [`IMPACT_PROGRESS_EVERY`], then the report. At city scale it reads every
    /// active case, which takes longer than a unary call may; the stream has no such
    /// limit, and dropping it stops the report. Bad input, a version the file lacks and a
    /// process without the eligibility role are refused before anything runs.
    pub fn policy_impact(
        &self,
        version_id: &str,
    ) -> Result<BoxStream<'static, Result<ImpactUpdate, Error>>, Error> {
        if version_id.is_empty() {
            return Err(Error::Invalid {
                field: "version_id",
                reason: "is required".into(),
            });
        }
        let sweeper = self.impact.clone().ok_or_else(|| {
            Error::FailedPrecondition(
                "the eligibility role does not run in this process: ask a process that runs it"
                    .into(),
            )
        })?;
        sweeper.check_version(version_id)?;
        let version = version_id.to_owned();
        let stop = self.stop.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            let (progress, gone) = (tx.clone(), tx.clone());
            let mut last: Option<std::time::Instant> = None;
            let run = sweeper.impact_with(&version, move |p| {
                // The first, then one per period: a slow reader loses progress, never the
                // report.
                if last.is_none_or(|t| t.elapsed() >= IMPACT_PROGRESS_EVERY) {
                    last = Some(std::time::Instant::now());
                    let _ = progress.try_send(Ok(ImpactUpdate::Progress(p)));
                }
            });
            tokio::select! {
                report = run => {
                    let _ = tx.send(report.map(ImpactUpdate::Done).map_err(Error::from)).await;
                }
                // The caller went away: stop reading cases for nobody.
                () = gone.closed() => {}
                () = stop.cancelled() => {
                    let stopping = Error::Unavailable("the server is stopping: ask again".into());
                    let _ = tx.send(Err(stopping)).await;
                }
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
    }

    /// Reports the routing lag of the checkpoints `gauge` watches, with the holders of
    /// their partitions' leases in `groups` of `leases`.
    pub fn with_routing(
        mut self,
        gauge: Gauge,
        leases: Arc<dyn Leases>,
        groups: Vec<String>,
    ) -> Self {
        self.routing = Some(Arc::new(Routing {
            gauge,
            leases,
            groups,
        }));
        self
    }

    /// The routing lag of every watched worker checkpoint, by consumer name.
    pub async fn routing_lag(&self) -> Result<Vec<RoutingLag>, Error> {
        let Some(routing) = &self.routing else {
            return Ok(Vec::new());
        };
        let mut holders = BTreeMap::new();
        for group in &routing.groups {
            for h in routing.leases.holders(group).await? {
                holders.insert(h.name, h.holder);
            }
        }
        let mut lags: Vec<RoutingLag> = routing
            .gauge
            .report(self.log.as_ref())
            .await?
            .into_iter()
            .map(|lag| RoutingLag {
                holder: holders.get(&lag.consumer).cloned(),
                lag,
            })
            .collect();
        lags.sort_by(|a, b| a.lag.consumer.cmp(&b.lag.consumer));
        Ok(lags)
    }

    /// Every event quarantined and not released since.
    pub async fn quarantined(&self) -> Result<Vec<Quarantined>, Error> {
        Ok(quarantine::list(self.log.as_ref()).await?)
    }

    /// The recorded reads the query selects, oldest first.
    pub async fn access(&self, query: AccessQuery) -> Result<Vec<access::AccessRecord>, Error> {
        let AccessQuery {
            subject,
            window,
            limit,
        } = query;
        let limit = onecity_eventlog::clamp_limit(limit);
        let log = self.log.as_ref();
        Ok(match subject {
            AccessSubject::Case(case_id) => access::by_case(log, case_id, window, limit).await?,
            AccessSubject::Principal(p) => access::by_principal(log, &p, window, limit).await?,
        })
    }

    /// Retries the event quarantined at `position` by `consumer` (or by the one worker
    /// that quarantined it) and returns that worker's name once it is released.
    pub async fn retry(&self, position: u64, consumer: Option<&str>) -> Result<String, Error> {
        let listed = self.quarantined().await?;
        let mut at: Vec<&Quarantined> = listed
            .iter()
            .filter(|q| q.position == position && consumer.is_none_or(|c| q.consumer == c))
            .collect();
        let found = match (at.pop(), at.is_empty()) {
            (None, _) => {
                return Err(Error::NotFound(format!(
                    "no event quarantined at position {position}{}",
                    consumer.map(|c| format!(" by {c}")).unwrap_or_default()
                )))
            }
            (Some(q), true) => q,
            (Some(_), false) => {
                return Err(Error::Invalid {
                    field: "consumer",
                    reason: format!("several workers quarantined position {position}: name one"),
                })
            }
        };
        let handler = self.workers.get(&found.consumer).ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "worker {} does not run in this process: retry against a process that runs it",
                found.consumer
            ))
        })?;
        quarantine::retry(
            self.log.as_ref(),
            &found.consumer,
            handler.as_ref(),
            position,
        )
        .await
        .map_err(|e| match e {
            Failure::Poison(_) => Error::FailedPrecondition(format!(
                "event at position {position} {e}; it stays quarantined"
            )),
            Failure::Transient(_) => Error::Unavailable(e.to_string()),
        })?;
        Ok(found.consumer.clone())
    }
}
