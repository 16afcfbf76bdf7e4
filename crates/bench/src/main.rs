//! `onecity-bench`: onecity against the gRPC and disk ceilings of the same machine, in one
//! run. Absolute numbers on shared 2-core machines drift from run to run, so every figure
//! is printed beside a ceiling measured in the same run with the same client code, as a
//! ratio. See docs/performance.md for the scenarios, the targets and the last full run.
//!
//! Output: one JSON line per cell on stdout as it completes, then a human table and the
//! targets (pass/miss). Progress goes to stderr and is hidden when stderr is not a terminal.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

mod client;
mod cpu;
mod deadlines;
#[cfg(test)]
mod golden;
mod household;
mod inbox;
mod reassess;
mod rebuild;
mod scenarios;
mod stats;

use client::{Progress, Window};
use household::Pool;
use scenarios::Ctx;
use stats::Cell;

/// Benchmarks onecity over real gRPC on loopback against same-run ceilings.
#[derive(Debug, Parser)]
#[command(name = "onecity-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Every scenario very briefly (the test suite runs this; figures are meaningless).
    #[arg(long)]
    quick: bool,
    /// `rebuild` over 1,000,000 cases instead of 100,000.
    #[arg(long)]
    large: bool,
    /// Measured seconds per cell (default 10; a warm-up of a fifth of it, at most 2 s,
    /// comes first).
    #[arg(long, value_name = "N")]
    secs: Option<f64>,
    /// Run only this scenario, plus the ceilings it is compared with (repeatable).
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<Scenario>,
    /// Target a running server (`http://HOST:PORT`, demo tokens) instead of starting one
    /// in-process. `rebuild` always starts its own child server and is skipped here unless
    /// named with --scenario.
    #[arg(long, value_name = "URL")]
    addr: Option<String>,
    /// Cases in the `rebuild` log (overrides the default and --large).
    #[arg(long, value_name = "N")]
    cases: Option<u64>,
    /// Log backend of the in-process server: `sled` (a fresh data dir) or `jetstream` (a
    /// private nats-server with JetStream started for the run, storage in a temp dir,
    /// streams at one replica; needs `nats-server` on PATH). `rebuild` is sled only.
    #[arg(long, value_enum, default_value_t = Backend::Sled)]
    backend: Backend,
    /// Every cell over TLS: the in-process servers get a certificate of a CA made for the
    /// run, and the clients trust it. `submit` c=64 is also run against a plaintext server
    /// of the same run (`submit-plaintext`), and a new connection's cost is measured over
    /// TLS and plaintext (`connect-tls`, `connect-plaintext`).
    #[arg(long, conflicts_with = "addr")]
    tls: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sled,
    Jetstream,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The `deadlines` cell: a deadline worker's cold start over N open referrals and one
    /// simulated day's tick (1 % falling due), in this process; prints one JSON line.
    Deadlines {
        /// Open referrals in the log.
        #[arg(long, default_value_t = 1_000_000)]
        referrals: usize,
    },
    /// The `console-inbox` cell: the console's inbox page of one unit holding N referrals,
    /// in this process; prints one JSON line.
    Inbox {
        /// Referrals of the unit.
        #[arg(long, default_value_t = 10_000)]
        referrals: usize,
        /// Measured requests (after three warm-up ones).
        #[arg(long, default_value_t = 50)]
        requests: usize,
    },
    /// The `reassess` cell: N active cases, then a new policy version takes effect; the
    /// time until every case is re-assessed under it, in this process; prints one JSON
    /// line.
    Reassess {
        /// Active cases in the log.
        #[arg(long, default_value_t = 1_000_000)]
        cases: u64,
        /// Cases per sweep batch.
        #[arg(long, default_value_t = onecity_assessment::DEFAULT_SWEEP_BATCH)]
        batch: usize,
    },
    /// Internal: the `rebuild` scenario's child server over an existing log.
    #[command(hide = true)]
    ServeChild {
        /// The sled log directory.
        #[arg(long)]
        log: PathBuf,
        /// Serve with `record_reads = false` (the `find-cases-unrecorded` cell).
        #[arg(long)]
        unrecorded_reads: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Ceiling: `grpc.health.v1.Health/Check`.
    Noop,
    /// Ceiling: one durable 128-byte `EventLogService.Append`.
    DurableNoop,
    /// `SubmitApplication` at concurrency 1, 64, 256, and at 64 against an intake-only
    /// server (`submit-intake`, which the target judges).
    Submit,
    /// `Screen` at concurrency 64, in the default view (BASIC, which the target judges)
    /// and in the FULL view (`screen-full`).
    Screen,
    /// Submission until the referrals are visible: 200/s, 1,000/s, saturation (judged
    /// against `durable-noop` at [`ROUTE_CEILING_CONCURRENCY`]).
    Route,
    /// Cold start over a log of N cases.
    Rebuild,
    /// `FindCases` at concurrency 64 against the `rebuild` scenario's child, over its N
    /// cases (runs the rebuild too), then against a second child on the same log with
    /// `record_reads = false` (`find-cases-unrecorded`: what the access record costs).
    FindCases,
    /// `GetCase` at concurrency 64 with every read recorded (`get-case`), against a
    /// second in-process server with `record_reads = false` (`get-case-unrecorded`).
    GetCase,
    /// `SubmitApplication` at concurrency 64 against a fresh in-process server with
    /// metrics and tracing off (`submit-observe-off`), then against another with both on
    /// (`submit-observe-on`: the Prometheus recorder and endpoint, and every span through
    /// an OpenTelemetry tracer that exports nowhere). Last in a run: both are
    /// process-wide, so once on they stay on.
    Observe,
}

