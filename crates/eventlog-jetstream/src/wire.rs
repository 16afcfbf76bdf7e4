//! What the JetStream backend puts on the server: stream and subject names, the headers
//! that number a commit message, its protobuf body, and the commit records. Kept apart
//! from the network code so the encoding can be tested without a server.

use std::time::SystemTime;

use async_nats::HeaderMap;
use onecity_proto::v1 as pb;
use prost::Message as _;
use uuid::Uuid;

use onecity_eventlog::chain::{self, Hash};
use onecity_eventlog::codec::timestamp;
use onecity_eventlog::{Appended, Error, NewEvent, RecordedEvent, Result};

/// Commit id of a commit message (also its `Nats-Msg-Id`); on a void message, the commit
/// whose unresolved attempt the void closed.
pub(crate) const H_COMMIT: &str = "Onecity-Commit";
/// Case of a commit message; absent on a void message.
pub(crate) const H_CASE: &str = "Onecity-Case";
/// Global position of the message's first event (on a void: the next position).
pub(crate) const H_POSITION: &str = "Onecity-Position";
/// Case version of the message's first event (0 on a void).
pub(crate) const H_VERSION: &str = "Onecity-Version";
/// Number of events in the message (0 on a void).
pub(crate) const H_COUNT: &str = "Onecity-Count";
/// Random id of one publish attempt, so a writer recognises its own message after a lost ack.
pub(crate) const H_ATTEMPT: &str = "Onecity-Attempt";
/// Hex of the chain head as of the message: a commit's own hash, or on a void the hash
/// of the commit before it, so a writer learns the next `prev` from the tail message's
/// headers alone. Absent on messages from before the chain (the chain starts after them).
pub(crate) const H_CHAIN: &str = "Onecity-Chain";

pub(crate) const NATS_MSG_ID: &str = "Nats-Msg-Id";
pub(crate) const NATS_EXPECTED_LAST_SEQ: &str = "Nats-Expected-Last-Sequence";
pub(crate) const NATS_EXPECTED_LAST_SUBJECT_SEQ: &str = "Nats-Expected-Last-Subject-Sequence";

/// Room left for headers when checking a commit against the server's `max_payload`
/// (NATS counts headers and body together).
pub(crate) const HEADER_ROOM: usize = 1024;

/// Oldest server the backend accepts: 2.9 brought `next_by_subj` message gets and the
/// `Nats-Expected-Last-Subject-Sequence: 0` check at apply time that the records rely on.
pub(crate) const MIN_SERVER: (u64, u64) = (2, 9);

/// The names of everything one log owns on the server, derived from its prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Names {
    pub prefix: String,
}

