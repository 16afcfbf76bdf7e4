//! The conformance suite of [`Leases`]: every promise of its contract, and the sharing
//! loop [`hold`] over it, checked the same way against every backend. A backend's tests
//! invoke [`lease_conformance_suite!`](crate::lease_conformance_suite) with an expression
//! that builds a [`LeaseBackend`]; each check becomes its own test.
//!
//! The checks run with a short lease ([`TIMING`]) on the real clock, and poll for what
//! they wait for with a deadline.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::leases::{hold, LeaseTiming, Leases, Share};

/// Produces fresh lease stores of one backend.
#[async_trait::async_trait]
pub trait LeaseBackend: Send + Sync {
    /// `views` handles on one new, empty lease store with `timing`, each as a separate
    /// process would have it (its own connection and its own observations).
    async fn fresh(&self, timing: LeaseTiming, views: usize) -> Vec<Arc<dyn Leases>>;
}

/// The timing of the checks: short, so takeovers happen within a test.
pub const TIMING: LeaseTiming = LeaseTiming {
    lease: Duration::from_millis(1500),
    renew: Duration::from_millis(250),
};

/// Bound for anything the checks wait for.
const PATIENCE: Duration = Duration::from_secs(30);

fn group() -> String {
    format!("g{}", Uuid::now_v7().simple())
}

/// A free lease is taken; a held one is refused to others and re-granted to its holder.
pub async fn a_free_lease_is_taken_and_a_held_one_refused(b: &dyn LeaseBackend) {
    let v = b.fresh(TIMING, 2).await;
    let g = group();
    let lease = v[0].acquire(&g, "p0", "a").await.unwrap().expect("free");
    assert_eq!(lease.holder, "a");
    assert!(v[1].acquire(&g, "p0", "b").await.unwrap().is_none());
    let mut again = v[0].acquire(&g, "p0", "a").await.unwrap().expect("its own");
    assert!(v[0].renew(&mut again).await.unwrap());
    let live = v[1].holders(&g).await.unwrap();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(
        (live[0].name.as_str(), live[0].holder.as_str()),
        ("p0", "a")
    );
    assert!(v[0].acquire(&g, "p0", "").await.is_err(), "empty holder");
}

/// A renewed lease is never taken over, however long it is kept.
pub async fn a_renewed_lease_is_kept(b: &dyn LeaseBackend) {
    let v = b.fresh(TIMING, 2).await;
    let g = group();
    let mut lease = v[0].acquire(&g, "p0", "a").await.unwrap().unwrap();
    let end = Instant::now() + TIMING.lease * 3;
    while Instant::now() < end {
        assert!(v[0].renew(&mut lease).await.unwrap(), "renewal lost");
        assert!(
            v[1].acquire(&g, "p0", "b").await.unwrap().is_none(),
            "taken while renewed"
        );
        tokio::time::sleep(TIMING.renew).await;
    }
}

/// A lease that is no longer renewed is taken over after the lease time (never before),
/// and the old holder's renewal then says it is lost.
pub async fn an_unrenewed_lease_is_taken_over_after_the_lease_time(b: &dyn LeaseBackend) {
    let v = b.fresh(TIMING, 2).await;
    let g = group();
    let mut old = v[0].acquire(&g, "p0", "a").await.unwrap().unwrap();
    assert!(v[0].renew(&mut old).await.unwrap());
    let last_renewal = Instant::now();
    let deadline = last_renewal + PATIENCE;
    let taken = loop {
        if let Some(l) = v[1].acquire(&g, "p0", "b").await.unwrap() {
            break l;
        }
        assert!(Instant::now() < deadline, "never taken over");
        tokio::time::sleep(TIMING.renew).await;
    };
    let after = last_renewal.elapsed();
    assert!(after >= TIMING.lease, "taken over after {after:?}");
    assert!(
        after <= TIMING.lease + TIMING.renew * 4 + Duration::from_secs(2),
        "taken over only after {after:?}"
    );
    assert_eq!(taken.holder, "b");
    assert!(
        !v[0].renew(&mut old).await.unwrap(),
        "old holder still renews"
    );
    let live = v[0].holders(&g).await.unwrap();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0].holder, "b");
}

