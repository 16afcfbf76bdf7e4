//! `onecity serve`: wires the service roles to a log backend and serves them on one
//! listener. Every role talks to the others only through the log, so the same wiring
//! works whether the log is embedded (sled) or remote.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use onecity_assessment::grpc::EligibilityGrpc;
use onecity_assessment::{ActiveCases, Assessor, PolicySweeper, Screener};
use onecity_domain::Partition;
use onecity_eligibility::{Catalogue, PolicyBook};
use onecity_eventlog::leases::{hold, LeaseTiming, Leases, MemoryLeases, Share};
use onecity_eventlog::projection::{self, Projection};
use onecity_eventlog::quarantine::Redo;
use onecity_eventlog::retry::Backoff;
use onecity_eventlog::{EventLog, Stamped};
use onecity_eventlog_grpc::{EventLogGrpc, RemoteLog};
use onecity_eventlog_jetstream::{JetStreamConfig, JetStreamLog, NatsAuth};
use onecity_eventlog_sled::{SledConfig, SledLog};
use onecity_handoff::grpc::HandoffGrpc;
use onecity_handoff::{
    DeadlinePolicy, DeadlineWorker, Handoff, HandoffWorker, Inbox, LinkageWorker,
};
use onecity_intake::grpc::IntakeGrpc;
use onecity_intake::{Backpressure, Gauge, Intake, PersonIndex, PersonKey, Watched};
use onecity_monitoring::grpc::MonitoringGrpc;
use onecity_monitoring::{Monitoring, Statistics, Warnings};
use onecity_service::access::Access;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService as _;
use tonic::service::interceptor::InterceptedService;
use uuid::Uuid;

use crate::admin::grpc::AdminGrpc;
use crate::admin::{Admin, Workers};
use crate::auth::{AdminAuth, Auth, EventLogAuth};
use crate::config::{Config, ConsoleAddr, LogSpec, Role, DEFAULT_CONSOLE_ADDR};
use crate::health::{supervise, Vitals, WatchedLog};
use crate::late::Late;
use crate::observe::{RpcLayer, Sources, Traced};
use crate::tls::{ClientTlsFiles, ServerTls};
use onecity_proto::v1::admin_service_server::AdminServiceServer;
use onecity_proto::v1::eligibility_service_server::EligibilityServiceServer;
use onecity_proto::v1::event_log_service_server::EventLogServiceServer;
use onecity_proto::v1::handoff_service_server::HandoffServiceServer;
use onecity_proto::v1::intake_service_server::IntakeServiceServer;
use onecity_proto::v1::monitoring_service_server::MonitoringServiceServer;

/// The identity the intake role stamps on the commits it appends in-process
/// (`appended_by`; the workers use their `ACTOR`).
const INTAKE_APPENDS_AS: &str = "service:intake";
/// The identity of the admin service's own appends (releasing a retried quarantine).
const ADMIN_APPENDS_AS: &str = "service:admin";

/// A handle on `log` that stamps its appends with `role` (see [`Stamped`]). Over a
/// `remote:` log the serving process stamps this process's token instead.
///
/// Its appends carry the trace context of the call or chunk that makes them ([`Traced`]);
/// the `EventLogService` does not use it, and stores other processes' events as sent.
fn stamped(log: &Arc<dyn EventLog>, role: &str) -> Arc<dyn EventLog> {
    let traced: Arc<dyn EventLog> = Arc::new(Traced::new(Arc::clone(log)));
    Arc::new(Stamped::new(traced, role))
}

/// Longest a unary call may take before the server answers `CANCELLED`/`DEADLINE_EXCEEDED`
/// (a client's shorter `grpc-timeout` wins).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How often an idle HTTP/2 connection is pinged, so dead peers do not hold resources.
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a ping may go unanswered before the connection is closed.
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Concurrent calls (HTTP/2 streams) one connection may have open.
const MAX_CONCURRENT_STREAMS: u32 = 256;
/// How long a command other than `serve` (`log export`, …) waits for a JetStream log to
/// become reachable; `serve` waits as long as it takes.
const JETSTREAM_COMMAND_PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// Whether a process with the log `spec` reaches the store itself (a sled store it owns,
/// or JetStream) rather than through another onecity's `EventLogService`: only then may
/// it serve that service, so a `remote:` log is never re-served (a proxy of a proxy).
fn reaches_store(spec: &LogSpec) -> bool {
    !matches!(spec, LogSpec::Remote(_))
}