const CONCURRENCIES: [usize; 3] = [1, 64, 256];
/// Households are the same in every run, so runs differ only by the machine.
const HOUSEHOLD_SEED: u64 = 0x006f_6e65_6369_7479;
const SCREEN_CONCURRENCY: usize = 64;
const SUBMIT_INTAKE_CONCURRENCY: usize = 64;
const SUBMIT_UNCHECKED_CONCURRENCY: usize = 64;
const FIND_CASES_CONCURRENCY: usize = 64;
const GET_CASE_CONCURRENCY: usize = 64;
const OBSERVE_CONCURRENCY: usize = 64;
const ROUTE_RATES: [f64; 2] = [200.0, 1000.0];
/// `--tls`: the `submit` concurrency compared with plaintext.
const TLS_SUBMIT_CONCURRENCY: usize = 64;
const SATURATION_CONCURRENCY: usize = 256;
/// The `durable-noop` cell whose appends per second route saturation's routed cases per
/// second are judged against. Not the saturation's own concurrency: a routed case is three
/// commits in sequence and only the first comes from the saturating clients (the workers
/// append the other two with a few chunks in flight). The same cell is the ceiling of the
/// judged `submit-intake` target; docs/performance.md gives the reasoning.
const ROUTE_CEILING_CONCURRENCY: usize = 64;

/// One planned cell.
#[derive(Debug, Clone, Copy)]
enum Step {
    Noop(usize),
    DurableNoop(usize),
    Submit(usize),
    /// `SubmitApplication` against a second in-process server running only the intake
    /// (and log) role, as an intake node of a scaled-out deployment: intake's own cost,
    /// without routing workers on the same cores (cell `submit-intake`, which the `submit`
    /// target judges: a terminal talks to an intake node).
    SubmitIntake(usize),
    /// `SubmitApplication` against a second in-process server (every role) with
    /// `duplicate_check = false` (cell `submit-unchecked`): what the duplicate check costs.
    SubmitUnchecked(usize),
    /// `Screen` at a concurrency, in the default (BASIC) view or the FULL one.
    Screen(usize, bool),
    RouteOpen(f64),
    RouteSaturation(usize),
    Rebuild,
    /// `GetCase` against the main server (reads recorded) or, with `false`, against a
    /// second in-process server whose reads are not recorded.
    GetCase(usize, bool),
    /// `--tls`: `SubmitApplication` against the run's plaintext server.
    SubmitPlaintext(usize),
    /// `--tls`: a new connection and its first call, over TLS (`true`) or plaintext.
    Connect(bool),
    /// `SubmitApplication` against a fresh server with metrics and tracing on (`true`) or
    /// off.
    Observe(usize, bool),
}

/// New connections measured per `connect` cell.
const CONNECTS: usize = 200;

impl Step {
    fn label(&self) -> String {
        match self {
            Step::Noop(c) => format!("noop c={c}"),
            Step::DurableNoop(c) => format!("durable-noop c={c}"),
            Step::Submit(c) => format!("submit c={c}"),
            Step::SubmitIntake(c) => format!("submit-intake c={c}"),
            Step::SubmitUnchecked(c) => format!("submit-unchecked c={c}"),
            Step::Screen(c, false) => format!("screen c={c}"),
            Step::Screen(c, true) => format!("screen-full c={c}"),
            Step::RouteOpen(r) => format!("route {r:.0}/s"),
            Step::RouteSaturation(c) => format!("route saturation c={c}"),
            Step::Rebuild => "rebuild".into(),
            Step::GetCase(c, true) => format!("get-case c={c}"),
            Step::GetCase(c, false) => format!("get-case-unrecorded c={c}"),
            Step::SubmitPlaintext(c) => format!("submit-plaintext c={c}"),
            Step::Connect(true) => "connect-tls".into(),
            Step::Connect(false) => "connect-plaintext".into(),
            Step::Observe(c, true) => format!("submit-observe-on c={c}"),
            Step::Observe(c, false) => format!("submit-observe-off c={c}"),
        }
    }
}

