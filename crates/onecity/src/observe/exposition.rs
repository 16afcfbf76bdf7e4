//! The Prometheus recorder of the process and the `metrics_addr` listener that serves it.
//!
//! Counters and histograms are recorded where things happen (the RPC layer, the log's
//! writer, the consumer loop, authentication); the gauges that describe state (log head,
//! each consumer's checkpoint and lag, quarantined events, referrals by state) are
//! measured at each scrape from [`Sources`], so they are as fresh as the scrape and cost
//! nothing between scrapes.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use onecity_domain::Principal;
use onecity_handoff::Inbox;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::admin::Admin;
use crate::auth::Auth;
use crate::tls::ServerTls;

/// Gauge: the log's head position.
pub const LOG_HEAD: &str = "onecity_log_head";
/// Gauge: the position a worker consumer has handled up to, by `consumer` and `partition`.
pub const CONSUMER_CHECKPOINT: &str = "onecity_consumer_checkpoint";
/// Gauge: events from the oldest one a consumer has not handled to the head.
pub const CONSUMER_LAG_EVENTS: &str = "onecity_consumer_lag_events";
/// Gauge: events quarantined and not released.
pub const QUARANTINED: &str = "onecity_quarantined_events";
/// Gauge: referrals in the handoff inbox by `state`.
pub const REFERRALS: &str = "onecity_referrals";
/// Gauge: referrals past their deadline and not decided (from the handoff inbox).
pub const REFERRALS_OVERDUE: &str = "onecity_referrals_overdue";
/// Gauge: referrals escalated to the district supervisor and not decided.
pub const REFERRALS_ESCALATED: &str = "onecity_referrals_escalated";
/// Counter: calls refused as unauthenticated, by `reason`.
pub const AUTH_FAILURES: &str = "onecity_auth_failures_total";

/// Latency buckets for every `_seconds` histogram: from a cached read to a slow fsync.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Group-commit sizes, in appends per batch.
const GROUP_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// How long a scrape request may take to arrive.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request head read.
const MAX_REQUEST: usize = 8 * 1024;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's Prometheus recorder (once; later calls return the same handle).
/// If another recorder was installed first (a program embedding the server with its own),
/// that one keeps the metrics and this handle renders none.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(onecity_eventlog_sled::GROUP_COMMIT_SIZE.to_owned()),
                        GROUP_BUCKETS,
                    )
                })
                .expect("non-empty bucket lists");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed, metrics_addr serves none");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        crate::observe::rpc::RPC_REQUESTS,
        "grpc calls finished, by service, method and status code"
    );
    describe_histogram!(
        crate::observe::rpc::RPC_DURATION,
        Unit::Seconds,
        "grpc call latency to the response headers"
    );
    describe_histogram!(
        onecity_eventlog_sled::APPEND_DURATION,
        Unit::Seconds,
        "event log append latency, from the write path's receipt to durable"
    );
    describe_histogram!(
        onecity_eventlog_sled::GROUP_COMMIT_SIZE,
        Unit::Count,
        "appends written and synced together in one batch"
    );
    describe_histogram!(
        onecity_eventlog_sled::FSYNC_DURATION,
        Unit::Seconds,
        "time to make one batch durable"
    );
    describe_counter!(
        onecity_eventlog_sled::WRITE_FAILURES,
        "batches the log failed to write (it then refuses writes)"
    );
    describe_counter!(
        onecity_eventlog::consumer::EVENTS_HANDLED,
        "events a worker consumer handled, by consumer and partition"
    );
    describe_gauge!(
        onecity_eventlog::consumer::LAG_SECONDS,
        Unit::Seconds,
        "age of the last event a consumer handled when it handled it"
    );
    describe_counter!(
        onecity_eventlog::consumer::QUARANTINED_TOTAL,
        "events a consumer quarantined, by consumer and partition"
    );
    describe_gauge!(LOG_HEAD, "position of the newest event in the log");
    describe_gauge!(
        CONSUMER_CHECKPOINT,
        "position a worker consumer has handled up to"
    );
    describe_gauge!(
        CONSUMER_LAG_EVENTS,
        "events from the oldest one a consumer has not handled to the head"
    );
    describe_gauge!(QUARANTINED, "events quarantined and not released");
    describe_gauge!(REFERRALS, "referrals in the handoff inbox, by state");
    describe_gauge!(
        REFERRALS_OVERDUE,
        "referrals past their deadline and not decided"
    );
    describe_gauge!(
        REFERRALS_ESCALATED,
        "referrals escalated to the district supervisor"
    );
    describe_counter!(AUTH_FAILURES, "calls refused as unauthenticated, by reason");
}

/// What the scrape-time gauges are measured from, set once the log is open.
#[derive(Debug, Default)]
pub struct Sources {
    admin: OnceLock<Admin>,
    inbox: OnceLock<Arc<Inbox>>,
}

impl Sources {
    /// The routing checkpoints and quarantine, through the admin service's core.
    pub fn set_admin(&self, admin: Admin) {
        let _ = self.admin.set(admin);
    }

    /// The referrals, when this process runs the handoff role.
    pub fn set_inbox(&self, inbox: Arc<Inbox>) {
        let _ = self.inbox.set(inbox);
    }

