//! The NATS JetStream backend: the same [`EventLog`] contract over a replicated stream.
//!
//! What it puts on the server (names derive from [`JetStreamConfig::prefix`], here
//! `onecity`):
//!
//! | what | where |
//! |------|-------|
//! | one message per commit, all its events | stream `onecity-log`, subject `onecity.case.<case id>` |
//! | void messages (close an abandoned attempt) | same stream, subject `onecity.void` |
//! | commit records (idempotency) | KV bucket `onecity-commits`, key = commit id |
//! | checkpoints | KV bucket `onecity-checkpoints`, key = hex of the consumer name |
//!
//! **Numbering.** Every append is published with `Nats-Expected-Last-Sequence` set to
//! the stream's last sequence as the writer saw it when it checked the expected version.
//! The server accepts at most one message per sequence and checks this header when it
//! applies the message (in a cluster: in Raft order on every replica), so appends are
//! totally ordered and each one is accepted only if nothing was written since its
//! writer looked. That single check makes the numbering and the version check race-free:
//! the message carries its first position and first version in headers (position of
//! event `i` = first position + `i`), computed from the message before it. The
//! per-subject `Nats-Expected-Last-Subject-Sequence` is sent too, as a second guard,
//! but not relied on: in 2.9 clusters the leader checks it before proposing, against
//! state that does not include proposals in flight, so two writers can both pass.
//!
//! **Idempotency.** Before publishing, the writer records the attempt (the stream
//! sequence it expects to take) in the `commits` bucket: a create-if-absent for the first
//! attempt, a plain put (kept as history) for later ones. Because a writer always looks
//! at the stream's tail *before* it reads or creates the record and publishes with the
//! tail it looked at, a commit already in the log is always found through its record,
//! and two attempts of one commit can never both land (the later one expects a tail
//! that no longer exists). A retry resolves the records: an attempt whose sequence holds
//! the commit is the answer; an attempt whose sequence holds another commit failed; an
//! attempt at the next sequence may still be in flight (its writer crashed or lost the
//! ack), so the retry publishes again at that very sequence (exactly one of the two can
//! land), or, if the retry's expected version no longer admits it, closes the attempt
//! with a void message before reporting the conflict.
//!
//! See `docs/eventlog.md` ("JetStream backend") for durability (R1 versus R3), limits
//! and the crash story.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull::{self, Batch};
use async_nats::jetstream::consumer::{AckPolicy, Consumer, DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::context::{
    CreateStreamErrorKind, GetStreamErrorKind, PublishError, PublishErrorKind,
};
use async_nats::jetstream::message::{PublishMessage, StreamMessage};
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::stream::{
    self, DiscardPolicy, RawMessageErrorKind, RetentionPolicy, StorageType,
};
use async_nats::jetstream::{self as js, ErrorCode};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use onecity_eventlog::codec::now_micros;
use onecity_eventlog::{
    check_consumer, clamp_limit, Appended, Error, EventLog, EventStream, Expected, Filter, Limits,
    NewEvent, RecordedEvent, Result,
};

mod wire;

#[cfg(feature = "testing")]
pub mod testing;

use wire::{CommitBody, CommitMeta, Names};

/// Settings of the JetStream backend.
#[derive(Debug, Clone)]
pub struct JetStreamConfig {
    /// Server URL(s), comma-separated, e.g. `nats://10.0.0.1:4222,nats://10.0.0.2:4222`.
    pub url: String,
    /// Names everything the log owns on the server (streams, subjects, buckets), so
    /// several independent logs can share one server. ASCII letters, digits, `_`, `-`.
    pub prefix: String,
    /// Replicas of every stream. 3 (the default) is the production setting: the quorum
    /// ack is what makes a commit durable. 1 is for development and CI only: nats-server
    /// 2.9 acknowledges before it fsyncs, so with one replica an acknowledged commit can
    /// be lost on power failure (see "Durability" in `docs/eventlog.md`).
    pub replicas: usize,
    /// Request limits (the same as every backend's).
    pub limits: Limits,
    /// How long a request to the server (and a publish ack) may take.
    pub request_timeout: Duration,
    /// Events buffered per subscriber.
    pub live_buffer: usize,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        JetStreamConfig {
            url: "nats://127.0.0.1:4222".into(),
            prefix: "onecity".into(),
            replicas: 3,
            limits: Limits::default(),
            request_timeout: Duration::from_secs(10),
            live_buffer: 256,
        }
    }
}

/// The event log over NATS JetStream (nats-server 2.9 or newer, JetStream enabled,
/// `max_payload` large enough for the largest event; see `docs/eventlog.md`).
///
/// Any number of processes may open the same log: appends from different processes
/// are serialised by the server, reads go to the stream leader.
pub struct JetStreamLog {
    inner: Arc<Inner>,
    writer: mpsc::Sender<AppendOp>,
}

impl fmt::Debug for JetStreamLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

struct Inner {
    js: js::Context,
    names: Names,
    url: String,
    log: stream::Stream,
    commits: stream::Stream,
    checkpoints: stream::Stream,
    limits: Limits,
    /// The server's `max_payload`: the largest commit message it takes.
    max_payload: usize,
    live_buffer: usize,
    /// Where commits sit in the stream, learned from every message read or written:
    /// first position → (stream sequence, events). Messages never move, so entries never
    /// go stale; the map is only bounded.
    positions: Mutex<BTreeMap<u64, (u64, u64)>>,
    closed: CancellationToken,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JetStreamLog")
            .field("url", &self.url)
            .field("stream", &self.names.log_stream())
            .finish_non_exhaustive()
    }
}