/// Opens the configured log backend for `serve`. A JetStream log also gives the leases
/// its worker instances share their partitions through; the other backends have none
/// (see [`worker_partitions`]). A JetStream cluster out of reach is waited for as long as
/// it takes (see [`connect_jetstream`]).
async fn open_log(config: &Config) -> anyhow::Result<Opened> {
    match config.log_spec() {
        LogSpec::JetStream {
            urls,
            replicas,
            prefix,
        } => {
            let auth = config.nats.auth()?;
            let (log, leases) =
                connect_jetstream(&urls, replicas, prefix, auth, true, None).await?;
            Ok((Arc::new(log), leases))
        }
        spec => {
            let (log, _) = open_log_spec(
                &spec,
                config.log_token.as_deref(),
                &ClientTlsFiles::of(&config.tls),
            )
            .await?;
            Ok((log, None))
        }
    }
}

/// Opens a log backend from its spec; `token` is presented to a `remote:` log, over TLS
/// with `tls` for `remote:https://`.
pub async fn open_log_spec(
    spec: &LogSpec,
    token: Option<&str>,
    tls: &ClientTlsFiles,
) -> anyhow::Result<(Arc<dyn EventLog>, bool)> {
    match spec.clone() {
        LogSpec::Sled(path) => {
            let log = SledLog::open(&path, SledConfig::default())
                .with_context(|| format!("open the event log in {}", path.display()))?;
            Ok((Arc::new(log), true))
        }
        LogSpec::Remote(addr) => {
            let tls = tls
                .for_url(&addr)
                .with_context(|| format!("log backend {addr}"))?;
            let mut log = RemoteLog::connect_lazy_tls(&addr, tls)
                .with_context(|| format!("log backend {addr}"))?;
            if let Some(t) = token {
                log = log.with_token(t)?;
            }
            Ok((Arc::new(log), false))
        }
        LogSpec::JetStream {
            urls,
            replicas,
            prefix,
        } => {
            // Offline tools take their NATS credentials from the URL.
            let auth = NatsAuth::default();
            let (log, _) = connect_jetstream(
                &urls,
                replicas,
                prefix,
                auth,
                false,
                Some(JETSTREAM_COMMAND_PATIENCE),
            )
            .await?;
            Ok((Arc::new(log), true))
        }
    }
}

/// Connects to a JetStream log, and with `leases` opens its partition leases too. A role
/// often starts before its cluster is ready (no node up yet, a fresh R3 stream without a
/// leader, a node restarting): wait for it, with backoff, for `patience` or without end
/// (`None`), and fail fast on what waiting cannot fix ([`Error::Invalid`]: credentials
/// refused, an old server, a bad setting).
///
/// [`Error::Invalid`]: onecity_eventlog::Error::Invalid
async fn connect_jetstream(
    urls: &str,
    replicas: usize,
    prefix: String,
    auth: NatsAuth,
    leases: bool,
    patience: Option<std::time::Duration>,
) -> anyhow::Result<(JetStreamLog, Option<Arc<dyn Leases>>)> {
    let config = JetStreamConfig {
        url: urls.to_owned(),
        prefix,
        replicas,
        auth,
        ..JetStreamConfig::default()
    };
    // The URL may hold credentials: messages name the servers without them.
    let urls = onecity_eventlog_jetstream::redact_url(urls);
    let deadline = patience.map(|p| std::time::Instant::now() + p);
    let mut delays = Backoff::new();
    let mut attempts: u64 = 0;
    loop {
        let attempt = async {
            let log = JetStreamLog::connect(config.clone()).await?;
            let shared: Option<Arc<dyn Leases>> = if leases {
                Some(Arc::new(log.leases(LeaseTiming::default()).await?))
            } else {
                None
            };
            Ok::<_, onecity_eventlog::Error>((log, shared))
        };
        match attempt.await {
            Ok(opened) => return Ok(opened),
            Err(
                e @ (onecity_eventlog::Error::Unavailable(_) | onecity_eventlog::Error::Storage(_)),
            ) if deadline.is_none_or(|d| std::time::Instant::now() < d) => {
                attempts += 1;
                let backoff = delays.next_delay();
                tracing::warn!(
                    error = %e,
                    attempts,
                    ?backoff,
                    "jetstream log not reachable, retrying"
                );
                tokio::time::sleep(backoff).await;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("connect to the JetStream log at {urls}"))
            }
        }
    }
}

/// Loads policy and catalogue: the configured files, or the embedded defaults. A bad
/// file refuses start-up with the file, field and reason.
fn load_rules(config: &Config) -> anyhow::Result<(Arc<PolicyBook>, Arc<Catalogue>)> {
    let policies = match &config.policy_file {
        Some(p) => PolicyBook::load(p)?,
        None => PolicyBook::embedded_default(),
    };
    let catalogue = match &config.catalogue_file {
        Some(p) => Catalogue::load(p)?,
        None => Catalogue::embedded(),
    };
    Ok((Arc::new(policies), Arc::new(catalogue)))
}

