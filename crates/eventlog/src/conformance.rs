//! The backend-agnostic conformance suite: every promise of [`EventLog`], checked the
//! same way against every backend. A backend's tests invoke
//! [`conformance_suite!`](crate::conformance_suite) with an expression that builds a
//! [`Backend`]; each check becomes its own test.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use uuid::Uuid;

use crate::{Error, EventLog, EventStream, Expected, Filter, NewEvent, RecordedEvent};

/// A shared handle to a log under test.
pub type BoxLog = Arc<dyn EventLog>;

/// Produces fresh, empty logs of one backend.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// A new empty log, independent of every other one this backend produced.
    async fn fresh(&self) -> BoxLog;

    /// What the backend stores as `appended_by` for an [`EventLog::append_as`] that names
    /// `asked`: `asked` itself for a storage backend; the authenticated caller for one
    /// behind a server that stamps it.
    fn stamps(&self, asked: &str) -> String {
        asked.to_owned()
    }
}

/// Generous bound for a subscription to deliver what is already durable. A timeout here
/// turns a lost event into a failed test instead of a hung one.
const DELIVERY: Duration = Duration::from_secs(20);

fn ev(ty: &str, payload: &[u8]) -> NewEvent {
    NewEvent::new(ty, "conformance", payload.to_vec()).caused_by("test")
}

fn evs(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| ev("onecity.test.Thing", &[i as u8]))
        .collect()
}

/// Takes exactly `n` events from a subscription or panics on timeout/error/end.
pub async fn take(stream: &mut EventStream, n: usize) -> Vec<RecordedEvent> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(DELIVERY, stream.next()).await {
            Ok(Some(Ok(e))) => out.push(e),
            Ok(Some(Err(e))) => panic!("subscription failed after {} events: {e}", out.len()),
            Ok(None) => panic!("subscription ended after {} of {n} events", out.len()),
            Err(_) => panic!("subscription stalled after {} of {n} events", out.len()),
        }
    }
    out
}

fn assert_gap_free(events: &[RecordedEvent], first: u64) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.position,
            first + i as u64,
            "position gap or duplicate at index {i}"
        );
    }
}

/// Versions count 1.. per case; positions count 1.. across cases.
pub async fn append_assigns_versions_and_positions(b: &dyn Backend) {
    let log = b.fresh().await;
    assert_eq!(log.head().await.unwrap(), 0);
    let (a, c) = (Uuid::now_v7(), Uuid::now_v7());
    let r1 = log
        .append(a, Expected::NoStream, evs(2), Uuid::now_v7())
        .await
        .unwrap();
    assert_eq!(
        (
            r1.first_version,
            r1.last_version,
            r1.first_position,
            r1.last_position
        ),
        (1, 2, 1, 2)
    );
    assert!(!r1.deduplicated);
    let r2 = log
        .append(c, Expected::NoStream, evs(1), Uuid::now_v7())
        .await
        .unwrap();
    assert_eq!(
        (
            r2.first_version,
            r2.last_version,
            r2.first_position,
            r2.last_position
        ),
        (1, 1, 3, 3)
    );
    let r3 = log
        .append(a, Expected::Exact(2), evs(3), Uuid::now_v7())
        .await
        .unwrap();
    assert_eq!(
        (
            r3.first_version,
            r3.last_version,
            r3.first_position,
            r3.last_position
        ),
        (3, 5, 4, 6)
    );
    assert_eq!(log.head().await.unwrap(), 6);
    let case_a = log.read_case(a, 1, 100).await.unwrap();
    assert_eq!(
        case_a.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(
        case_a.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![1, 2, 4, 5, 6]
    );
    let all = log.read_all(1, 100).await.unwrap();
    assert_gap_free(&all, 1);
    assert_eq!(all.len(), 6);
}

/// Every envelope field written is read back unchanged, by both readers and subscribers.
pub async fn envelope_roundtrips(b: &dyn Backend) {
    let log = b.fresh().await;
    let case = Uuid::now_v7();
    let commit = Uuid::now_v7();
    let sent = vec![
        NewEvent::new(
            "onecity.v1.ApplicationSubmitted",
            "terminal-7",
            b"\x00\x01payload".to_vec(),
        )
        .caused_by("req-1")
        .with_metadata([
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "onecity=1"),
        ]),
        NewEvent::new("onecity.v1.Other", "svc", Vec::new()),
    ];
    log.append(case, Expected::Any, sent.clone(), commit)
        .await
        .unwrap();
    let read = log.read_case(case, 1, 10).await.unwrap();
    assert_eq!(read.len(), 2);
    for (r, s) in read.iter().zip(&sent) {
        assert_eq!(r.event_id, s.event_id);
        assert_eq!(r.case_id, case);
        assert_eq!(r.event_type, s.event_type);
        assert_eq!(r.actor, s.actor);
        assert_eq!(r.causation_id, s.causation_id);
        assert_eq!(r.payload, s.payload);
        assert_eq!(r.metadata, s.metadata);
        assert_eq!(r.commit_id, commit);
        let age = std::time::SystemTime::now()
            .duration_since(r.recorded_at)
            .unwrap();
        assert!(
            age < Duration::from_secs(600),
            "recorded_at is not the append time"
        );
    }
    assert_eq!(log.read_all(1, 10).await.unwrap(), read);
    let mut sub = log.subscribe(1, Filter::all()).await.unwrap();
    assert_eq!(take(&mut sub, 2).await, read);
}

