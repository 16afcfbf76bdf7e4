//! The streams the backend keeps on the server: their configuration, created or
//! checked at connect.

use std::time::Duration;

use async_nats::jetstream::context::{CreateStreamErrorKind, GetStreamErrorKind};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self as js, ErrorCode};
use onecity_eventlog::{Error, Result};

use crate::wire::{self, Names};

pub(crate) fn log_stream_config(names: &Names, replicas: usize) -> stream::Config {
    stream::Config {
        name: names.log_stream(),
        description: Some("onecity event log: one message per commit".into()),
        subjects: vec![names.case_wildcard(), names.void_subject()],
        retention: RetentionPolicy::Limits,
        // No limit of any kind: a limit would drop commits and leave gaps.
        max_messages: -1,
        max_bytes: -1,
        max_messages_per_subject: -1,
        max_age: Duration::ZERO,
        max_message_size: -1,
        discard: DiscardPolicy::Old,
        storage: StorageType::File,
        num_replicas: replicas,
        deny_delete: true,
        deny_purge: true,
        allow_rollup: false,
        // Direct gets may be answered by a lagging replica; reads go to the leader.
        allow_direct: false,
        ..Default::default()
    }
}

/// A stream laid out as a NATS KV bucket (so `nats kv` tools can read it), made by hand
/// because async-nats always turns on `allow_direct` for the buckets it creates, and a
/// direct get may be answered by a replica that has not seen the latest record yet.
pub(crate) fn kv_stream_config(bucket: &str, history: i64, replicas: usize) -> stream::Config {
    stream::Config {
        name: wire::kv_stream(bucket),
        description: Some("onecity event log bookkeeping".into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        retention: RetentionPolicy::Limits,
        max_messages: -1,
        max_bytes: -1,
        max_messages_per_subject: history,
        max_age: Duration::ZERO,
        max_message_size: -1,
        discard: DiscardPolicy::New,
        storage: StorageType::File,
        num_replicas: replicas,
        deny_delete: true,
        deny_purge: true,
        allow_rollup: false,
        allow_direct: false,
        ..Default::default()
    }
}

/// Creates the stream, or checks that the existing one is configured as we need: a
/// stream with a message limit, another storage or replica count is refused rather than
/// silently used (or silently changed).
pub(crate) async fn ensure_stream(
    ctx: &js::Context,
    want: stream::Config,
) -> Result<stream::Stream> {
    for _ in 0..3 {
        match ctx.get_stream(&want.name).await {
            Ok(s) => {
                check_stream(&s.cached_info().config, &want)?;
                return Ok(s);
            }
            Err(e) => match e.kind() {
                GetStreamErrorKind::JetStream(j)
                    if j.error_code() == ErrorCode::STREAM_NOT_FOUND => {}
                _ => {
                    return Err(Error::Unavailable(format!(
                        "look up stream {}: {e}",
                        want.name
                    )))
                }
            },
        }
        match ctx.create_stream(want.clone()).await {
            Ok(s) => return Ok(s),
            // Another process created it meanwhile: check theirs.
            Err(e) if matches!(e.kind(), CreateStreamErrorKind::JetStream(ref j) if j.error_code() == ErrorCode::STREAM_NAME_EXIST) =>
                {}
            Err(e) => {
                let hint = if want.num_replicas > 1 {
                    " (a single nats-server without a cluster needs replicas = 1)"
                } else {
                    ""
                };
                return Err(Error::Unavailable(format!(
                    "create stream {}: {e}{hint}",
                    want.name
                )));
            }
        }
    }
    Err(Error::Unavailable(format!(
        "stream {} keeps appearing and vanishing",
        want.name
    )))
}

pub(crate) fn check_stream(have: &stream::Config, want: &stream::Config) -> Result<()> {
    let mut have_subjects = have.subjects.clone();
    let mut want_subjects = want.subjects.clone();
    have_subjects.sort();
    want_subjects.sort();
    let mismatches: Vec<String> = [
        (
            "subjects",
            have_subjects != want_subjects,
            format!("{:?}", have.subjects),
        ),
        (
            "storage",
            have.storage != want.storage,
            format!("{:?}", have.storage),
        ),
        (
            "replicas",
            have.num_replicas != want.num_replicas,
            have.num_replicas.to_string(),
        ),
        (
            "max_msgs",
            have.max_messages != want.max_messages,
            have.max_messages.to_string(),
        ),
        (
            "max_bytes",
            have.max_bytes != want.max_bytes,
            have.max_bytes.to_string(),
        ),
        (
            "max_age",
            have.max_age != want.max_age,
            format!("{:?}", have.max_age),
        ),
        (
            "max_msgs_per_subject",
            have.max_messages_per_subject != want.max_messages_per_subject,
            have.max_messages_per_subject.to_string(),
        ),
        (
            "deny_delete",
            have.deny_delete != want.deny_delete,
            have.deny_delete.to_string(),
        ),
        (
            "deny_purge",
            have.deny_purge != want.deny_purge,
            have.deny_purge.to_string(),
        ),
        (
            "allow_direct",
            have.allow_direct != want.allow_direct,
            have.allow_direct.to_string(),
        ),
        ("sealed", have.sealed, have.sealed.to_string()),
    ]
    .into_iter()
    .filter(|(_, differs, _)| *differs)
    .map(|(field, _, value)| format!("{field} = {value}"))
    .collect();
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(Error::Storage(format!(
            "stream {} exists but is not configured as the event log needs ({}); \
             refusing to use it",
            want.name,
            mismatches.join(", ")
        )))
    }
}
