//! Quarantine: the durable record of events a consumer could not handle and moved past.
//!
//! A consumer that meets a poison event (see
//! [`ChunkHandler::is_poison`](crate::consumer::ChunkHandler::is_poison)) appends an
//! `onecity.v1.EventQuarantined` to one system stream, [`stream`], and its checkpoint
//! passes the event; a successful retry appends `onecity.v1.QuarantineReleased`. The
//! record lives in the log itself because the log is the source of truth: it survives
//! restarts, is replicated with everything else and is read by any process. Both commit
//! ids are derived from the consumer and the position, so a replay records each once.

use std::collections::BTreeMap;

use onecity_domain::ids;
use onecity_proto::prost::Message as _;
use onecity_proto::v1 as pb;
use uuid::Uuid;

use crate::consumer::ChunkHandler;
use crate::{EventLog, Expected, NewEvent, RecordedEvent, Result};

/// Event type of a quarantine record.
pub const EVENT_QUARANTINED: &str = "onecity.v1.EventQuarantined";
/// Event type of a release.
pub const QUARANTINE_RELEASED: &str = "onecity.v1.QuarantineReleased";

/// The system stream of the quarantine records.
pub fn stream() -> Uuid {
    ids::quarantine_stream()
}

/// An event a consumer quarantined and that has not been released since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// Position of the event in the global log.
    pub position: u64,
    /// Its case stream.
    pub case_id: Uuid,
    /// The consumer that could not handle it.
    pub consumer: String,
    /// Its event type.
    pub event_type: String,
    /// Why.
    pub reason: String,
    /// When it was quarantined (RFC 3339, UTC).
    pub quarantined_at: String,
}

/// Records durably that `consumer` quarantined `event` because of `reason`. A replay of
/// the same (consumer, position) writes nothing.
pub async fn record(
    log: &dyn EventLog,
    consumer: &str,
    event: &RecordedEvent,
    reason: &str,
) -> Result<()> {
    let payload = pb::EventQuarantined {
        position: event.position,
        case_id: event.case_id.to_string(),
        consumer: consumer.to_owned(),
        event_type: event.event_type.clone(),
        reason: reason.to_owned(),
    }
    .encode_to_vec();
    let new = NewEvent::new(EVENT_QUARANTINED, actor(consumer), payload)
        .caused_by(event.event_id.to_string());
    log.append(
        stream(),
        Expected::Any,
        vec![new],
        ids::quarantine_commit(consumer, event.position),
    )
    .await?;
    Ok(())
}

/// Records durably that `consumer` has now handled the event at `position`.
pub async fn release(log: &dyn EventLog, consumer: &str, position: u64) -> Result<()> {
    let payload = pb::QuarantineReleased {
        position,
        consumer: consumer.to_owned(),
    }
    .encode_to_vec();
    let new = NewEvent::new(QUARANTINE_RELEASED, actor(consumer), payload);
    log.append(
        stream(),
        Expected::Any,
        vec![new],
        ids::release_commit(consumer, position),
    )
    .await?;
    Ok(())
}

/// Every event still quarantined (quarantined and not released), by position then
/// consumer. A record that does not decode is skipped with a warning: the list must stay
/// readable whatever else the stream holds.
pub async fn list(log: &dyn EventLog) -> Result<Vec<Quarantined>> {
    let events = match log.read_case_all(stream()).await {
        Ok(events) => events,
        Err(crate::Error::NotFound(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut open = BTreeMap::new();
    for e in &events {
        match e.event_type.as_str() {
            EVENT_QUARANTINED => match pb::EventQuarantined::decode(e.payload.as_slice()) {
                Ok(q) => {
                    let key = (q.position, q.consumer.clone());
                    open.insert(
                        key,
                        Quarantined {
                            position: q.position,
                            case_id: q.case_id.parse().unwrap_or_default(),
                            consumer: q.consumer,
                            event_type: q.event_type,
                            reason: q.reason,
                            quarantined_at: e.recorded_at_rfc3339(),
                        },
                    );
                }
                Err(_) => undecodable(e),
            },
            QUARANTINE_RELEASED => match pb::QuarantineReleased::decode(e.payload.as_slice()) {
                Ok(r) => {
                    open.remove(&(r.position, r.consumer));
                }
                Err(_) => undecodable(e),
            },
            _ => {}
        }
    }
    Ok(open.into_values().collect())
}

/// A consumer's handler as a retry sees it: handles one event again. Every
/// [`ChunkHandler`] is one, so a process can keep its workers' handlers by consumer name.
#[async_trait::async_trait]
pub trait Redo: Send + Sync {
    /// Handles `event` alone, as the consumer would.
    async fn redo(&self, event: &RecordedEvent) -> std::result::Result<(), Failure>;
}

#[async_trait::async_trait]
impl<H: ChunkHandler> Redo for H {
    async fn redo(&self, event: &RecordedEvent) -> std::result::Result<(), Failure> {
        self.handle(std::slice::from_ref(event)).await.map_err(|e| {
            if H::is_poison(&e) {
                Failure::Poison(e.to_string())
            } else {
                Failure::Transient(e.to_string())
            }
        })
    }
}

/// Why a retry did not release an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The handler fails on it again with a poison error: it stays quarantined.
    #[error("still cannot be handled: {0}")]
    Poison(String),
    /// The handler or the log failed transiently: it stays quarantined, try again.
    #[error("failed for now: {0}")]
    Transient(String),
}

/// Re-runs `handler` (the handler of `consumer`) on the event at `position` and, when it
/// succeeds, records the release. The event is handled again even if it was released
/// meanwhile: handlers are idempotent, so that is a no-op.
pub async fn retry(
    log: &dyn EventLog,
    consumer: &str,
    handler: &dyn Redo,
    position: u64,
) -> std::result::Result<(), Failure> {
    let transient = |e: crate::Error| Failure::Transient(e.to_string());
    let event = log
        .read_all(position, 1)
        .await
        .map_err(transient)?
        .into_iter()
        .find(|e| e.position == position)
        .ok_or_else(|| Failure::Transient(format!("no event at position {position}")))?;
    handler.redo(&event).await?;
    release(log, consumer, position).await.map_err(transient)?;
    tracing::info!(consumer, position, case_id = %event.case_id, "quarantined event handled, released");
    Ok(())
}

fn undecodable(e: &RecordedEvent) {
    tracing::warn!(
        position = e.position,
        event_type = %e.event_type,
        "quarantine record does not decode, skipped"
    );
}

fn actor(consumer: &str) -> String {
    format!("service:{consumer}")
}
