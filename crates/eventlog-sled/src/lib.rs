//! The embedded backend: one sled database, a writer thread with group commit, and an
//! indexer behind it.
//!
//! Layout (one sled tree, so one `apply_batch` is atomic across all of it):
//!
//! | key                              | value                                    |
//! |----------------------------------|------------------------------------------|
//! | `E` position(u64 BE)             | framed event: envelope, then payload (lz4 when it pays); see `record` |
//! | `C` case(16) first version(u64 BE) | runs of (first position u64, count u32) for the versions from there on |
//! | `K` commit(16)                   | case(16) first/last version, first/last position (4×u64 BE) |
//! | `P` consumer name                | checkpoint position (u64 BE)             |
//! | `Mhead`                          | last written position (u64 BE)           |
//! | `Mindexed`                       | every commit up to here has its `C` and `K` keys |
//!
//! Why this shape: each sled key costs a leaf copy-on-write, so the event keys are the
//! only ones on the critical path. The [`Writer`] owns the counters (no `generate_id`,
//! which has gaps) and is the only thread that flushes (sled 0.34's `flush_async`
//! deadlocks when many tasks flush at once); after each flush it `fdatasync`s sled's
//! files, since sled's own flush only issues `sync_file_range` on Linux, which survives
//! a process crash but not power loss. The [`Indexer`] writes the case and commit-id
//! index behind it, and an in-memory [`Overlay`] covers what it has not written yet.
//! docs/eventlog.md has the full story.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use onecity_eventlog::codec::now_micros;
use onecity_eventlog::{
    check_consumer, clamp_limit, Appended, Error, EventLog, EventStream, Expected, Filter, Limits,
    NewEvent, RecordedEvent, Result,
};

use crate::commit_index::{CommitIndex, CommitRecord, Found, FLUSH_ENTRIES};
use crate::record::{compress_payload, decode_event, encode_event_with, stored_event_matches};

mod commit_index;
mod record;
#[cfg(feature = "testing")]
pub mod testing;

const EVENT: u8 = b'E';
const CASE: u8 = b'C';
const COMMIT: u8 = b'K';
const CHECKPOINT: u8 = b'P';
const META_HEAD: &[u8] = b"Mhead";
const META_INDEXED: &[u8] = b"Mindexed";
/// Present once the store keeps its commit-id index in `commits/` rather than `K` keys.
const META_COMMIT_RUNS: &[u8] = b"Mcommitruns";
/// The commit-id index's directory inside the data dir (see `commit_index`).
const COMMIT_DIR: &str = "commits";

/// Settings of the sled backend.
#[derive(Debug, Clone)]
pub struct SledConfig {
    /// Request limits.
    pub limits: Limits,
    /// Live group commits (batches of up to `max_batch` commits' events) a subscriber
    /// may trail the writer by before it falls back to reading storage. The broadcast
    /// keeps the last this-many batches alive, so it is also a memory bound: 64 batches
    /// of 64 commits of ~3 KiB events is ~12 MiB.
    pub live_buffer: usize,
    /// Most operations written by one group commit.
    pub max_batch: usize,
    /// sled page cache size in bytes. 64 MiB by default: the log's hot set is its tail
    /// (live subscribers are fed from memory, not from sled) and the projections keep
    /// their own state, so a larger cache mostly holds pages a cold-start replay read
    /// once (256 MiB cost a 1M-case cold start ~200 MiB of peak RSS for no speed).
    pub cache_capacity: u64,
    /// Commit-id index entries held in memory before the indexer writes them as a run
    /// file. A crash costs re-reading this many commits' events on open (~1 s at the
    /// default 65,536); small values make runs and merges frequent (tests).
    pub commit_index_flush: usize,
}

impl Default for SledConfig {
    fn default() -> Self {
        SledConfig {
            limits: Limits::default(),
            live_buffer: 64,
            max_batch: 1024,
            cache_capacity: 64 * 1024 * 1024,
            commit_index_flush: FLUSH_ENTRIES,
        }
    }
}

/// The embedded event log over sled 0.34. Only one process may open a data directory
/// (sled holds an exclusive file lock); other processes reach it through the gRPC face.
#[derive(Debug)]
pub struct SledLog {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Op>,
    /// Writer, indexer and compactor, joined in that order on drop.
    threads: Vec<std::thread::JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    db: sled::Db,
    /// Highest position that is durable; readers never look past it.
    durable_head: AtomicU64,
    /// Set after a storage error: the outcome of the failed batch is unknown, so the log
    /// refuses further writes until it is reopened (and recovery decides).
    failed: AtomicBool,
    /// Each group commit's events, in position order, published once durable.
    live: broadcast::Sender<Arc<[RecordedEvent]>>,
    closed: CancellationToken,
    config: SledConfig,
    overlay: Mutex<Overlay>,
    commits: CommitIndex,
}

enum Op {
    Append {
        case_id: Uuid,
        expected: Expected,
        events: Vec<NewEvent>,
        /// Each event's payload as stored when compressed (`compress_payload`), computed
        /// by the appending task rather than by the writer thread.
        compressed: Vec<Option<Vec<u8>>>,
        commit_id: Uuid,
        reply: oneshot::Sender<Result<Appended>>,
    },
    Checkpoint {
        consumer: String,
        position: u64,
        reply: oneshot::Sender<Result<()>>,
    },
}

