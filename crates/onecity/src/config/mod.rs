//! Configuration of `onecity serve`.
//!
//! Layers, each overriding the one before: built-in defaults ([`Config::default`]), the TOML file
//! (`--config FILE`), `ONECITY_*` environment variables, then command-line flags
//! ([`Overrides`]). Relative paths are relative to the working directory of the process. The
//! server's variables are read in one place, [`Config::apply_env`]; its flags carry only what
//! was typed, so each variable is read once and its layer stays below the flags. (The client
//! commands' own variables, `ONECITY_SERVER` and `ONECITY_TOKEN`, and `ONECITY_CONFIG` are
//! read once by clap, as the flags they stand for.)
//!
//! Tokens ([`TokenConfig`]) map to `Principal`s. Every entry is validated at start-up, so a
//! typo in a district or unit refuses start-up naming the entry instead of locking a
//! department out at run time. When the file names no tokens the
//! built-in DEMO tokens apply ([`demo_tokens`]); they are public, so the server warns loudly
//! while they are in use ([`Config::uses_demo_tokens`]). The event log backend is a
//! [`LogSpec`].

mod console;
mod log_spec;
mod nats;
mod tokens;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context as _};
use onecity_domain::Partition;
use serde::{Deserialize, Serialize};

pub use console::{ConsoleAddr, DEFAULT_CONSOLE_ADDR};
pub use log_spec::{log_spec_help, LogSpec};
pub use nats::NatsConfig;
use tokens::redact;
pub use tokens::{
    demo_tokens, sha256, Credentials, Identity, PrincipalKind, TokenConfig, DEMO_TERMINAL_TOKEN,
};

/// Default listen address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:50051";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./data";

/// Environment variable overriding [`Config::addr`].
pub const ENV_ADDR: &str = "ONECITY_ADDR";
/// Environment variable overriding [`Config::data_dir`].
pub const ENV_DATA_DIR: &str = "ONECITY_DATA_DIR";
/// Environment variable overriding [`Config::log`].
pub const ENV_LOG: &str = "ONECITY_LOG";
/// Environment variable overriding [`Config::log_token`].
pub const ENV_LOG_TOKEN: &str = "ONECITY_LOG_TOKEN";
/// Environment variable overriding [`Config::policy_file`].
pub const ENV_POLICY_FILE: &str = "ONECITY_POLICY_FILE";
/// Environment variable overriding [`Config::catalogue_file`].
pub const ENV_CATALOGUE_FILE: &str = "ONECITY_CATALOGUE_FILE";
/// Environment variable overriding [`Config::person_index_key_file`].
pub const ENV_PERSON_INDEX_KEY_FILE: &str = "ONECITY_PERSON_INDEX_KEY_FILE";
/// The person index key generated in the data directory when none is configured (on
/// loopback only).
pub const GENERATED_PERSON_KEY: &str = "person-index.key";

/// Environment variable overriding [`Config::roles`] (comma-separated).
pub const ENV_ROLES: &str = "ONECITY_ROLES";
/// Environment variable overriding [`Config::partition`].
pub const ENV_PARTITION: &str = "ONECITY_PARTITION";
/// Environment variable overriding [`Config::max_routing_lag`].
pub const ENV_MAX_ROUTING_LAG: &str = "ONECITY_MAX_ROUTING_LAG";
/// Environment variable overriding [`Config::worker_partitions`].
pub const ENV_WORKER_PARTITIONS: &str = "ONECITY_WORKER_PARTITIONS";
/// Environment variable overriding [`TlsConfig::cert`].
pub const ENV_TLS_CERT: &str = "ONECITY_TLS_CERT";
/// Environment variable overriding [`TlsConfig::key`].
pub const ENV_TLS_KEY: &str = "ONECITY_TLS_KEY";
/// Environment variable overriding [`TlsConfig::client_ca`].
pub const ENV_TLS_CLIENT_CA: &str = "ONECITY_TLS_CLIENT_CA";
/// Environment variable overriding [`TlsConfig::ca`].
pub const ENV_TLS_CA: &str = "ONECITY_TLS_CA";
/// Environment variable overriding [`Config::insecure`] (`true`/`false`).
pub const ENV_INSECURE: &str = "ONECITY_INSECURE";
/// Environment variable overriding [`Config::metrics_addr`].
pub const ENV_METRICS_ADDR: &str = "ONECITY_METRICS_ADDR";
/// Environment variable overriding [`Config::log_format`].
pub const ENV_LOG_FORMAT: &str = "ONECITY_LOG_FORMAT";
/// Environment variable overriding [`Config::otlp_endpoint`].
pub const ENV_OTLP_ENDPOINT: &str = "ONECITY_OTLP_ENDPOINT";
/// Environment variable naming the configuration file (`--config`); the command line reads
/// it, since it picks the file before the layers are applied.
pub const ENV_CONFIG: &str = "ONECITY_CONFIG";
/// Environment variable overriding [`Config::console_addr`].
pub const ENV_CONSOLE_ADDR: &str = "ONECITY_CONSOLE_ADDR";