/// Checks the policy versions in force against the log (`onecity_assessment::check_in_force`),
/// retrying while the log fails transiently. A changed version in force refuses the start;
/// `false` when `stop` came first.
async fn check_policy_versions(
    log: &dyn EventLog,
    policies: &PolicyBook,
    config: &Config,
    stop: &CancellationToken,
) -> anyhow::Result<bool> {
    let mut delays = onecity_eventlog::retry::Backoff::new();
    loop {
        match onecity_assessment::check_in_force(log, policies, config.clock.0.now()).await {
            Ok(()) => return Ok(true),
            Err(e @ onecity_assessment::Error::PolicyChanged(_)) => {
                return Err(anyhow::Error::new(e).context("policy file refused"))
            }
            Err(e) => {
                let delay = delays.next_delay();
                tracing::warn!(error = %e, ?delay, "policy versions not checked against the log, retrying");
                if !onecity_eventlog::retry::Backoff::pause(delay, stop).await {
                    return Ok(false);
                }
            }
        }
    }
}

/// Intake's bound on the routing lag: the checkpoints of both routing workers, in every
/// partition they run with.
fn backpressure(config: &Config) -> Backpressure {
    let count = config.worker_partition_count();
    let mut watched = Vec::new();
    for index in 0..count {
        let partition = Partition::new(index, count).expect("index < count");
        watched.push(Watched {
            consumer: Assessor::consumer_name(&partition),
            event_type: Assessor::FOLLOWS.to_owned(),
        });
        watched.push(Watched {
            consumer: HandoffWorker::consumer_name(&partition),
            event_type: HandoffWorker::FOLLOWS.to_owned(),
        });
    }
    Backpressure {
        max_lag: config.max_routing_lag,
        watched,
    }
}

/// Runs the configured roles (default: all) until `shutdown` completes, then stops accepting
/// calls, ends open streams, lets the workers finish their current event and closes the
/// log.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    // Refused before the log is opened (the warnings of `--insecure` are serve's).
    config.check_exposure(listener.local_addr()?)?;
    let metrics = bind_metrics(&config).await?;
    let direct_log = reaches_store(&config.log_spec());
    let open = {
        let config = config.clone();
        async move { open_log(&config).await }
    };
    serve(listener, metrics, config, open, direct_log, shutdown).await
}

/// [`run`] with the Prometheus endpoint on `metrics` (bound by the caller, e.g. to port
/// 0 in a test) whatever `config.metrics_addr` says.
pub async fn run_with_metrics(
    listener: TcpListener,
    metrics: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    config.check_exposure(listener.local_addr()?)?;
    config.check_exposure(metrics.local_addr()?)?;
    let direct_log = reaches_store(&config.log_spec());
    let open = {
        let config = config.clone();
        async move { open_log(&config).await }
    };
    serve(listener, Some(metrics), config, open, direct_log, shutdown).await
}

/// Binds `config.metrics_addr` unless it is `off`, after the same exposure checks as the
/// gRPC port (a refusal stops the server). An address that cannot be bound (another
/// process holds the port) is logged and the server runs without its endpoint: the
/// residents' service matters more than its metrics, and the scraper's `up` shows the
/// gap (deploy/observability/alerts.yml).
async fn bind_metrics(config: &Config) -> anyhow::Result<Option<TcpListener>> {
    let Some(addr) = config.metrics_addr.0 else {
        return Ok(None);
    };
    config.check_exposure(addr)?;
    match TcpListener::bind(addr).await {
        Ok(listener) => Ok(Some(listener)),
        Err(e) => {
            tracing::error!(%addr, error = %e, "metrics endpoint not served: cannot listen on metrics_addr");
            Ok(None)
        }
    }
}

/// [`run`] over a log opened by the caller (a test wraps a backend to inject failures);
/// `direct_log` as for a log `run` opens itself: whether this process may serve the
/// `EventLogService` over it.
pub async fn run_with_log(
    listener: TcpListener,
    config: Config,
    log: Arc<dyn EventLog>,
    direct_log: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = bind_metrics(&config).await?;
    let open = async move { anyhow::Ok((log, None)) };
    serve(listener, metrics, config, open, direct_log, shutdown).await
}

/// The partitions a worker role of this process may work, most preferred first, and the
/// leases its instances share them through. With `shared` leases (a JetStream log) that
/// is every partition, starting from `--partition`'s index when its COUNT matches and
/// from a random one otherwise (so instances starting together do not all race for the
/// same one). Without (sled, remote), exactly `--partition`, under leases of this process
/// only, which always grant it: what a fixed partition did before leases.
fn worker_partitions(
    config: &Config,
    shared: Option<&Arc<dyn Leases>>,
    instance: Uuid,
) -> (Arc<dyn Leases>, Vec<Partition>) {
    let Some(leases) = shared else {
        return (Arc::new(MemoryLeases::default()), vec![config.partition]);
    };
    let n = config.worker_partition_count();
    let first = if config.partition.count() == n && n > 1 {
        config.partition.index()
    } else {
        let low = u64::from_be_bytes(instance.as_bytes()[8..].try_into().expect("8 bytes"));
        (low % u64::from(n)) as u32
    };
    let partitions = (0..n)
        .map(|k| Partition::new((first + k) % n, n).expect("index < count"))
        .collect();
    (Arc::clone(leases), partitions)
}