/// The cells to run, in order: each concurrency's ceilings right before the scenario
/// compared with them, so drift between a figure and its ceiling is as small as possible.
fn plan(selected: &[Scenario], in_process: bool, sled: bool, tls: bool) -> Vec<Step> {
    let all = selected.is_empty();
    let has = |s: Scenario| all || selected.contains(&s);
    let mut steps = Vec::new();
    for c in CONCURRENCIES {
        if has(Scenario::Noop) || (has(Scenario::Screen) && c == SCREEN_CONCURRENCY) {
            steps.push(Step::Noop(c));
        }
        if has(Scenario::DurableNoop)
            || has(Scenario::Submit)
            || (has(Scenario::Route) && c == ROUTE_CEILING_CONCURRENCY)
        {
            steps.push(Step::DurableNoop(c));
        }
        if has(Scenario::Submit) {
            steps.push(Step::Submit(c));
            if tls && c == TLS_SUBMIT_CONCURRENCY {
                steps.push(Step::SubmitPlaintext(c));
            }
            if in_process && c == SUBMIT_INTAKE_CONCURRENCY {
                steps.push(Step::SubmitIntake(c));
            }
            if in_process && c == SUBMIT_UNCHECKED_CONCURRENCY {
                steps.push(Step::SubmitUnchecked(c));
            }
        }
        if has(Scenario::Screen) && c == SCREEN_CONCURRENCY {
            steps.push(Step::Screen(c, false));
            steps.push(Step::Screen(c, true));
        }
        if has(Scenario::GetCase) && in_process && c == GET_CASE_CONCURRENCY {
            steps.push(Step::GetCase(c, false));
            steps.push(Step::GetCase(c, true));
        }
    }
    if has(Scenario::Route) {
        steps.extend(ROUTE_RATES.iter().map(|r| Step::RouteOpen(*r)));
        steps.push(Step::RouteSaturation(SATURATION_CONCURRENCY));
    }
    if tls {
        steps.push(Step::Connect(true));
        steps.push(Step::Connect(false));
    }
    // The rebuild writes its log with `SledLog` directly and starts a sled child.
    let rebuild = has(Scenario::Rebuild) || has(Scenario::FindCases);
    let named = selected.contains(&Scenario::Rebuild) || selected.contains(&Scenario::FindCases);
    if rebuild && sled && (in_process || named) {
        steps.push(Step::Rebuild);
    }
    if has(Scenario::Observe) && in_process {
        steps.push(Step::Observe(OBSERVE_CONCURRENCY, false));
        steps.push(Step::Observe(OBSERVE_CONCURRENCY, true));
    }
    steps
}

// The same global allocator as the `onecity` binary (crates/onecity/src/main.rs): this
// binary hosts the server in-process (and as the rebuild's child), so it must allocate as
// the shipped server does to measure it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::ServeChild {
        log,
        unrecorded_reads,
    }) = cli.command
    {
        return exit(rebuild::serve_child(log, unrecorded_reads));
    }
    if let Some(Command::Deadlines { referrals }) = cli.command {
        let runtime = tokio::runtime::Runtime::new();
        return exit(
            runtime
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(deadlines::deadlines(referrals))),
        );
    }
    if let Some(Command::Reassess { cases, batch }) = cli.command {
        let runtime = tokio::runtime::Runtime::new();
        return exit(
            runtime
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(reassess::reassess(cases, batch))),
        );
    }
    if let Some(Command::Inbox {
        referrals,
        requests,
    }) = cli.command
    {
        let runtime = tokio::runtime::Runtime::new();
        return exit(
            runtime
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(inbox::inbox(referrals, requests))),
        );
    }
    exit(run(cli))
}

