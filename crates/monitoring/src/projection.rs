//! The one loop the monitoring projections follow the log with: subscribe after what is
//! applied, apply each event, resubscribe after a break, until shutdown.

use std::sync::Arc;

use futures::StreamExt;
use onecity_eventlog::retry::{self, Backoff};
use onecity_eventlog::{EventLog, Filter, RecordedEvent};
use tokio_util::sync::CancellationToken;

/// What a projection fed by [`follow`] provides.
pub(crate) trait Projection: Send + Sync {
    /// Its name in the log messages.
    const NAME: &'static str;
    /// The event types it reads, by prefix.
    fn prefixes() -> Vec<&'static str>;
    /// The position of the last event applied (0: none).
    fn applied(&self) -> u64;
    /// Applies one event; an event at or below the applied position changes nothing.
    fn apply(&self, event: &RecordedEvent);
}

/// Replays `projection`'s events from after its applied position, then follows them until
/// `shutdown`.
pub(crate) async fn follow<P: Projection>(
    projection: Arc<P>,
    log: Arc<dyn EventLog>,
    shutdown: CancellationToken,
) {
    let mut delays = Backoff::new();
    while !shutdown.is_cancelled() {
        let subscribed = retry::until_ok(
            &shutdown,
            || log.subscribe(projection.applied() + 1, Filter::prefixes(P::prefixes())),
            |e, delay| tracing::warn!(projection = P::NAME, error = %e, ?delay, "projection subscription failed, retrying"),
        )
        .await;
        let Some(mut stream) = subscribed else { return };
        loop {
            let next =
                tokio::select! { n = stream.next() => n, () = shutdown.cancelled() => return };
            match next {
                Some(Ok(event)) => {
                    delays.reset();
                    projection.apply(&event);
                }
                Some(Err(e)) => {
                    tracing::warn!(projection = P::NAME, error = %e, "projection subscription broke, resuming");
                    break;
                }
                None => break,
            }
        }
        if !Backoff::pause(delays.next_delay(), &shutdown).await {
            return;
        }
    }
}
