//! The overlay: what the writer has committed and the indexer not yet indexed.

use std::collections::{HashMap, VecDeque};

use onecity_eventlog::Appended;
use uuid::Uuid;

use crate::commit_index::CommitRecord;

/// Commits the indexer has not indexed yet (case-index `C` keys in sled, entries in the
/// commit-id index): the writer adds a commit when it stages it, the indexer removes it
/// after indexing it. Because both indexes have a commit *before* it leaves the
/// overlay, anyone who looks in the overlay first and in the indexes second sees every
/// commit.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    pub(crate) commits: HashMap<Uuid, CommitRecord>,
    /// Per case, its unindexed commits in version order.
    pub(crate) cases: HashMap<Uuid, VecDeque<Appended>>,
}

impl Overlay {
    pub(crate) fn insert(&mut self, commit_id: Uuid, rec: CommitRecord) {
        self.commits.insert(commit_id, rec);
        self.cases
            .entry(rec.case_id)
            .or_default()
            .push_back(rec.appended);
    }

    pub(crate) fn remove(&mut self, commit_id: Uuid, rec: &CommitRecord) {
        self.commits.remove(&commit_id);
        if let Some(q) = self.cases.get_mut(&rec.case_id) {
            while q
                .front()
                .is_some_and(|a| a.last_position <= rec.appended.last_position)
            {
                q.pop_front();
            }
            if q.is_empty() {
                self.cases.remove(&rec.case_id);
            }
        }
    }

    pub(crate) fn case_head(&self, case_id: Uuid) -> Option<u64> {
        self.cases
            .get(&case_id)
            .and_then(|q| q.back())
            .map(|a| a.last_version)
    }
}