/// Every commit is stored with the `appended_by` of its append, and reads return it.
pub async fn appended_by_is_stored(b: &dyn Backend) {
    let log = b.fresh().await;
    let case = Uuid::now_v7();
    log.append_as(
        "service:alpha",
        case,
        Expected::NoStream,
        evs(2),
        Uuid::now_v7(),
    )
    .await
    .unwrap();
    let stamped = crate::Stamped::new(Arc::clone(&log), "service:beta");
    stamped
        .append(case, Expected::Exact(2), evs(1), Uuid::now_v7())
        .await
        .unwrap();
    let want = [
        b.stamps("service:alpha"),
        b.stamps("service:alpha"),
        b.stamps("service:beta"),
    ];
    let read = log.read_case(case, 1, 10).await.unwrap();
    let got: Vec<&str> = read.iter().map(|e| e.appended_by.as_str()).collect();
    assert_eq!(got, want);
    assert_eq!(log.read_all(1, 10).await.unwrap(), read);
    let mut sub = log.subscribe(1, Filter::all()).await.unwrap();
    assert_eq!(take(&mut sub, 3).await, read);
}

/// Consecutive commits chain: each one's `prev` is the hash of the commit before it in
/// global order, every hash recomputes, and reads and subscriptions return the links.
pub async fn commits_chain(b: &dyn Backend) {
    let log = b.fresh().await;
    let (a, c) = (Uuid::now_v7(), Uuid::now_v7());
    log.append(a, Expected::NoStream, evs(2), Uuid::now_v7())
        .await
        .unwrap();
    log.append(c, Expected::NoStream, evs(1), Uuid::now_v7())
        .await
        .unwrap();
    // Concurrent commits chain in the order they were given positions.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                log.append(Uuid::now_v7(), Expected::NoStream, evs(2), Uuid::now_v7())
                    .await
                    .unwrap()
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let all = log.read_all(1, 100).await.unwrap();
    assert_eq!(all.len(), 19);
    let mut prev = crate::chain::GENESIS;
    let mut verifier = crate::chain::Verifier::new();
    for (i, e) in all.iter().enumerate() {
        let link = e.chain.expect("every commit is chained");
        let starts_commit = i == 0 || all[i - 1].commit_id != e.commit_id;
        if starts_commit {
            assert_eq!(link.prev, prev, "commit at {} does not chain", e.position);
            prev = link.hash;
        } else {
            assert_eq!(Some(link), all[i - 1].chain, "one link per commit");
        }
        verifier.push(e.clone()).unwrap();
    }
    let intact = verifier.finish().unwrap();
    assert_eq!((intact.head, intact.chained_from), (19, Some(1)));
    assert_eq!(intact.head_hash, prev);
    let mut sub = log.subscribe(1, Filter::all()).await.unwrap();
    assert_eq!(take(&mut sub, 19).await, all);
    assert_eq!(log.read_case(a, 1, 10).await.unwrap()[..], all[..2]);
}

/// A wrong expected version fails with the actual version and writes nothing.
pub async fn expected_version_conflicts_write_nothing(b: &dyn Backend) {
    let log = b.fresh().await;
    let case = Uuid::now_v7();
    let conflict = |r: crate::Result<crate::Appended>| match r {
        Err(Error::Conflict {
            actual, case_id, ..
        }) => {
            assert_eq!(case_id, case);
            actual
        }
        other => panic!("expected a conflict, got {other:?}"),
    };
    assert_eq!(
        conflict(
            log.append(case, Expected::Exact(1), evs(1), Uuid::now_v7())
                .await
        ),
        0
    );
    log.append(case, Expected::NoStream, evs(2), Uuid::now_v7())
        .await
        .unwrap();
    assert_eq!(
        conflict(
            log.append(case, Expected::NoStream, evs(1), Uuid::now_v7())
                .await
        ),
        2
    );
    assert_eq!(
        conflict(
            log.append(case, Expected::Exact(1), evs(1), Uuid::now_v7())
                .await
        ),
        2
    );
    assert_eq!(
        conflict(
            log.append(case, Expected::Exact(3), evs(1), Uuid::now_v7())
                .await
        ),
        2
    );
    assert_eq!(log.head().await.unwrap(), 2);
    assert_eq!(log.read_case(case, 1, 100).await.unwrap().len(), 2);
    let ok = log
        .append(case, Expected::Exact(2), evs(1), Uuid::now_v7())
        .await
        .unwrap();
    assert_eq!(ok.last_version, 3);
    let any = log
        .append(case, Expected::Any, evs(1), Uuid::now_v7())
        .await
        .unwrap();
    assert_eq!(any.last_version, 4);
}