/// Longest time a subscription keeps retrying a failing server before it ends with
/// an error (long enough for a cluster to elect a new stream leader).
const SUBSCRIPTION_PATIENCE: Duration = Duration::from_secs(30);
/// How long a pull waits for messages; an empty pull makes the scanner check that its
/// consumer still exists, so this bounds how long a vanished consumer goes unnoticed.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// Messages per pull of a subscription.
const PULL_BATCH: u64 = 256;
/// A `read_all` spanning fewer messages than this uses concurrent gets, not a consumer.
const GET_RANGE: u64 = 16;
/// History kept per commit record: one entry per publish attempt of the commit.
const RECORD_HISTORY: i64 = 64;
/// Rounds an append tries before giving up on contention.
const MAX_ROUNDS: usize = 64;
/// Publishes with an unknown outcome (lost ack) an append tolerates before giving up.
const MAX_UNKNOWN: usize = 3;
const MAX_CACHED_CASES: usize = 100_000;
const MAX_CACHED_POSITIONS: usize = 200_000;

impl JetStreamLog {
    /// Connects, checks the server (version ≥ 2.9, JetStream on, `max_payload` big
    /// enough for the limits), and creates the log's streams or verifies them.
    pub async fn connect(config: JetStreamConfig) -> Result<Self> {
        let names = Names::new(&config.prefix)?;
        if config.replicas == 0 || config.replicas > 5 {
            return Err(Error::invalid("replicas", "must be 1 to 5"));
        }
        let client = async_nats::ConnectOptions::new()
            .name("onecity-eventlog")
            .connection_timeout(config.request_timeout)
            .request_timeout(Some(config.request_timeout))
            .connect(
                config
                    .url
                    .split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .collect::<Vec<_>>(),
            )
            .await
            .map_err(|e| Error::Unavailable(format!("connect to nats at {}: {e}", config.url)))?;
        let info = client.server_info();
        wire::check_server_version(&info.version)?;
        if !info.jetstream {
            return Err(Error::Unavailable(format!(
                "jetstream is not enabled on the nats server at {} (start it with -js)",
                config.url
            )));
        }
        // One event of the largest allowed payload must fit in a message, or the log
        // would accept on paper what the server refuses at run time.
        let needed = config.limits.max_payload_bytes + 64 * 1024;
        if info.max_payload < needed {
            return Err(Error::Unavailable(format!(
                "the nats server at {} has max_payload {} bytes, but an event may carry {} bytes: \
                 set max_payload to at least {needed} (8MB is recommended) in its configuration, \
                 or lower limits.max_payload_bytes",
                config.url, info.max_payload, config.limits.max_payload_bytes
            )));
        }
        let mut ctx = js::new(client.clone());
        ctx.set_timeout(config.request_timeout);
        let r = config.replicas;
        let log = ensure_stream(&ctx, log_stream_config(&names, r)).await?;
        let commits = ensure_stream(
            &ctx,
            kv_stream_config(&names.commits_bucket(), RECORD_HISTORY, r),
        )
        .await?;
        let checkpoints =
            ensure_stream(&ctx, kv_stream_config(&names.checkpoints_bucket(), 1, r)).await?;
        let inner = Arc::new(Inner {
            js: ctx,
            names,
            url: config.url.clone(),
            log,
            commits,
            checkpoints,
            limits: config.limits,
            max_payload: info.max_payload,
            live_buffer: config.live_buffer.max(1),
            positions: Mutex::new(BTreeMap::new()),
            closed: CancellationToken::new(),
        });
        let (writer, rx) = mpsc::channel(1024);
        tokio::spawn(
            Writer {
                inner: Arc::clone(&inner),
                tail: None,
                cases: HashMap::new(),
            }
            .run(rx),
        );
        tracing::info!(
            url = %config.url,
            stream = %inner.names.log_stream(),
            server = %info.version,
            replicas = r,
            "jetstream event log connected"
        );
        Ok(JetStreamLog { inner, writer })
    }

    /// Ends every subscription and stops accepting writes.
    pub fn shutdown(&self) {
        self.inner.closed.cancel();
    }
}

impl Drop for JetStreamLog {
    fn drop(&mut self) {
        self.inner.closed.cancel();
    }
}

#[async_trait::async_trait]
impl EventLog for JetStreamLog {
    async fn append(
        &self,
        case_id: Uuid,
        expected: Expected,
        events: Vec<NewEvent>,
        commit_id: Uuid,
    ) -> Result<Appended> {
        self.inner
            .limits
            .check_append(case_id, &events, commit_id)?;
        if self.inner.closed.is_cancelled() {
            return Err(shut_down());
        }
        let (reply, rx) = oneshot::channel();
        let op = AppendOp {
            case_id,
            expected,
            events,
            commit_id,
            reply,
        };
        // The writer task finishes an append even if this future is dropped, so a
        // cancelled caller never leaves the writer's view of the stream half-updated.
        self.writer.send(op).await.map_err(|_| shut_down())?;
        rx.await.map_err(|_| shut_down())?
    }

    async fn read_case(
        &self,
        case_id: Uuid,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.inner
            .read_case(case_id, from_version.max(1), clamp_limit(limit))
            .await
    }

    async fn read_all(&self, from_position: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.inner
            .read_all(from_position.max(1), clamp_limit(limit))
            .await
    }

