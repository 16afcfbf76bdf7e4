//! Traces: every RPC and every worker chunk is a `tracing` span; with an OpenTelemetry
//! layer installed (OTLP export when `otlp_endpoint` is set, or a test's in-memory
//! exporter) they become one trace per case across processes:
//!
//! - a caller's W3C `traceparent` header is the parent of the call's `rpc` span
//!   ([`crate::observe::rpc`]);
//! - every event appended while a span is current carries that span's context in its
//!   metadata ([`Traced`]);
//! - a worker's `chunk` span takes the context of its first event as parent
//!   ([`onecity_eventlog::consumer::set_chunk_parent`]), so what the worker appends is in
//!   the same trace, whichever process or log backend carried the event.
//!
//! Without an OpenTelemetry layer the spans have no context: nothing is written to the
//! metadata and nothing is parsed.

use std::sync::Arc;

use async_trait::async_trait;
use onecity_eventlog::{
    Appended, EventLog, EventStream, Expected, Filter, Metadata, NewEvent, RecordedEvent, Result,
};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use uuid::Uuid;

/// The metadata key and header of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// Makes worker chunks continue the trace in their events' metadata. Idempotent.
pub fn install() {
    onecity_eventlog::consumer::set_chunk_parent(continue_from_metadata);
}

/// Installs, as the process's subscriber, an OpenTelemetry tracer that records every
/// span at `filter` and exports none: what tracing costs without a collector (the bench's
/// `observe` cell). Does nothing when a subscriber is installed already.
pub fn install_local_tracer(filter: &str) {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new(filter))
        .with(layer(provider.tracer("onecity")))
        .try_init();
    install();
}

/// The OpenTelemetry layer of every subscriber onecity installs: spans for the trace, and
/// only the warnings and errors among the log events (the rest go to the log lines). A
/// span records what the trace needs, and none of what costs on every poll of a span's
/// future: no busy/idle time (two clock reads and an extension lookup per poll), no
/// OpenTelemetry context activated on entry (onecity reads a span's context from the
/// span itself), no thread or source-location attributes.
pub fn layer<S>(tracer: opentelemetry_sdk::trace::Tracer) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer as _;
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        .with_threads(false)
        .with_location(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|m| {
            m.is_span() || *m.level() <= tracing::Level::WARN
        }))
}

fn continue_from_metadata(span: &tracing::Span, metadata: &Metadata) {
    if !metadata.contains_key(TRACEPARENT) {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&MapExtractor(metadata));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Makes `span` the child of the W3C trace context in `headers`, if they carry a valid one.
pub fn continue_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    if !headers.contains_key(TRACEPARENT) {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The current span's trace context as metadata entries (none without a valid context).
fn current_context() -> Metadata {
    let cx = tracing::Span::current().context();
    let mut out = Metadata::new();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut MapInjector(&mut out));
    }
    out
}

struct MapExtractor<'a>(&'a Metadata);

impl Extractor for MapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

struct MapInjector<'a>(&'a mut Metadata);

impl Injector for MapInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// A log whose appends carry the current span's trace context in each new event's
/// metadata (an event that already names a `traceparent` keeps its own).
#[derive(Debug)]
pub struct Traced {
    inner: Arc<dyn EventLog>,
}

impl Traced {
    /// Traced appends to `inner`.
    pub fn new(inner: Arc<dyn EventLog>) -> Self {
        Traced { inner }
    }
}

fn stamp(case_id: Uuid, mut events: Vec<NewEvent>) -> Vec<NewEvent> {
    let span = tracing::Span::current();
    // A call's span names the case it writes; a chunk's names its case already (or
    // none, when the chunk mixes cases).
    if span.metadata().is_some_and(|m| m.name() == "rpc") {
        span.record("case_id", tracing::field::display(case_id));
    }
    let context = current_context();
    if context.is_empty() {
        return events;
    }
    for e in &mut events {
        if !e.metadata.contains_key(TRACEPARENT) {
            e.metadata
                .extend(context.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    events
}

#[async_trait]
impl EventLog for Traced {
    async fn append_as(
        &self,
        appended_by: &str,
        case_id: Uuid,
        expected: Expected,
        events: Vec<NewEvent>,
        commit_id: Uuid,
    ) -> Result<Appended> {
        self.inner
            .append_as(
                appended_by,
                case_id,
                expected,
                stamp(case_id, events),
                commit_id,
            )
            .await
    }

    async fn append(
        &self,
        case_id: Uuid,
        expected: Expected,
        events: Vec<NewEvent>,
        commit_id: Uuid,
    ) -> Result<Appended> {
        self.inner
            .append(case_id, expected, stamp(case_id, events), commit_id)
            .await
    }

    async fn read_case(
        &self,
        case_id: Uuid,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.inner.read_case(case_id, from_version, limit).await
    }

    async fn read_all(&self, from_position: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.inner.read_all(from_position, limit).await
    }

    async fn subscribe(&self, from_position: u64, filter: Filter) -> Result<EventStream> {
        self.inner.subscribe(from_position, filter).await
    }

    async fn subscribe_case(&self, case_id: Uuid, from_version: u64) -> Result<EventStream> {
        self.inner.subscribe_case(case_id, from_version).await
    }

    async fn save_checkpoint(&self, consumer: &str, position: u64) -> Result<()> {
        self.inner.save_checkpoint(consumer, position).await
    }

    async fn load_checkpoint(&self, consumer: &str) -> Result<u64> {
        self.inner.load_checkpoint(consumer).await
    }

    async fn head(&self) -> Result<u64> {
        self.inner.head().await
    }
}