fn exit(r: anyhow::Result<()>) -> std::process::ExitCode {
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("onecity-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Settings derived from the flags.
#[derive(Debug, Clone)]
struct Settings {
    window: Window,
    drain_limit: Duration,
    quiesce_limit: Duration,
    pool_size: usize,
    rebuild_cases: u64,
    rebuild_concurrency: usize,
    rebuild_timeout: Duration,
}

fn settings(cli: &Cli) -> Settings {
    if cli.quick {
        let measure = Duration::from_secs_f64(cli.secs.unwrap_or(0.3));
        return Settings {
            window: Window {
                warmup: Duration::from_millis(100),
                measure,
            },
            drain_limit: Duration::from_secs(20),
            quiesce_limit: Duration::from_secs(10),
            pool_size: 64,
            rebuild_cases: cli.cases.unwrap_or(300),
            rebuild_concurrency: 32,
            rebuild_timeout: Duration::from_secs(60),
        };
    }
    let measure = Duration::from_secs_f64(cli.secs.unwrap_or(10.0).max(0.1));
    Settings {
        window: Window {
            warmup: (measure / 5).min(Duration::from_secs(2)),
            measure,
        },
        // Generous: behind a saturated intake the workers may need minutes to catch up,
        // and a cell measured over someone else's backlog would be wrong.
        drain_limit: Duration::from_secs(900),
        quiesce_limit: Duration::from_secs(900),
        pool_size: 4096,
        rebuild_cases: cli
            .cases
            .unwrap_or(if cli.large { 1_000_000 } else { 100_000 }),
        rebuild_concurrency: 256,
        rebuild_timeout: Duration::from_secs(900),
    }
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let s = settings(&cli);
    let steps = plan(
        &cli.scenarios,
        cli.addr.is_none(),
        cli.backend == Backend::Sled,
        cli.tls,
    );
    // `--tls`: a CA for the run; its certificate for 127.0.0.1 serves every in-process
    // server, and the clients trust it.
    let pki = tempfile::tempdir().context("temp dir for certificates")?;
    let tls = if cli.tls {
        let ca = onecity::tls::Ca::new("onecity-bench CA")?;
        let server = ca.issue(&["127.0.0.1".to_owned()], &[], 1)?;
        let (cert, key) = (pki.path().join("server.pem"), pki.path().join("server.key"));
        std::fs::write(&cert, &server.cert_pem)?;
        std::fs::write(&key, &server.key_pem)?;
        client::use_tls(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&ca.cert_pem)),
        );
        Some(onecity::config::TlsConfig {
            cert: Some(cert),
            key: Some(key),
            ..onecity::config::TlsConfig::default()
        })
    } else {
        None
    };
    // Client and server on separate runtimes with named threads, so each cell can say how
    // much CPU went to generating load and how much to serving it.
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads())
        .thread_name(cpu::CLIENT_THREADS)
        .enable_all()
        .build()?;
    let nats = match (cli.backend, &cli.addr) {
        (Backend::Jetstream, None) => Some(
            onecity_eventlog_jetstream::testing::NatsServer::start()
                .map_err(|e| anyhow::anyhow!(e))
                .context("private nats-server for --backend jetstream")?,
        ),
        _ => None,
    };
    // Each in-process server gets its own log: a fresh sled dir, or its own stream prefix
    // on the private nats-server (so the intake-only server's cases never reach the
    // other's workers).
    let log_for = |prefix: &str, dir: &Path| match &nats {
        Some(n) => onecity::config::LogSpec::JetStream {
            urls: n.url(),
            replicas: 1,
            prefix: prefix.into(),
        },
        None => onecity::config::LogSpec::Sled(dir.join("log")),
    };
    let mut servers = Vec::new();
    let url = match &cli.addr {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let (s, url) =
                InProcess::start(false, |dir: &Path| log_for("onecity", dir), tls.clone())?;
            servers.push(s);
            url
        }
    };
    let intake_url = if steps.iter().any(|s| matches!(s, Step::SubmitIntake(_))) {
        let (s, url) = InProcess::start(true, |dir: &Path| log_for("intake", dir), tls.clone())?;
        servers.push(s);
        Some(url)
    } else {
        None
    };
    let plaintext_url = if cli.tls {
        let (s, url) = InProcess::start(false, |dir: &Path| log_for("plaintext", dir), None)?;
        servers.push(s);
        Some(url)
    } else {
        None
    };
    let unchecked_url = if steps.iter().any(|s| matches!(s, Step::SubmitUnchecked(_))) {
        let (s, url) = InProcess::start_with(
            |config| config.duplicate_check = false,
            |dir: &Path| log_for("unchecked", dir),
            tls.clone(),
        )?;
        servers.push(s);
        Some(url)
    } else {
        None
    };
    let unrecorded_url = if steps.iter().any(|s| matches!(s, Step::GetCase(_, false))) {
        let (s, url) = InProcess::start_with(
            |config| config.record_reads = false,
            |dir: &Path| log_for("unrecorded", dir),
            tls.clone(),
        )?;
        servers.push(s);
        Some(url)
    } else {
        None
    };
    let observed: Option<Arc<ObservedServer>> =
        if steps.iter().any(|s| matches!(s, Step::Observe(..))) {
            let nats_url = nats.as_ref().map(|n| n.url());
            let tls = tls.clone();
            Some(Arc::new(move |on: bool| {
                let prefix = if on { "observed-on" } else { "observed-off" };
                let nats_url = nats_url.clone();
                InProcess::start_with(
                    |config| {
                        if on {
                            config.metrics_addr = "127.0.0.1:0".parse().expect("an address");
                        }
                    },
                    move |dir: &Path| match nats_url {
                        Some(urls) => onecity::config::LogSpec::JetStream {
                            urls,
                            replicas: 1,
                            prefix: prefix.into(),
                        },
                        None => onecity::config::LogSpec::Sled(dir.join("log")),
                    },
                    tls.clone(),
                )
            }))
        } else {
            None
        };
    // Spawned rather than run by `block_on`, so that even the top-level loop runs on the
    // client's named threads and its CPU is counted as the client's.
    let result = client_rt.block_on(async {
        let cli = Arc::new(cli);
        let (s, steps, url) = (s.clone(), steps.clone(), url.clone());
        tokio::spawn(async move {
            let urls = Urls {
                main: &url,
                intake: intake_url.as_deref(),
                plaintext: plaintext_url.as_deref(),
                unrecorded: unrecorded_url.as_deref(),
                unchecked: unchecked_url.as_deref(),
                observed: observed.as_deref(),
            };
            run_steps(&cli, &s, &steps, urls).await
        })
        .await
        .context("bench task")?
    });
    for s in servers {
        s.stop()?;
    }
    drop(nats);
    result
}

/// The server under test, in this process on its own runtime, over a fresh data dir.
struct InProcess {
    rt: tokio::runtime::Runtime,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _data: tempfile::TempDir,
}

impl InProcess {
    /// `intake_only`: the intake and log roles alone, with the routing-lag bound off
    /// (there are no workers here to measure a lag against).
    fn start(
        intake_only: bool,
        log: impl FnOnce(&Path) -> onecity::config::LogSpec,
        tls: Option<onecity::config::TlsConfig>,
    ) -> anyhow::Result<(InProcess, String)> {
        InProcess::start_with(
            |config| {
                if intake_only {
                    config.roles = vec![onecity::config::Role::Intake, onecity::config::Role::Log];
                    config.max_routing_lag = 0;
                }
            },
            log,
            tls,
        )
    }

    /// A server with the default config as `edit` changes it, over TLS with `tls`.
    fn start_with(
        edit: impl FnOnce(&mut onecity::config::Config),
        log: impl FnOnce(&Path) -> onecity::config::LogSpec,
        tls: Option<onecity::config::TlsConfig>,
    ) -> anyhow::Result<(InProcess, String)> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads())
            .thread_name(cpu::SERVER_THREADS)
            .enable_all()
            .build()?;
        let data = tempfile::tempdir().context("temp data dir")?;
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", listener.local_addr()?);
        let mut config = onecity::config::Config {
            data_dir: data.path().to_path_buf(),
            log: Some(log(data.path())),
            tls: tls.unwrap_or_default(),
            // A cell that measures metrics turns them on in `edit`.
            metrics_addr: onecity::config::MetricsAddr::OFF,
            console_addr: onecity::config::ConsoleAddr::Off,
            ..onecity::config::Config::default()
        };
        edit(&mut config);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(onecity::server::run(listener, config, async move {
            let _ = stopped.await;
        }));
        Ok((
            InProcess {
                rt,
                stop,
                task,
                _data: data,
            },
            url,
        ))
    }

    fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.rt
            .block_on(self.task)
            .context("server task")?
            .context("server")
    }
}

