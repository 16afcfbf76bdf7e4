//! The process's subscriber: log lines as text for people or JSON (one object per line,
//! with the fields of the spans the line was written in) for log collectors, and spans
//! exported over OTLP when an endpoint is configured.

use std::io::IsTerminal as _;
use std::sync::OnceLock;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

/// `--log-format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (colours on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, the event's fields
    /// (`message` among them), `span` (the innermost span's fields) and `spans` (every
    /// enclosing span, outermost first).
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.trim() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => anyhow::bail!("unknown log format {other:?}: expected json or text"),
        }
    }
}

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Installs the stderr subscriber in `format` with `filter`, exporting spans to the OTLP
/// (gRPC) collector at `otlp_endpoint` when given; needs a tokio runtime then. A second
/// call (tests that start several servers in one process) keeps the first subscriber.
pub fn install(
    format: LogFormat,
    filter: EnvFilter,
    otlp_endpoint: Option<&str>,
) -> anyhow::Result<()> {
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
    };
    let otel = match otlp_endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .with_context(|| format!("otlp_endpoint {endpoint}"))?;
            // Exports on the server's runtime, where tonic's client runs.
            let batch =
                opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
                    exporter,
                    opentelemetry_sdk::runtime::Tokio,
                )
                .build();
            let provider = SdkTracerProvider::builder()
                .with_span_processor(batch)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name("onecity")
                        .build(),
                )
                .build();
            let tracer = provider.tracer("onecity");
            let _ = PROVIDER.set(provider);
            Some(crate::observe::trace::layer(tracer))
        }
        None => None,
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
    Ok(())
}

/// Exports the spans still buffered (at shutdown).
pub fn flush() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(e) = provider.shutdown() {
            tracing::warn!(error = %e, "span export did not finish");
        }
    }
}
