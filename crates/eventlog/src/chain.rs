//! The hash chain: tamper evidence for the log.
//!
//! Every commit carries a SHA-256 hash of its own events and of the hash of the commit
//! before it in global order ([`Link`]), so changing, removing or reordering any stored
//! commit changes every hash after it. [`Verifier`] recomputes the chain from position 1
//! and names the first commit that does not match. Every backend computes the link on its
//! single write path (the place that knows the previous commit), the same way, with
//! [`commit_hash`].
//!
//! # Canonical encoding (version 1)
//!
//! The hash of a commit is SHA-256 over, in order (integers big-endian, `str` = u32
//! byte length then UTF-8 bytes, uuid = its 16 bytes, hash = its 32 bytes):
//!
//! 1. the 16 bytes `onecity-chain-v1`;
//! 2. the previous commit's hash ([`GENESIS`], 32 zero bytes, for the first chained commit);
//! 3. the number of events, u32;
//! 4. for each event in position order: position u64, case uuid, version u64, event uuid,
//!    commit uuid, `recorded_at` as microseconds since the Unix epoch u64, event type str,
//!    actor str, causation id str, `appended_by` str, payload length u64, SHA-256 of the
//!    payload (hash).
//!
//! The payload enters through its own digest so that the append path can hash large
//! payloads before it reaches the single writer (as it compresses them), and so the
//! encoding has fixed-size parts only after the strings.
//!
//! Commits written before the chain existed carry no link. The chain starts at the first
//! chained commit (its `prev` is [`GENESIS`]); an unchained commit after that is a break.

use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::RecordedEvent;

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The `prev` of the first chained commit.
pub const GENESIS: Hash = [0; 32];

const DOMAIN: &[u8; 16] = b"onecity-chain-v1";

/// Where a commit sits in the chain; every event of the commit carries the same link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Hash of the previous commit in global order ([`GENESIS`] for the first).
    pub prev: Hash,
    /// Hash of this commit (see the module docs for what it covers).
    pub hash: Hash,
}

/// SHA-256 of a payload, as the canonical encoding uses it.
pub fn payload_digest(payload: &[u8]) -> Hash {
    Sha256::digest(payload).into()
}

/// The hash of the commit made of `events` (in position order), chained to `prev`. The
/// events' own `chain` field is ignored.
pub fn commit_hash(prev: &Hash, events: &[RecordedEvent]) -> Hash {
    let digests: Vec<Hash> = events.iter().map(|e| payload_digest(&e.payload)).collect();
    commit_hash_with(prev, events, &digests)
}

/// [`commit_hash`] with each event's [`payload_digest`] already computed (`digests[i]`
/// belongs to `events[i]`).
pub fn commit_hash_with(prev: &Hash, events: &[RecordedEvent], digests: &[Hash]) -> Hash {
    debug_assert_eq!(events.len(), digests.len());
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(prev);
    h.update(
        u32::try_from(events.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    for (e, digest) in events.iter().zip(digests) {
        h.update(e.position.to_be_bytes());
        h.update(e.case_id.as_bytes());
        h.update(e.version.to_be_bytes());
        h.update(e.event_id.as_bytes());
        h.update(e.commit_id.as_bytes());
        let micros = e
            .recorded_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        h.update(micros.to_be_bytes());
        for s in [&e.event_type, &e.actor, &e.causation_id, &e.appended_by] {
            h.update(u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
            h.update(s.as_bytes());
        }
        h.update((e.payload.len() as u64).to_be_bytes());
        h.update(digest);
    }
    h.finalize().into()
}

/// Sets the link of a freshly numbered commit: hashes it onto `prev` and stamps every
/// event. Returns the commit's hash (the next commit's `prev`).
pub fn seal(prev: &Hash, events: &mut [RecordedEvent], digests: &[Hash]) -> Hash {
    let hash = commit_hash_with(prev, events, digests);
    let link = Link { prev: *prev, hash };
    for e in events {
        e.chain = Some(link);
    }
    hash
}

/// Lowercase hex of a hash, for reports and headers.
pub fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses [`hex`] output back.
pub fn parse_hex(s: &str) -> Option<Hash> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The first place the chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("chain broken at position {position} (case {case_id}, commit {commit_id}): {what}")]
pub struct Break {
    /// Position of the first event of the offending commit (or of the offending event).
    pub position: u64,
    /// Its case.
    pub case_id: Uuid,
    /// Its commit.
    pub commit_id: Uuid,
    /// What differs.
    pub what: String,
}

/// What an intact log looks like to [`Verifier::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intact {
    /// Position of the last event checked (0 for an empty log).
    pub head: u64,
    /// Position where the chain starts; `None` when no commit is chained.
    pub chained_from: Option<u64>,
    /// Hash of the last chained commit ([`GENESIS`] when none): the value to anchor
    /// outside the log.
    pub head_hash: Hash,
}

/// Recomputes the chain over events fed in position order, from position 1.
#[derive(Debug)]
pub struct Verifier {
    /// Hash of the last chained commit checked.
    prev: Hash,
    chained_from: Option<u64>,
    /// Events of the commit being collected.
    commit: Vec<RecordedEvent>,
    /// Position the next event must have.
    next: u64,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            prev: GENESIS,
            chained_from: None,
            commit: Vec::new(),
            next: 1,
        }
    }
}

