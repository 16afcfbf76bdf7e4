//! onecity's shared append-only event log.
//!
//! The log is the source of truth: every service writes its decisions here and every view
//! (case status, department inbox) is a projection that can be rebuilt from it. This crate
//! is the contract only: the [`EventLog`] trait, its types and errors, the protobuf
//! [`codec`], the checkpointed [`consumer`] loop, the [`retry`] backoff, the partition
//! [`leases`] the instances of a worker role share, the in-memory
//! [`memory::MemoryLog`] for tests, and the `conformance` suite (feature `conformance`)
//! that holds every backend to the same promises. The backends live in their own crates
//! (`onecity-eventlog-sled`, `onecity-eventlog-jetstream`, and `onecity-eventlog-grpc`
//! for the gRPC face and `RemoteLog`), so nothing here links a storage engine or a
//! transport.
//!
//! See `docs/eventlog.md` for the contract, the backends and the crash story.

use std::fmt;
use std::pin::Pin;
use std::time::SystemTime;

use futures::Stream;
use uuid::Uuid;

pub mod access;
pub mod chain;
pub mod codec;
pub mod consumer;
pub mod follow;
pub mod leases;
pub mod memory;
pub mod projection;
pub mod quarantine;
pub mod retry;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "conformance")]
pub mod lease_conformance;

pub use memory::MemoryLog;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to the log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The optimistic-concurrency check failed; nothing was written.
    #[error("wrong expected version for case {case_id}: expected {expected}, actual {actual}")]
    Conflict {
        /// The case stream.
        case_id: Uuid,
        /// What the writer expected.
        expected: Expected,
        /// The stream's version at the time of the check (0 = no stream).
        actual: u64,
    },
    /// The request is malformed or over a limit; nothing was written.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Request field at fault, e.g. `events[3].payload`.
        field: String,
        /// Why it was refused.
        reason: String,
    },
    /// The case stream has no events.
    #[error("case {0} not found")]
    NotFound(Uuid),
    /// The backend cannot be reached or is shutting down; the request may be retried.
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    /// The storage failed; the outcome of in-flight writes is unknown until restart.
    #[error("event log storage failure: {0}")]
    Storage(String),
}

impl Error {
    /// An [`Error::Invalid`] naming `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The concurrency condition an append checks before writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Append whatever the stream's version is.
    Any,
    /// The stream must not exist yet (version 0).
    NoStream,
    /// The stream must be exactly at this version (0 means "no stream").
    Exact(u64),
}

impl Expected {
    /// Whether a stream currently at `actual` satisfies the condition.
    pub fn admits(self, actual: u64) -> bool {
        match self {
            Expected::Any => true,
            Expected::NoStream => actual == 0,
            Expected::Exact(v) => v == actual,
        }
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::Any => f.write_str("any"),
            Expected::NoStream => f.write_str("no stream"),
            Expected::Exact(v) => write!(f, "{v}"),
        }
    }
}

/// An event proposed by a writer. The log assigns version, position and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Chosen by the writer (UUID v7), so a retried commit carries the same ids.
    pub event_id: Uuid,
    /// Fully qualified type such as `onecity.v1.ApplicationSubmitted`.
    pub event_type: String,
    /// Who caused the event (a principal id or a service role).
    pub actor: String,
    /// The event or request that caused this one; may be empty.
    pub causation_id: String,
    /// Protobuf-encoded domain event.
    pub payload: Vec<u8>,
    /// Context that is not part of the event (the trace context of the call that caused
    /// it): stored and returned, never part of the hash chain. See [`Limits`].
    pub metadata: Metadata,
}

/// An event's metadata: a small string map, ordered so that its encodings compare equal.
pub type Metadata = std::collections::BTreeMap<String, String>;

/// Most metadata entries on one event.
pub const MAX_METADATA_ENTRIES: usize = 8;
/// Longest metadata key, in bytes.
pub const MAX_METADATA_KEY: usize = 64;
/// Longest metadata value, in bytes.
pub const MAX_METADATA_VALUE: usize = 512;

impl NewEvent {
    /// A new event with a fresh UUID v7 id and no causation.
    pub fn new(event_type: impl Into<String>, actor: impl Into<String>, payload: Vec<u8>) -> Self {
        NewEvent {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            actor: actor.into(),
            causation_id: String::new(),
            payload,
            metadata: Metadata::new(),
        }
    }

