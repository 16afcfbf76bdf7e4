//! The scale-out cluster test: `deploy/local/cluster.sh` starts three nats-server nodes
//! (streams at R3) and two intake, two eligibility and two handoff processes. Concurrent
//! clients submit applications while one NATS node and one process of each role are
//! killed with SIGKILL and restarted. At the end every acknowledged application has
//! exactly one assessment and exactly one referral per referred programme, and nothing
//! else.
//!
//! The normal suite submits 300 applications; the full run is
//! `ONECITY_CLUSTER_CASES=3000 cargo test -p onecity --test cluster -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use onecity_domain::events::{CaseEvent, CASE_CLOSED, REFERRAL_ISSUED};
use onecity_eventlog::{EventLog, Filter};
use onecity_eventlog_jetstream::{JetStreamConfig, JetStreamLog};
use onecity_proto::v1 as pb;
use tokio::sync::Mutex;
use tonic::transport::Channel;

struct Cluster {
    script: PathBuf,
    dir: tempfile::TempDir,
    base: u16,
}

impl Cluster {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("bash")
            .arg(&self.script)
            .args(args)
            .env("ONECITY_LOCAL_DIR", self.dir.path())
            .env("ONECITY_LOCAL_BASE_PORT", self.base.to_string())
            .env("ONECITY_BIN", env!("CARGO_BIN_EXE_onecity"))
            .output()
            .expect("run cluster.sh");
        assert!(
            out.status.success(),
            "cluster.sh {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn url(&self, offset: u16) -> String {
        format!("http://127.0.0.1:{}", self.base + offset)
    }

    fn nats(&self) -> String {
        (1..=3)
            .map(|i| format!("nats://127.0.0.1:{}", self.base + i))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .env("ONECITY_LOCAL_DIR", self.dir.path())
            .env("ONECITY_LOCAL_BASE_PORT", self.base.to_string())
            .status();
    }
}

fn bearer(token: &str) -> onecity_eventlog_grpc::Bearer {
    onecity_eventlog_grpc::Bearer::new(token).unwrap()
}

fn application(i: usize) -> pb::Application {
    let mut app = onecity_domain::fixtures::sample_application();
    app.members[1].monthly_income_fen = 40_000 * (i % 11) as i64;
    if i.is_multiple_of(4) {
        app.housing = pb::Housing::OwnedAdequate as i32;
    }
    app
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
        let mut c = pb::intake_service_client::IntakeServiceClient::with_interceptor(
            ch,
            bearer("demo-terminal-120103"),
        );
        let req = pb::SubmitApplicationRequest {
            request_id: format!("cluster-{i}"),
            application: Some(application(i)),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_survives_node_and_worker_kills_exactly_once() {
    nats_available();
    let cases: usize = std::env::var("ONECITY_CLUSTER_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    // A per-run port range, so parallel test binaries and leftovers do not collide.
    let base = 20_000 + (std::process::id() % 400) as u16 * 100;
    let cluster = Cluster {
        script: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local/cluster.sh"),
        dir: tempfile::tempdir().unwrap(),
        base,
    };
    cluster.run(&["start"]);
    let channels: Vec<Channel> = [30, 31]
        .iter()
        .map(|o| {
            Channel::from_shared(cluster.url(*o))
                .unwrap()
                .connect_lazy()
        })
        .collect();

    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let channels = channels.clone();
            let acked = Arc::clone(&acked);
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= cases {
                        return;
                    }
                    if let Some(case_id) = submit(&channels, i).await {
                        acked.lock().await.insert(i, case_id);
                    }
                }
            })
        })
        .collect();

    // Chaos while the clients run: one NATS node and one process of each role.
    let chaos = async {
        let wait_for = |n: usize| {
            let acked = Arc::clone(&acked);
            async move {
                while acked.lock().await.len() < n {
                    tokio::task::yield_now().await;
                }
            }
        };
        wait_for(cases / 5).await;
        for victim in ["nats-2", "eligibility-0", "handoff-1", "intake-1"] {
            cluster.run(&["kill", victim]);
        }
        wait_for(cases / 2).await;
        for victim in ["nats-2", "eligibility-0", "handoff-1", "intake-1"] {
            cluster.run(&["restart", victim]);
        }
    };
    chaos.await;
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.lock().await.clone();
    assert!(
        acked.len() * 10 >= cases * 9,
        "too few submissions acknowledged: {} of {cases}",
        acked.len()
    );

    // Every acknowledged case handed off: follow the log until each has its referrals
    // (or its closing event), with a generous deadline instead of a sleep.
    let log = JetStreamLog::connect(JetStreamConfig {
        url: cluster.nats(),
        replicas: 3,
        ..JetStreamConfig::default()
    })
    .await
    .expect("connect to the cluster's log");
    let mut waiting: BTreeSet<String> = acked.values().cloned().collect();
    let mut sub = log
        .subscribe(1, Filter::prefixes([REFERRAL_ISSUED, CASE_CLOSED]))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(300), async {
        while !waiting.is_empty() {
            let e = sub
                .next()
                .await
                .expect("subscription ended")
                .expect("subscription failed");
            waiting.remove(&e.case_id.to_string());
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "cases never handed off: {:?}",
            waiting.iter().take(5).collect::<Vec<_>>()
        )
    });

    let head = log.head().await.unwrap();
    let mut events = Vec::new();
    while (events.len() as u64) < head {
        events.extend(log.read_all(events.len() as u64 + 1, 5_000).await.unwrap());
    }
    let mut submitted: HashMap<String, usize> = HashMap::new();
    let mut assessed: HashMap<String, usize> = HashMap::new();
    let mut referred: BTreeMap<(String, i32), usize> = BTreeMap::new();
    let mut expected: BTreeMap<(String, i32), usize> = BTreeMap::new();
    for e in &events {
        let case = e.case_id.to_string();
        match CaseEvent::decode(&e.event_type, &e.payload).unwrap() {
            Some(CaseEvent::ApplicationSubmitted(_)) => *submitted.entry(case).or_default() += 1,
            Some(CaseEvent::EligibilityAssessed(a)) => {
                *assessed.entry(case.clone()).or_default() += 1;
                for x in a.assessments {
                    if x.outcome == pb::Outcome::Eligible as i32
                        || x.outcome == pb::Outcome::NeedsReview as i32
                    {
                        expected.insert((case.clone(), x.programme), 1);
                    }
                }
            }
            Some(CaseEvent::ReferralIssued(r)) => {
                *referred.entry((case, r.programme)).or_default() += 1
            }
            _ => {}
        }
    }
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
    eprintln!(
        "cluster: {} cases, {} events, {} referrals",
        acked.len(),
        events.len(),
        referred.len()
    );
}