impl SledLog {
    /// Opens (or creates) the log in `path`. Fails if another process has it open.
    pub fn open(path: impl AsRef<Path>, config: SledConfig) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        std::fs::create_dir_all(&path).map_err(|e| storage("create data dir", e))?;
        let db = open_db(&path, config.cache_capacity)?;
        let head = match db.get(META_HEAD).map_err(sled_err)? {
            Some(v) => be_u64(&v)?,
            None => 0,
        };
        // A batch is atomic, so the head marker and the last event agree; check anyway
        // so a damaged store is refused instead of served with a hole.
        if head > 0 && db.get(event_key(head)).map_err(sled_err)?.is_none() {
            return Err(Error::Storage(format!(
                "log head {head} has no event: store is damaged"
            )));
        }
        if db.get(event_key(head + 1)).map_err(sled_err)?.is_some() {
            return Err(Error::Storage(format!(
                "event after head {head}: store is damaged"
            )));
        }
        let mut syncer = FileSyncer::new(&path)?;
        let indexed = match db.get(META_INDEXED).map_err(sled_err)? {
            Some(v) => be_u64(&v)?,
            // A store written before the indexer existed indexed every batch in place.
            None if head > 0 => head,
            None => {
                // Marks the store as indexer-era before its first event (the first
                // group commit's flush makes it durable along with that event).
                db.insert(META_INDEXED, &0u64.to_be_bytes())
                    .map_err(sled_err)?;
                0
            }
        };
        if indexed > head {
            return Err(Error::Storage(format!(
                "index watermark {indexed} is past log head {head}: store is damaged"
            )));
        }
        let runs_era = db.get(META_COMMIT_RUNS).map_err(sled_err)?.is_some();
        // A store from before run files: its `K` keys cover what its `C` keys cover.
        let legacy = (!runs_era && head > 0).then_some(indexed);
        let (commits, found) = CommitIndex::open(&path.join(COMMIT_DIR), legacy)?;
        if runs_era && found == Found::Nothing && head > 0 {
            tracing::warn!(head, "commit index missing, rebuilding it from every event");
        }
        let mut dirty = !runs_era;
        if !runs_era {
            db.insert(META_COMMIT_RUNS, &[1u8]).map_err(sled_err)?;
        }
        let commits_indexed = commits.watermark();
        if commits_indexed > head {
            return Err(Error::Storage(format!(
                "commit index watermark {commits_indexed} is past log head {head}: store is damaged"
            )));
        }
        if indexed < head || commits_indexed < head {
            let flush_at = config.commit_index_flush.max(1);
            let n = reindex(&db, &commits, flush_at, (indexed, commits_indexed), head)?;
            dirty = true;
            tracing::info!(
                from = indexed.min(commits_indexed) + 1,
                head,
                commits = n,
                "event log index rebuilt"
            );
        }
        if dirty {
            syncer.sync(&db)?;
        }
        let (live, _) = broadcast::channel(config.live_buffer.max(1));
        let shared = Arc::new(Shared {
            db,
            durable_head: AtomicU64::new(head),
            failed: AtomicBool::new(false),
            live,
            closed: CancellationToken::new(),
            config,
            overlay: Mutex::new(Overlay::default()),
            commits,
        });
        let (queue, rx) = mpsc::channel(shared.config.max_batch.max(1) * 4);
        let (to_indexer, indexer_rx) = std::sync::mpsc::sync_channel(64);
        // One pending wake-up is enough: a compaction pass merges until nothing is left.
        let (to_compactor, compactor_rx) = std::sync::mpsc::sync_channel(1);
        let _ = to_compactor.try_send(());
        let writer = Writer {
            shared: Arc::clone(&shared),
            head,
            syncer,
            to_indexer,
        };
        let indexer = Indexer {
            shared: Arc::clone(&shared),
            to_compactor,
        };
        let compactor = Arc::clone(&shared);
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| storage("spawn event log thread", e))
        };
        let threads = vec![
            spawn("onecity-log-writer", Box::new(move || writer.run(rx)))?,
            spawn(
                "onecity-log-index",
                Box::new(move || indexer.run(indexer_rx)),
            )?,
            spawn(
                "onecity-log-compact",
                Box::new(move || compact(&compactor, compactor_rx)),
            )?,
        ];
        tracing::info!(path = %path.display(), head, "event log opened");
        Ok(SledLog {
            shared,
            queue,
            threads,
        })
    }

    /// Ends every subscription and stops accepting writes.
    pub fn shutdown(&self) {
        self.shared.closed.cancel();
    }

    async fn submit<T>(&self, op: Op, rx: oneshot::Receiver<Result<T>>) -> Result<T> {
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(failed_error());
        }
        self.queue
            .send(op)
            .await
            .map_err(|_| Error::Unavailable("event log writer stopped".into()))?;
        rx.await
            .map_err(|_| Error::Unavailable("event log writer stopped".into()))?
    }
}

impl Drop for SledLog {
    fn drop(&mut self) {
        self.shared.closed.cancel();
        // Closing the queue stops the writer after its current batch, and the end of its
        // channel stops the indexer; joining makes sure nothing is half-written when the
        // caller reopens the directory.
        let (dead, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.queue, dead));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[async_trait::async_trait]
impl EventLog for SledLog {
    async fn append(
        &self,
        case_id: Uuid,
        expected: Expected,
        events: Vec<NewEvent>,
        commit_id: Uuid,
    ) -> Result<Appended> {
        self.shared
            .config
            .limits
            .check_append(case_id, &events, commit_id)?;
        let compressed = events
            .iter()
            .map(|e| compress_payload(&e.payload))
            .collect();
        let (reply, rx) = oneshot::channel();
        let op = Op::Append {
            case_id,
            expected,
            events,
            compressed,
            commit_id,
            reply,
        };
        self.submit(op, rx).await
    }

    async fn read_case(
        &self,
        case_id: Uuid,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.shared
            .read_case(case_id, from_version, clamp_limit(limit))
    }

    async fn read_all(&self, from_position: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.shared.read_all(from_position, clamp_limit(limit))
    }