/// The same commit id returns the original result and writes nothing, even after other
/// appends moved the stream on (so its `Exact` check would now fail).
pub async fn retried_commit_is_deduplicated(b: &dyn Backend) {
    let log = b.fresh().await;
    let case = Uuid::now_v7();
    let commit = Uuid::now_v7();
    let events = evs(2);
    let first = log
        .append(case, Expected::NoStream, events.clone(), commit)
        .await
        .unwrap();
    assert!(!first.deduplicated);
    let again = log
        .append(case, Expected::NoStream, events.clone(), commit)
        .await
        .unwrap();
    assert!(again.deduplicated);
    assert_eq!(
        (
            again.first_version,
            again.last_version,
            again.first_position,
            again.last_position
        ),
        (
            first.first_version,
            first.last_version,
            first.first_position,
            first.last_position
        )
    );
    log.append(case, Expected::Exact(2), evs(1), Uuid::now_v7())
        .await
        .unwrap();
    let late = log
        .append(case, Expected::NoStream, events, commit)
        .await
        .unwrap();
    assert!(late.deduplicated);
    assert_eq!(late.last_version, 2);
    assert_eq!(log.head().await.unwrap(), 3);
    assert_eq!(log.read_case(case, 1, 100).await.unwrap().len(), 3);
}

/// A commit id names one commit: a retry naming another case gets the original commit
/// back, with the original case id, and writes nothing.
pub async fn commit_id_names_one_commit_across_cases(b: &dyn Backend) {
    let log = b.fresh().await;
    let commit = Uuid::now_v7();
    let first_case = Uuid::now_v7();
    let first = log
        .append(first_case, Expected::Any, evs(1), commit)
        .await
        .unwrap();
    assert_eq!(first.case_id, first_case);
    let other = Uuid::now_v7();
    let r = log
        .append(other, Expected::NoStream, evs(2), commit)
        .await
        .unwrap();
    assert!(r.deduplicated);
    assert_eq!(r.case_id, first_case);
    assert_eq!(r.first_position, first.first_position);
    assert_eq!(log.head().await.unwrap(), 1);
    assert!(matches!(
        log.read_case(other, 1, 10).await,
        Err(Error::NotFound(_))
    ));
}

/// Many concurrent retries of one commit write it exactly once.
pub async fn racing_retries_write_once(b: &dyn Backend) {
    let log = b.fresh().await;
    let case = Uuid::now_v7();
    let commit = Uuid::now_v7();
    let events = evs(3);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let log = Arc::clone(&log);
            let events = events.clone();
            tokio::spawn(async move { log.append(case, Expected::Any, events, commit).await })
        })
        .collect();
    let mut fresh = 0;
    for t in tasks {
        let a = t.await.unwrap().unwrap();
        assert_eq!((a.first_version, a.last_version), (1, 3));
        if !a.deduplicated {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1, "exactly one racer writes");
    assert_eq!(log.head().await.unwrap(), 3);
}

/// Of many concurrent appends expecting the same version, exactly one wins.
pub async fn racing_exact_appends_one_wins(b: &dyn Backend) {
    let log = b.fresh().await;
    let case = Uuid::now_v7();
    log.append(case, Expected::NoStream, evs(1), Uuid::now_v7())
        .await
        .unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                log.append(case, Expected::Exact(1), evs(1), Uuid::now_v7())
                    .await
            })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(a) => {
                assert_eq!(a.last_version, 2);
                wins += 1;
            }
            Err(Error::Conflict { actual, .. }) => assert_eq!(actual, 2),
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(log.read_case(case, 1, 100).await.unwrap().len(), 2);
}