/// A released lease is free at once; releasing a lost lease changes nothing.
pub async fn a_released_lease_is_free_at_once(b: &dyn LeaseBackend) {
    let v = b.fresh(TIMING, 2).await;
    let g = group();
    let mut first = v[0].acquire(&g, "p0", "a").await.unwrap().unwrap();
    v[0].release(&first).await.unwrap();
    assert!(v[1].holders(&g).await.unwrap().is_empty());
    let second = v[1].acquire(&g, "p0", "b").await.unwrap().expect("free");
    assert!(!v[0].renew(&mut first).await.unwrap());
    v[0].release(&first).await.unwrap();
    assert!(
        v[0].acquire(&g, "p0", "a").await.unwrap().is_none(),
        "a stale release freed another holder's lease"
    );
    assert_eq!(v[0].holders(&g).await.unwrap()[0].holder, second.holder);
}

/// Of instances racing for one free lease, exactly one wins; of instances racing to take
/// over an expired one, exactly one wins and the old holder has lost it.
pub async fn racing_acquires_have_one_winner(b: &dyn LeaseBackend) {
    let v = b.fresh(TIMING, 4).await;
    let g = group();
    for round in 0..5 {
        let name = format!("p{round}");
        let tries = v.iter().enumerate().map(|(i, l)| {
            let (l, g, name) = (Arc::clone(l), g.clone(), name.clone());
            tokio::spawn(async move { l.acquire(&g, &name, &format!("h{i}")).await.unwrap() })
        });
        let won = futures::future::join_all(tries)
            .await
            .into_iter()
            .filter(|r| r.as_ref().unwrap().is_some())
            .count();
        assert_eq!(won, 1, "round {round}");
    }
    // Takeover race: every other view sees p0 expire, then all try at once.
    let mut old = v[0].acquire(&g, "x", "old").await.unwrap().unwrap();
    for l in &v[1..] {
        assert!(l.acquire(&g, "x", "probe").await.unwrap().is_none());
    }
    tokio::time::sleep(TIMING.lease + TIMING.renew).await;
    let tries = v[1..].iter().enumerate().map(|(i, l)| {
        let (l, g) = (Arc::clone(l), g.clone());
        tokio::spawn(async move { l.acquire(&g, "x", &format!("new{i}")).await.unwrap() })
    });
    let won = futures::future::join_all(tries)
        .await
        .into_iter()
        .filter(|r| r.as_ref().unwrap().is_some())
        .count();
    assert_eq!(won, 1, "takeover");
    assert!(!v[0].renew(&mut old).await.unwrap());
}

/// `holders` lists the live leases of its group only.
pub async fn holders_lists_live_leases_of_one_group(b: &dyn LeaseBackend) {
    let v = b.fresh(TIMING, 1).await;
    let (g1, g2) = (group(), group());
    let _a = v[0].acquire(&g1, "a", "h1").await.unwrap().unwrap();
    let bl = v[0].acquire(&g1, "b", "h2").await.unwrap().unwrap();
    let _c = v[0].acquire(&g2, "c", "h1").await.unwrap().unwrap();
    v[0].release(&bl).await.unwrap();
    let live = v[0].holders(&g1).await.unwrap();
    let names: Vec<_> = live.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["a"]);
}

/// Who runs which partition, as the workers of [`hold`] report it.
type Running = Arc<Mutex<BTreeMap<usize, HashSet<String>>>>;

fn start(
    leases: Arc<dyn Leases>,
    group: &str,
    holder: &str,
    partitions: usize,
    running: &Running,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let share = Share {
        leases,
        group: group.to_owned(),
        holder: holder.to_owned(),
        partitions: (0..partitions)
            .map(|i| format!("w-{i}of{partitions}"))
            .collect(),
    };
    let stop = CancellationToken::new();
    let running = Arc::clone(running);
    let holder = holder.to_owned();
    let task = tokio::spawn(hold(share, stop.clone(), move |i, stop| {
        let running = Arc::clone(&running);
        let holder = holder.clone();
        async move {
            running
                .lock()
                .unwrap()
                .entry(i)
                .or_default()
                .insert(holder.clone());
            stop.cancelled().await;
            running
                .lock()
                .unwrap()
                .entry(i)
                .or_default()
                .remove(&holder);
        }
    }));
    (stop, task)
}

