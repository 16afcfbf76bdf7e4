//! The append path: this process's single writer, commit records and their resolution.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::HeaderMap;
use bytes::Bytes;
use onecity_eventlog::chain::{self, Hash};
use onecity_eventlog::codec::now_micros;
use onecity_eventlog::{Appended, Error, Expected, NewEvent, Result};
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::wire::{self, CommitBody, CommitMeta};

use crate::read::Get;
use crate::{
    publish_failed, CaseHead, Inner, LogMsg, Tail, MAX_CACHED_CASES, MAX_ROUNDS, MAX_UNKNOWN,
};

pub(crate) struct AppendOp {
    pub(crate) case_id: Uuid,
    pub(crate) expected: Expected,
    pub(crate) events: Vec<NewEvent>,
    /// Each event's payload digest (`chain::payload_digest`), computed by the caller.
    pub(crate) digests: Vec<Hash>,
    pub(crate) appended_by: String,
    pub(crate) commit_id: Uuid,
    pub(crate) reply: oneshot::Sender<Result<Appended>>,
}

/// What the commit records say about a commit, as of a tail.
pub(crate) enum Resolution {
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
pub(crate) struct Writer {
    pub(crate) inner: Arc<Inner>,
    pub(crate) tail: Option<Tail>,
    /// Heads of cases as of `tail`.
    pub(crate) cases: HashMap<Uuid, CaseHead>,
}

impl Writer {
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<AppendOp>) {
        while let Some(op) = rx.recv().await {
            let AppendOp {
                case_id,
                expected,
                events,
                digests,
                appended_by,
                commit_id,
                reply,
            } = op;
            let body = CommitBody::new(case_id, commit_id, &appended_by, events);
            let result = self
                .append(case_id, expected, body, &digests, commit_id)
                .await;
            let _ = reply.send(result);
        }
    }

    pub(crate) fn forget(&mut self) {
        self.tail = None;
        self.cases.clear();
    }

    pub(crate) async fn tail(&mut self) -> Result<Tail> {
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
    pub(crate) async fn case_head(
        &mut self,
        case_id: Uuid,
        tail: Tail,
    ) -> Result<Option<CaseHead>> {
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

    pub(crate) async fn append(
        &mut self,
        case_id: Uuid,
        expected: Expected,
        mut body: CommitBody,
        digests: &[Hash],
        commit_id: Uuid,
    ) -> Result<Appended> {
        let inner = Arc::clone(&self.inner);
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
        for round in 0..MAX_ROUNDS {
            let tail = self.tail().await?;
            // A commit that expects no stream (a new case, a person's first claim) is
            // published at once, expecting no message on the case's subject, which the
            // server checks: the look-up would cost a round trip while every other append
            // of this process waits. If the case does exist, the publish is refused and
            // the next round looks.
            let new_stream = round == 0
                && matches!(expected, Expected::NoStream | Expected::Exact(0))
                && !self.cases.contains_key(&case_id);
            let head = if new_stream {
                CaseHead { seq: 0, version: 0 }
            } else {
                let Some(head) = self.case_head(case_id, tail).await? else {
                    self.forget();
                    continue;
                };
                head
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
            let hash = body.seal(&tail.chain, digests).map_err(Error::Storage)?;
            let attempt = Uuid::now_v7().to_string();
            let mut headers = HeaderMap::new();
            meta.write_headers(&mut headers);
            headers.insert(wire::H_CHAIN, chain::hex(&hash));
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
                        chain: hash,
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
    pub(crate) async fn create_record(
        &self,
        subject: &str,
        seq: u64,
        case_id: Uuid,
    ) -> Result<bool> {
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
    pub(crate) async fn put_record(&self, subject: &str, seq: u64, case_id: Uuid) -> Result<()> {
        let value = wire::encode_record(seq, case_id);
        self.inner
            .publish(subject.to_owned(), HeaderMap::new(), value.into())
            .await
            .map_err(|e| publish_failed("record commit", &e))?;
        Ok(())
    }

    /// Reads every recorded attempt of the commit and looks at the sequence each one
    /// expected to take.
    pub(crate) async fn resolve(
        &self,
        subject: &str,
        commit_id: Uuid,
        tail: Tail,
    ) -> Result<Resolution> {
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
    pub(crate) async fn void(&mut self, commit_id: Uuid, tail: Tail) -> Result<()> {
        let meta = CommitMeta::void(commit_id, tail.last_position + 1);
        let mut h = HeaderMap::new();
        meta.write_headers(&mut h);
        // A void takes no position but may become the tail: it carries the chain on.
        h.insert(wire::H_CHAIN, chain::hex(&tail.chain));
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
                    chain: tail.chain,
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

pub(crate) fn dedup_result(m: &LogMsg, deduplicated: bool) -> Result<Appended> {
    m.meta
        .appended(deduplicated)
        .ok_or_else(|| Error::Storage(format!("message {} is not a commit", m.seq)))
}