impl Names {
    /// The prefix becomes a subject token, a stream name and part of two KV bucket
    /// names, so only characters valid in all of them are allowed.
    pub fn new(prefix: &str) -> Result<Self> {
        let ok = !prefix.is_empty()
            && prefix.len() <= 64
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(Error::invalid(
                "prefix",
                "must be 1 to 64 ascii letters, digits, '_' or '-'",
            ));
        }
        Ok(Names {
            prefix: prefix.to_owned(),
        })
    }

    /// The stream holding the commits.
    pub fn log_stream(&self) -> String {
        format!("{}-log", self.prefix)
    }

    pub fn case_subject(&self, case_id: Uuid) -> String {
        format!("{}.case.{}", self.prefix, case_id)
    }

    pub fn case_wildcard(&self) -> String {
        format!("{}.case.*", self.prefix)
    }

    /// Where void messages go: off the case subjects, so case reads never see them.
    pub fn void_subject(&self) -> String {
        format!("{}.void", self.prefix)
    }

    pub fn commits_bucket(&self) -> String {
        format!("{}-commits", self.prefix)
    }

    pub fn checkpoints_bucket(&self) -> String {
        format!("{}-checkpoints", self.prefix)
    }

    pub fn commit_subject(&self, commit_id: Uuid) -> String {
        format!("$KV.{}.{}", self.commits_bucket(), commit_id)
    }

    /// Consumer names are free text; hex keeps any of them a valid KV key.
    pub fn checkpoint_subject(&self, consumer: &str) -> String {
        format!("$KV.{}.{}", self.checkpoints_bucket(), hex(consumer))
    }

    pub fn leases_bucket(&self) -> String {
        format!("{}-leases", self.prefix)
    }

    /// Every lease of one group (a worker role).
    pub fn lease_group_filter(&self, group: &str) -> String {
        format!("$KV.{}.{}.*", self.leases_bucket(), hex(group))
    }

    /// Group and name are free text, hex-encoded as two key tokens so a group can be
    /// listed with a wildcard.
    pub fn lease_subject(&self, group: &str, name: &str) -> String {
        format!("$KV.{}.{}.{}", self.leases_bucket(), hex(group), hex(name))
    }
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The name of a lease from its subject (the inverse of [`Names::lease_subject`]).
pub(crate) fn lease_name(subject: &str) -> Option<String> {
    let token = subject.rsplit('.').next()?;
    if token.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// The stream name of a KV bucket, as the NATS KV convention has it.
pub(crate) fn kv_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// Refuses servers older than [`MIN_SERVER`].
pub(crate) fn check_server_version(version: &str) -> Result<()> {
    let mut parts = version.trim().trim_start_matches('v').split(['.', '-']);
    let mut number = || parts.next().and_then(|p| p.parse::<u64>().ok());
    match (number(), number()) {
        (Some(major), Some(minor)) if (major, minor) >= MIN_SERVER => Ok(()),
        (Some(_), Some(_)) => Err(Error::Unavailable(format!(
            "nats-server {version} is too old: the jetstream event log needs {}.{} or newer",
            MIN_SERVER.0, MIN_SERVER.1
        ))),
        _ => Err(Error::Unavailable(format!(
            "cannot parse the nats-server version {version:?}: the jetstream event log needs {}.{} or newer",
            MIN_SERVER.0, MIN_SERVER.1
        ))),
    }
}

/// How a message of the log stream is numbered: the headers every reader trusts, so a
/// reader can place a message without decoding its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CommitMeta {
    pub commit_id: Uuid,
    /// `None` for a void message.
    pub case_id: Option<Uuid>,
    pub first_position: u64,
    pub first_version: u64,
    pub count: u64,
}

impl CommitMeta {
    /// A void message: holds no event and takes no position, only a stream sequence.
    pub fn void(commit_id: Uuid, next_position: u64) -> Self {
        CommitMeta {
            commit_id,
            case_id: None,
            first_position: next_position,
            first_version: 0,
            count: 0,
        }
    }

    pub fn is_void(&self) -> bool {
        self.case_id.is_none()
    }

    /// Position of the last event; for a void, the position before it.
    pub fn last_position(&self) -> u64 {
        (self.first_position + self.count).saturating_sub(1)
    }

    pub fn last_version(&self) -> u64 {
        (self.first_version + self.count).saturating_sub(1)
    }

    /// The `Appended` of this commit; `None` for a void.
    pub fn appended(&self, deduplicated: bool) -> Option<Appended> {
        Some(Appended {
            case_id: self.case_id?,
            first_version: self.first_version,
            last_version: self.last_version(),
            first_position: self.first_position,
            last_position: self.last_position(),
            deduplicated,
        })
    }

    pub fn write_headers(&self, h: &mut HeaderMap) {
        h.insert(H_COMMIT, self.commit_id.to_string());
        if let Some(case) = self.case_id {
            h.insert(H_CASE, case.to_string());
        }
        h.insert(H_POSITION, self.first_position.to_string());
        h.insert(H_VERSION, self.first_version.to_string());
        h.insert(H_COUNT, self.count.to_string());
    }