    async fn subscribe(&self, from_position: u64, filter: Filter) -> Result<EventStream> {
        if self.inner.closed.is_cancelled() {
            return Err(shut_down());
        }
        let (tx, rx) = mpsc::channel(self.inner.live_buffer);
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            let mut sub = Subscription {
                scanner: None,
                next_position: from_position.max(1),
                filter,
                tx,
            };
            let result = sub.run(&inner).await;
            if let Some(s) = sub.scanner.take() {
                s.close();
            }
            if let Err(e) = result {
                let _ = sub.tx.send(Err(e)).await;
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn save_checkpoint(&self, consumer: &str, position: u64) -> Result<()> {
        check_consumer(consumer)?;
        let subject = self.inner.names.checkpoint_subject(consumer);
        // The ack is the durable point (as for commits); the bucket keeps one value.
        self.inner
            .publish(subject, HeaderMap::new(), position.to_string().into())
            .await
            .map_err(|e| publish_failed("save checkpoint", &e))?;
        Ok(())
    }

    async fn load_checkpoint(&self, consumer: &str) -> Result<u64> {
        check_consumer(consumer)?;
        let subject = self.inner.names.checkpoint_subject(consumer);
        match self
            .inner
            .get(&self.inner.checkpoints, Get::Last(&subject))
            .await?
        {
            None => Ok(0),
            Some(m) => std::str::from_utf8(&m.payload)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| Error::Storage(format!("corrupt checkpoint of {consumer:?}"))),
        }
    }

    async fn head(&self) -> Result<u64> {
        Ok(self.inner.fetch_tail().await?.last_position)
    }
}

/// The end of the log stream: its last sequence and the position of its last event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tail {
    seq: u64,
    last_position: u64,
}

/// A case as of some tail: the sequence of its last commit (0: none) and its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CaseHead {
    seq: u64,
    version: u64,
}

/// A message of the log stream, numbered.
struct LogMsg {
    seq: u64,
    meta: CommitMeta,
    attempt: Option<String>,
    payload: Bytes,
}

impl LogMsg {
    fn new(seq: u64, headers: Option<&HeaderMap>, payload: Bytes) -> Result<Self> {
        let meta = CommitMeta::from_headers(headers).map_err(|e| corrupt(seq, &e))?;
        let attempt = headers
            .and_then(|h| h.get(wire::H_ATTEMPT))
            .map(|v| v.as_str().to_owned());
        Ok(LogMsg {
            seq,
            meta,
            attempt,
            payload,
        })
    }

    fn from_stream(m: StreamMessage) -> Result<Self> {
        LogMsg::new(m.sequence, Some(&m.headers), m.payload)
    }

    fn events(&self) -> Result<Vec<RecordedEvent>> {
        wire::decode_events(&self.meta, &self.payload).map_err(|e| corrupt(self.seq, &e))
    }
}

enum Get<'a> {
    Seq(u64),
    Last(&'a str),
    /// First message on the subject at or after the sequence.
    Next(&'a str, u64),
}

impl Inner {
    /// One message through the stream leader (`STREAM.MSG.GET`, never a direct get,
    /// which a lagging replica may answer): reads see every acknowledged write.
    async fn get(&self, stream: &stream::Stream, how: Get<'_>) -> Result<Option<StreamMessage>> {
        let b = stream.raw_message_builder();
        let b = match how {
            Get::Seq(seq) => b.sequence(seq),
            Get::Last(subject) => b.last_by_subject(subject),
            Get::Next(subject, seq) => b.sequence(seq).next_by_subject(subject),
        };
        match b.send().await {
            Ok(m) => Ok(Some(m)),
            Err(e) => match e.kind() {
                RawMessageErrorKind::NoMessageFound => Ok(None),
                RawMessageErrorKind::JetStream(j)
                    if j.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    Err(Error::Storage(format!(
                        "stream {} is gone",
                        stream.cached_info().config.name
                    )))
                }
                _ => Err(Error::Unavailable(format!("read from nats: {e}"))),
            },
        }
    }

    async fn commit_at(&self, seq: u64) -> Result<LogMsg> {
        let m = self.get(&self.log, Get::Seq(seq)).await?.ok_or_else(|| {
            Error::Storage(format!("the log stream has no message at sequence {seq}"))
        })?;
        let m = LogMsg::from_stream(m)?;
        self.remember(&m);
        Ok(m)
    }

    async fn fetch_tail(&self) -> Result<Tail> {
        // `>` is the whole stream: the server answers with its last message.
        match self.get(&self.log, Get::Last(">")).await? {
            None => Ok(Tail {
                seq: 0,
                last_position: 0,
            }),
            Some(m) => {
                let m = LogMsg::from_stream(m)?;
                Ok(Tail {
                    seq: m.seq,
                    last_position: m.meta.last_position(),
                })
            }
        }
    }

    async fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> std::result::Result<PublishAck, PublishError> {
        let ack = self
            .js
            .send_publish(
                subject,
                PublishMessage::build().headers(headers).payload(payload),
            )
            .await?;
        ack.await
    }

    fn remember(&self, m: &LogMsg) {
        if m.meta.is_void() {
            return;
        }
        if let Ok(mut p) = self.positions.lock() {
            if p.len() >= MAX_CACHED_POSITIONS {
                p.clear();
            }
            p.insert(m.meta.first_position, (m.seq, m.meta.count));
        }
    }

    /// The stream sequence of the message holding `position` (≤ the tail's last
    /// position): a binary search over sequences, narrowed by what is already known.
    async fn seek(&self, position: u64, tail: Tail) -> Result<u64> {
        let (mut lo, mut hi) = (1, tail.seq);
        if let Ok(p) = self.positions.lock() {
            if let Some((&first, &(seq, count))) = p.range(..=position).next_back() {
                if position < first + count {
                    return Ok(seq);
                }
                lo = lo.max(seq + 1);
            }
            if let Some((_, &(seq, _))) = p.range(position + 1..).next() {
                hi = hi.min(seq.saturating_sub(1));
            }
        }
        while lo <= hi {
            let mid = lo + (hi - lo) / 2;
            let m = self.commit_at(mid).await?;
            if position < m.meta.first_position {
                hi = mid - 1;
            } else if position >= m.meta.first_position + m.meta.count {
                lo = mid + 1;
            } else {
                return Ok(mid);
            }
        }
        Err(Error::Storage(format!(
            "position {position} is in no message of the log (last position {})",
            tail.last_position
        )))
    }

    async fn read_all(self: &Arc<Self>, from: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        let tail = self.fetch_tail().await?;
        if from > tail.last_position {
            return Ok(Vec::new());
        }
        let start = self.seek(from, tail).await?;
        let mut out = Vec::new();
        // A page ends at the tail seen above, so it is a consistent prefix of the log.
        // A few messages are fetched with concurrent gets; more through a consumer,
        // which streams them in batches instead of one request each.
        if tail.seq - start < GET_RANGE {
            let mut msgs = futures::stream::iter(start..=tail.seq)
                .map(|seq| self.commit_at(seq))
                .buffered(GET_RANGE as usize);
            while let Some(m) = msgs.next().await {
                if take_positions(&m?, from, limit, &mut out)? {
                    break;
                }
            }
        } else {
            let mut scanner = Scanner::new(Arc::clone(self), start, Some(tail.seq));
            let result = async {
                while scanner.next_seq <= tail.seq {
                    let m = scanner.next().await?;
                    self.remember(&m);
                    if take_positions(&m, from, limit, &mut out)? {
                        break;
                    }
                }
                Ok::<_, Error>(())
            }
            .await;
            scanner.close();
            result?;
        }
        check_run(&out, from, |e| e.position, "position")?;
        Ok(out)
    }

    async fn read_case(
        &self,
        case_id: Uuid,
        from: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let subject = self.names.case_subject(case_id);
        let Some(last) = self.get(&self.log, Get::Last(&subject)).await? else {
            return Err(Error::NotFound(case_id));
        };
        let last = LogMsg::from_stream(last)?;
        if from > last.meta.last_version() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        if from >= last.meta.first_version {
            // The usual "what is new in this case" read: one get.
            take_events(&last, from, limit, &mut out)?;
        } else {
            // Walk the case's messages with next-by-subject gets, up to the last one
            // seen above (later appends are not part of this read).
            let mut seq = 0;
            while let Some(m) = self.get(&self.log, Get::Next(&subject, seq)).await? {
                let m = LogMsg::from_stream(m)?;
                take_events(&m, from, limit, &mut out)?;
                if out.len() >= limit || m.seq >= last.seq {
                    break;
                }
                seq = m.seq + 1;
            }
        }
        check_run(&out, from, |e| e.version, "version")?;
        Ok(out)
    }

    /// An ephemeral pull consumer over the log stream from `seq`, with no acks: the
    /// reader tracks sequences itself.
    async fn scan_consumer(&self, seq: u64) -> Result<Consumer<pull::Config>> {
        self.log
            .create_consumer(pull::Config {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: seq,
                },
                ack_policy: AckPolicy::None,
                replay_policy: ReplayPolicy::Instant,
                // The server removes it if the reader vanishes or stalls this long; a
                // stalled reader makes a new one when it comes back.
                inactive_threshold: Duration::from_secs(60),
                memory_storage: true,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Unavailable(format!("create consumer on the log: {e}")))
    }
}