impl Verifier {
    /// A verifier expecting position 1 next.
    pub fn new() -> Self {
        Verifier::default()
    }

    /// Feeds the next event. `Err` at the first broken link; feed nothing after it.
    pub fn push(&mut self, e: RecordedEvent) -> Result<(), Break> {
        if e.position != self.next {
            return Err(Break {
                position: self.next,
                case_id: e.case_id,
                commit_id: e.commit_id,
                what: format!("expected position {}, read {}", self.next, e.position),
            });
        }
        self.next += 1;
        if self
            .commit
            .first()
            .is_some_and(|first| first.commit_id != e.commit_id)
        {
            self.check_commit()?;
        }
        self.commit.push(e);
        Ok(())
    }

    /// Checks the last commit; the summary when every link held.
    pub fn finish(mut self) -> Result<Intact, Break> {
        self.check_commit()?;
        Ok(Intact {
            head: self.next - 1,
            chained_from: self.chained_from,
            head_hash: self.prev,
        })
    }

    fn check_commit(&mut self) -> Result<(), Break> {
        let events = std::mem::take(&mut self.commit);
        let Some(first) = events.first() else {
            return Ok(());
        };
        let broken = |what: String| Break {
            position: first.position,
            case_id: first.case_id,
            commit_id: first.commit_id,
            what,
        };
        if let Some(e) = events.iter().find(|e| e.chain != first.chain) {
            return Err(broken(format!(
                "the events of the commit carry different links (position {})",
                e.position
            )));
        }
        let Some(link) = first.chain else {
            return match self.chained_from {
                None => Ok(()),
                Some(from) => Err(broken(format!(
                    "the commit carries no hash, but the chain started at position {from}"
                ))),
            };
        };
        if link.prev != self.prev {
            return Err(broken(format!(
                "prev_hash is {}, the previous commit's hash is {}",
                hex(&link.prev),
                hex(&self.prev)
            )));
        }
        let recomputed = commit_hash(&self.prev, &events);
        if recomputed != link.hash {
            return Err(broken(format!(
                "the stored commit does not match its hash: stored {}, recomputed {}",
                hex(&link.hash),
                hex(&recomputed)
            )));
        }
        self.chained_from.get_or_insert(first.position);
        self.prev = link.hash;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn commit(first_position: u64, n: usize, prev: &Hash) -> (Vec<RecordedEvent>, Hash) {
        let case_id = Uuid::now_v7();
        let commit_id = Uuid::now_v7();
        let mut events: Vec<RecordedEvent> = (0..n)
            .map(|i| RecordedEvent {
                event_id: Uuid::now_v7(),
                case_id,
                version: 1 + i as u64,
                position: first_position + i as u64,
                recorded_at: SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_001),
                event_type: "onecity.test.T".into(),
                actor: "a".into(),
                causation_id: String::new(),
                payload: vec![i as u8; 40],
                commit_id,
                appended_by: "service:test".into(),
                chain: None,
                metadata: Default::default(),
            })
            .collect();
        let digests: Vec<Hash> = events.iter().map(|e| payload_digest(&e.payload)).collect();
        let hash = seal(prev, &mut events, &digests);
        (events, hash)
    }