/// Effective configuration of one onecity process.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the gRPC server listens on. Default `127.0.0.1:50051` (loopback only: expose it
    /// deliberately).
    pub addr: SocketAddr,
    /// Directory for durable state; the default event log lives here. Default `./data`.
    pub data_dir: PathBuf,
    /// Event log backend: `sled:PATH` (embedded, this process owns the store),
    /// `remote:http(s)://HOST:PORT` (the `EventLogService` of another onecity process) or
    /// `jetstream:nats://HOST:PORT[,...][?replicas=N&prefix=NAME]` (a NATS JetStream
    /// cluster; see [`LogSpec`]). `None` means `sled:<data_dir>`, resolved by [`Config::log_spec`] after every layer is applied,
    /// so `--data-dir` moves the default log with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<LogSpec>,
    /// Bearer token this process presents to a `remote:` log (a `service` or `admin` token of
    /// that server). Ignored for `sled:`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_token: Option<String>,
    /// Policy parameters file (dated versions, see docs/policy.md). `None` = the embedded default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_file: Option<PathBuf>,
    /// Programme catalogue file (department and deadline per programme). `None` = the embedded
    /// default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalogue_file: Option<PathBuf>,
    /// The secret key of the person index (docs/security.md): a file holding at least 32
    /// bytes as hexadecimal (`openssl rand -hex 32`). Required when the listener is off
    /// loopback and this process runs intake; every intake process of a deployment must
    /// read the same key. `None` on loopback: a key generated once into
    /// `<data_dir>/person-index.key` and reused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub person_index_key_file: Option<PathBuf>,
    /// Bearer tokens and the principals they stand for. Default: the DEMO tokens of
    /// [`demo_tokens`]; a file that lists tokens replaces them entirely.
    pub tokens: Vec<TokenConfig>,
    /// Service roles this process runs: `intake`, `eligibility`, `handoff`, `log` or `all`.
    /// Default `["all"]`: every role in one process. `log` serves the embedded log to
    /// other processes and needs a `sled:` log.
    pub roles: Vec<Role>,
    /// A fixed partition for this process's workers, `INDEX/COUNT` (default `0/1`). Over
    /// a JetStream log the workers lease their partitions instead (see
    /// [`Config::worker_partitions`]) and this only says which partition to try first;
    /// over a `sled:` or `remote:` log, which have no shared leases, the workers handle
    /// exactly this partition, as before leases.
    #[serde(with = "as_string")]
    pub partition: Partition,
    /// Intake backpressure: the largest routing lag, in log events, at which intake still
    /// accepts new cases. The lag is counted from the oldest event a routing worker
    /// (assessment or handoff, every partition) has not handled yet to the log's head;
    /// over the bound `SubmitApplication` answers `RESOURCE_EXHAUSTED` and writes nothing
    /// (retries of accepted requests still get their case). Default 10,000: a backlog the
    /// workers clear quickly (see docs/performance.md); 0 turns the bound off.
    pub max_routing_lag: u64,
    /// How many partitions the worker roles' work is split into (`--partitions`): over a
    /// JetStream log every instance of a role leases its fair share of them, and takes
    /// over those of an instance that died (see docs/operations.md); intake watches the
    /// checkpoint of each. `None` = the COUNT of [`Config::partition`]. Every process of
    /// a cluster, intake included, must be given the same count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_partitions: Option<u32>,
    /// Most `WatchCase` and `StreamReferrals` streams one principal may hold open at once
    /// (beyond it `RESOURCE_EXHAUSTED`); 0 turns the bound off.
    pub max_streams_per_principal: usize,
    /// Whether every read of residents' data leaves an access record in the log (see
    /// docs/security.md). On by default; off only to measure what recording costs, and
    /// the server says so loudly at start-up.
    pub record_reads: bool,
    /// Whether intake refuses a submission naming a member of an open case (docs/policy.md,
    /// "One open case per person"). On by default; off only to measure what the check
    /// costs, and the server says so loudly at start-up.
    pub duplicate_check: bool,
    /// TLS of the listener and of the calls to a `remote:https://` log.
    pub tls: TlsConfig,
    /// Serve on a non-loopback address even with demo tokens, no tokens, tokens in clear
    /// or without TLS (each is refused otherwise). For a trial behind a trusted network
    /// only: the server warns loudly.
    pub insecure: bool,
    /// `[nats]`: credentials and TLS towards a `jetstream:` log.
    pub nats: NatsConfig,
    /// Calendar days an overdue referral may stay undecided before the deadline worker
    /// escalates it to the district supervisor. Default 5.
    pub escalation_days: u32,
    /// Milliseconds between the deadline worker's checks of the clock (and the policy
    /// sweep's: a new policy version takes effect when the clock passes its date).
    /// Default 30000.
    pub deadline_tick_ms: u64,
    /// Cases the policy sweep reads, re-assesses and appends together. Default 512.
    pub policy_sweep_batch: usize,
    /// The clock the deadline worker reads: the system clock; tests inject a manual one.
    /// Not read from files or the environment.
    #[serde(skip)]
    pub clock: onecity_service::clock::SharedClock,
    /// Address of the Prometheus endpoint (`GET /metrics`), or `off`. Default
    /// `127.0.0.1:9464`. Off loopback it is refused on the same findings as the gRPC
    /// port ([`Config::check_exposure`]), speaks TLS when the gRPC port does, and answers
    /// only an `admin` bearer token.
    #[serde(with = "as_string")]
    pub metrics_addr: MetricsAddr,
    /// Log lines as `text` (default) or `json` (one object per line with the span
    /// fields); `--log-format`.
    pub log_format: crate::observe::LogFormat,
    /// OTLP (gRPC) collector to export spans to, e.g. `http://127.0.0.1:4317`; `None`
    /// (default) exports nothing. The W3C trace context still travels through calls and
    /// events when another process exports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,

    // The browser console (docs/console.md).
    /// Where the browser console listens: `default` (`127.0.0.1:8080`, or no console
    /// with a warning when that port is taken), `off`, or an address.
    #[serde(with = "as_string")]
    pub console_addr: ConsoleAddr,
}

