//! Checkpointed consumers: the loop every worker role runs over the log.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{Error, EventLog, Filter, RecordedEvent};

/// Most events handed to a [`ChunkHandler`] at once.
pub const MAX_CHUNK: usize = 64;

/// What a consumer does with the events it reads.
#[async_trait::async_trait]
pub trait ChunkHandler: Send + Sync {
    /// The handler's error.
    type Error: fmt::Display + From<Error> + Send;

    /// Handles a chunk of events (in position order). `Ok` means every effect is durable:
    /// the checkpoint may move past the chunk (it is written shortly after, in the
    /// background). The same chunk may be handed again after a crash or an error, so
    /// handling must be idempotent.
    async fn handle(&self, events: &[RecordedEvent]) -> Result<(), Self::Error>;
}

/// Shortest time between the starts of two checkpoint writes of one consumer. Under load
/// a consumer handles a chunk every few milliseconds; writing its checkpoint that often
/// would put a durable write per chunk on the log's write path for no benefit, since a
/// checkpoint only bounds the replay after a crash (at most this much work, plus one
/// write in flight).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// Follows `log` from the checkpoint of `name` with `filter` until `shutdown`, handing
/// every ready chunk (up to [`MAX_CHUNK`] events) to `handler`.
///
/// The checkpoint is written off the critical path: the next chunk is handed over without
/// waiting for it. At most one checkpoint write is in flight and at most one starts per
/// [`CHECKPOINT_INTERVAL`]; each saves the last position of a chunk the handler has
/// finished with `Ok`, so the checkpoint never passes a chunk that was not fully handled.
/// It may lag behind: a crash then replays a little more, which idempotent handlers turn
/// into no-ops. When the consumer stops (shutdown, the end of the log, or an error) it
/// waits for the write in flight and saves the last handled position, so a clean restart
/// replays nothing. Errors, the log's or the handler's, are logged and the consumer
/// resumes from its checkpoint after a backoff (100 ms doubling to 5 s).
pub async fn run<H: ChunkHandler>(
    log: Arc<dyn EventLog>,
    name: &str,
    filter: Filter,
    shutdown: CancellationToken,
    handler: &H,
) {
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        match follow(&log, name, filter.clone(), &shutdown, handler).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(consumer = name, error = %e, ?backoff, "consumer restarting");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn follow<H: ChunkHandler>(
    log: &Arc<dyn EventLog>,
    name: &str,
    filter: Filter,
    shutdown: &CancellationToken,
    handler: &H,
) -> Result<(), H::Error> {
    let from = log.load_checkpoint(name).await? + 1;
    let mut chunks = log.subscribe(from, filter).await?.ready_chunks(MAX_CHUNK);
    let mut checkpoint = Checkpointer::new(Arc::clone(log), name);
    let outcome: Result<(), H::Error> = loop {
        let chunk = tokio::select! {
            c = chunks.next() => c,
            r = checkpoint.tick() => match r {
                Ok(()) => continue,
                Err(e) => break Err(e.into()),
            },
            () = shutdown.cancelled() => break Ok(()),
        };
        let Some(chunk) = chunk else { break Ok(()) };
        let events = match chunk.into_iter().collect::<Result<Vec<_>, _>>() {
            Ok(events) => events,
            Err(e) => break Err(e.into()),
        };
        if let Err(e) = handler.handle(&events).await {
            break Err(e);
        }
        if let Some(last) = events.last() {
            checkpoint.handled(last.position);
        }
    };
    // Everything recorded as handled was handled with `Ok`, even when a later chunk
    // failed, so it is saved on every way out.
    let saved = checkpoint.finish().await;
    outcome?;
    saved.map_err(Into::into)
}

/// Writes a consumer's checkpoint in the background: one write in flight at most, at
/// most one started per [`CHECKPOINT_INTERVAL`], always the newest handled position.
struct Checkpointer {
    log: Arc<dyn EventLog>,
    name: String,
    /// Handled but not yet being written.
    pending: Option<u64>,
    in_flight: Option<JoinHandle<Result<(), Error>>>,
    next_start: Instant,
}

impl Checkpointer {
    fn new(log: Arc<dyn EventLog>, name: &str) -> Self {
        Checkpointer {
            log,
            name: name.to_owned(),
            pending: None,
            in_flight: None,
            next_start: Instant::now(),
        }
    }

    /// Records that everything up to `position` is handled; starts a write if none is in
    /// flight and the interval has passed.
    fn handled(&mut self, position: u64) {
        self.pending = Some(position);
        if self.in_flight.is_none() && Instant::now() >= self.next_start {
            self.start();
        }
    }

    fn start(&mut self) {
        let Some(position) = self.pending.take() else {
            return;
        };
        let log = Arc::clone(&self.log);
        let name = self.name.clone();
        self.in_flight = Some(tokio::spawn(async move {
            log.save_checkpoint(&name, position).await
        }));
        self.next_start = Instant::now() + CHECKPOINT_INTERVAL;
    }

    /// Waits for the next thing to do (a write finishing, or the interval passing with a
    /// position pending) and does it. Never finishes while there is nothing to do.
    /// Cancel-safe: dropped at any await, it leaves the state as it was.
    async fn tick(&mut self) -> Result<(), Error> {
        if let Some(write) = &mut self.in_flight {
            let done = write.await;
            self.in_flight = None;
            return joined(done);
        }
        if self.pending.is_none() {
            return std::future::pending().await;
        }
        tokio::time::sleep_until(self.next_start).await;
        self.start();
        Ok(())
    }

    /// Waits for the write in flight, then saves what is still pending.
    async fn finish(mut self) -> Result<(), Error> {
        let mut result = Ok(());
        if let Some(write) = self.in_flight.take() {
            result = joined(write.await);
        }
        if let Some(position) = self.pending.take() {
            let last = self.log.save_checkpoint(&self.name, position).await;
            result = result.and(last);
        }
        result
    }
}

fn joined(done: Result<Result<(), Error>, tokio::task::JoinError>) -> Result<(), Error> {
    done.unwrap_or_else(|e| {
        Err(Error::Unavailable(format!(
            "checkpoint write did not finish: {e}"
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Expected, NewEvent, SledConfig, SledLog};
    use tokio::sync::mpsc;
    use uuid::Uuid;

    /// Reports each chunk's last position; refuses the event at `fail_at` every time.
    struct Probe {
        seen: mpsc::UnboundedSender<u64>,
        fail_at: Option<u64>,
    }

    #[async_trait::async_trait]
    impl ChunkHandler for Probe {
        type Error = Error;

        async fn handle(&self, events: &[RecordedEvent]) -> Result<(), Error> {
            let last = events.last().map_or(0, |e| e.position);
            let failed = events.iter().any(|e| Some(e.position) == self.fail_at);
            let _ = self.seen.send(last);
            if failed {
                return Err(Error::Unavailable("refused by the test".into()));
            }
            Ok(())
        }
    }

    async fn append_one(log: &SledLog) -> u64 {
        let event = NewEvent::new("test.Event", "test", vec![1]);
        log.append(Uuid::now_v7(), Expected::Any, vec![event], Uuid::now_v7())
            .await
            .unwrap()
            .last_position
    }

    fn start(
        log: &Arc<SledLog>,
        fail_at: Option<u64>,
    ) -> (
        mpsc::UnboundedReceiver<u64>,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let (seen, rx) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let log: Arc<dyn EventLog> = Arc::clone(log) as _;
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            run(log, "probe", Filter::all(), stop, &Probe { seen, fail_at }).await;
        });
        (rx, shutdown, task)
    }

    /// A handled chunk whose checkpoint write was deferred (the interval had not passed)
    /// is still saved when the consumer shuts down, so a clean restart replays nothing.
    #[tokio::test]
    async fn shutdown_saves_the_last_handled_position() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(SledLog::open(dir.path(), SledConfig::default()).unwrap());
        let (mut seen, shutdown, task) = start(&log, None);
        let first = append_one(&log).await;
        assert_eq!(seen.recv().await, Some(first));
        let second = append_one(&log).await;
        assert_eq!(seen.recv().await, Some(second));
        shutdown.cancel();
        task.await.unwrap();
        assert_eq!(log.load_checkpoint("probe").await.unwrap(), second);
    }

    /// The checkpoint never passes a chunk that failed, while everything handled before
    /// it is saved.
    #[tokio::test]
    async fn checkpoint_stops_before_a_failed_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(SledLog::open(dir.path(), SledConfig::default()).unwrap());
        let first = append_one(&log).await;
        let (mut seen, shutdown, task) = start(&log, Some(first + 1));
        assert_eq!(seen.recv().await, Some(first));
        let second = append_one(&log).await;
        assert_eq!(seen.recv().await, Some(second));
        // Failed once; the consumer restarts after its backoff and fails again.
        assert_eq!(seen.recv().await, Some(second));
        shutdown.cancel();
        task.await.unwrap();
        assert_eq!(log.load_checkpoint("probe").await.unwrap(), first);
    }
}
