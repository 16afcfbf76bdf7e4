//! The warnings projection: every warning in its latest state, rebuilt from the log's
//! warning events on start and kept current by a subscription (`ListWarnings` reads it).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use onecity_domain::events::{decode_warning, WARNING_PREFIX};
use onecity_eventlog::{EventLog, RecordedEvent};
use onecity_proto::v1 as pb;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use onecity_eventlog::projection::{self, Projection};

/// Every warning by id, in its latest state.
#[derive(Debug, Default)]
pub struct Warnings {
    /// Warning → (position of its first event, the warning): listed in the order raised.
    state: RwLock<BTreeMap<Uuid, (u64, pb::Warning)>>,
    applied: RwLock<u64>,
}

impl Warnings {
    /// Starts the projection: replays the warning events from the beginning, then follows
    /// them until `shutdown`.
    pub fn start(log: Arc<dyn EventLog>, shutdown: CancellationToken) -> Arc<Warnings> {
        projection::start(Arc::new(Warnings::default()), log, shutdown)
    }

    /// Every warning, in the order raised.
    pub fn all(&self) -> Vec<pb::Warning> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<&(u64, pb::Warning)> = state.values().collect();
        all.sort_by_key(|(position, _)| *position);
        all.into_iter().map(|(_, w)| w.clone()).collect()
    }
}

impl Projection for Warnings {
    fn name(&self) -> &'static str {
        "warnings"
    }

    fn prefixes(&self) -> Vec<&'static str> {
        vec![WARNING_PREFIX]
    }

    fn applied(&self) -> u64 {
        *self.applied.read().unwrap_or_else(|p| p.into_inner())
    }

    fn apply(&self, events: &[RecordedEvent]) {
        for e in events {
            self.apply_one(e);
        }
    }
}

impl Warnings {
    /// Applies one event (others than warning events are skipped, and so is an event at or
    /// below the applied position, so a replay changes nothing).
    fn apply_one(&self, event: &RecordedEvent) {
        let mut applied = self.applied.write().unwrap_or_else(|p| p.into_inner());
        if event.position <= *applied {
            return;
        }
        *applied = event.position;
        match decode_warning(&event.event_type, &event.payload) {
            Ok(Some(w)) => {
                let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
                state
                    .entry(event.case_id)
                    .and_modify(|(_, old)| *old = w.clone())
                    .or_insert((event.position, w));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, position = event.position, "undecodable warning event skipped");
            }
        }
    }
}