async fn until(what: &str, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < PATIENCE, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

fn counts(running: &Running, holder: &str) -> usize {
    running
        .lock()
        .unwrap()
        .values()
        .filter(|h| h.contains(holder))
        .count()
}

/// Two instances of a role split four partitions evenly; one that stops gives its
/// partitions back at once; one that dies without a word loses them after the lease time;
/// every partition always ends up worked by exactly one instance.
pub async fn hold_shares_partitions_and_takes_over(b: &dyn LeaseBackend) {
    let v = b.fresh(TIMING, 3).await;
    let g = group();
    let running: Running = Arc::default();
    let each_once = |running: &Running| {
        let r = running.lock().unwrap();
        r.len() == 4 && r.values().all(|h| h.len() == 1)
    };
    let (stop_a, a) = start(Arc::clone(&v[0]), &g, "a", 4, &running);
    let (stop_b, b_task) = start(Arc::clone(&v[1]), &g, "b", 4, &running);
    until("a and b hold two each", || {
        counts(&running, "a") == 2 && counts(&running, "b") == 2 && each_once(&running)
    })
    .await;
    // A clean stop releases: a takes b's partitions well within a lease time.
    stop_b.cancel();
    b_task.await.unwrap();
    let took = until("a holds all four", || {
        counts(&running, "a") == 4 && each_once(&running)
    })
    .await;
    assert!(
        took < TIMING.lease,
        "released partitions taken after {took:?}"
    );
    // A third instance joins and gets its share back from a.
    let (_stop_c, c) = start(Arc::clone(&v[2]), &g, "c", 4, &running);
    until("a and c hold two each", || {
        counts(&running, "a") == 2 && counts(&running, "c") == 2 && each_once(&running)
    })
    .await;
    // c dies without releasing anything (its workers are left as if on a dead machine:
    // forget them); a takes its partitions over once their leases expire.
    c.abort();
    let _ = c.await;
    running.lock().unwrap().values_mut().for_each(|h| {
        h.remove("c");
    });
    let took = until("a holds all four again", || counts(&running, "a") == 4).await;
    assert!(
        took <= TIMING.lease * 2 + TIMING.renew * 4 + Duration::from_secs(2),
        "takeover after {took:?}"
    );
    stop_a.cancel();
    a.await.unwrap();
    assert_eq!(counts(&running, "a"), 0, "workers stopped with the loop");
}

/// Expands to one test per lease conformance check for the backend built by `$backend`
/// (an expression of a type implementing [`LeaseBackend`]).
#[macro_export]
macro_rules! lease_conformance_suite {
    ($backend:expr) => {
        $crate::lease_conformance_suite!(@each $backend;
            a_free_lease_is_taken_and_a_held_one_refused,
            a_renewed_lease_is_kept,
            an_unrenewed_lease_is_taken_over_after_the_lease_time,
            a_released_lease_is_free_at_once,
            racing_acquires_have_one_winner,
            holders_lists_live_leases_of_one_group,
            hold_shares_partitions_and_takes_over
        );
    };
    (@each $backend:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                $crate::lease_conformance::$check(&$backend).await;
            }
        )*
    };
}

/// Fresh in-process leases ([`MemoryLeases`](crate::leases::MemoryLeases)); the views
/// share one store.
#[derive(Debug, Default)]
pub struct MemoryLeaseBackend;

#[async_trait::async_trait]
impl LeaseBackend for MemoryLeaseBackend {
    async fn fresh(&self, timing: LeaseTiming, views: usize) -> Vec<Arc<dyn Leases>> {
        let leases = crate::leases::MemoryLeases::new(timing);
        (0..views)
            .map(|_| Arc::new(leases.clone()) as Arc<dyn Leases>)
            .collect()
    }
}