/// CPU count and model, and the load average: other work on a shared machine moves every
/// figure, so the report says how busy the machine was.
fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{} x {model}, {}", threads(), loadavg())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "load average unknown".into(),
        |l| {
            let v: Vec<&str> = l.split_whitespace().take(3).collect();
            format!("load average {}", v.join(" "))
        },
    )
}

/// The servers of a run.
#[derive(Clone, Copy)]
struct Urls<'a> {
    /// The server under test.
    main: &'a str,
    /// The intake-only server (`submit-intake`).
    intake: Option<&'a str>,
    /// `--tls`: the plaintext server compared with.
    plaintext: Option<&'a str>,
    /// Every role, reads not recorded (`get-case-unrecorded`).
    unrecorded: Option<&'a str>,
    /// Every role, no duplicate check (`submit-unchecked`).
    unchecked: Option<&'a str>,
    /// Starts a fresh server of the run's backend with metrics and tracing on (`true`)
    /// or off (the `observe` cells), when they are planned.
    observed: Option<&'a ObservedServer>,
}

/// Starts an in-process server for an `observe` cell.
type ObservedServer = dyn Fn(bool) -> anyhow::Result<(InProcess, String)> + Send + Sync;

async fn run_steps(cli: &Cli, s: &Settings, steps: &[Step], urls: Urls<'_>) -> anyhow::Result<()> {
    let (url, intake_url) = (urls.main, urls.intake);
    let machine_before = machine();
    let progress = Progress::new(steps.len());
    progress.message("generating households");
    let pool = Arc::new(
        tokio::task::spawn_blocking({
            let n = s.pool_size;
            move || Pool::generate(n, HOUSEHOLD_SEED)
        })
        .await??,
    );
    progress.note(&format!("onecity-bench against {url}: {}", pool.describe()));
    let ctx = Ctx {
        url: url.to_owned(),
        pool: Arc::clone(&pool),
        window: s.window,
        drain_limit: s.drain_limit,
        progress: progress.clone(),
    };
    progress.message("waiting for the servers to be ready");
    for u in [
        Some(url),
        intake_url,
        urls.plaintext,
        urls.unrecorded,
        urls.unchecked,
    ]
    .into_iter()
    .flatten()
    {
        scenarios::ready(u, s.quiesce_limit).await?;
    }
    let mut cells: Vec<Cell> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let _bar = progress.cell(i + 1, &step.label(), s.window.total());
        if i == 0 && !matches!(step, Step::Rebuild) {
            scenarios::quiesce(url, s.quiesce_limit).await?;
        }
        // More cells the step measured (the rebuild's children answer `find-cases`).
        let mut also: Vec<Cell> = Vec::new();
        let mut cell = match *step {
            Step::Noop(c) => scenarios::noop(&ctx, c).await,
            Step::DurableNoop(c) => scenarios::durable_noop(&ctx, c).await,
            Step::Submit(c) => scenarios::submit(&ctx, c).await,
            Step::SubmitIntake(c) => {
                let ctx = Ctx {
                    url: intake_url.context("no intake-only server")?.to_owned(),
                    ..ctx.clone()
                };
                scenarios::submit(&ctx, c).await.map(|mut cell| {
                    cell.scenario = "submit-intake".into();
                    cell
                })
            }
            Step::SubmitUnchecked(c) => {
                let unchecked = urls
                    .unchecked
                    .context("no server without the duplicate check")?;
                let ctx = Ctx {
                    url: unchecked.to_owned(),
                    ..ctx.clone()
                };
                let cell = scenarios::submit(&ctx, c).await.map(|mut cell| {
                    cell.scenario = "submit-unchecked".into();
                    cell
                });
                // Its own routing backlog must not weigh on the next cells.
                scenarios::quiesce(unchecked, s.quiesce_limit).await?;
                cell
            }
            Step::SubmitPlaintext(c) => {
                let plaintext = urls.plaintext.context("no plaintext server")?;
                let ctx = Ctx {
                    url: plaintext.to_owned(),
                    ..ctx.clone()
                };
                let cell = scenarios::submit(&ctx, c).await.map(|mut cell| {
                    cell.scenario = "submit-plaintext".into();
                    cell
                });
                // Its own routing backlog must not weigh on the next cells.
                scenarios::quiesce(plaintext, s.quiesce_limit).await?;
                cell
            }
            Step::Connect(tls) => {
                let target = if tls {
                    url
                } else {
                    urls.plaintext.context("no plaintext server")?
                };
                scenarios::connect(target, CONNECTS).await
            }
            Step::Screen(c, full) => scenarios::screen(&ctx, c, full).await,
            Step::GetCase(c, true) => scenarios::get_case(&ctx, c, "get-case").await,
            Step::GetCase(c, false) => {
                let ctx = Ctx {
                    url: urls
                        .unrecorded
                        .context("no server with record_reads off")?
                        .to_owned(),
                    ..ctx.clone()
                };
                scenarios::get_case(&ctx, c, "get-case-unrecorded").await
            }
            Step::RouteOpen(r) => scenarios::route_open(&ctx, r).await,
            Step::RouteSaturation(c) => scenarios::route_saturation(&ctx, c).await,
            Step::Observe(c, on) => {
                let start = urls.observed.context("no observed server")?;
                // The server gets a runtime of its own: built and dropped off the
                // client's async threads.
                let (server, observed_url) = tokio::task::block_in_place(|| {
                    if on {
                        onecity::observe::install();
                        onecity::observe::trace::install_local_tracer("info");
                    }
                    start(on)
                })?;
                scenarios::ready(&observed_url, s.quiesce_limit).await?;
                let ctx = Ctx {
                    url: observed_url.clone(),
                    ..ctx.clone()
                };
                let label = if on {
                    "submit-observe-on"
                } else {
                    "submit-observe-off"
                };
                let cell = scenarios::submit(&ctx, c).await.map(|mut cell| {
                    cell.scenario = label.into();
                    cell
                });
                scenarios::quiesce(&observed_url, s.quiesce_limit).await?;
                tokio::task::block_in_place(|| server.stop())?;
                cell
            }
            Step::Rebuild => {
                let find = (cli.scenarios.is_empty()
                    || cli.scenarios.contains(&Scenario::FindCases))
                .then_some((FIND_CASES_CONCURRENCY, s.window));
                rebuild::rebuild(
                    &pool,
                    s.rebuild_cases,
                    s.rebuild_concurrency,
                    s.rebuild_timeout,
                    find,
                    &progress,
                )
                .await
                .map(|(cell, found)| {
                    also = found;
                    cell
                })
            }
        }
        .with_context(|| format!("cell {}", step.label()))?;
        attach_ceiling(&mut cell, step, &cells);
        if !matches!(step, Step::Rebuild) {
            // The cell's cases may still be assessed and handed off: the next cell starts
            // on a quiet server, and how long that took is a figure of this cell.
            progress.message(&format!(
                "{}: waiting for the server to settle",
                step.label()
            ));
            let settle = scenarios::quiesce(url, s.quiesce_limit).await?;
            cell.extra.insert(
                "settle_s".into(),
                serde_json::json!((settle.as_secs_f64() * 100.0).round() / 100.0),
            );
        }
        println!("{}", cell.json());
        cells.push(cell);
        for found in also {
            println!("{}", found.json());
            cells.push(found);
        }
    }
    progress.finish();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    println!();
    println!("{}", report(&cells, &command, s, cli, pool.describe()));
    println!("machine: {machine_before} at start, {} at end", loadavg());
    Ok(())
}