/// Appends the events of `m` with position ≥ `from`, up to `limit` in all; `true` once
/// the page is full.
fn take_positions(
    m: &LogMsg,
    from: u64,
    limit: usize,
    out: &mut Vec<RecordedEvent>,
) -> Result<bool> {
    if m.meta.last_position() >= from {
        for e in m.events()? {
            if e.position >= from && out.len() < limit {
                out.push(e);
            }
        }
    }
    Ok(out.len() >= limit)
}

/// Appends the events of `m` with version ≥ `from`, up to `limit` in all.
fn take_events(m: &LogMsg, from: u64, limit: usize, out: &mut Vec<RecordedEvent>) -> Result<()> {
    if m.meta.last_version() < from {
        return Ok(());
    }
    for e in m.events()? {
        if e.version >= from && out.len() < limit {
            out.push(e);
        }
    }
    Ok(())
}

/// Checks that events are numbered `from, from + 1, …`.
fn check_run(
    events: &[RecordedEvent],
    from: u64,
    number: impl Fn(&RecordedEvent) -> u64,
    what: &str,
) -> Result<()> {
    for (i, e) in events.iter().enumerate() {
        if number(e) != from + i as u64 {
            return Err(Error::Storage(format!(
                "{what} {} where {} was due: the log has a gap",
                number(e),
                from + i as u64
            )));
        }
    }
    Ok(())
}

/// Messages of the log stream in sequence order from `next_seq` (live, or up to `end`): a hand-made
/// ordered consumer. It pulls bounded batches only when asked for the next message (so a
/// stalled subscriber holds at most one batch), and recreates its ephemeral consumer at
/// the next sequence whenever the consumer fails, vanishes or skips a sequence.
/// (async-nats' own ordered consumer buffers 500 messages of any size and, if it must
/// recreate before its first message, starts over from the stream's beginning.)
struct Scanner {
    inner: Arc<Inner>,
    next_seq: u64,
    /// Last sequence wanted, for a bounded read: pulls never ask for more, so the last
    /// one completes as soon as its messages are in.
    end: Option<u64>,
    consumer: Option<Consumer<pull::Config>>,
    batch: Option<Batch>,
    /// Whether the current pull delivered anything.
    delivered: bool,
    failing_since: Option<Instant>,
    failures: u32,
}

impl Scanner {
    fn new(inner: Arc<Inner>, next_seq: u64, end: Option<u64>) -> Self {
        Scanner {
            inner,
            next_seq,
            end,
            consumer: None,
            batch: None,
            delivered: false,
            failing_since: None,
            failures: 0,
        }
    }