/// A log opened for [`serve`]: the log, and the leases its worker instances share their
/// partitions through (JetStream only).
type Opened = (Arc<dyn EventLog>, Option<Arc<dyn Leases>>);

/// The role services, routed from the start and set once the log is open; `None` for a
/// service this process does not serve.
struct Slots {
    intake: Option<Late<InterceptedService<IntakeServiceServer<IntakeGrpc>, Auth>>>,
    eligibility: Option<Late<InterceptedService<EligibilityServiceServer<EligibilityGrpc>, Auth>>>,
    handoff: Option<Late<InterceptedService<HandoffServiceServer<HandoffGrpc>, Auth>>>,
    /// Served by the handoff role: a death's reviews are referrals, which only the handoff
    /// role writes, and its deadline worker escalates the warnings.
    monitoring: Option<Late<InterceptedService<MonitoringServiceServer<MonitoringGrpc>, Auth>>>,
    log: Option<Late<InterceptedService<EventLogServiceServer<EventLogGrpc>, EventLogAuth>>>,
    admin: Late<InterceptedService<AdminServiceServer<AdminGrpc>, AdminAuth>>,
}

async fn serve(
    listener: TcpListener,
    metrics: Option<TcpListener>,
    config: Config,
    open: impl Future<Output = anyhow::Result<Opened>> + Send,
    direct_log: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let addr = listener.local_addr()?;
    for finding in config.check_exposure(addr)? {
        tracing::warn!(
            %addr,
            "INSECURE: serving on a non-loopback address with --insecure: {finding}"
        );
    }
    let tls = ServerTls::load(&config.tls)?;
    if tls.is_none() {
        tracing::warn!(%addr, "serving without TLS: calls and tokens travel in clear");
    }
    // This process among the instances of its roles: a fresh id, so a
    // restarted process never mistakes the leases of its previous life for its own.
    let instance = Uuid::now_v7();
    let auth = Auth::from_config(&config)?;
    if config.uses_demo_tokens() {
        tracing::warn!(
            "DEMO TOKENS ARE IN USE: anyone who reads the public docs can call this server; \
             configure real tokens before serving residents' data"
        );
    }
    let (policies, catalogue) = load_rules(&config)?;
    // Intake finds duplicates by person, the handoff role's monitoring finds the person a
    // signal names.
    let person_key = if config.runs(Role::Intake) || config.runs(Role::Handoff) {
        Some(config.person_key()?)
    } else {
        None
    };
    let stop = CancellationToken::new();
    // Ends the server on shutdown, or when the log cannot be opened at all.
    let quit = CancellationToken::new();
    if !config.record_reads {
        tracing::warn!(
            "record_reads is off: reads of residents' data leave no access record; \
             for measurements only, never in service"
        );
    }
    if !config.duplicate_check && config.runs(Role::Intake) {
        tracing::warn!(
            "duplicate_check is off: a person may be named by several open cases; \
             for measurements only, never in service"
        );
    }

    crate::observe::trace::install();
    let sources = Arc::new(Sources::default());
    if let Some(metrics) = metrics {
        // Before anything records. Without a listener no recorder is installed and every
        // metric is a no-op (unless the process installed one for another server).
        crate::observe::install();
        let metrics_addr = metrics.local_addr()?;
        // Off loopback, only an admin may read what the metrics say about the service.
        let guard = (!metrics_addr.ip().is_loopback()).then(|| auth.clone());
        tracing::info!(%metrics_addr, tls = tls.is_some(), "metrics listening");
        tokio::spawn(crate::observe::serve_metrics(
            metrics,
            tls.clone(),
            guard,
            Arc::clone(&sources),
            stop.clone(),
        ));
    }

    let (health_reporter, health) = tonic_health::server::health_reporter();
    let vitals = Vitals::new(health_reporter);
    // Listening before the log is open: alive, not ready.
    vitals.waiting_for_log(true).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(onecity_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let slots = Slots {
        intake: config.runs(Role::Intake).then(Late::new),
        eligibility: config.runs(Role::Eligibility).then(Late::new),
        handoff: config.runs(Role::Handoff).then(Late::new),
        monitoring: config.runs(Role::Handoff).then(Late::new),
        // Over the store itself only: a sled store this process owns, or JetStream.
        log: (direct_log && config.runs(Role::Log)).then(Late::new),
        admin: Late::new(),
    };
    for (runs, name) in [
        (
            slots.intake.is_some(),
            IntakeServiceServer::<IntakeGrpc>::NAME,
        ),
        (
            slots.eligibility.is_some(),
            EligibilityServiceServer::<EligibilityGrpc>::NAME,
        ),
        (
            slots.handoff.is_some(),
            HandoffServiceServer::<HandoffGrpc>::NAME,
        ),
        (
            slots.monitoring.is_some(),
            MonitoringServiceServer::<MonitoringGrpc>::NAME,
        ),
        (
            slots.log.is_some(),
            EventLogServiceServer::<EventLogGrpc>::NAME,
        ),
        (true, AdminServiceServer::<AdminGrpc>::NAME),
    ] {
        if runs {
            vitals.serve(name).await;
        }
    }

    let rules = (policies, catalogue, person_key);
    let begin = |(log, shared_leases): Opened| async {
        // A policy version in force is immutable: the role that assesses under the
        // versions checks them against the log (and records new ones) before it starts.
        if config.runs(Role::Eligibility) {
            let (policies, ..) = &rules;
            if !check_policy_versions(log.as_ref(), policies, &config, &stop).await? {
                return Ok(Vec::new());
            }
        }
        let workers = start_roles(
            &config,
            &slots,
            log,
            shared_leases,
            instance,
            &vitals,
            &auth,
            &sources,
            rules.clone(),
            stop.clone(),
        );
        vitals.waiting_for_log(false).await;
        tracing::info!(%addr, %instance, "event log open, onecity serving");
        anyhow::Ok(workers)
    };
    // A log that opens at once (sled, a log the caller opened) is open before the first
    // call is accepted; only one that has to be waited for is waited for while listening.
    let mut open = std::pin::pin!(open);
    let started_at_once = match futures::poll!(open.as_mut()) {
        std::task::Poll::Ready(opened) => Some(begin(opened?).await?),
        std::task::Poll::Pending => None,
    };
    tracing::info!(
        %addr,
        tls = tls.is_some(),
        mtls = tls.as_ref().is_some_and(ServerTls::requires_client_certificates),
        roles = ?config.roles,
        %instance,
        partitions = config.worker_partition_count(),
        direct_log,
        log_open = started_at_once.is_some(),
        "onecity listening"
    );
    let console_incoming = start_console(&config, addr, tls.clone(), stop.clone()).await?;
    let server_stop = stop.clone();
    let server_quit = quit.clone();
    let server_vitals = vitals.clone();
    // Built twice when the console calls in-process: the same services, interceptors and
    // layers answer the listener and the console's pipes.
    let router = || {
        tonic::transport::Server::builder()
            // Outermost: the count and latency include the timeout's and the
            // interceptors' refusals.
            .layer(RpcLayer)
            // Limits for a public service: a unary call that takes longer is cut (streams
            // are not: the limit ends at the response headers), a peer that stops
            // answering pings is dropped, and one connection cannot open unbounded
            // concurrent calls.
            .timeout(REQUEST_TIMEOUT)
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .max_concurrent_streams(Some(MAX_CONCURRENT_STREAMS))
            .add_service(health.clone())
            .add_service(reflection.clone())
            .add_optional_service(slots.intake.clone())
            .add_optional_service(slots.eligibility.clone())
            .add_optional_service(slots.handoff.clone())
            .add_optional_service(slots.monitoring.clone())
            .add_optional_service(slots.log.clone())
            .add_service(slots.admin.clone())
    };
    let shutdown = async move {
        tokio::select! {
            () = shutdown => tracing::info!("shutting down"),
            () = server_quit.cancelled() => {}
        }
        // Balancers stop sending new calls before the open ones end.
        server_vitals.stopping().await;
        // Ends open streams first: a graceful shutdown waits for every response.
        server_stop.cancel();
    };
    let server = async {
        match tls {
            Some(tls) => {
                reload_on_sighup(tls.clone(), stop.clone())?;
                let incoming = tls.incoming(listener, stop.clone());
                let console = async {
                    if let Some(pipes) = console_incoming {
                        router()
                            .serve_with_incoming_shutdown(
                                pipes.map(Ok::<_, std::io::Error>),
                                stop.clone().cancelled_owned(),
                            )
                            .await?;
                    }
                    anyhow::Ok(())
                };
                let listener = async {
                    let served = router()
                        .serve_with_incoming_shutdown(incoming, shutdown)
                        .await;
                    // A listener that failed must not leave the console's side serving.
                    stop.cancel();
                    served
                };
                let (served, console) = tokio::join!(listener, console);
                served?;
                console?;
            }
            None => {
                // TCP_NODELAY on every accepted connection. With an incoming stream of our
                // own, tonic's `tcp_nodelay` setting does not apply, and with Nagle on, a
                // response written in several small pieces (headers, message, trailers)
                // waits for the client's delayed ACK on every call.
                let incoming = TcpListenerStream::new(listener).map(|accepted| {
                    accepted.and_then(|stream| {
                        stream.set_nodelay(true)?;
                        Ok(stream)
                    })
                });
                router()
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await?;
            }
        }
        anyhow::Ok(())
    };
    let started = async {
        if let Some(workers) = started_at_once {
            return anyhow::Ok(workers);
        }
        let opened = tokio::select! {
            opened = open => opened,
            () = stop.cancelled() => return Ok(Vec::new()),
        };
        match opened {
            Ok(opened) => match begin(opened).await {
                Ok(workers) => Ok(workers),
                Err(e) => {
                    quit.cancel();
                    Err(e)
                }
            },
            Err(e) => {
                quit.cancel();
                Err(e)
            }
        }
    };
    let (served, started) = tokio::join!(server, started);
    stop.cancel();
    let workers = match (served, started) {
        (Ok(()), Ok(workers)) => workers,
        (Err(e), _) | (Ok(()), Err(e)) => return Err(e),
    };
    for w in workers {
        let _ = w.await;
    }
    tracing::info!("onecity stopped");
    Ok(())
}

/// A worker role's consumer: one instance per partition, each with its own checkpoint,
/// sharing the role's partitions with the role's other processes through leases. Every
/// worker of `serve` starts through [`Crew::start`], so each gets the same supervision
/// (restart after a panic, health NOT_SERVING while down), lease sharing and admin retry.
trait Partitioned: Redo + Clone + Sized + 'static {
    /// The role's consumer (checkpoint) name without a partition suffix: the lease group
    /// and the worker's name in health and logs.
    const CONSUMER: &'static str;
    /// This worker, handling only `partition`'s cases.
    fn with_partition(self, partition: Partition) -> Self;
    /// The checkpoint name of `partition`'s instance.
    fn consumer_name(partition: &Partition) -> String;
    /// Follows the log until `stop`.
    fn run(self, stop: CancellationToken) -> impl Future<Output = ()> + Send + 'static;
}