fn find<'a>(cells: &'a [Cell], scenario: &str, c: usize) -> Option<&'a Cell> {
    cells
        .iter()
        .find(|x| x.scenario == scenario && x.concurrency == Some(c) && x.offered_per_s.is_none())
}

fn attach_ceiling(cell: &mut Cell, step: &Step, earlier: &[Cell]) {
    cell.ceiling = match *step {
        Step::Submit(c) | Step::SubmitIntake(c) | Step::SubmitUnchecked(c) => {
            find(earlier, "durable-noop", c).map(|d| (format!("durable-noop c={c}"), d.ops_per_s))
        }
        Step::Screen(c, _) => {
            find(earlier, "noop", c).map(|d| (format!("noop c={c}"), d.ops_per_s))
        }
        Step::RouteOpen(r) => Some(("offered load".into(), r)),
        Step::RouteSaturation(_) => best_submit(earlier)
            .map(|b| (format!("best submit ({})", b.load()), b.ops_per_s))
            .or_else(|| {
                cell.extra
                    .get("submitted_per_s")
                    .and_then(|v| v.as_f64())
                    .map(|v| ("intake in the same cell".into(), v))
            }),
        // Judged against the off cell (`targets`), not a ceiling.
        Step::Observe(..) => None,
        Step::SubmitPlaintext(c) => {
            find(earlier, "durable-noop", c).map(|d| (format!("durable-noop c={c}"), d.ops_per_s))
        }
        Step::GetCase(c, true) => find(earlier, "get-case-unrecorded", c)
            .map(|d| (format!("get-case-unrecorded c={c}"), d.ops_per_s)),
        Step::Noop(_)
        | Step::DurableNoop(_)
        | Step::Rebuild
        | Step::Connect(_)
        | Step::GetCase(_, false) => cell.ceiling.clone(),
    };
}

fn best_submit(cells: &[Cell]) -> Option<&Cell> {
    cells
        .iter()
        .filter(|c| c.scenario == "submit")
        .max_by(|a, b| a.ops_per_s.total_cmp(&b.ops_per_s))
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.digits$}"))
}