/// Concurrent appends to many cases leave a gap-free global order and gap-free streams.
pub async fn concurrent_appends_are_gap_free(b: &dyn Backend) {
    let log = b.fresh().await;
    let cases: Vec<Uuid> = (0..8).map(|_| Uuid::now_v7()).collect();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let log = Arc::clone(&log);
            let case = cases[i % cases.len()];
            tokio::spawn(async move {
                log.append(case, Expected::Any, evs(1 + i % 3), Uuid::now_v7())
                    .await
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        let a = t.await.unwrap().unwrap();
        total += a.last_position - a.first_position + 1;
    }
    let all = log.read_all(1, 10_000).await.unwrap();
    assert_eq!(all.len() as u64, total);
    assert_gap_free(&all, 1);
    for case in cases {
        let stream = log.read_case(case, 1, 10_000).await.unwrap();
        for (i, e) in stream.iter().enumerate() {
            assert_eq!(e.version, i as u64 + 1);
        }
    }
}

/// Limits and malformed input are refused with the field named, and nothing is written.
pub async fn limits_are_refused_and_write_nothing(b: &dyn Backend) {
    let log = b.fresh().await;
    let case = Uuid::now_v7();
    let invalid = |r: crate::Result<crate::Appended>| match r {
        Err(Error::Invalid { field, .. }) => field,
        other => panic!("expected invalid, got {other:?}"),
    };
    assert_eq!(
        invalid(
            log.append(case, Expected::Any, vec![], Uuid::now_v7())
                .await
        ),
        "events"
    );
    assert_eq!(
        invalid(
            log.append(case, Expected::Any, evs(1001), Uuid::now_v7())
                .await
        ),
        "events"
    );
    let big = vec![ev("t", &vec![0u8; 1024 * 1024 + 1])];
    assert_eq!(
        invalid(log.append(case, Expected::Any, big, Uuid::now_v7()).await),
        "events[0].payload"
    );
    assert_eq!(
        invalid(
            log.append(Uuid::nil(), Expected::Any, evs(1), Uuid::now_v7())
                .await
        ),
        "case_id"
    );
    assert_eq!(
        invalid(log.append(case, Expected::Any, evs(1), Uuid::nil()).await),
        "commit_id"
    );
    let mut no_type = evs(2);
    no_type[1].event_type.clear();
    assert_eq!(
        invalid(
            log.append(case, Expected::Any, no_type, Uuid::now_v7())
                .await
        ),
        "events[1].event_type"
    );
    let crowded =
        vec![ev("t", b"x").with_metadata((0..9).map(|i| (format!("k{i}"), String::new())))];
    assert_eq!(
        invalid(
            log.append(case, Expected::Any, crowded, Uuid::now_v7())
                .await
        ),
        "events[0].metadata"
    );
    let long = vec![ev("t", b"x").with_metadata([("k", "v".repeat(513))])];
    assert_eq!(
        invalid(log.append(case, Expected::Any, long, Uuid::now_v7()).await),
        "events[0].metadata[k]"
    );
    assert_eq!(log.head().await.unwrap(), 0);
    assert!(matches!(log.read_case(case, 1, 10).await, Err(Error::NotFound(c)) if c == case));
    // Exactly at the limits is accepted.
    let edge = vec![ev("t", &vec![7u8; 1024 * 1024])];
    log.append(case, Expected::Any, edge, Uuid::now_v7())
        .await
        .unwrap();
    log.append(case, Expected::Any, evs(1000), Uuid::now_v7())
        .await
        .unwrap();
    assert_eq!(log.head().await.unwrap(), 1001);
}

/// Reading a case with no events is `NotFound`; windows and limits are honoured.
pub async fn reads_respect_windows(b: &dyn Backend) {
    let log = b.fresh().await;
    let unknown = Uuid::now_v7();
    assert!(matches!(log.read_case(unknown, 1, 10).await, Err(Error::NotFound(c)) if c == unknown));
    assert!(log.read_all(1, 10).await.unwrap().is_empty());
    let case = Uuid::now_v7();
    log.append(case, Expected::Any, evs(10), Uuid::now_v7())
        .await
        .unwrap();
    let w = log.read_case(case, 4, 3).await.unwrap();
    assert_eq!(
        w.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![4, 5, 6]
    );
    assert!(log.read_case(case, 11, 10).await.unwrap().is_empty());
    assert_eq!(
        log.read_case(case, 0, 0).await.unwrap().len(),
        10,
        "0 means from the start / default limit"
    );
    let a = log.read_all(8, 100).await.unwrap();
    assert_eq!(
        a.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![8, 9, 10]
    );
    assert!(log.read_all(11, 100).await.unwrap().is_empty());
    assert_eq!(log.read_all(0, 2).await.unwrap().len(), 2);
}

/// A subscription delivers stored events, then live ones, in order.
pub async fn subscribe_catches_up_then_follows_live(b: &dyn Backend) {
    let log = b.fresh().await;
    let case = Uuid::now_v7();
    log.append(case, Expected::Any, evs(5), Uuid::now_v7())
        .await
        .unwrap();
    let mut from_start = log.subscribe(1, Filter::all()).await.unwrap();
    let mut from_middle = log.subscribe(4, Filter::all()).await.unwrap();
    let mut from_future = log.subscribe(7, Filter::all()).await.unwrap();
    assert_gap_free(&take(&mut from_start, 5).await, 1);
    assert_gap_free(&take(&mut from_middle, 2).await, 4);
    log.append(case, Expected::Any, evs(3), Uuid::now_v7())
        .await
        .unwrap();
    assert_gap_free(&take(&mut from_start, 3).await, 6);
    assert_gap_free(&take(&mut from_middle, 3).await, 6);
    assert_gap_free(&take(&mut from_future, 2).await, 7);
}

/// A subscription opened on an empty log (as every worker's first one is) delivers the
/// first events appended after it, filtered or not.
pub async fn subscribe_on_empty_log_follows_first_appends(b: &dyn Backend) {
    let log = b.fresh().await;
    let mut all = log.subscribe(1, Filter::all()).await.unwrap();
    let mut filtered = log
        .subscribe(1, Filter::prefixes(["onecity.test.Thing"]))
        .await
        .unwrap();
    let case = Uuid::now_v7();
    log.append(case, Expected::NoStream, evs(2), Uuid::now_v7())
        .await
        .unwrap();
    assert_gap_free(&take(&mut all, 2).await, 1);
    assert_gap_free(&take(&mut filtered, 2).await, 1);
    log.append(case, Expected::Any, evs(1), Uuid::now_v7())
        .await
        .unwrap();
    assert_eq!(take(&mut all, 1).await[0].position, 3);
}

/// Asserts that `events` are versions `first..` of `case`, in order, without a gap.
fn assert_case_versions(events: &[RecordedEvent], case: Uuid, first: u64) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.case_id, case, "another case's event at index {i}");
        assert_eq!(
            e.version,
            first + i as u64,
            "version gap or duplicate at index {i}"
        );
    }
}

