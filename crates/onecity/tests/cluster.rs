//! The scale-out cluster test: `deploy/local/cluster.sh` starts three nats-server nodes
//! (streams at R3) and two intake, two eligibility and two handoff processes. Concurrent
//! clients submit applications while one NATS node and one process of each role are
//! killed with SIGKILL and restarted. At the end every acknowledged application has
//! exactly one assessment and exactly one referral per referred programme, and nothing
//! else.
//!
//! The normal suite submits 300 applications; the full run is
//! `ONECITY_CLUSTER_CASES=3000 cargo test -p onecity --test cluster -- --nocapture`.
//! `ONECITY_CLUSTER_REPEAT=N` runs the scenario N times, each on a fresh cluster, and
//! stops at the first failure. A failed run prints a report (processes, consumer
//! checkpoints against the log's head, stuck cases per step and partition, the NATS
//! nodes' view, every process's log tail) and keeps the logs under
//! `$ONECITY_CLUSTER_KEEP` (default `<target>/tmp/cluster-failures`), because the
//! cluster's own directory is deleted with it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use onecity_domain::events::{
    APPLICATION_SUBMITTED, CASE_CLOSED, ELIGIBILITY_ASSESSED, REFERRAL_ISSUED,
};
use onecity_domain::Partition;
use onecity_eventlog::leases::{LeaseTiming, Leases, MEMBER_PREFIX};
use onecity_eventlog::{EventLog, Filter, RecordedEvent};
use onecity_eventlog_jetstream::{JetStreamConfig, JetStreamLog};
use onecity_proto::v1 as pb;
use onecity_tests::{application, read_whole, tokens, Routed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tonic::transport::Channel;
use uuid::Uuid;

/// How long the chaos waits for enough acknowledgements, and the hand-off wait.
const DEADLINE: Duration = Duration::from_secs(300);
/// How often the hand-off wait checks the log by reading, besides its subscription.
const POLL_EVERY: Duration = Duration::from_secs(15);
/// The workers' consumers, partitioned as cluster.sh starts them.
const CONSUMERS: [(&str, u32); 4] = [
    ("assessment", 0),
    ("assessment", 1),
    ("handoff", 0),
    ("handoff", 1),
];
const PARTITIONS: u32 = 2;
const TAIL_LINES: usize = 40;
/// Log lines worth counting in a failure report.
const NOTABLE: [&str; 7] = [
    "consumer restarting",
    "subscription retrying",
    "recreating",
    "routing is behind",
    "panicked",
    "ERROR",
    "WARN",
];

struct Cluster {
    script: PathBuf,
    dir: tempfile::TempDir,
    base: u16,
}

impl Cluster {
    /// A cluster of its own per run: a fresh directory and a port range per process and
    /// run, so parallel test binaries, leftovers and the previous run do not collide. The
    /// ranges stay below the kernel's ephemeral ports (32768 and up on Linux): any outgoing
    /// connection of the machine may hold one of those, and a node that cannot bind its port
    /// fails the whole start (seen in a loop run: `nats-2` could not bind its monitor port).
    fn new(run: usize) -> Self {
        let slot = (std::process::id() as usize + run) % 220;
        Cluster {
            script: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local/cluster.sh"),
            dir: tempfile::tempdir().unwrap(),
            base: 10_000 + slot as u16 * 100,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("bash");
        c.arg(&self.script)
            .args(args)
            .env("ONECITY_LOCAL_DIR", self.dir.path())
            .env("ONECITY_LOCAL_BASE_PORT", self.base.to_string())
            .env("ONECITY_BIN", env!("CARGO_BIN_EXE_onecity"));
        // The log backend's retries and recreated consumers are debug lines: a failure
        // report needs them.
        if std::env::var_os("ONECITY_LOG_LEVEL").is_none() {
            c.env(
                "ONECITY_LOG_LEVEL",
                "info,onecity_eventlog=debug,onecity_eventlog_jetstream=debug",
            );
        }
        c
    }

    /// Runs cluster.sh, without panicking: the failure report uses it too.
    fn try_run(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .command(args)
            .output()
            .map_err(|e| format!("run cluster.sh: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "cluster.sh {args:?} failed: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn run(&self, args: &[&str]) -> String {
        self.try_run(args).unwrap_or_else(|e| panic!("{e}"))
    }

    fn url(&self, offset: u16) -> String {
        format!("http://127.0.0.1:{}", self.base + offset)
    }

    /// The servers, with the credentials cluster.sh made for its NATS `authorization`.
    fn nats(&self) -> String {
        let password = std::fs::read_to_string(self.dir.path().join("nats.password"))
            .expect("cluster.sh writes the nats password");
        let password = password.trim();
        (1..=3)
            .map(|i| format!("nats://onecity:{password}@127.0.0.1:{}", self.base + i))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    fn stop(&self) {
        let _ = self.command(&["stop"]).status();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a run has seen so far: the failure report's view of the scenario.
struct Progress {
    started: Instant,
    phase: &'static str,
    timeline: Vec<String>,
    acked: BTreeMap<usize, String>,
    /// The hand-off wait's own subscription, once it runs.
    sub: Option<Follower>,
}

/// The test's own subscription: what it delivered, and when it last did.
struct Follower {
    last_position: u64,
    received: u64,
    last_at: Instant,
    /// Checks by reading: (seconds into the run, head, subscription's position, cases
    /// found handed off that the subscription had not delivered).
    polls: Vec<(f64, Option<u64>, u64, usize)>,
    stalled: Option<String>,
}

/// One run of the scenario, shared by its body and the failure report.
struct Run {
    number: usize,
    of: usize,
    cluster: Cluster,
    progress: Mutex<Progress>,
}

impl Run {
    fn progress(&self) -> MutexGuard<'_, Progress> {
        // A panic elsewhere must not hide the progress from the failure report.
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn elapsed(&self) -> f64 {
        self.progress().started.elapsed().as_secs_f64()
    }

    fn phase(&self, phase: &'static str) {
        let mut p = self.progress();
        let t = p.started.elapsed().as_secs_f64();
        p.phase = phase;
        p.timeline.push(format!("{t:.1} s {phase}"));
    }

    fn note(&self, what: String) {
        let mut p = self.progress();
        let t = p.started.elapsed().as_secs_f64();
        p.timeline.push(format!("{t:.1} s {what}"));
    }

    fn acked(&self) -> BTreeMap<usize, String> {
        self.progress().acked.clone()
    }
}

/// Submits application `i` through either intake, retrying the same request id (on the
/// other intake too) while a process or node is down, as a terminal would: the request
/// id makes that safe. Gives up only after a generous deadline.
async fn submit(channels: &[Channel], i: usize) -> Option<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut attempt = 0;
    while tokio::time::Instant::now() < deadline {
        let ch = channels[(i + attempt) % channels.len()].clone();
        attempt += 1;
        let mut c = onecity_tests::intake(ch, tokens::TERMINAL);
        let req = pb::SubmitApplicationRequest {
            request_id: format!("cluster-{i}"),
            application: Some(application(i)),
            duplicate_override_reason: String::new(),
        };
        match tokio::time::timeout(Duration::from_secs(15), c.submit_application(req)).await {
            Ok(Ok(r)) => return Some(r.into_inner().case_id),
            // A terminal's retry back-off, not a wait for some state.
            Ok(Err(_)) | Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    None
}

fn nats_available() {
    let found = Command::new("nats-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "nats-server is not on PATH: install it with `apt-get install nats-server` (2.9 or newer)"
    );
}

fn handed_off(event_type: &str) -> bool {
    event_type == REFERRAL_ISSUED || event_type == CASE_CLOSED
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_survives_node_and_worker_kills_exactly_once() {
    repeat_runs(0, scenario).await;
}

/// One eligibility and one handoff instance are killed and stay dead: the surviving
/// instances take their partitions over through the leases, every acknowledged case is
/// still assessed and handed off exactly once, and the time from the kill until each
/// partition routes again is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_takes_over_the_partitions_of_dead_workers() {
    repeat_runs(200, |run, _| takeover(run)).await;
}

/// The two cluster tests share the machine's two cores: one cluster at a time.
static ONE_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `scenario` `ONECITY_CLUSTER_REPEAT` times (default once), each on a fresh
/// cluster (port slots from `slot`), and stops at the first failure with the report.
async fn repeat_runs<F, Fut>(slot: usize, scenario: F)
where
    F: Fn(Arc<Run>, usize) -> Fut,
    Fut: std::future::Future<Output = String> + Send + 'static,
{
    nats_available();
    let _one = ONE_CLUSTER.lock().await;
    let cases: usize = std::env::var("ONECITY_CLUSTER_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let repeat: usize = std::env::var("ONECITY_CLUSTER_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    for number in 1..=repeat {
        let run = Arc::new(Run {
            number,
            of: repeat,
            cluster: Cluster::new(slot + number),
            progress: Mutex::new(Progress {
                started: Instant::now(),
                phase: "starting",
                timeline: Vec::new(),
                acked: BTreeMap::new(),
                sub: None,
            }),
        });
        // The body runs as a task so that its panic (a deadline, an assertion) comes
        // back here while the cluster still runs, and can be diagnosed.
        match tokio::spawn(scenario(Arc::clone(&run), cases)).await {
            Ok(summary) => eprintln!(
                "cluster run {number}/{repeat}: ok in {:.1} s: {summary}",
                run.elapsed()
            ),
            Err(e) => {
                let Ok(panic) = e.try_into_panic() else {
                    panic!("cluster run {number}/{repeat}: the scenario was cancelled");
                };
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                eprintln!(
                    "cluster run {number}/{repeat}: FAILED after {:.1} s",
                    run.elapsed()
                );
                eprintln!("{}", diagnose(&run, message).await);
                run.cluster.stop();
                std::panic::resume_unwind(panic);
            }
        }
    }
}

fn intake_channels(cluster: &Cluster) -> Vec<Channel> {
    [30, 31]
        .iter()
        .map(|o| {
            Channel::from_shared(cluster.url(*o))
                .unwrap()
                .connect_lazy()
        })
        .collect()
}

async fn connect_log(cluster: &Cluster) -> JetStreamLog {
    JetStreamLog::connect(JetStreamConfig {
        url: cluster.nats(),
        replicas: 3,
        ..JetStreamConfig::default()
    })
    .await
    .expect("connect to the cluster's log")
}

/// Waits until `n` submissions are acknowledged.
async fn wait_for_acks(run: &Run, n: usize) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let acked = run.progress().acked.len();
        if acked >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {acked} of the {n} acknowledgements the scenario waits for within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The takeover scenario (see [`cluster_takes_over_the_partitions_of_dead_workers`]).
async fn takeover(run: Arc<Run>) -> String {
    let cluster = &run.cluster;
    cluster.run(&["start"]);
    let log = connect_log(cluster).await;
    let leases = log
        .leases(LeaseTiming::default())
        .await
        .expect("the lease bucket");
    run.phase("waiting for the partitions to be shared");
    // Each role's two instances settle on one partition each (the fair share).
    let deadline = Instant::now() + DEADLINE;
    for group in ["assessment", "handoff"] {
        loop {
            let holders: BTreeSet<String> = leases
                .holders(group)
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|h| !h.name.starts_with(MEMBER_PREFIX))
                .map(|h| h.holder)
                .collect();
            if holders.len() == 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the {group} instances never shared the partitions: {holders:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    run.phase("submitting");
    let channels = intake_channels(cluster);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = JoinSet::new();
    for _ in 0..8 {
        let (channels, run, next, done) = (
            channels.clone(),
            Arc::clone(&run),
            Arc::clone(&next),
            Arc::clone(&done),
        );
        clients.spawn(async move {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(case_id) = submit(&channels, i).await {
                    run.progress().acked.insert(i, case_id);
                }
            }
        });
    }
    wait_for_acks(&run, 50).await;
    run.phase("killing for good");
    let head = log.head().await.expect("head before the kill");
    for victim in ["eligibility-0", "handoff-1"] {
        cluster.run(&["kill", victim]);
        run.note(format!("killed {victim}, not restarted"));
    }
    let killed = Instant::now();
    // From the kill on: when each step first acts again on a case of each partition (only
    // events after the head at the kill count, so none of the dead instances' own).
    run.phase("waiting for every partition to route again");
    let mut sub = log
        .subscribe(
            head + 1,
            Filter::prefixes([ELIGIBILITY_ASSESSED, REFERRAL_ISSUED, CASE_CLOSED]),
        )
        .await
        .expect("subscribe");
    let mut resumed: BTreeMap<(&str, u32), f64> = BTreeMap::new();
    let wait = timeout(DEADLINE, async {
        while resumed.len() < 4 {
            let e = sub
                .next()
                .await
                .expect("the test's subscription ended")
                .expect("the test's subscription failed");
            let step = if e.event_type == ELIGIBILITY_ASSESSED {
                "assessment"
            } else {
                "handoff"
            };
            resumed
                .entry((step, partition_of(&e.case_id)))
                .or_insert_with(|| killed.elapsed().as_secs_f64());
        }
    })
    .await;
    assert!(
        wait.is_ok(),
        "not every partition routed again within {DEADLINE:?} of the kill: {resumed:?}"
    );
    for ((step, p), t) in &resumed {
        run.note(format!(
            "{step} partition {p} routing {t:.1} s after the kill"
        ));
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    run.phase("submitting the last requests");
    while let Some(c) = clients.join_next().await {
        c.unwrap();
    }
    let acked = run.acked();
    let checked = check_exactly_once(&run, &log, &acked).await;
    let takeover = |step: &str| {
        resumed
            .iter()
            .filter(|((s, _), _)| *s == step)
            .map(|(_, t)| *t)
            .fold(0.0_f64, f64::max)
    };
    let report = format!(
        "takeover (SIGKILL to every partition routing again): assessment {:.1} s, handoff {:.1} s \
         (per partition: {}); {checked}",
        takeover("assessment"),
        takeover("handoff"),
        resumed
            .iter()
            .map(|((s, p), t)| format!("{s} {p}: {t:.1} s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    log.shutdown();
    report
}

/// One run: start, submit with chaos, wait for every hand-off, check exactly once.
/// Returns a one-line summary.
async fn scenario(run: Arc<Run>, cases: usize) -> String {
    let cluster = &run.cluster;
    cluster.run(&["start"]);
    run.phase("submitting");
    let channels = intake_channels(cluster);

    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // A JoinSet: a failed run aborts its clients when it unwinds.
    let mut clients = JoinSet::new();
    for _ in 0..16 {
        let channels = channels.clone();
        let run = Arc::clone(&run);
        let next = Arc::clone(&next);
        clients.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= cases {
                    return;
                }
                if let Some(case_id) = submit(&channels, i).await {
                    run.progress().acked.insert(i, case_id);
                }
            }
        });
    }

    // Chaos while the clients run: one NATS node and one process of each role.
    let victims = ["nats-2", "eligibility-0", "handoff-1", "intake-1"];
    wait_for_acks(&run, cases / 5).await;
    run.phase("killing");
    for victim in victims {
        cluster.run(&["kill", victim]);
        run.note(format!("killed {victim}"));
    }
    wait_for_acks(&run, cases / 2).await;
    run.phase("restarting");
    for victim in victims {
        cluster.run(&["restart", victim]);
        run.note(format!("restarted {victim}"));
    }
    run.phase("submitting the rest");
    while let Some(c) = clients.join_next().await {
        c.unwrap();
    }
    let acked = run.acked();
    assert!(
        acked.len() * 10 >= cases * 9,
        "too few submissions acknowledged: {} of {cases}",
        acked.len()
    );

    run.phase("waiting for hand-off");
    let log = connect_log(cluster).await;
    check_exactly_once(&run, &log, &acked).await
}

/// Waits until every acknowledged case is handed off, then reads the whole log and checks
/// that each was submitted, assessed and referred exactly once. Returns a summary.
async fn check_exactly_once(
    run: &Run,
    log: &JetStreamLog,
    acked: &BTreeMap<usize, String>,
) -> String {
    run.phase("waiting for hand-off");
    follow_hand_off(run, log, acked).await;

    run.phase("reading the whole log");
    let events = timeout(
        DEADLINE,
        read_whole(|from| async move { log.read_all(from, 5_000).await.unwrap() }),
    )
    .await
    .expect("reading the whole log timed out");
    run.phase("checking exactly once");
    let mut routed = Routed::default();
    for e in &events {
        routed.add(&e.case_id.to_string(), &e.event_type, &e.payload);
    }
    let Routed {
        submitted,
        assessed,
        referred,
        expected,
    } = routed;
    for case in acked.values() {
        assert_eq!(
            submitted.get(case),
            Some(&1),
            "acknowledged case {case} submitted once"
        );
        assert_eq!(
            assessed.get(case),
            Some(&1),
            "acknowledged case {case} assessed once"
        );
    }
    // Requests retried on the other intake reuse their request id: no extra cases.
    assert_eq!(
        submitted.len(),
        acked.len(),
        "a submission created a second case"
    );
    assert!(assessed.values().all(|n| *n == 1));
    assert_eq!(
        referred, expected,
        "exactly one referral per referred programme, nothing else"
    );
    let stalled = run
        .progress()
        .sub
        .as_ref()
        .and_then(|f| f.stalled.clone())
        .map(|s| format!("; WARNING: {s}"))
        .unwrap_or_default();
    format!(
        "{} cases, {} events, {} referrals{stalled}",
        acked.len(),
        events.len(),
        referred.len()
    )
}

/// Waits until every acknowledged case is handed off (has a referral or its closing
/// event). It follows the log with a subscription and, every [`POLL_EVERY`], also reads
/// the waiting cases directly: a subscription that stops delivering is the suspected
/// failure, and the test's own must not pass for stalled workers (nor hide them).
async fn follow_hand_off(run: &Run, log: &JetStreamLog, acked: &BTreeMap<usize, String>) {
    let mut waiting: BTreeSet<String> = acked.values().cloned().collect();
    let mut sub = log.subscribe(1, Filter::all()).await.unwrap();
    run.progress().sub = Some(Follower {
        last_position: 0,
        received: 0,
        last_at: Instant::now(),
        polls: Vec::new(),
        stalled: None,
    });
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + POLL_EVERY, POLL_EVERY);
    while !waiting.is_empty() {
        tokio::select! {
            e = sub.next() => {
                let e = e
                    .expect("the test's subscription ended")
                    .expect("the test's subscription failed");
                if let Some(f) = run.progress().sub.as_mut() {
                    f.last_position = e.position;
                    f.received += 1;
                    f.last_at = Instant::now();
                }
                if handed_off(&e.event_type) {
                    waiting.remove(&e.case_id.to_string());
                }
            }
            _ = poll.tick() => {
                let head = timeout(Duration::from_secs(10), log.head()).await.ok().and_then(Result::ok);
                let found = read_handed_off(log, &waiting).await;
                for id in &found {
                    waiting.remove(id);
                }
                let t = run.elapsed();
                let mut p = run.progress();
                let f = p.sub.as_mut().expect("the follower is set before the wait");
                let previous = f.polls.last().map(|x| x.2);
                f.polls.push((t, head, f.last_position, found.len()));
                // Behind the head and not moving since the last check: stalled, not slow.
                if f.stalled.is_none()
                    && previous == Some(f.last_position)
                    && head.is_some_and(|h| h > f.last_position)
                {
                    let s = format!(
                        "the test's subscription stalled at position {} while the head was {} \
                         ({:.1} s into the run); the wait went on by reading the cases",
                        f.last_position,
                        head.unwrap_or_default(),
                        t
                    );
                    eprintln!("cluster run {}/{}: {s}", run.number, run.of);
                    f.stalled = Some(s);
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                panic!(
                    "{} of {} acknowledged cases never handed off within {DEADLINE:?}",
                    waiting.len(),
                    acked.len()
                );
            }
        }
    }
}

/// The cases among `ids` that the log shows handed off, read case by case (gets on the
/// stream, no consumer). Bounded: a check that cannot finish finds nothing.
async fn read_handed_off(log: &JetStreamLog, ids: &BTreeSet<String>) -> Vec<String> {
    let reads = futures::stream::iter(ids.iter().cloned())
        .map(|id| async move {
            let uuid = Uuid::parse_str(&id).ok()?;
            let events = log.read_case_all(uuid).await.ok()?;
            events
                .iter()
                .any(|e| handed_off(&e.event_type))
                .then_some(id)
        })
        .buffer_unordered(16)
        .filter_map(|x| async move { x })
        .collect::<Vec<_>>();
    timeout(Duration::from_secs(60), reads)
        .await
        .unwrap_or_default()
}

/// Where a case is in routing, with the positions of its steps.
#[derive(Default, Clone, Copy)]
struct Steps {
    submitted: Option<u64>,
    assessed: Option<u64>,
    handed_off: Option<u64>,
}

impl Steps {
    fn add(&mut self, e: &RecordedEvent) {
        let slot = match e.event_type.as_str() {
            APPLICATION_SUBMITTED => &mut self.submitted,
            ELIGIBILITY_ASSESSED => &mut self.assessed,
            t if handed_off(t) => &mut self.handed_off,
            _ => return,
        };
        slot.get_or_insert(e.position);
    }
}

fn partition_of(case_id: &Uuid) -> u32 {
    (0..PARTITIONS)
        .find(|i| {
            Partition::new(*i, PARTITIONS)
                .unwrap()
                .owns(case_id.as_bytes())
        })
        .unwrap()
}

/// Every case's steps: from the whole log, or, if reading it does not finish (it uses a
/// consumer, the suspect), from the acknowledged cases read one by one.
async fn case_steps(
    log: &JetStreamLog,
    acked: &BTreeMap<usize, String>,
) -> (String, BTreeMap<Uuid, Steps>) {
    let mut steps: BTreeMap<Uuid, Steps> = BTreeMap::new();
    let whole = timeout(
        Duration::from_secs(90),
        read_whole(|from| async move { log.read_all(from, 5_000).await.unwrap_or_default() }),
    )
    .await;
    if let Ok(events) = whole {
        for e in &events {
            steps.entry(e.case_id).or_default().add(e);
        }
        return (format!("the whole log ({} events)", events.len()), steps);
    }
    let reads = futures::stream::iter(acked.values().filter_map(|id| Uuid::parse_str(id).ok()))
        .map(|id| async move { (id, log.read_case_all(id).await) })
        .buffer_unordered(16)
        .collect::<Vec<_>>();
    let mut failed = 0;
    for (id, r) in timeout(Duration::from_secs(90), reads)
        .await
        .unwrap_or_default()
    {
        match r {
            Ok(events) => events
                .iter()
                .for_each(|e| steps.entry(id).or_default().add(e)),
            Err(_) => failed += 1,
        }
    }
    let source = format!(
        "the acknowledged cases read one by one, because reading the whole log did not finish \
         within 90 s ({failed} reads failed)"
    );
    (source, steps)
}

/// The failure report: everything needed to find the cause without a rerun. Runs while
/// the cluster is still up; every step is bounded, so a stalled log cannot hang it.
async fn diagnose(run: &Run, message: &str) -> String {
    let cluster = &run.cluster;
    let (phase, timeline, acked, follower) = {
        let p = run.progress();
        let follower = p.sub.as_ref().map(|f| {
            let polls: Vec<String> = f
                .polls
                .iter()
                .map(|(t, head, at, found)| {
                    let head = head.map_or("?".into(), |h| h.to_string());
                    format!("{t:.1} s: head {head}, subscription at {at}, {found} found by reading")
                })
                .collect();
            format!(
                "last position {}, {} events received, the last {:.1} s ago; checks by reading \
                 the waiting cases: [{}]{}",
                f.last_position,
                f.received,
                f.last_at.elapsed().as_secs_f64(),
                polls.join("; "),
                f.stalled
                    .as_ref()
                    .map(|s| format!("\n  {s}"))
                    .unwrap_or_default()
            )
        });
        (p.phase, p.timeline.clone(), p.acked.clone(), follower)
    };
    let mut r = String::new();
    let _ = writeln!(
        r,
        "==== cluster run {}/{} failed after {:.1} s, while {phase} ====\npanic: {message}",
        run.number,
        run.of,
        run.elapsed()
    );
    let _ = writeln!(r, "timeline: {}", timeline.join("; "));
    let _ = writeln!(r, "-- processes (cluster.sh status)");
    match cluster.try_run(&["status"]) {
        Ok(s) => r.push_str(&s),
        Err(e) => r.push_str(&e),
    }
    let _ = writeln!(
        r,
        "-- the test's subscription: {}",
        follower.unwrap_or_else(|| "not started".into())
    );

    let connect = JetStreamLog::connect(JetStreamConfig {
        url: cluster.nats(),
        replicas: 3,
        ..JetStreamConfig::default()
    });
    match timeout(Duration::from_secs(30), connect).await {
        Ok(Ok(log)) => {
            diagnose_log(&mut r, &log, &acked).await;
            diagnose_leases(&mut r, &log).await;
            log.shutdown();
        }
        Ok(Err(e)) => {
            let _ = writeln!(r, "-- the log: cannot connect: {e}");
        }
        Err(_) => {
            let _ = writeln!(r, "-- the log: connecting timed out after 30 s");
        }
    }

    let mut jsz = Vec::new();
    let _ = writeln!(r, "-- nats nodes (monitor /jsz)");
    for node in 1..=3u16 {
        let raw = monitor_jsz(cluster.base + 20 + node).await;
        let _ = writeln!(r, "{}", summarize_jsz(node, &raw));
        jsz.push((node, raw));
    }

    let _ = writeln!(r, "-- log tails (last {TAIL_LINES} lines of each process)");
    let mut files: Vec<PathBuf> = std::fs::read_dir(cluster.logs())
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let counts: Vec<String> = NOTABLE
            .iter()
            .map(|n| (n, lines.iter().filter(|l| l.contains(n)).count()))
            .filter(|(_, c)| *c > 0)
            .map(|(n, c)| format!("{c}× {n:?}"))
            .collect();
        let _ = writeln!(
            r,
            "--- {} ({} lines{}{})",
            f.file_name().unwrap_or_default().to_string_lossy(),
            lines.len(),
            if counts.is_empty() { "" } else { "; " },
            counts.join(", ")
        );
        for l in &lines[lines.len().saturating_sub(TAIL_LINES)..] {
            let _ = writeln!(r, "{l}");
        }
    }

    match keep(cluster, &r, &jsz) {
        Ok(dir) => {
            let _ = writeln!(
                r,
                "==== logs, /jsz and this report kept in {}",
                dir.display()
            );
        }
        Err(e) => {
            let _ = writeln!(r, "==== keeping the logs failed: {e}");
        }
    }
    r
}

/// Who holds which partition (the report's own observation: a record it sees for the first
/// time counts as live).
async fn diagnose_leases(r: &mut String, log: &JetStreamLog) {
    let _ = writeln!(r, "-- partition leases");
    let leases = match timeout(Duration::from_secs(10), log.leases(LeaseTiming::default())).await {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            let _ = writeln!(r, "  unreadable: {e}");
            return;
        }
        Err(_) => {
            let _ = writeln!(r, "  unreadable: timed out");
            return;
        }
    };
    for group in ["assessment", "handoff"] {
        match timeout(Duration::from_secs(10), leases.holders(group)).await {
            Ok(Ok(h)) => {
                let shown: Vec<String> = h
                    .iter()
                    .map(|h| format!("{} by {}", h.name, h.holder))
                    .collect();
                let _ = writeln!(r, "  {group}: {}", shown.join(", "));
            }
            Ok(Err(e)) => {
                let _ = writeln!(r, "  {group}: unreadable: {e}");
            }
            Err(_) => {
                let _ = writeln!(r, "  {group}: timed out");
            }
        }
    }
}

/// The log's part of the report: head, stuck cases per step and partition, and each
/// worker consumer's checkpoint against them.
async fn diagnose_log(r: &mut String, log: &JetStreamLog, acked: &BTreeMap<usize, String>) {
    let head = match timeout(Duration::from_secs(10), log.head()).await {
        Ok(Ok(h)) => h.to_string(),
        Ok(Err(e)) => format!("unknown ({e})"),
        Err(_) => "unknown (timed out)".into(),
    };
    let _ = writeln!(r, "-- the log: head at position {head}");
    let (source, steps) = case_steps(log, acked).await;
    let acked_ids: BTreeSet<Uuid> = acked
        .values()
        .filter_map(|id| Uuid::parse_str(id).ok())
        .collect();
    let missing: Vec<&Uuid> = acked_ids
        .iter()
        .filter(|id| steps.get(id).is_none_or(|s| s.submitted.is_none()))
        .collect();
    let count = |f: fn(&Steps) -> bool| steps.values().filter(|s| f(s)).count();
    let _ = writeln!(
        r,
        "-- cases, from {source}: {} acknowledged, {} submitted, {} assessed, {} handed off; \
         acknowledged but not in the log: {} {:?}",
        acked.len(),
        count(|s| s.submitted.is_some()),
        count(|s| s.assessed.is_some()),
        count(|s| s.handed_off.is_some()),
        missing.len(),
        missing.iter().take(20).collect::<Vec<_>>()
    );
    // Stuck per (consumer, partition): the cases, and the lowest position of the event
    // the consumer should have acted on.
    let mut stuck: BTreeMap<(&str, u32), (u64, Vec<Uuid>)> = BTreeMap::new();
    for (id, s) in &steps {
        let (consumer, at) = match (s.submitted, s.assessed, s.handed_off) {
            (Some(at), None, _) => ("assessment", at),
            (_, Some(at), None) => ("handoff", at),
            _ => continue,
        };
        let e = stuck
            .entry((consumer, partition_of(id)))
            .or_insert((u64::MAX, Vec::new()));
        e.0 = e.0.min(at);
        e.1.push(*id);
    }
    let _ = writeln!(
        r,
        "-- consumers (stuck: submitted but not assessed for assessment, assessed but not \
         handed off for handoff)"
    );
    for (consumer, p) in CONSUMERS {
        let name = format!(
            "{consumer}{}",
            Partition::new(p, PARTITIONS).unwrap().consumer_suffix()
        );
        let checkpoint = match timeout(Duration::from_secs(10), log.load_checkpoint(&name)).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_owned()),
        };
        let shown = match &checkpoint {
            Ok(c) => c.to_string(),
            Err(e) => format!("unreadable ({e})"),
        };
        let line = match (stuck.get(&(consumer, p)), checkpoint) {
            (None, _) => format!("checkpoint {shown}, no case stuck"),
            (Some((lowest, ids)), c) => {
                let verdict = match c {
                    Ok(c) if c < *lowest => {
                        "below it: the worker has not got there (stalled or slow)"
                    }
                    Ok(_) => "at or past it: the worker went past without acting",
                    Err(_) => "no verdict",
                };
                format!(
                    "checkpoint {shown}, {} cases stuck, the lowest at position {lowest}: \
                     {verdict}; {:?}",
                    ids.len(),
                    ids.iter().take(20).collect::<Vec<_>>()
                )
            }
        };
        let _ = writeln!(r, "  {name}: {line}");
    }
}

/// A node's `/jsz` with stream and consumer details, or why there is none.
async fn monitor_jsz(port: u16) -> String {
    let get = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(
            b"GET /jsz?accounts=true&streams=true&consumers=true HTTP/1.0\r\nHost: localhost\r\n\r\n",
        )
        .await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        std::io::Result::Ok(String::from_utf8_lossy(&out).into_owned())
    };
    match timeout(Duration::from_secs(5), get).await {
        Ok(Ok(reply)) => reply
            .split_once("\r\n\r\n")
            .map_or(reply.clone(), |(_, body)| body.to_owned()),
        Ok(Err(e)) => format!("no answer: {e}"),
        Err(_) => "no answer within 5 s".into(),
    }
}

/// One line per stream and per consumer as this node sees them: whether its replica is
/// current, and where each consumer it hosts is.
fn summarize_jsz(node: u16, raw: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(raw) else {
        return format!(
            "  nats-{node}: {}",
            raw.chars().take(200).collect::<String>()
        );
    };
    let mut out = format!(
        "  nats-{node}: meta leader {}",
        v["meta_cluster"]["leader"].as_str().unwrap_or("?")
    );
    let streams = v["account_details"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten());
    for s in streams {
        let replicas: Vec<String> = s["cluster"]["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                format!(
                    "{} current={} lag={}",
                    p["name"].as_str().unwrap_or("?"),
                    p["current"],
                    p["lag"].as_u64().unwrap_or(0)
                )
            })
            .collect();
        let leader = s["cluster"]["leader"].as_str().unwrap_or("?");
        // Only the leader tracks its peers: another node's view of them is stale.
        let peers = if leader == format!("n{node}") {
            format!("leads; replicas [{}]", replicas.join(", "))
        } else {
            format!("leader {leader}")
        };
        let _ = write!(
            out,
            "\n    stream {}: last_seq {}, messages {}, {peers}",
            s["name"].as_str().unwrap_or("?"),
            s["state"]["last_seq"],
            s["state"]["messages"],
        );
        for c in s["consumer_detail"].as_array().into_iter().flatten() {
            let _ = write!(
                out,
                "\n      consumer {}: delivered stream_seq {}, ack_floor stream_seq {}, \
                 num_pending {}, waiting {}, leader {}",
                c["name"].as_str().unwrap_or("?"),
                c["delivered"]["stream_seq"],
                c["ack_floor"]["stream_seq"],
                c["num_pending"],
                c["num_waiting"],
                c["cluster"]["leader"].as_str().unwrap_or("?")
            );
        }
    }
    out
}

/// Copies the processes' logs, the nodes' `/jsz` and the report out of the cluster's
/// directory (deleted with it) and returns where they went.
fn keep(cluster: &Cluster, report: &str, jsz: &[(u16, String)]) -> std::io::Result<PathBuf> {
    let parent = std::env::var_os("ONECITY_CLUSTER_KEEP")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("cluster-failures"));
    let dir = parent.join(format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    for entry in std::fs::read_dir(cluster.logs())? {
        let path = entry?.path();
        if let Some(name) = path.file_name() {
            std::fs::copy(&path, dir.join(name))?;
        }
    }
    for (node, raw) in jsz {
        std::fs::write(dir.join(format!("jsz-nats-{node}.json")), raw)?;
    }
    std::fs::write(dir.join("report.txt"), report)?;
    Ok(dir)
}
