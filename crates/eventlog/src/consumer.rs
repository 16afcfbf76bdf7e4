//! Checkpointed consumers: the loop every worker role runs over the log.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesOrdered;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::retry::Backoff;
use crate::{Error, EventLog, Filter, RecordedEvent};

/// Most events handed to a [`ChunkHandler`] at once.
pub const MAX_CHUNK: usize = 64;

/// Counter: events a worker consumer handled (or quarantined), by `consumer` and
/// `partition`.
pub const EVENTS_HANDLED: &str = "onecity_consumer_events_handled_total";
/// Gauge: how old the last event a consumer handled was when its chunk finished, by
/// `consumer` and `partition`: the routing delay in seconds.
pub const LAG_SECONDS: &str = "onecity_consumer_lag_seconds";
/// Counter: events a consumer quarantined, by `consumer` and `partition`.
pub const QUARANTINED_TOTAL: &str = "onecity_consumer_quarantined_total";

/// How a chunk's span continues the trace of its first event: given the span and that
/// event's metadata. Set once by the process that installs a tracer (this crate knows no
/// tracing backend); without it chunk spans start their own traces.
pub type ChunkParent = fn(&tracing::Span, &crate::Metadata);

static CHUNK_PARENT: std::sync::OnceLock<ChunkParent> = std::sync::OnceLock::new();

/// Installs the [`ChunkParent`] of every consumer of the process (the first call wins).
pub fn set_chunk_parent(parent: ChunkParent) {
    let _ = CHUNK_PARENT.set(parent);
}

