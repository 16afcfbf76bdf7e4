//! Access records: every read of residents' data leaves a `onecity.v1.PersonalDataRead` in
//! the log, written before the answer is sent.
//!
//! The records live in the log for the reasons the quarantine records do: they are durable
//! on `Ok` (an append is fsynced, and concurrent reads share the log's group commit), they
//! are replicated and readable by every process, and they fall under the same tamper
//! evidence as the cases they describe. Each reader has its own stream
//! ([`ids::access_stream`]), so "what did this principal read" is one stream read and
//! readers never contend on one stream's version. "Who read this case" looks for the
//! records in the time range asked for (a binary search on time, then a scan of that
//! range), and counts a read of a log range as a read of every case with an event in it.

use std::time::SystemTime;

use onecity_domain::ids;
use onecity_proto::prost::Message as _;
use onecity_proto::v1 as pb;
use uuid::Uuid;

use crate::{EventLog, Expected, NewEvent, RecordedEvent, Result, MAX_READ_LIMIT};

/// Event type of an access record.
pub const PERSONAL_DATA_READ: &str = "onecity.v1.PersonalDataRead";

/// What a read showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// The data of these cases.
    Cases(Vec<Uuid>),
    /// The raw log from `from` to `to` (inclusive); `to == None`: and everything after it
    /// (a subscription).
    Range {
        /// First position read.
        from: u64,
        /// Last position read, `None` for open-ended.
        to: Option<u64>,
    },
}

/// One read to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read<'a> {
    /// The reader, as recorded for actors (`Principal::actor`).
    pub principal: &'a str,
    /// The method, e.g. `onecity.v1.IntakeService/GetCase`.
    pub method: &'a str,
    /// What it showed.
    pub subject: Subject,
    /// Why, as the caller said; may be empty.
    pub purpose: &'a str,
}

/// Records `read` durably. A read that showed nothing (no case) is not recorded.
pub async fn record(log: &dyn EventLog, read: Read<'_>) -> Result<()> {
    let Some((stream, event)) = event(read) else {
        return Ok(());
    };
    // Every read is its own record, so the commit id is fresh: a retried read records
    // again, which is what happened.
    log.append(stream, Expected::Any, vec![event], Uuid::now_v7())
        .await?;
    Ok(())
}

/// The access record of `read` and the stream it belongs on (the reader's), or `None` for
/// a read that showed nothing. For callers that commit several records at once (one
/// reader's records may share a commit: they are one stream's events).
pub fn event(read: Read<'_>) -> Option<(Uuid, NewEvent)> {
    let (case_ids, from_position, to_position) = match read.subject {
        Subject::Cases(cases) if cases.is_empty() => return None,
        Subject::Cases(cases) => (cases.iter().map(Uuid::to_string).collect(), 0, 0),
        Subject::Range { from, to } => (Vec::new(), from.max(1), to.unwrap_or(0)),
    };
    let payload = pb::PersonalDataRead {
        principal: read.principal.to_owned(),
        method: read.method.to_owned(),
        case_ids,
        from_position,
        to_position,
        purpose: read.purpose.to_owned(),
    }
    .encode_to_vec();
    let event = NewEvent::new(PERSONAL_DATA_READ, read.principal, payload);
    Some((ids::access_stream(read.principal), event))
}

/// A recorded read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRecord {
    /// Position of the record in the log.
    pub position: u64,
    /// When it was recorded.
    pub at: SystemTime,
    /// RFC 3339 form of `at`.
    pub accessed_at: String,
    /// The record.
    pub read: pb::PersonalDataRead,
}

/// The time window of a query; both ends inclusive, `None` unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    /// Earliest.
    pub since: Option<SystemTime>,
    /// Latest.
    pub until: Option<SystemTime>,
}

impl Window {
    fn holds(&self, t: SystemTime) -> bool {
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t <= u)
    }
}

fn decode(e: &RecordedEvent) -> Option<AccessRecord> {
    if e.event_type != PERSONAL_DATA_READ {
        return None;
    }
    match pb::PersonalDataRead::decode(e.payload.as_slice()) {
        Ok(read) => Some(AccessRecord {
            position: e.position,
            at: e.recorded_at,
            accessed_at: e.recorded_at_rfc3339(),
            read,
        }),
        Err(_) => {
            tracing::warn!(
                position = e.position,
                "access record does not decode, skipped"
            );
            None
        }
    }
}

