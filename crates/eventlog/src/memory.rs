//! An in-memory backend: the whole contract in a few maps under one lock, so the unit
//! tests of every layer above the log run without a disk, a server or a temp dir.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tokio::sync::watch;
use uuid::Uuid;

use crate::chain::{self, Hash};
use crate::codec::now_micros;
use crate::{
    check_consumer, clamp_limit, Appended, Error, EventLog, EventStream, Expected, Filter, Limits,
    NewEvent, RecordedEvent, Result, MAX_READ_LIMIT,
};

/// Most events a subscription copies out per lock, so a subscriber catching up on a long
/// log never holds writers up for long.
const FOLLOW_BATCH: usize = 256;

/// The [`EventLog`] contract in memory. Cheap to clone (clones share one log).
///
/// **Durability: `Ok` means in memory; for tests.** Everything is lost when the last clone
/// is dropped; subscriptions then end. Every other promise of the contract holds and the
/// conformance suite checks it.
#[derive(Debug, Clone, Default)]
pub struct MemoryLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limits: Limits,
    state: Mutex<State>,
    /// The head after each append; subscriptions wait on it when caught up.
    head: watch::Sender<u64>,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            limits: Limits::default(),
            state: Mutex::default(),
            head: watch::Sender::new(0),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// The global log; position `p` is at index `p - 1`.
    events: Vec<RecordedEvent>,
    /// Positions of each case's events; version `v` is at index `v - 1`.
    cases: HashMap<Uuid, Vec<u64>>,
    commits: HashMap<Uuid, Appended>,
    checkpoints: HashMap<String, u64>,
    /// Hash of the last commit: the next commit's `prev`.
    chain_head: Hash,
}

impl MemoryLog {
    /// An empty log with the default [`Limits`].
    pub fn new() -> Self {
        MemoryLog::default()
    }

    /// An empty log enforcing `limits`.
    pub fn with_limits(limits: Limits) -> Self {
        MemoryLog {
            inner: Arc::new(Inner {
                limits,
                ..Inner::default()
            }),
        }
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing under the lock can leave the maps half-updated, so a panic elsewhere
        // while holding it does not make them unusable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl EventLog for MemoryLog {
    async fn append_as(
        &self,
        appended_by: &str,
        case_id: Uuid,
        expected: Expected,
        events: Vec<NewEvent>,
        commit_id: Uuid,
    ) -> Result<Appended> {
        self.inner
            .limits
            .check_append(case_id, &events, commit_id)?;
        let mut state = self.inner.state();
        if let Some(first) = state.commits.get(&commit_id) {
            return Ok(Appended {
                deduplicated: true,
                ..*first
            });
        }
        let actual = state.cases.get(&case_id).map_or(0, |v| v.len() as u64);
        if !expected.admits(actual) {
            return Err(Error::Conflict {
                case_id,
                expected,
                actual,
            });
        }
        let recorded_at = now_micros();
        let first_position = state.events.len() as u64 + 1;
        let n = events.len() as u64;
        let digests: Vec<Hash> = events
            .iter()
            .map(|e| chain::payload_digest(&e.payload))
            .collect();
        let mut recorded: Vec<RecordedEvent> = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| RecordedEvent {
                event_id: e.event_id,
                case_id,
                version: actual + 1 + i as u64,
                position: first_position + i as u64,
                recorded_at,
                event_type: e.event_type,
                actor: e.actor,
                causation_id: e.causation_id,
                payload: e.payload,
                metadata: e.metadata,
                commit_id,
                appended_by: appended_by.to_owned(),
                chain: None,
            })
            .collect();
        state.chain_head = chain::seal(&state.chain_head, &mut recorded, &digests);
        state.events.extend(recorded);
        state
            .cases
            .entry(case_id)
            .or_default()
            .extend(first_position..first_position + n);
        let appended = Appended {
            case_id,
            first_version: actual + 1,
            last_version: actual + n,
            first_position,
            last_position: first_position + n - 1,
            deduplicated: false,
        };
        state.commits.insert(commit_id, appended);
        self.inner.head.send_replace(appended.last_position);
        Ok(appended)
    }