    async fn subscribe(&self, from_position: u64, filter: Filter) -> Result<EventStream> {
        let (tx, rx) = mpsc::channel(256);
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            shared
                .run_subscription(from_position.max(1), filter, tx)
                .await
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn save_checkpoint(&self, consumer: &str, position: u64) -> Result<()> {
        check_consumer(consumer)?;
        let (reply, rx) = oneshot::channel();
        let op = Op::Checkpoint {
            consumer: consumer.to_owned(),
            position,
            reply,
        };
        self.submit(op, rx).await
    }

    async fn load_checkpoint(&self, consumer: &str) -> Result<u64> {
        check_consumer(consumer)?;
        let key = checkpoint_key(consumer);
        match self.shared.db.get(key).map_err(sled_err)? {
            Some(v) => be_u64(&v),
            None => Ok(0),
        }
    }

    async fn head(&self) -> Result<u64> {
        Ok(self.shared.durable_head.load(Ordering::Acquire))
    }
}

impl Shared {
    fn overlay(&self) -> MutexGuard<'_, Overlay> {
        // A panic while holding the lock leaves the overlay as it was between two
        // complete operations (every mutation is a single insert or remove).
        self.overlay.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A commit the indexer has handed on: the run index, then (stores from before it)
    /// the sled `K` keys.
    fn load_commit(&self, commit_id: Uuid) -> Result<Option<CommitRecord>> {
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
    fn case_head(&self, case_id: Uuid) -> Result<u64> {
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

    fn durable_head(&self) -> u64 {
        self.durable_head.load(Ordering::Acquire)
    }

    fn read_all(&self, from: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        Ok(self.read_matching(from.max(1), limit, &Filter::all())?.0)
    }

    /// Up to `limit` durable events from position `from` (≥ 1), decoding only those
    /// `filter` passes (the others cost a read of their type), with the last position
    /// looked at (`from - 1` when there was nothing durable to look at).
    fn read_matching(
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

    fn read_case(
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
    async fn run_subscription(
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

/// Commits the indexer has not indexed yet (case-index `C` keys in sled, entries in the
/// commit-id index): the writer adds a commit when it stages it, the indexer removes it
/// after indexing it. Because both indexes have a commit *before* it leaves the
/// overlay, anyone who looks in the overlay first and in the indexes second sees every
/// commit.
#[derive(Debug, Default)]
struct Overlay {
    commits: HashMap<Uuid, CommitRecord>,
    /// Per case, its unindexed commits in version order.
    cases: HashMap<Uuid, VecDeque<Appended>>,
}

impl Overlay {
    fn insert(&mut self, commit_id: Uuid, rec: CommitRecord) {
        self.commits.insert(commit_id, rec);
        self.cases
            .entry(rec.case_id)
            .or_default()
            .push_back(rec.appended);
    }

    fn remove(&mut self, commit_id: Uuid, rec: &CommitRecord) {
        self.commits.remove(&commit_id);
        if let Some(q) = self.cases.get_mut(&rec.case_id) {
            while q
                .front()
                .is_some_and(|a| a.last_position <= rec.appended.last_position)
            {
                q.pop_front();
            }
            if q.is_empty() {
                self.cases.remove(&rec.case_id);
            }
        }
    }

    fn case_head(&self, case_id: Uuid) -> Option<u64> {
        self.cases
            .get(&case_id)
            .and_then(|q| q.back())
            .map(|a| a.last_version)
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
struct Writer {
    shared: Arc<Shared>,
    /// Last position written.
    head: u64,
    syncer: FileSyncer,
    to_indexer: std::sync::mpsc::SyncSender<Vec<(Uuid, CommitRecord)>>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        let max_batch = self.shared.config.max_batch.max(1);
        while let Some(first) = rx.blocking_recv() {
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
            if !self.commit(staged) {
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
                commit_id,
                reply,
            } => {
                let result = self.stage_append(
                    staged,
                    recorded_at,
                    (case_id, expected, events, commit_id),
                    compressed,
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
        compressed: Vec<Option<Vec<u8>>>,
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
        for (i, (e, compressed)) in events.into_iter().zip(compressed).enumerate() {
            let i = i as u64;
            let recorded = RecordedEvent {
                event_id: e.event_id,
                case_id,
                version: appended.first_version + i,
                position: appended.first_position + i,
                recorded_at,
                event_type: e.event_type,
                actor: e.actor,
                causation_id: e.causation_id,
                payload: e.payload,
                commit_id,
            };
            staged.writes.push((
                event_key(recorded.position).as_slice().into(),
                encode_event_with(&recorded, compressed.as_deref()).into(),
            ));
            staged.events.push(recorded);
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
            let result = applied.and_then(|()| self.syncer.sync(&self.shared.db));
            if let Err(e) = result {
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

/// Off the critical path: indexes durable commits, in larger passes than the group
/// commits. Each pass writes the case-index keys and the `Mindexed` watermark to sled
/// (made durable by the writer's next flush) and adds the commits to the commit-id
/// index's memtable, then drops them from the overlay; a full memtable becomes a run
/// file. Whatever was not durable at a crash is rebuilt from the events on open.
struct Indexer {
    shared: Arc<Shared>,
    to_compactor: std::sync::mpsc::SyncSender<()>,
}

impl Indexer {
    fn run(self, rx: std::sync::mpsc::Receiver<Vec<(Uuid, CommitRecord)>>) {
        lower_priority();
        let mut last = 0;
        while let Ok(first) = rx.recv() {
            // Gather for a moment: the longer a pass, the more commits of a busy case
            // share one `C` key. Readers are served by the overlay meanwhile.
            let mut commits = first;
            let deadline = std::time::Instant::now() + INDEX_DELAY;
            while commits.len() < INDEX_BATCH {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match rx.recv_timeout(left) {
                    Ok(more) => commits.extend(more),
                    Err(_) => break,
                }
            }
            if let Err(e) = self.pass(&commits, &mut last) {
                tracing::error!(error = %e, "event log index write failed, refusing further writes");
                self.shared.failed.store(true, Ordering::Release);
                // Stop here: a later pass would move the watermark past keys this one
                // may not have written. The overlay keeps serving reads, and the next
                // open rebuilds the index from the events.
                self.shared.commits.stop();
                return;
            }
        }
        // The writer has stopped (it owned the sender), so this is the only flusher left:
        // make the last index writes durable and a clean restart re-indexes nothing.
        self.shared.commits.stop();
        if let Err(e) = self.shared.commits.flush(last) {
            tracing::warn!(error = %e, "event log final commit index flush failed");
        }
        if let Err(e) = self.shared.db.flush() {
            tracing::warn!(error = %e, "event log final index flush failed");
        }
        tracing::debug!("event log indexer stopped");
    }

    fn pass(&self, commits: &[(Uuid, CommitRecord)], last: &mut u64) -> Result<()> {
        write_case_index(&self.shared.db, commits)?;
        self.shared.commits.insert(commits);
        {
            let mut overlay = self.shared.overlay();
            for (id, rec) in commits {
                overlay.remove(*id, rec);
                *last = (*last).max(rec.appended.last_position);
            }
        }
        let flush_at = self.shared.config.commit_index_flush.max(1);
        if self.shared.commits.pending() >= flush_at && self.shared.commits.flush(*last)? {
            // The new run may make a pair worth merging. A full channel means a wake-up
            // is already pending, and one compaction pass merges everything due.
            let _ = self.to_compactor.try_send(());
        }
        Ok(())
    }
}

/// The compactor thread: merges commit-index runs whenever the indexer has written one.
/// A failed merge leaves every run as it was (lookups just look at more of them), so it
/// is reported and compaction stops, but the log goes on.
fn compact(shared: &Shared, rx: std::sync::mpsc::Receiver<()>) {
    lower_priority();
    while rx.recv().is_ok() {
        match shared.commits.compact() {
            Ok(0) => {}
            Ok(merges) => tracing::debug!(merges, "commit index runs merged"),
            Err(e) => {
                tracing::error!(error = %e, "commit index merge failed, no more merges until restart");
                return;
            }
        }
    }
}

/// Background work yields the CPU to the write path: indexer and compactor run at nice 10, as
/// compaction threads do in storage engines. It still keeps up on average (the bounded
/// channel from the writer makes the write path wait if it does not); it only stops
/// competing with the writer for the moments it needs a core.
#[allow(unsafe_code)]
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread's own id; no memory is shared.
    unsafe {
        let tid = libc::gettid();
        if libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10) != 0 {
            tracing::debug!("could not lower the indexer's priority");
        }
    }
}

/// Most commits the indexer takes in one pass.
const INDEX_BATCH: usize = 4096;

/// Longest the indexer waits for more commits before a pass.
const INDEX_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

/// Writes the `C` keys of the commits' cases, then moves the `Mindexed` watermark to the
/// last of them.
///
/// The case index is written per case, not per commit: consecutive commits of one case
/// in `commits` become one `C` key (a run list, see [`CaseRuns`]), so a busy case costs
/// one index key per indexer pass rather than one per event. The overlay guarantees
/// that a case's commits arrive here in version order with nothing missing before them.
///
/// Plain inserts, not a batch: a sled batch takes the tree's exclusive lock and pins its
/// log until it is sealed, which would stall the writer behind a few thousand index
/// keys. Atomicity is not needed: sled recovers a prefix of its log and the watermark is
/// written after every key it covers, so a recovered watermark never claims a missing
/// key (re-indexing a key that survived writes the same value again).
fn write_case_index(db: &sled::Db, commits: &[(Uuid, CommitRecord)]) -> Result<()> {
    let Some(last) = commits.iter().map(|(_, r)| r.appended.last_position).max() else {
        return Ok(());
    };
    let mut cases: HashMap<Uuid, Vec<CaseRuns>> = HashMap::new();
    for (_, rec) in commits {
        let runs = cases.entry(rec.case_id).or_default();
        match runs.last_mut() {
            Some(r) if r.next_version() == rec.appended.first_version && !r.is_full() => {
                r.push(&rec.appended);
            }
            _ => runs.push(CaseRuns::new(&rec.appended)),
        }
    }
    for (case_id, runs) in cases {
        for r in runs {
            db.insert(case_key(case_id, r.first_version), r.encode())
                .map_err(sled_err)?;
        }
    }
    db.insert(META_INDEXED, &last.to_be_bytes())
        .map_err(sled_err)?;
    Ok(())
}

/// The value of a `C` key: the positions of versions `first_version..`, as runs of
/// `(first position, count)` (a commit's events have consecutive positions). Stored as
/// 12-byte records (u64 + u32, big-endian); an 8-byte value is one version at one
/// position, the layout of stores written before runs existed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CaseRuns {
    first_version: u64,
    runs: Vec<(u64, u32)>,
    versions: u64,
}

/// Most versions one `C` key covers, so that a value stays small (≤ 12 KiB) however
/// long the stream.
const MAX_RUN_VERSIONS: u64 = 1024;

impl CaseRuns {
    fn new(a: &Appended) -> Self {
        let mut r = CaseRuns {
            first_version: a.first_version,
            runs: Vec::new(),
            versions: 0,
        };
        r.push(a);
        r
    }

    fn push(&mut self, a: &Appended) {
        let n = a.last_version - a.first_version + 1;
        self.runs.push((a.first_position, n as u32));
        self.versions += n;
    }

    fn next_version(&self) -> u64 {
        self.first_version + self.versions
    }

    fn is_full(&self) -> bool {
        self.versions >= MAX_RUN_VERSIONS
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.runs.len() * 12);
        for (pos, n) in &self.runs {
            v.extend_from_slice(&pos.to_be_bytes());
            v.extend_from_slice(&n.to_be_bytes());
        }
        v
    }

    fn decode(key: &[u8], value: &[u8]) -> Result<Self> {
        let first_version = be_u64(&key[17..])?;
        if value.len() == 8 {
            return Ok(CaseRuns {
                first_version,
                runs: vec![(be_u64(value)?, 1)],
                versions: 1,
            });
        }
        if value.is_empty() || !value.len().is_multiple_of(12) {
            return Err(Error::Storage(format!(
                "corrupt case index value of {} bytes",
                value.len()
            )));
        }
        let mut runs = Vec::with_capacity(value.len() / 12);
        let mut versions = 0;
        for rec in value.chunks_exact(12) {
            let n = u32::from_be_bytes([rec[8], rec[9], rec[10], rec[11]]);
            runs.push((be_u64(&rec[..8])?, n));
            versions += u64::from(n);
        }
        Ok(CaseRuns {
            first_version,
            runs,
            versions,
        })
    }

    /// `(version, position)` of every version it covers, in order.
    fn positions(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut version = self.first_version;
        self.runs.iter().flat_map(move |&(pos, n)| {
            let start = version;
            version += u64::from(n);
            (0..u64::from(n)).map(move |i| (start + i, pos + i))
        })
    }
}

/// Rebuilds what a crash left unindexed: the case keys of commits after `cases_from`
/// and the commit-id entries of commits after `commits_from`, reading the events once
/// from the lower of the two (a commit's events are consecutive and share a commit id).
/// Works in chunks, so that rebuilding a lost commit index from every event holds one
/// memtable at a time, and ends with the commit index durable up to `head`.
fn reindex(
    db: &sled::Db,
    index: &CommitIndex,
    flush_at: usize,
    (cases_from, commits_from): (u64, u64),
    head: u64,
) -> Result<usize> {
    let chunk = |commits: &mut Vec<(Uuid, CommitRecord)>| -> Result<()> {
        let after = |from: u64| {
            commits
                .iter()
                .filter(move |(_, r)| r.appended.last_position > from)
                .copied()
                .collect::<Vec<_>>()
        };
        write_case_index(db, &after(cases_from))?;
        index.insert(&after(commits_from));
        if index.pending() >= flush_at {
            let last = commits.last().map_or(0, |(_, r)| r.appended.last_position);
            index.flush(last)?;
        }
        commits.clear();
        Ok(())
    };
    let mut commits: Vec<(Uuid, CommitRecord)> = Vec::new();
    let mut n = 0;
    let from = cases_from.min(commits_from);
    for item in db.range(event_key(from + 1)..=event_key(head)).values() {
        let e = decode_event(&item.map_err(sled_err)?)?;
        match commits.last_mut() {
            Some((id, rec))
                if *id == e.commit_id
                    && rec.case_id == e.case_id
                    && rec.appended.last_position + 1 == e.position =>
            {
                rec.appended.last_position = e.position;
                rec.appended.last_version = e.version;
                continue;
            }
            _ => {}
        }
        if commits.len() >= INDEX_BATCH {
            n += commits.len();
            chunk(&mut commits)?;
        }
        commits.push((
            e.commit_id,
            CommitRecord {
                case_id: e.case_id,
                appended: Appended {
                    case_id: e.case_id,
                    first_version: e.version,
                    last_version: e.version,
                    first_position: e.position,
                    last_position: e.position,
                    deduplicated: false,
                },
            },
        ));
    }
    n += commits.len();
    chunk(&mut commits)?;
    index.flush(head)?;
    Ok(n)
}

/// Makes sled's writes survive power loss: `flush` (which on Linux ends in
/// `sync_file_range`, pushing pages to the device but not its cache or the file's
/// metadata), then `fdatasync` on the data file, and on any blob file sled wrote
/// (values and pages too large for a log segment go to `blobs/`, which sled never syncs).
#[derive(Debug)]
pub(crate) struct FileSyncer {
    data_file: File,
    blob_dir: PathBuf,
    /// On Linux, inotify reports each blob file sled has finished writing (sled writes a
    /// blob whole and closes it before the log entry that points at it can be flushed),
    /// so a sync touches only those instead of listing a directory that can hold
    /// thousands of files. `None` where inotify is unavailable: then every sync lists.
    #[cfg(target_os = "linux")]
    watch: Option<inotify::Inotify>,
    /// The next sync lists the directory (first sync, or the event queue overflowed).
    list_next: bool,
    /// Every blob a listing has reported is named below this.
    listed_below: u64,
}

impl FileSyncer {
    pub(crate) fn new(dir: &Path) -> Result<Self> {
        let data_file =
            File::open(dir.join("db")).map_err(|e| storage("open sled data file", e))?;
        // The directory entries themselves (db, conf, blobs/) must survive too.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| storage("sync data dir", e))?;
        let blob_dir = dir.join("blobs");
        Ok(FileSyncer {
            data_file,
            #[cfg(target_os = "linux")]
            watch: watch_blobs(&blob_dir),
            blob_dir,
            list_next: true,
            listed_below: 0,
        })
    }

    pub(crate) fn sync(&mut self, db: &sled::Db) -> Result<()> {
        db.flush().map_err(sled_err)?;
        self.data_file
            .sync_data()
            .map_err(|e| storage("fdatasync sled data file", e))?;
        let new_blobs = self.new_blobs()?;
        let mut synced = 0;
        for name in new_blobs {
            match File::open(self.blob_dir.join(&name)) {
                Ok(f) => f
                    .sync_data()
                    .map_err(|e| storage("fdatasync sled blob", e))?,
                // sled garbage-collects blobs concurrently; a vanished one needs no sync.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(storage("open sled blob", e)),
            }
            synced += 1;
        }
        if synced > 0 {
            File::open(&self.blob_dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| storage("sync blob dir", e))?;
        }
        Ok(())
    }

    /// Blob files written since the last sync (every file, when listing).
    fn new_blobs(&mut self) -> Result<Vec<std::ffi::OsString>> {
        #[cfg(target_os = "linux")]
        if let Some(watch) = self.watch.as_mut() {
            let mut names = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match watch.read_events(&mut buf) {
                    Ok(events) => {
                        for e in events {
                            if e.mask.contains(inotify::EventMask::Q_OVERFLOW) {
                                self.list_next = true;
                            } else if let Some(name) = e.name {
                                names.push(name.to_owned());
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "blob watch failed, listing blobs from now on");
                        self.watch = None;
                        self.list_next = true;
                        break;
                    }
                }
            }
            if !self.list_next {
                return Ok(names);
            }
        }
        let entries = match std::fs::read_dir(&self.blob_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(storage("list sled blobs", e)),
        };
        // sled names a blob by the log sequence number that wrote it, so the files an
        // earlier listing saw are the ones below `listed_below`; only newer ones are new.
        let mut listed = Vec::new();
        let mut below = self.listed_below;
        for entry in entries.flatten() {
            let name = entry.file_name();
            match name.to_str().and_then(|n| n.parse::<u64>().ok()) {
                Some(lsn) if lsn < self.listed_below => {}
                Some(lsn) => {
                    below = below.max(lsn + 1);
                    listed.push(name);
                }
                None => {}
            }
        }
        self.listed_below = below;
        // With a watch, one listing catches up; without one, every sync lists.
        #[cfg(target_os = "linux")]
        {
            self.list_next = self.watch.is_none();
        }
        Ok(listed)
    }
}

/// A watch for blob files closed after writing; `None` (and a warning) if the kernel
/// refuses one, e.g. when the inotify watch limit is reached.
#[cfg(target_os = "linux")]
fn watch_blobs(blob_dir: &Path) -> Option<inotify::Inotify> {
    let watch = inotify::Inotify::init().and_then(|i| {
        std::fs::create_dir_all(blob_dir)?;
        i.watches()
            .add(blob_dir, inotify::WatchMask::CLOSE_WRITE)
            .map(|_| i)
    });
    match watch {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "no inotify watch on sled blobs, listing them after every flush");
            None
        }
    }
}

/// How long `open` waits for sled's file lock. sled releases it when the last of its
/// background threads lets go of the store, a moment after a `Db` is dropped, so a
/// store closed and reopened in one process (tests, `log import`) can find it still
/// held; another process holding the store keeps it, and `open` then fails.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Opens sled as the log uses it: no timer flush (the writer flushes after every group
/// commit; sled's timer would only add a second flusher).
fn open_db(path: &Path, cache_capacity: u64) -> Result<sled::Db> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        let opened = sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity)
            .flush_every_ms(None)
            .open();
        match opened {
            // sled reports a busy lock as `ErrorKind::Other` with this message.
            Err(sled::Error::Io(e))
                if e.to_string().starts_with("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => {
                return other
                    .map_err(|e| Error::Storage(format!("open sled at {}: {e}", path.display())))
            }
        }
    }
}

/// A storage error for every reply of a failed batch (`Error` is not `Clone`).
fn clone_storage(e: &Error) -> Error {
    Error::Storage(e.to_string())
}

fn failed_error() -> Error {
    Error::Storage("log refused writes after a storage failure; restart required".into())
}

fn storage(what: &str, e: std::io::Error) -> Error {
    Error::Storage(format!("{what}: {e}"))
}

fn sled_err(e: sled::Error) -> Error {
    Error::Storage(e.to_string())
}

fn be_u64(v: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = v
        .try_into()
        .map_err(|_| Error::Storage(format!("expected 8 bytes, found {}", v.len())))?;
    Ok(u64::from_be_bytes(arr))
}

fn event_key(position: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = EVENT;
    k[1..].copy_from_slice(&position.to_be_bytes());
    k
}

fn case_key(case_id: Uuid, version: u64) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[0] = CASE;
    k[1..17].copy_from_slice(case_id.as_bytes());
    k[17..].copy_from_slice(&version.to_be_bytes());
    k
}

fn commit_key(commit_id: Uuid) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = COMMIT;
    k[1..].copy_from_slice(commit_id.as_bytes());
    k
}

fn checkpoint_key(consumer: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(consumer.len() + 1);
    k.push(CHECKPOINT);
    k.extend_from_slice(consumer.as_bytes());
    k
}

/// The value of a legacy `K` key (stores now only read them; tests write them).
#[cfg(test)]
fn encode_commit(r: &CommitRecord) -> [u8; 48] {
    let mut v = [0u8; 48];
    v[..16].copy_from_slice(r.case_id.as_bytes());
    let a = &r.appended;
    for (i, n) in [
        a.first_version,
        a.last_version,
        a.first_position,
        a.last_position,
    ]
    .into_iter()
    .enumerate()
    {
        v[16 + i * 8..24 + i * 8].copy_from_slice(&n.to_be_bytes());
    }
    v
}

fn decode_commit(v: &[u8]) -> Result<CommitRecord> {
    if v.len() != 48 {
        return Err(Error::Storage(format!(
            "corrupt commit record of {} bytes",
            v.len()
        )));
    }
    let n = |i: usize| be_u64(&v[16 + i * 8..24 + i * 8]);
    Ok(CommitRecord {
        case_id: Uuid::from_slice(&v[..16]).map_err(|e| Error::Storage(e.to_string()))?,
        appended: Appended {
            case_id: Uuid::from_slice(&v[..16]).map_err(|e| Error::Storage(e.to_string()))?,
            first_version: n(0)?,
            last_version: n(1)?,
            first_position: n(2)?,
            last_position: n(3)?,
            deduplicated: false,
        },
    })
}

/// The raw durable-write reference for benchmarks: plain sled inserts with one shared
/// flush and the same `fdatasync` per batch as the log. Not part of the log's API.
#[doc(hidden)]
pub mod raw {
    use super::*;

    /// A sled database plus the log's sync routine.
    #[derive(Debug)]
    pub struct RawDurable {
        db: sled::Db,
        syncer: FileSyncer,
    }

    impl RawDurable {
        /// Opens a raw sled database configured like the log's.
        pub fn open(path: &Path) -> Result<Self> {
            let db = open_db(path, SledConfig::default().cache_capacity)?;
            let syncer = FileSyncer::new(path)?;
            Ok(RawDurable { db, syncer })
        }

        /// Inserts the records as one batch and makes them durable.
        pub fn write_batch(&mut self, records: &[(u64, Vec<u8>)]) -> Result<()> {
            let mut b = sled::Batch::default();
            for (k, v) in records {
                b.insert(&k.to_be_bytes(), v.as_slice());
            }
            self.db.apply_batch(b).map_err(sled_err)?;
            self.syncer.sync(&self.db)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_record_roundtrips() {
        let r = CommitRecord {
            case_id: Uuid::now_v7(),
            appended: Appended {
                case_id: Uuid::nil(),
                first_version: 3,
                last_version: 5,
                first_position: 100,
                last_position: 102,
                deduplicated: false,
            },
        };
        let back = decode_commit(&encode_commit(&r)).unwrap();
        assert_eq!(back.case_id, r.case_id);
        assert_eq!(
            back.appended,
            Appended {
                case_id: r.case_id,
                ..r.appended
            }
        );
        assert!(decode_commit(&[0; 47]).is_err());
    }

    fn runs(first_version: u64, runs: &[(u64, u32)]) -> CaseRuns {
        CaseRuns {
            first_version,
            runs: runs.to_vec(),
            versions: runs.iter().map(|r| u64::from(r.1)).sum(),
        }
    }

    proptest::proptest! {
        #[test]
        fn case_runs_roundtrip(
            first in 1u64..1_000_000,
            raw in proptest::collection::vec((1u64..u64::MAX / 2, 1u32..50), 1..40),
        ) {
            let r = runs(first, &raw);
            let key = case_key(Uuid::now_v7(), first);
            let back = CaseRuns::decode(&key, &r.encode()).unwrap();
            proptest::prop_assert_eq!(&back, &r);
            let positions: Vec<(u64, u64)> = back.positions().collect();
            proptest::prop_assert_eq!(positions.len() as u64, r.versions);
            for (i, (v, _)) in positions.iter().enumerate() {
                proptest::prop_assert_eq!(*v, first + i as u64);
            }
        }
    }

    #[test]
    fn case_runs_read_the_legacy_single_position_value() {
        let key = case_key(Uuid::now_v7(), 7);
        let r = CaseRuns::decode(&key, &42u64.to_be_bytes()).unwrap();
        assert_eq!(r.positions().collect::<Vec<_>>(), vec![(7, 42)]);
        assert!(CaseRuns::decode(&key, &[0; 13]).is_err());
        assert!(CaseRuns::decode(&key, &[]).is_err());
    }

    fn event(t: &str) -> NewEvent {
        NewEvent::new(t, "test", t.as_bytes().to_vec())
    }

    /// Writes three cases (multi-event commits, several commits per case) and returns
    /// their commits.
    async fn populate(log: &SledLog) -> Vec<(Uuid, Appended)> {
        let mut out = Vec::new();
        for c in 0..3 {
            let case = Uuid::now_v7();
            for k in 0..4 {
                let commit = Uuid::now_v7();
                let events = (0..=(c + k) % 3).map(|_| event("t")).collect();
                let a = log
                    .append(case, Expected::Any, events, commit)
                    .await
                    .unwrap();
                out.push((commit, a));
            }
        }
        out
    }

    /// What the index promises, checked through the log's API.
    async fn assert_indexed(log: &SledLog, commits: &[(Uuid, Appended)]) {
        for (commit, a) in commits {
            let retry = log
                .append(
                    Uuid::now_v7(),
                    Expected::NoStream,
                    vec![event("x")],
                    *commit,
                )
                .await
                .unwrap();
            assert!(retry.deduplicated);
            assert_eq!(
                Appended {
                    deduplicated: false,
                    ..retry
                },
                *a
            );
            let read = log
                .read_case(a.case_id, a.first_version, 1000)
                .await
                .unwrap();
            assert_eq!(read[0].position, a.first_position);
            assert_eq!(read[0].commit_id, *commit);
        }
        let (_, last) = commits.last().unwrap();
        let stale = log
            .append(
                last.case_id,
                Expected::Exact(last.last_version - 1),
                vec![event("x")],
                Uuid::now_v7(),
            )
            .await;
        assert!(
            matches!(stale, Err(Error::Conflict { actual, .. }) if actual == last.last_version)
        );
    }

    /// What `strip_index` leaves behind.
    #[derive(Clone, Copy, PartialEq)]
    enum Strip {
        /// No index durable at all, as if the indexer had written nothing before a crash.
        Unindexed,
        /// The commit index's directory is gone too (manifest and runs).
        LostCommitIndex,
        /// A store from before the indexer: one `C` key per version, a `K` key per
        /// commit, no watermark and no commit-index directory.
        Legacy,
    }

    /// Rewrites the index of a closed store (see [`Strip`]).
    fn strip_index(dir: &Path, strip: Strip) {
        let commit_dir = dir.join(COMMIT_DIR);
        let entries = {
            let (index, _) = CommitIndex::open(&commit_dir, None).unwrap();
            index.entries()
        };
        std::fs::remove_dir_all(&commit_dir).unwrap();
        let db = open_db(dir, 1 << 20).unwrap();
        let mut cases = Vec::new();
        for item in db.scan_prefix([CASE]) {
            let (k, v) = item.unwrap();
            cases.push(
                CaseRuns::decode(&k, &v)
                    .unwrap()
                    .positions()
                    .map(|p| (Uuid::from_slice(&k[1..17]).unwrap(), p))
                    .collect::<Vec<_>>(),
            );
            db.remove(k).unwrap();
        }
        match strip {
            Strip::Unindexed => {
                db.insert(META_INDEXED, &0u64.to_be_bytes()).unwrap();
                CommitIndex::open(&commit_dir, None).unwrap();
            }
            Strip::LostCommitIndex => {
                db.insert(META_INDEXED, &0u64.to_be_bytes()).unwrap();
            }
            Strip::Legacy => {
                for (case, (v, pos)) in cases.into_iter().flatten() {
                    db.insert(case_key(case, v), &pos.to_be_bytes()).unwrap();
                }
                for (id, rec) in entries {
                    db.insert(commit_key(id), encode_commit(&rec).as_slice())
                        .unwrap();
                }
                db.remove(META_INDEXED).unwrap();
                db.remove(META_COMMIT_RUNS).unwrap();
            }
        }
        db.flush().unwrap();
    }

    #[tokio::test]
    async fn a_store_in_use_is_refused_and_free_again_once_closed() {
        let dir = tempfile::tempdir().unwrap();
        let log = SledLog::open(dir.path(), SledConfig::default()).unwrap();
        match SledLog::open(dir.path(), SledConfig::default()) {
            Err(Error::Storage(m)) => assert!(m.contains("could not acquire lock"), "{m}"),
            other => panic!("second open: {other:?}"),
        }
        drop(log);
        SledLog::open(dir.path(), SledConfig::default()).unwrap();
    }

    #[tokio::test]
    async fn index_is_rebuilt_from_the_events_after_the_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let log = SledLog::open(dir.path(), SledConfig::default()).unwrap();
        let commits = populate(&log).await;
        assert_indexed(&log, &commits).await;
        drop(log);
        for strip in [Strip::Unindexed, Strip::LostCommitIndex] {
            strip_index(dir.path(), strip);
            let log = SledLog::open(dir.path(), SledConfig::default()).unwrap();
            assert_indexed(&log, &commits).await;
            assert_eq!(log.shared.commits.watermark(), log.shared.durable_head());
            assert!(!log.shared.commits.legacy());
        }
    }

    #[tokio::test]
    async fn stores_with_one_case_key_per_version_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let log = SledLog::open(dir.path(), SledConfig::default()).unwrap();
        let commits = populate(&log).await;
        drop(log);
        strip_index(dir.path(), Strip::Legacy);
        let log = SledLog::open(dir.path(), SledConfig::default()).unwrap();
        assert!(log.shared.commits.legacy());
        assert_indexed(&log, &commits).await;
        // New commits add run keys after the legacy ones.
        let (_, last) = commits.last().unwrap();
        let a = log
            .append(
                last.case_id,
                Expected::Exact(last.last_version),
                vec![event("y")],
                Uuid::now_v7(),
            )
            .await
            .unwrap();
        drop(log);
        let log = SledLog::open(dir.path(), SledConfig::default()).unwrap();
        let read = log.read_case(last.case_id, 1, 1000).await.unwrap();
        assert_eq!(read.len() as u64, a.last_version);
        assert_eq!(read.last().unwrap().position, a.first_position);
    }

    #[tokio::test]
    async fn a_long_stream_spans_several_case_keys() {
        let dir = tempfile::tempdir().unwrap();
        let log = SledLog::open(dir.path(), SledConfig::default()).unwrap();
        let case = Uuid::now_v7();
        let other = Uuid::now_v7();
        let n = MAX_RUN_VERSIONS * 2 + 10;
        for i in 0..n {
            log.append(case, Expected::Exact(i), vec![event("a")], Uuid::now_v7())
                .await
                .unwrap();
            if i % 100 == 0 {
                log.append(other, Expected::Any, vec![event("b")], Uuid::now_v7())
                    .await
                    .unwrap();
            }
        }
        drop(log);
        let log = SledLog::open(dir.path(), SledConfig::default()).unwrap();
        for from in [
            1,
            MAX_RUN_VERSIONS - 1,
            MAX_RUN_VERSIONS,
            MAX_RUN_VERSIONS + 1,
            n,
        ] {
            let read = log.read_case(case, from, 50).await.unwrap();
            let versions: Vec<u64> = read.iter().map(|e| e.version).collect();
            let want: Vec<u64> = (from..=n).take(50).collect();
            assert_eq!(versions, want, "reading from {from}");
        }
        assert!(log.read_case(case, n + 1, 10).await.unwrap().is_empty());
        assert_eq!(log.shared.case_head(case).unwrap(), n);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_blob_watch_reports_exactly_the_blobs_written_since_the_last_sync() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new()
            .path(dir.path())
            .flush_every_ms(None)
            .open()
            .unwrap();
        let mut syncer = FileSyncer::new(dir.path()).unwrap();
        assert!(syncer.watch.is_some());
        syncer.sync(&db).unwrap();
        assert!(
            !syncer.list_next,
            "the first sync lists once, then the watch takes over"
        );
        // Small values stay in the log segments: nothing to sync.
        db.insert(b"small", vec![1u8; 100]).unwrap();
        db.flush().unwrap();
        assert!(syncer.new_blobs().unwrap().is_empty());
        // A value over sled's blob threshold (segment / 4) gets its own file.
        db.insert(b"large", vec![2u8; 300 * 1024]).unwrap();
        db.flush().unwrap();
        let new = syncer.new_blobs().unwrap();
        let listed: Vec<_> = std::fs::read_dir(dir.path().join("blobs"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(new.len(), 1, "{new:?}");
        assert!(listed.contains(&new[0]), "{new:?} not in {listed:?}");
        assert!(syncer.new_blobs().unwrap().is_empty(), "reported twice");
        syncer.sync(&db).unwrap();
    }

    #[test]
    fn keys_sort_by_number() {
        assert!(event_key(255) < event_key(256));
        let c = Uuid::now_v7();
        assert!(case_key(c, 9) < case_key(c, 10));
    }
}