    #[test]
    fn metadata_is_outside_the_chain() {
        let (mut events, hash) = commit(1, 2, &GENESIS);
        events[0]
            .metadata
            .insert("traceparent".into(), "00-ab-cd-01".into());
        let digests: Vec<Hash> = events.iter().map(|e| payload_digest(&e.payload)).collect();
        assert_eq!(commit_hash_with(&GENESIS, &events, &digests), hash);
    }

    fn log(commits: usize) -> Vec<RecordedEvent> {
        let mut prev = GENESIS;
        let mut out = Vec::new();
        for _ in 0..commits {
            let (events, hash) = commit(out.len() as u64 + 1, 2, &prev);
            prev = hash;
            out.extend(events);
        }
        out
    }

    fn verify(events: Vec<RecordedEvent>) -> Result<Intact, Break> {
        let mut v = Verifier::new();
        for e in events {
            v.push(e)?;
        }
        v.finish()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let events = log(4);
        let last = events.last().unwrap().chain.unwrap().hash;
        let intact = verify(events).unwrap();
        assert_eq!(intact.head, 8);
        assert_eq!(intact.chained_from, Some(1));
        assert_eq!(intact.head_hash, last);
        assert_eq!(verify(Vec::new()).unwrap().head, 0);
    }

    #[test]
    fn every_covered_field_is_detected() {
        type Edit = fn(&mut RecordedEvent);
        let edits: [(&str, Edit); 9] = [
            ("payload", |e| e.payload[3] ^= 1),
            ("actor", |e| e.actor.push('x')),
            ("appended_by", |e| e.appended_by = "service:other".into()),
            ("event_type", |e| e.event_type.push('x')),
            ("causation", |e| e.causation_id.push('x')),
            ("version", |e| e.version += 1),
            ("recorded_at", |e| e.recorded_at += Duration::from_micros(1)),
            ("event_id", |e| e.event_id = Uuid::now_v7()),
            ("case_id", |e| e.case_id = Uuid::now_v7()),
        ];
        for (what, edit) in edits {
            let mut events = log(4);
            edit(&mut events[5]);
            let b = verify(events).unwrap_err();
            assert_eq!(b.position, 5, "{what}: {b}");
            assert!(b.what.contains("does not match its hash"), "{what}: {b}");
        }
    }

    #[test]
    fn relinking_and_gaps_and_stripped_links_are_breaks() {
        // A commit removed from the middle: positions no longer follow.
        let mut events = log(3);
        events.drain(2..4);
        assert_eq!(verify(events).unwrap_err().position, 3);
        // A commit whose prev does not name its predecessor.
        let mut events = log(3);
        for e in &mut events[4..6] {
            e.chain.as_mut().unwrap().prev[0] ^= 1;
        }
        let b = verify(events).unwrap_err();
        assert_eq!(b.position, 5);
        assert!(b.what.contains("prev_hash"), "{b}");
        // Links stripped after the chain started.
        let mut events = log(3);
        for e in &mut events[2..4] {
            e.chain = None;
        }
        let b = verify(events).unwrap_err();
        assert_eq!(b.position, 3);
        assert!(b.what.contains("no hash"), "{b}");
    }

    #[test]
    fn unchained_commits_before_the_chain_are_allowed() {
        let mut events = log(1);
        for e in &mut events {
            e.chain = None;
        }
        let (tail, _) = commit(3, 1, &GENESIS);
        events.extend(tail);
        let intact = verify(events).unwrap();
        assert_eq!((intact.head, intact.chained_from), (3, Some(3)));
    }

    #[test]
    fn hex_roundtrips() {
        let h = commit(1, 1, &GENESIS).1;
        assert_eq!(parse_hex(&hex(&h)), Some(h));
        assert_eq!(parse_hex("zz"), None);
    }
}