    /// Adds `metadata` entries (a key given twice keeps the last value).
    pub fn with_metadata<K, V>(mut self, metadata: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.metadata
            .extend(metadata.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Sets what caused this event.
    pub fn caused_by(mut self, causation_id: impl Into<String>) -> Self {
        self.causation_id = causation_id.into();
        self
    }
}

/// An event as stored in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// Id given by the writer.
    pub event_id: Uuid,
    /// Case stream.
    pub case_id: Uuid,
    /// 1-based, gap-free version within the case stream.
    pub version: u64,
    /// 1-based, gap-free position in the global log.
    pub position: u64,
    /// When the log recorded the commit (UTC, microsecond precision).
    pub recorded_at: SystemTime,
    /// Fully qualified event type.
    pub event_type: String,
    /// Who caused it.
    pub actor: String,
    /// What caused it; may be empty.
    pub causation_id: String,
    /// Protobuf-encoded domain event.
    pub payload: Vec<u8>,
    /// The commit that wrote it.
    pub commit_id: Uuid,
    /// The authenticated principal that appended the commit, stamped by the log (never
    /// taken from a client); empty for commits written before the stamp existed or
    /// through an unnamed handle (see [`EventLog::append_as`]).
    pub appended_by: String,
    /// The commit's place in the hash chain (the same on every event of the commit);
    /// `None` for commits written before the chain existed. See [`chain`].
    pub chain: Option<chain::Link>,
    /// The appended event's [`NewEvent::metadata`]; not covered by the chain.
    pub metadata: Metadata,
}

impl RecordedEvent {
    /// `recorded_at` as RFC 3339 in UTC with millisecond precision.
    pub fn recorded_at_rfc3339(&self) -> String {
        chrono::DateTime::<chrono::Utc>::from(self.recorded_at)
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    /// `event` as case `case_id`'s only event at `position` (version 1, a commit of its
    /// own, no chain): for tests of what reads the log (projections, folds) without one.
    #[cfg(any(test, feature = "conformance"))]
    pub fn for_test(
        case_id: Uuid,
        position: u64,
        event: &onecity_domain::events::CaseEvent,
    ) -> Self {
        RecordedEvent {
            event_id: Uuid::now_v7(),
            case_id,
            version: 1,
            position,
            recorded_at: SystemTime::UNIX_EPOCH,
            event_type: event.event_type().into(),
            actor: "a".into(),
            causation_id: String::new(),
            payload: event.encode(),
            commit_id: Uuid::now_v7(),
            appended_by: String::new(),
            chain: None,
            metadata: Default::default(),
        }
    }
}

/// What an append wrote (or, for a retried commit id, what it first wrote).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The case stream of the commit: on a deduplicated retry, the case of the original
    /// commit (a commit id names one commit, whatever case a retry names).
    pub case_id: Uuid,
    /// Version of the commit's first event.
    pub first_version: u64,
    /// Version of its last event: the stream's version right after the commit.
    pub last_version: u64,
    /// Global position of the first event.
    pub first_position: u64,
    /// Global position of the last event.
    pub last_position: u64,
    /// True when the commit id was already in the log and nothing was written now.
    pub deduplicated: bool,
}

/// Which events a subscription delivers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Event-type prefixes; empty delivers every event.
    pub event_type_prefixes: Vec<String>,
}

impl Filter {
    /// Every event.
    pub fn all() -> Self {
        Filter::default()
    }

    /// Events whose type starts with one of `prefixes`.
    pub fn prefixes<I, S>(prefixes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Filter {
            event_type_prefixes: prefixes.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        self.matches_type(&event.event_type)
    }

    /// Whether an event of type `event_type` passes the filter.
    pub fn matches_type(&self, event_type: &str) -> bool {
        self.event_type_prefixes.is_empty()
            || self
                .event_type_prefixes
                .iter()
                .any(|p| event_type.starts_with(p.as_str()))
    }
}

/// A subscription: stored events first, then live ones, in position order.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<RecordedEvent>> + Send>>;

/// Limits every backend enforces before writing anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most events in one commit.
    pub max_events_per_commit: usize,
    /// Largest payload of one event, in bytes.
    pub max_payload_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_events_per_commit: 1_000,
            max_payload_bytes: 1024 * 1024,
        }
    }
}

/// Longest event type, actor, causation id or consumer name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Most events one read returns; larger limits are clamped.
pub const MAX_READ_LIMIT: usize = 10_000;