    /// Reads the numbering back; `Err` names what is wrong (the caller adds where).
    pub fn from_headers(h: Option<&HeaderMap>) -> std::result::Result<Self, String> {
        let h = h.ok_or("no headers")?;
        let text = |name: &str| {
            h.get(name)
                .map(|v| v.as_str().to_owned())
                .ok_or(format!("no {name} header"))
        };
        let number = |name: &str| {
            text(name)?
                .parse::<u64>()
                .map_err(|e| format!("bad {name} header: {e}"))
        };
        let uuid = |name: &str| {
            Uuid::parse_str(&text(name)?).map_err(|e| format!("bad {name} header: {e}"))
        };
        let meta = CommitMeta {
            commit_id: uuid(H_COMMIT)?,
            case_id: match h.get(H_CASE) {
                Some(_) => Some(uuid(H_CASE)?),
                None => None,
            },
            first_position: number(H_POSITION)?,
            first_version: number(H_VERSION)?,
            count: number(H_COUNT)?,
        };
        // A commit holds 1..N events from version and position 1 on; a void holds none.
        let sane = match meta.case_id {
            Some(_) => meta.count > 0 && meta.first_position > 0 && meta.first_version > 0,
            None => meta.count == 0 && meta.first_position > 0,
        };
        if !sane {
            return Err(format!("inconsistent numbering {meta:?}"));
        }
        Ok(meta)
    }
}

/// The chain head a message's headers name ([`H_CHAIN`]); [`chain::GENESIS`] for a
/// message from before the chain.
pub(crate) fn chain_head(h: Option<&HeaderMap>) -> std::result::Result<Hash, String> {
    match h.and_then(|h| h.get(H_CHAIN)) {
        None => Ok(chain::GENESIS),
        Some(v) => chain::parse_hex(v.as_str()).ok_or(format!("bad {H_CHAIN} header")),
    }
}

/// The body of a commit message: every event as the log's protobuf `RecordedEvent`,
/// numbered, so the body alone is readable by any protobuf tool (wire-compatible with
/// `onecity.v1.ReadCaseResponse`).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct CommitBody {
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<pb::RecordedEvent>,
}

impl CommitBody {
    /// The body of a commit, not yet numbered.
    pub fn new(case_id: Uuid, commit_id: Uuid, appended_by: &str, events: Vec<NewEvent>) -> Self {
        let (case, commit) = (case_id.to_string(), commit_id.to_string());
        CommitBody {
            events: events
                .into_iter()
                .map(|e| pb::RecordedEvent {
                    event_id: e.event_id.to_string(),
                    case_id: case.clone(),
                    version: 0,
                    position: 0,
                    recorded_at: None,
                    event_type: e.event_type,
                    actor: e.actor,
                    causation_id: e.causation_id,
                    payload: e.payload,
                    commit_id: commit.clone(),
                    appended_by: appended_by.to_owned(),
                    prev_hash: Vec::new(),
                    commit_hash: Vec::new(),
                    metadata: e.metadata.into_iter().collect(),
                })
                .collect(),
        }
    }

    /// An upper bound of the encoded size whatever numbers the commit gets.
    pub fn max_encoded_len(&mut self) -> usize {
        self.number(u64::MAX / 2, u64::MAX / 2, SystemTime::now());
        for e in &mut self.events {
            e.prev_hash = chain::GENESIS.to_vec();
            e.commit_hash = chain::GENESIS.to_vec();
        }
        self.encoded_len()
    }

