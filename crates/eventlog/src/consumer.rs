//! Checkpointed consumers: the loop every worker role runs over the log.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
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
    /// the checkpoint moves past the chunk. The same chunk may be handed again after a
    /// crash or an error, so handling must be idempotent.
    async fn handle(&self, events: &[RecordedEvent]) -> Result<(), Self::Error>;
}

/// Follows `log` from the checkpoint of `name` with `filter` until `shutdown`, handing
/// every ready chunk (up to [`MAX_CHUNK`] events) to `handler` and saving the checkpoint
/// after it: one checkpoint write per chunk rather than per event, at the price of a
/// slightly longer replay after a crash. Errors, the log's or the handler's, are logged
/// and the consumer resumes from its checkpoint after a backoff (100 ms doubling to 5 s).
pub async fn run<H: ChunkHandler>(
    log: Arc<dyn EventLog>,
    name: &str,
    filter: Filter,
    shutdown: CancellationToken,
    handler: &H,
) {
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        match follow(log.as_ref(), name, filter.clone(), &shutdown, handler).await {
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
    log: &dyn EventLog,
    name: &str,
    filter: Filter,
    shutdown: &CancellationToken,
    handler: &H,
) -> Result<(), H::Error> {
    let from = log.load_checkpoint(name).await? + 1;
    let mut chunks = log.subscribe(from, filter).await?.ready_chunks(MAX_CHUNK);
    loop {
        let chunk = tokio::select! {
            c = chunks.next() => c,
            () = shutdown.cancelled() => return Ok(()),
        };
        let Some(chunk) = chunk else { return Ok(()) };
        let events = chunk.into_iter().collect::<Result<Vec<_>, _>>()?;
        handler.handle(&events).await?;
        if let Some(last) = events.last() {
            log.save_checkpoint(name, last.position).await?;
        }
    }
}