/// A case subscription delivers that case's stored events from the version asked for,
/// then its live appends, and never another case's events, even while both grow at once.
pub async fn subscribe_case_follows_its_case_only(b: &dyn Backend) {
    let log = b.fresh().await;
    let (a, other) = (Uuid::now_v7(), Uuid::now_v7());
    log.append(a, Expected::NoStream, evs(3), Uuid::now_v7())
        .await
        .unwrap();
    log.append(other, Expected::NoStream, evs(2), Uuid::now_v7())
        .await
        .unwrap();
    let mut from_two = log.subscribe_case(a, 2).await.unwrap();
    let mut from_start = log.subscribe_case(a, 1).await.unwrap();
    assert_case_versions(&take(&mut from_two, 2).await, a, 2);
    assert_case_versions(&take(&mut from_start, 3).await, a, 1);
    // Both cases grow concurrently; the subscriptions see exactly the 40 appends to `a`.
    let writer = {
        let log = Arc::clone(&log);
        tokio::spawn(async move {
            for _ in 0..40 {
                log.append(other, Expected::Any, evs(1), Uuid::now_v7())
                    .await
                    .unwrap();
                log.append(a, Expected::Any, evs(1), Uuid::now_v7())
                    .await
                    .unwrap();
            }
        })
    };
    assert_case_versions(&take(&mut from_two, 40).await, a, 4);
    assert_case_versions(&take(&mut from_start, 40).await, a, 4);
    writer.await.unwrap();
    // Nothing of `other` is pending in between: the next delivery is `a`'s next version.
    log.append(a, Expected::Exact(43), evs(1), Uuid::now_v7())
        .await
        .unwrap();
    assert_case_versions(&take(&mut from_two, 1).await, a, 44);
}

/// A case subscription opened before the case has any event waits for its first one.
pub async fn subscribe_case_waits_for_a_new_case(b: &dyn Backend) {
    let log = b.fresh().await;
    let case = Uuid::now_v7();
    let mut sub = log.subscribe_case(case, 1).await.unwrap();
    log.append(Uuid::now_v7(), Expected::NoStream, evs(1), Uuid::now_v7())
        .await
        .unwrap();
    log.append(case, Expected::NoStream, evs(2), Uuid::now_v7())
        .await
        .unwrap();
    assert_case_versions(&take(&mut sub, 2).await, case, 1);
}

