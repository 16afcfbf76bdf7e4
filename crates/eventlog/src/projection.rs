//! Projections: in-memory views of the log (the department inbox, the person index, the
//! active cases, monitoring's warnings and statistics), rebuilt from the log on start and
//! then kept current. One subscription feeds every projection of a process ([`follow`]).
//!
//! Why one: a replay reads the whole log whatever its filter (a filter saves decoding an
//! event, not reading it), so five projections each replaying on its own read the log five
//! times at start, and a cold start over a million cases took four times as long as one
//! pass does.

use std::sync::Arc;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::retry::{self, Backoff};
use crate::{EventLog, Filter, RecordedEvent};

/// Events applied at once (one lock and one progress update per projection and chunk).
const CHUNK: usize = 1024;

/// A view the log feeds.
pub trait Projection: Send + Sync {
    /// Its name in log messages.
    fn name(&self) -> &'static str;
    /// The event types it reads, by prefix.
    fn prefixes(&self) -> Vec<&'static str>;
    /// Position of the last event applied (0: none).
    fn applied(&self) -> u64;
    /// Applies `events`, in position order and all after [`Projection::applied`]. They may
    /// include types it does not read (other projections read them): it skips those, but
    /// may count them as applied.
    fn apply(&self, events: &[RecordedEvent]);
}

/// Replays the log into `projections` from the earliest position any of them lacks, then
/// follows it until `shutdown`, each projection given only what comes after its own
/// applied position. A broken subscription is resumed with backoff.
pub async fn follow(
    log: Arc<dyn EventLog>,
    projections: Vec<Arc<dyn Projection>>,
    shutdown: CancellationToken,
) {
    if projections.is_empty() {
        return;
    }
    let names: Vec<&str> = projections.iter().map(|p| p.name()).collect();
    let mut prefixes: Vec<&'static str> = projections.iter().flat_map(|p| p.prefixes()).collect();
    prefixes.sort_unstable();
    prefixes.dedup();
    let mut delays = Backoff::new();
    while !shutdown.is_cancelled() {
        let from = projections.iter().map(|p| p.applied()).min().unwrap_or(0) + 1;
        let subscribed = retry::until_ok(
            &shutdown,
            || log.subscribe(from, Filter::prefixes(prefixes.iter().copied())),
            |e, delay| tracing::warn!(projections = ?names, error = %e, ?delay, "projection subscription failed, retrying"),
        )
        .await;
        let Some(stream) = subscribed else { return };
        let mut chunks = stream.ready_chunks(CHUNK);
        loop {
            let next =
                tokio::select! { n = chunks.next() => n, () = shutdown.cancelled() => return };
            let Some(chunk) = next else { break };
            let mut events = Vec::with_capacity(chunk.len());
            let mut broke = None;
            for item in chunk {
                match item {
                    Ok(e) => events.push(e),
                    Err(e) => {
                        broke = Some(e);
                        break;
                    }
                }
            }
            if !events.is_empty() {
                delays.reset();
                for p in &projections {
                    let applied = p.applied();
                    let start = events.partition_point(|e| e.position <= applied);
                    if start < events.len() {
                        p.apply(&events[start..]);
                    }
                }
            }
            if let Some(e) = broke {
                tracing::warn!(projections = ?names, error = %e, "projection subscription broke, resuming");
                break;
            }
        }
        if !Backoff::pause(delays.next_delay(), &shutdown).await {
            return;
        }
    }
}

/// Starts `projection` on its own subscription (for a process, or a test, that runs only
/// it), and returns it.
pub fn start<P: Projection + 'static>(
    projection: Arc<P>,
    log: Arc<dyn EventLog>,
    shutdown: CancellationToken,
) -> Arc<P> {
    let fed: Arc<dyn Projection> = projection.clone();
    tokio::spawn(follow(log, vec![fed], shutdown));
    projection
}