/// Implements [`Partitioned`] for a worker whose inherent methods already have its shape.
macro_rules! partitioned {
    ($worker:ty, $consumer:path) => {
        impl Partitioned for $worker {
            const CONSUMER: &'static str = $consumer;
            fn with_partition(self, partition: Partition) -> Self {
                <$worker>::with_partition(self, partition)
            }
            fn consumer_name(partition: &Partition) -> String {
                <$worker>::consumer_name(partition)
            }
            fn run(self, stop: CancellationToken) -> impl Future<Output = ()> + Send + 'static {
                <$worker>::run(self, stop)
            }
        }
    };
}

partitioned!(Assessor, onecity_assessment::CONSUMER);
partitioned!(HandoffWorker, onecity_handoff::CONSUMER);
partitioned!(DeadlineWorker, onecity_handoff::DEADLINES_CONSUMER);
partitioned!(LinkageWorker, onecity_handoff::LINKAGE_CONSUMER);
partitioned!(PolicySweeper, onecity_assessment::SWEEP_CONSUMER);

/// What starting this process's workers needs, and what it collects: their tasks (awaited
/// after `stop`) and their handlers by checkpoint name (for the admin's retry of a
/// quarantined event).
struct Crew {
    leases: Arc<dyn Leases>,
    instance: Uuid,
    partitions: Vec<Partition>,
    vitals: Vitals,
    stop: CancellationToken,
    workers: Vec<tokio::task::JoinHandle<()>>,
    handlers: Workers,
}