    /// Measures the gauges. A source that fails is logged and its gauges keep their last
    /// value: a scrape still answers.
    async fn measure(&self) {
        if let Some(admin) = self.admin.get() {
            match admin.routing_lag().await {
                Ok(lags) => {
                    for l in lags {
                        let labels = onecity_eventlog::consumer::labels(&l.lag.consumer);
                        metrics::gauge!(LOG_HEAD).set(l.lag.head as f64);
                        metrics::gauge!(CONSUMER_CHECKPOINT, &labels).set(l.lag.checkpoint as f64);
                        metrics::gauge!(CONSUMER_LAG_EVENTS, &labels).set(l.lag.lag as f64);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "metrics: routing lag not measured"),
            }
            match admin.quarantined().await {
                Ok(q) => metrics::gauge!(QUARANTINED).set(q.len() as f64),
                Err(e) => tracing::warn!(error = %e, "metrics: quarantine not measured"),
            }
        }
        if let Some(inbox) = self.inbox.get() {
            let counts = inbox.counts();
            for state in (1..).map_while(|v| onecity_proto::v1::ReferralState::try_from(v).ok()) {
                let n = counts.by_state.get(&(state as i32)).copied().unwrap_or(0);
                metrics::gauge!(REFERRALS, "state" => state_label(state)).set(n as f64);
            }
            metrics::gauge!(REFERRALS_OVERDUE).set(counts.overdue as f64);
            metrics::gauge!(REFERRALS_ESCALATED).set(counts.escalated as f64);
        }
    }
}

fn state_label(state: onecity_proto::v1::ReferralState) -> String {
    state
        .as_str_name()
        .trim_start_matches("REFERRAL_STATE_")
        .to_ascii_lowercase()
}

/// Serves `GET /metrics` on `listener` until `stop`: over TLS when `tls` is given, and
/// only to an `admin` bearer token when `guard` is given (off loopback).
pub async fn serve_metrics(
    listener: TcpListener,
    tls: Option<ServerTls>,
    guard: Option<Auth>,
    sources: Arc<Sources>,
    stop: CancellationToken,
) {
    let handle = install();
    let scrape = Arc::new(Scrape {
        handle,
        guard,
        sources,
    });
    match tls {
        Some(tls) => {
            let mut incoming = std::pin::pin!(tls.incoming(listener, stop.clone()));
            while let Some(conn) = incoming.next().await {
                if let Ok(conn) = conn {
                    let scrape = Arc::clone(&scrape);
                    tokio::spawn(async move { scrape.answer(conn).await });
                }
            }
        }
        None => loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((conn, _)) => {
                    let scrape = Arc::clone(&scrape);
                    tokio::spawn(async move { scrape.answer(conn).await });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        },
    }
}

struct Scrape {
    handle: PrometheusHandle,
    guard: Option<Auth>,
    sources: Arc<Sources>,
}

impl Scrape {
    /// Answers one request and closes the connection (scrapes are rare).
    async fn answer<C: AsyncRead + AsyncWrite + Unpin>(&self, mut conn: C) {
        let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut conn)).await {
            Ok(Some(head)) => head,
            _ => return,
        };
        let (status, content_type, body) = self.respond(&head).await;
        let reply = format!(
            "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        let _ = conn.write_all(reply.as_bytes()).await;
        let _ = conn.write_all(body.as_bytes()).await;
        let _ = conn.shutdown().await;
    }

    async fn respond(&self, head: &str) -> (&'static str, &'static str, String) {
        const TEXT: &str = "text/plain; charset=utf-8";
        let mut lines = head.lines();
        let request = lines.next().unwrap_or_default();
        let mut parts = request.split(' ');
        let (method, target) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        if method != "GET" {
            return ("405 Method Not Allowed", TEXT, "only GET\n".to_owned());
        }
        if target.split('?').next() != Some("/metrics") {
            return (
                "404 Not Found",
                TEXT,
                "metrics are at /metrics\n".to_owned(),
            );
        }
        if let Some(auth) = &self.guard {
            let authorization = lines.find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("authorization")
                    .then(|| value.trim().to_owned())
            });
            let mut metadata = tonic::metadata::MetadataMap::new();
            if let Some(value) = authorization.and_then(|v| v.parse().ok()) {
                metadata.insert("authorization", value);
            }
            match auth.authenticate(&metadata, None) {
                Ok(Principal::Admin { .. }) => {}
                Ok(_) => {
                    return (
                        "403 Forbidden",
                        TEXT,
                        "metrics need an admin token\n".to_owned(),
                    )
                }
                Err(refusal) => {
                    metrics::counter!(AUTH_FAILURES, "reason" => refusal.as_str()).increment(1);
                    return ("401 Unauthorized", TEXT, format!("{}\n", refusal.message()));
                }
            }
        }
        self.sources.measure().await;
        self.handle.run_upkeep();
        (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            self.handle.render(),
        )
    }
}

/// The request line and headers, `None` when the peer sends too much or closes first.
async fn read_head<C: AsyncRead + Unpin>(conn: &mut C) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() + n > MAX_REQUEST {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(buf).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn consumer_names_split_into_consumer_and_partition() {
        let labels = onecity_eventlog::consumer::labels;
        assert_eq!(labels("handoff-2of4")[1].1, "2of4");
        assert_eq!(labels("handoff-2of4")[0].1, "handoff");
        assert_eq!(labels("assessment")[1].1, "1of1");
        assert_eq!(labels("some-name")[0].1, "some-name");
    }
}
