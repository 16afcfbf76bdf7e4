//! The log's transport edge: [`EventLogGrpc`] serves any [`EventLog`] as
//! `onecity.v1.EventLogService`, [`RemoteLog`] is the [`EventLog`] contract over that
//! service, [`status`] / [`from_status`] map log errors to gRPC statuses and back (with
//! `google.rpc` rich error details), and [`Bearer`] is the one bearer-token client
//! interceptor. The only crate of the log that knows tonic.
//!
//! [`EventLog`]: onecity_eventlog::EventLog

mod bearer;
mod error_status;
mod purpose;
mod remote;
mod server;

pub use bearer::{Bearer, InvalidToken};
pub use error_status::{from_status, status, CONFLICT_REASON, ERROR_DOMAIN};
pub use purpose::{purpose, MAX_PURPOSE_CHARS, PURPOSE_HEADER};
pub use remote::RemoteLog;
pub use server::{Audited, EventLogGrpc, Grant, Writer};