/// Position of the last event after `floor` and at or before `position` whose type starts
/// with one of `prefixes`, or `None` when there is none. Reads the log backwards from
/// `position`, `page` events at a time, down to `floor` (what the caller already knows):
/// usually one page, since a projection's last event is a few behind the head.
///
/// Why: a projection is told only of the events it reads, so one waiting to have applied
/// everything up to a durable position (say the head) must wait for this position instead.
pub async fn last_read_at_or_before(
    log: &dyn EventLog,
    prefixes: &[&str],
    floor: u64,
    position: u64,
    page: u64,
) -> crate::Result<Option<u64>> {
    let page = page.max(1);
    let mut hi = position;
    while hi > floor {
        let lo = hi.saturating_sub(page - 1).max(floor + 1);
        let events = log.read_all(lo, (hi - lo + 1) as usize).await?;
        let found = events
            .iter()
            .rev()
            .find(|e| e.position <= hi && prefixes.iter().any(|p| e.event_type.starts_with(p)));
        if let Some(e) = found {
            return Ok(Some(e.position));
        }
        hi = lo - 1;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::{Expected, MemoryLog, NewEvent};
    use uuid::Uuid;

    /// Records the types it was given, applying only `prefix`.
    struct Seen {
        prefix: &'static str,
        applied: Mutex<u64>,
        types: Mutex<Vec<String>>,
    }

    impl Projection for Seen {
        fn name(&self) -> &'static str {
            "seen"
        }
        fn prefixes(&self) -> Vec<&'static str> {
            vec![self.prefix]
        }
        fn applied(&self) -> u64 {
            *self.applied.lock().unwrap()
        }
        fn apply(&self, events: &[RecordedEvent]) {
            let mut applied = self.applied.lock().unwrap();
            for e in events {
                assert!(e.position > *applied, "given an event it had applied");
                *applied = e.position;
                if e.event_type.starts_with(self.prefix) {
                    self.types.lock().unwrap().push(e.event_type.clone());
                }
            }
        }
    }

    /// A log of one event of each of `types`, in that order (positions 1, 2, …).
    async fn log_of(types: &[&str]) -> MemoryLog {
        let log = MemoryLog::new();
        for t in types {
            log.append(
                Uuid::now_v7(),
                Expected::NoStream,
                vec![NewEvent::new(*t, "test", Vec::new())],
                Uuid::now_v7(),
            )
            .await
            .unwrap();
        }
        log
    }

    fn seen(prefix: &'static str, applied: u64) -> Arc<Seen> {
        Arc::new(Seen {
            prefix,
            applied: Mutex::new(applied),
            types: Mutex::default(),
        })
    }

    #[tokio::test]
    async fn one_subscription_feeds_each_projection_its_types_after_its_own_position() {
        let log = Arc::new(log_of(&["a.One", "b.Two", "c.Three", "a.Four"]).await);
        // `b` has applied the first three positions already (a snapshot, a restart).
        let (a, b) = (seen("a.", 0), seen("b.", 3));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(follow(
            log.clone(),
            vec![a.clone(), b.clone()],
            shutdown.clone(),
        ));
        let mut waited = 0;
        while a.applied() < 4 {
            // The memory log delivers at once; this bounds a hang, it does not synchronise.
            tokio::task::yield_now().await;
            waited += 1;
            assert!(waited < 100_000, "the projection never caught up");
        }
        shutdown.cancel();
        task.await.unwrap();
        assert_eq!(*a.types.lock().unwrap(), ["a.One", "a.Four"]);
        assert!(b.types.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_last_event_read_is_found_looking_back_across_pages_down_to_the_floor() {
        // Positions 1..=7.
        let log = log_of(&["a.X", "b.X", "a.Y", "b.Y", "b.Z", "b.W", "b.V"]).await;
        let last = |prefix: &'static str, floor, position, page| {
            let log = &log;
            async move {
                last_read_at_or_before(log, &[prefix], floor, position, page)
                    .await
                    .unwrap()
            }
        };
        // Four `b.` events after position 3: two pages of two back from the head.
        assert_eq!(last("a.", 0, 7, 2).await, Some(3));
        assert_eq!(last("a.", 0, 7, 100).await, Some(3));
        assert_eq!(last("a.", 0, 2, 1).await, Some(1));
        assert_eq!(last("b.", 0, 7, 2).await, Some(7));
        assert_eq!(last("b.", 0, 3, 2).await, Some(2));
        // Nothing after the floor: the caller already has it.
        assert_eq!(last("a.", 3, 7, 2).await, None);
        assert_eq!(last("c.", 0, 7, 3).await, None);
        assert_eq!(last("a.", 7, 7, 2).await, None);
        // A page of 0 is read as 1, not a hang.
        assert_eq!(last("a.", 0, 7, 0).await, Some(3));
    }
}
