//! Intake backpressure: refuse new cases while the routing workers are far behind.
//!
//! A case costs the workers several times what it costs intake, so without a bound
//! intake accepts cases for minutes that nobody routes (docs/performance.md). The
//! routing lag is measured per watched worker checkpoint as the number of log events
//! from the oldest event that worker has not handled yet to the log's head, and intake
//! refuses while the largest of them is over [`Backpressure::max_lag`].
//!
//! Measuring is cheap on purpose, since it sits on every submission: one measurement
//! (the head and the watched checkpoints) is reused for [`LAG_REFRESH`], and the log is
//! read only when `head - checkpoint` is over the bound. Then intake looks for the oldest
//! unhandled event itself, because a checkpoint only moves when its worker handles an
//! event: after a quiet spell of department decisions the head can be far past an idle
//! worker's checkpoint with nothing left to route, and refusing then would never end.

use std::time::Duration;

use onecity_eventlog::EventLog;
use tokio::time::Instant;

/// The default of [`Backpressure::max_lag`]: a couple of thousand cases waiting (a routed
/// case writes about five events), short enough that a refused terminal's retry soon gets
/// through (docs/performance.md measures how soon).
pub const DEFAULT_MAX_ROUTING_LAG: u64 = 10_000;

/// How long one measurement of the lag is reused.
pub const LAG_REFRESH: Duration = Duration::from_millis(5);

/// Most events read at once while looking for a worker's oldest unhandled event.
const MAX_SCAN_PAGE: u64 = 1_024;

/// A worker checkpoint intake watches, and the events that worker handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    /// The checkpoint's consumer name, e.g. `assessment` or `handoff-1of2`.
    pub consumer: String,
    /// Prefix of the event types the consumer follows, e.g. `onecity.v1.ApplicationSubmitted`.
    pub event_type: String,
}

/// When intake refuses new cases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backpressure {
    /// Largest routing lag, in log events, at which intake still accepts new cases; 0
    /// turns the bound off.
    pub max_lag: u64,
    /// The workers whose lag counts (every partition of every routing role).
    pub watched: Vec<Watched>,
}

/// Where the oldest unhandled event of one watched worker was last found.
#[derive(Debug, Clone, Copy, Default)]
struct Scan {
    /// Checkpoint the scan started from; no event of the worker's type is in
    /// `(from, clean_to]`.
    from: u64,
    clean_to: u64,
    /// The event of the worker's type right after `clean_to`, once found.
    pending: Option<u64>,
}

/// The routing lag of one watched worker checkpoint, as last measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerLag {
    /// The checkpoint's consumer name, e.g. `handoff-2of2`.
    pub consumer: String,
    /// The position the worker has handled up to.
    pub checkpoint: u64,
    /// The log's head when measured.
    pub head: u64,
    /// Events from the oldest event the worker has not handled yet to the head (0: it
    /// has nothing to do, however far the head is past its checkpoint).
    pub lag: u64,
}

#[derive(Debug)]
struct State {
    /// When the lag was last measured, and its largest one.
    measured: Option<(Instant, Option<ConsumerLag>)>,
    scans: Vec<Scan>,
    /// Whether the last measurement was over the bound (logged when it changes).
    refusing: bool,
}

/// The routing lag of the watched workers. Intake's bound measures at most every
/// [`LAG_REFRESH`]; the scans for unhandled events are remembered, so measuring again
/// reads only what was appended since.
#[derive(Debug)]
pub struct Gauge {
    config: Backpressure,
    /// Held across the log reads, so concurrent submissions share one measurement.
    state: tokio::sync::Mutex<State>,
}

impl Gauge {
    /// A gauge of the workers `config` watches.
    pub fn new(config: Backpressure) -> Self {
        let scans = vec![Scan::default(); config.watched.len()];
        Gauge {
            config,
            state: tokio::sync::Mutex::new(State {
                measured: None,
                scans,
                refusing: false,
            }),
        }
    }

    pub(crate) fn max_lag(&self) -> u64 {
        self.config.max_lag
    }

    /// The worker furthest behind when its lag is over the bound, `None` when intake may
    /// accept.
    pub(crate) async fn over(
        &self,
        log: &dyn EventLog,
    ) -> onecity_eventlog::Result<Option<ConsumerLag>> {
        if self.config.max_lag == 0 || self.config.watched.is_empty() {
            return Ok(None);
        }
        let worst = self.worst(log).await?;
        Ok(worst.filter(|w| w.lag > self.config.max_lag))
    }

    /// The lag of every watched worker, measured now. Unlike the bound's measurement,
    /// every checkpoint behind the head is scanned for its oldest unhandled event, so
    /// the lag of an idle worker is 0.
    pub async fn report(&self, log: &dyn EventLog) -> onecity_eventlog::Result<Vec<ConsumerLag>> {
        let mut state = self.state.lock().await;
        measure(&self.config.watched, &mut state.scans, log, 0).await
    }

    async fn worst(&self, log: &dyn EventLog) -> onecity_eventlog::Result<Option<ConsumerLag>> {
        let mut state = self.state.lock().await;
        if let Some((at, worst)) = &state.measured {
            if at.elapsed() < LAG_REFRESH {
                return Ok(worst.clone());
            }
        }
        let lags = measure(
            &self.config.watched,
            &mut state.scans,
            log,
            self.config.max_lag,
        )
        .await?;
        let worst = lags.into_iter().max_by_key(|l| l.lag);
        state.measured = Some((Instant::now(), worst.clone()));
        let Some(worst) = worst else { return Ok(None) };
        let refusing = worst.lag > self.config.max_lag;
        if refusing != state.refusing {
            state.refusing = refusing;
            if refusing {
                tracing::warn!(
                    consumer = %worst.consumer,
                    lag = worst.lag,
                    max_lag = self.config.max_lag,
                    "routing is behind, refusing new cases"
                );
            } else {
                tracing::info!(
                    lag = worst.lag,
                    max_lag = self.config.max_lag,
                    "routing caught up, accepting new cases"
                );
            }
        }
        Ok(Some(worst))
    }
}

