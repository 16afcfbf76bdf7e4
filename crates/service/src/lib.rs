//! Plumbing every onecity service shares, defined once: folding a case from the log,
//! appending a case commit with the expected version and conflict retries, refusing a
//! principal ([`case`]), and the gRPC edge: the caller's principal and the mapping of
//! service errors to statuses ([`grpc`]).
//!
//! Everything but [`grpc`] is transport-free; a service's core uses [`case`] and its
//! `grpc.rs` uses [`grpc`].

use uuid::Uuid;

pub mod access;
pub mod case;
pub mod clock;
pub mod grpc;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why shared service plumbing failed. Service errors wrap it (`#[from]`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The case stream has no events.
    #[error("case {0} not found")]
    CaseNotFound(Uuid),
    /// The caller may not do this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// Every attempt at a case commit met a concurrent write to the case; nothing of this
    /// call was written and the caller may retry.
    #[error("case {case_id} kept changing; try again")]
    ConflictRetriesExhausted {
        /// The case.
        case_id: Uuid,
    },
    /// The log failed.
    #[error(transparent)]
    Log(#[from] onecity_eventlog::Error),
    /// A stored event does not decode.
    #[error(transparent)]
    Corrupt(#[from] onecity_domain::events::DecodeError),
}

/// What kind of failure a service error is: how every transport answers it.
#[derive(Debug)]
pub enum Kind {
    /// Bad input, naming the request field; nothing was written.
    Invalid {
        /// Request field path, e.g. `application.members[2].id_number`.
        field: String,
        /// Why.
        reason: String,
    },
    /// The thing asked for does not exist.
    NotFound,
    /// The caller may not do this.
    PermissionDenied,
    /// The thing is not in a state that allows this.
    FailedPrecondition,
    /// The thing would duplicate one that exists; nothing was written. The status carries
    /// a `google.rpc.ErrorInfo` with `reason` and `metadata` (e.g. the existing case's id).
    AlreadyExists {
        /// `ErrorInfo.reason`, UPPER_SNAKE_CASE.
        reason: &'static str,
        /// `ErrorInfo.metadata`.
        metadata: Vec<(String, String)>,
    },
    /// The service refuses work for now; nothing was written.
    ResourceExhausted,
    /// A transient failure; the caller may retry.
    Unavailable,
    /// A bug or damaged data.
    Internal,
    /// The log's own error, answered the way the log answers it.
    Log(onecity_eventlog::Error),
}

/// Implemented by every service crate's `Error`, so the transport edge maps all of them the
/// same way (see [`grpc::status`]). The error's `Display` is the message callers read.
pub trait ErrorClass: std::error::Error + Sized {
    /// The kind of failure, taking the log's error out when it is one.
    fn into_kind(self) -> Kind;
}

impl ErrorClass for Error {
    fn into_kind(self) -> Kind {
        match self {
            Error::CaseNotFound(_) => Kind::NotFound,
            Error::PermissionDenied(_) => Kind::PermissionDenied,
            Error::ConflictRetriesExhausted { .. } => Kind::Unavailable,
            Error::Log(e) => Kind::Log(e),
            Error::Corrupt(_) => Kind::Internal,
        }
    }
}