    async fn next(&mut self) -> Result<LogMsg> {
        loop {
            if self.batch.is_none() {
                match self.pull().await {
                    Ok(b) => self.batch = Some(b),
                    Err(e) => {
                        self.failed(e).await?;
                        continue;
                    }
                }
            }
            let Some(batch) = self.batch.as_mut() else {
                continue;
            };
            match batch.next().await {
                // The pull expired or delivered its batch: pull again.
                None => {
                    self.batch = None;
                    // An empty pull is normal on an idle log, but it is also all a
                    // vanished consumer gives (after a server restart, or when the
                    // server dropped it): pulls for an unknown consumer are dropped
                    // silently. So ask whether it still exists.
                    if !std::mem::take(&mut self.delivered) {
                        if let Err(e) = self.check_consumer().await {
                            self.failed(e).await?;
                        }
                    }
                }
                Some(Ok(m)) => {
                    let seq = match m.info() {
                        Ok(info) => info.stream_sequence,
                        Err(e) => {
                            self.failed(Error::Unavailable(format!("bad delivery: {e}")))
                                .await?;
                            continue;
                        }
                    };
                    if seq < self.next_seq {
                        continue;
                    }
                    if seq > self.next_seq {
                        // Should not happen without deletes; start again where we are.
                        tracing::debug!(
                            seq,
                            expected = self.next_seq,
                            "consumer skipped, recreating"
                        );
                        self.reset();
                        continue;
                    }
                    self.failing_since = None;
                    self.failures = 0;
                    self.delivered = true;
                    self.next_seq += 1;
                    let m = m.message;
                    return LogMsg::new(seq, m.headers.as_ref(), m.payload);
                }
                Some(Err(e)) => {
                    self.failed(Error::Unavailable(format!("pull from the log: {e}")))
                        .await?
                }
            }
        }
    }

    async fn check_consumer(&self) -> Result<()> {
        let Some(consumer) = self.consumer.as_ref() else {
            return Ok(());
        };
        consumer
            .get_info()
            .await
            .map(drop)
            .map_err(|e| Error::Unavailable(format!("consumer on the log is gone: {e}")))
    }

    async fn pull(&mut self) -> Result<Batch> {
        if self.consumer.is_none() {
            self.consumer = Some(self.inner.scan_consumer(self.next_seq).await?);
        }
        let Some(consumer) = self.consumer.as_ref() else {
            return Err(Error::Unavailable("no consumer".into()));
        };
        let wanted = match self.end {
            Some(end) => (end + 1).saturating_sub(self.next_seq).clamp(1, PULL_BATCH),
            None => PULL_BATCH,
        };
        consumer
            .batch()
            .max_messages(wanted as usize)
            // At least one whole message must fit, or the server would never send it.
            .max_bytes(self.inner.max_payload.saturating_mul(2))
            .expires(PULL_EXPIRES)
            .messages()
            .await
            .map_err(|e| Error::Unavailable(format!("pull from the log: {e}")))
    }

    /// Drops the consumer and waits a little before the next try; gives up when the
    /// server has been failing for too long.
    async fn failed(&mut self, e: Error) -> Result<()> {
        self.reset();
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() > SUBSCRIPTION_PATIENCE {
            return Err(e);
        }
        self.failures += 1;
        tracing::debug!(error = %e, failures = self.failures, "subscription retrying");
        let backoff = Duration::from_millis(20u64 << self.failures.min(6));
        tokio::select! {
            () = tokio::time::sleep(backoff) => Ok(()),
            () = self.inner.closed.cancelled() => Err(shut_down()),
        }
    }

    fn reset(&mut self) {
        self.batch = None;
        if let Some(c) = self.consumer.take() {
            let stream = self.inner.log.clone();
            let name = c.cached_info().name.clone();
            // Best effort: the server drops it after its inactivity threshold anyway.
            tokio::spawn(async move {
                let _ = stream.delete_consumer(&name).await;
            });
        }
    }

    fn close(mut self) {
        self.reset();
    }
}

struct Subscription {
    scanner: Option<Scanner>,
    next_position: u64,
    filter: Filter,
    tx: mpsc::Sender<Result<RecordedEvent>>,
}

impl Subscription {
    /// Catch-up and live are one loop: the consumer starts at the message holding the
    /// first wanted position and follows the stream from there, so there is no switch
    /// at which to lose or repeat an event. Events before `from_position` in the first
    /// message are skipped; every later message must start exactly where the previous
    /// one ended.
    async fn run(&mut self, inner: &Arc<Inner>) -> Result<()> {
        let tail = inner.fetch_tail().await?;
        let start = if self.next_position > tail.last_position {
            tail.seq + 1
        } else {
            inner.seek(self.next_position, tail).await?
        };
        let scanner = self
            .scanner
            .insert(Scanner::new(Arc::clone(inner), start, None));
        loop {
            let m = tokio::select! {
                m = scanner.next() => m?,
                () = inner.closed.cancelled() => return Ok(()),
                () = self.tx.closed() => return Ok(()),
            };
            if m.meta.first_position > self.next_position {
                return Err(Error::Storage(format!(
                    "message {} starts at position {}, expected {}: the log has a gap",
                    m.seq, m.meta.first_position, self.next_position
                )));
            }
            for e in m.events()? {
                if e.position < self.next_position {
                    continue;
                }
                self.next_position = e.position + 1;
                if !self.filter.matches(&e) {
                    continue;
                }
                tokio::select! {
                    r = self.tx.send(Ok(e)) => if r.is_err() { return Ok(()) },
                    () = inner.closed.cancelled() => return Ok(()),
                }
            }
        }
    }
}

