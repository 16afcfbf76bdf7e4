//! Log errors as gRPC statuses and back. The machine-readable parts travel as
//! `google.rpc` rich error details (`tonic-types`), so any gRPC client can read them:
//! a `BadRequest` field violation names the invalid field, and an `ErrorInfo` carries
//! the actual version of a conflict.

use std::collections::HashMap;

use onecity_eventlog::{Error, Expected};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use uuid::Uuid;

/// `ErrorInfo.reason` of an optimistic-concurrency conflict.
pub const CONFLICT_REASON: &str = "WRONG_EXPECTED_VERSION";
/// `ErrorInfo.domain` of the log's errors.
pub const ERROR_DOMAIN: &str = "onecity.eventlog";
/// `ErrorInfo.metadata` key of a conflict's actual version (0 = no stream).
const ACTUAL_VERSION: &str = "actual_version";

/// Maps a log error to a gRPC status with machine-readable details.
pub fn status(e: Error) -> Status {
    match e {
        Error::Conflict { actual, .. } => {
            let metadata = HashMap::from([(ACTUAL_VERSION.to_owned(), actual.to_string())]);
            let details = ErrorDetails::with_error_info(CONFLICT_REASON, ERROR_DOMAIN, metadata);
            Status::with_error_details(Code::Aborted, e.to_string(), details)
        }
        Error::Invalid {
            ref field,
            ref reason,
        } => {
            let details = ErrorDetails::with_bad_request_violation(field, reason);
            Status::with_error_details(Code::InvalidArgument, e.to_string(), details)
        }
        Error::NotFound(_) => Status::not_found(e.to_string()),
        Error::Unavailable(_) => Status::unavailable(e.to_string()),
        Error::Storage(_) => Status::internal(e.to_string()),
    }
}

/// Maps a status from the log's server back to the log error it came from. `case_id` and
/// `expected` are the request's (a conflict and a missing case are only recognised with
/// them); anything unrecognised is [`Error::Unavailable`], which callers may retry.
pub fn from_status(s: Status, case_id: Option<Uuid>, expected: Option<Expected>) -> Error {
    let details = s.get_error_details();
    match s.code() {
        Code::Aborted => {
            let actual = details
                .error_info()
                .filter(|i| i.reason == CONFLICT_REASON)
                .and_then(|i| i.metadata.get(ACTUAL_VERSION))
                .and_then(|v| v.parse().ok());
            match (case_id, expected, actual) {
                (Some(case_id), Some(expected), Some(actual)) => Error::Conflict {
                    case_id,
                    expected,
                    actual,
                },
                _ => Error::Unavailable(s.message().to_owned()),
            }
        }
        Code::InvalidArgument => match details
            .bad_request()
            .and_then(|b| b.field_violations.first())
        {
            Some(v) => Error::Invalid {
                field: v.field.clone(),
                reason: v.description.clone(),
            },
            None => Error::Invalid {
                field: "request".into(),
                reason: s.message().to_owned(),
            },
        },
        Code::NotFound => match case_id {
            Some(c) => Error::NotFound(c),
            None => Error::Unavailable(s.message().to_owned()),
        },
        Code::Internal | Code::DataLoss => Error::Storage(s.message().to_owned()),
        _ => Error::Unavailable(format!("{:?}: {}", s.code(), s.message())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_and_invalid_fields_survive_the_round_trip() {
        let case_id = Uuid::now_v7();
        let conflict = Error::Conflict {
            case_id,
            expected: Expected::Exact(3),
            actual: 4,
        };
        match from_status(status(conflict), Some(case_id), Some(Expected::Exact(3))) {
            Error::Conflict { actual, .. } => assert_eq!(actual, 4),
            other => panic!("expected a conflict, got {other:?}"),
        }
        let invalid = Error::invalid("events[3].payload", "too big: 5 bytes");
        match from_status(status(invalid), None, None) {
            Error::Invalid { field, reason } => {
                assert_eq!(field, "events[3].payload");
                assert_eq!(reason, "too big: 5 bytes");
            }
            other => panic!("expected invalid, got {other:?}"),
        }
    }
}
