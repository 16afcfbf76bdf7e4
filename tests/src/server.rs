//! A onecity server in this process, on a loopback port, over a sled log in a data dir.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use onecity::config::{Config, ConsoleAddr, LogSpec, MetricsAddr};
use onecity_eventlog::EventLog;
use onecity_proto::v1 as pb;
use tokio::sync::oneshot;
use tonic::transport::{Channel, ClientTlsConfig};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::client::{self, AdminClient, EligibilityClient, HandoffClient, IntakeClient, LogClient};
use crate::fixtures::{submission, tokens};

/// How long [`TestServer::wait_case`] waits for a case to change.
pub const CASE_IDLE: Duration = Duration::from_secs(30);

/// A running server; stops (gracefully) when dropped or with [`TestServer::stop`].
#[derive(Debug)]
pub struct TestServer {
    /// `http://127.0.0.1:PORT`, or `https://` when the server has TLS.
    pub url: String,
    /// The data dir (kept by the caller so a restart reuses it).
    pub data_dir: PathBuf,
    /// `http://127.0.0.1:PORT/metrics` when the test asked for the Prometheus endpoint
    /// (`metrics_addr` set by its `edit`; off by default, so that no test depends on a
    /// free fixed port).
    pub metrics_url: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    tls: Option<ClientTlsConfig>,
}

impl TestServer {
    /// Starts `onecity serve` in-process over a sled log in `data_dir`, on port 0.
    pub async fn start(data_dir: &Path) -> TestServer {
        TestServer::start_with(data_dir, |_| {}).await
    }

    /// [`TestServer::start`] with the configuration changed by `edit` first.
    pub async fn start_with(data_dir: &Path, edit: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::start_over(data_dir, None, edit).await
    }

    /// [`TestServer::start`] over `log` (a wrapped backend, e.g. a [`FaultyLog`]) instead
    /// of the sled log it would open in `data_dir`.
    ///
    /// [`FaultyLog`]: crate::FaultyLog
    pub async fn start_with_log(data_dir: &Path, log: Arc<dyn EventLog>) -> TestServer {
        TestServer::start_over(data_dir, Some(log), |_| {}).await
    }

    /// [`TestServer::start_with_log`] with the configuration changed by `edit` first.
    pub async fn start_with_log_and(
        data_dir: &Path,
        log: Arc<dyn EventLog>,
        edit: impl FnOnce(&mut Config),
    ) -> TestServer {
        TestServer::start_over(data_dir, Some(log), edit).await
    }