/// [`Config::metrics_addr`]: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsAddr(pub Option<SocketAddr>);

impl MetricsAddr {
    /// The default, `127.0.0.1:9464` (Prometheus exporters' customary port range).
    pub const DEFAULT: MetricsAddr = MetricsAddr(Some(SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        9464,
    )));
    /// No metrics listener.
    pub const OFF: MetricsAddr = MetricsAddr(None);
}

impl fmt::Display for MetricsAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("off"),
        }
    }
}

impl std::str::FromStr for MetricsAddr {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.trim() {
            "off" => Ok(MetricsAddr::OFF),
            addr => Ok(MetricsAddr(Some(addr.parse().with_context(|| {
                format!("metrics_addr: {addr:?} is neither an address (HOST:PORT) nor off")
            })?))),
        }
    }
}

/// `[tls]`: certificates in PEM files. Every file is read at start-up and again on SIGHUP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// This server's certificate chain (leaf first). With `key`, the listener speaks TLS
    /// only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// The private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// CA certificates that sign client certificates: when set, every client must present
    /// a certificate it signed (mTLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// CA certificates this process trusts when it calls a `remote:https://` log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// The client certificate presented to a `remote:https://` log that asks for one;
    /// default `cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// The key of `client_cert`; default `key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
}

impl TlsConfig {
    /// Whether the listener speaks TLS.
    pub fn enabled(&self) -> bool {
        self.cert.is_some() || self.key.is_some()
    }
}

