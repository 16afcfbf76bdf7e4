//! The gRPC edge every service shares: who is calling, and how a service error answers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

/// The idempotency key of a request, if it carries one: proto3 sends "none" as the empty
/// string.
pub fn request_key(request_id: &str) -> Option<&str> {
    Some(request_id).filter(|r| !r.is_empty())
}

/// The caller of a read: the principal and the `onecity-purpose` it stated.
///
/// # Errors
/// `UNAUTHENTICATED` without a principal; `INVALID_ARGUMENT` naming `onecity-purpose`
/// for a purpose that is not acceptable free text.
pub fn reader<T>(req: &Request<T>) -> Result<crate::access::Reader, Status> {
    Ok(crate::access::Reader {
        principal: principal(req)?,
        purpose: onecity_eventlog_grpc::purpose(req.metadata())?,
    })
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

/// Most `WatchCase` / `StreamReferrals` streams one principal holds open at once, unless
/// configured otherwise: a department's back office and a terminal need a few; a caller
/// opening more is a bug or a flood, and each stream holds a log subscription.
pub const DEFAULT_MAX_STREAMS_PER_PRINCIPAL: usize = 16;

/// Counts each principal's open streams across the services that share it, so no one
/// caller holds the server's streams (and the log subscriptions behind them) without bound.
#[derive(Debug, Clone)]
pub struct StreamLimit {
    max: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl Default for StreamLimit {
    fn default() -> Self {
        StreamLimit::new(DEFAULT_MAX_STREAMS_PER_PRINCIPAL)
    }
}

impl StreamLimit {
    /// At most `max` open streams per principal; 0 turns the bound off.
    pub fn new(max: usize) -> Self {
        StreamLimit {
            max,
            open: Arc::default(),
        }
    }

    /// A permit for one more stream of `principal`, held by the stream until it ends
    /// (however it ends: the permit is released when the stream is dropped).
    ///
    /// # Errors
    /// `RESOURCE_EXHAUSTED` when the principal already holds the most streams allowed.
    pub fn acquire(&self, principal: &Principal) -> Result<StreamPermit, Status> {
        let key = principal.actor();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key.clone()).or_default();
        if self.max != 0 && *n >= self.max {
            tracing::warn!(
                kind = principal.kind(),
                max = self.max,
                "stream refused: too many open streams"
            );
            return Err(Status::resource_exhausted(format!(
                "at most {} streams may be open at once per caller; close one first",
                self.max
            )));
        }
        *n += 1;
        Ok(StreamPermit {
            key,
            open: Arc::clone(&self.open),
        })
    }
}

/// One open stream of a principal (see [`StreamLimit::acquire`]).
#[derive(Debug)]
pub struct StreamPermit {
    key: String,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}