/// Only events whose type starts with a prefix are delivered, still in order.
pub async fn subscribe_filters_by_prefix(b: &dyn Backend) {
    let log = b.fresh().await;
    let case = Uuid::now_v7();
    let mixed = vec![
        ev("onecity.v1.ApplicationSubmitted", b"1"),
        ev("onecity.v1.ReferralIssued", b"2"),
        ev("onecity.v1.ApplicationWithdrawn", b"3"),
    ];
    log.append(case, Expected::Any, mixed, Uuid::now_v7())
        .await
        .unwrap();
    let mut sub = log
        .subscribe(1, Filter::prefixes(["onecity.v1.Application"]))
        .await
        .unwrap();
    log.append(
        case,
        Expected::Any,
        vec![
            ev("onecity.v1.Referral", b"4"),
            ev("onecity.v1.ApplicationX", b"5"),
        ],
        Uuid::now_v7(),
    )
    .await
    .unwrap();
    let got = take(&mut sub, 3).await;
    assert_eq!(
        got.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![1, 3, 5]
    );
    let mut none = log
        .subscribe(1, Filter::prefixes(["nothing"]))
        .await
        .unwrap();
    log.append(
        case,
        Expected::Any,
        vec![ev("nothing.here", b"6")],
        Uuid::now_v7(),
    )
    .await
    .unwrap();
    assert_eq!(take(&mut none, 1).await[0].position, 6);
}

