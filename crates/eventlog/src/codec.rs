//! Conversions between log types and their protobuf form. The protobuf `RecordedEvent`
//! is both the wire format of the gRPC face and the value format on disk, so one
//! well-tested encoding serves both (and stays readable by any protobuf tool).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use onecity_proto::v1 as pb;
use prost::Message;
use uuid::Uuid;

use crate::{Error, Expected, NewEvent, RecordedEvent, Result};

pub(crate) fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

pub(crate) fn system_time(ts: Option<prost_types::Timestamp>) -> SystemTime {
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
pub(crate) fn now_micros() -> SystemTime {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    UNIX_EPOCH + Duration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

pub(crate) fn parse_uuid(field: &str, s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| Error::invalid(field, format!("not a uuid: {e}")))
}

impl From<&RecordedEvent> for pb::RecordedEvent {
    fn from(e: &RecordedEvent) -> Self {
        pb::RecordedEvent {
            event_id: e.event_id.to_string(),
            case_id: e.case_id.to_string(),
            version: e.version,
            position: e.position,
            recorded_at: Some(timestamp(e.recorded_at)),
            event_type: e.event_type.clone(),
            actor: e.actor.clone(),
            causation_id: e.causation_id.clone(),
            payload: e.payload.clone(),
            commit_id: e.commit_id.to_string(),
        }
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
        } = p;
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
        })
    }
}

impl From<&NewEvent> for pb::NewEvent {
    fn from(e: &NewEvent) -> Self {
        pb::NewEvent {
            event_id: e.event_id.to_string(),
            event_type: e.event_type.clone(),
            actor: e.actor.clone(),
            causation_id: e.causation_id.clone(),
            payload: e.payload.clone(),
        }
    }
}

/// Converts the events of an `AppendRequest`, naming the field of the first bad one.
pub(crate) fn new_events(events: Vec<pb::NewEvent>) -> Result<Vec<NewEvent>> {
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
            } = e;
            Ok(NewEvent {
                event_id: parse_uuid(&format!("events[{i}].event_id"), &event_id)?,
                event_type,
                actor,
                causation_id,
                payload,
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

pub(crate) fn expected(e: Option<pb::ExpectedVersion>) -> Result<Expected> {
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

pub(crate) fn encode_event(e: &RecordedEvent) -> Vec<u8> {
    pb::RecordedEvent::from(e).encode_to_vec()
}

/// A stored event's type and nothing else: prost skips every other field (the payload
/// included) without copying it, so a subscriber can drop events its filter rejects for
/// the price of reading one short string.
#[derive(Clone, PartialEq, Message)]
struct TypeOnly {
    #[prost(string, tag = "6")]
    event_type: String,
}

/// Whether the stored event `bytes` passes `filter`, without decoding the event.
pub(crate) fn stored_event_matches(bytes: &[u8], filter: &crate::Filter) -> Result<bool> {
    if filter.event_type_prefixes.is_empty() {
        return Ok(true);
    }
    let t = TypeOnly::decode(bytes)
        .map_err(|e| Error::Storage(format!("corrupt event record: {e}")))?;
    Ok(filter.matches_type(&t.event_type))
}

pub(crate) fn decode_event(bytes: &[u8]) -> Result<RecordedEvent> {
    let p = pb::RecordedEvent::decode(bytes)
        .map_err(|e| Error::Storage(format!("corrupt event record: {e}")))?;
    RecordedEvent::try_from(p).map_err(|e| Error::Storage(format!("corrupt event record: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn stored_events_are_filtered_by_type_without_decoding() {
        let e = RecordedEvent {
            event_id: Uuid::now_v7(),
            case_id: Uuid::now_v7(),
            version: 3,
            position: 9,
            recorded_at: now_micros(),
            event_type: "onecity.v1.ReferralIssued".into(),
            actor: "a".into(),
            causation_id: String::new(),
            payload: vec![7; 100],
            commit_id: Uuid::now_v7(),
        };
        let bytes = encode_event(&e);
        let f = |p: &[&str]| crate::Filter::prefixes(p.iter().copied());
        assert!(stored_event_matches(&bytes, &crate::Filter::all()).unwrap());
        assert!(stored_event_matches(&bytes, &f(&["onecity.v1.Referral"])).unwrap());
        assert!(stored_event_matches(&bytes, &f(&["x", "onecity.v1.R"])).unwrap());
        assert!(!stored_event_matches(&bytes, &f(&["onecity.v1.Eligibility"])).unwrap());
        assert!(stored_event_matches(&[0xff, 0xff], &f(&["x"])).is_err());
    }

    fn arb_event() -> impl Strategy<Value = RecordedEvent> {
        (
            any::<u128>(),
            any::<u128>(),
            1..u64::MAX,
            1..u64::MAX,
            0..4_000_000_000_000_000u64,
            "[a-zA-Z.]{1,40}",
            ".{0,20}",
            ".{0,20}",
            proptest::collection::vec(any::<u8>(), 0..256),
            any::<u128>(),
        )
            .prop_map(
                |(id, case, version, position, micros, ty, actor, cause, payload, commit)| {
                    RecordedEvent {
                        event_id: Uuid::from_u128(id),
                        case_id: Uuid::from_u128(case),
                        version,
                        position,
                        recorded_at: UNIX_EPOCH + Duration::from_micros(micros),
                        event_type: ty,
                        actor,
                        causation_id: cause,
                        payload,
                        commit_id: Uuid::from_u128(commit),
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn stored_event_roundtrips(e in arb_event()) {
            prop_assert_eq!(decode_event(&encode_event(&e)).unwrap(), e);
        }

        #[test]
        fn expected_roundtrips(v in any::<u64>(), k in 0..3u8) {
            let e = match k { 0 => Expected::Any, 1 => Expected::NoStream, _ => Expected::Exact(v) };
            prop_assert_eq!(expected(Some(e.into())).unwrap(), e);
        }
    }

    #[test]
    fn garbage_is_a_storage_error_not_a_panic() {
        assert!(matches!(
            decode_event(&[0xff, 0xff, 0xff]),
            Err(Error::Storage(_))
        ));
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