/// The human table and the targets.
fn report(cells: &[Cell], command: &str, s: &Settings, cli: &Cli, pool: String) -> String {
    use std::fmt::Write as _;
    let quick = cli.quick;
    let mut out = String::new();
    let _ = writeln!(out, "command: {command}");
    let backend = match (&cli.addr, cli.backend) {
        (Some(addr), _) => format!("the server at {addr}"),
        (None, Backend::Sled) => "in-process server, sled log in a fresh data dir".into(),
        (None, Backend::Jetstream) => {
            "in-process server, JetStream log (private nats-server, streams at one replica)".into()
        }
    };
    let _ = writeln!(out, "backend: {backend}");
    let _ = writeln!(
        out,
        "cells: {:.1} s warm-up + {:.1} s measured; client tasks share HTTP/2 connections ({} per connection); {pool}",
        s.window.warmup.as_secs_f64(),
        s.window.measure.as_secs_f64(),
        client::TASKS_PER_CONNECTION
    );
    if quick {
        let _ = writeln!(
            out,
            "QUICK RUN: cells are too short for the figures to mean anything"
        );
    }
    let _ = writeln!(
        out,
        "{:<17} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7} {:>24} {:>6}  cpu cores client/server/writer/other",
        "scenario",
        "load",
        "ops/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "errors",
        "ceiling (ops/s)",
        "ratio",
    );
    for c in cells {
        let errors: u64 = c.errors.values().sum();
        let ceiling = c
            .ceiling
            .as_ref()
            .map_or_else(|| "-".into(), |(n, v)| format!("{n} {v:.0}"));
        let _ = writeln!(
            out,
            "{:<17} {:>9} {:>10.1} {:>8} {:>8} {:>8} {:>8} {:>7} {:>24} {:>6}  {}",
            c.scenario,
            c.load(),
            c.ops_per_s,
            fmt_opt(c.ms(0.5), 2),
            fmt_opt(c.ms(0.9), 2),
            fmt_opt(c.ms(0.99), 2),
            fmt_opt(c.ms(1.0), 2),
            errors,
            ceiling,
            fmt_opt(c.ratio(), 2),
            c.cpu.as_ref().map_or_else(|| "-".into(), |x| x.short())
        );
        let e = |k: &str| c.extra.get(k).map_or("-".into(), |v| v.to_string());
        if c.scenario == "route" {
            let _ = writeln!(
                out,
                "{:<17} {:>9} submitted {}/s, drained {} s after the window, errors {:?}",
                "",
                "",
                e("submitted_per_s"),
                e("drain_s"),
                c.errors
            );
        }
        if c.scenario == "submit-intake" {
            let _ = writeln!(
                out,
                "{:<17} {:>9} intake and log roles alone, routing-lag bound off: an intake node's own cost, the judged submit figure",
                "",
                ""
            );
        }
        if c.scenario == "submit" {
            let _ = writeln!(
                out,
                "{:<17} {:>9} the workers routed this cell's cases {} s after it ended",
                "",
                "",
                e("settle_s")
            );
        }
        if c.scenario == "rebuild" {
            let _ = writeln!(
                out,
                "{:<17} {:>9} {} cases / {} events / {} MiB log written in {} s; ready in {} s (GetCase {} s, ListReferrals {} s) using {} s of child CPU; peak RSS {} MiB ({} MiB when GetCase answered); ceiling: read every event once in {} s",
                "",
                "",
                e("cases"),
                e("events"),
                e("log_mib"),
                e("generate_s"),
                e("ready_s"),
                e("get_case_s"),
                e("list_referrals_s"),
                e("child_cpu_s"),
                e("peak_rss_mib"),
                e("rss_at_get_case_mib"),
                e("scan_s"),
            );
        } else if !c.errors.is_empty() {
            let _ = writeln!(out, "{:<17} {:>9} errors {:?}", "", "", c.errors);
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "targets (2-core machine):");
    for t in targets(cells) {
        let _ = writeln!(
            out,
            "  {:<4} {:<66} {}",
            match (t.judged, t.pass) {
                (false, _) => "info",
                (true, Some(true)) => "pass",
                (true, Some(false)) => "MISS",
                (true, None) => "n/a",
            },
            t.name,
            t.measured
        );
    }
    out
}

struct Target {
    name: String,
    measured: String,
    pass: Option<bool>,
    /// `false` for a figure shown beside a target to explain it.
    judged: bool,
}

/// `cell` against the ceiling attached to it: judged when its ratio is at least `min`.
fn ratio_target(name: &str, cell: Option<&Cell>, min: f64) -> Target {
    ratio_of(name, cell.and_then(|c| Some((c, c.ceiling.clone()?))), min)
}

/// `cell` against another cell of the run (`ceiling`), not the one attached to it.
fn versus(name: &str, cell: Option<&Cell>, ceiling: Option<&Cell>, min: f64) -> Target {
    let ceiling = ceiling.map(|x| (format!("{} {}", x.scenario, x.load()), x.ops_per_s));
    ratio_of(name, cell.zip(ceiling), min)
}

fn ratio_of(name: &str, measured: Option<(&Cell, (String, f64))>, min: f64) -> Target {
    let ratio = measured
        .as_ref()
        .filter(|(_, (_, ceiling))| *ceiling > 0.0)
        .map(|(c, (_, ceiling))| c.ops_per_s / ceiling);
    Target {
        name: name.into(),
        measured: match (&measured, ratio) {
            (Some((c, (ceiling_name, ceiling))), Some(r)) => format!(
                "{:.0}% ({:.0} vs {ceiling_name} {ceiling:.0} ops/s)",
                r * 100.0,
                c.ops_per_s,
            ),
            _ => "not measured".into(),
        },
        pass: ratio.map(|r| r >= min),
        judged: true,
    }
}

/// Shown beside the judged targets to explain them, not judged.
fn info(t: Target) -> Target {
    Target { judged: false, ..t }
}

fn targets(cells: &[Cell]) -> Vec<Target> {
    let mut out = Vec::new();
    if let Some(on) = find(cells, "submit-observe-on", OBSERVE_CONCURRENCY) {
        let c = OBSERVE_CONCURRENCY;
        out.push(versus(
            &format!("submit c={c} with metrics and tracing on >= 95% of both off"),
            Some(on),
            find(cells, "submit-observe-off", c),
            0.95,
        ));
    }
    if let Some(plaintext) = find(cells, "submit-plaintext", TLS_SUBMIT_CONCURRENCY) {
        let c = TLS_SUBMIT_CONCURRENCY;
        out.push(versus(
            &format!("--tls: submit c={c} over tls >= 85% of submit-plaintext c={c}"),
            find(cells, "submit", c),
            Some(plaintext),
            0.85,
        ));
    }
    let c = SUBMIT_INTAKE_CONCURRENCY;
    out.push(ratio_target(
        &format!("submit-intake c={c} >= 80% of durable-noop c={c}"),
        find(cells, "submit-intake", c),
        0.8,
    ));
    out.push(info(ratio_target(
        &format!("  issue 6: submit c={c} (one process) >= 50% of durable-noop c={c}"),
        find(cells, "submit", c),
        0.5,
    )));
    let saturation = cells
        .iter()
        .find(|c| c.scenario == "route" && c.offered_per_s.is_none());
    let c = ROUTE_CEILING_CONCURRENCY;
    out.push(versus(
        &format!("route saturation routed/s >= 30% of durable-noop c={c} appends/s"),
        saturation,
        find(cells, "durable-noop", c),
        0.3,
    ));
    let c = SATURATION_CONCURRENCY;
    out.push(info(versus(
        &format!("  the same against durable-noop c={c}"),
        saturation,
        find(cells, "durable-noop", c),
        0.3,
    )));
    let c = SUBMIT_UNCHECKED_CONCURRENCY;
    out.push(versus(
        &format!("submit c={c} (duplicate check) >= 90% of submit-unchecked c={c}"),
        find(cells, "submit", c),
        find(cells, "submit-unchecked", c),
        0.9,
    ));
    let c = GET_CASE_CONCURRENCY;
    out.push(ratio_target(
        &format!("get-case c={c} (reads recorded) >= 70% of get-case-unrecorded c={c}"),
        find(cells, "get-case", c),
        0.7,
    ));
    let c = SCREEN_CONCURRENCY;
    out.push(ratio_target(
        &format!("screen c={c} (BASIC) >= 50% of noop c={c}"),
        find(cells, "screen", c),
        0.5,
    ));
    out.push(info(ratio_target(
        &format!("  issue 6: screen c={c} >= 80% of noop c={c}"),
        find(cells, "screen", c),
        0.8,
    )));
    out.push(info(ratio_target(
        &format!("  screen-full c={c} (every rule explained)"),
        find(cells, "screen-full", c),
        0.0,
    )));
    out.push(ratio_target(
        "route sustained >= 50% of the submit rate",
        saturation,
        0.5,
    ));
    let at200 = cells
        .iter()
        .find(|c| c.scenario == "route" && c.offered_per_s == Some(200.0));
    out.push(Target {
        name: "route e2e p99 <= 20 ms at 200 cases/s".into(),
        measured: at200
            .and_then(|c| c.ms(0.99))
            .map_or("not measured".into(), |v| format!("p99 {v:.1} ms")),
        pass: at200.and_then(|c| c.ms(0.99)).map(|v| v <= 20.0),
        judged: true,
    });
    if let Some(r) = cells.iter().find(|c| c.scenario == "rebuild") {
        let cases = r.extra.get("cases").and_then(|v| v.as_f64()).unwrap_or(0.0);
        let ready = r.extra.get("ready_s").and_then(|v| v.as_f64());
        let rss = r.extra.get("peak_rss_mib").and_then(|v| v.as_f64());
        let exact = (cases - 1_000_000.0).abs() < 0.5;
        // Below 1M nothing is judged: fixed start-up costs dominate small logs, and the
        // page cache and sled's recovery make large ones worse than linear.
        out.push(Target {
            name: "rebuild <= 30 s for 1M cases".into(),
            measured: match ready {
                None => "not measured".into(),
                Some(v) if exact => format!("{v:.1} s"),
                Some(v) => format!(
                    "{v:.1} s for {cases:.0} cases (~{:.0} s for 1M if linear; run --large)",
                    v * 1_000_000.0 / cases.max(1.0)
                ),
            },
            pass: ready.filter(|_| exact).map(|v| v <= 30.0),
            judged: true,
        });
        let found = find(cells, "find-cases", FIND_CASES_CONCURRENCY);
        let p99 = found.and_then(|c| c.ms(0.99));
        // What the durable access record costs: the same calls, unrecorded.
        let unrecorded = find(cells, "find-cases-unrecorded", FIND_CASES_CONCURRENCY)
            .and_then(|c| c.ms(0.99))
            .map_or_else(String::new, |v| format!(" ({v:.1} ms unrecorded)"));
        out.push(Target {
            name: format!("find-cases c={FIND_CASES_CONCURRENCY} p99 <= 5 ms over 1M cases"),
            measured: match p99 {
                None => "not measured".into(),
                Some(v) if exact => format!("p99 {v:.1} ms{unrecorded}"),
                Some(v) => {
                    format!("p99 {v:.1} ms{unrecorded} over {cases:.0} cases (run --large)")
                }
            },
            pass: p99.filter(|_| exact).map(|v| v <= 5.0),
            judged: true,
        });
        out.push(Target {
            name: "rebuild peak RSS <= 1 GiB for 1M cases".into(),
            measured: rss.map_or("not measured".into(), |v| {
                if exact {
                    format!("{v:.0} MiB")
                } else {
                    format!("{v:.0} MiB for {cases:.0} cases (run --large)")
                }
            }),
            pass: rss.filter(|_| exact).map(|v| v <= 1024.0),
            judged: true,
        });
    }
    out
}