struct AppendOp {
    case_id: Uuid,
    expected: Expected,
    events: Vec<NewEvent>,
    commit_id: Uuid,
    reply: oneshot::Sender<Result<Appended>>,
}

/// What the commit records say about a commit, as of a tail.
enum Resolution {
    /// The commit is in the log at this message.
    Written(LogMsg),
    /// The commit is not in the log. `pending` when one attempt expects the very next
    /// sequence and may still land there.
    Absent { pending: bool },
    /// A record names a sequence beyond the next one: our view of the tail is stale.
    StaleTail,
}

/// The single writer of this process. It keeps the stream's tail and the heads of the
/// cases it touched, valid as long as nobody else writes: every publish expects that
/// tail, so a stale view costs one rejected publish, after which it is dropped and read
/// again.
struct Writer {
    inner: Arc<Inner>,
    tail: Option<Tail>,
    /// Heads of cases as of `tail`.
    cases: HashMap<Uuid, CaseHead>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<AppendOp>) {
        while let Some(op) = rx.recv().await {
            let AppendOp {
                case_id,
                expected,
                events,
                commit_id,
                reply,
            } = op;
            let result = self.append(case_id, expected, events, commit_id).await;
            let _ = reply.send(result);
        }
    }

    fn forget(&mut self) {
        self.tail = None;
        self.cases.clear();
    }

    async fn tail(&mut self) -> Result<Tail> {
        if let Some(t) = self.tail {
            return Ok(t);
        }
        let t = self.inner.fetch_tail().await?;
        self.cases.clear();
        self.tail = Some(t);
        Ok(t)
    }

    /// The case's head as of `tail`, or `None` if the case moved past it (so the tail
    /// is stale). A case with no message at read time had none at `tail` either.
    async fn case_head(&mut self, case_id: Uuid, tail: Tail) -> Result<Option<CaseHead>> {
        if let Some(h) = self.cases.get(&case_id) {
            return Ok(Some(*h));
        }
        let subject = self.inner.names.case_subject(case_id);
        let head = match self.inner.get(&self.inner.log, Get::Last(&subject)).await? {
            None => CaseHead { seq: 0, version: 0 },
            Some(m) => {
                let m = LogMsg::from_stream(m)?;
                if m.seq > tail.seq {
                    return Ok(None);
                }
                CaseHead {
                    seq: m.seq,
                    version: m.meta.last_version(),
                }
            }
        };
        if self.cases.len() >= MAX_CACHED_CASES {
            self.cases.clear();
        }
        self.cases.insert(case_id, head);
        Ok(Some(head))
    }

    async fn append(
        &mut self,
        case_id: Uuid,
        expected: Expected,
        events: Vec<NewEvent>,
        commit_id: Uuid,
    ) -> Result<Appended> {
        let inner = Arc::clone(&self.inner);
        let mut body = CommitBody::new(case_id, commit_id, events);
        let size = body.max_encoded_len() + wire::HEADER_ROOM;
        if size > inner.max_payload {
            return Err(Error::invalid(
                "events",
                format!(
                    "the commit takes up to {size} bytes, over the nats server's max_payload of {} bytes",
                    inner.max_payload
                ),
            ));
        }
        let subject = inner.names.case_subject(case_id);
        let record_subject = inner.names.commit_subject(commit_id);
        // Attempts published by this call, to tell our own message from a racing retry's.
        let mut own_attempts: Vec<String> = Vec::new();
        let mut created = false;
        let mut unknown = 0;
        for _ in 0..MAX_ROUNDS {
            let tail = self.tail().await?;
            let Some(head) = self.case_head(case_id, tail).await? else {
                self.forget();
                continue;
            };
            let admitted = expected.admits(head.version);
            let next_seq = tail.seq + 1;
            // Idempotency before concurrency. The tail was looked at before this point,
            // so any attempt of this commit that landed at or below it is on record now.
            let mut fresh = false;
            if admitted && !created {
                created = true;
                fresh = self
                    .create_record(&record_subject, next_seq, case_id)
                    .await?;
            }
            if !fresh {
                match self.resolve(&record_subject, commit_id, tail).await? {
                    Resolution::Written(m) => {
                        let ours = m.attempt.as_ref().is_some_and(|a| own_attempts.contains(a));
                        return dedup_result(&m, !ours);
                    }
                    Resolution::StaleTail => {
                        self.forget();
                        continue;
                    }
                    Resolution::Absent { pending } => {
                        if !admitted {
                            if pending {
                                // An attempt of this commit may still land at the next
                                // sequence; take that sequence first so it never can,
                                // then report the conflict.
                                self.void(commit_id, tail).await?;
                                continue;
                            }
                            return Err(Error::Conflict {
                                case_id,
                                expected,
                                actual: head.version,
                            });
                        }
                        if !pending {
                            self.put_record(&record_subject, next_seq, case_id).await?;
                        }
                    }
                }
            }

            let meta = CommitMeta {
                commit_id,
                case_id: Some(case_id),
                first_position: tail.last_position + 1,
                first_version: head.version + 1,
                count: body.events.len() as u64,
            };
            body.number(meta.first_position, meta.first_version, now_micros());
            let attempt = Uuid::now_v7().to_string();
            let mut headers = HeaderMap::new();
            meta.write_headers(&mut headers);
            headers.insert(wire::H_ATTEMPT, attempt.as_str());
            headers.insert(wire::NATS_MSG_ID, commit_id.to_string());
            headers.insert(wire::NATS_EXPECTED_LAST_SEQ, tail.seq.to_string());
            headers.insert(wire::NATS_EXPECTED_LAST_SUBJECT_SEQ, head.seq.to_string());
            own_attempts.push(attempt);
            match inner
                .publish(subject.clone(), headers, body.encode_to_vec().into())
                .await
            {
                Ok(ack) if ack.duplicate => {
                    // `Nats-Msg-Id` recognised an earlier attempt of this commit (within
                    // the server's duplicate window): that one is the commit.
                    self.forget();
                    let m = inner.commit_at(ack.sequence).await?;
                    if m.meta.commit_id != commit_id || m.meta.is_void() {
                        return Err(Error::Storage(format!(
                            "duplicate ack for commit {commit_id} points at another message ({})",
                            ack.sequence
                        )));
                    }
                    let ours = m.attempt.as_ref().is_some_and(|a| own_attempts.contains(a));
                    return dedup_result(&m, !ours);
                }
                Ok(ack) if ack.sequence != next_seq => {
                    self.forget();
                    return Err(Error::Storage(format!(
                        "commit {commit_id} landed at sequence {} instead of {next_seq}",
                        ack.sequence
                    )));
                }
                Ok(ack) => {
                    self.tail = Some(Tail {
                        seq: ack.sequence,
                        last_position: meta.last_position(),
                    });
                    self.cases.insert(
                        case_id,
                        CaseHead {
                            seq: ack.sequence,
                            version: meta.last_version(),
                        },
                    );
                    if let Ok(mut p) = inner.positions.lock() {
                        p.insert(meta.first_position, (ack.sequence, meta.count));
                    }
                    return meta
                        .appended(false)
                        .ok_or_else(|| Error::Storage("a commit without a case".into()));
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    // Someone else wrote first (or the case moved): look again.
                    self.forget();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe
                    ) =>
                {
                    // The message may or may not be in the stream; the next round finds
                    // out through the record, and re-publishing at the same sequence is safe.
                    self.forget();
                    unknown += 1;
                    if unknown >= MAX_UNKNOWN {
                        return Err(Error::Unavailable(format!(
                            "commit {commit_id}: no answer from the server ({e}); \
                             the outcome is unknown, retry with the same commit id"
                        )));
                    }
                }
                Err(e) => {
                    self.forget();
                    return Err(publish_failed("append", &e));
                }
            }
        }
        Err(Error::Unavailable(format!(
            "commit {commit_id}: gave up after {MAX_ROUNDS} rounds of contention; retry"
        )))
    }

    /// Creates the commit's record for its first attempt. `false` if it already exists.
    async fn create_record(&self, subject: &str, seq: u64, case_id: Uuid) -> Result<bool> {
        let mut h = HeaderMap::new();
        // 0 = "no message on this subject yet". Checked when the server applies the
        // message (in 2.9 clusters too), unlike non-zero values.
        h.insert(wire::NATS_EXPECTED_LAST_SUBJECT_SEQ, "0");
        let value = wire::encode_record(seq, case_id);
        match self
            .inner
            .publish(subject.to_owned(), h, value.into())
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(false),
            Err(e) => Err(publish_failed("record commit", &e)),
        }
    }

    /// Records another attempt (kept in the record's history next to the earlier ones).
    async fn put_record(&self, subject: &str, seq: u64, case_id: Uuid) -> Result<()> {
        let value = wire::encode_record(seq, case_id);
        self.inner
            .publish(subject.to_owned(), HeaderMap::new(), value.into())
            .await
            .map_err(|e| publish_failed("record commit", &e))?;
        Ok(())
    }

    /// Reads every recorded attempt of the commit and looks at the sequence each one
    /// expected to take.
    async fn resolve(&self, subject: &str, commit_id: Uuid, tail: Tail) -> Result<Resolution> {
        let inner = &self.inner;
        let mut seqs = Vec::new();
        let mut from = 0;
        while let Some(r) = inner.get(&inner.commits, Get::Next(subject, from)).await? {
            from = r.sequence + 1;
            seqs.push(wire::decode_record(&r.payload).map_err(Error::Storage)?);
        }
        seqs.sort_unstable();
        seqs.dedup();
        let mut pending = false;
        for seq in seqs {
            if seq <= tail.seq {
                let m = inner.commit_at(seq).await?;
                if m.meta.commit_id == commit_id && !m.meta.is_void() {
                    return Ok(Resolution::Written(m));
                }
            } else if seq == tail.seq + 1 {
                pending = true;
            } else {
                return Ok(Resolution::StaleTail);
            }
        }
        Ok(Resolution::Absent { pending })
    }

    /// Takes the next sequence with a message that holds no event, so an attempt that
    /// expects the current tail can never land.
    async fn void(&mut self, commit_id: Uuid, tail: Tail) -> Result<()> {
        let meta = CommitMeta::void(commit_id, tail.last_position + 1);
        let mut h = HeaderMap::new();
        meta.write_headers(&mut h);
        h.insert(wire::NATS_EXPECTED_LAST_SEQ, tail.seq.to_string());
        tracing::warn!(%commit_id, seq = tail.seq + 1, "closing an unresolved attempt with a void message");
        match self
            .inner
            .publish(self.inner.names.void_subject(), h, Bytes::new())
            .await
        {
            Ok(ack) if !ack.duplicate && ack.sequence == tail.seq + 1 => {
                self.tail = Some(Tail {
                    seq: ack.sequence,
                    last_position: tail.last_position,
                });
                Ok(())
            }
            Ok(_) => {
                self.forget();
                Ok(())
            }
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                self.forget();
                Ok(())
            }
            Err(e) => {
                self.forget();
                Err(publish_failed("void an attempt", &e))
            }
        }
    }
}

