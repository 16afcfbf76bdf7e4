//! The embedded backend: one sled database, one writer thread, group commit.
//!
//! Layout (one sled tree, so one `apply_batch` is atomic across all of it):
//!
//! | key                              | value                                    |
//! |----------------------------------|------------------------------------------|
//! | `E` position(u64 BE)             | protobuf `RecordedEvent`                 |
//! | `C` case(16) version(u64 BE)     | position (u64 BE)                        |
//! | `K` commit(16)                   | case(16) first/last version, first/last position (4×u64 BE) |
//! | `P` consumer name                | checkpoint position (u64 BE)             |
//! | `Mhead`                          | last written position (u64 BE)           |
//!
//! Why one writer thread: it owns the counters (no `generate_id`, which has gaps), so
//! versions and positions are assigned without locks and without races, and exactly one
//! thread ever flushes (sled 0.34's `flush_async` deadlocks when many tasks flush at
//! once). It drains whatever is queued, writes it as one batch, flushes once and then
//! `fdatasync`s sled's files: sled's own flush only issues `sync_file_range` on Linux,
//! which survives a process crash but not power loss.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::codec::{decode_event, encode_event, now_micros};
use crate::{
    check_consumer, clamp_limit, Appended, Error, EventLog, EventStream, Expected, Filter, Limits,
    NewEvent, RecordedEvent, Result,
};

const EVENT: u8 = b'E';
const CASE: u8 = b'C';
const COMMIT: u8 = b'K';
const CHECKPOINT: u8 = b'P';
const META_HEAD: &[u8] = b"Mhead";

/// Settings of the sled backend.
#[derive(Debug, Clone)]
pub struct SledConfig {
    /// Request limits.
    pub limits: Limits,
    /// Live events buffered per subscriber before it falls back to reading storage.
    pub live_buffer: usize,
    /// Most operations written by one group commit.
    pub max_batch: usize,
    /// sled page cache size in bytes.
    pub cache_capacity: u64,
}

impl Default for SledConfig {
    fn default() -> Self {
        SledConfig {
            limits: Limits::default(),
            live_buffer: 4096,
            max_batch: 1024,
            cache_capacity: 256 * 1024 * 1024,
        }
    }
}

/// The embedded event log over sled 0.34. Only one process may open a data directory
/// (sled holds an exclusive file lock); other processes reach it through the gRPC face.
#[derive(Debug)]
pub struct SledLog {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Op>,
    writer: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    db: sled::Db,
    /// Highest position that is durable; readers never look past it.
    durable_head: AtomicU64,
    /// Set after a storage error: the outcome of the failed batch is unknown, so the log
    /// refuses further writes until it is reopened (and recovery decides).
    failed: AtomicBool,
    live: broadcast::Sender<Arc<RecordedEvent>>,
    closed: CancellationToken,
    config: SledConfig,
}

