//! The write path's one thread: group commit, version checks, durability.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use onecity_eventlog::chain::{self, Hash};
use onecity_eventlog::codec::now_micros;
use onecity_eventlog::{Appended, Error, Expected, NewEvent, RecordedEvent, Result};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::commit_index::CommitRecord;
use crate::keys::{checkpoint_key, event_key, META_HEAD};
use crate::record::encode_event_with;
use crate::sync::FileSyncer;
use crate::{clone_storage, failed_error, sled_err, Op, Shared};

/// Replies held until the batch is durable.
enum Reply {
    Append(oneshot::Sender<Result<Appended>>, Result<Appended>),
    Checkpoint(oneshot::Sender<Result<()>>),
}

impl Reply {
    fn fail(self, e: Error) {
        match self {
            Reply::Append(tx, _) => drop(tx.send(Err(e))),
            Reply::Checkpoint(tx) => drop(tx.send(Err(e))),
        }
    }

    fn send(self) {
        match self {
            Reply::Append(tx, result) => drop(tx.send(result)),
            Reply::Checkpoint(tx) => drop(tx.send(Ok(()))),
        }
    }
}

/// One group commit, as the writer builds it.
#[derive(Default)]
struct Staged {
    writes: Vec<(sled::IVec, sled::IVec)>,
    /// Set once `writes` are in sled.
    applied: Option<Result<()>>,
    /// Last position of the batch, when it appends events.
    new_head: Option<u64>,
    replies: Vec<Reply>,
    events: Vec<RecordedEvent>,
    commits: Vec<(Uuid, CommitRecord)>,
}

/// The write path's one thread: owns the counters and is the only flusher. It drains
/// the request queue, checks idempotency and expected versions, assigns versions and
/// positions, encodes the events, applies the batch (event keys, checkpoints, head
/// marker) to sled, flushes and `fdatasync`s, then moves the durable head, feeds live
/// subscribers, answers the callers and hands the commits to the indexer. Requests that
/// arrive meanwhile wait in the queue and become the next batch (group commit).
///
/// (Splitting it into a staging thread and a flushing thread, so that one batch is
/// prepared while the previous one is flushed, measured no better: at concurrency 64 it
/// splits the waiting callers into two half-size batches, and adds a thread hop.)
pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    /// Last position written.
    pub(crate) head: u64,
    /// Hash of the last commit written: the next commit's `prev`.
    pub(crate) chain_head: Hash,
    pub(crate) syncer: FileSyncer,
    pub(crate) to_indexer: std::sync::mpsc::SyncSender<Vec<(Uuid, CommitRecord)>>,
}