/// A service role of `onecity serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `IntakeService`.
    Intake,
    /// The assessment worker and `EligibilityService`.
    Eligibility,
    /// The handoff worker, the department inbox and `HandoffService`.
    Handoff,
    /// `EventLogService` over this process's log (its sled store, or JetStream), for roles
    /// in other processes and for tools; never over a `remote:` log.
    Log,
    /// Every role.
    All,
}

impl FromStr for Role {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s.trim() {
            "intake" => Role::Intake,
            "eligibility" => Role::Eligibility,
            "handoff" => Role::Handoff,
            "log" => Role::Log,
            "all" => Role::All,
            other => bail!("role {other:?}: expected intake, eligibility, handoff, log or all"),
        })
    }
}

impl Role {
    /// The role's name, as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Intake => "intake",
            Role::Eligibility => "eligibility",
            Role::Handoff => "handoff",
            Role::Log => "log",
            Role::All => "all",
        }
    }
}

impl Config {
    /// Whether this process runs `role` (directly or through `all`).
    pub fn runs(&self, role: Role) -> bool {
        self.roles.iter().any(|r| *r == role || *r == Role::All)
    }
}

/// Serde through `Display`/`FromStr`, for values written as strings in TOML.
mod as_string {
    use std::fmt::Display;
    use std::str::FromStr;

    pub(super) fn serialize<T: Display, S: serde::Serializer>(
        v: &T,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub(super) fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: serde::Deserializer<'de>,
    {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            log: None,
            log_token: None,
            policy_file: None,
            catalogue_file: None,
            person_index_key_file: None,
            tokens: demo_tokens(),
            roles: vec![Role::All],
            partition: Partition::default(),
            max_routing_lag: onecity_intake::DEFAULT_MAX_ROUTING_LAG,
            worker_partitions: None,
            max_streams_per_principal: onecity_service::grpc::DEFAULT_MAX_STREAMS_PER_PRINCIPAL,
            record_reads: true,
            duplicate_check: true,
            tls: TlsConfig::default(),
            insecure: false,
            nats: NatsConfig::default(),
            escalation_days: 5,
            deadline_tick_ms: 30_000,
            policy_sweep_batch: onecity_assessment::DEFAULT_SWEEP_BATCH,
            clock: onecity_service::clock::SharedClock::default(),
            metrics_addr: MetricsAddr::DEFAULT,
            log_format: crate::observe::LogFormat::Text,
            otlp_endpoint: None,
            console_addr: ConsoleAddr::Default,
        }
    }
}

// Hand-written so that a config printed with `{:?}` (e.g. in a log line) never shows a token.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("data_dir", &self.data_dir)
            .field("log", &self.log.as_ref().map(LogSpec::redacted))
            .field("log_token", &self.log_token.as_ref().map(|_| "****"))
            .field("policy_file", &self.policy_file)
            .field("catalogue_file", &self.catalogue_file)
            .field("person_index_key_file", &self.person_index_key_file)
            .field("tokens", &self.tokens)
            .field("roles", &self.roles)
            .field("partition", &self.partition)
            .field("max_routing_lag", &self.max_routing_lag)
            .field("worker_partitions", &self.worker_partitions)
            .field("max_streams_per_principal", &self.max_streams_per_principal)
            .field("record_reads", &self.record_reads)
            .field("duplicate_check", &self.duplicate_check)
            .field("escalation_days", &self.escalation_days)
            .field("deadline_tick_ms", &self.deadline_tick_ms)
            .field("policy_sweep_batch", &self.policy_sweep_batch)
            .field("tls", &self.tls)
            .field("insecure", &self.insecure)
            .field("nats", &self.nats)
            .field("metrics_addr", &self.metrics_addr)
            .field("log_format", &self.log_format)
            .field("otlp_endpoint", &self.otlp_endpoint)
            .field("console_addr", &self.console_addr)
            .finish()
    }
}