enum Op {
    Append {
        case_id: Uuid,
        expected: Expected,
        events: Vec<NewEvent>,
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
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(config.cache_capacity)
            // We flush explicitly after every group commit; sled's timer flush would
            // only add a second flusher.
            .flush_every_ms(None)
            .open()
            .map_err(|e| Error::Storage(format!("open sled at {}: {e}", path.display())))?;
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
        let syncer = FileSyncer::new(&path)?;
        let (live, _) = broadcast::channel(config.live_buffer.max(1));
        let shared = Arc::new(Shared {
            db,
            durable_head: AtomicU64::new(head),
            failed: AtomicBool::new(false),
            live,
            closed: CancellationToken::new(),
            config,
        });
        let (queue, rx) = mpsc::channel(shared.config.max_batch.max(1) * 4);
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("onecity-log-writer".into())
            .spawn(move || Writer::new(writer_shared, syncer, head).run(rx))
            .map_err(|e| storage("spawn writer thread", e))?;
        tracing::info!(path = %path.display(), head, "event log opened");
        Ok(SledLog {
            shared,
            queue,
            writer: Some(writer),
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
        // Closing the queue stops the writer after its current batch; joining makes sure
        // nothing is half-written when the caller reopens the directory.
        let (dead, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.queue, dead));
        if let Some(w) = self.writer.take() {
            let _ = w.join();
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
        let (reply, rx) = oneshot::channel();
        let op = Op::Append {
            case_id,
            expected,
            events,
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
    /// The case's last version: the last `C` key of the case (a reverse seek), so no
    /// separate head record has to be written with every commit.
    fn case_head(&self, case_id: Uuid) -> Result<u64> {
        let last = self
            .db
            .range(case_key(case_id, 0)..=case_key(case_id, u64::MAX))
            .keys()
            .next_back()
            .transpose()
            .map_err(sled_err)?;
        match last {
            Some(k) => be_u64(&k[17..]),
            None => Ok(0),
        }
    }

    fn durable_head(&self) -> u64 {
        self.durable_head.load(Ordering::Acquire)
    }

    fn read_all(&self, from: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        let from = from.max(1);
        let head = self.durable_head();
        if from > head || limit == 0 {
            return Ok(Vec::new());
        }
        let last = head.min(from.saturating_add(limit as u64 - 1));
        self.db
            .range(event_key(from)..=event_key(last))
            .values()
            .map(|v| decode_event(&v.map_err(sled_err)?))
            .collect()
    }

    fn read_case(
        &self,
        case_id: Uuid,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let head = self.durable_head();
        // Version 1 not yet durable (or absent) means the case does not exist for readers.
        match self.db.get(case_key(case_id, 1)).map_err(sled_err)? {
            Some(pos) if be_u64(&pos)? <= head => {}
            _ => return Err(Error::NotFound(case_id)),
        }
        let mut out = Vec::new();
        let start = case_key(case_id, from_version.max(1));
        let end = case_key(case_id, u64::MAX);
        for item in self.db.range(start..=end) {
            if out.len() >= limit {
                break;
            }
            let (_, pos) = item.map_err(sled_err)?;
            let pos = be_u64(&pos)?;
            if pos > head {
                break;
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
                let batch = match self.read_all(next, CHUNK) {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                if batch.is_empty() {
                    break;
                }
                for event in batch {
                    next = event.position + 1;
                    if filter.matches(&event) && tx.send(Ok(event)).await.is_err() {
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
                    Ok(event) if event.position < next => {}
                    Ok(event) if event.position > next => continue 'catch_up,
                    Ok(event) => {
                        next += 1;
                        if filter.matches(&event) && tx.send(Ok((*event).clone())).await.is_err() {
                            return;
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

/// The single writer: owns the counters and the only flush.
struct Writer {
    shared: Arc<Shared>,
    syncer: FileSyncer,
    head: u64,
}

/// Replies held until the batch is durable.
enum Reply {
    Append(oneshot::Sender<Result<Appended>>, Result<Appended>),
    Checkpoint(oneshot::Sender<Result<()>>),
}

#[derive(Clone, Copy)]
struct CommitRecord {
    case_id: Uuid,
    appended: Appended,
}

impl Writer {
    fn new(shared: Arc<Shared>, syncer: FileSyncer, head: u64) -> Self {
        Writer {
            shared,
            syncer,
            head,
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        let max_batch = self.shared.config.max_batch.max(1);
        while let Some(first) = rx.blocking_recv() {
            let mut ops = vec![first];
            while ops.len() < max_batch {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            self.write_batch(ops);
        }
        tracing::debug!("event log writer stopped");
    }

    fn write_batch(&mut self, ops: Vec<Op>) {
        if self.shared.failed.load(Ordering::Acquire) {
            for op in ops {
                match op {
                    Op::Append { reply, .. } => drop(reply.send(Err(failed_error()))),
                    Op::Checkpoint { reply, .. } => drop(reply.send(Err(failed_error()))),
                }
            }
            return;
        }
        let mut batch = sled::Batch::default();
        let mut wrote = false;
        let mut heads: HashMap<Uuid, u64> = HashMap::new();
        let mut commits: HashMap<Uuid, CommitRecord> = HashMap::new();
        let mut new_events: Vec<Arc<RecordedEvent>> = Vec::new();
        let mut replies = Vec::with_capacity(ops.len());
        let mut next_position = self.head + 1;
        let recorded_at = now_micros();

        for op in ops {
            match op {
                Op::Append {
                    case_id,
                    expected,
                    events,
                    commit_id,
                    reply,
                } => {
                    let result = self.stage_append(
                        &mut batch,
                        &mut heads,
                        &mut commits,
                        &mut new_events,
                        &mut next_position,
                        recorded_at,
                        (case_id, expected, events, commit_id),
                    );
                    wrote |= matches!(result, Ok(a) if !a.deduplicated);
                    replies.push(Reply::Append(reply, result));
                }
                Op::Checkpoint {
                    consumer,
                    position,
                    reply,
                } => {
                    batch.insert(checkpoint_key(&consumer), &position.to_be_bytes());
                    wrote = true;
                    replies.push(Reply::Checkpoint(reply));
                }
            }
        }

        if wrote {
            let new_head = next_position - 1;
            batch.insert(META_HEAD, &new_head.to_be_bytes());
            if let Err(e) = self.commit(batch) {
                tracing::error!(error = %e, "event log write failed, refusing further writes");
                self.shared.failed.store(true, Ordering::Release);
                for r in replies {
                    match r {
                        Reply::Append(tx, _) => drop(tx.send(Err(e.clone_storage()))),
                        Reply::Checkpoint(tx) => drop(tx.send(Err(e.clone_storage()))),
                    }
                }
                return;
            }
            self.head = new_head;
            // Order matters: advance the durable head before publishing, so a subscriber
            // that misses the broadcast finds the events in storage.
            self.shared.durable_head.store(new_head, Ordering::Release);
            for e in new_events {
                // No receivers is fine: nobody is subscribed.
                let _ = self.shared.live.send(e);
            }
        }
        for r in replies {
            match r {
                Reply::Append(tx, result) => drop(tx.send(result)),
                Reply::Checkpoint(tx) => drop(tx.send(Ok(()))),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn stage_append(
        &self,
        batch: &mut sled::Batch,
        heads: &mut HashMap<Uuid, u64>,
        commits: &mut HashMap<Uuid, CommitRecord>,
        new_events: &mut Vec<Arc<RecordedEvent>>,
        next_position: &mut u64,
        recorded_at: SystemTime,
        (case_id, expected, events, commit_id): (Uuid, Expected, Vec<NewEvent>, Uuid),
    ) -> Result<Appended> {
        // Idempotency first: a retry of a commit that succeeded must succeed again,
        // even though its expected version no longer matches.
        let previous = match commits.get(&commit_id) {
            Some(r) => Some(*r),
            None => self.load_commit(commit_id)?,
        };
        if let Some(rec) = previous {
            return Ok(Appended {
                deduplicated: true,
                ..rec.appended
            });
        }
        let current = match heads.get(&case_id) {
            Some(v) => *v,
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
            first_position: *next_position,
            last_position: *next_position + n - 1,
            deduplicated: false,
        };
        for (i, e) in events.into_iter().enumerate() {
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
            batch.insert(&event_key(recorded.position), encode_event(&recorded));
            batch.insert(
                &case_key(case_id, recorded.version),
                &recorded.position.to_be_bytes(),
            );
            new_events.push(Arc::new(recorded));
        }
        let rec = CommitRecord { case_id, appended };
        batch.insert(&commit_key(commit_id), encode_commit(&rec).as_slice());
        heads.insert(case_id, appended.last_version);
        commits.insert(commit_id, rec);
        *next_position += n;
        Ok(appended)
    }

    fn load_commit(&self, commit_id: Uuid) -> Result<Option<CommitRecord>> {
        match self
            .shared
            .db
            .get(commit_key(commit_id))
            .map_err(sled_err)?
        {
            Some(v) => decode_commit(&v).map(Some),
            None => Ok(None),
        }
    }

    fn commit(&mut self, batch: sled::Batch) -> Result<()> {
        self.shared.db.apply_batch(batch).map_err(sled_err)?;
        self.syncer.sync(&self.shared.db)
    }
}

/// Makes sled's writes survive power loss: `flush` (which on Linux ends in
/// `sync_file_range`, pushing pages to the device but not its cache or the file's
/// metadata), then `fdatasync` on the data file, and on any blob file sled wrote
/// (values too large for a log segment go to `blobs/`, which sled never syncs).
#[derive(Debug)]
pub(crate) struct FileSyncer {
    data_file: File,
    blob_dir: PathBuf,
    synced_blobs: u64,
}

impl FileSyncer {
    pub(crate) fn new(dir: &Path) -> Result<Self> {
        let data_file =
            File::open(dir.join("db")).map_err(|e| storage("open sled data file", e))?;
        // The directory entries themselves (db, conf, blobs/) must survive too.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| storage("sync data dir", e))?;
        Ok(FileSyncer {
            data_file,
            blob_dir: dir.join("blobs"),
            synced_blobs: 0,
        })
    }

    pub(crate) fn sync(&mut self, db: &sled::Db) -> Result<()> {
        db.flush().map_err(sled_err)?;
        self.data_file
            .sync_data()
            .map_err(|e| storage("fdatasync sled data file", e))?;
        self.sync_new_blobs()
    }

    fn sync_new_blobs(&mut self) -> Result<()> {
        let entries = match std::fs::read_dir(&self.blob_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(storage("list sled blobs", e)),
        };
        let mut newest = self.synced_blobs;
        for entry in entries.flatten() {
            let Some(lsn) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if lsn < self.synced_blobs {
                continue;
            }
            match File::open(entry.path()) {
                Ok(f) => f
                    .sync_data()
                    .map_err(|e| storage("fdatasync sled blob", e))?,
                // sled garbage-collects blobs concurrently; a vanished one needs no sync.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(storage("open sled blob", e)),
            }
            newest = newest.max(lsn + 1);
        }
        if newest != self.synced_blobs {
            File::open(&self.blob_dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| storage("sync blob dir", e))?;
            self.synced_blobs = newest;
        }
        Ok(())
    }
}

impl Error {
    fn clone_storage(&self) -> Error {
        Error::Storage(self.to_string())
    }
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
            let db = sled::Config::new()
                .path(path)
                .flush_every_ms(None)
                .open()
                .map_err(sled_err)?;
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

    #[test]
    fn keys_sort_by_number() {
        assert!(event_key(255) < event_key(256));
        let c = Uuid::now_v7();
        assert!(case_key(c, 9) < case_key(c, 10));
    }
}