/// A consumer name as metric labels: `handoff-2of4` → (`handoff`, `2of4`); a name
/// without a partition suffix is partition `1of1`.
pub fn labels(name: &str) -> [(&'static str, String); 2] {
    let (consumer, partition) = match name.rsplit_once('-') {
        Some((consumer, part))
            if part
                .split_once("of")
                .is_some_and(|(i, n)| i.parse::<u32>().is_ok() && n.parse::<u32>().is_ok()) =>
        {
            (consumer, part)
        }
        _ => (name, "1of1"),
    };
    [
        ("consumer", consumer.to_owned()),
        ("partition", partition.to_owned()),
    ]
}

/// What a consumer does with the events it reads.
#[async_trait::async_trait]
pub trait ChunkHandler: Send + Sync {
    /// The handler's error.
    type Error: fmt::Display + From<Error> + Send;

    /// How many chunks may be in the handler's hands at once. With 1 (the default) a
    /// chunk is handed over only once the one before it is handled. With more, the next
    /// chunk is handed over while earlier ones still wait for their writes, so the
    /// handler's own work overlaps the log's fsync. A handler may declare more only if
    /// two chunks handled at the same time cannot interfere: for instance, each case has
    /// at most one of its events, or its writes are checked against the case's version
    /// and retried. The checkpoint still moves in order (see [`run`]).
    const IN_FLIGHT: usize = 1;

    /// Handles a chunk of events (in position order). `Ok` means every effect is durable:
    /// the checkpoint may move past the chunk (it is written shortly after, in the
    /// background) once every chunk before it is handled too. The same chunk may be
    /// handed again after a crash or an error, so handling must be idempotent.
    async fn handle(&self, events: &[RecordedEvent]) -> Result<(), Self::Error>;

    /// Whether `err` is poison: the event cannot be decoded or applied, so handling it
    /// again can never succeed (as opposed to a transient failure of the log or storage,
    /// which a retry may outlive). The default, `false`, treats every error as transient.
    ///
    /// On a poison error [`run`] hands the chunk's events over again one at a time; each
    /// event that fails with a poison error on its own is recorded as quarantined (see
    /// [`quarantine`](crate::quarantine)) and the checkpoint passes it. So an event that
    /// is poison must be poison on its own: the error must not depend on the rest of the
    /// chunk.
    fn is_poison(err: &Self::Error) -> bool {
        let _ = err;
        false
    }
}

/// Shortest time between the starts of two checkpoint writes of one consumer. Under load
/// a consumer handles a chunk every few milliseconds; writing its checkpoint that often
/// would put a durable write per chunk on the log's write path for no benefit, since a
/// checkpoint only bounds the replay after a crash (at most this much work, plus one
/// write in flight).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// Follows `log` from the checkpoint of `name` with `filter` until `shutdown`, handing
/// every ready chunk (up to [`MAX_CHUNK`] events) to `handler`, with up to
/// [`ChunkHandler::IN_FLIGHT`] chunks in its hands at once. Returns only on `shutdown`.
///
/// The checkpoint is written off the critical path: the next chunk is handed over without
/// waiting for it. At most one checkpoint write is in flight and at most one starts per
/// [`CHECKPOINT_INTERVAL`]; each saves the last position of a chunk the handler has
/// finished with `Ok` after every chunk before it, so the checkpoint never passes a chunk
/// that was not fully handled, even when a later chunk finishes first. It may lag behind:
/// a crash then replays a little more, which idempotent handlers turn into no-ops. When
/// the consumer stops (shutdown, the end of the subscription, or an error) it lets the
/// chunks in the handler's hands finish (after a failed chunk, only those before it
/// count), waits for the write in flight and saves the last handled position, so a clean
/// restart replays nothing.
///
/// A chunk that fails with a poison error (see [`ChunkHandler::is_poison`]) is handled
/// again one event at a time, and each event that is poison on its own is quarantined
/// (see [`quarantine`](crate::quarantine)): one bad event never stalls the consumer.
/// Any other error, the log's or the handler's, is logged and the consumer resumes from
/// its checkpoint after a [`retry::backoff`](crate::retry::backoff) delay. So does a
/// subscription that ends without a shutdown (a remote log restarting): a consumer never
/// stops on its own. The delays grow while attempts fail and start again from the
/// shortest once an attempt has handled something.
pub async fn run<H: ChunkHandler>(
    log: Arc<dyn EventLog>,
    name: &str,
    filter: Filter,
    shutdown: CancellationToken,
    handler: &H,
) {
    let mut delays = Backoff::new();
    while !shutdown.is_cancelled() {
        let mut progressed = false;
        let outcome = follow(
            &log,
            name,
            filter.clone(),
            &shutdown,
            handler,
            &mut progressed,
        )
        .await;
        if shutdown.is_cancelled() {
            return;
        }
        if progressed {
            delays.reset();
        }
        let backoff = delays.next_delay();
        match outcome {
            Ok(()) => tracing::warn!(
                consumer = name,
                ?backoff,
                "subscription ended without a shutdown, resubscribing"
            ),
            Err(e) => tracing::warn!(consumer = name, error = %e, ?backoff, "consumer restarting"),
        }
        if !Backoff::pause(backoff, &shutdown).await {
            return;
        }
    }
}

/// A chunk in the handler's hands, once finished: its last position, or the error with
/// the chunk's events (to hand them over one by one when the error is poison).
type Finished<E> = Result<Option<u64>, (E, Vec<RecordedEvent>)>;

async fn follow<H: ChunkHandler>(
    log: &Arc<dyn EventLog>,
    name: &str,
    filter: Filter,
    shutdown: &CancellationToken,
    handler: &H,
    progressed: &mut bool,
) -> Result<(), H::Error> {
    let from = log.load_checkpoint(name).await? + 1;
    let mut chunks = log.subscribe(from, filter).await?.ready_chunks(MAX_CHUNK);
    let mut checkpoint = Checkpointer::new(Arc::clone(log), name);
    // Yields in hand-over order, whatever order the chunks finish in, so a position is
    // recorded as handled only after every chunk before it.
    let mut in_hand = FuturesOrdered::new();
    let in_flight = H::IN_FLIGHT.max(1);
    // A chunk that failed ends the loop; the chunks handed over after it must not move
    // the checkpoint past it.
    let mut chunk_failed = false;
    let labels = labels(name);
    let handled = metrics::counter!(EVENTS_HANDLED, &labels);
    let lag_seconds = metrics::gauge!(LAG_SECONDS, &labels);
    let mut outcome: Result<(), H::Error> = loop {
        tokio::select! {
            // Finished chunks first: they free a slot and move the checkpoint.
            biased;
            Some(done) = in_hand.next(), if !in_hand.is_empty() => {
                match settle(done, log.as_ref(), name, handler, &mut checkpoint).await {
                    Ok(()) => *progressed = true,
                    Err(e) => {
                        chunk_failed = true;
                        break Err(e);
                    }
                }
            },
            chunk = chunks.next(), if in_hand.len() < in_flight => {
                let Some(chunk) = chunk else { break Ok(()) };
                let events = match chunk.into_iter().collect::<Result<Vec<_>, _>>() {
                    Ok(events) => events,
                    Err(e) => break Err(e.into()),
                };
                let span = chunk_span(name, &events);
                let (handled, lag_seconds) = (handled.clone(), lag_seconds.clone());
                in_hand.push_back(async move {
                    let finished: Finished<H::Error> = match handler.handle(&events).await {
                        Ok(()) => {
                            handled.increment(events.len() as u64);
                            if let Some(last) = events.last() {
                                let age = last.recorded_at.elapsed().unwrap_or_default();
                                lag_seconds.set(age.as_secs_f64());
                            }
                            Ok(events.last().map(|e| e.position))
                        }
                        Err(e) => Err((e, events)),
                    };
                    finished
                }.instrument(span));
            },
            r = checkpoint.tick() => if let Err(e) = r {
                break Err(e.into());
            },
            () = shutdown.cancelled() => break Ok(()),
        }
    };
    // Chunks already handed over finish (their writes may be in the log already), so a
    // clean stop saves exactly what was handled. After a failed chunk the rest are
    // dropped: they come after it, and what they wrote is replayed as a no-op.
    if chunk_failed {
        in_hand.clear();
    }
    while let Some(done) = in_hand.next().await {
        if let Err(e) = settle(done, log.as_ref(), name, handler, &mut checkpoint).await {
            if outcome.is_ok() {
                outcome = Err(e);
            }
            break;
        }
    }
    // Everything recorded as handled was handled with `Ok` or quarantined, even when a
    // later chunk failed, so it is saved on every way out.
    let saved = checkpoint.finish().await;
    outcome?;
    saved.map_err(Into::into)
}

/// The span a chunk is handled in: its positions, and its `case_id` when every event of
/// the chunk is of one case (a busy log's chunks mix cases; their handlers' own events
/// name each case).
fn chunk_span(name: &str, events: &[RecordedEvent]) -> tracing::Span {
    let first = events.first();
    let span = tracing::info_span!(
        "chunk",
        consumer = name,
        first = first.map(|e| e.position),
        last = events.last().map(|e| e.position),
        events = events.len(),
        case_id = tracing::field::Empty,
    );
    if let Some(first) = first {
        if events.iter().all(|e| e.case_id == first.case_id) {
            span.record("case_id", tracing::field::display(first.case_id));
        }
        if let Some(parent) = CHUNK_PARENT.get() {
            parent(&span, &first.metadata);
        }
    }
    span
}

/// Moves the checkpoint past a finished chunk; after a poison error, past each of its
/// events once it is handled on its own or quarantined. `Err`: a transient error, the
/// checkpoint stays before the event that met it.
async fn settle<H: ChunkHandler>(
    done: Finished<H::Error>,
    log: &dyn EventLog,
    name: &str,
    handler: &H,
    checkpoint: &mut Checkpointer,
) -> Result<(), H::Error> {
    let events = match done {
        Ok(Some(last)) => {
            checkpoint.handled(last);
            return Ok(());
        }
        Ok(None) => return Ok(()),
        Err((e, events)) if H::is_poison(&e) => events,
        Err((e, _)) => return Err(e),
    };
    for event in &events {
        match handler.handle(std::slice::from_ref(event)).await {
            Ok(()) => {}
            Err(e) if H::is_poison(&e) => {
                tracing::error!(
                    consumer = name,
                    position = event.position,
                    case_id = %event.case_id,
                    event_type = %event.event_type,
                    error = %e,
                    "event cannot be handled, quarantined"
                );
                crate::quarantine::record(log, name, event, &e.to_string()).await?;
                metrics::counter!(QUARANTINED_TOTAL, &labels(name)).increment(1);
            }
            Err(e) => return Err(e),
        }
        checkpoint.handled(event.position);
    }
    Ok(())
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
    use crate::{Expected, MemoryLog, NewEvent};
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

    async fn append_one(log: &MemoryLog) -> u64 {
        let event = NewEvent::new("test.Event", "test", vec![1]);
        log.append(Uuid::now_v7(), Expected::Any, vec![event], Uuid::now_v7())
            .await
            .unwrap()
            .last_position
    }

    fn start(
        log: &Arc<MemoryLog>,
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
        let log = Arc::new(MemoryLog::new());
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
        let log = Arc::new(MemoryLog::new());
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

    /// A [`MemoryLog`] whose first subscription ends at once without an error, as a remote
    /// log's does when its server shuts down gracefully.
    #[derive(Debug)]
    struct EndsOnce {
        inner: MemoryLog,
        subscriptions: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl EventLog for EndsOnce {
        async fn append_as(
            &self,
            appended_by: &str,
            case_id: Uuid,
            expected: Expected,
            events: Vec<NewEvent>,
            commit_id: Uuid,
        ) -> crate::Result<crate::Appended> {
            self.inner
                .append_as(appended_by, case_id, expected, events, commit_id)
                .await
        }
        async fn read_case(
            &self,
            case_id: Uuid,
            from: u64,
            limit: usize,
        ) -> crate::Result<Vec<RecordedEvent>> {
            self.inner.read_case(case_id, from, limit).await
        }
        async fn read_all(&self, from: u64, limit: usize) -> crate::Result<Vec<RecordedEvent>> {
            self.inner.read_all(from, limit).await
        }
        async fn subscribe(&self, from: u64, filter: Filter) -> crate::Result<crate::EventStream> {
            let n = self
                .subscriptions
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n == 0 {
                return Ok(Box::pin(futures::stream::empty()));
            }
            self.inner.subscribe(from, filter).await
        }
        async fn subscribe_case(
            &self,
            case_id: Uuid,
            from_version: u64,
        ) -> crate::Result<crate::EventStream> {
            self.inner.subscribe_case(case_id, from_version).await
        }

        async fn save_checkpoint(&self, consumer: &str, position: u64) -> crate::Result<()> {
            self.inner.save_checkpoint(consumer, position).await
        }
        async fn load_checkpoint(&self, consumer: &str) -> crate::Result<u64> {
            self.inner.load_checkpoint(consumer).await
        }
        async fn head(&self) -> crate::Result<u64> {
            self.inner.head().await
        }
    }

    /// A subscription that ends cleanly (not on shutdown) is followed again from the
    /// checkpoint: the consumer never stops on its own.
    #[tokio::test]
    async fn a_subscription_that_ends_cleanly_is_resubscribed() {
        let log = Arc::new(EndsOnce {
            inner: MemoryLog::new(),
            subscriptions: Default::default(),
        });
        let first = append_one(&log.inner).await;
        let (seen, mut rx) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let task = {
            let log: Arc<dyn EventLog> = Arc::clone(&log) as _;
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let probe = Probe {
                    seen,
                    fail_at: None,
                };
                run(log, "probe", Filter::all(), stop, &probe).await;
            })
        };
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        assert_eq!(got.expect("resubscribed"), Some(first));
        assert_eq!(
            log.subscriptions.load(std::sync::atomic::Ordering::SeqCst),
            2
        );
        shutdown.cancel();
        task.await.unwrap();
        assert_eq!(log.load_checkpoint("probe").await.unwrap(), first);
    }

    /// Refuses every chunk holding an event whose payload is `[0xff]`, with a poison error.
    struct Picky {
        seen: mpsc::UnboundedSender<Vec<u64>>,
    }

    #[derive(Debug, thiserror::Error)]
    enum PickyError {
        #[error("payload does not decode")]
        Poison,
        #[error(transparent)]
        Log(#[from] Error),
    }

    #[async_trait::async_trait]
    impl ChunkHandler for Picky {
        type Error = PickyError;
        const IN_FLIGHT: usize = 2;

        async fn handle(&self, events: &[RecordedEvent]) -> Result<(), PickyError> {
            if events.iter().any(|e| e.payload == [0xff]) {
                return Err(PickyError::Poison);
            }
            let _ = self.seen.send(events.iter().map(|e| e.position).collect());
            Ok(())
        }

        fn is_poison(err: &PickyError) -> bool {
            matches!(err, PickyError::Poison)
        }
    }

    /// A poison event is quarantined, durably and once, and every event around it is
    /// handled: the checkpoint passes it.
    #[tokio::test]
    async fn a_poison_event_is_quarantined_and_passed() {
        let log = Arc::new(MemoryLog::new());
        let before = append_one(&log).await;
        let poison = log
            .append(
                Uuid::now_v7(),
                Expected::Any,
                vec![NewEvent::new("test.Event", "test", vec![0xff])],
                Uuid::now_v7(),
            )
            .await
            .unwrap()
            .last_position;
        let after = append_one(&log).await;
        let (seen, mut rx) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let task = {
            let log: Arc<dyn EventLog> = Arc::clone(&log) as _;
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let filter = Filter::prefixes(["test."]);
                run(log, "picky", filter, stop, &Picky { seen }).await;
            })
        };
        let mut handled = Vec::new();
        while !handled.contains(&after) {
            let got = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
            handled.extend(got.expect("handled").expect("running"));
        }
        assert!(handled.contains(&before));
        assert!(!handled.contains(&poison));
        shutdown.cancel();
        task.await.unwrap();
        assert_eq!(log.load_checkpoint("picky").await.unwrap(), after);
        let listed = crate::quarantine::list(log.as_ref()).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].position, poison);
        assert_eq!(listed[0].consumer, "picky");
        assert_eq!(listed[0].reason, "payload does not decode");
        // A replay quarantines once.
        let event = &log.read_all(poison, 1).await.unwrap()[0];
        crate::quarantine::record(log.as_ref(), "picky", event, "again")
            .await
            .unwrap();
        assert_eq!(
            log.read_case_all(crate::quarantine::stream())
                .await
                .unwrap()
                .len(),
            1
        );
        // A release takes it off the list.
        crate::quarantine::release(log.as_ref(), "picky", poison)
            .await
            .unwrap();
        assert!(crate::quarantine::list(log.as_ref())
            .await
            .unwrap()
            .is_empty());
    }

    /// Hands each chunk's first and last position to the test and waits for its verdict
    /// (`true`: handled; `false` or no verdict: failed), with up to four chunks at once.
    struct Gate {
        handed: mpsc::UnboundedSender<Handed>,
    }

    #[async_trait::async_trait]
    impl ChunkHandler for Gate {
        type Error = Error;
        const IN_FLIGHT: usize = 4;

        async fn handle(&self, events: &[RecordedEvent]) -> Result<(), Error> {
            let (verdict, wait) = tokio::sync::oneshot::channel();
            let first = events.first().map_or(0, |e| e.position);
            let last = events.last().map_or(0, |e| e.position);
            let _ = self.handed.send((first, last, verdict));
            match wait.await {
                Ok(true) => Ok(()),
                _ => Err(Error::Unavailable("refused by the test".into())),
            }
        }
    }

    type Handed = (u64, u64, tokio::sync::oneshot::Sender<bool>);

    /// The next chunk handed to a [`Gate`]; the timeout only turns a hang into a failure.
    async fn next(rx: &mut mpsc::UnboundedReceiver<Handed>) -> Handed {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a chunk is handed over")
            .expect("the consumer runs")
    }

    /// A later chunk is handed over while an earlier one is still being handled, and
    /// finishing first does not let the checkpoint pass the earlier one: when the earlier
    /// one fails, the restart hands both over again.
    #[tokio::test]
    async fn chunks_overlap_but_the_checkpoint_moves_in_order() {
        let log = Arc::new(MemoryLog::new());
        let (handed, mut rx) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let task = {
            let log: Arc<dyn EventLog> = Arc::clone(&log) as _;
            let stop = shutdown.clone();
            tokio::spawn(
                async move { run(log, "gate", Filter::all(), stop, &Gate { handed }).await },
            )
        };
        let e1 = append_one(&log).await;
        let (first, last, g1) = next(&mut rx).await;
        assert_eq!((first, last), (e1, e1));
        let e2 = append_one(&log).await;
        // Handed over while the first chunk is still in the handler's hands.
        let (first, last, g2) = next(&mut rx).await;
        assert_eq!((first, last), (e2, e2));
        g2.send(true).unwrap();
        g1.send(false).unwrap();
        // The restart resumes before the failed chunk, not after the one that succeeded.
        let (first, mut last, again) = next(&mut rx).await;
        assert_eq!(first, e1);
        again.send(true).unwrap();
        while last < e2 {
            let (_, l, g) = next(&mut rx).await;
            g.send(true).unwrap();
            last = l;
        }
        let e3 = append_one(&log).await;
        let (first, last, g3) = next(&mut rx).await;
        assert_eq!((first, last), (e3, e3));
        // Shutting down lets the chunk in hand finish and saves it.
        shutdown.cancel();
        g3.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(log.load_checkpoint("gate").await.unwrap(), e3);
    }
}