    async fn start_over(
        data_dir: &Path,
        log: Option<Arc<dyn EventLog>>,
        edit: impl FnOnce(&mut Config),
    ) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut config = Config {
            data_dir: data_dir.to_path_buf(),
            log: Some(LogSpec::Sled(data_dir.join("log"))),
            metrics_addr: MetricsAddr::OFF,
            // Tests run many servers at once: a test that wants the console asks for it.
            console_addr: ConsoleAddr::Off,
            ..Config::default()
        };
        edit(&mut config);
        let metrics = match config.metrics_addr.0 {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .expect("bind metrics"),
            ),
            None => None,
        };
        let metrics_url = metrics.as_ref().map(|m| {
            let scheme = if config.tls.enabled() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{}/metrics", m.local_addr().expect("addr"))
        });
        // The server's own binding is the one above.
        config.metrics_addr = MetricsAddr::OFF;
        let scheme = if config.tls.enabled() {
            "https"
        } else {
            "http"
        };
        let url = format!("{scheme}://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = match (log, metrics) {
            (None, Some(metrics)) => tokio::spawn(onecity::server::run_with_metrics(
                listener, metrics, config, shutdown,
            )),
            (None, None) => tokio::spawn(onecity::server::run(listener, config, shutdown)),
            (Some(_), Some(_)) => panic!("a metrics endpoint over a given log is not supported"),
            (Some(log), None) => tokio::spawn(onecity::server::run_with_log(
                listener, config, log, true, shutdown,
            )),
        };
        TestServer {
            url,
            data_dir: data_dir.to_path_buf(),
            metrics_url,
            stop: Some(stop),
            task: Some(task),
            tls: None,
        }
    }

    /// The TLS of this server's clients from now on (the CA to trust, a client
    /// certificate).
    pub fn with_client_tls(mut self, tls: ClientTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// A channel to the server with `tls` (or in plaintext), or why it cannot connect.
    pub async fn try_channel(
        &self,
        tls: Option<ClientTlsConfig>,
    ) -> Result<Channel, tonic::transport::Error> {
        let mut endpoint = Channel::from_shared(self.url.clone()).expect("url");
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls)?;
        }
        endpoint.connect().await
    }

    /// Stops the server and waits until it has released the data dir.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("server task").expect("server run");
        }
    }

    async fn channel(&self) -> Channel {
        // The server is spawned but may not accept yet: connect with retries bounded
        // by a deadline, not a fixed sleep.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match self.try_channel(self.tls.clone()).await {
                Ok(c) => return c,
                Err(e) if tokio::time::Instant::now() > deadline => {
                    panic!("server did not come up: {e}")
                }
                Err(_) => tokio::task::yield_now().await,
            }
        }
    }

    /// Intake client authenticated with `token`.
    pub async fn intake(&self, token: &str) -> IntakeClient {
        client::intake(self.channel().await, token)
    }

    /// Eligibility client authenticated with `token`.
    pub async fn eligibility(&self, token: &str) -> EligibilityClient {
        client::eligibility(self.channel().await, token)
    }

    /// Handoff client authenticated with `token`.
    pub async fn handoff(&self, token: &str) -> HandoffClient {
        client::handoff(self.channel().await, token)
    }

    /// Event log client authenticated with `token`.
    pub async fn log(&self, token: &str) -> LogClient {
        client::log(self.channel().await, token)
    }

    /// Admin client authenticated with `token`.
    pub async fn admin(&self, token: &str) -> AdminClient {
        client::admin(self.channel().await, token)
    }

    /// The case as an admin's `GetCase` shows it.
    pub async fn case(&self, case_id: &str) -> pb::Case {
        self.intake(tokens::ADMIN)
            .await
            .get_case(pb::GetCaseRequest {
                case_id: case_id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .case
            .unwrap()
    }

    /// Watches the case (no sleeping) until `done` holds for it, and returns it; panics
    /// when the case shows no progress for [`CASE_IDLE`].
    pub async fn wait_case(&self, case_id: &str, done: impl Fn(&pb::Case) -> bool) -> pb::Case {
        use futures::StreamExt as _;
        let mut watch = self
            .intake(tokens::ADMIN)
            .await
            .watch_case(pb::WatchCaseRequest {
                case_id: case_id.into(),
            })
            .await
            .unwrap()
            .into_inner();
        loop {
            let case = self.case(case_id).await;
            if done(&case) {
                return case;
            }
            tokio::time::timeout(CASE_IDLE, watch.next())
                .await
                .expect("the case stopped changing before the condition held")
                .expect("watch ended")
                .expect("watch failed");
        }
    }

    /// The browser console of this server on a loopback port of its own (port 0), calling
    /// the server's gRPC listener as `onecity serve` does (its `console_addr`); it stops
    /// when the returned handle is dropped. Plaintext servers only, like the console.
    pub async fn console(&self) -> ConsoleServer {
        let grpc: std::net::SocketAddr = self
            .url
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
            .expect("the console calls a plaintext grpc listener");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind console");
        let addr = listener.local_addr().expect("addr");
        let console = onecity::console::Console::new(grpc).expect("console");
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(onecity::console::serve(
            listener,
            console,
            None,
            stop.clone(),
        ));
        ConsoleServer {
            addr,
            url: format!("http://{addr}"),
            stop,
        }
    }

    /// Raw channel (no token).
    pub async fn raw(&self) -> Channel {
        self.channel().await
    }

    /// The health status of `service` (`""`: the whole server).
    pub async fn health(&self, service: &str) -> ServingStatus {
        let status = HealthClient::new(self.channel().await)
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status;
        ServingStatus::try_from(status).expect("known status")
    }

    /// The log's head position.
    pub async fn head(&self) -> u64 {
        self.log(tokens::SERVICE)
            .await
            .get_head(pb::GetHeadRequest {})
            .await
            .expect("head")
            .into_inner()
            .position
    }

    /// Every event of the log, in order.
    pub async fn whole_log(&self) -> Vec<pb::RecordedEvent> {
        client::whole_log(&mut self.log(tokens::SERVICE).await).await
    }

    /// Waits (by watching the case, not by sleeping) until the handoff step has run for
    /// the case, and returns the case then.
    pub async fn handed_off(&self, case_id: &str) -> pb::Case {
        let mut intake = self.intake(tokens::ADMIN).await;
        client::wait_handed_off(&mut intake, case_id, Duration::from_secs(30)).await;
        intake
            .get_case(pb::GetCaseRequest {
                case_id: case_id.into(),
            })
            .await
            .expect("get case")
            .into_inner()
            .case
            .expect("case")
    }

    /// Submits `application` at the Hexi terminal (fresh request id), waits until it is
    /// handed off and returns the case then, referrals included.
    pub async fn submit_handed_off(&self, application: pb::Application) -> pb::Case {
        let case_id = self
            .intake(tokens::TERMINAL)
            .await
            .submit_application(submission(application))
            .await
            .expect("submit")
            .into_inner()
            .case_id;
        self.handed_off(&case_id).await
    }
}

/// A console served by [`TestServer::console`]; stops when dropped.
#[derive(Debug)]
pub struct ConsoleServer {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    stop: tokio_util::sync::CancellationToken,
}

impl Drop for ConsoleServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}
