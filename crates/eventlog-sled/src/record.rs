//! The stored form of an event (the value of an `E` key): the protobuf envelope of
//! [`onecity_eventlog::codec`], with the payload framed after it and lz4-compressed when
//! that pays.

use onecity_eventlog::codec::envelope;
use onecity_eventlog::{Error, Filter, RecordedEvent, Result};
use onecity_proto::v1 as pb;
use prost::Message;

// The value of an `E` key in the sled log. Three layouts:
//
// - `0x0A …`: a plain protobuf `RecordedEvent` (stores written before framing; a
//   `RecordedEvent` always starts with field 1, the event id, whose tag byte is 0x0A);
// - `0x01` + length-delimited envelope + payload: the envelope is the `RecordedEvent`
//   with an empty payload, the payload follows as is;
// - `0x02` + length-delimited envelope + lz4 block (size-prefixed) of the payload.
//
// Payloads of 512 bytes or more are compressed when that saves at least an eighth: the
// assessments the services append are long, repetitive explanation text, and the
// log's size is what sled's recovery, a cold start's replay and the page cache pay for.
// The envelope stays uncompressed so a subscriber can read the event type alone.
const FRAMED_RAW: u8 = 0x01;
const FRAMED_LZ4: u8 = 0x02;
const COMPRESS_FROM: usize = 512;
/// Refuses to inflate a stored payload beyond this (a corrupt size prefix must not
/// become a huge allocation); far above any payload limit a deployment would set.
const MAX_INFLATED: usize = 256 * 1024 * 1024;

#[cfg(test)]
pub(crate) fn encode_event(e: &RecordedEvent) -> Vec<u8> {
    encode_event_with(e, compress_payload(&e.payload).as_deref())
}

/// The stored form of `payload` when compressing it pays (see above), else `None`.
/// Separate from [`encode_event_with`] so that the sled writer, the one thread every
/// commit passes through, gets it already done by the appending task.
pub(crate) fn compress_payload(payload: &[u8]) -> Option<Vec<u8>> {
    (payload.len() >= COMPRESS_FROM)
        .then(|| lz4_flex::compress_prepend_size(payload))
        .filter(|c| c.len() <= payload.len() - payload.len() / 8)
}

/// [`encode_event`] with the payload's compressed form given: exactly what
/// [`compress_payload`] returned for `e.payload`.
pub(crate) fn encode_event_with(e: &RecordedEvent, compressed: Option<&[u8]>) -> Vec<u8> {
    let envelope = envelope(e);
    let (kind, body) = match compressed {
        Some(c) => (FRAMED_LZ4, c),
        None => (FRAMED_RAW, e.payload.as_slice()),
    };
    let mut out = Vec::with_capacity(1 + 5 + envelope.encoded_len() + body.len());
    out.push(kind);
    envelope
        .encode_length_delimited(&mut out)
        .expect("a Vec grows as needed");
    out.extend_from_slice(body);
    out
}

fn corrupt(e: impl std::fmt::Display) -> Error {
    Error::Storage(format!("corrupt event record: {e}"))
}

/// The envelope part of a stored event and what follows it.
fn split_framed(bytes: &[u8]) -> Result<(&[u8], &[u8])> {
    let mut rest = &bytes[1..];
    let len = prost::encoding::decode_varint(&mut rest).map_err(corrupt)?;
    let len = usize::try_from(len).map_err(corrupt)?;
    if len > rest.len() {
        return Err(corrupt("envelope runs past the record"));
    }
    Ok(rest.split_at(len))
}

/// A stored event's type and nothing else: prost skips every other field without
/// copying it, so a subscriber can drop events its filter rejects for the price of
/// reading one short string.
#[derive(Clone, PartialEq, Message)]
struct TypeOnly {
    #[prost(string, tag = "6")]
    event_type: String,
}