/// Subscriptions opened while appends race the catch-up-to-live switch see every event
/// exactly once, in order.
pub async fn subscribe_races_appends_without_gap_or_duplicate(b: &dyn Backend) {
    let log = b.fresh().await;
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let case = Uuid::now_v7();
                for _ in 0..50 {
                    log.append(case, Expected::Any, evs(2), Uuid::now_v7())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let mut subs = Vec::new();
    for i in 0..8u64 {
        subs.push((
            i * 10 + 1,
            log.subscribe(i * 10 + 1, Filter::all()).await.unwrap(),
        ));
        tokio::task::yield_now().await;
    }
    for w in writers {
        w.await.unwrap();
    }
    let total = 4 * 50 * 2;
    for (from, mut sub) in subs {
        let got = take(&mut sub, (total - from + 1) as usize).await;
        assert_gap_free(&got, from);
    }
}

/// A subscriber that does not read never blocks writers or other subscribers, and still
/// receives everything once it reads again (from storage).
pub async fn slow_subscriber_does_not_block_writers(b: &dyn Backend) {
    let log = b.fresh().await;
    let mut stalled = log.subscribe(1, Filter::all()).await.unwrap();
    let mut healthy = log.subscribe(1, Filter::all()).await.unwrap();
    let case = Uuid::now_v7();
    let n = 10_000;
    let healthy_reader = tokio::spawn(async move { take(&mut healthy, n).await });
    let writes = async {
        for _ in 0..(n / 100) {
            log.append(case, Expected::Any, evs(100), Uuid::now_v7())
                .await
                .unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(120), writes)
        .await
        .expect("writers were blocked by a stalled subscriber");
    assert_gap_free(&healthy_reader.await.unwrap(), 1);
    assert_gap_free(&take(&mut stalled, n).await, 1);
}

/// Checkpoints round-trip, overwrite, and are 0 for an unknown consumer.
pub async fn checkpoints_roundtrip(b: &dyn Backend) {
    let log = b.fresh().await;
    assert_eq!(log.load_checkpoint("assessment").await.unwrap(), 0);
    log.save_checkpoint("assessment", 41).await.unwrap();
    log.save_checkpoint("handoff", 7).await.unwrap();
    log.save_checkpoint("assessment", 42).await.unwrap();
    assert_eq!(log.load_checkpoint("assessment").await.unwrap(), 42);
    assert_eq!(log.load_checkpoint("handoff").await.unwrap(), 7);
    assert!(
        matches!(log.save_checkpoint("", 1).await, Err(Error::Invalid { ref field, .. }) if field == "consumer")
    );
    assert!(matches!(
        log.load_checkpoint("").await,
        Err(Error::Invalid { .. })
    ));
}

/// One step of the model test.
#[derive(Debug, Clone)]
pub enum Step {
    /// Append `n` events to case `case` (index into a small set) with an expectation.
    Append {
        /// Case index.
        case: usize,
        /// 0 = Any, 1 = NoStream, 2 = Exact(actual), 3 = Exact(actual + 1) (a conflict).
        expect: u8,
        /// Events in the commit.
        n: usize,
    },
    /// Retry the `k`-th earlier append exactly as it was sent.
    Retry(usize),
    /// Open a subscription from position `from` (clamped to head + 1) with an optional filter.
    Subscribe {
        /// Start position offset.
        from: u64,
        /// Only the `onecity.test.A` type.
        filtered: bool,
    },
}

/// A proptest strategy for model steps.
pub fn steps() -> impl proptest::strategy::Strategy<Value = Vec<Step>> {
    use proptest::prelude::*;
    let step = prop_oneof![
        6 => (0..4usize, 0..4u8, 1..4usize).prop_map(|(case, expect, n)| Step::Append { case, expect, n }),
        2 => (0..64usize).prop_map(Step::Retry),
        1 => (0..20u64, any::<bool>()).prop_map(|(from, filtered)| Step::Subscribe { from, filtered }),
    ];
    proptest::collection::vec(step, 1..40)
}

/// Runs `steps` against a fresh log and an in-memory model: every append's result
/// (success, conflict, deduplication) must match the model, and at the end the global
/// order, every case stream and every subscription (opened at random points between
/// the appends, so each switches from catch-up to live at a different moment) must
/// equal the model's. Concurrency itself is exercised by the racing checks above.
pub async fn model_matches(b: &dyn Backend, steps: Vec<Step>) {
    let log = b.fresh().await;
    let cases: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    // Model: the global log as (case, event_type) plus per-case versions and commit results.
    let mut model: Vec<(Uuid, String, Uuid)> = Vec::new();
    let mut versions: BTreeMap<Uuid, u64> = BTreeMap::new();
    // Every append as sent, with its result if it was written.
    type Sent = (Uuid, Expected, Vec<NewEvent>, Uuid, Option<crate::Appended>);
    let mut sent: Vec<Sent> = Vec::new();
    let mut subs: Vec<(u64, bool, EventStream)> = Vec::new();
    for step in steps {
        match step {
            Step::Append { case, expect, n } => {
                let case = cases[case];
                let actual = versions.get(&case).copied().unwrap_or(0);
                let expected = match expect {
                    0 => Expected::Any,
                    1 => Expected::NoStream,
                    2 => Expected::Exact(actual),
                    _ => Expected::Exact(actual + 1),
                };
                let events: Vec<NewEvent> = (0..n)
                    .map(|i| {
                        ev(
                            if i % 2 == 0 {
                                "onecity.test.A"
                            } else {
                                "onecity.test.B"
                            },
                            &[i as u8],
                        )
                    })
                    .collect();
                let commit = Uuid::now_v7();
                let r = log.append(case, expected, events.clone(), commit).await;
                if expected.admits(actual) {
                    let a = r.unwrap();
                    assert!(!a.deduplicated);
                    assert_eq!(a.first_version, actual + 1);
                    assert_eq!(a.first_position, model.len() as u64 + 1);
                    for e in &events {
                        model.push((case, e.event_type.clone(), e.event_id));
                    }
                    versions.insert(case, actual + n as u64);
                    sent.push((case, expected, events, commit, Some(a)));
                } else {
                    match r {
                        Err(Error::Conflict { actual: got, .. }) => assert_eq!(got, actual),
                        other => panic!("expected conflict, got {other:?}"),
                    }
                    sent.push((case, expected, events, commit, None));
                }
            }
            Step::Retry(k) => {
                if sent.is_empty() {
                    continue;
                }
                let (case, expected, events, commit, first) = sent[k % sent.len()].clone();
                let r = log.append(case, expected, events, commit).await;
                match first {
                    Some(a) => {
                        let again = r.unwrap();
                        assert!(again.deduplicated);
                        assert_eq!(again.first_position, a.first_position);
                        assert_eq!(again.last_version, a.last_version);
                    }
                    // A commit that failed its check was never written, so a retry is a
                    // fresh attempt judged against the current version.
                    None => {
                        let actual = versions.get(&case).copied().unwrap_or(0);
                        if expected.admits(actual) {
                            let a = r.unwrap();
                            assert!(!a.deduplicated);
                            let k = k % sent.len();
                            for e in &sent[k].2 {
                                model.push((case, e.event_type.clone(), e.event_id));
                            }
                            versions.insert(case, a.last_version);
                            sent[k].4 = Some(a);
                        } else {
                            assert!(matches!(r, Err(Error::Conflict { .. })), "{r:?}");
                        }
                    }
                }
            }
            Step::Subscribe { from, filtered } => {
                let from = 1 + from.min(model.len() as u64);
                let filter = if filtered {
                    Filter::prefixes(["onecity.test.A"])
                } else {
                    Filter::all()
                };
                subs.push((from, filtered, log.subscribe(from, filter).await.unwrap()));
            }
        }
    }
    assert_eq!(log.head().await.unwrap(), model.len() as u64);
    let all = log.read_all(1, 10_000).await.unwrap();
    assert_eq!(all.len(), model.len());
    for (e, (case, ty, id)) in all.iter().zip(&model) {
        assert_eq!((&e.case_id, &e.event_type, &e.event_id), (case, ty, id));
    }
    for case in &cases {
        let want: Vec<Uuid> = model.iter().filter(|m| m.0 == *case).map(|m| m.2).collect();
        match log.read_case(*case, 1, 10_000).await {
            Ok(got) => assert_eq!(got.iter().map(|e| e.event_id).collect::<Vec<_>>(), want),
            Err(Error::NotFound(_)) => assert!(want.is_empty()),
            Err(e) => panic!("{e}"),
        }
    }
    for (from, filtered, mut sub) in subs {
        let want: Vec<Uuid> = model
            .iter()
            .enumerate()
            .filter(|(i, m)| *i as u64 + 1 >= from && (!filtered || m.1 == "onecity.test.A"))
            .map(|(_, m)| m.2)
            .collect();
        let got = take(&mut sub, want.len()).await;
        assert_eq!(got.iter().map(|e| e.event_id).collect::<Vec<_>>(), want);
        let ids: HashSet<Uuid> = got.iter().map(|e| e.event_id).collect();
        assert_eq!(ids.len(), got.len());
    }
}

/// Expands to one test per conformance check for the backend built by `$backend`
/// (an expression of a type implementing [`Backend`]).
#[macro_export]
macro_rules! conformance_suite {
    ($backend:expr) => {
        $crate::conformance_suite!(@each $backend;
            append_assigns_versions_and_positions,
            envelope_roundtrips,
            appended_by_is_stored,
            commits_chain,
            expected_version_conflicts_write_nothing,
            retried_commit_is_deduplicated,
            commit_id_names_one_commit_across_cases,
            racing_retries_write_once,
            racing_exact_appends_one_wins,
            concurrent_appends_are_gap_free,
            limits_are_refused_and_write_nothing,
            reads_respect_windows,
            subscribe_catches_up_then_follows_live,
            subscribe_on_empty_log_follows_first_appends,
            subscribe_filters_by_prefix,
            subscribe_races_appends_without_gap_or_duplicate,
            slow_subscriber_does_not_block_writers,
            subscribe_case_follows_its_case_only,
            subscribe_case_waits_for_a_new_case,
            checkpoints_roundtrip
        );

        #[test]
        fn model_matches_in_memory_model() {
            use proptest::prelude::*;
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            let config = ProptestConfig { cases: 24, ..ProptestConfig::default() };
            proptest!(config, |(steps in $crate::conformance::steps())| {
                rt.block_on(async { $crate::conformance::model_matches(&$backend, steps).await });
            });
        }
    };
    (@each $backend:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                $crate::conformance::$check(&$backend).await;
            }
        )*
    };
}

