//! The roles as separate processes over one sled log process (the "remote" topology):
//! one log process, one intake, two eligibility and two handoff instances partitioned by
//! case. Mid-stream one eligibility and one handoff instance are killed with SIGKILL and
//! restarted. Then the log process is restarted gracefully (SIGTERM, then start), which
//! ends the remote workers' subscriptions cleanly: they resubscribe, and the cases
//! submitted afterwards are routed too. At the end every application has exactly one
//! assessment and exactly one referral per referred programme.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use onecity_proto::v1 as pb;
use onecity_tests::{application, tokens, wait_handed_off, whole_log, Routed};
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
        Proc::start_at(data_dir, "127.0.0.1:0", args).await
    }

    /// [`Proc::start`] on `addr`.
    async fn start_at(data_dir: &Path, addr: &str, args: &[&str]) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_onecity"))
            .arg("serve")
            .env("ONECITY_CONSOLE_ADDR", "off")
            .args(["--addr", addr, "--data-dir"])
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

    /// Stops the process gracefully (SIGTERM) and waits until it has exited.
    async fn terminate(mut self) {
        let pid = self.child.id().expect("running").to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("run kill");
        assert!(sent.success(), "SIGTERM sent");
        let exited = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("exited in time")
            .expect("wait");
        assert!(exited.success(), "graceful exit: {exited}");
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(self.url.clone())
            .unwrap()
            .connect()
            .await
            .expect("connect")
    }
}

/// Submits `request`, retrying (same request id, so one case) while intake's connection to
/// the restarted log comes back.
async fn submit_retrying(ch: &Channel, request: pb::SubmitApplicationRequest) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut c = onecity_tests::intake(ch.clone(), tokens::TERMINAL);
        match c.submit_application(request.clone()).await {
            Ok(r) => return r.into_inner().case_id,
            Err(e)
                if e.code() == tonic::Code::Unavailable
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("submit after the log restart: {e}"),
        }
    }
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
    let total: usize = 60;
    for i in 0..total {
        let mut c = onecity_tests::intake(ch.clone(), tokens::TERMINAL);
        let r = c
            .submit_application(pb::SubmitApplicationRequest {
                request_id: format!("req-{i}"),
                application: Some(application(i)),
                duplicate_override_reason: String::new(),
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
    let mut admin = onecity_tests::intake(ch.clone(), tokens::ADMIN);
    for case_id in &cases {
        wait_handed_off(&mut admin, case_id, Duration::from_secs(120)).await;
    }

    // A graceful restart of the log process, on the same address and store: the remote
    // workers' subscriptions end cleanly, and they must follow the log again.
    let addr = log.url.trim_start_matches("http://").to_owned();
    log.terminate().await;
    let log = Proc::start_at(dir.path(), &addr, &["--role", "log"]).await;
    for i in total..total + 10 {
        let request = pb::SubmitApplicationRequest {
            request_id: format!("req-{i}"),
            application: Some(application(i)),
            duplicate_override_reason: String::new(),
        };
        cases.push(submit_retrying(&ch, request).await);
    }
    for case_id in &cases[total..] {
        wait_handed_off(&mut admin, case_id, Duration::from_secs(120)).await;
    }

    // Exactly once over the whole log.
    let events = whole_log(&mut onecity_tests::log(
        log.channel().await,
        tokens::SERVICE,
    ))
    .await;
    let routed = Routed::of(&events);
    assert_eq!(
        routed.assessed.len(),
        cases.len(),
        "every application assessed"
    );
    assert!(
        routed.assessed.values().all(|n| *n == 1),
        "an application assessed twice"
    );
    assert_eq!(
        routed.referred, routed.expected,
        "exactly one referral per referred programme, nothing else"
    );
    drop((intake, elig, hand, log));
}