/// The lag of every `watched` worker. A checkpoint at most `exact_over` behind the head
/// counts as that far behind (cheap, and an upper bound); one further behind is scanned
/// for its oldest unhandled event.
async fn measure(
    watched: &[Watched],
    scans: &mut [Scan],
    log: &dyn EventLog,
    exact_over: u64,
) -> onecity_eventlog::Result<Vec<ConsumerLag>> {
    let head = log.head().await?;
    let mut lags = Vec::with_capacity(watched.len());
    for (watched, scan) in watched.iter().zip(scans.iter_mut()) {
        let checkpoint = log.load_checkpoint(&watched.consumer).await?;
        let behind = head.saturating_sub(checkpoint);
        let lag = if behind <= exact_over {
            behind
        } else {
            unhandled_lag(log, scan, &watched.event_type, checkpoint, head).await?
        };
        lags.push(ConsumerLag {
            consumer: watched.consumer.clone(),
            checkpoint,
            head,
            lag,
        });
    }
    Ok(lags)
}

/// Events from the oldest event of `event_type` after `checkpoint` to `head` (0 when
/// there is none), resuming the previous scan where it still holds.
async fn unhandled_lag(
    log: &dyn EventLog,
    scan: &mut Scan,
    event_type: &str,
    checkpoint: u64,
    head: u64,
) -> onecity_eventlog::Result<u64> {
    if checkpoint < scan.from {
        // The checkpoint went back (rewound by an operator): what was learnt is moot.
        *scan = Scan {
            from: checkpoint,
            clean_to: checkpoint,
            pending: None,
        };
    }
    if let Some(p) = scan.pending {
        if p > checkpoint {
            return Ok(head.saturating_sub(p) + 1);
        }
        scan.pending = None;
    }
    let mut next = scan.clean_to.max(checkpoint) + 1;
    // The first event after a busy worker's checkpoint is usually its next one: start
    // with a small page and grow it only across events the worker does not follow.
    let mut page = 8;
    while next <= head {
        let n = (head - next + 1).min(page);
        let events = log.read_all(next, n as usize).await?;
        if events.is_empty() {
            break;
        }
        for e in &events {
            if e.event_type.starts_with(event_type) {
                scan.clean_to = e.position - 1;
                scan.pending = Some(e.position);
                return Ok(head.saturating_sub(e.position) + 1);
            }
            scan.clean_to = e.position;
        }
        next = scan.clean_to + 1;
        page = (page * 4).min(MAX_SCAN_PAGE);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use onecity_eventlog::{Expected, NewEvent};
    use onecity_eventlog_sled::{SledConfig, SledLog};
    use uuid::Uuid;

    const WATCHED: &str = "onecity.v1.ApplicationSubmitted";

    async fn append(log: &SledLog, event_type: &str, n: usize) -> u64 {
        let mut last = 0;
        for _ in 0..n {
            let e = NewEvent::new(event_type, "test", vec![0]);
            last = log
                .append(Uuid::now_v7(), Expected::Any, vec![e], Uuid::now_v7())
                .await
                .unwrap()
                .last_position;
        }
        last
    }

    fn gauge(max_lag: u64) -> Gauge {
        Gauge::new(Backpressure {
            max_lag,
            watched: vec![Watched {
                consumer: "assessment".into(),
                event_type: WATCHED.into(),
            }],
        })
    }

    /// An idle worker whose checkpoint is far behind the head only because of events it
    /// does not follow is not a backlog; one unhandled event of its type is.
    #[tokio::test]
    async fn only_unhandled_events_of_the_worker_count() {
        let dir = tempfile::tempdir().unwrap();
        let log = SledLog::open(dir.path(), SledConfig::default()).unwrap();
        let handled = append(&log, WATCHED, 1).await;
        log.save_checkpoint("assessment", handled).await.unwrap();
        append(&log, "onecity.v1.ReferralDecided", 30).await;
        assert_eq!(gauge(10).over(&log).await.unwrap(), None);
        let report = gauge(10).report(&log).await.unwrap();
        assert_eq!(report.len(), 1);
        assert_eq!((report[0].checkpoint, report[0].lag), (handled, 0));

        let pending = append(&log, WATCHED, 1).await;
        let head = append(&log, "onecity.v1.ReferralDecided", 12).await;
        assert_eq!(head - pending + 1, 13);
        let g = gauge(10);
        let worst = g.over(&log).await.unwrap().expect("over the bound");
        assert_eq!((worst.consumer.as_str(), worst.lag), ("assessment", 13));
        assert_eq!(g.report(&log).await.unwrap()[0].lag, 13);
        // Bounds at or above the lag accept.
        assert_eq!(gauge(13).over(&log).await.unwrap(), None);
        assert_eq!(gauge(0).over(&log).await.unwrap(), None);
    }

    /// A worker with nothing saved yet counts from the start of the log.
    #[tokio::test]
    async fn a_worker_that_never_saved_counts_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let log = SledLog::open(dir.path(), SledConfig::default()).unwrap();
        append(&log, WATCHED, 3).await;
        assert_eq!(gauge(2).over(&log).await.unwrap().map(|w| w.lag), Some(3));
        assert_eq!(gauge(3).over(&log).await.unwrap(), None);
    }
}
