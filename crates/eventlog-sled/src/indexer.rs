//! Off the write path: the indexer thread (case index and commit-id index), the
//! compactor thread, and the rebuild of what a crash left unindexed.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use onecity_eventlog::{Appended, Error, Result};
use uuid::Uuid;

use crate::commit_index::{CommitIndex, CommitRecord};
use crate::keys::{be_u64, case_key, event_key, META_INDEXED};
use crate::record::decode_event;
use crate::{sled_err, Shared};

/// Off the critical path: indexes durable commits, in larger passes than the group
/// commits. Each pass writes the case-index keys and the `Mindexed` watermark to sled
/// (made durable by the writer's next flush) and adds the commits to the commit-id
/// index's memtable, then drops them from the overlay; a full memtable becomes a run
/// file. Whatever was not durable at a crash is rebuilt from the events on open.
pub(crate) struct Indexer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) to_compactor: std::sync::mpsc::SyncSender<()>,
}

impl Indexer {
    pub(crate) fn run(self, rx: std::sync::mpsc::Receiver<Vec<(Uuid, CommitRecord)>>) {
        lower_priority();
        let mut last = 0;
        while let Ok(first) = rx.recv() {
            // Gather for a moment: the longer a pass, the more commits of a busy case
            // share one `C` key. Readers are served by the overlay meanwhile.
            let mut commits = first;
            let deadline = std::time::Instant::now() + INDEX_DELAY;
            while commits.len() < INDEX_BATCH {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match rx.recv_timeout(left) {
                    Ok(more) => commits.extend(more),
                    Err(_) => break,
                }
            }
            if let Err(e) = self.pass(&commits, &mut last) {
                tracing::error!(error = %e, "event log index write failed, refusing further writes");
                self.shared.failed.store(true, Ordering::Release);
                // Stop here: a later pass would move the watermark past keys this one
                // may not have written. The overlay keeps serving reads, and the next
                // open rebuilds the index from the events.
                self.shared.commits.stop();
                return;
            }
        }
        // The writer has stopped (it owned the sender), so this is the only flusher left:
        // make the last index writes durable and a clean restart re-indexes nothing.
        self.shared.commits.stop();
        if let Err(e) = self.shared.commits.flush(last) {
            tracing::warn!(error = %e, "event log final commit index flush failed");
        }
        if let Err(e) = self.shared.db.flush() {
            tracing::warn!(error = %e, "event log final index flush failed");
        }
        tracing::debug!("event log indexer stopped");
    }

    fn pass(&self, commits: &[(Uuid, CommitRecord)], last: &mut u64) -> Result<()> {
        write_case_index(&self.shared.db, commits)?;
        self.shared.commits.insert(commits);
        {
            let mut overlay = self.shared.overlay();
            for (id, rec) in commits {
                overlay.remove(*id, rec);
                *last = (*last).max(rec.appended.last_position);
            }
        }
        let flush_at = self.shared.config.commit_index_flush.max(1);
        if self.shared.commits.pending() >= flush_at && self.shared.commits.flush(*last)? {
            // The new run may make a pair worth merging. A full channel means a wake-up
            // is already pending, and one compaction pass merges everything due.
            let _ = self.to_compactor.try_send(());
        }
        Ok(())
    }
}

/// The compactor thread: merges commit-index runs whenever the indexer has written one.
/// A failed merge leaves every run as it was (lookups just look at more of them), so it
/// is reported and compaction stops, but the log goes on.
pub(crate) fn compact(shared: &Shared, rx: std::sync::mpsc::Receiver<()>) {
    lower_priority();
    while rx.recv().is_ok() {
        match shared.commits.compact() {
            Ok(0) => {}
            Ok(merges) => tracing::debug!(merges, "commit index runs merged"),
            Err(e) => {
                tracing::error!(error = %e, "commit index merge failed, no more merges until restart");
                return;
            }
        }
    }
}

/// Background work yields the CPU to the write path: indexer and compactor run at nice 10, as
/// compaction threads do in storage engines. It still keeps up on average (the bounded
/// channel from the writer makes the write path wait if it does not); it only stops
/// competing with the writer for the moments it needs a core.
#[allow(unsafe_code)]
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread's own id; no memory is shared.
    unsafe {
        let tid = libc::gettid();
        if libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10) != 0 {
            tracing::debug!("could not lower the indexer's priority");
        }
    }
}

