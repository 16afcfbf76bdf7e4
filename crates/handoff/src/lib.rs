//! Handoff: the departments' side of onecity.
//!
//! - [`HandoffWorker`] follows the log and, for each assessed case, issues one referral
//!   per ELIGIBLE or NEEDS_REVIEW programme to the department unit of the application's
//!   district, in one commit (or closes the case when nothing is referred).
//! - [`DeadlineWorker`] watches the open referrals' deadlines against an injectable clock
//!   and writes due-soon, overdue and escalation events, once each.
//! - [`LinkageWorker`] applies each recognition decision to the programmes linked to the
//!   recognition (basis updated, referral cancelled or newly issued, in one commit), and
//!   issues the charity referral of last resort when every public referral ended.
//! - [`Inbox`] is the department-side projection: every referral in its latest state,
//!   rebuilt from the log on start and kept current by a subscription.
//! - [`Handoff`] serves back offices and district supervisors: list and stream their
//!   referrals, acknowledge, decide, transfer them and ask the household for information;
//!   [`ReferralWriter`] is the one way a referral transition is written (intake's
//!   `ProvideInformation` uses it too). Every transition is an event on the case stream, written with the
//!   case's expected version, so two offices cannot both win a race.

use onecity_service::{ErrorClass, Kind};

mod deadlines;
pub mod grpc;
mod inbox;
mod linkage;
mod reverification;
mod service;
mod worker;

pub use deadlines::{DeadlinePolicy, DeadlineWorker};
pub use inbox::{Inbox, InboxCounts, InboxEntry, ReferralFilter, Scope};
pub use linkage::{LinkageWorker, Linked, LINKAGE_ACTOR, LINKAGE_CONSUMER};
/// The deterministic id of a referral (defined with every other id in
/// [`onecity_domain::ids`]).
pub use onecity_domain::ids::referral_id;
pub use onecity_eligibility::reassess::review_events;
pub use service::{DecisionInput, Handoff, ListQuery, ReferralWriter, Transfer};
pub use worker::{Done, HandoffWorker};

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a handoff operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input; nothing written.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Request field.
        field: String,
        /// Why.
        reason: String,
    },
    /// No such referral.
    #[error("referral {0} not found")]
    NotFound(String),
    /// The referral is not in a state that allows this.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The shared case plumbing failed: permission denied, the case kept changing under
    /// every retry, or the log failed there.
    #[error(transparent)]
    Service(#[from] onecity_service::Error),
    /// The log failed.
    #[error(transparent)]
    Log(#[from] onecity_eventlog::Error),
    /// A stored event does not decode.
    #[error(transparent)]
    Corrupt(#[from] onecity_domain::events::DecodeError),
}

impl ErrorClass for Error {
    fn into_kind(self) -> Kind {
        match self {
            Error::Invalid { field, reason } => Kind::Invalid { field, reason },
            Error::NotFound(_) => Kind::NotFound,
            Error::FailedPrecondition(_) => Kind::FailedPrecondition,
            Error::Service(e) => e.into_kind(),
            Error::Log(e) => Kind::Log(e),
            Error::Corrupt(_) => Kind::Internal,
        }
    }
}

impl From<onecity_domain::Invalid> for Error {
    fn from(e: onecity_domain::Invalid) -> Self {
        Error::Invalid {
            field: e.field,
            reason: e.reason,
        }
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Consumer name of the handoff worker's checkpoint.
pub const CONSUMER: &str = "handoff";
/// Consumer name of the deadline worker (its state is rebuilt from the log at start).
pub const DEADLINES_CONSUMER: &str = "deadlines";
/// The actor the handoff worker writes its events as.
pub const ACTOR: &str = "service:handoff";
/// Longest decision note, transfer reason, information request or answer.
pub const MAX_NOTE_CHARS: usize = 2_000;
/// Largest page of `ListReferrals`.
pub const MAX_PAGE_SIZE: u32 = 500;