impl Limits {
    /// Checks an append request against the limits. Shared by every backend (and by the
    /// remote client, so bad input fails before it crosses the network).
    pub fn check_append(&self, case_id: Uuid, events: &[NewEvent], commit_id: Uuid) -> Result<()> {
        if case_id.is_nil() {
            return Err(Error::invalid("case_id", "must not be the nil uuid"));
        }
        if commit_id.is_nil() {
            return Err(Error::invalid("commit_id", "must not be the nil uuid"));
        }
        if events.is_empty() {
            return Err(Error::invalid(
                "events",
                "a commit needs at least one event",
            ));
        }
        if events.len() > self.max_events_per_commit {
            return Err(Error::invalid(
                "events",
                format!(
                    "{} events exceed the limit of {} per commit",
                    events.len(),
                    self.max_events_per_commit
                ),
            ));
        }
        for (i, e) in events.iter().enumerate() {
            if e.event_id.is_nil() {
                return Err(Error::invalid(
                    format!("events[{i}].event_id"),
                    "must not be the nil uuid",
                ));
            }
            check_name(&format!("events[{i}].event_type"), &e.event_type, false)?;
            check_name(&format!("events[{i}].actor"), &e.actor, false)?;
            check_name(&format!("events[{i}].causation_id"), &e.causation_id, true)?;
            check_metadata(i, &e.metadata)?;
            if e.payload.len() > self.max_payload_bytes {
                return Err(Error::invalid(
                    format!("events[{i}].payload"),
                    format!(
                        "{} bytes exceed the limit of {} bytes",
                        e.payload.len(),
                        self.max_payload_bytes
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn check_metadata(i: usize, metadata: &Metadata) -> Result<()> {
    let field = format!("events[{i}].metadata");
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(Error::invalid(
            field,
            format!(
                "{} entries exceed the limit of {MAX_METADATA_ENTRIES}",
                metadata.len()
            ),
        ));
    }
    for (k, v) in metadata {
        if k.is_empty() || k.len() > MAX_METADATA_KEY {
            return Err(Error::invalid(
                field,
                format!("keys must be 1 to {MAX_METADATA_KEY} bytes"),
            ));
        }
        if v.len() > MAX_METADATA_VALUE {
            return Err(Error::invalid(
                format!("{field}[{k}]"),
                format!("values must be at most {MAX_METADATA_VALUE} bytes"),
            ));
        }
    }
    Ok(())
}

/// Checks a consumer name for checkpoints.
pub fn check_consumer(consumer: &str) -> Result<()> {
    check_name("consumer", consumer, false)
}

fn check_name(field: &str, value: &str, may_be_empty: bool) -> Result<()> {
    if value.is_empty() && !may_be_empty {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(Error::invalid(
            field,
            format!("longer than {MAX_NAME_BYTES} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// The shared event log: one stream per case, one global order.
///
/// # Contract
/// Every backend keeps these promises; the [`conformance`] suite checks each of them.
///
/// - **Atomic commits.** An [`append`](EventLog::append) writes all of its events or none.
///   Events get consecutive versions in their case stream (1, 2, 3, …) and consecutive
///   global positions (1, 2, 3, … across all cases). Readers never observe a gap.
/// - **Optimistic concurrency.** If `expected` does not admit the stream's current
///   version the append fails with [`Error::Conflict`] carrying the actual version and
///   writes nothing.
/// - **Idempotency without a time window.** The commit id is recorded durably with the
///   commit. Appending a commit id that is already in the log returns the original
///   [`Appended`] (with `deduplicated` set) and writes nothing, however long ago the
///   original was written and even if the retry races it. The commit-id check comes
///   before the concurrency check, so a retry of a successful `Exact` append succeeds.
///   A commit id names one commit: a retry that names another case still gets the
///   original commit back, and [`Appended::case_id`] says which case that is (this is how
///   intake turns a terminal's request id into the same case id on every retry).
/// - **Durability.** `Ok` from `append` or `save_checkpoint` means the write is on stable
///   storage (see each backend for exactly what that means) and visible to every reader.
///   Readers never observe a write that is not yet durable.
/// - **Limits.** Empty commits, commits over [`Limits::max_events_per_commit`], payloads
///   over [`Limits::max_payload_bytes`], nil ids and over-long names are
///   [`Error::Invalid`] naming the field, and nothing is written.
/// - **Reads** return events in version (case) or position (global) order, at most
///   `limit` of them (clamped to [`MAX_READ_LIMIT`]). Reading a case with no events is
///   [`Error::NotFound`].
/// - **Subscriptions** deliver every matching event with position ≥ `from_position`
///   exactly once and in position order: first what is stored, then live appends,
///   without a gap at the switch. A slow subscriber never blocks writers or other
///   subscribers; it falls back to reading storage. The stream ends (without error)
///   when the log shuts down, and with an error if the backend fails.
///   [`subscribe_case`](EventLog::subscribe_case) does the same for one case's stream,
///   in version order, and reads nothing else.
/// - **Stamp and chain.** Every commit is stored with the `appended_by` of its append and
///   a [`chain::Link`]: its hash over its events and the hash of the commit before it in
///   global order ([`chain`] has the canonical encoding). Reads return both unchanged.
/// - **Checkpoints** are durable on `Ok`; [`load_checkpoint`](EventLog::load_checkpoint)
///   returns the last saved position, or 0 for a consumer that never saved.
///
/// Consumers are at-least-once: they resume from their checkpoint and may see an event
/// twice. Writing their effects with deterministic commit ids and expected versions makes
/// them effectively-once.
#[async_trait::async_trait]
pub trait EventLog: Send + Sync + fmt::Debug + 'static {
    /// Appends `events` to the stream of `case_id` as one commit stamped with
    /// `appended_by`, the authenticated principal (or process role) doing the append.
    ///
    /// Who may name `appended_by` is the point: only code that authenticated the caller
    /// (the gRPC face of the log, with the principal of the bearer token) or the process
    /// itself (a [`Stamped`] handle naming its role) calls this. Storage backends record
    /// the argument as given; `RemoteLog` (in `onecity-eventlog-grpc`) ignores it, because
    /// the serving process stamps the principal it authenticated.
    async fn append_as(
        &self,
        appended_by: &str,
        case_id: Uuid,
        expected: Expected,
        events: Vec<NewEvent>,
        commit_id: Uuid,
    ) -> Result<Appended>;

    /// Appends `events` to the stream of `case_id` as one commit, stamped with this
    /// handle's identity: a [`Stamped`] handle's role; nothing (empty `appended_by`) for
    /// a bare backend, which only tests and offline tools use directly.
    async fn append(
        &self,
        case_id: Uuid,
        expected: Expected,
        events: Vec<NewEvent>,
        commit_id: Uuid,
    ) -> Result<Appended> {
        self.append_as("", case_id, expected, events, commit_id)
            .await
    }

    /// Events of one case with version ≥ `from_version`, in version order.
    async fn read_case(
        &self,
        case_id: Uuid,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>>;

    /// Events with position ≥ `from_position`, in position order.
    async fn read_all(&self, from_position: u64, limit: usize) -> Result<Vec<RecordedEvent>>;

    /// Catch-up-then-live stream of events with position ≥ `from_position` that pass `filter`.
    async fn subscribe(&self, from_position: u64, filter: Filter) -> Result<EventStream>;

    /// Catch-up-then-live stream of the events of `case_id` with version ≥ `from_version`,
    /// in version order, each exactly once, reading only that case's stream (never the
    /// rest of the log). A case with no events yet is not an error: the stream waits for
    /// its first event. It ends (without error) when the log shuts down, with an error if
    /// the backend fails, and when the receiver is dropped.
    async fn subscribe_case(&self, case_id: Uuid, from_version: u64) -> Result<EventStream>;

    /// Durably records that `consumer` has processed everything up to `position`.
    async fn save_checkpoint(&self, consumer: &str, position: u64) -> Result<()>;

    /// The last position saved by `consumer`, or 0.
    async fn load_checkpoint(&self, consumer: &str) -> Result<u64>;

    /// Position of the last durable event (0 for an empty log).
    async fn head(&self) -> Result<u64>;

    /// The whole stream of a case, in version order (pages through `read_case`).
    async fn read_case_all(&self, case_id: Uuid) -> Result<Vec<RecordedEvent>> {
        let mut out = self.read_case(case_id, 1, MAX_READ_LIMIT).await?;
        let mut page = out.len();
        while page == MAX_READ_LIMIT {
            let more = self
                .read_case(case_id, out.len() as u64 + 1, MAX_READ_LIMIT)
                .await?;
            page = more.len();
            out.extend(more);
        }
        Ok(out)
    }
}

/// A handle on a log that stamps its appends with one identity: how a process names the
/// role that writes (`service:intake`, `service:assessment`, …) when it appends in-process.
/// Everything else passes through; [`EventLog::append_as`] keeps the name it is given.
#[derive(Debug, Clone)]
pub struct Stamped {
    log: std::sync::Arc<dyn EventLog>,
    appended_by: String,
}

impl Stamped {
    /// `log`, appending as `appended_by`.
    pub fn new(log: std::sync::Arc<dyn EventLog>, appended_by: impl Into<String>) -> Self {
        Stamped {
            log,
            appended_by: appended_by.into(),
        }
    }

    /// The identity this handle stamps.
    pub fn appended_by(&self) -> &str {
        &self.appended_by
    }
}

#[async_trait::async_trait]
impl EventLog for Stamped {
    async fn append_as(
        &self,
        appended_by: &str,
        case_id: Uuid,
        expected: Expected,
        events: Vec<NewEvent>,
        commit_id: Uuid,
    ) -> Result<Appended> {
        self.log
            .append_as(appended_by, case_id, expected, events, commit_id)
            .await
    }

    async fn append(
        &self,
        case_id: Uuid,
        expected: Expected,
        events: Vec<NewEvent>,
        commit_id: Uuid,
    ) -> Result<Appended> {
        self.log
            .append_as(&self.appended_by, case_id, expected, events, commit_id)
            .await
    }

    async fn read_case(
        &self,
        case_id: Uuid,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.log.read_case(case_id, from_version, limit).await
    }

    async fn read_all(&self, from_position: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.log.read_all(from_position, limit).await
    }

    async fn subscribe(&self, from_position: u64, filter: Filter) -> Result<EventStream> {
        self.log.subscribe(from_position, filter).await
    }

    async fn subscribe_case(&self, case_id: Uuid, from_version: u64) -> Result<EventStream> {
        self.log.subscribe_case(case_id, from_version).await
    }

    async fn save_checkpoint(&self, consumer: &str, position: u64) -> Result<()> {
        self.log.save_checkpoint(consumer, position).await
    }

    async fn load_checkpoint(&self, consumer: &str) -> Result<u64> {
        self.log.load_checkpoint(consumer).await
    }

    async fn head(&self) -> Result<u64> {
        self.log.head().await
    }
}

/// Clamps a caller's read limit: 0 means the default of 1,000.
pub fn clamp_limit(limit: usize) -> usize {
    match limit {
        0 => 1_000,
        n => n.min(MAX_READ_LIMIT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_admits() {
        assert!(Expected::Any.admits(0));
        assert!(Expected::Any.admits(7));
        assert!(Expected::NoStream.admits(0));
        assert!(!Expected::NoStream.admits(1));
        assert!(Expected::Exact(3).admits(3));
        assert!(!Expected::Exact(3).admits(4));
        assert!(Expected::Exact(0).admits(0));
    }

    #[test]
    fn limits_name_the_field() {
        let limits = Limits {
            max_events_per_commit: 2,
            max_payload_bytes: 4,
        };
        let case = Uuid::now_v7();
        let commit = Uuid::now_v7();
        let ev = |p: usize| NewEvent::new("t", "a", vec![0; p]);
        let field = |r: Result<()>| match r {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("expected invalid, got {other:?}"),
        };
        assert_eq!(field(limits.check_append(case, &[], commit)), "events");
        assert_eq!(
            field(limits.check_append(case, &[ev(1), ev(1), ev(1)], commit)),
            "events"
        );
        assert_eq!(
            field(limits.check_append(case, &[ev(1), ev(5)], commit)),
            "events[1].payload"
        );
        assert_eq!(
            field(limits.check_append(Uuid::nil(), &[ev(1)], commit)),
            "case_id"
        );
        assert_eq!(
            field(limits.check_append(case, &[ev(1)], Uuid::nil())),
            "commit_id"
        );
        let mut bad = ev(1);
        bad.event_type.clear();
        assert_eq!(
            field(limits.check_append(case, &[bad], commit)),
            "events[0].event_type"
        );
        assert!(limits.check_append(case, &[ev(4), ev(0)], commit).is_ok());
    }

    #[test]
    fn filter_by_prefix() {
        let mut e = RecordedEvent {
            event_id: Uuid::now_v7(),
            case_id: Uuid::now_v7(),
            version: 1,
            position: 1,
            recorded_at: SystemTime::UNIX_EPOCH,
            event_type: "onecity.v1.ReferralIssued".into(),
            actor: "a".into(),
            causation_id: String::new(),
            payload: vec![],
            commit_id: Uuid::now_v7(),
            appended_by: String::new(),
            chain: None,
            metadata: Default::default(),
        };
        assert!(Filter::all().matches(&e));
        assert!(Filter::prefixes(["onecity.v1.Referral"]).matches(&e));
        assert!(!Filter::prefixes(["onecity.v1.Application"]).matches(&e));
        e.event_type = "onecity.v1.ApplicationSubmitted".into();
        assert!(Filter::prefixes(["x", "onecity.v1.Application"]).matches(&e));
    }
}
