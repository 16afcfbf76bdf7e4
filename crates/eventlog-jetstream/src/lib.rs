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
//! | partition leases (see [`JetStreamLeases`]) | KV bucket `onecity-leases`, key = hex of the group, hex of the name |
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
use std::time::Duration;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{self};
use async_nats::jetstream::{self as js};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt as _;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use onecity_eventlog::chain::{self, Hash};
use onecity_eventlog::{
    check_consumer, clamp_limit, Appended, Error, EventLog, EventStream, Expected, Filter, Limits,
    NewEvent, RecordedEvent, Result, MAX_READ_LIMIT,
};

mod leases;
mod read;
mod streams;
mod subscribe;
mod wire;
mod writer;

#[cfg(feature = "testing")]
pub mod testing;

pub use leases::JetStreamLeases;
use read::Get;
use streams::{ensure_stream, kv_stream_config, log_stream_config};
use subscribe::Subscription;
use wire::{CommitMeta, Names};
use writer::{AppendOp, Writer};

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
    /// How to authenticate to the servers, and TLS.
    pub auth: NatsAuth,
}

/// How the log authenticates to NATS and secures the connection. Every secret is read
/// from a file or given here, never logged: [`fmt::Debug`] shows which kinds are set,
/// and URLs in messages have their user information removed ([`redact_url`]).
///
/// Credentials in the URL (`nats://user:password@host:4222`) work too; a setting here
/// wins over them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NatsAuth {
    /// User name and password.
    pub user_password: Option<(String, String)>,
    /// An authentication token.
    pub token: Option<String>,
    /// A file holding an nkey seed (`SU…`).
    pub nkey_seed_file: Option<std::path::PathBuf>,
    /// A `.creds` file (user JWT and nkey seed), as `nsc` writes it.
    pub creds_file: Option<std::path::PathBuf>,
    /// PEM file of the CA that signed the servers' certificates; setting it requires TLS.
    pub tls_ca: Option<std::path::PathBuf>,
    /// PEM files of this client's certificate and key, for servers that verify clients.
    pub tls_client: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Require TLS even without a CA of our own (the system's roots are used then).
    pub require_tls: bool,
}

impl fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsAuth")
            .field("user", &self.user_password.as_ref().map(|(u, _)| u))
            .field("password", &self.user_password.as_ref().map(|_| "****"))
            .field("token", &self.token.as_ref().map(|_| "****"))
            .field("nkey_seed_file", &self.nkey_seed_file)
            .field("creds_file", &self.creds_file)
            .field("tls_ca", &self.tls_ca)
            .field("tls_client", &self.tls_client)
            .field("require_tls", &self.require_tls)
            .finish()
    }
}