impl Writer {
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        let max_batch = self.shared.config.max_batch.max(1);
        while let Some(first) = rx.blocking_recv() {
            let received = Instant::now();
            let mut staged = Staged::default();
            let recorded_at = now_micros();
            self.stage(&mut staged, first, recorded_at);
            while staged.replies.len() < max_batch {
                match rx.try_recv() {
                    Ok(op) => self.stage(&mut staged, op, recorded_at),
                    Err(_) => break,
                }
            }
            self.apply(&mut staged);
            let appends = staged
                .replies
                .iter()
                .filter(|r| matches!(r, Reply::Append(..)))
                .count();
            metrics::histogram!(crate::GROUP_COMMIT_SIZE).record(staged.replies.len() as f64);
            let go_on = self.commit(staged);
            metrics::histogram!(crate::APPEND_DURATION)
                .record_many(received.elapsed().as_secs_f64(), appends);
            if !go_on {
                break;
            }
        }
        tracing::debug!("event log writer stopped");
    }

    /// Writes the batch into sled as one atomic `sled::Batch` carrying its own head
    /// marker, so after a crash sled holds whole batches only; a batch that reached the
    /// disk without being acknowledged is a write whose outcome the caller did not learn
    /// (a retry deduplicates against it), never a hole.
    fn apply(&self, staged: &mut Staged) {
        if staged.writes.is_empty() || self.shared.failed.load(Ordering::Acquire) {
            return;
        }
        let mut batch = sled::Batch::default();
        for (k, v) in std::mem::take(&mut staged.writes) {
            batch.insert(k, v);
        }
        if let Some(head) = staged.new_head {
            batch.insert(META_HEAD, &head.to_be_bytes());
        }
        let applied = self.shared.db.apply_batch(batch).map_err(sled_err);
        if applied.is_err() {
            // Before staging anything else: a later batch applied on top of this one
            // would put events after positions that were never written.
            self.shared.failed.store(true, Ordering::Release);
        }
        staged.applied = Some(applied);
    }

    fn stage(&mut self, staged: &mut Staged, op: Op, recorded_at: SystemTime) {
        match op {
            Op::Append {
                case_id,
                expected,
                events,
                compressed,
                digests,
                appended_by,
                commit_id,
                reply,
            } => {
                let result = self.stage_append(
                    staged,
                    recorded_at,
                    (case_id, expected, events, commit_id),
                    (compressed, digests, appended_by),
                );
                staged.replies.push(Reply::Append(reply, result));
            }
            Op::Checkpoint {
                consumer,
                position,
                reply,
            } => {
                staged.writes.push((
                    checkpoint_key(&consumer).into(),
                    position.to_be_bytes().as_slice().into(),
                ));
                staged.replies.push(Reply::Checkpoint(reply));
            }
        }
    }

    fn stage_append(
        &mut self,
        staged: &mut Staged,
        recorded_at: SystemTime,
        (case_id, expected, events, commit_id): (Uuid, Expected, Vec<NewEvent>, Uuid),
        (compressed, digests, appended_by): (Vec<Option<Vec<u8>>>, Vec<Hash>, String),
    ) -> Result<Appended> {
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(failed_error());
        }
        // Idempotency first: a retry of a commit that succeeded must succeed again, even
        // though its expected version no longer matches. Overlay first, then sled (see
        // `Overlay`). A retry of a commit that is staged but not yet durable is answered
        // with the batch that makes it durable, or a later one.
        // One look at the overlay for both questions; the writer is the only thread that
        // adds to it, so its head for the case cannot move under us.
        let (pending, pending_head) = {
            let overlay = self.shared.overlay();
            (
                overlay.commits.get(&commit_id).copied(),
                overlay.case_head(case_id),
            )
        };
        if let Some(rec) =
            pending.map_or_else(|| self.shared.load_commit(commit_id), |r| Ok(Some(r)))?
        {
            return Ok(Appended {
                deduplicated: true,
                ..rec.appended
            });
        }
        let current = match pending_head {
            Some(v) => v,
            None => self.shared.case_head(case_id)?,
        };
        if !expected.admits(current) {
            return Err(Error::Conflict {
                case_id,
                expected,
                actual: current,
            });
        }
        let n = events.len() as u64;
        let appended = Appended {
            case_id,
            first_version: current + 1,
            last_version: current + n,
            first_position: self.head + 1,
            last_position: self.head + n,
            deduplicated: false,
        };
        let mut recorded: Vec<RecordedEvent> = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| RecordedEvent {
                event_id: e.event_id,
                case_id,
                version: appended.first_version + i as u64,
                position: appended.first_position + i as u64,
                recorded_at,
                event_type: e.event_type,
                actor: e.actor,
                causation_id: e.causation_id,
                payload: e.payload,
                commit_id,
                appended_by: appended_by.clone(),
                chain: None,
                metadata: e.metadata,
            })
            .collect();
        self.chain_head = chain::seal(&self.chain_head, &mut recorded, &digests);
        for (e, compressed) in recorded.into_iter().zip(compressed) {
            staged.writes.push((
                event_key(e.position).as_slice().into(),
                encode_event_with(&e, compressed.as_deref()).into(),
            ));
            staged.events.push(e);
        }
        let rec = CommitRecord { case_id, appended };
        self.shared.overlay().insert(commit_id, rec);
        staged.commits.push((commit_id, rec));
        self.head = appended.last_position;
        staged.new_head = Some(self.head);
        Ok(appended)
    }
}

impl Writer {
    /// Makes an applied batch durable and answers it. `false` when the indexer is gone
    /// (after an index failure), which stops the writer.
    fn commit(&mut self, staged: Staged) -> bool {
        let Staged {
            writes: _,
            applied,
            new_head,
            replies,
            events,
            commits,
        } = staged;
        // The batch whose apply failed reports its own error; any batch after a failure
        // reports the poisoned log.
        if self.shared.failed.load(Ordering::Acquire) && !matches!(applied, Some(Err(_))) {
            replies.into_iter().for_each(|r| r.fail(failed_error()));
            return true;
        }
        if let Some(applied) = applied {
            let result = applied.and_then(|()| {
                let started = Instant::now();
                let synced = self.syncer.sync(&self.shared.db);
                metrics::histogram!(crate::FSYNC_DURATION).record(started.elapsed().as_secs_f64());
                synced
            });
            if let Err(e) = result {
                metrics::counter!(crate::WRITE_FAILURES).increment(1);
                tracing::error!(error = %e, "event log write failed, refusing further writes");
                self.shared.failed.store(true, Ordering::Release);
                replies.into_iter().for_each(|r| r.fail(clone_storage(&e)));
                return true;
            }
        }
        if let Some(head) = new_head {
            // Order matters: advance the durable head before publishing, so a subscriber
            // that misses the broadcast finds the events in storage.
            self.shared.durable_head.store(head, Ordering::Release);
            // No receivers is fine: nobody is subscribed.
            let _ = self.shared.live.send(events.into());
        }
        replies.into_iter().for_each(Reply::send);
        // Bounded: if the indexer falls behind, the write path waits for it rather than
        // letting the overlay grow without limit.
        commits.is_empty() || self.to_indexer.send(commits).is_ok()
    }
}