    /// Links the numbered commit onto `prev` (see [`chain`]) and returns its hash.
    /// `digests[i]` is the payload digest of event `i`.
    pub fn seal(&mut self, prev: &Hash, digests: &[Hash]) -> std::result::Result<Hash, String> {
        let events = self
            .events
            .iter()
            .map(|p| RecordedEvent::try_from(p.clone()).map_err(|e| e.to_string()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let hash = chain::commit_hash_with(prev, &events, digests);
        for e in &mut self.events {
            e.prev_hash = prev.to_vec();
            e.commit_hash = hash.to_vec();
        }
        Ok(hash)
    }

    /// Gives the events their versions, positions and time.
    pub fn number(&mut self, first_position: u64, first_version: u64, recorded_at: SystemTime) {
        let ts = timestamp(recorded_at);
        for (i, e) in self.events.iter_mut().enumerate() {
            e.position = first_position + i as u64;
            e.version = first_version + i as u64;
            e.recorded_at = Some(ts);
        }
    }
}

/// Decodes a message body into its events and checks them against the headers: a
/// message whose body disagrees with its numbering is corrupt, never served.
pub(crate) fn decode_events(
    meta: &CommitMeta,
    body: &[u8],
) -> std::result::Result<Vec<RecordedEvent>, String> {
    if meta.is_void() {
        return Ok(Vec::new());
    }
    let body = CommitBody::decode(body).map_err(|e| format!("undecodable body: {e}"))?;
    if body.events.len() as u64 != meta.count {
        return Err(format!(
            "body holds {} events, headers say {}",
            body.events.len(),
            meta.count
        ));
    }
    body.events
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let e = RecordedEvent::try_from(p).map_err(|e| e.to_string())?;
            let i = i as u64;
            if e.position != meta.first_position + i
                || e.version != meta.first_version + i
                || Some(e.case_id) != meta.case_id
                || e.commit_id != meta.commit_id
            {
                return Err(format!("event {i} disagrees with the headers"));
            }
            Ok(e)
        })
        .collect()
}

/// A commit record in the `commits` bucket: one publish attempt of a commit, at the
/// stream sequence it expects to take. Text, so `nats kv get` shows it plainly.
pub(crate) fn encode_record(seq: u64, case_id: Uuid) -> String {
    format!("{seq} {case_id}")
}