/// Most commits the indexer takes in one pass.
const INDEX_BATCH: usize = 4096;

/// Longest the indexer waits for more commits before a pass.
const INDEX_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

/// Writes the `C` keys of the commits' cases, then moves the `Mindexed` watermark to the
/// last of them.
///
/// The case index is written per case, not per commit: consecutive commits of one case
/// in `commits` become one `C` key (a run list, see [`CaseRuns`]), so a busy case costs
/// one index key per indexer pass rather than one per event. The overlay guarantees
/// that a case's commits arrive here in version order with nothing missing before them.
///
/// Plain inserts, not a batch: a sled batch takes the tree's exclusive lock and pins its
/// log until it is sealed, which would stall the writer behind a few thousand index
/// keys. Atomicity is not needed: sled recovers a prefix of its log and the watermark is
/// written after every key it covers, so a recovered watermark never claims a missing
/// key (re-indexing a key that survived writes the same value again).
fn write_case_index(db: &sled::Db, commits: &[(Uuid, CommitRecord)]) -> Result<()> {
    let Some(last) = commits.iter().map(|(_, r)| r.appended.last_position).max() else {
        return Ok(());
    };
    let mut cases: HashMap<Uuid, Vec<CaseRuns>> = HashMap::new();
    for (_, rec) in commits {
        let runs = cases.entry(rec.case_id).or_default();
        match runs.last_mut() {
            Some(r) if r.next_version() == rec.appended.first_version && !r.is_full() => {
                r.push(&rec.appended);
            }
            _ => runs.push(CaseRuns::new(&rec.appended)),
        }
    }
    for (case_id, runs) in cases {
        for r in runs {
            db.insert(case_key(case_id, r.first_version), r.encode())
                .map_err(sled_err)?;
        }
    }
    db.insert(META_INDEXED, &last.to_be_bytes())
        .map_err(sled_err)?;
    Ok(())
}

/// The value of a `C` key: the positions of versions `first_version..`, as runs of
/// `(first position, count)` (a commit's events have consecutive positions). Stored as
/// 12-byte records (u64 + u32, big-endian); an 8-byte value is one version at one
/// position, the layout of stores written before runs existed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CaseRuns {
    first_version: u64,
    runs: Vec<(u64, u32)>,
    versions: u64,
}

/// Most versions one `C` key covers, so that a value stays small (≤ 12 KiB) however
/// long the stream.
pub(crate) const MAX_RUN_VERSIONS: u64 = 1024;

impl CaseRuns {
    fn new(a: &Appended) -> Self {
        let mut r = CaseRuns {
            first_version: a.first_version,
            runs: Vec::new(),
            versions: 0,
        };
        r.push(a);
        r
    }

    fn push(&mut self, a: &Appended) {
        let n = a.last_version - a.first_version + 1;
        self.runs.push((a.first_position, n as u32));
        self.versions += n;
    }

    pub(crate) fn next_version(&self) -> u64 {
        self.first_version + self.versions
    }

    fn is_full(&self) -> bool {
        self.versions >= MAX_RUN_VERSIONS
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.runs.len() * 12);
        for (pos, n) in &self.runs {
            v.extend_from_slice(&pos.to_be_bytes());
            v.extend_from_slice(&n.to_be_bytes());
        }
        v
    }

    pub(crate) fn decode(key: &[u8], value: &[u8]) -> Result<Self> {
        let first_version = be_u64(&key[17..])?;
        if value.len() == 8 {
            return Ok(CaseRuns {
                first_version,
                runs: vec![(be_u64(value)?, 1)],
                versions: 1,
            });
        }
        if value.is_empty() || !value.len().is_multiple_of(12) {
            return Err(Error::Storage(format!(
                "corrupt case index value of {} bytes",
                value.len()
            )));
        }
        let mut runs = Vec::with_capacity(value.len() / 12);
        let mut versions = 0;
        for rec in value.chunks_exact(12) {
            let n = u32::from_be_bytes([rec[8], rec[9], rec[10], rec[11]]);
            runs.push((be_u64(&rec[..8])?, n));
            versions += u64::from(n);
        }
        Ok(CaseRuns {
            first_version,
            runs,
            versions,
        })
    }

    /// `(version, position)` of every version it covers, in order.
    pub(crate) fn positions(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut version = self.first_version;
        self.runs.iter().flat_map(move |&(pos, n)| {
            let start = version;
            version += u64::from(n);
            (0..u64::from(n)).map(move |i| (start + i, pos + i))
        })
    }
}

