//! The load-generating client: authenticated channels over several HTTP/2 connections, a
//! closed-loop driver, and the progress display. Every scenario and every ceiling goes
//! through this same code, so their ratio compares server work, not client differences.

use std::future::Future;
use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::cpu::{CpuShare, Snapshot};
use crate::stats::{code_name, Samples};

/// Tasks sharing one HTTP/2 connection. Real deployments put many terminals behind a
/// proxy, and one connection per task would measure the kernel's accept path instead.
pub const TASKS_PER_CONNECTION: usize = 16;

/// Connections for `concurrency` tasks.
pub fn connections_for(concurrency: usize) -> usize {
    concurrency.div_ceil(TASKS_PER_CONNECTION).max(1)
}

pub use onecity_eventlog_grpc::Bearer;

/// A channel with a token.
pub type Authed = InterceptedService<Channel, Bearer>;

/// Several HTTP/2 connections to one server; task `t` uses connection `t % n`.
#[derive(Debug, Clone)]
pub struct Conns {
    channels: Vec<Channel>,
}

/// The TLS of every `https://` connection of this run (`--tls`), set once at start.
static CLIENT_TLS: std::sync::OnceLock<ClientTlsConfig> = std::sync::OnceLock::new();

/// Sets the TLS of the run's `https://` connections (the CA of the in-process servers).
pub fn use_tls(tls: ClientTlsConfig) {
    let _ = CLIENT_TLS.set(tls);
}

/// The endpoint of `url`, with the run's TLS for `https://`.
pub fn endpoint(url: &str) -> anyhow::Result<Endpoint> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("bad server url {url}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5));
    if url.starts_with("https://") {
        let tls = CLIENT_TLS
            .get()
            .cloned()
            .context("an https:// server needs --tls")?;
        endpoint = endpoint.tls_config(tls)?;
    }
    Ok(endpoint)
}

impl Conns {
    /// Opens `n` connections (each `connect` of an endpoint is its own TCP connection),
    /// retrying for a while: an in-process server may not be accepting yet.
    pub async fn connect(url: &str, n: usize) -> anyhow::Result<Conns> {
        let endpoint = endpoint(url)?;
        let mut channels = Vec::with_capacity(n);
        for _ in 0..n.max(1) {
            channels.push(connect_retrying(&endpoint).await?);
        }
        Ok(Conns { channels })
    }

    /// The channel of task `t`.
    pub fn channel(&self, t: usize) -> Channel {
        self.channels[t % self.channels.len()].clone()
    }

    /// The channel of task `t` with `token`.
    pub fn authed(&self, t: usize, token: &str) -> Authed {
        InterceptedService::new(
            self.channel(t),
            Bearer::new(token).expect("tokens are visible ASCII"),
        )
    }
}

async fn connect_retrying(endpoint: &Endpoint) -> anyhow::Result<Channel> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match endpoint.connect().await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => {
                return Err(anyhow::anyhow!("cannot connect to {}: {e}", endpoint.uri()))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// How long a cell runs: a warm-up that is not measured, then the measured window.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Not measured (connections, caches and the log's batch sizes settle).
    pub warmup: Duration,
    /// Measured.
    pub measure: Duration,
}

impl Window {
    /// Both parts.
    pub fn total(&self) -> Duration {
        self.warmup + self.measure
    }
}

/// What a closed-loop run measured.
#[derive(Debug)]
pub struct Run {
    /// Successful operations started in the measured window.
    pub ok: usize,
    /// Latencies (of those) and errors.
    pub samples: Samples,
    /// CPU over the measured window.
    pub cpu: CpuShare,
}

/// Runs `op` back to back from `concurrency` tasks for `window`. `op(task, i)` is the
/// `i`-th call of task `task`. Only calls started inside the measured window count; the
/// throughput is those successful calls divided by the window.
pub async fn closed_loop<F, Fut>(concurrency: usize, window: Window, op: F) -> Run
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let measure_from = start + window.warmup;
    let end = measure_from + window.measure;
    let cpu = tokio::spawn(cpu_over(measure_from, end));
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let op = Arc::clone(&op);
            tokio::spawn(async move {
                let mut samples = Samples::default();
                let mut ok = 0usize;
                let mut i = 0u64;
                loop {
                    let s = Instant::now();
                    if s >= end {
                        break;
                    }
                    let r = op(t, i).await;
                    i += 1;
                    if s < measure_from {
                        continue;
                    }
                    match r {
                        Ok(()) => {
                            ok += 1;
                            samples.latencies.push(s.elapsed());
                        }
                        Err(status) => samples.error(code_name(status.code())),
                    }
                }
                (ok, samples)
            })
        })
        .collect();
    let mut samples = Samples::default();
    let mut ok = 0;
    for t in tasks {
        match t.await {
            Ok((n, s)) => {
                ok += n;
                samples.merge(s);
            }
            Err(_) => samples.error("bench_task_panicked"),
        }
    }
    let cpu = cpu.await.expect("cpu sampler");
    Run { ok, samples, cpu }
}

/// CPU use between two instants (sleeps until each).
pub async fn cpu_over(from: Instant, to: Instant) -> CpuShare {
    tokio::time::sleep_until(from).await;
    let a = Snapshot::take();
    tokio::time::sleep_until(to).await;
    Snapshot::take().since(&a)
}

/// Progress on stderr: one bar per cell, hidden when stderr is not a terminal (CI, pipes,
/// the test suite), so the JSON on stdout stays clean either way.
#[derive(Debug, Clone)]
pub struct Progress {
    bar: ProgressBar,
    cells: usize,
}

impl Progress {
    /// For a run of `cells` cells.
    pub fn new(cells: usize) -> Progress {
        let bar = ProgressBar::with_draw_target(
            Some(1),
            if std::io::stderr().is_terminal() {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        bar.set_style(
            ProgressStyle::with_template("{prefix:>8} {msg:30} [{wide_bar}] {pos}/{len}")
                .expect("template")
                .progress_chars("=> "),
        );
        Progress { bar, cells }
    }

    /// Starts cell `index` (1-based): the bar fills over `duration` by wall time.
    pub fn cell(&self, index: usize, label: &str, duration: Duration) -> CellProgress {
        self.bar.set_prefix(format!("{index}/{}", self.cells));
        self.bar.set_message(label.to_owned());
        let tenths = (duration.as_millis() / 100).max(1) as u64;
        self.bar.set_length(tenths);
        self.bar.set_position(0);
        let bar = self.bar.clone();
        let ticker = tokio::spawn(async move {
            let start = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                bar.set_position(((start.elapsed().as_millis() / 100) as u64).min(tenths));
            }
        });
        CellProgress { ticker }
    }

    /// A bar counting items (e.g. cases written), for long steps that are not timed.
    pub fn count(&self, label: &str, total: u64) -> ProgressBar {
        self.bar.set_message(label.to_owned());
        self.bar.set_length(total);
        self.bar.set_position(0);
        self.bar.clone()
    }

    /// Replaces the message (e.g. "draining").
    pub fn message(&self, msg: &str) {
        self.bar.set_message(msg.to_owned());
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// Prints a line above the bar (or plainly when hidden).
    pub fn note(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }
}

/// Stops the cell's ticker when dropped.
#[derive(Debug)]
pub struct CellProgress {
    ticker: tokio::task::JoinHandle<()>,
}

impl Drop for CellProgress {
    fn drop(&mut self) {
        self.ticker.abort();
    }
}