pub(crate) fn decode_record(value: &[u8]) -> std::result::Result<u64, String> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .ok_or_else(|| format!("bad commit record {:?}", String::from_utf8_lossy(value)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn meta(count: u64) -> CommitMeta {
        CommitMeta {
            commit_id: Uuid::now_v7(),
            case_id: Some(Uuid::now_v7()),
            first_position: 41,
            first_version: 7,
            count,
        }
    }

    #[test]
    fn headers_roundtrip() {
        for m in [meta(1), meta(1000), CommitMeta::void(Uuid::now_v7(), 12)] {
            let mut h = HeaderMap::new();
            m.write_headers(&mut h);
            assert_eq!(CommitMeta::from_headers(Some(&h)).unwrap(), m);
        }
    }

    #[test]
    fn numbering_spans_the_commit() {
        let m = meta(3);
        assert_eq!((m.first_position, m.last_position()), (41, 43));
        assert_eq!((m.first_version, m.last_version()), (7, 9));
        let a = m.appended(true).unwrap();
        assert_eq!(
            (
                a.case_id,
                a.first_position,
                a.last_position,
                a.last_version,
                a.deduplicated
            ),
            (m.case_id.unwrap(), 41, 43, 9, true)
        );
        // A void takes no position: the log's head stays where it was.
        let v = CommitMeta::void(Uuid::now_v7(), 44);
        assert_eq!(v.last_position(), 43);
        assert!(v.appended(false).is_none());
    }

    #[test]
    fn bad_headers_are_refused() {
        assert!(CommitMeta::from_headers(None).is_err());
        let mut h = HeaderMap::new();
        meta(2).write_headers(&mut h);
        h.insert(H_POSITION, "x");
        assert!(CommitMeta::from_headers(Some(&h))
            .unwrap_err()
            .contains(H_POSITION));
        let mut h = HeaderMap::new();
        meta(2).write_headers(&mut h);
        h.insert(H_COUNT, "0");
        assert!(CommitMeta::from_headers(Some(&h)).is_err(), "empty commit");
        let mut h = HeaderMap::new();
        CommitMeta::void(Uuid::now_v7(), 3).write_headers(&mut h);
        h.insert(H_COUNT, "1");
        assert!(
            CommitMeta::from_headers(Some(&h)).is_err(),
            "void with events"
        );
    }

    #[test]
    fn body_positions_are_first_plus_index() {
        let case = Uuid::now_v7();
        let commit = Uuid::now_v7();
        let events: Vec<NewEvent> = (0..3)
            .map(|i| NewEvent::new("onecity.test.T", "a", vec![i]).caused_by("c"))
            .collect();
        let mut body = CommitBody::new(case, commit, "service:test", events.clone());
        let bound = body.max_encoded_len();
        let at = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        body.number(41, 7, at);
        let bytes = body.encode_to_vec();
        assert!(bytes.len() <= bound);
        let m = CommitMeta {
            commit_id: commit,
            case_id: Some(case),
            first_position: 41,
            first_version: 7,
            count: 3,
        };
        let read = decode_events(&m, &bytes).unwrap();
        for (i, (r, s)) in read.iter().zip(&events).enumerate() {
            assert_eq!(r.position, 41 + i as u64);
            assert_eq!(r.version, 7 + i as u64);
            assert_eq!(
                (r.event_id, r.case_id, r.commit_id),
                (s.event_id, case, commit)
            );
            assert_eq!((&r.payload, &r.causation_id), (&s.payload, &s.causation_id));
            assert_eq!(r.recorded_at, at);
        }
        // Headers that disagree with the body make the message corrupt.
        let shifted = CommitMeta {
            first_position: 42,
            ..m
        };
        assert!(decode_events(&shifted, &bytes).is_err());
        let fewer = CommitMeta { count: 2, ..m };
        assert!(decode_events(&fewer, &bytes).is_err());
        assert!(decode_events(&m, b"\xff\xff").is_err());
    }

    #[test]
    fn records_roundtrip() {
        let case = Uuid::now_v7();
        assert_eq!(decode_record(encode_record(17, case).as_bytes()), Ok(17));
        assert!(decode_record(b"").is_err());
        assert!(decode_record(b"0 x").is_err());
    }

    #[test]
    fn server_versions() {
        for ok in [
            "2.9.0",
            "2.9.10",
            "v2.9.10",
            "2.10.1",
            "2.12.0-beta.1",
            "3.0.0",
        ] {
            assert!(check_server_version(ok).is_ok(), "{ok}");
        }
        for old in ["2.8.4", "2.2.0", "1.4.1"] {
            let e = check_server_version(old).unwrap_err().to_string();
            assert!(e.contains("too old") && e.contains("2.9 or newer"), "{e}");
        }
        assert!(check_server_version("garbage").is_err());
    }

    #[test]
    fn lease_subjects_roundtrip() {
        let n = Names::new("onecity").unwrap();
        let subject = n.lease_subject("assessment", "assessment-1of2");
        assert!(subject.starts_with("$KV.onecity-leases."), "{subject}");
        assert_eq!(lease_name(&subject).as_deref(), Some("assessment-1of2"));
        assert_eq!(
            n.lease_group_filter("assessment"),
            format!("$KV.onecity-leases.{}.*", hex("assessment"))
        );
        assert_eq!(lease_name("$KV.b.zz"), None);
    }

    #[test]
    fn names_are_checked_and_derived() {
        let n = Names::new("onecity").unwrap();
        assert_eq!(n.log_stream(), "onecity-log");
        let case = Uuid::nil();
        assert_eq!(
            n.case_subject(case),
            "onecity.case.00000000-0000-0000-0000-000000000000"
        );
        assert_eq!(kv_stream(&n.commits_bucket()), "KV_onecity-commits");
        assert_eq!(
            n.checkpoint_subject("a b"),
            "$KV.onecity-checkpoints.612062"
        );
        for bad in ["", "a.b", "a b", "a*", "a>"] {
            assert!(Names::new(bad).is_err(), "{bad:?}");
        }
    }
}
