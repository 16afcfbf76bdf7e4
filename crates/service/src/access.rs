//! Who reads, and the record their read leaves (issue 13: every read of personal data
//! leaves a record). A service's core takes a [`Reader`] on every method that shows
//! residents' data and records the read through its [`Access`] before it answers, so every
//! transport (gRPC today, the browser console later) leaves the same record.

use std::sync::Arc;

use onecity_domain::Principal;
use onecity_eventlog::access::{self, Subject};
use onecity_eventlog::EventLog;
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
#[derive(Debug, Clone)]
pub struct Access {
    log: Arc<dyn EventLog>,
    on: bool,
}

impl Access {
    /// Records every read in `log`.
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        Access { log, on: true }
    }

    /// Records nothing: for measuring what recording costs (`record_reads = false`).
    pub fn off(log: Arc<dyn EventLog>) -> Self {
        Access { log, on: false }
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
        access::record(
            self.log.as_ref(),
            access::Read {
                principal: &reader.principal.actor(),
                method,
                subject: Subject::Cases(cases),
                purpose: &reader.purpose,
            },
        )
        .await
    }
}