    async fn read_case(
        &self,
        case_id: Uuid,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let state = self.inner.state();
        let positions = state.cases.get(&case_id).ok_or(Error::NotFound(case_id))?;
        let from = usize::try_from(from_version.max(1) - 1).unwrap_or(usize::MAX);
        Ok(positions
            .iter()
            .skip(from)
            .take(clamp_limit(limit))
            .map(|&p| state.events[p as usize - 1].clone())
            .collect())
    }

    async fn read_all(&self, from_position: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        let state = self.inner.state();
        let from = usize::try_from(from_position.max(1) - 1).unwrap_or(usize::MAX);
        Ok(state
            .events
            .iter()
            .skip(from)
            .take(clamp_limit(limit))
            .cloned()
            .collect())
    }

    async fn subscribe(&self, from_position: u64, filter: Filter) -> Result<EventStream> {
        let follow = Follow {
            log: Arc::downgrade(&self.inner),
            head: self.inner.head.subscribe(),
            next: from_position.max(1),
            filter,
            ready: VecDeque::new(),
        };
        Ok(Box::pin(futures::stream::unfold(follow, Follow::next)))
    }

    async fn subscribe_case(&self, case_id: Uuid, from_version: u64) -> Result<EventStream> {
        // Weak, like `Follow`: dropping the log ends the subscription.
        let log = Arc::downgrade(&self.inner);
        let read = move |from: u64| {
            let log = log.upgrade().map(|inner| MemoryLog { inner });
            async move {
                match log {
                    Some(log) => log.read_case(case_id, from, MAX_READ_LIMIT).await,
                    None => Ok(Vec::new()),
                }
            }
        };
        // Armed now, before the first read; `changed` fails once the log is dropped.
        let head = self.inner.head.subscribe();
        let wake = futures::stream::unfold(head, |mut head| async move {
            head.changed().await.ok()?;
            Some(((), head))
        });
        Ok(crate::follow::case(case_id, from_version, read, wake, None))
    }

    async fn save_checkpoint(&self, consumer: &str, position: u64) -> Result<()> {
        check_consumer(consumer)?;
        self.inner
            .state()
            .checkpoints
            .insert(consumer.to_owned(), position);
        Ok(())
    }

    async fn load_checkpoint(&self, consumer: &str) -> Result<u64> {
        check_consumer(consumer)?;
        Ok(self
            .inner
            .state()
            .checkpoints
            .get(consumer)
            .copied()
            .unwrap_or(0))
    }

    async fn head(&self) -> Result<u64> {
        Ok(self.inner.state().events.len() as u64)
    }
}

/// One subscription: reads the shared log from `next` on, and waits for the head to move
/// once caught up. It holds the log only weakly, so dropping the log ends it.
struct Follow {
    log: Weak<Inner>,
    head: watch::Receiver<u64>,
    next: u64,
    filter: Filter,
    ready: VecDeque<RecordedEvent>,
}

impl Follow {
    async fn next(mut self) -> Option<(Result<RecordedEvent>, Follow)> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Some((Ok(e), self));
            }
            let read = {
                let log = self.log.upgrade()?;
                let state = log.state();
                let from = usize::try_from(self.next - 1).unwrap_or(usize::MAX);
                let batch = state.events.iter().skip(from).take(FOLLOW_BATCH);
                let mut read = 0;
                for e in batch {
                    read += 1;
                    if self.filter.matches(e) {
                        self.ready.push_back(e.clone());
                    }
                }
                read
            };
            self.next += read;
            if read == 0 {
                let next = self.next;
                // Err: the log was dropped, which ends the subscription.
                self.head.wait_for(|&head| head >= next).await.ok()?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn subscriptions_end_when_the_log_is_dropped() {
        let log = MemoryLog::new();
        let case = Uuid::now_v7();
        log.append(
            case,
            Expected::NoStream,
            vec![NewEvent::new("t", "a", vec![])],
            Uuid::now_v7(),
        )
        .await
        .unwrap();
        let mut sub = log.subscribe(1, Filter::all()).await.unwrap();
        assert_eq!(sub.next().await.unwrap().unwrap().position, 1);
        drop(log);
        assert!(sub.next().await.is_none());
    }
}