impl Crew {
    /// Starts `worker` under supervision, holding the partitions its leases grant.
    fn start<W: Partitioned>(&mut self, worker: W) {
        for p in &self.partitions {
            self.handlers.insert(
                W::consumer_name(p),
                Arc::new(worker.clone().with_partition(*p)),
            );
        }
        let share = Share {
            leases: Arc::clone(&self.leases),
            group: W::CONSUMER.to_owned(),
            holder: self.instance.to_string(),
            partitions: self.partitions.iter().map(W::consumer_name).collect(),
        };
        let stop = self.stop.clone();
        let parts = self.partitions.clone();
        self.workers.push(supervise(
            W::CONSUMER,
            self.vitals.clone(),
            self.stop.clone(),
            move || {
                let (worker, parts) = (worker.clone(), parts.clone());
                hold(share.clone(), stop.clone(), move |i, stop| {
                    worker.clone().with_partition(parts[i]).run(stop)
                })
            },
        ));
    }
}

/// Builds the roles this process runs over the open `log`, sets their services in
/// `slots` and starts their workers (returned, to be awaited after `stop`).
#[allow(clippy::too_many_arguments)]
fn start_roles(
    config: &Config,
    slots: &Slots,
    log: Arc<dyn EventLog>,
    shared_leases: Option<Arc<dyn Leases>>,
    instance: Uuid,
    vitals: &Vitals,
    auth: &Auth,
    sources: &Sources,
    (policies, catalogue, person_key): (Arc<PolicyBook>, Arc<Catalogue>, Option<PersonKey>),
    stop: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let (leases, partitions) = worker_partitions(config, shared_leases.as_ref(), instance);
    // One count per principal across both streaming services.
    let streams = onecity_service::grpc::StreamLimit::new(config.max_streams_per_principal);
    let mut crew = Crew {
        leases: Arc::clone(&leases),
        instance,
        partitions,
        vitals: vitals.clone(),
        stop: stop.clone(),
        workers: Vec::new(),
        handlers: Workers::new(),
    };
    // Every service writes through it, so a log that refuses writes shows in the health.
    let log: Arc<dyn EventLog> = Arc::new(WatchedLog::new(log, vitals.clone()));
    // Each role records the reads it answers under its own name.
    let access = |role: &str| {
        let log = stamped(&log, role);
        if config.record_reads {
            Access::new(log)
        } else {
            Access::off(log)
        }
    };
    // One index per process, shared by the roles that need it.
    // Every projection of this process, fed by one subscription (started below, once all
    // are built): each replay reads the whole log, so one replay, not one per projection.
    let mut projections: Vec<Arc<dyn Projection>> = Vec::new();
    let persons = person_key.map(|key| fed(&mut projections, PersonIndex::new(key)));
    // The policy impact report runs where the sweep does (the eligibility role).
    let mut impact = None;
    if let Some(slot) = &slots.intake {
        let mut intake = Intake::new(stamped(&log, INTAKE_APPENDS_AS), Arc::clone(&policies))
            .with_catalogue(Arc::clone(&catalogue))
            .with_clock(Arc::clone(&config.clock.0))
            .with_backpressure(backpressure(config))
            .with_access(access(INTAKE_APPENDS_AS));
        if let Some(persons) = &persons {
            intake = intake.with_person_index(Arc::clone(persons));
            if !config.duplicate_check {
                intake = intake.without_duplicate_check();
            }
        }
        let svc = IntakeGrpc::new(intake, stop.clone())
            .with_stream_limit(streams.clone())
            .into_server();
        slot.set(InterceptedService::new(svc, auth.clone()));
    }
    if let Some(slot) = &slots.eligibility {
        let assessor = Assessor::new(
            stamped(&log, onecity_assessment::ACTOR),
            Arc::clone(&policies),
            Arc::clone(&catalogue),
        );
        let sweeper = PolicySweeper::new(
            assessor.clone(),
            fed(&mut projections, ActiveCases::new(&policies)),
            Arc::clone(&config.clock.0),
            std::time::Duration::from_millis(config.deadline_tick_ms.max(1)),
        )
        .with_batch(config.policy_sweep_batch);
        impact = Some(sweeper.clone());
        crew.start(assessor);
        crew.start(sweeper);
        let svc =
            EligibilityGrpc::new(Screener::new(Arc::clone(&policies), Arc::clone(&catalogue)))
                .into_server();
        slot.set(InterceptedService::new(svc, auth.clone()));
    }
    if let Some(slot) = &slots.handoff {
        crew.start(
            HandoffWorker::new(
                stamped(&log, onecity_handoff::ACTOR),
                Arc::clone(&catalogue),
            )
            .with_clock(Arc::clone(&config.clock.0)),
        );
        crew.start(
            DeadlineWorker::new(
                stamped(&log, onecity_handoff::ACTOR),
                Arc::clone(&config.clock.0),
                DeadlinePolicy {
                    escalation_days: config.escalation_days,
                    tick: std::time::Duration::from_millis(config.deadline_tick_ms.max(1)),
                },
            )
            .with_catalogue(Arc::clone(&catalogue)),
        );
        crew.start(LinkageWorker::new(
            stamped(&log, onecity_handoff::LINKAGE_ACTOR),
            Arc::clone(&policies),
            Arc::clone(&catalogue),
        ));
        let inbox = fed(&mut projections, Inbox::new(Arc::clone(&log)));
        sources.set_inbox(Arc::clone(&inbox));
        let handoff = Handoff::new(stamped(&log, onecity_handoff::ACTOR), inbox)
            .with_catalogue(Arc::clone(&catalogue))
            .with_policies(Arc::clone(&policies))
            .with_clock(Arc::clone(&config.clock.0))
            .with_access(access(onecity_handoff::ACTOR));
        let svc = HandoffGrpc::new(handoff, stop.clone())
            .with_stream_limit(streams.clone())
            .into_server();
        slot.set(InterceptedService::new(svc, auth.clone()));
    }
    if let (Some(slot), Some(persons)) = (&slots.monitoring, &persons) {
        let monitoring = Monitoring::new(
            stamped(&log, onecity_monitoring::ACTOR),
            Arc::clone(persons),
            fed(&mut projections, Warnings::default()),
            fed(&mut projections, Statistics::default()),
            Arc::clone(&policies),
        )
        .with_catalogue(Arc::clone(&catalogue))
        .with_clock(Arc::clone(&config.clock.0))
        .with_access(access(onecity_monitoring::ACTOR));
        let svc = MonitoringGrpc::new(monitoring).into_server();
        slot.set(InterceptedService::new(svc, auth.clone()));
    }
    tokio::spawn(projection::follow(
        Arc::clone(&log),
        projections,
        stop.clone(),
    ));
    if let Some(slot) = &slots.log {
        slot.set(InterceptedService::new(
            EventLogGrpc::new(Arc::clone(&log), stop.clone())
                .writers_only()
                .into_server(),
            auth.event_log(),
        ));
    }
    let Crew {
        workers, handlers, ..
    } = crew;
    let admin = Admin::new(stamped(&log, ADMIN_APPENDS_AS), handlers)
        .with_policy_impact(impact)
        .with_stop(stop.clone())
        .with_routing(
            Gauge::new(backpressure(config)),
            leases,
            // Routing is what intake's backpressure waits on, whichever roles run here.
            vec![
                onecity_assessment::CONSUMER.to_owned(),
                onecity_handoff::CONSUMER.to_owned(),
            ],
        );
    sources.set_admin(admin.clone());
    let admin = AdminGrpc::new(admin).into_server();
    slots
        .admin
        .set(InterceptedService::new(admin, auth.admin()));

    workers
}