/// A log that keeps something alive (a temp dir, a server) for as long as it is used.
pub struct Owning<G: Send + Sync + 'static> {
    log: BoxLog,
    _guard: G,
}

impl<G: Send + Sync + 'static> Owning<G> {
    /// Wraps `log`, dropping `guard` only after the log.
    pub fn new(log: BoxLog, guard: G) -> Self {
        Owning { log, _guard: guard }
    }
}

impl<G: Send + Sync + 'static> std::fmt::Debug for Owning<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.log.fmt(f)
    }
}

#[async_trait::async_trait]
impl<G: Send + Sync + 'static> EventLog for Owning<G> {
    async fn append_as(
        &self,
        appended_by: &str,
        case_id: Uuid,
        expected: Expected,
        events: Vec<NewEvent>,
        commit_id: Uuid,
    ) -> crate::Result<crate::Appended> {
        self.log
            .append_as(appended_by, case_id, expected, events, commit_id)
            .await
    }
    async fn read_case(
        &self,
        case_id: Uuid,
        from_version: u64,
        limit: usize,
    ) -> crate::Result<Vec<RecordedEvent>> {
        self.log.read_case(case_id, from_version, limit).await
    }
    async fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> crate::Result<Vec<RecordedEvent>> {
        self.log.read_all(from_position, limit).await
    }
    async fn subscribe(&self, from_position: u64, filter: Filter) -> crate::Result<EventStream> {
        self.log.subscribe(from_position, filter).await
    }
    async fn subscribe_case(&self, case_id: Uuid, from_version: u64) -> crate::Result<EventStream> {
        self.log.subscribe_case(case_id, from_version).await
    }
    async fn save_checkpoint(&self, consumer: &str, position: u64) -> crate::Result<()> {
        self.log.save_checkpoint(consumer, position).await
    }
    async fn load_checkpoint(&self, consumer: &str) -> crate::Result<u64> {
        self.log.load_checkpoint(consumer).await
    }
    async fn head(&self) -> crate::Result<u64> {
        self.log.head().await
    }
}

/// Fresh in-memory logs.
#[derive(Debug, Default)]
pub struct MemoryBackend;

#[async_trait::async_trait]
impl Backend for MemoryBackend {
    async fn fresh(&self) -> BoxLog {
        Arc::new(crate::MemoryLog::new())
    }
}
