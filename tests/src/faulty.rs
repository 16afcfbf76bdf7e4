//! A log backend wrapper that fails on demand, to see what the server makes of a log that
//! refuses writes, or that cannot be reached.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use onecity_eventlog::{
    Appended, Error, EventLog, EventStream, Expected, Filter, NewEvent, RecordedEvent, Result,
};
use onecity_eventlog_sled::{SledConfig, SledLog};
use uuid::Uuid;

/// A log whose appends fail with [`Error::Storage`] (as after an fsync failure) while
/// [`FaultyLog::fail_appends`] is on; everything else goes to the wrapped log.
#[derive(Debug)]
pub struct FaultyLog {
    inner: Arc<dyn EventLog>,
    failing: AtomicBool,
    unreachable: AtomicBool,
    /// Commits starting with this event type: how many more may land before they fail.
    budget: Mutex<Option<(String, usize)>>,
}

impl FaultyLog {
    /// A sled log in `dir`, wrapped.
    pub fn sled(dir: &std::path::Path) -> Arc<FaultyLog> {
        let log = SledLog::open(dir, SledConfig::default()).expect("open sled log");
        Arc::new(FaultyLog {
            inner: Arc::new(log),
            failing: AtomicBool::new(false),
            unreachable: AtomicBool::new(false),
            budget: Mutex::new(None),
        })
    }

    /// From now on, commits whose first event is of `event_type` land `landing` more
    /// times, then fail as [`FaultyLog::fail_appends`] makes them (other commits are not
    /// affected): a worker stopped after exactly that many of its steps.
    pub fn fail_commits_of(&self, event_type: &str, landing: usize) {
        *self.budget.lock().unwrap() = Some((event_type.to_owned(), landing));
    }

    /// Turns the append failures on or off.
    pub fn fail_appends(&self, on: bool) {
        self.failing.store(on, Ordering::SeqCst);
    }

    /// While on, every call but the subscriptions fails with [`Error::Unavailable`], as a
    /// log whose servers are all down does.
    pub fn unreachable(&self, on: bool) {
        self.unreachable.store(on, Ordering::SeqCst);
    }

    fn reach(&self) -> Result<()> {
        if self.unreachable.load(Ordering::SeqCst) {
            return Err(Error::Unavailable(
                "injected by the test: no server reachable".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl EventLog for FaultyLog {
    async fn append_as(
        &self,
        appended_by: &str,
        case_id: Uuid,
        expected: Expected,
        events: Vec<NewEvent>,
        commit_id: Uuid,
    ) -> Result<Appended> {
        self.reach()?;
        if self.failing.load(Ordering::SeqCst) {
            return Err(Error::Storage("injected by the test".into()));
        }
        // A commit of the budgeted type takes one from the budget before it is tried and
        // gives it back if it does not land (a version conflict, say): the budget counts
        // commits that land, whatever else writes to the same cases meanwhile.
        let mut reserved = false;
        if let Some((event_type, left)) = self.budget.lock().unwrap().as_mut() {
            if events.first().is_some_and(|e| e.event_type == *event_type) {
                if *left == 0 {
                    return Err(Error::Storage("injected by the test".into()));
                }
                *left -= 1;
                reserved = true;
            }
        }
        let result = self
            .inner
            .append_as(appended_by, case_id, expected, events, commit_id)
            .await;
        if reserved && result.as_ref().map_or(true, |a| a.deduplicated) {
            if let Some((_, left)) = self.budget.lock().unwrap().as_mut() {
                *left += 1;
            }
        }
        result
    }

    async fn read_case(
        &self,
        case_id: Uuid,
        from: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.reach()?;
        self.inner.read_case(case_id, from, limit).await
    }

    async fn read_all(&self, from: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.reach()?;
        self.inner.read_all(from, limit).await
    }

    async fn subscribe(&self, from: u64, filter: Filter) -> Result<EventStream> {
        self.inner.subscribe(from, filter).await
    }

    async fn subscribe_case(&self, case_id: Uuid, from_version: u64) -> Result<EventStream> {
        self.inner.subscribe_case(case_id, from_version).await
    }

    async fn save_checkpoint(&self, consumer: &str, position: u64) -> Result<()> {
        self.reach()?;
        self.inner.save_checkpoint(consumer, position).await
    }

    async fn load_checkpoint(&self, consumer: &str) -> Result<u64> {
        self.reach()?;
        self.inner.load_checkpoint(consumer).await
    }

    async fn head(&self) -> Result<u64> {
        self.reach()?;
        self.inner.head().await
    }
}
