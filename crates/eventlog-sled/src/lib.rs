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
//! only ones on the critical path. The writer thread (`writer`) owns the counters (no
//! `generate_id`, which has gaps) and is the only thread that flushes (sled 0.34's
//! `flush_async` deadlocks when many tasks flush at once); after each flush it
//! `fdatasync`s sled's files (`sync`), since sled's own flush only issues
//! `sync_file_range` on Linux, which survives a process crash but not power loss. The
//! indexer thread (`indexer`) writes the case index and the commit-id index
//! (`commit_index`) behind it, and an in-memory overlay (`overlay`) covers what it has
//! not written yet; `read` serves reads and subscriptions from all of them, and `keys`
//! and `record` hold the encodings. docs/eventlog.md has the full story.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use onecity_eventlog::chain::{self, Hash};
use onecity_eventlog::{
    check_consumer, clamp_limit, Appended, Error, EventLog, EventStream, Expected, Filter, Limits,
    NewEvent, RecordedEvent, Result, MAX_READ_LIMIT,
};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::commit_index::{CommitIndex, Found, FLUSH_ENTRIES};
use crate::indexer::{compact, reindex, Indexer};
use crate::keys::{
    be_u64, checkpoint_key, event_key, COMMIT_DIR, META_COMMIT_RUNS, META_HEAD, META_INDEXED,
};
use crate::overlay::Overlay;
use crate::record::{compress_payload, decode_event};
use crate::sync::FileSyncer;
use crate::writer::Writer;

/// Histogram: seconds from the write path's receipt of an append to its batch being
/// durable (one sample per append of the batch).
pub const APPEND_DURATION: &str = "onecity_log_append_duration_seconds";
/// Histogram: replies (appends and checkpoint saves) written and synced as one batch.
pub const GROUP_COMMIT_SIZE: &str = "onecity_log_group_commit_size";
/// Histogram: seconds to flush and `fdatasync` one batch.
pub const FSYNC_DURATION: &str = "onecity_log_fsync_duration_seconds";
/// Counter: batches that failed to be written; the log refuses writes after the first.
pub const WRITE_FAILURES: &str = "onecity_log_write_failures_total";

mod commit_index;
mod indexer;
mod keys;
mod overlay;
mod read;
mod record;
mod sync;
#[cfg(feature = "testing")]
pub mod testing;
mod writer;

/// Settings of the sled backend.
#[derive(Debug, Clone)]
pub struct SledConfig {
    /// Request limits.
    pub limits: Limits,
    /// Live group commits (batches of up to `max_batch` commits' events) a subscriber
    /// may trail the writer by before it falls back to reading storage. The broadcast
    /// keeps the last this-many batches alive, so it is also a memory bound (this many
    /// batches of `max_batch` commits' events).
    pub live_buffer: usize,
    /// Most operations written by one group commit.
    pub max_batch: usize,
    /// sled page cache size in bytes. 64 MiB by default: the log's hot set is its tail
    /// (live subscribers are fed from memory, not from sled) and the projections keep
    /// their own state, so a larger cache mostly holds pages a cold-start replay read
    /// once (a larger cache raised a cold start's peak memory without making it faster;
    /// docs/performance.md).
    pub cache_capacity: u64,
    /// Commit-id index entries held in memory before the indexer writes them as a run
    /// file. A crash costs re-reading up to this many commits' events on open; small
    /// values make runs and merges frequent (tests).
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
        /// Each event's [`chain::payload_digest`], also off the writer thread.
        digests: Vec<Hash>,
        appended_by: String,
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
        // The next commit chains onto the last one written (GENESIS on a store whose
        // last commit predates the chain: the chain starts there).
        let chain_head = match head {
            0 => chain::GENESIS,
            _ => {
                let last = db
                    .get(event_key(head))
                    .map_err(sled_err)?
                    .ok_or_else(|| Error::Storage(format!("log head {head} has no event")))?;
                decode_event(&last)?
                    .chain
                    .map_or(chain::GENESIS, |l| l.hash)
            }
        };
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
            chain_head,
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
    async fn append_as(
        &self,
        appended_by: &str,
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
        let digests = events
            .iter()
            .map(|e| chain::payload_digest(&e.payload))
            .collect();
        let (reply, rx) = oneshot::channel();
        let op = Op::Append {
            case_id,
            expected,
            events,
            compressed,
            digests,
            appended_by: appended_by.to_owned(),
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

    async fn subscribe_case(&self, case_id: Uuid, from_version: u64) -> Result<EventStream> {
        // Armed before the first read: the writer publishes each group commit after making
        // it durable, so a commit the first read misses is announced here.
        let live = self.shared.live.subscribe();
        let closed = self.shared.closed.clone();
        let wake = futures::stream::unfold((live, closed), move |(mut live, closed)| async move {
            loop {
                let received = tokio::select! {
                    r = live.recv() => r,
                    () = closed.cancelled() => return None,
                };
                match received {
                    Ok(batch) if !batch.iter().any(|e| e.case_id == case_id) => continue,
                    // A lagged receiver may have missed the case's commit: read to find out.
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        return Some(((), (live, closed)))
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        let shared = Arc::clone(&self.shared);
        let read = move |from: u64| {
            let read = shared.read_case(case_id, from, MAX_READ_LIMIT);
            async move { read }
        };
        Ok(onecity_eventlog::follow::case(
            case_id,
            from_version,
            read,
            wake,
            None,
        ))
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
    use crate::indexer::{CaseRuns, MAX_RUN_VERSIONS};
    use crate::keys::{case_key, commit_key, encode_commit, CASE};

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
}
