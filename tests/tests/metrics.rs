//! The Prometheus endpoint: scraped before and after a submission, the call counters, the
//! log's write metrics and the routing consumers' checkpoints and lag move as they should,
//! and the exposition parses as Prometheus text.

use std::time::Duration;

use onecity::config::MetricsAddr;
use onecity_tests::{sample_application, submission, TestServer};
use prometheus_parse::{Sample, Scrape, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `GET url` over plain HTTP/1.1, the status line and the body.
async fn get(url: &str, authorization: Option<&str>) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_once('/').expect("path");
    let mut conn = tokio::net::TcpStream::connect(host).await.expect("connect");
    let auth = authorization
        .map(|a| format!("authorization: {a}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET /{path} HTTP/1.1\r\nhost: {host}\r\n{auth}connection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    conn.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("http response");
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

async fn scrape(server: &TestServer) -> Scrape {
    let url = server.metrics_url.as_deref().expect("metrics endpoint on");
    let (status, body) = get(url, None).await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("prometheus text")
}

fn matches(sample: &Sample, name: &str, labels: &[(&str, &str)]) -> bool {
    sample.metric == name && labels.iter().all(|(k, v)| sample.labels.get(k) == Some(v))
}

/// The sum of the samples of `name` with `labels` (0 when there are none yet).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| matches(s, name, labels))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .map_or(0.0, |b| b.count),
            Value::Summary(_) => 0.0,
        })
        .sum()
}

fn has(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> bool {
    scrape.samples.iter().any(|s| matches(s, name, labels))
}

const SUBMIT: [(&str, &str); 3] = [
    ("service", "onecity.v1.IntakeService"),
    ("method", "SubmitApplication"),
    ("code", "Ok"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_moves_the_counters_and_the_routing_consumers_and_refusals_count() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), |c| {
        c.metrics_addr = "127.0.0.1:0".parse::<MetricsAddr>().unwrap();
    })
    .await;
    // The log is open once a call is answered.
    let head_before = server.head().await;
    let before = scrape(&server).await;
    assert!(
        before.docs.contains_key("onecity_rpc_requests_total"),
        "described: {:?}",
        before.docs.keys()
    );
    for consumer in ["assessment", "handoff"] {
        let labels = [("consumer", consumer), ("partition", "1of1")];
        assert!(
            has(&before, "onecity_consumer_checkpoint", &labels),
            "{consumer}"
        );
        assert_eq!(value(&before, "onecity_consumer_lag_events", &labels), 0.0);
    }

    let case = server.submit_handed_off(sample_application()).await;
    let head_after = server.head().await;
    assert!(head_after > head_before);

    // The workers' checkpoints are written shortly after they handle a chunk: poll until
    // both have moved past the new events they follow and nothing is left for them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let after = loop {
        let after = scrape(&server).await;
        let caught_up = ["assessment", "handoff"].iter().all(|consumer| {
            let labels = [("consumer", *consumer), ("partition", "1of1")];
            value(&after, "onecity_consumer_checkpoint", &labels)
                > value(&before, "onecity_consumer_checkpoint", &labels).max(head_before as f64)
                && value(&after, "onecity_consumer_lag_events", &labels) == 0.0
        });
        if caught_up {
            break after;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "consumers not caught up: {:?}",
            after
                .samples
                .iter()
                .filter(|s| s.metric.starts_with("onecity_consumer"))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    assert_eq!(
        value(&after, "onecity_rpc_requests_total", &SUBMIT)
            - value(&before, "onecity_rpc_requests_total", &SUBMIT),
        1.0,
        "one submission counted"
    );
    assert!(
        value(&after, "onecity_rpc_duration_seconds", &SUBMIT)
            > value(&before, "onecity_rpc_duration_seconds", &SUBMIT),
        "its latency observed"
    );
    assert!(value(&after, "onecity_log_head", &[]) >= head_after as f64);
    assert!(
        value(&after, "onecity_log_append_duration_seconds_count", &[])
            > value(&before, "onecity_log_append_duration_seconds_count", &[]),
        "appends timed"
    );
    assert!(
        value(&after, "onecity_log_fsync_duration_seconds_count", &[])
            > value(&before, "onecity_log_fsync_duration_seconds_count", &[])
    );
    assert!(value(&after, "onecity_log_group_commit_size_count", &[]) > 0.0);
    for consumer in ["assessment", "handoff"] {
        let labels = [("consumer", consumer), ("partition", "1of1")];
        assert!(
            value(&after, "onecity_consumer_events_handled_total", &labels)
                > value(&before, "onecity_consumer_events_handled_total", &labels),
            "{consumer} handled the new events"
        );
        assert!(
            has(&after, "onecity_consumer_lag_seconds", &labels),
            "{consumer}"
        );
    }
    let issued = value(&after, "onecity_referrals", &[("state", "issued")]);
    assert_eq!(
        issued as usize,
        case.referrals.len(),
        "{:?}",
        case.referrals
    );
    assert!(!case.referrals.is_empty());
    assert_eq!(value(&after, "onecity_quarantined_events", &[]), 0.0);

    refused_calls_are_counted_by_status_and_reason(&server).await;
}

/// Part of the test above: the recorder is the process's, so two servers of one test
/// process would set each other's gauges.
async fn refused_calls_are_counted_by_status_and_reason(server: &TestServer) {
    let before = scrape(server).await;
    let mut intake = server.intake("not-a-token").await;
    let refused = intake
        .submit_application(submission(sample_application()))
        .await
        .expect_err("unknown token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let after = scrape(server).await;
    let unknown = [("reason", "unknown_token")];
    assert!(
        value(&after, "onecity_auth_failures_total", &unknown)
            > value(&before, "onecity_auth_failures_total", &unknown)
    );
    let refused = [
        ("service", "onecity.v1.IntakeService"),
        ("method", "SubmitApplication"),
        ("code", "Unauthenticated"),
    ];
    assert!(
        value(&after, "onecity_rpc_requests_total", &refused)
            > value(&before, "onecity_rpc_requests_total", &refused)
    );
    // Anything but the one path is not found, and writes nothing.
    let url = server
        .metrics_url
        .as_deref()
        .unwrap()
        .replace("/metrics", "/other");
    let (status, _) = get(&url, None).await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
}