/// Command-line overrides, applied after the file and the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--addr`.
    pub addr: Option<SocketAddr>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--log`.
    pub log: Option<LogSpec>,
    /// `--role` (repeatable); empty = not given.
    pub roles: Vec<Role>,
    /// `--partition`.
    pub partition: Option<Partition>,
    /// `--insecure` (only ever turns it on).
    pub insecure: bool,
    /// `--partitions`.
    pub worker_partitions: Option<u32>,
}

impl Config {
    /// Defaults, then `file` (if any), then `ONECITY_*` environment variables; validated.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        Config::load_with(file, &process_env, Overrides::default())
    }

    /// [`Config::load`] with an explicit environment lookup (tests pass a map instead of
    /// touching the process environment, which is shared by parallel tests) and the
    /// command-line overrides applied last.
    pub fn load_with(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        overrides: Overrides,
    ) -> anyhow::Result<Config> {
        let mut config = match file {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        config.apply_env(env)?;
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    /// Defaults overridden by the TOML file at `path` (not validated).
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read config file {}", path.display()))?;
        Config::from_toml_str(&text).with_context(|| format!("config file {}", path.display()))
    }

    /// Defaults overridden by TOML text (not validated).
    pub fn from_toml_str(text: &str) -> anyhow::Result<Config> {
        // toml's message already names the key and shows the offending line.
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))
    }

    /// Applies the `ONECITY_*` variables found by `env`. An empty variable counts as unset, so
    /// a deployment can blank one out without unsetting it. The only reader of these
    /// variables (see the module documentation).
    pub fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        if let Some(v) = get(ENV_ADDR) {
            self.addr = v.trim().parse().with_context(|| {
                format!("{ENV_ADDR}: {v:?} is not an address like {DEFAULT_ADDR}")
            })?;
        }
        if let Some(v) = get(ENV_CONSOLE_ADDR) {
            self.console_addr = v
                .parse()
                .map_err(|e: String| anyhow::anyhow!(e))
                .context(ENV_CONSOLE_ADDR)?;
        }
        if let Some(v) = get(ENV_DATA_DIR) {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get(ENV_LOG) {
            self.log = Some(v.trim().parse().context(ENV_LOG)?);
        }
        if let Some(v) = get(ENV_LOG_TOKEN) {
            self.log_token = Some(v);
        }
        if let Some(v) = get(ENV_POLICY_FILE) {
            self.policy_file = Some(PathBuf::from(v));
        }
        if let Some(v) = get(ENV_CATALOGUE_FILE) {
            self.catalogue_file = Some(PathBuf::from(v));
        }
        if let Some(v) = get(ENV_PERSON_INDEX_KEY_FILE) {
            self.person_index_key_file = Some(PathBuf::from(v));
        }
        if let Some(v) = get(ENV_ROLES) {
            self.roles = v
                .split(',')
                .map(str::parse)
                .collect::<anyhow::Result<_>>()
                .context(ENV_ROLES)?;
        }
        if let Some(v) = get(ENV_PARTITION) {
            self.partition = v.trim().parse().context(ENV_PARTITION)?;
        }
        if let Some(v) = get(ENV_MAX_ROUTING_LAG) {
            self.max_routing_lag = v.trim().parse().with_context(|| {
                format!("{ENV_MAX_ROUTING_LAG}: {v:?} is not a number of events (0 = no bound)")
            })?;
        }
        let path = |name: &str| get(name).map(|v| PathBuf::from(v.trim()));
        if let Some(v) = path(ENV_TLS_CERT) {
            self.tls.cert = Some(v);
        }
        if let Some(v) = path(ENV_TLS_KEY) {
            self.tls.key = Some(v);
        }
        if let Some(v) = path(ENV_TLS_CLIENT_CA) {
            self.tls.client_ca = Some(v);
        }
        if let Some(v) = path(ENV_TLS_CA) {
            self.tls.ca = Some(v);
        }
        if let Some(v) = get(ENV_INSECURE) {
            self.insecure = v
                .trim()
                .parse()
                .with_context(|| format!("{ENV_INSECURE}: {v:?} is not true or false"))?;
        }
        self.nats.apply_env(&get);
        if let Some(v) = get(ENV_METRICS_ADDR) {
            self.metrics_addr = v.parse().context(ENV_METRICS_ADDR)?;
        }
        if let Some(v) = get(ENV_OTLP_ENDPOINT) {
            self.otlp_endpoint = Some(v.trim().to_owned()).filter(|v| !v.is_empty());
        }
        if let Some(v) = get(ENV_LOG_FORMAT) {
            self.log_format = v.parse().context(ENV_LOG_FORMAT)?;
        }
        if let Some(v) = get(ENV_WORKER_PARTITIONS) {
            self.worker_partitions = Some(v.trim().parse().with_context(|| {
                format!("{ENV_WORKER_PARTITIONS}: {v:?} is not a partition count")
            })?);
        }
        Ok(())
    }

    /// Applies command-line overrides.
    pub fn apply(&mut self, overrides: Overrides) {
        let Overrides {
            addr,
            data_dir,
            log,
            roles,
            partition,
            insecure,
            worker_partitions,
        } = overrides;
        if insecure {
            self.insecure = true;
        }
        if let Some(n) = worker_partitions {
            self.worker_partitions = Some(n);
        }
        if !roles.is_empty() {
            self.roles = roles;
        }
        if let Some(p) = partition {
            self.partition = p;
        }
        if let Some(addr) = addr {
            self.addr = addr;
        }
        if let Some(dir) = data_dir {
            self.data_dir = dir;
        }
        if let Some(log) = log {
            self.log = Some(log);
        }
    }

    /// The event log backend: [`Config::log`], or `sled:<data_dir>` when unset.
    pub fn log_spec(&self) -> LogSpec {
        self.log
            .clone()
            .unwrap_or_else(|| LogSpec::Sled(self.data_dir.clone()))
    }

    /// How many partitions the worker roles' work is split into:
    /// [`Config::worker_partitions`], or the COUNT of [`Config::partition`].
    pub fn worker_partition_count(&self) -> u32 {
        self.worker_partitions.unwrap_or(self.partition.count())
    }

    /// Checks every token entry (see [`Config::principals`]).
    pub fn validate(&self) -> anyhow::Result<()> {
        self.nats.validate()?;
        if self.worker_partitions == Some(0) {
            bail!("worker_partitions: must be at least 1");
        }
        let runs_workers = self.runs(Role::Eligibility) || self.runs(Role::Handoff);
        if runs_workers
            && self.partition.count() != 1
            && self.worker_partition_count() != self.partition.count()
        {
            bail!(
                "worker_partitions: {} but this process's workers run partition {}; they must agree",
                self.worker_partition_count(),
                self.partition
            );
        }
        if self.roles.is_empty() {
            bail!("roles: at least one role is needed (intake, eligibility, handoff, log or all)");
        }
        if self.roles.contains(&Role::Log) && matches!(self.log_spec(), LogSpec::Remote(_)) {
            bail!("roles: the log role serves this process's own log (sled: or jetstream:), not a remote: one");
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            bail!("tls: `cert` and `key` go together ({ENV_TLS_CERT} and {ENV_TLS_KEY})");
        }
        if self.tls.client_ca.is_some() && !self.tls.enabled() {
            bail!("tls: `client_ca` needs the server's own `cert` and `key`");
        }
        if self.tls.client_cert.is_some() != self.tls.client_key.is_some() {
            bail!("tls: `client_cert` and `client_key` go together");
        }
        let creds = self.principals()?;
        if creds.client_uris() > 0 && self.tls.client_ca.is_none() {
            bail!("tokens: a `client_uri` entry needs `[tls] client_ca` (client certificates)");
        }
        Ok(())
    }

    /// Whether serving on `addr` is safe: on a loopback address anything goes (the
    /// zero-setup demo); elsewhere demo tokens, no credentials, tokens in clear and a
    /// listener without TLS are each refused, naming the setting, unless
    /// [`Config::insecure`] — then the same findings come back as warnings for the caller
    /// to log.
    ///
    /// # Errors
    /// Every finding, one a line, when `addr` is not loopback and `insecure` is off.
    pub fn check_exposure(&self, addr: SocketAddr) -> anyhow::Result<Vec<String>> {
        if addr.ip().is_loopback() {
            return Ok(Vec::new());
        }
        let mut findings = Vec::new();
        if self.uses_demo_tokens() {
            findings.push(
                "tokens: the public demo tokens are configured; list your own [[tokens]] with token_sha256 (`onecity token new`)".to_owned(),
            );
        }
        if self.tokens.is_empty() {
            findings.push(
                "tokens: none configured (the demo tokens apply only when the file names none, and only on loopback); add [[tokens]] with token_sha256 (`onecity token new`)".to_owned(),
            );
        }
        for label in self.clear_tokens() {
            findings.push(format!(
                "{label}: `token` holds the token in clear; store `token_sha256` instead (`onecity token new`)"
            ));
        }
        if !self.tls.enabled() {
            findings.push(format!(
                "tls: no certificate; set [tls] cert and key ({ENV_TLS_CERT}, {ENV_TLS_KEY})"
            ));
        }
        if (self.runs(Role::Intake) || self.runs(Role::Handoff))
            && self.person_index_key_file.is_none()
        {
            findings.push(format!(
                "person_index_key_file: not set; the person index needs a secret key shared by every intake and handoff process (`openssl rand -hex 32 > FILE`, {ENV_PERSON_INDEX_KEY_FILE})"
            ));
        }
        if findings.is_empty() || self.insecure {
            return Ok(findings);
        }
        bail!(
            "refusing to serve on {addr}, which is not a loopback address:\n  {}\n(`--insecure` or `insecure = true` overrides, for a trusted network only)",
            findings.join("\n  ")
        )
    }

    /// The person index key: read from [`Config::person_index_key_file`], or, without
    /// one, from `<data_dir>/person-index.key`, generated there (32 random bytes, mode
    /// 0600) the first time. [`Config::check_exposure`] refuses the generated key off
    /// loopback; processes sharing a log but not a data directory need the file.
    pub fn person_key(&self) -> anyhow::Result<onecity_intake::PersonKey> {
        let parse = |path: &Path, text: &str| {
            onecity_intake::PersonKey::from_hex(text).with_context(|| {
                format!(
                    "person index key {}: expected at least {} bytes as hexadecimal (`openssl rand -hex 32`)",
                    path.display(),
                    onecity_intake::MIN_KEY_BYTES
                )
            })
        };
        if let Some(path) = &self.person_index_key_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read person_index_key_file {}", path.display()))?;
            return parse(path, &text);
        }
        let path = self.data_dir.join(GENERATED_PERSON_KEY);
        match std::fs::read_to_string(&path) {
            Ok(text) => return parse(&path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        }
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("create {}", self.data_dir.display()))?;
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes).context("read random bytes from the operating system")?;
        let text = format!("{}\n", hex::encode(bytes));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&path) {
            Ok(mut file) => {
                use std::io::Write as _;
                file.write_all(text.as_bytes())
                    .and_then(|()| file.sync_all())
                    .with_context(|| format!("write {}", path.display()))?;
                tracing::warn!(path = %path.display(), "person index key generated in the data directory; intake processes that do not share it must be given one key file (person_index_key_file)");
                parse(&path, &text)
            }
            // Another process sharing the directory wrote it first.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                parse(&path, &std::fs::read_to_string(&path)?)
            }
            Err(e) => Err(e).with_context(|| format!("create {}", path.display())),
        }
    }

    /// A copy safe to print: tokens redacted (`demo-…` for demo tokens, `****` otherwise) and the
    /// log backend resolved.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        c.log = Some(self.log_spec().redacted());
        c.worker_partitions = Some(self.worker_partition_count());
        c.log_token = c.log_token.as_deref().map(redact);
        for t in &mut c.tokens {
            t.token = t.token.as_deref().map(redact);
        }
        c
    }

    /// The effective configuration as TOML, tokens redacted (`onecity config`).
    pub fn to_redacted_toml(&self) -> anyhow::Result<String> {
        toml::to_string_pretty(&self.redacted()).context("render config as toml")
    }
}

/// The process environment as [`Config::load_with`] reads it (a value that is not UTF-8 is
/// converted lossily, so that a bad byte is reported as a bad value, not as unset).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests;
