//! Who reads, and the record their read leaves (issue 13: every read of personal data
//! leaves a record). A service's core takes a [`Reader`] on every method that shows
//! residents' data and records the read through its [`Access`] before it answers, so every
//! transport (gRPC today, the browser console later) leaves the same record.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, Weak};

use onecity_domain::Principal;
use onecity_eventlog::access::{self, Subject};
use onecity_eventlog::{EventLog, Expected, NewEvent};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// The caller of a read: who, and why (the optional `onecity-purpose` they stated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reader {
    /// Who reads.
    pub principal: Principal,
    /// Why, as they said; may be empty.
    pub purpose: String,
}

impl From<Principal> for Reader {
    fn from(principal: Principal) -> Self {
        Reader {
            principal,
            purpose: String::new(),
        }
    }
}

/// Records reads in the log (`onecity_eventlog::access`), or nothing when turned off.
///
/// Concurrent reads are committed together: one recorder task takes every record waiting,
/// and appends each reader's records as one commit (they are one stream's events), so a
/// burst of reads costs the log one append per reader, not one per read. Each read still
/// waits until its own record is durable.
#[derive(Debug, Clone)]
pub struct Access {
    log: Arc<dyn EventLog>,
    on: bool,
    queue: Arc<OnceLock<mpsc::Sender<Pending>>>,
}

/// A record waiting for its commit.
struct Pending {
    stream: Uuid,
    event: NewEvent,
    done: oneshot::Sender<onecity_eventlog::Result<()>>,
}

/// Most records waiting at once; a reader beyond it waits for room.
const QUEUE: usize = 4_096;
/// Most records in one commit (the log allows 1,000 events per commit).
const MAX_BATCH: usize = 500;

impl Access {
    /// Records every read in `log`.
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        Access {
            log,
            on: true,
            queue: Arc::default(),
        }
    }

    /// Records nothing: for measuring what recording costs (`record_reads = false`).
    pub fn off(log: Arc<dyn EventLog>) -> Self {
        Access {
            on: false,
            ..Access::new(log)
        }
    }

    /// Whether reads are recorded.
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Records durably that `reader` read the data of `cases` through `method`. `Ok`
    /// means the record is on disk: only then may the read be answered. Nothing is
    /// recorded for a read that showed no case.
    pub async fn record(
        &self,
        reader: &Reader,
        method: &str,
        cases: Vec<Uuid>,
    ) -> onecity_eventlog::Result<()> {
        if !self.on {
            return Ok(());
        }
        let read = access::Read {
            principal: &reader.principal.actor(),
            method,
            subject: Subject::Cases(cases),
            purpose: &reader.purpose,
        };
        let Some((stream, event)) = access::event(read) else {
            return Ok(());
        };
        let (done, finished) = oneshot::channel();
        let pending = Pending {
            stream,
            event,
            done,
        };
        // The task starts with the first read, inside the runtime that serves it.
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(commit_batches(Arc::downgrade(&self.log), rx));
            tx
        });
        let gone = || onecity_eventlog::Error::Unavailable("access recorder stopped".into());
        queue.send(pending).await.map_err(|_| gone())?;
        finished.await.map_err(|_| gone())?
    }
}

/// The recorder task: takes what is waiting, commits each stream's records at once, and
/// answers each read when its commit is durable. Ends when every [`Access`] handle is gone.
/// It holds the log weakly: a server that stops drops its log at once (closing the
/// store), not whenever this task next runs.
async fn commit_batches(log: Weak<dyn EventLog>, mut rx: mpsc::Receiver<Pending>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let Some(log) = log.upgrade() else {
            for p in batch.drain(..) {
                let closed = onecity_eventlog::Error::Unavailable("the event log is closed".into());
                let _ = p.done.send(Err(closed));
            }
            continue;
        };
        let mut by_stream: BTreeMap<Uuid, Vec<Pending>> = BTreeMap::new();
        for p in batch.drain(..) {
            by_stream.entry(p.stream).or_default().push(p);
        }
        // Each commit runs on its own, so the next batch is taken while this one waits for
        // its fsync: both then join the log's next group commit instead of queueing
        // behind each other.
        for (stream, pending) in by_stream {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let (events, waiters): (Vec<_>, Vec<_>) =
                    pending.into_iter().map(|p| (p.event, p.done)).unzip();
                let r = log
                    .append(stream, Expected::Any, events, Uuid::now_v7())
                    .await;
                for done in waiters {
                    let _ = done.send(match &r {
                        Ok(_) => Ok(()),
                        Err(onecity_eventlog::Error::Unavailable(m)) => {
                            Err(onecity_eventlog::Error::Unavailable(m.clone()))
                        }
                        Err(e) => Err(onecity_eventlog::Error::Storage(e.to_string())),
                    });
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onecity_eventlog::MemoryLog;

    /// Reads at once share commits, and each still gets its own record.
    #[tokio::test]
    async fn concurrent_reads_share_commits_and_each_is_recorded() {
        let log: Arc<dyn EventLog> = Arc::new(MemoryLog::new());
        let access = Access::new(Arc::clone(&log));
        let reader = Reader::from(Principal::Admin { id: "a-1".into() });
        let case = Uuid::now_v7();
        let reads = (0..100).map(|_| access.record(&reader, "m", vec![case]));
        for r in futures::future::join_all(reads).await {
            r.unwrap();
        }
        let stream = onecity_domain::ids::access_stream(&reader.principal.actor());
        let records = log.read_case_all(stream).await.unwrap();
        assert_eq!(records.len(), 100);
        let commits: std::collections::BTreeSet<_> = records.iter().map(|e| e.commit_id).collect();
        assert!(commits.len() < 100, "{} commits", commits.len());
        // Turned off, nothing is written; a read that showed no case writes nothing.
        Access::off(Arc::clone(&log))
            .record(&reader, "m", vec![case])
            .await
            .unwrap();
        access.record(&reader, "m", vec![]).await.unwrap();
        assert_eq!(log.read_case_all(stream).await.unwrap().len(), 100);
    }
}
