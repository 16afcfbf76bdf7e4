//! What the commands print: proto3 JSON on stdout, errors as `<STATUS_CODE>: <message>`.

use anyhow::Context as _;
use tonic::{Code, Status};

use crate::json::{self, ProtoName};

/// Whether `e` comes from writing to a closed pipe.
pub(super) fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `<STATUS_CODE>: <message>` for a gRPC status, the whole context chain otherwise.
pub fn render_error(e: &anyhow::Error) -> String {
    match e.downcast_ref::<Status>() {
        Some(status) => {
            let mut line = format!("{}: {}", code_name(status.code()), status.message());
            match status.code() {
                Code::Unauthenticated => line.push_str(" (pass --token or set ONECITY_TOKEN)"),
                Code::Unavailable => line.push_str(" (is `onecity serve` running? see --addr)"),
                _ => {}
            }
            line
        }
        None => format!("{e:#}"),
    }
}

/// The canonical name of a gRPC status code, e.g. `INVALID_ARGUMENT`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Writes one line (or block) to stdout; unlike `println!` a closed pipe is an error, not a
/// panic.
pub(super) fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .context("write to stdout")
}

/// Prints `msg` as proto3 JSON.
pub(super) fn print<T: ProtoName>(msg: &T) -> anyhow::Result<()> {
    emit(&json::to_json(msg)?)
}