/// The reads recorded for `principal` (as recorded for actors) in `window`, oldest first,
/// at most `limit`.
pub async fn by_principal(
    log: &dyn EventLog,
    principal: &str,
    window: Window,
    limit: usize,
) -> Result<Vec<AccessRecord>> {
    let stream = ids::access_stream(principal);
    let mut out = Vec::new();
    let mut next = 1;
    loop {
        let page = match log.read_case(stream, next, MAX_READ_LIMIT).await {
            Ok(page) => page,
            Err(crate::Error::NotFound(_)) => return Ok(out),
            Err(e) => return Err(e),
        };
        let Some(last) = page.last() else {
            return Ok(out);
        };
        next = last.version + 1;
        for e in &page {
            if window.until.is_some_and(|u| e.recorded_at > u) {
                return Ok(out);
            }
            if let Some(r) = decode(e).filter(|r| window.holds(r.at)) {
                out.push(r);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
    }
}

/// The reads of `case_id`'s data recorded in `window`, oldest first, at most `limit`:
/// reads naming the case, and reads of log ranges that held one of its events.
pub async fn by_case(
    log: &dyn EventLog,
    case_id: Uuid,
    window: Window,
    limit: usize,
) -> Result<Vec<AccessRecord>> {
    // The case's positions, to tell which range reads held its events. A case nobody
    // wrote has no positions, but reads naming it may still have been recorded.
    let positions: Vec<u64> = match log.read_case_all(case_id).await {
        Ok(events) => events.iter().map(|e| e.position).collect(),
        Err(crate::Error::NotFound(_)) => Vec::new(),
        Err(e) => return Err(e),
    };
    let case = case_id.to_string();
    let held = |r: &pb::PersonalDataRead| {
        if r.from_position == 0 {
            return r.case_ids.contains(&case);
        }
        let to = if r.to_position == 0 {
            u64::MAX
        } else {
            r.to_position
        };
        positions.iter().any(|&p| p >= r.from_position && p <= to)
    };
    let head = log.head().await?;
    let mut next = match window.since {
        Some(since) => first_at_or_after(log, since, head).await?,
        None => 1,
    };
    let mut out = Vec::new();
    while next <= head {
        let page = log.read_all(next, MAX_READ_LIMIT).await?;
        let Some(last) = page.last() else { break };
        next = last.position + 1;
        for e in &page {
            if window.until.is_some_and(|u| e.recorded_at > u) {
                return Ok(out);
            }
            if let Some(r) = decode(e).filter(|r| window.holds(r.at) && held(&r.read)) {
                out.push(r);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
    }
    Ok(out)
}

/// The first position recorded at or after `t` (`head + 1` when none): commit times
/// follow positions, so a binary search over single-event reads finds it.
async fn first_at_or_after(log: &dyn EventLog, t: SystemTime, head: u64) -> Result<u64> {
    let (mut lo, mut hi) = (1, head + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let at = log
            .read_all(mid, 1)
            .await?
            .first()
            .map_or(SystemTime::UNIX_EPOCH, |e| e.recorded_at);
        if at < t {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryLog;

    async fn read(log: &MemoryLog, who: &str, subject: Subject) {
        record(
            log,
            Read {
                principal: who,
                method: "m",
                subject,
                purpose: "",
            },
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn records_answer_by_principal_and_by_case() {
        let log = MemoryLog::new();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        log.append(
            a,
            Expected::NoStream,
            vec![NewEvent::new("t", "x", vec![])],
            Uuid::now_v7(),
        )
        .await
        .unwrap();
        let a_at = 1;
        read(&log, "terminal:t-1", Subject::Cases(vec![a])).await;
        read(&log, "department:d@1", Subject::Cases(vec![b])).await;
        read(
            &log,
            "admin:root",
            Subject::Range {
                from: a_at,
                to: Some(a_at),
            },
        )
        .await;
        read(
            &log,
            "admin:root",
            Subject::Range {
                from: a_at + 1,
                to: Some(100),
            },
        )
        .await;
        read(&log, "service:x", Subject::Range { from: 1, to: None }).await;
        read(&log, "terminal:t-1", Subject::Cases(vec![])).await;

        let who =
            |rs: Vec<AccessRecord>| rs.into_iter().map(|r| r.read.principal).collect::<Vec<_>>();
        let all = Window::default();
        assert_eq!(
            who(by_case(&log, a, all, 100).await.unwrap()),
            ["terminal:t-1", "admin:root", "service:x"]
        );
        // `b` has no event, so no range read held it.
        assert_eq!(
            who(by_case(&log, b, all, 100).await.unwrap()),
            ["department:d@1"]
        );
        assert_eq!(
            by_principal(&log, "terminal:t-1", all, 100)
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            by_principal(&log, "admin:root", all, 1)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(by_principal(&log, "nobody", all, 100)
            .await
            .unwrap()
            .is_empty());
        let later = Window {
            since: Some(SystemTime::now() + std::time::Duration::from_secs(60)),
            until: None,
        };
        assert!(by_case(&log, a, later, 100).await.unwrap().is_empty());
        assert!(by_principal(&log, "terminal:t-1", later, 100)
            .await
            .unwrap()
            .is_empty());
    }
}