/// Whether the stored event `bytes` passes `filter`, without decoding the event.
pub(crate) fn stored_event_matches(bytes: &[u8], filter: &Filter) -> Result<bool> {
    if filter.event_type_prefixes.is_empty() {
        return Ok(true);
    }
    let envelope = match bytes.first() {
        Some(&FRAMED_RAW | &FRAMED_LZ4) => split_framed(bytes)?.0,
        _ => bytes,
    };
    let t = TypeOnly::decode(envelope).map_err(corrupt)?;
    Ok(filter.matches_type(&t.event_type))
}

pub(crate) fn decode_event(bytes: &[u8]) -> Result<RecordedEvent> {
    let p = match bytes.first() {
        Some(&kind @ (FRAMED_RAW | FRAMED_LZ4)) => {
            let (envelope, body) = split_framed(bytes)?;
            let mut p = pb::RecordedEvent::decode(envelope).map_err(corrupt)?;
            p.payload = if kind == FRAMED_RAW {
                body.to_vec()
            } else {
                let declared = body
                    .get(..4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                    .ok_or_else(|| corrupt("missing payload size"))?;
                if declared > MAX_INFLATED {
                    return Err(corrupt(format!("payload claims {declared} bytes")));
                }
                lz4_flex::decompress_size_prepended(body).map_err(corrupt)?
            };
            p
        }
        _ => pb::RecordedEvent::decode(bytes).map_err(corrupt)?,
    };
    RecordedEvent::try_from(p).map_err(corrupt)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use onecity_eventlog::codec::now_micros;
    use proptest::prelude::*;
    use uuid::Uuid;

    use super::*;

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
            appended_by: "service:test".into(),
            chain: Some(onecity_eventlog::chain::Link {
                prev: [1; 32],
                hash: [2; 32],
            }),
            metadata: [("traceparent".to_owned(), "00-ab-cd-01".to_owned())].into(),
        };
        let bytes = encode_event(&e);
        let f = |p: &[&str]| Filter::prefixes(p.iter().copied());
        assert!(stored_event_matches(&bytes, &Filter::all()).unwrap());
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
            (
                ".{0,20}",
                proptest::option::of(any::<([u8; 32], [u8; 32])>()),
                proptest::collection::btree_map("[a-z]{1,8}", ".{0,20}", 0..3),
            ),
        )
            .prop_map(
                |(
                    id,
                    case,
                    version,
                    position,
                    micros,
                    ty,
                    actor,
                    cause,
                    payload,
                    commit,
                    (by, link, metadata),
                )| {
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
                        appended_by: by,
                        chain: link
                            .map(|(prev, hash)| onecity_eventlog::chain::Link { prev, hash }),
                        metadata,
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
        fn compressible_payloads_roundtrip_smaller(
            e in arb_event(),
            words in proptest::collection::vec("[a-d]{1,6} ", 200..2000),
        ) {
            let e = RecordedEvent { payload: words.concat().into_bytes(), ..e };
            let stored = encode_event(&e);
            prop_assert_eq!(stored[0], FRAMED_LZ4);
            prop_assert!(stored.len() < pb::RecordedEvent::from(&e).encoded_len());
            prop_assert_eq!(decode_event(&stored).unwrap(), e);
        }

        #[test]
        fn events_stored_before_framing_still_decode(e in arb_event()) {
            let legacy = pb::RecordedEvent::from(&e).encode_to_vec();
            prop_assert_eq!(legacy[0], 0x0A);
            prop_assert_eq!(decode_event(&legacy).unwrap(), e);
        }

        #[test]
        fn truncated_records_are_errors_not_panics(e in arb_event(), cut in 0usize..64) {
            let stored = encode_event(&e);
            let cut = cut.min(stored.len() - 1);
            let _ = decode_event(&stored[..stored.len() - cut - 1]);
            let _ = stored_event_matches(&stored[..cut.max(1)], &Filter::prefixes(["x"]));
        }

    }

    #[test]
    fn garbage_is_a_storage_error_not_a_panic() {
        assert!(matches!(
            decode_event(&[0xff, 0xff, 0xff]),
            Err(Error::Storage(_))
        ));
        // A size prefix claiming 4 GiB is refused before anything is allocated.
        let mut bomb = vec![FRAMED_LZ4, 0];
        bomb.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_event(&bomb), Err(Error::Storage(_))));
    }
}