fn dedup_result(m: &LogMsg, deduplicated: bool) -> Result<Appended> {
    m.meta
        .appended(deduplicated)
        .ok_or_else(|| Error::Storage(format!("message {} is not a commit", m.seq)))
}

fn log_stream_config(names: &Names, replicas: usize) -> stream::Config {
    stream::Config {
        name: names.log_stream(),
        description: Some("onecity event log: one message per commit".into()),
        subjects: vec![names.case_wildcard(), names.void_subject()],
        retention: RetentionPolicy::Limits,
        // No limit of any kind: a limit would drop commits and leave gaps.
        max_messages: -1,
        max_bytes: -1,
        max_messages_per_subject: -1,
        max_age: Duration::ZERO,
        max_message_size: -1,
        discard: DiscardPolicy::Old,
        storage: StorageType::File,
        num_replicas: replicas,
        deny_delete: true,
        deny_purge: true,
        allow_rollup: false,
        // Direct gets may be answered by a lagging replica; reads go to the leader.
        allow_direct: false,
        ..Default::default()
    }
}

/// A stream laid out as a NATS KV bucket (so `nats kv` tools can read it), made by hand
/// because async-nats always turns on `allow_direct` for the buckets it creates, and a
/// direct get may be answered by a replica that has not seen the latest record yet.
fn kv_stream_config(bucket: &str, history: i64, replicas: usize) -> stream::Config {
    stream::Config {
        name: wire::kv_stream(bucket),
        description: Some("onecity event log bookkeeping".into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        retention: RetentionPolicy::Limits,
        max_messages: -1,
        max_bytes: -1,
        max_messages_per_subject: history,
        max_age: Duration::ZERO,
        max_message_size: -1,
        discard: DiscardPolicy::New,
        storage: StorageType::File,
        num_replicas: replicas,
        deny_delete: true,
        deny_purge: true,
        allow_rollup: false,
        allow_direct: false,
        ..Default::default()
    }
}

/// Creates the stream, or checks that the existing one is configured as we need: a
/// stream with a message limit, another storage or replica count is refused rather than
/// silently used (or silently changed).
async fn ensure_stream(ctx: &js::Context, want: stream::Config) -> Result<stream::Stream> {
    for _ in 0..3 {
        match ctx.get_stream(&want.name).await {
            Ok(s) => {
                check_stream(&s.cached_info().config, &want)?;
                return Ok(s);
            }
            Err(e) => match e.kind() {
                GetStreamErrorKind::JetStream(j)
                    if j.error_code() == ErrorCode::STREAM_NOT_FOUND => {}
                _ => {
                    return Err(Error::Unavailable(format!(
                        "look up stream {}: {e}",
                        want.name
                    )))
                }
            },
        }
        match ctx.create_stream(want.clone()).await {
            Ok(s) => return Ok(s),
            // Another process created it meanwhile: check theirs.
            Err(e) if matches!(e.kind(), CreateStreamErrorKind::JetStream(ref j) if j.error_code() == ErrorCode::STREAM_NAME_EXIST) =>
                {}
            Err(e) => {
                let hint = if want.num_replicas > 1 {
                    " (a single nats-server without a cluster needs replicas = 1)"
                } else {
                    ""
                };
                return Err(Error::Unavailable(format!(
                    "create stream {}: {e}{hint}",
                    want.name
                )));
            }
        }
    }
    Err(Error::Unavailable(format!(
        "stream {} keeps appearing and vanishing",
        want.name
    )))
}

fn check_stream(have: &stream::Config, want: &stream::Config) -> Result<()> {
    let mut have_subjects = have.subjects.clone();
    let mut want_subjects = want.subjects.clone();
    have_subjects.sort();
    want_subjects.sort();
    let mismatches: Vec<String> = [
        (
            "subjects",
            have_subjects != want_subjects,
            format!("{:?}", have.subjects),
        ),
        (
            "storage",
            have.storage != want.storage,
            format!("{:?}", have.storage),
        ),
        (
            "replicas",
            have.num_replicas != want.num_replicas,
            have.num_replicas.to_string(),
        ),
        (
            "max_msgs",
            have.max_messages != want.max_messages,
            have.max_messages.to_string(),
        ),
        (
            "max_bytes",
            have.max_bytes != want.max_bytes,
            have.max_bytes.to_string(),
        ),
        (
            "max_age",
            have.max_age != want.max_age,
            format!("{:?}", have.max_age),
        ),
        (
            "max_msgs_per_subject",
            have.max_messages_per_subject != want.max_messages_per_subject,
            have.max_messages_per_subject.to_string(),
        ),
        (
            "deny_delete",
            have.deny_delete != want.deny_delete,
            have.deny_delete.to_string(),
        ),
        (
            "deny_purge",
            have.deny_purge != want.deny_purge,
            have.deny_purge.to_string(),
        ),
        (
            "allow_direct",
            have.allow_direct != want.allow_direct,
            have.allow_direct.to_string(),
        ),
        ("sealed", have.sealed, have.sealed.to_string()),
    ]
    .into_iter()
    .filter(|(_, differs, _)| *differs)
    .map(|(field, _, value)| format!("{field} = {value}"))
    .collect();
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(Error::Storage(format!(
            "stream {} exists but is not configured as the event log needs ({}); \
             refusing to use it",
            want.name,
            mismatches.join(", ")
        )))
    }
}

fn publish_failed(what: &str, e: &PublishError) -> Error {
    match e.kind() {
        PublishErrorKind::StreamNotFound => {
            Error::Storage(format!("{what}: no stream takes the message ({e})"))
        }
        _ => Error::Unavailable(format!("{what}: {e}")),
    }
}

fn corrupt(seq: u64, why: &str) -> Error {
    Error::Storage(format!("corrupt message at log sequence {seq}: {why}"))
}

fn shut_down() -> Error {
    Error::Unavailable("event log is shutting down".into())
}
