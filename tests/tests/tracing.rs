//! One case is one trace: the caller's W3C `traceparent` is the parent of the submission's
//! span, and the assessment's and the handoff's chunk spans continue it from the trace
//! context the events carry in their metadata, also when the workers run in another
//! server that reaches the log only through `remote:` (the events are the only link).

use std::sync::OnceLock;
use std::time::Duration;

use onecity::config::{LogSpec, Role};
use onecity_tests::{sample_application, submission, tokens, TestServer};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt as _;

/// The process's subscriber: every span exported to memory. Each test sends its own
/// trace id, so tests running at once tell their spans apart.
fn spans() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new("info"))
            .with(onecity::observe::trace::layer(provider.tracer("test")));
        tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
        exporter
    })
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| match &kv.value {
            Value::String(s) => s.as_str().to_owned(),
            other => other.to_string(),
        })
}

/// A fresh W3C trace id (32 hex digits) from a v4-like uuid.
fn trace_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// Submits a case at `intake` as part of trace `trace`, waits until it is handed off,
/// and returns the spans of the trace once intake, assessment and handoff are in it.
async fn one_case(intake: &TestServer, trace: &str) -> Vec<SpanData> {
    let exporter = spans();
    let mut request = tonic::Request::new(submission(sample_application()));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace}-00f067aa0ba902b7-01").parse().unwrap(),
    );
    let case_id = intake
        .intake(tokens::TERMINAL)
        .await
        .submit_application(request)
        .await
        .expect("submit")
        .into_inner()
        .case_id;
    intake.handed_off(&case_id).await;
    // The chunk spans end when their chunk has been handled, just after the writes the
    // handoff waited for: poll the exporter until every part is in.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ours: Vec<SpanData> = exporter
            .get_finished_spans()
            .expect("spans")
            .into_iter()
            .filter(|s| s.span_context.trace_id().to_string() == trace)
            .collect();
        let submit = ours.iter().any(|s| {
            s.name == "rpc" && attribute(s, "rpc.method").as_deref() == Some("SubmitApplication")
        });
        let chunk = |consumer: &str| {
            ours.iter()
                .any(|s| s.name == "chunk" && attribute(s, "consumer").as_deref() == Some(consumer))
        };
        if submit && chunk("assessment") && chunk("handoff") {
            // The chunk spans name the case.
            for s in ours.iter().filter(|s| s.name == "chunk") {
                assert_eq!(attribute(s, "case_id").as_deref(), Some(case_id.as_str()));
            }
            return ours;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "trace {trace} lacks a part: {:?}",
            ours.iter()
                .map(|s| (s.name.to_string(), attribute(s, "consumer")))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_assessment_and_handoff_share_the_callers_trace() {
    spans();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let trace = trace_id();
    let ours = one_case(&server, &trace).await;
    // Parents chain back to the caller's span: the submission's span is its child.
    let submit = ours.iter().find(|s| s.name == "rpc").unwrap();
    assert_eq!(submit.parent_span_id.to_string(), "00f067aa0ba902b7");
    // The call's span names the case it created.
    let chunk = ours.iter().find(|s| s.name == "chunk").unwrap();
    assert_eq!(attribute(submit, "case_id"), attribute(chunk, "case_id"));
    assert!(attribute(submit, "case_id").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_crosses_a_remote_log_to_workers_of_another_server() {
    spans();
    let log_dir = tempfile::tempdir().unwrap();
    let front = TestServer::start_with(log_dir.path(), |c| {
        c.roles = vec![Role::Intake, Role::Log];
    })
    .await;
    let workers_dir = tempfile::tempdir().unwrap();
    let url = front.url.clone();
    let _workers = TestServer::start_with(workers_dir.path(), |c| {
        c.roles = vec![Role::Eligibility, Role::Handoff];
        c.log = Some(LogSpec::Remote(url));
        c.log_token = Some(tokens::SERVICE.to_owned());
    })
    .await;
    let trace = trace_id();
    one_case(&front, &trace).await;
}
