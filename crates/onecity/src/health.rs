//! Health that tells the truth: every service this process serves, and the overall `""`,
//! report `NOT_SERVING` until the log is open (start-up waits for it), while the log
//! refuses writes, while one of the process's worker
//! tasks is not running, and from the start of shutdown.
//!
//! [`Vitals`] holds those three facts and pushes the resulting status to the
//! `grpc.health.v1` reporter whenever it changes. [`WatchedLog`] is the log the services
//! get: it observes append results (a storage failure marks the log failing until an
//! append succeeds again) and every answer's reach (an unreachable log makes the process
//! not serving until a probe of it succeeds). [`supervise`] runs a worker task and restarts it with backoff
//! when it ends without a shutdown (a panic is logged), the process being unhealthy
//! until it runs again.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use onecity_eventlog::retry::Backoff;
use onecity_eventlog::{
    Appended, EventLog, EventStream, Expected, Filter, NewEvent, RecordedEvent, Result,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use uuid::Uuid;

/// What the process's health is made of; cheap to clone (one shared state).
#[derive(Debug, Clone)]
pub struct Vitals(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    reporter: HealthReporter,
    /// The service names reported, `""` (the whole server) first.
    names: Mutex<Vec<String>>,
    log_failing: AtomicBool,
    /// The log is not open yet (start-up waits for it).
    waiting_for_log: AtomicBool,
    /// The open log answered `Unavailable` (no server reachable) and has not answered
    /// since; a probe asks it until it does.
    log_unreachable: AtomicBool,
    /// Whether that probe runs.
    probing: AtomicBool,
    workers_down: AtomicUsize,
    stopping: AtomicBool,
    /// Serialises pushes, so two changes racing cannot leave an older status last; holds
    /// the status last pushed.
    pushed: tokio::sync::Mutex<Option<ServingStatus>>,
}

impl Vitals {
    /// Vitals reporting to `reporter`, for the whole server (`""`) at first.
    pub fn new(reporter: HealthReporter) -> Self {
        Vitals(Arc::new(Inner {
            reporter,
            names: Mutex::new(vec![String::new()]),
            log_failing: AtomicBool::new(false),
            waiting_for_log: AtomicBool::new(false),
            log_unreachable: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            workers_down: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            pushed: tokio::sync::Mutex::new(None),
        }))
    }

    /// Reports the health of the service `name` (a gRPC service's full name) as well.
    pub async fn serve(&self, name: &str) {
        self.names().push(name.to_owned());
        let status = self.status();
        let mut pushed = self.0.pushed.lock().await;
        let names = self.names().clone();
        for name in names {
            self.0.reporter.set_service_status(name, status).await;
        }
        *pushed = Some(status);
    }

    /// Whether everything this process does is working.
    pub fn serving(&self) -> bool {
        !self.0.log_failing.load(Ordering::SeqCst)
            && !self.0.waiting_for_log.load(Ordering::SeqCst)
            && !self.0.log_unreachable.load(Ordering::SeqCst)
            && self.0.workers_down.load(Ordering::SeqCst) == 0
            && !self.0.stopping.load(Ordering::SeqCst)
    }

    /// Marks the start of shutdown: not serving from now on.
    pub async fn stopping(&self) {
        self.0.stopping.store(true, Ordering::SeqCst);
        self.push().await;
    }

    /// Marks whether the process still waits for its log to open: not serving meanwhile.
    pub async fn waiting_for_log(&self, waiting: bool) {
        self.0.waiting_for_log.store(waiting, Ordering::SeqCst);
        self.push().await;
    }

    async fn log_unreachable(&self, unreachable: bool) {
        if self.0.log_unreachable.swap(unreachable, Ordering::SeqCst) != unreachable {
            if unreachable {
                tracing::error!("the event log is not reachable, not serving until it answers");
            } else {
                tracing::info!("the event log answers again");
            }
            self.push().await;
        }
    }

    async fn log_failing(&self, failing: bool) {
        if self.0.log_failing.swap(failing, Ordering::SeqCst) != failing {
            if failing {
                tracing::error!("the event log refuses writes, not serving");
            } else {
                tracing::info!("the event log accepts writes again");
            }
            self.push().await;
        }
    }

    async fn worker_down(&self) {
        self.0.workers_down.fetch_add(1, Ordering::SeqCst);
        self.push().await;
    }

    async fn worker_up(&self) {
        self.0.workers_down.fetch_sub(1, Ordering::SeqCst);
        self.push().await;
    }

    fn status(&self) -> ServingStatus {
        if self.serving() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    }

    fn names(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.0.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pushes the current status to every name, if it changed.
    async fn push(&self) {
        let mut pushed = self.0.pushed.lock().await;
        // Read under the lock: the last push is always of the latest state.
        let status = self.status();
        if *pushed == Some(status) {
            return;
        }
        let names = self.names().clone();
        for name in names {
            self.0.reporter.set_service_status(name, status).await;
        }
        *pushed = Some(status);
    }
}

/// The log as the services see it, observed: an append failing with
/// [`Error::Storage`](onecity_eventlog::Error::Storage) marks the log failing, the next
/// append that succeeds marks it working again. Everything else is passed through.
#[derive(Debug)]
pub struct WatchedLog {
    inner: Arc<dyn EventLog>,
    vitals: Vitals,
}

impl WatchedLog {
    /// `inner`, reporting its write failures to `vitals`.
    pub fn new(inner: Arc<dyn EventLog>, vitals: Vitals) -> Self {
        WatchedLog { inner, vitals }
    }

    /// Notes what an answer of the log says about its reach: `Unavailable` (no server
    /// reachable: a JetStream cluster down, the log process gone) makes the process not
    /// serving and starts a probe; any answer clears it. A process whose log is
    /// unreachable gets no traffic, so the probe (the log's head, with backoff) is what
    /// notices that it is back.
    async fn observe<T>(&self, result: &Result<T>) {
        let unreachable = matches!(result, Err(onecity_eventlog::Error::Unavailable(_)));
        if !unreachable {
            // One atomic load on the hot path; the state changes only on a transition.
            if self.vitals.0.log_unreachable.load(Ordering::Relaxed) {
                self.vitals.log_unreachable(false).await;
            }
            return;
        }
        if self.vitals.0.stopping.load(Ordering::SeqCst) {
            return;
        }
        self.vitals.log_unreachable(true).await;
        if self.vitals.0.probing.swap(true, Ordering::SeqCst) {
            return;
        }
        let (log, vitals) = (Arc::clone(&self.inner), self.vitals.clone());
        tokio::spawn(async move {
            let mut delays = Backoff::new();
            while vitals.0.log_unreachable.load(Ordering::SeqCst)
                && !vitals.0.stopping.load(Ordering::SeqCst)
            {
                tokio::time::sleep(delays.next_delay()).await;
                if log.head().await.is_ok() {
                    vitals.log_unreachable(false).await;
                }
            }
            vitals.0.probing.store(false, Ordering::SeqCst);
        });
    }
}

#[async_trait::async_trait]
impl EventLog for WatchedLog {
    async fn append_as(
        &self,
        appended_by: &str,
        case_id: Uuid,
        expected: Expected,
        events: Vec<NewEvent>,
        commit_id: Uuid,
    ) -> Result<Appended> {
        let result = self
            .inner
            .append_as(appended_by, case_id, expected, events, commit_id)
            .await;
        match &result {
            Ok(_) => {
                // One atomic load on the hot path; the state changes only on a transition.
                if self.vitals.0.log_failing.load(Ordering::Relaxed) {
                    self.vitals.log_failing(false).await;
                }
            }
            Err(onecity_eventlog::Error::Storage(_)) => self.vitals.log_failing(true).await,
            Err(_) => {}
        }
        self.observe(&result).await;
        result
    }

    async fn read_case(
        &self,
        case_id: Uuid,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let r = self.inner.read_case(case_id, from_version, limit).await;
        self.observe(&r).await;
        r
    }

    async fn read_all(&self, from_position: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        let r = self.inner.read_all(from_position, limit).await;
        self.observe(&r).await;
        r
    }

    async fn subscribe(&self, from_position: u64, filter: Filter) -> Result<EventStream> {
        self.inner.subscribe(from_position, filter).await
    }

    async fn subscribe_case(&self, case_id: Uuid, from_version: u64) -> Result<EventStream> {
        self.inner.subscribe_case(case_id, from_version).await
    }

    async fn save_checkpoint(&self, consumer: &str, position: u64) -> Result<()> {
        let r = self.inner.save_checkpoint(consumer, position).await;
        self.observe(&r).await;
        r
    }

    async fn load_checkpoint(&self, consumer: &str) -> Result<u64> {
        let r = self.inner.load_checkpoint(consumer).await;
        self.observe(&r).await;
        r
    }

    async fn head(&self) -> Result<u64> {
        let r = self.inner.head().await;
        self.observe(&r).await;
        r
    }
}

/// A worker task that ran at least this long before it ended is restarted after the
/// shortest delay again: it was working, not failing at start.
const HEALTHY_RUN: Duration = onecity_eventlog::retry::MAX_DELAY;

/// Runs the worker `start()` builds until `stop`, restarting it (after a
/// [`backoff`](onecity_eventlog::retry::backoff) delay) whenever it ends without a stop,
/// a panic included (logged). While it is not running, `vitals` say not serving.
pub fn supervise<F, Fut>(
    worker: &'static str,
    vitals: Vitals,
    stop: CancellationToken,
    start: F,
) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut delays = Backoff::new();
        loop {
            let started = tokio::time::Instant::now();
            let ended = tokio::spawn(start()).await;
            if stop.is_cancelled() {
                return;
            }
            vitals.worker_down().await;
            match ended {
                Err(e) if e.is_panic() => {
                    let panic = e.into_panic();
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(worker, panic = %message, "worker panicked, restarting");
                }
                _ => tracing::error!(worker, "worker ended without a shutdown, restarting"),
            }
            if started.elapsed() >= HEALTHY_RUN {
                delays.reset();
            }
            Backoff::pause(delays.next_delay(), &stop).await;
            // Counted as running from its restart on (or no longer counted once stopping,
            // which is itself not serving).
            vitals.worker_up().await;
            if stop.is_cancelled() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker that panics makes the process not serving until it runs again.
    #[tokio::test]
    async fn a_panicking_worker_is_restarted_and_unhealthy_meanwhile() {
        let vitals = Vitals::new(tonic_health::server::health_reporter().0);
        let stop = CancellationToken::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let (ran, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = {
            let runs = Arc::clone(&runs);
            let stop_worker = stop.clone();
            supervise("test", vitals.clone(), stop.clone(), move || {
                let n = runs.fetch_add(1, Ordering::SeqCst);
                let ran = ran.clone();
                let stop = stop_worker.clone();
                async move {
                    let _ = ran.send(n);
                    assert!(n > 0, "first run panics");
                    stop.cancelled().await;
                }
            })
        };
        assert_eq!(rx.recv().await, Some(0));
        // Between the panic and the restart (at least the shortest backoff) it is down.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while vitals.serving() {
            assert!(tokio::time::Instant::now() < deadline, "never unhealthy");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(rx.recv().await, Some(1));
        assert!(vitals.serving());
        stop.cancel();
        task.await.unwrap();
        vitals.stopping().await;
        assert!(!vitals.serving());
    }
}