impl NatsAuth {
    /// The connect options with these credentials and TLS settings.
    async fn apply(
        &self,
        mut options: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions> {
        if let Some((user, password)) = &self.user_password {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let Some(path) = &self.nkey_seed_file {
            let seed = std::fs::read_to_string(path).map_err(|e| {
                Error::invalid("nkey_seed_file", format!("read {}: {e}", path.display()))
            })?;
            options = options.nkey(seed.trim().to_owned());
        }
        if let Some(path) = &self.creds_file {
            options = options.credentials_file(path).await.map_err(|e| {
                Error::invalid("creds_file", format!("read {}: {e}", path.display()))
            })?;
        }
        if let Some(ca) = &self.tls_ca {
            if !ca.is_file() {
                return Err(Error::invalid(
                    "tls_ca",
                    format!("no file {}", ca.display()),
                ));
            }
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &self.tls_client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.require_tls {
            options = options.require_tls(true);
        }
        Ok(options)
    }
}

/// The URLs of `urls` (comma-separated) without their user information, and the
/// credentials it held (`user:password@` or `token@`; the first URL holding any wins).
/// async-nats ignores credentials in a URL, so they are taken out and set explicitly.
fn split_credentials(urls: &str) -> Result<(Vec<String>, NatsAuth)> {
    let mut found = NatsAuth::default();
    let mut out = Vec::new();
    for u in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let mut parsed = url::Url::parse(u).map_err(|e| {
            Error::invalid("url", format!("{} is not a nats url: {e}", redact_url(u)))
        })?;
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let user = decode(parsed.username());
        let password = parsed.password().map(decode);
        if !user.is_empty() && found.user_password.is_none() && found.token.is_none() {
            match password {
                Some(password) => found.user_password = Some((user, password)),
                None => found.token = Some(user),
            }
        }
        // Only fails for URLs that cannot have user information at all.
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
        out.push(parsed.to_string());
    }
    Ok((out, found))
}

/// `urls` (comma-separated) with any user information (`user:password@`, `token@`)
/// removed, for messages and logs.
pub fn redact_url(urls: &str) -> String {
    urls.split(',')
        .map(|u| {
            let u = u.trim();
            match (u.find("://"), u.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    format!("{}****@{}", &u[..scheme + 3], &u[at + 1..])
                }
                (None, Some(at)) => format!("****@{}", &u[at + 1..]),
                _ => u.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
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
            auth: NatsAuth::default(),
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
    /// The core connection under `js`, for the case subscriptions' wake-ups.
    client: async_nats::Client,
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
    /// Consumers still to be made stuck (see [`JetStreamLog::stall_next_consumers`]).
    #[cfg(feature = "testing")]
    stall_consumers: std::sync::atomic::AtomicU32,
}

#[cfg(feature = "testing")]
impl Inner {
    fn take_stalled_consumer(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.stall_consumers
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JetStreamLog")
            .field("url", &self.url)
            .field("stream", &self.names.log_stream())
            .finish_non_exhaustive()
    }
}

/// How often a case subscription re-reads its case without a wake-up (see
/// [`JetStreamLog::subscribe_case`](EventLog::subscribe_case)).
const CASE_REPOLL: Duration = Duration::from_secs(2);

/// What a failed connect means: credentials the servers refuse (or TLS that cannot be
/// set up) cannot be fixed by waiting, so they are [`Error::Invalid`] (naming what to fix);
/// anything else may pass ([`Error::Unavailable`]). The URL is shown without its secrets.
fn connect_failed(shown: &str, e: &async_nats::ConnectError) -> Error {
    use async_nats::ConnectErrorKind as K;
    let certificate = || {
        let mut source: Option<&dyn std::error::Error> = Some(e);
        while let Some(s) = source {
            if s.to_string().contains("certificate") {
                return true;
            }
            source = s.source();
        }
        false
    };
    match e.kind() {
        K::Tls => Error::invalid(
            "tls",
            format!("tls with the nats server at {shown} failed: {e}"),
        ),
        // rustls reports a certificate it does not trust as an I/O error.
        K::Io if certificate() => Error::invalid(
            "tls",
            format!(
                "the nats server at {shown} presented a certificate this log does not trust: {e}"
            ),
        ),
        K::AuthorizationViolation | K::Authentication => Error::invalid(
            "credentials",
            format!("the nats server at {shown} refused this log's credentials: {e}"),
        ),
        _ => Error::Unavailable(format!("connect to nats at {shown}: {e}")),
    }
}

/// Longest time a subscription keeps retrying a failing server before it ends with
/// an error (long enough for a cluster to elect a new stream leader).
const SUBSCRIPTION_PATIENCE: Duration = Duration::from_secs(30);
/// How long a pull waits for messages; an empty pull makes the scanner check that its
/// consumer still exists and keeps up with the stream, so this bounds how long a
/// vanished or stuck consumer goes unnoticed.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// Empty pulls in a row, each ending while the stream leader holds the next wanted
/// message, after which a consumer counts as stuck and is recreated. One is not enough:
/// a message may reach the leader just as a pull expires.
const STALL_PULLS: u32 = 2;
/// How long the pull after a suspicious empty one waits: what the leader already holds,
/// a healthy consumer delivers at once.
const STALL_RECHECK: Duration = Duration::from_secs(2);
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
        let shown = redact_url(&config.url);
        let (urls, from_url) = split_credentials(&config.url)?;
        let options = async_nats::ConnectOptions::new()
            .name("onecity-eventlog")
            .connection_timeout(config.request_timeout)
            .request_timeout(Some(config.request_timeout));
        // Settings win over credentials in the URL.
        let auth = NatsAuth {
            user_password: config.auth.user_password.clone().or(from_url.user_password),
            token: config.auth.token.clone().or(from_url.token),
            ..config.auth.clone()
        };
        let client = auth
            .apply(options)
            .await?
            .connect(urls)
            .await
            .map_err(|e| connect_failed(&shown, &e))?;
        let info = client.server_info();
        wire::check_server_version(&info.version)?;
        if !info.jetstream {
            return Err(Error::Unavailable(format!(
                "jetstream is not enabled on the nats server at {shown} (start it with -js)"
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
                shown, info.max_payload, config.limits.max_payload_bytes
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
            client,
            names,
            url: shown,
            log,
            commits,
            checkpoints,
            limits: config.limits,
            max_payload: info.max_payload,
            live_buffer: config.live_buffer.max(1),
            positions: Mutex::new(BTreeMap::new()),
            closed: CancellationToken::new(),
            #[cfg(feature = "testing")]
            stall_consumers: Default::default(),
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

    /// Testing only: the next `n` consumers this log makes for subscriptions and reads
    /// start far past the stream's end, so they exist and deliver nothing, as a consumer
    /// placed on a replica that stopped applying the stream does.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn stall_next_consumers(&self, n: u32) {
        self.inner
            .stall_consumers
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for JetStreamLog {
    fn drop(&mut self) {
        self.inner.closed.cancel();
    }
}

#[async_trait::async_trait]
impl EventLog for JetStreamLog {
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
        if self.inner.closed.is_cancelled() {
            return Err(shut_down());
        }
        let digests = events
            .iter()
            .map(|e| chain::payload_digest(&e.payload))
            .collect();
        let (reply, rx) = oneshot::channel();
        let op = AppendOp {
            case_id,
            expected,
            events,
            digests,
            appended_by: appended_by.to_owned(),
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

    async fn subscribe_case(&self, case_id: Uuid, from_version: u64) -> Result<EventStream> {
        if self.inner.closed.is_cancelled() {
            return Err(shut_down());
        }
        // The wake-up is a core subscription to the case's subject: every publish to the
        // case (even one the stream then refuses) rings it, and the read that follows sees
        // only what the stream stored. A core subscription misses what is published while
        // the connection is down, hence the periodic re-read.
        let subject = self.inner.names.case_subject(case_id);
        let ringer = self
            .inner
            .client
            .subscribe(subject)
            .await
            .map_err(|e| Error::Unavailable(format!("subscribe to case {case_id}: {e}")))?;
        let closed = self.inner.closed.clone();
        let wake = ringer
            .map(|_| ())
            .take_until(async move { closed.cancelled().await });
        let inner = Arc::clone(&self.inner);
        let read = move |from: u64| {
            let inner = Arc::clone(&inner);
            async move { inner.read_case(case_id, from, MAX_READ_LIMIT).await }
        };
        Ok(onecity_eventlog::follow::case(
            case_id,
            from_version,
            read,
            wake,
            Some(CASE_REPOLL),
        ))
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
    /// Hash of the last commit at or before `seq` (the next commit's `prev`).
    chain: Hash,
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
    /// The chain head as of this message (see `wire::H_CHAIN`).
    chain: Hash,
    attempt: Option<String>,
    payload: Bytes,
}

impl LogMsg {
    fn new(seq: u64, headers: Option<&HeaderMap>, payload: Bytes) -> Result<Self> {
        let meta = CommitMeta::from_headers(headers).map_err(|e| corrupt(seq, &e))?;
        let chain = wire::chain_head(headers).map_err(|e| corrupt(seq, &e))?;
        let attempt = headers
            .and_then(|h| h.get(wire::H_ATTEMPT))
            .map(|v| v.as_str().to_owned());
        Ok(LogMsg {
            seq,
            meta,
            chain,
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

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url_and_never_show() {
        let (urls, auth) =
            split_credentials("nats://log:pa%40ss@10.0.0.1:4222, nats://10.0.0.2:4222").unwrap();
        assert_eq!(urls, ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]);
        assert_eq!(auth.user_password, Some(("log".into(), "pa@ss".into())));
        let (_, auth) = split_credentials("tls://tok3n@nats.internal:4222").unwrap();
        assert_eq!(auth.token.as_deref(), Some("tok3n"));
        assert_eq!(
            redact_url("nats://log:secret@10.0.0.1:4222,nats://10.0.0.2:4222"),
            "nats://****@10.0.0.1:4222,nats://10.0.0.2:4222"
        );
        let err = split_credentials("not a url with secret@host").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        let auth = NatsAuth {
            user_password: Some(("log".into(), "secret".into())),
            token: Some("secret".into()),
            ..NatsAuth::default()
        };
        assert!(!format!("{auth:?}").contains("secret"));
    }
}
