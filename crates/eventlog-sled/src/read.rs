//! The read side of the sled log: reads by case and by position, and subscriptions
//! (catch-up from storage, then the live broadcast).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

use onecity_eventlog::{Appended, Error, Filter, RecordedEvent, Result};
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

use crate::commit_index::CommitRecord;
use crate::indexer::CaseRuns;
use crate::keys::{be_u64, case_key, commit_key, decode_commit, event_key};
use crate::overlay::Overlay;
use crate::record::{decode_event, stored_event_matches};
use crate::{sled_err, Shared};

impl Shared {
    pub(crate) fn overlay(&self) -> MutexGuard<'_, Overlay> {
        // A panic while holding the lock leaves the overlay as it was between two
        // complete operations (every mutation is a single insert or remove).
        self.overlay.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A commit the indexer has handed on: the run index, then (stores from before it)
    /// the sled `K` keys.
    pub(crate) fn load_commit(&self, commit_id: Uuid) -> Result<Option<CommitRecord>> {
        if let Some(r) = self.commits.get(commit_id)? {
            return Ok(Some(r));
        }
        if !self.commits.legacy() {
            return Ok(None);
        }
        match self.db.get(commit_key(commit_id)).map_err(sled_err)? {
            Some(v) => decode_commit(&v).map(Some),
            None => Ok(None),
        }
    }

    /// The case's last indexed version: the last `C` key of the case (a reverse seek), so no
    /// separate head record has to be written with every commit.
    pub(crate) fn case_head(&self, case_id: Uuid) -> Result<u64> {
        let last = self
            .db
            .range(case_key(case_id, 0)..=case_key(case_id, u64::MAX))
            .next_back()
            .transpose()
            .map_err(sled_err)?;
        match last {
            Some((k, v)) => Ok(CaseRuns::decode(&k, &v)?.next_version() - 1),
            None => Ok(0),
        }
    }

    pub(crate) fn durable_head(&self) -> u64 {
        self.durable_head.load(Ordering::Acquire)
    }

    pub(crate) fn read_all(&self, from: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        Ok(self.read_matching(from.max(1), limit, &Filter::all())?.0)
    }

    /// Up to `limit` durable events from position `from` (≥ 1), decoding only those
    /// `filter` passes (the others cost a read of their type), with the last position
    /// looked at (`from - 1` when there was nothing durable to look at).
    pub(crate) fn read_matching(
        &self,
        from: u64,
        limit: usize,
        filter: &Filter,
    ) -> Result<(Vec<RecordedEvent>, u64)> {
        let head = self.durable_head();
        if from > head || limit == 0 {
            return Ok((Vec::new(), from - 1));
        }
        let last = head.min(from.saturating_add(limit as u64 - 1));
        let mut out = Vec::new();
        for v in self.db.range(event_key(from)..=event_key(last)).values() {
            let v = v.map_err(sled_err)?;
            if stored_event_matches(&v, filter)? {
                out.push(decode_event(&v)?);
            }
        }
        Ok((out, last))
    }

    pub(crate) fn read_case(
        &self,
        case_id: Uuid,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let head = self.durable_head();
        // The overlay before sled (see `Overlay`); only durable commits count.
        let pending: Vec<Appended> = self
            .overlay()
            .cases
            .get(&case_id)
            .map(|q| {
                q.iter()
                    .filter(|a| a.last_position <= head)
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        let from = from_version.max(1);
        let mut positions: BTreeMap<u64, u64> = BTreeMap::new();
        // The key whose runs cover `from` starts at or before it: seek back to it.
        let start = self
            .db
            .range(case_key(case_id, 1)..=case_key(case_id, from))
            .keys()
            .next_back()
            .transpose()
            .map_err(sled_err)?
            .map_or_else(|| case_key(case_id, from).to_vec(), |k| k.to_vec());
        'keys: for item in self.db.range(start..=case_key(case_id, u64::MAX).to_vec()) {
            let (key, value) = item.map_err(sled_err)?;
            for (version, pos) in CaseRuns::decode(&key, &value)?.positions() {
                if positions.len() >= limit || pos > head {
                    break 'keys;
                }
                if version >= from {
                    positions.insert(version, pos);
                }
            }
        }
        for a in &pending {
            for v in a.first_version.max(from)..=a.last_version {
                positions.insert(v, a.first_position + (v - a.first_version));
            }
        }
        // Version 1 not yet durable (or absent) means the case does not exist for readers.
        // A read from version 1 has already found it; only other reads look it up.
        let exists = positions.contains_key(&1)
            || pending.first().is_some_and(|a| a.first_version == 1)
            || match self.db.get(case_key(case_id, 1)).map_err(sled_err)? {
                Some(runs) => runs.len() >= 8 && be_u64(&runs[..8])? <= head,
                None => false,
            };
        if !exists {
            return Err(Error::NotFound(case_id));
        }
        let mut out = Vec::with_capacity(positions.len().min(limit));
        for (version, pos) in positions.into_iter().take(limit) {
            if version != from + out.len() as u64 {
                return Err(Error::Storage(format!(
                    "case index of {case_id} has a gap before version {version}"
                )));
            }
            let bytes = self
                .db
                .get(event_key(pos))
                .map_err(sled_err)?
                .ok_or_else(|| {
                    Error::Storage(format!("case index points at missing position {pos}"))
                })?;
            out.push(decode_event(&bytes)?);
        }
        Ok(out)
    }

    /// Catch up from storage, then follow the live broadcast. The receiver is created
    /// *before* each catch-up read and the writer publishes only after advancing the
    /// durable head, so every event is either read from storage or received live (often
    /// both: duplicates are dropped by position). A live event beyond the next expected
    /// position, or a lagged receiver, sends the loop back to storage.
    pub(crate) async fn run_subscription(
        self: Arc<Self>,
        mut next: u64,
        filter: Filter,
        tx: mpsc::Sender<Result<RecordedEvent>>,
    ) {
        const CHUNK: usize = 512;
        'catch_up: loop {
            let mut live = self.live.subscribe();
            loop {
                if self.closed.is_cancelled() {
                    return;
                }
                let (batch, scanned_to) = match self.read_matching(next, CHUNK, &filter) {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                if scanned_to < next {
                    break;
                }
                next = scanned_to + 1;
                for event in batch {
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
            }
            loop {
                let received = tokio::select! {
                    r = live.recv() => r,
                    () = self.closed.cancelled() => return,
                    () = tx.closed() => return,
                };
                match received {
                    Ok(batch) => {
                        for event in batch.iter() {
                            if event.position < next {
                                continue;
                            }
                            if event.position > next {
                                continue 'catch_up;
                            }
                            next += 1;
                            if filter.matches(event) && tx.send(Ok(event.clone())).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, next, "subscriber lagged, reading from storage");
                        continue 'catch_up;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    }
}
