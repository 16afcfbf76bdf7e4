//! Reads: single messages through the stream leader, the position index, and reads
//! by position and by case.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::{self};
use async_nats::jetstream::consumer::{AckPolicy, Consumer, DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::context::PublishError;
use async_nats::jetstream::message::{PublishMessage, StreamMessage};
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::stream::{self, RawMessageErrorKind};
use async_nats::jetstream::ErrorCode;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use onecity_eventlog::{Error, RecordedEvent, Result};
use uuid::Uuid;

use crate::subscribe::Scanner;
use crate::{Inner, LogMsg, Tail, GET_RANGE, MAX_CACHED_POSITIONS};

pub(crate) enum Get<'a> {
    Seq(u64),
    Last(&'a str),
    /// First message on the subject at or after the sequence.
    Next(&'a str, u64),
}

impl Inner {
    /// One message through the stream leader (`STREAM.MSG.GET`, never a direct get,
    /// which a lagging replica may answer): reads see every acknowledged write.
    pub(crate) async fn get(
        &self,
        stream: &stream::Stream,
        how: Get<'_>,
    ) -> Result<Option<StreamMessage>> {
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

    pub(crate) async fn commit_at(&self, seq: u64) -> Result<LogMsg> {
        let m = self.get(&self.log, Get::Seq(seq)).await?.ok_or_else(|| {
            Error::Storage(format!("the log stream has no message at sequence {seq}"))
        })?;
        let m = LogMsg::from_stream(m)?;
        self.remember(&m);
        Ok(m)
    }

    pub(crate) async fn fetch_tail(&self) -> Result<Tail> {
        // `>` is the whole stream: the server answers with its last message.
        match self.get(&self.log, Get::Last(">")).await? {
            None => Ok(Tail {
                seq: 0,
                last_position: 0,
                chain: onecity_eventlog::chain::GENESIS,
            }),
            Some(m) => {
                let m = LogMsg::from_stream(m)?;
                Ok(Tail {
                    seq: m.seq,
                    last_position: m.meta.last_position(),
                    chain: m.chain,
                })
            }
        }
    }

    pub(crate) async fn publish(
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

    pub(crate) fn remember(&self, m: &LogMsg) {
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
    pub(crate) async fn seek(&self, position: u64, tail: Tail) -> Result<u64> {
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

    pub(crate) async fn read_all(
        self: &Arc<Self>,
        from: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
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
            let purpose = format!("onecity read_all from position {from}");
            let mut scanner = Scanner::new(Arc::clone(self), purpose, start, Some(tail.seq));
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

    pub(crate) async fn read_case(
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
    /// reader tracks sequences itself. Its description names `purpose`, this process
    /// and the start, so a stuck consumer on the server can be traced to its reader.
    pub(crate) async fn scan_consumer(
        &self,
        seq: u64,
        purpose: &str,
    ) -> Result<Consumer<pull::Config>> {
        #[cfg(feature = "testing")]
        let seq = if self.take_stalled_consumer() {
            // Far past the stream's end: the consumer exists and delivers nothing.
            seq + (1 << 40)
        } else {
            seq
        };
        self.log
            .create_consumer(pull::Config {
                description: Some(format!(
                    "{purpose}, pid {}, at sequence {seq}",
                    std::process::id()
                )),
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
pub(crate) fn take_positions(
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
pub(crate) fn take_events(
    m: &LogMsg,
    from: u64,
    limit: usize,
    out: &mut Vec<RecordedEvent>,
) -> Result<()> {
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
pub(crate) fn check_run(
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