/// Starts the browser console on `console_addr` (see docs/console.md). Without TLS it calls
/// this server's gRPC listener at `grpc` over loopback; with TLS it serves HTTPS with the
/// listener's certificates and calls the gRPC services in-process, over the pipes the
/// returned stream yields, which the caller serves.
async fn start_console(
    config: &Config,
    grpc: SocketAddr,
    tls: Option<ServerTls>,
    stop: CancellationToken,
) -> anyhow::Result<Option<crate::console::InProcessIncoming>> {
    let listener = match config.console_addr {
        ConsoleAddr::Off => return Ok(None),
        ConsoleAddr::Default => {
            let addr: SocketAddr = DEFAULT_CONSOLE_ADDR.parse()?;
            match TcpListener::bind(addr).await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%addr, %error, "console address taken, running without the console");
                    return Ok(None);
                }
            }
        }
        ConsoleAddr::At(addr) => {
            if !addr.ip().is_loopback() && tls.is_none() && !config.insecure {
                anyhow::bail!(
                    "console_addr {addr} is not loopback: without [tls] the console speaks plain http, set insecure = true to expose it anyway"
                );
            }
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("bind console_addr {addr}"))?
        }
    };
    let addr = listener.local_addr()?;
    let (console, incoming) = match &tls {
        Some(_) => {
            let (console, incoming) = crate::console::Console::in_process()?;
            (console, Some(incoming))
        }
        None => {
            let loopback = if grpc.ip().is_unspecified() {
                SocketAddr::from(([127, 0, 0, 1], grpc.port()))
            } else {
                grpc
            };
            (crate::console::Console::new(loopback)?, None)
        }
    };
    let https = tls.is_some();
    tokio::spawn(async move {
        if let Err(error) = crate::console::serve(listener, console, tls, stop).await {
            tracing::error!(%error, "console stopped");
        }
    });
    tracing::info!(%addr, https, "console listening");
    Ok(incoming)
}

/// Re-reads the certificates on every SIGHUP until `stop`: new connections get the new ones,
/// open connections keep theirs. A file that does not load leaves the old ones in use.
#[cfg(unix)]
fn reload_on_sighup(tls: ServerTls, stop: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup()).context("install SIGHUP handler")?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                got = hangup.recv() => if got.is_none() { return },
            }
            match tls.reload() {
                Ok(()) => tracing::info!("tls certificates reloaded"),
                Err(e) => tracing::error!(
                    error = format!("{e:#}"),
                    "tls certificates not reloaded, the previous ones stay in use"
                ),
            }
        }
    });
    Ok(())
}

#[cfg(not(unix))]
fn reload_on_sighup(_tls: ServerTls, _stop: CancellationToken) -> anyhow::Result<()> {
    Ok(())
}

/// `projection`, shared, and listed among the projections the process's one subscription
/// feeds.
fn fed<P: Projection + 'static>(
    projections: &mut Vec<Arc<dyn Projection>>,
    projection: P,
) -> Arc<P> {
    let projection = Arc::new(projection);
    projections.push(Arc::clone(&projection) as Arc<dyn Projection>);
    projection
}
