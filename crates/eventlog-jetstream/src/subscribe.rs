//! Subscriptions: a hand-made ordered consumer over the log stream, and the task that
//! turns its messages into a subscription's events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull::{self, Batch};
use async_nats::jetstream::consumer::Consumer;
use futures::StreamExt;
use onecity_eventlog::{Error, Filter, RecordedEvent, Result};
use tokio::sync::mpsc;

use crate::{
    shut_down, Inner, LogMsg, PULL_BATCH, PULL_EXPIRES, STALL_PULLS, STALL_RECHECK,
    SUBSCRIPTION_PATIENCE,
};

/// Messages of the log stream in sequence order from `next_seq` (live, or up to `end`): a hand-made
/// ordered consumer. It pulls bounded batches only when asked for the next message (so a
/// stalled subscriber holds at most one batch), and recreates its ephemeral consumer at
/// the next sequence whenever the consumer fails, vanishes, skips a sequence or stops
/// making progress. (async-nats' own ordered consumer buffers 500 messages of any size
/// and, if it must recreate before its first message, starts over from the stream's
/// beginning.)
pub(crate) struct Scanner {
    pub(crate) inner: Arc<Inner>,
    /// What the scan is for, in its consumers' description, so a consumer seen on the
    /// server (`/jsz`) can be matched to a process and a reader.
    pub(crate) purpose: String,
    pub(crate) next_seq: u64,
    /// Last sequence wanted, for a bounded read: pulls never ask for more, so the last
    /// one completes as soon as its messages are in.
    pub(crate) end: Option<u64>,
    pub(crate) consumer: Option<Consumer<pull::Config>>,
    pub(crate) batch: Option<Batch>,
    /// Whether the current pull delivered anything.
    pub(crate) delivered: bool,
    /// Empty pulls in a row while the stream leader held the next wanted message.
    pub(crate) stalled: u32,
    pub(crate) failing_since: Option<Instant>,
    pub(crate) failures: u32,
}

impl Scanner {
    pub(crate) fn new(inner: Arc<Inner>, purpose: String, next_seq: u64, end: Option<u64>) -> Self {
        Scanner {
            inner,
            purpose,
            next_seq,
            end,
            consumer: None,
            batch: None,
            delivered: false,
            stalled: 0,
            failing_since: None,
            failures: 0,
        }
    }

    pub(crate) async fn next(&mut self) -> Result<LogMsg> {
        loop {
            if self.batch.is_none() {
                match self.pull().await {
                    Ok(b) => self.batch = Some(b),
                    Err(e) => {
                        self.failed(e).await?;
                        continue;
                    }
                }
            }
            let Some(batch) = self.batch.as_mut() else {
                continue;
            };
            match batch.next().await {
                // The pull expired or delivered its batch: pull again.
                None => {
                    self.batch = None;
                    // An empty pull is normal on an idle log, but it is also all a
                    // vanished consumer gives (after a server restart, or when the
                    // server dropped it: pulls for an unknown consumer are dropped
                    // silently), and all a consumer gives that sits on a replica which
                    // stopped applying the stream. So ask whether it still exists and
                    // whether the stream has more than it delivered.
                    if !std::mem::take(&mut self.delivered) {
                        if let Err(e) = self.check_progress().await {
                            self.failed(e).await?;
                        }
                    }
                }
                Some(Ok(m)) => {
                    let seq = match m.info() {
                        Ok(info) => info.stream_sequence,
                        Err(e) => {
                            self.failed(Error::Unavailable(format!("bad delivery: {e}")))
                                .await?;
                            continue;
                        }
                    };
                    if seq < self.next_seq {
                        continue;
                    }
                    if seq > self.next_seq {
                        // Should not happen without deletes; start again where we are.
                        tracing::debug!(
                            seq,
                            expected = self.next_seq,
                            "consumer skipped, recreating"
                        );
                        self.reset();
                        continue;
                    }
                    self.failing_since = None;
                    self.failures = 0;
                    self.stalled = 0;
                    self.delivered = true;
                    self.next_seq += 1;
                    let m = m.message;
                    return LogMsg::new(seq, m.headers.as_ref(), m.payload);
                }
                Some(Err(e)) => {
                    self.failed(Error::Unavailable(format!("pull from the log: {e}")))
                        .await?
                }
            }
        }
    }

    /// After an empty pull: an error if the consumer is gone; the consumer recreated if
    /// the stream leader has held the next wanted message for [`STALL_PULLS`] empty pulls
    /// in a row (a healthy consumer delivers what the leader holds at once, so the
    /// consumer exists but does not progress: it was placed on a replica that lags or
    /// stopped, or lost messages in flight to an idle tail).
    pub(crate) async fn check_progress(&mut self) -> Result<()> {
        let Some(consumer) = self.consumer.as_ref() else {
            return Ok(());
        };
        let info = consumer
            .get_info()
            .await
            .map_err(|e| Error::Unavailable(format!("consumer on the log is gone: {e}")))?;
        // Stream info is answered by the stream leader, never by the consumer's replica.
        let stream = self
            .inner
            .log
            .get_info()
            .await
            .map_err(|e| Error::Unavailable(format!("stream info of the log: {e}")))?;
        // Both answered: the server is working, whatever this check finds.
        self.failing_since = None;
        self.failures = 0;
        let last_seq = stream.state.last_sequence;
        let wanted = self.end.map_or(last_seq, |end| end.min(last_seq));
        if wanted < self.next_seq {
            self.stalled = 0;
            return Ok(());
        }
        self.stalled += 1;
        if self.stalled < STALL_PULLS {
            return Ok(());
        }
        tracing::warn!(
            stream = %stream.config.name,
            consumer = %info.name,
            purpose = %self.purpose,
            next_seq = self.next_seq,
            stream_last_seq = last_seq,
            consumer_delivered_seq = info.delivered.stream_sequence,
            consumer_pending = info.num_pending,
            consumer_host = info.cluster.and_then(|c| c.leader).unwrap_or_default(),
            "consumer delivers nothing while the stream has more, recreating"
        );
        self.stalled = 0;
        self.reset();
        Ok(())
    }

