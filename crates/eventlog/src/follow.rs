//! Following one case: the shared half of every backend's
//! [`subscribe_case`](crate::EventLog::subscribe_case).
//!
//! A case subscription is a loop of "read the case's stream from the next version, then wait
//! for a sign that the case may have grown". Reading only the case's own stream is the point:
//! a `WatchCase` held open for a day must not read every later event of the city's log. The
//! backends differ only in the sign: the sled writer's live broadcast, the memory log's head,
//! a NATS subject. A sign may be spurious (a read that finds nothing costs one lookup) but
//! must not be missed, so each backend arms its sign *before* the read it follows; where a
//! sign can be lost (a NATS reconnect) the backend also asks for a periodic re-read.

use std::future::Future;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

use crate::{Error, EventStream, RecordedEvent, Result, MAX_READ_LIMIT};

/// Buffer between the follow task and the subscriber: a slow subscriber holds the task, not
/// the log.
const BUFFER: usize = 64;

/// How a backend follows a case: `read(from_version)` reads the case's stream (a case with
/// no events yet may be [`Error::NotFound`] or empty), `wake` yields whenever the case may
/// have grown and ends when the log shuts down, and `repoll` re-reads after that long
/// without a sign (for signs that can be lost).
pub fn case<R, F, W>(
    case_id: Uuid,
    from_version: u64,
    mut read: R,
    wake: W,
    repoll: Option<Duration>,
) -> EventStream
where
    R: FnMut(u64) -> F + Send + 'static,
    F: Future<Output = Result<Vec<RecordedEvent>>> + Send,
    W: Stream<Item = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(async move {
        let mut wake = Box::pin(wake);
        let mut next = from_version.max(1);
        loop {
            // Read until caught up; a full page means more may be stored already.
            loop {
                let page = match read(next).await {
                    Ok(page) => page,
                    Err(Error::NotFound(id)) if id == case_id => Vec::new(),
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                let full = page.len() >= MAX_READ_LIMIT;
                for event in page {
                    // A read races appends, so skip what was already sent.
                    if event.version < next {
                        continue;
                    }
                    next = event.version + 1;
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                if !full {
                    break;
                }
            }
            let woken = async {
                match repoll {
                    Some(every) => tokio::time::timeout(every, wake.next())
                        .await
                        .unwrap_or(Some(())),
                    None => wake.next().await,
                }
            };
            tokio::select! {
                w = woken => if w.is_none() { return },
                () = tx.closed() => return,
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}
