//! Subscriptions: a hand-made ordered consumer over the log stream, and the task that
//! turns its messages into a subscription's events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull::{self, Batch};
use async_nats::jetstream::consumer::Consumer;
use futures::StreamExt;
use onecity_eventlog::{Error, Filter, RecordedEvent, Result};
use tokio::sync::mpsc;

use crate::{shut_down, Inner, LogMsg, PULL_BATCH, PULL_EXPIRES, SUBSCRIPTION_PATIENCE};

/// Messages of the log stream in sequence order from `next_seq` (live, or up to `end`): a hand-made
/// ordered consumer. It pulls bounded batches only when asked for the next message (so a
/// stalled subscriber holds at most one batch), and recreates its ephemeral consumer at
/// the next sequence whenever the consumer fails, vanishes or skips a sequence.
/// (async-nats' own ordered consumer buffers 500 messages of any size and, if it must
/// recreate before its first message, starts over from the stream's beginning.)
pub(crate) struct Scanner {
    pub(crate) inner: Arc<Inner>,
    pub(crate) next_seq: u64,
    /// Last sequence wanted, for a bounded read: pulls never ask for more, so the last
    /// one completes as soon as its messages are in.
    pub(crate) end: Option<u64>,
    pub(crate) consumer: Option<Consumer<pull::Config>>,
    pub(crate) batch: Option<Batch>,
    /// Whether the current pull delivered anything.
    pub(crate) delivered: bool,
    pub(crate) failing_since: Option<Instant>,
    pub(crate) failures: u32,
}

impl Scanner {
    pub(crate) fn new(inner: Arc<Inner>, next_seq: u64, end: Option<u64>) -> Self {
        Scanner {
            inner,
            next_seq,
            end,
            consumer: None,
            batch: None,
            delivered: false,
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
                    // server dropped it): pulls for an unknown consumer are dropped
                    // silently. So ask whether it still exists.
                    if !std::mem::take(&mut self.delivered) {
                        if let Err(e) = self.check_consumer().await {
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

    pub(crate) async fn check_consumer(&self) -> Result<()> {
        let Some(consumer) = self.consumer.as_ref() else {
            return Ok(());
        };
        consumer
            .get_info()
            .await
            .map(drop)
            .map_err(|e| Error::Unavailable(format!("consumer on the log is gone: {e}")))
    }

    pub(crate) async fn pull(&mut self) -> Result<Batch> {
        if self.consumer.is_none() {
            self.consumer = Some(self.inner.scan_consumer(self.next_seq).await?);
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
            .expires(PULL_EXPIRES)
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
    /// at which to lose or repeat an event. Events before `from_position` in the first
    /// message are skipped; every later message must start exactly where the previous
    /// one ended.
    pub(crate) async fn run(&mut self, inner: &Arc<Inner>) -> Result<()> {
        let tail = inner.fetch_tail().await?;
        let start = if self.next_position > tail.last_position {
            tail.seq + 1
        } else {
            inner.seek(self.next_position, tail).await?
        };
        let scanner = self
            .scanner
            .insert(Scanner::new(Arc::clone(inner), start, None));
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
