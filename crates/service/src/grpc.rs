//! The gRPC edge every service shares: who is calling, and how a service error answers.

use onecity_domain::Principal;
use tonic::{Code, Request, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::{ErrorClass, Kind};

/// Largest request message a public service (intake, eligibility, handoff) decodes: far
/// above the largest valid application, so only abuse meets it. Over it tonic answers
/// `OUT_OF_RANGE` before the handler runs. The log service keeps its own, larger limit.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// The principal the auth interceptor attached to the request.
///
/// # Errors
/// `UNAUTHENTICATED` when there is none, i.e. the service was mounted without the interceptor:
/// failing closed turns that wiring mistake into refused calls rather than open ones.
pub fn principal<T>(req: &Request<T>) -> Result<Principal, Status> {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("missing bearer token"))
}

/// The status a service error answers with: its kind's code and its message. Bad input
/// also carries a `BadRequest` field violation naming the request field
/// (`google.rpc.BadRequest` in the status details); log errors are answered the way the
/// log answers them.
pub fn status<E: ErrorClass>(e: E) -> Status {
    let message = e.to_string();
    match e.into_kind() {
        Kind::Invalid { field, reason } => Status::with_error_details(
            Code::InvalidArgument,
            message,
            ErrorDetails::with_bad_request_violation(field, reason),
        ),
        Kind::NotFound => Status::not_found(message),
        Kind::PermissionDenied => Status::permission_denied(message),
        Kind::FailedPrecondition => Status::failed_precondition(message),
        Kind::ResourceExhausted => Status::resource_exhausted(message),
        Kind::Unavailable => Status::unavailable(message),
        Kind::Internal => Status::internal(message),
        Kind::Log(e) => onecity_eventlog_grpc::status(e),
    }
}
