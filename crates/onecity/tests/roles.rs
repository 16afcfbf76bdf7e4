//! The roles as separate processes over one sled log process (the "remote" topology):
//! one log process, one intake, two eligibility and two handoff instances partitioned by
//! case. Mid-stream one eligibility and one handoff instance are killed with SIGKILL and
//! restarted. At the end every application has exactly one assessment and exactly one
//! referral per referred programme.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use onecity_domain::events::CaseEvent;
use onecity_proto::v1 as pb;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

/// A `onecity serve` child process; killed (SIGKILL) when dropped.
struct Proc {
    child: Child,
    url: String,
}

impl Proc {
    /// Starts `onecity serve` on port 0 and waits for its "onecity serving" line, which
    /// carries the address it bound.
    async fn start(data_dir: &Path, args: &[&str]) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_onecity"))
            .arg("serve")
            .args(["--addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env("ONECITY_LOG_TOKEN", "demo-service")
            // The workers run as two partitions: intake's backpressure watches both.
            .env("ONECITY_WORKER_PARTITIONS", "2")
            .env("ONECITY_LOG_LEVEL", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn onecity");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.expect("read stderr") {
                if line.contains("onecity serving") {
                    let addr = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("addr="))
                        .expect("addr field")
                        .to_owned();
                    return format!("http://{addr}");
                }
            }
            panic!("onecity exited before serving");
        })
        .await
        .expect("onecity did not start in time");
        // Keep draining stderr so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Proc { child, url }
    }

    async fn kill(mut self) {
        self.child.kill().await.expect("kill");
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(self.url.clone())
            .unwrap()
            .connect()
            .await
            .expect("connect")
    }
}

fn bearer(token: &str) -> onecity_eventlog_grpc::Bearer {
    onecity_eventlog_grpc::Bearer::new(token).unwrap()
}

fn application(i: u16) -> pb::Application {
    let mut app = onecity_domain::fixtures::sample_application();
    // Vary the household so different programme mixes occur.
    app.members[1].monthly_income_fen = 50_000 * i64::from(i % 9);
    if i.is_multiple_of(3) {
        app.housing = pb::Housing::OwnedAdequate as i32;
    }
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_as_processes_survive_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = Proc::start(dir.path(), &["--role", "log"]).await;
    let remote = format!("remote:{}", log.url);
    let roles = |role: &'static str, part: &'static str| {
        let remote = remote.clone();
        let dir = dir.path().to_path_buf();
        async move {
            // Roles over a remote log keep nothing of their own on disk; each still gets
            // its own data dir so nothing could collide if one did.
            let own = dir.join(format!("{role}-{}", part.replace('/', "of")));
            Proc::start(
                &own,
                &["--role", role, "--partition", part, "--log", &remote],
            )
            .await
        }
    };
    let intake = roles("intake", "0/1").await;
    let mut elig = vec![
        roles("eligibility", "0/2").await,
        roles("eligibility", "1/2").await,
    ];
    let mut hand = vec![roles("handoff", "0/2").await, roles("handoff", "1/2").await];

    let ch = intake.channel().await;
    let mut cases = Vec::new();
    let total = 60u16;
    for i in 0..total {
        let mut c = pb::intake_service_client::IntakeServiceClient::with_interceptor(
            ch.clone(),
            bearer("demo-terminal-120103"),
        );
        let r = c
            .submit_application(pb::SubmitApplicationRequest {
                request_id: format!("req-{i}"),
                application: Some(application(i)),
            })
            .await
            .expect("submit")
            .into_inner();
        cases.push(r.case_id);
        if i == total / 3 {
            // Kill one instance of each worker role mid-stream, restart it later.
            elig.remove(0).kill().await;
            hand.remove(1).kill().await;
        }
        if i == 2 * total / 3 {
            elig.push(roles("eligibility", "0/2").await);
            hand.push(roles("handoff", "1/2").await);
        }
    }

    // Wait (by watching, not sleeping) until every case has been handed off.
    for case_id in &cases {
        let mut c = pb::intake_service_client::IntakeServiceClient::with_interceptor(
            ch.clone(),
            bearer("demo-admin"),
        );
        let mut watch = c
            .watch_case(pb::WatchCaseRequest {
                case_id: case_id.clone(),
            })
            .await
            .expect("watch")
            .into_inner();
        tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(item) = watch.next().await {
                let ty = item
                    .expect("watch item")
                    .event
                    .map(|e| e.event_type)
                    .unwrap_or_default();
                if ty == "onecity.v1.ReferralIssued" || ty == "onecity.v1.CaseClosed" {
                    return;
                }
            }
            panic!("watch ended before case {case_id} was handed off");
        })
        .await
        .unwrap_or_else(|_| panic!("case {case_id} was not handed off in time"));
    }

    // Exactly once over the whole log.
    let mut log_client = pb::event_log_service_client::EventLogServiceClient::with_interceptor(
        log.channel().await,
        bearer("demo-service"),
    );
    let mut events = Vec::new();
    loop {
        let page = log_client
            .read_all(pb::ReadAllRequest {
                from_position: events.len() as u64 + 1,
                limit: 1000,
            })
            .await
            .unwrap()
            .into_inner()
            .events;
        if page.is_empty() {
            break;
        }
        events.extend(page);
    }
    let mut assessed: HashMap<String, usize> = HashMap::new();
    let mut referred: BTreeMap<(String, i32), usize> = BTreeMap::new();
    let mut expected: BTreeMap<(String, i32), usize> = BTreeMap::new();
    for e in &events {
        match CaseEvent::decode(&e.event_type, &e.payload).unwrap() {
            Some(CaseEvent::EligibilityAssessed(a)) => {
                *assessed.entry(e.case_id.clone()).or_default() += 1;
                for x in a.assessments {
                    if x.outcome == pb::Outcome::Eligible as i32
                        || x.outcome == pb::Outcome::NeedsReview as i32
                    {
                        expected.insert((e.case_id.clone(), x.programme), 1);
                    }
                }
            }
            Some(CaseEvent::ReferralIssued(r)) => {
                *referred
                    .entry((e.case_id.clone(), r.programme))
                    .or_default() += 1
            }
            _ => {}
        }
    }
    assert_eq!(assessed.len(), cases.len(), "every application assessed");
    assert!(
        assessed.values().all(|n| *n == 1),
        "an application assessed twice"
    );
    assert_eq!(
        referred, expected,
        "exactly one referral per referred programme, nothing else"
    );
    drop((intake, elig, hand, log));
}
