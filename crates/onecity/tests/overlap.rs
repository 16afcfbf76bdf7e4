//! Two instances holding the same partition at once write nothing twice. The overlap is
//! forced through the lease API: each instance gets leases of its own, so both hold every
//! partition of both worker roles at the same time (the worst split brain a lease can
//! leave, far longer than a stalled holder's few seconds). The deterministic commit ids
//! and expected versions of the workers' writes must still leave exactly one assessment
//! per case and one referral per referred programme.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use onecity_assessment::Assessor;
use onecity_domain::events::{CaseEvent, CASE_CLOSED, REFERRAL_ISSUED};
use onecity_domain::Partition;
use onecity_eligibility::{Catalogue, PolicyBook};
use onecity_eventlog::leases::{hold, MemoryLeases, Share};
use onecity_eventlog::{
    Appended, Error, EventLog, EventStream, Expected, Filter, MemoryLog, NewEvent, RecordedEvent,
    Result,
};
use onecity_handoff::HandoffWorker;
use onecity_proto::v1 as pb;
use onecity_tests::{application, Routed};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The log, counting the writes it turned away because another writer got there first
/// (a repeated commit id, or an expected version that no longer holds): the evidence that
/// the two instances really raced.
#[derive(Debug)]
struct Refereed {
    inner: MemoryLog,
    turned_away: AtomicUsize,
}

#[async_trait::async_trait]
impl EventLog for Refereed {
    async fn append_as(
        &self,
        appended_by: &str,
        case_id: Uuid,
        expected: Expected,
        events: Vec<NewEvent>,
        commit_id: Uuid,
    ) -> Result<Appended> {
        let r = self
            .inner
            .append_as(appended_by, case_id, expected, events, commit_id)
            .await;
        if matches!(&r, Ok(a) if a.deduplicated) || matches!(&r, Err(Error::Conflict { .. })) {
            self.turned_away.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
    async fn read_case(
        &self,
        case_id: Uuid,
        from: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.inner.read_case(case_id, from, limit).await
    }
    async fn read_all(&self, from: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.inner.read_all(from, limit).await
    }
    async fn subscribe(&self, from: u64, filter: Filter) -> Result<EventStream> {
        self.inner.subscribe(from, filter).await
    }
    async fn subscribe_case(&self, case_id: Uuid, from: u64) -> Result<EventStream> {
        self.inner.subscribe_case(case_id, from).await
    }
    async fn save_checkpoint(&self, consumer: &str, position: u64) -> Result<()> {
        self.inner.save_checkpoint(consumer, position).await
    }
    async fn load_checkpoint(&self, consumer: &str) -> Result<u64> {
        self.inner.load_checkpoint(consumer).await
    }
    async fn head(&self) -> Result<u64> {
        self.inner.head().await
    }
}

async fn submit(log: &dyn EventLog, i: usize) -> Uuid {
    let case_id = Uuid::now_v7();
    let submitted = CaseEvent::ApplicationSubmitted(pb::ApplicationSubmitted {
        application: Some(application(i)),
        terminal_id: "T-120103-01".into(),
        street_office: "demo".into(),
        request_id: format!("overlap-{i}"),
        submitted_at: "2025-09-01T09:00:00Z".into(),
        duplicate_override_reason: String::new(),
    });
    let new = NewEvent::new(submitted.event_type(), "test", submitted.encode());
    log.append(case_id, Expected::NoStream, vec![new], Uuid::now_v7())
        .await
        .unwrap();
    case_id
}

async fn whole_log(log: &dyn EventLog) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    loop {
        let next = log.read_all(all.len() as u64 + 1, 5_000).await.unwrap();
        if next.is_empty() {
            return all;
        }
        all.extend(next);
    }
}

/// Starts one instance: both worker roles, every partition, under leases of its own.
fn instance(
    name: &str,
    log: &Arc<dyn EventLog>,
    partitions: &[Partition],
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let leases = Arc::new(MemoryLeases::default());
    let assessor = Assessor::new(
        Arc::clone(log),
        Arc::new(PolicyBook::embedded_default()),
        Arc::new(Catalogue::embedded()),
    );
    let handoff = HandoffWorker::new(Arc::clone(log), Arc::new(Catalogue::embedded()));
    let share = |group: &str, names: Vec<String>| Share {
        leases: leases.clone(),
        group: group.to_owned(),
        holder: name.to_owned(),
        partitions: names,
    };
    let parts = partitions.to_vec();
    let assess = hold(
        share(
            onecity_assessment::CONSUMER,
            partitions.iter().map(Assessor::consumer_name).collect(),
        ),
        stop.clone(),
        move |i, stop| assessor.clone().with_partition(parts[i]).run(stop),
    );
    let parts = partitions.to_vec();
    let hand_off = hold(
        share(
            onecity_handoff::CONSUMER,
            partitions
                .iter()
                .map(HandoffWorker::consumer_name)
                .collect(),
        ),
        stop.clone(),
        move |i, stop| handoff.clone().with_partition(parts[i]).run(stop),
    );
    vec![tokio::spawn(assess), tokio::spawn(hand_off)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_holding_one_partition_write_nothing_twice() {
    let refereed = Arc::new(Refereed {
        inner: MemoryLog::new(),
        turned_away: AtomicUsize::new(0),
    });
    let log: Arc<dyn EventLog> = refereed.clone();
    let partitions = [Partition::new(0, 2).unwrap(), Partition::new(1, 2).unwrap()];
    // A backlog both instances catch up on at once, then cases arriving while they run.
    let mut cases = Vec::new();
    for i in 0..100 {
        cases.push(submit(log.as_ref(), i).await);
    }
    let stop = CancellationToken::new();
    let mut tasks = instance("a", &log, &partitions, &stop);
    tasks.extend(instance("b", &log, &partitions, &stop));
    for i in 100..200 {
        cases.push(submit(log.as_ref(), i).await);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let events = loop {
        let events = whole_log(log.as_ref()).await;
        let handed_off: std::collections::HashSet<Uuid> = events
            .iter()
            .filter(|e| e.event_type == REFERRAL_ISSUED || e.event_type == CASE_CLOSED)
            .map(|e| e.case_id)
            .collect();
        if cases.iter().all(|c| handed_off.contains(c)) {
            break events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} cases never handed off",
            cases.len() - handed_off.len(),
            cases.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    let mut routed = Routed::default();
    for e in &events {
        routed.add(&e.case_id.to_string(), &e.event_type, &e.payload);
    }
    assert_eq!(routed.assessed.len(), cases.len(), "every case assessed");
    assert!(
        routed.assessed.values().all(|n| *n == 1),
        "a case assessed twice"
    );
    assert_eq!(
        routed.referred, routed.expected,
        "exactly one referral per referred programme, nothing else"
    );
    assert!(
        refereed.turned_away.load(Ordering::Relaxed) > 0,
        "the two instances never raced: the test proves nothing"
    );
}
