//! Shared helpers of the black-box tests: a onecity server on a loopback port with a
//! temporary data dir, authenticated clients, and household fixtures.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use onecity::config::{Config, LogSpec};
use onecity_proto::v1 as pb;
use pb::eligibility_service_client::EligibilityServiceClient;
use pb::event_log_service_client::EventLogServiceClient;
use pb::handoff_service_client::HandoffServiceClient;
use pb::intake_service_client::IntakeServiceClient;
use tokio::sync::oneshot;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub use onecity_domain::fixtures::{sample_application, valid_id_number};

/// Demo tokens (see `onecity::config::demo_tokens`).
pub mod tokens {
    /// Terminal in Hexi (120103).
    pub const TERMINAL: &str = "demo-terminal-120103";
    /// Terminal in Heping (120101).
    pub const TERMINAL_HEPING: &str = "demo-terminal-120101";
    /// Civil affairs of Hexi.
    pub const CIVIL_AFFAIRS: &str = "demo-civil-affairs-120103";
    /// Civil affairs of Heping.
    pub const CIVIL_AFFAIRS_HEPING: &str = "demo-civil-affairs-120101";
    /// Medical security of Hexi.
    pub const MEDICAL: &str = "demo-medical-security-120103";
    /// Administrator.
    pub const ADMIN: &str = "demo-admin";
    /// Service principal.
    pub const SERVICE: &str = "demo-service";
}

/// A running server; stops (gracefully) when dropped or with [`TestServer::stop`].
#[derive(Debug)]
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The data dir (kept by the caller so a restart reuses it).
    pub data_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts `onecity serve` in-process over a sled log in `data_dir`, on port 0.
    pub async fn start(data_dir: &Path) -> TestServer {
        TestServer::start_with(data_dir, |_| {}).await
    }

    /// [`TestServer::start`] with the configuration changed by `edit` first.
    pub async fn start_with(data_dir: &Path, edit: impl FnOnce(&mut Config)) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let mut config = Config {
            data_dir: data_dir.to_path_buf(),
            log: Some(LogSpec::Sled(data_dir.join("log"))),
            ..Config::default()
        };
        edit(&mut config);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(onecity::server::run(listener, config, async move {
            let _ = stopped.await;
        }));
        TestServer {
            url,
            data_dir: data_dir.to_path_buf(),
            stop: Some(stop),
            task: Some(task),
        }
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
            match Channel::from_shared(self.url.clone())
                .expect("url")
                .connect()
                .await
            {
                Ok(c) => return c,
                Err(e) if tokio::time::Instant::now() > deadline => {
                    panic!("server did not come up: {e}")
                }
                Err(_) => tokio::task::yield_now().await,
            }
        }
    }

    /// Intake client authenticated with `token`.
    pub async fn intake(
        &self,
        token: &str,
    ) -> IntakeServiceClient<InterceptedService<Channel, Bearer>> {
        IntakeServiceClient::with_interceptor(
            self.channel().await,
            Bearer::new(token).expect("ascii token"),
        )
    }

    /// Eligibility client authenticated with `token`.
    pub async fn eligibility(
        &self,
        token: &str,
    ) -> EligibilityServiceClient<InterceptedService<Channel, Bearer>> {
        EligibilityServiceClient::with_interceptor(
            self.channel().await,
            Bearer::new(token).expect("ascii token"),
        )
    }

    /// Handoff client authenticated with `token`.
    pub async fn handoff(
        &self,
        token: &str,
    ) -> HandoffServiceClient<InterceptedService<Channel, Bearer>> {
        HandoffServiceClient::with_interceptor(
            self.channel().await,
            Bearer::new(token).expect("ascii token"),
        )
    }

    /// Event log client authenticated with `token`.
    pub async fn log(
        &self,
        token: &str,
    ) -> EventLogServiceClient<InterceptedService<Channel, Bearer>> {
        EventLogServiceClient::with_interceptor(
            self.channel().await,
            Bearer::new(token).expect("ascii token"),
        )
    }

    /// Raw channel (no token).
    pub async fn raw(&self) -> Channel {
        self.channel().await
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

    /// Waits (by watching the case, not by sleeping) until the handoff step has run for
    /// the case, and returns the case then.
    pub async fn handed_off(&self, case_id: &str) -> pb::Case {
        let mut intake = self.intake(tokens::ADMIN).await;
        let mut watch = intake
            .watch_case(pb::WatchCaseRequest {
                case_id: case_id.into(),
            })
            .await
            .expect("watch")
            .into_inner();
        let deadline = Duration::from_secs(30);
        loop {
            let next = tokio::time::timeout(deadline, watch.next())
                .await
                .expect("case was not handed off in time")
                .expect("watch ended before handoff")
                .expect("watch failed");
            let ty = next.event.map(|e| e.event_type).unwrap_or_default();
            if ty == "onecity.v1.ReferralIssued"
                || ty == "onecity.v1.CaseClosed"
                || ty == "onecity.v1.ApplicationWithdrawn"
            {
                break;
            }
        }
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
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub use onecity_eventlog_grpc::Bearer;

/// A submission of `application` with a fresh request id.
pub fn submission(application: pb::Application) -> pb::SubmitApplicationRequest {
    pb::SubmitApplicationRequest {
        request_id: uuid::Uuid::now_v7().to_string(),
        application: Some(application),
    }
}

/// Today in Beijing as `YYYY-MM-DD`.
pub fn today() -> String {
    onecity_domain::today().format("%Y-%m-%d").to_string()
}
