//! Conversions between log types and their protobuf form. The protobuf `RecordedEvent`
//! is the wire format of the gRPC face, the envelope of the sled backend's stored events
//! and part of the JetStream backend's messages, so one well-tested encoding serves every
//! backend (and stays readable by any protobuf tool).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use onecity_proto::v1 as pb;
use uuid::Uuid;

use crate::chain::{Hash, Link};
use crate::{Error, Expected, NewEvent, RecordedEvent, Result};

/// A protobuf timestamp of `t` (the epoch for times before it).
pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// The time of a protobuf timestamp (the epoch when absent or before it).
pub fn system_time(ts: Option<prost_types::Timestamp>) -> SystemTime {
    match ts {
        Some(ts) if ts.seconds >= 0 => {
            UNIX_EPOCH
                + Duration::from_secs(ts.seconds.unsigned_abs())
                + Duration::from_nanos(u64::try_from(ts.nanos).unwrap_or(0))
        }
        _ => UNIX_EPOCH,
    }
}

/// Truncates to microseconds: the precision every backend stores, so that an event
/// read back compares equal to what was reported at append time.
pub fn now_micros() -> SystemTime {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    UNIX_EPOCH + Duration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Parses a uuid sent as text; [`Error::Invalid`] naming `field` when it is not one.
pub fn parse_uuid(field: &str, s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| Error::invalid(field, format!("not a uuid: {e}")))
}

impl From<&RecordedEvent> for pb::RecordedEvent {
    fn from(e: &RecordedEvent) -> Self {
        pb::RecordedEvent {
            payload: e.payload.clone(),
            ..envelope(e)
        }
    }
}

fn metadata_to_proto(m: &crate::Metadata) -> std::collections::HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Everything but the payload (which is what is large).
pub fn envelope(e: &RecordedEvent) -> pb::RecordedEvent {
    pb::RecordedEvent {
        event_id: e.event_id.to_string(),
        case_id: e.case_id.to_string(),
        version: e.version,
        position: e.position,
        recorded_at: Some(timestamp(e.recorded_at)),
        event_type: e.event_type.clone(),
        actor: e.actor.clone(),
        causation_id: e.causation_id.clone(),
        payload: Vec::new(),
        commit_id: e.commit_id.to_string(),
        appended_by: e.appended_by.clone(),
        prev_hash: e.chain.map(|l| l.prev.to_vec()).unwrap_or_default(),
        commit_hash: e.chain.map(|l| l.hash.to_vec()).unwrap_or_default(),
        metadata: metadata_to_proto(&e.metadata),
    }
}

impl TryFrom<pb::RecordedEvent> for RecordedEvent {
    type Error = Error;

    fn try_from(p: pb::RecordedEvent) -> Result<Self> {
        let pb::RecordedEvent {
            event_id,
            case_id,
            version,
            position,
            recorded_at,
            event_type,
            actor,
            causation_id,
            payload,
            commit_id,
            appended_by,
            prev_hash,
            commit_hash,
            metadata,
        } = p;
        let chain = link(&prev_hash, &commit_hash)?;
        Ok(RecordedEvent {
            event_id: parse_uuid("event_id", &event_id)?,
            case_id: parse_uuid("case_id", &case_id)?,
            version,
            position,
            recorded_at: system_time(recorded_at),
            event_type,
            actor,
            causation_id,
            payload,
            commit_id: parse_uuid("commit_id", &commit_id)?,
            appended_by,
            chain,
            metadata: metadata.into_iter().collect(),
        })
    }
}

/// The chain link of a protobuf event: both hashes empty (a commit from before the
/// chain) or both 32 bytes.
fn link(prev: &[u8], hash: &[u8]) -> Result<Option<Link>> {
    if prev.is_empty() && hash.is_empty() {
        return Ok(None);
    }
    let digest = |field: &str, b: &[u8]| {
        Hash::try_from(b).map_err(|_| {
            Error::invalid(
                field,
                format!("must be 32 bytes (or empty with the other), is {}", b.len()),
            )
        })
    };
    Ok(Some(Link {
        prev: digest("prev_hash", prev)?,
        hash: digest("commit_hash", hash)?,
    }))
}

impl From<&NewEvent> for pb::NewEvent {
    fn from(e: &NewEvent) -> Self {
        pb::NewEvent {
            event_id: e.event_id.to_string(),
            event_type: e.event_type.clone(),
            actor: e.actor.clone(),
            causation_id: e.causation_id.clone(),
            payload: e.payload.clone(),
            metadata: metadata_to_proto(&e.metadata),
        }
    }
}

/// Converts the events of an `AppendRequest`, naming the field of the first bad one.
pub fn new_events(events: Vec<pb::NewEvent>) -> Result<Vec<NewEvent>> {
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let pb::NewEvent {
                event_id,
                event_type,
                actor,
                causation_id,
                payload,
                metadata,
            } = e;
            Ok(NewEvent {
                event_id: parse_uuid(&format!("events[{i}].event_id"), &event_id)?,
                event_type,
                actor,
                causation_id,
                payload,
                metadata: metadata.into_iter().collect(),
            })
        })
        .collect()
}

impl From<Expected> for pb::ExpectedVersion {
    fn from(e: Expected) -> Self {
        let (kind, version) = match e {
            Expected::Any => (pb::ExpectedKind::Any, 0),
            Expected::NoStream => (pb::ExpectedKind::NoStream, 0),
            Expected::Exact(v) => (pb::ExpectedKind::Exact, v),
        };
        pb::ExpectedVersion {
            kind: kind as i32,
            version,
        }
    }
}

/// The [`Expected`] of a request; [`Error::Invalid`] when absent or unspecified.
pub fn expected(e: Option<pb::ExpectedVersion>) -> Result<Expected> {
    let Some(pb::ExpectedVersion { kind, version }) = e else {
        return Err(Error::invalid("expected", "is required"));
    };
    match pb::ExpectedKind::try_from(kind) {
        Ok(pb::ExpectedKind::Any) => Ok(Expected::Any),
        Ok(pb::ExpectedKind::NoStream) => Ok(Expected::NoStream),
        Ok(pb::ExpectedKind::Exact) => Ok(Expected::Exact(version)),
        Ok(pb::ExpectedKind::Unspecified) | Err(_) => Err(Error::invalid(
            "expected.kind",
            "must be ANY, NO_STREAM or EXACT",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn expected_roundtrips(v in any::<u64>(), k in 0..3u8) {
            let e = match k { 0 => Expected::Any, 1 => Expected::NoStream, _ => Expected::Exact(v) };
            prop_assert_eq!(expected(Some(e.into())).unwrap(), e);
        }
    }

    #[test]
    fn unspecified_expected_is_invalid() {
        assert!(matches!(expected(None), Err(Error::Invalid { field, .. }) if field == "expected"));
        let p = pb::ExpectedVersion {
            kind: 0,
            version: 0,
        };
        assert!(
            matches!(expected(Some(p)), Err(Error::Invalid { field, .. }) if field == "expected.kind")
        );
    }
}