    pub(crate) async fn pull(&mut self) -> Result<Batch> {
        if self.consumer.is_none() {
            self.consumer = Some(
                self.inner
                    .scan_consumer(self.next_seq, &self.purpose)
                    .await?,
            );
        }
        let Some(consumer) = self.consumer.as_ref() else {
            return Err(Error::Unavailable("no consumer".into()));
        };
        let wanted = match self.end {
            Some(end) => (end + 1).saturating_sub(self.next_seq).clamp(1, PULL_BATCH),
            None => PULL_BATCH,
        };
        consumer
            .batch()
            .max_messages(wanted as usize)
            // At least one whole message must fit, or the server would never send it.
            .max_bytes(self.inner.max_payload.saturating_mul(2))
            // Once a pull came back empty although the leader had more, the next one
            // confirms it sooner: a healthy consumer would deliver at once.
            .expires(if self.stalled > 0 {
                STALL_RECHECK
            } else {
                PULL_EXPIRES
            })
            .messages()
            .await
            .map_err(|e| Error::Unavailable(format!("pull from the log: {e}")))
    }

    /// Drops the consumer and waits a little before the next try; gives up when the
    /// server has been failing for too long.
    pub(crate) async fn failed(&mut self, e: Error) -> Result<()> {
        self.reset();
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() > SUBSCRIPTION_PATIENCE {
            return Err(e);
        }
        self.failures += 1;
        tracing::debug!(error = %e, failures = self.failures, "subscription retrying");
        let backoff = Duration::from_millis(20u64 << self.failures.min(6));
        tokio::select! {
            () = tokio::time::sleep(backoff) => Ok(()),
            () = self.inner.closed.cancelled() => Err(shut_down()),
        }
    }

    pub(crate) fn reset(&mut self) {
        self.batch = None;
        if let Some(c) = self.consumer.take() {
            let stream = self.inner.log.clone();
            let name = c.cached_info().name.clone();
            // Best effort: the server drops it after its inactivity threshold anyway.
            tokio::spawn(async move {
                let _ = stream.delete_consumer(&name).await;
            });
        }
    }

    pub(crate) fn close(mut self) {
        self.reset();
    }
}

pub(crate) struct Subscription {
    pub(crate) scanner: Option<Scanner>,
    pub(crate) next_position: u64,
    pub(crate) filter: Filter,
    pub(crate) tx: mpsc::Sender<Result<RecordedEvent>>,
}

impl Subscription {
    /// Catch-up and live are one loop: the consumer starts at the message holding the
    /// first wanted position and follows the stream from there, so there is no switch
    /// at which to lose or repeat an event. Events before `from_position` are skipped
    /// (in the first message, or in every message while `from_position` is past the
    /// log's head); once the subscription reached `from_position`, every message must
    /// start exactly where the previous one ended: one that overlaps is a numbering
    /// fault and ends the subscription with an error, as `read_all` reports it, instead
    /// of silently hiding events from every subscriber.
    pub(crate) async fn run(&mut self, inner: &Arc<Inner>) -> Result<()> {
        let from = self.next_position;
        let tail = inner.fetch_tail().await?;
        let start = if self.next_position > tail.last_position {
            tail.seq + 1
        } else {
            inner.seek(self.next_position, tail).await?
        };
        let purpose = subscription_purpose(from, &self.filter);
        let scanner = self
            .scanner
            .insert(Scanner::new(Arc::clone(inner), purpose, start, None));
        loop {
            let m = tokio::select! {
                m = scanner.next() => m?,
                () = inner.closed.cancelled() => return Ok(()),
                () = self.tx.closed() => return Ok(()),
            };
            if m.meta.first_position > self.next_position {
                return Err(Error::Storage(format!(
                    "message {} starts at position {}, expected {}: the log has a gap",
                    m.seq, m.meta.first_position, self.next_position
                )));
            }
            if m.meta.first_position < self.next_position && self.next_position > from {
                return Err(Error::Storage(format!(
                    "message {} starts at position {}, expected {}: the log's numbering overlaps",
                    m.seq, m.meta.first_position, self.next_position
                )));
            }
            for e in m.events()? {
                if e.position < self.next_position {
                    continue;
                }
                self.next_position = e.position + 1;
                if !self.filter.matches(&e) {
                    continue;
                }
                tokio::select! {
                    r = self.tx.send(Ok(e)) => if r.is_err() { return Ok(()) },
                    () = inner.closed.cancelled() => return Ok(()),
                }
            }
        }
    }
}

/// The purpose of a subscription's consumers: its start and filter (the reader's
/// checkpoint name is not known at this layer).
fn subscription_purpose(from: u64, filter: &Filter) -> String {
    const MAX_TYPES: usize = 4;
    let types = &filter.event_type_prefixes;
    let mut s = format!("onecity subscription from position {from}");
    if !types.is_empty() {
        s.push_str(" for ");
        s.push_str(&types[..types.len().min(MAX_TYPES)].join(","));
        if types.len() > MAX_TYPES {
            s.push_str(&format!(" and {} more types", types.len() - MAX_TYPES));
        }
    }
    s
}
