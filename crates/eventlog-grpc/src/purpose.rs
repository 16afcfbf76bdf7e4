//! The `onecity-purpose` request header: why a caller reads residents' data. It is
//! optional, recorded with the read (`onecity_eventlog::access`), and shown to auditors
//! as written, so it gets the same check as any free text a client sends.

use onecity_domain::text::{check_text, TextKind};
use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::status;

/// The header's name.
pub const PURPOSE_HEADER: &str = "onecity-purpose";

/// Longest purpose, in characters.
pub const MAX_PURPOSE_CHARS: usize = 200;

/// The purpose the request states, or empty.
///
/// # Errors
/// `INVALID_ARGUMENT` naming `onecity-purpose` when it is not UTF-8, too long, or holds
/// control or bidirectional formatting characters.
pub fn purpose(metadata: &MetadataMap) -> Result<String, Status> {
    let Some(value) = metadata.get(PURPOSE_HEADER) else {
        return Ok(String::new());
    };
    let invalid = |reason: String| status(onecity_eventlog::Error::invalid(PURPOSE_HEADER, reason));
    let text =
        std::str::from_utf8(value.as_bytes()).map_err(|_| invalid("must be UTF-8".into()))?;
    check_text(PURPOSE_HEADER, text, MAX_PURPOSE_CHARS, TextKind::Line)
        .map_err(|e| invalid(e.reason))?;
    Ok(text.to_owned())
}
