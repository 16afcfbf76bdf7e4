//! The policy versions in force, as the log knows them: a `PolicyVersionRecorded` on the
//! policy stream (`ids::policy_stream`) holds a version's parameters once it is in force.
//! A version in force is immutable, since cases were assessed under it: a policy file that
//! gives it other values is refused ([`Error::PolicyChanged`]), and a change means a new
//! version.
//!
//! Records start with the release that introduced them: versions already in force then
//! are recorded as the file gives them at that first start (the parameters added to them
//! before, such as the review intervals, included). A parameter a later release adds to
//! every version is not a change of what was recorded: the version is recorded again with
//! it, every recorded value unchanged.
//!
//! The position of a version's first record is where it took effect for the log: the
//! policy sweep re-assesses the cases opened before it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use onecity_domain::events::POLICY_VERSION_RECORDED;
use onecity_domain::{format_date, ids, rfc3339};
use onecity_eligibility::{PolicyBook, PolicyVersion};
use onecity_eventlog::{EventLog, Expected, NewEvent};
use onecity_proto::prost::Message as _;
use onecity_proto::v1 as pb;
use onecity_service::case::MAX_CONFLICT_RETRIES;

use crate::{Error, Result, ACTOR};

/// The record of `version` as the file gives it.
fn record_of(version: &PolicyVersion, now: DateTime<Utc>) -> pb::PolicyVersionRecorded {
    pb::PolicyVersionRecorded {
        version_id: version.id().to_owned(),
        effective_from: format_date(version.effective_from()),
        parameters: version
            .parameters()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        district_standards: version
            .district_standards()
            .into_iter()
            .map(|(d, s)| (d.code().to_owned(), s))
            .collect(),
        fingerprint: version.fingerprint(),
        recorded_at: rfc3339(now),
    }
}

/// What in `file` differs from what `recorded` says of the same version, if anything;
/// parameters the record does not have are not a difference.
fn difference(
    recorded: &pb::PolicyVersionRecorded,
    file: &pb::PolicyVersionRecorded,
) -> Option<String> {
    if recorded.effective_from != file.effective_from {
        return Some(format!(
            "effective_from is {} in the file, {} in the log",
            file.effective_from, recorded.effective_from
        ));
    }
    changed("", &recorded.parameters, &file.parameters).or_else(|| {
        changed(
            "district_standards.",
            &recorded.district_standards,
            &file.district_standards,
        )
    })
}

/// The first of `was`'s values, by name, that `now` does not have or has otherwise.
fn changed(what: &str, was: &HashMap<String, i64>, now: &HashMap<String, i64>) -> Option<String> {
    let mut names: Vec<&String> = was.keys().collect();
    names.sort();
    names.into_iter().find_map(|name| {
        let value = was[name];
        match now.get(name) {
            Some(v) if *v == value => None,
            Some(v) => Some(format!(
                "{what}{name} is {v} in the file, {value} in the log"
            )),
            None => Some(format!("{what}{name} is missing from the file")),
        }
    })
}

/// The policy stream: its version and every record with its position, in order.
async fn read(log: &dyn EventLog) -> Result<(u64, Vec<(u64, pb::PolicyVersionRecorded)>)> {
    let events = match log.read_case_all(ids::policy_stream()).await {
        Err(onecity_eventlog::Error::NotFound(_)) => Vec::new(),
        other => other?,
    };
    let version = events.last().map_or(0, |e| e.version);
    let mut records = Vec::with_capacity(events.len());
    for e in events
        .iter()
        .filter(|e| e.event_type == POLICY_VERSION_RECORDED)
    {
        let r = pb::PolicyVersionRecorded::decode(e.payload.as_slice()).map_err(|err| {
            onecity_domain::events::DecodeError {
                event_type: e.event_type.clone(),
                reason: err.to_string(),
            }
        })?;
        records.push((e.position, r));
    }
    Ok((version, records))
}

/// The position of the first record of `version_id`, if the log has one.
pub async fn first_record(log: &dyn EventLog, version_id: &str) -> Result<Option<u64>> {
    let (_, records) = read(log).await?;
    Ok(records
        .iter()
        .find(|(_, r)| r.version_id == version_id)
        .map(|(p, _)| *p))
}