/// Rebuilds what a crash left unindexed: the case keys of commits after `cases_from`
/// and the commit-id entries of commits after `commits_from`, reading the events once
/// from the lower of the two (a commit's events are consecutive and share a commit id).
/// Works in chunks, so that rebuilding a lost commit index from every event holds one
/// memtable at a time, and ends with the commit index durable up to `head`.
pub(crate) fn reindex(
    db: &sled::Db,
    index: &CommitIndex,
    flush_at: usize,
    (cases_from, commits_from): (u64, u64),
    head: u64,
) -> Result<usize> {
    let chunk = |commits: &mut Vec<(Uuid, CommitRecord)>| -> Result<()> {
        let after = |from: u64| {
            commits
                .iter()
                .filter(move |(_, r)| r.appended.last_position > from)
                .copied()
                .collect::<Vec<_>>()
        };
        write_case_index(db, &after(cases_from))?;
        index.insert(&after(commits_from));
        if index.pending() >= flush_at {
            let last = commits.last().map_or(0, |(_, r)| r.appended.last_position);
            index.flush(last)?;
        }
        commits.clear();
        Ok(())
    };
    let mut commits: Vec<(Uuid, CommitRecord)> = Vec::new();
    let mut n = 0;
    let from = cases_from.min(commits_from);
    for item in db.range(event_key(from + 1)..=event_key(head)).values() {
        let e = decode_event(&item.map_err(sled_err)?)?;
        match commits.last_mut() {
            Some((id, rec))
                if *id == e.commit_id
                    && rec.case_id == e.case_id
                    && rec.appended.last_position + 1 == e.position =>
            {
                rec.appended.last_position = e.position;
                rec.appended.last_version = e.version;
                continue;
            }
            _ => {}
        }
        if commits.len() >= INDEX_BATCH {
            n += commits.len();
            chunk(&mut commits)?;
        }
        commits.push((
            e.commit_id,
            CommitRecord {
                case_id: e.case_id,
                appended: Appended {
                    case_id: e.case_id,
                    first_version: e.version,
                    last_version: e.version,
                    first_position: e.position,
                    last_position: e.position,
                    deduplicated: false,
                },
            },
        ));
    }
    n += commits.len();
    chunk(&mut commits)?;
    index.flush(head)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(first_version: u64, runs: &[(u64, u32)]) -> CaseRuns {
        CaseRuns {
            first_version,
            runs: runs.to_vec(),
            versions: runs.iter().map(|r| u64::from(r.1)).sum(),
        }
    }

    proptest::proptest! {
        #[test]
        fn case_runs_roundtrip(
            first in 1u64..1_000_000,
            raw in proptest::collection::vec((1u64..u64::MAX / 2, 1u32..50), 1..40),
        ) {
            let r = runs(first, &raw);
            let key = case_key(Uuid::now_v7(), first);
            let back = CaseRuns::decode(&key, &r.encode()).unwrap();
            proptest::prop_assert_eq!(&back, &r);
            let positions: Vec<(u64, u64)> = back.positions().collect();
            proptest::prop_assert_eq!(positions.len() as u64, r.versions);
            for (i, (v, _)) in positions.iter().enumerate() {
                proptest::prop_assert_eq!(*v, first + i as u64);
            }
        }
    }

    #[test]
    fn case_runs_read_the_legacy_single_position_value() {
        let key = case_key(Uuid::now_v7(), 7);
        let r = CaseRuns::decode(&key, &42u64.to_be_bytes()).unwrap();
        assert_eq!(r.positions().collect::<Vec<_>>(), vec![(7, 42)]);
        assert!(CaseRuns::decode(&key, &[0; 13]).is_err());
        assert!(CaseRuns::decode(&key, &[]).is_err());
    }
}