/// Checks `version` against what the log recorded of it and records it when the log has
/// no record of it yet, or one without some of its parameters; returns the log position
/// of its first record. [`Error::PolicyChanged`] when a recorded value differs.
pub async fn record(
    log: &dyn EventLog,
    version: &PolicyVersion,
    now: DateTime<Utc>,
) -> Result<u64> {
    let file = record_of(version, now);
    for _ in 0..MAX_CONFLICT_RETRIES {
        let (stream_version, records) = read(log).await?;
        let mine: Vec<&(u64, pb::PolicyVersionRecorded)> = records
            .iter()
            .filter(|(_, r)| r.version_id == version.id())
            .collect();
        for (_, recorded) in &mine {
            if let Some(what) = difference(recorded, &file) {
                return Err(Error::PolicyChanged(format!(
                    "policy version {} is in force and immutable, but {what}: publish the change as a new version",
                    version.id()
                )));
            }
        }
        let first = mine.first().map(|(p, _)| *p);
        if mine
            .last()
            .is_some_and(|(_, r)| r.fingerprint == file.fingerprint)
        {
            return Ok(first.unwrap_or_default());
        }
        let new = NewEvent::new(POLICY_VERSION_RECORDED, ACTOR, file.encode_to_vec());
        let commit_id = ids::policy_record_commit(version.id(), &file.fingerprint);
        match log
            .append(
                ids::policy_stream(),
                Expected::Exact(stream_version),
                vec![new],
                commit_id,
            )
            .await
        {
            Ok(appended) => {
                tracing::info!(policy = %version.id(), fingerprint = %file.fingerprint, "policy version recorded");
                return Ok(first.unwrap_or(appended.first_position));
            }
            Err(onecity_eventlog::Error::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(onecity_service::Error::ConflictRetriesExhausted {
        case_id: ids::policy_stream(),
    }
    .into())
}

/// Checks every version of `policies` in force on `now`'s date (Beijing) against the log
/// and records those it has not recorded: what the eligibility role does on start. The
/// error names the version and the value that changed.
pub async fn check_in_force(
    log: &dyn EventLog,
    policies: &PolicyBook,
    now: DateTime<Utc>,
) -> Result<()> {
    let today = onecity_domain::beijing_date(now);
    for version in policies
        .versions()
        .iter()
        .filter(|v| v.effective_from() <= today)
    {
        record(log, version, now).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use onecity_eventlog::MemoryLog;

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[tokio::test]
    async fn versions_in_force_are_recorded_once_and_a_change_is_refused() {
        let log: Arc<dyn EventLog> = Arc::new(MemoryLog::default());
        let book = PolicyBook::embedded_default();
        let now = at("2026-12-04T02:00:00Z");
        check_in_force(log.as_ref(), &book, now).await.unwrap();
        check_in_force(log.as_ref(), &book, now).await.unwrap();
        let (_, records) = read(log.as_ref()).await.unwrap();
        let ids: Vec<&str> = records.iter().map(|(_, r)| r.version_id.as_str()).collect();
        assert_eq!(ids, ["2025-07", "2026-07"]);

        // The same version with another standard is refused, naming what changed.
        let text = include_str!("../../eligibility/policy/default.toml").replacen(
            "dibao_standard_fen = 111000",
            "dibao_standard_fen = 112000",
            1,
        );
        let changed = PolicyBook::from_toml_str(&text, "policy.toml").unwrap();
        let err = check_in_force(log.as_ref(), &changed, now)
            .await
            .unwrap_err();
        let Error::PolicyChanged(message) = &err else {
            panic!("{err:?}");
        };
        assert!(
            message.contains("policy version 2026-07")
                && message.contains("dibao_standard_fen is 112000 in the file, 111000 in the log"),
            "{message}"
        );
        // A version not in force yet is not checked: it may still change.
        check_in_force(log.as_ref(), &changed, at("2026-06-01T00:00:00Z"))
            .await
            .unwrap();
    }

    #[test]
    fn a_parameter_the_record_lacks_is_no_difference() {
        let book = PolicyBook::embedded_default();
        let v = book.get("2026-07").unwrap();
        let now = at("2026-12-04T02:00:00Z");
        let file = record_of(v, now);
        let mut older = file.clone();
        older.parameters.remove("review_interval_months");
        assert_eq!(difference(&older, &file), None);
        assert_eq!(
            difference(&file, &older),
            Some("review_interval_months is missing from the file".into())
        );
        let mut moved = file.clone();
        moved.district_standards.insert("120115".into(), 1);
        assert!(difference(&moved, &file)
            .unwrap()
            .starts_with("district_standards.120115"));
    }
}
