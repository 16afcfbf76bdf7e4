//! Configuration of `onecity serve`.
//!
//! Layers, each overriding the one before: built-in defaults ([`Config::default`]), the TOML file
//! (`--config FILE`), `ONECITY_*` environment variables, then command-line flags
//! ([`Overrides`]). Relative paths are relative to the working directory of the process.
//!
//! Tokens map to [`Principal`]s. Every entry is validated at start-up, so a typo in a district or
//! unit refuses start-up naming the entry instead of locking a department out at run time. When
//! the file names no tokens the built-in DEMO tokens apply ([`demo_tokens`]); they are public, so
//! the server warns loudly while they are in use ([`Config::uses_demo_tokens`]).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context as _};
use onecity_domain::Partition;
use onecity_domain::{DepartmentUnit, DistrictCode, Principal};
use serde::{Deserialize, Serialize};

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

/// Environment variable overriding [`Config::roles`] (comma-separated).
pub const ENV_ROLES: &str = "ONECITY_ROLES";
/// Environment variable overriding [`Config::partition`].
pub const ENV_PARTITION: &str = "ONECITY_PARTITION";
/// Environment variable overriding [`Config::max_routing_lag`].
pub const ENV_MAX_ROUTING_LAG: &str = "ONECITY_MAX_ROUTING_LAG";
/// Environment variable overriding [`Config::worker_partitions`].
pub const ENV_WORKER_PARTITIONS: &str = "ONECITY_WORKER_PARTITIONS";

/// The demo terminal token the CLI uses when no `--token` is given (terminal `T-120103-01`).
pub const DEMO_TERMINAL_TOKEN: &str = "demo-terminal-120103";

/// Longest accepted token, id or street office name.
const MAX_TOKEN_CHARS: usize = 256;
const MAX_ID_CHARS: usize = 64;

/// Effective configuration of one onecity process.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the gRPC server listens on. Default `127.0.0.1:50051` (loopback only: expose it
    /// deliberately).
    pub addr: SocketAddr,
    /// Directory for durable state; the default event log lives here. Default `./data`.
    pub data_dir: PathBuf,
    /// Event log backend: `sled:PATH` (embedded, this process owns the store) or
    /// `remote:http://HOST:PORT` (the `EventLogService` of another onecity process). `None`
    /// means `sled:<data_dir>`, resolved by [`Config::log_spec`] after every layer is applied,
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
    /// Bearer tokens and the principals they stand for. Default: the DEMO tokens of
    /// [`demo_tokens`]; a file that lists tokens replaces them entirely.
    pub tokens: Vec<TokenConfig>,
    /// Service roles this process runs: `intake`, `eligibility`, `handoff`, `log` or `all`.
    /// Default `["all"]`: every role in one process. `log` serves the embedded log to
    /// other processes and needs a `sled:` log.
    pub roles: Vec<Role>,
    /// Which share of the cases this process's workers handle, `INDEX/COUNT` (default
    /// `0/1`: all of them). Run COUNT instances of a worker role with INDEX 0..COUNT to
    /// share the work; exactly one instance decides for each case.
    #[serde(with = "as_string")]
    pub partition: Partition,
    /// Intake backpressure: the largest routing lag, in log events, at which intake still
    /// accepts new cases. The lag is counted from the oldest event a routing worker
    /// (assessment or handoff, every partition) has not handled yet to the log's head;
    /// over the bound `SubmitApplication` answers `RESOURCE_EXHAUSTED` and writes nothing
    /// (retries of accepted requests still get their case). Default 10,000 (about 2,000
    /// cases waiting, a few seconds of routing); 0 turns the bound off.
    pub max_routing_lag: u64,
    /// How many partitions the worker roles run with (the COUNT of their `--partition`):
    /// intake watches the checkpoint of each. `None` = the COUNT of [`Config::partition`],
    /// which is right when intake and the workers run in one process; an intake-only
    /// process in front of partitioned workers must set it (see docs/operations.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_partitions: Option<u32>,
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
            tokens: demo_tokens(),
            roles: vec![Role::All],
            partition: Partition::default(),
            max_routing_lag: onecity_intake::DEFAULT_MAX_ROUTING_LAG,
            worker_partitions: None,
        }
    }
}

// Hand-written so that a config printed with `{:?}` (e.g. in a log line) never shows a token.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("data_dir", &self.data_dir)
            .field("log", &self.log)
            .field("log_token", &self.log_token.as_ref().map(|_| "****"))
            .field("policy_file", &self.policy_file)
            .field("catalogue_file", &self.catalogue_file)
            .field("tokens", &self.tokens)
            .field("roles", &self.roles)
            .field("partition", &self.partition)
            .field("max_routing_lag", &self.max_routing_lag)
            .field("worker_partitions", &self.worker_partitions)
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
    /// a deployment can blank one out without unsetting it.
    pub fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        if let Some(v) = get(ENV_ADDR) {
            self.addr = v.trim().parse().with_context(|| {
                format!("{ENV_ADDR}: {v:?} is not an address like {DEFAULT_ADDR}")
            })?;
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
        } = overrides;
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

    /// How many partitions the worker roles run with: [`Config::worker_partitions`], or
    /// the COUNT of [`Config::partition`].
    pub fn worker_partition_count(&self) -> u32 {
        self.worker_partitions.unwrap_or(self.partition.count())
    }

    /// Checks every token entry (see [`Config::principals`]).
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.worker_partitions == Some(0) {
            bail!("worker_partitions: must be at least 1");
        }
        let runs_workers = self.runs(Role::Eligibility) || self.runs(Role::Handoff);
        if runs_workers && self.worker_partition_count() != self.partition.count() {
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
        self.principals().map(drop)
    }

    /// Token → principal, validated: each entry has exactly the fields its kind needs, districts
    /// and units exist, and no token appears twice. Errors name the entry (index, kind, id or
    /// unit), never the token.
    pub fn principals(&self) -> anyhow::Result<HashMap<String, Principal>> {
        let mut map: HashMap<String, Principal> = HashMap::with_capacity(self.tokens.len());
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(self.tokens.len());
        for (i, entry) in self.tokens.iter().enumerate() {
            let principal = entry
                .to_principal()
                .map_err(|reason| anyhow::anyhow!("{}: {reason}", entry.label(i)))?;
            if let Some(first) = seen.insert(entry.token.as_str(), i) {
                bail!(
                    "{}: the same token is already given to tokens[{first}]",
                    entry.label(i)
                );
            }
            map.insert(entry.token.clone(), principal);
        }
        Ok(map)
    }

    /// True when any configured token is one of the published demo tokens (also when they
    /// were copied into a file), so the server must warn that anyone can call it.
    pub fn uses_demo_tokens(&self) -> bool {
        let demo: Vec<String> = demo_tokens().into_iter().map(|t| t.token).collect();
        self.tokens.iter().any(|t| demo.contains(&t.token))
    }

    /// A copy safe to print: tokens redacted (`demo-…` for demo tokens, `****` otherwise) and the
    /// log backend resolved.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        c.log = Some(self.log_spec());
        c.worker_partitions = Some(self.worker_partition_count());
        c.log_token = c.log_token.as_deref().map(redact);
        for t in &mut c.tokens {
            t.token = redact(&t.token);
        }
        c
    }

    /// The effective configuration as TOML, tokens redacted (`onecity config`).
    pub fn to_redacted_toml(&self) -> anyhow::Result<String> {
        toml::to_string_pretty(&self.redacted()).context("render config as toml")
    }
}

fn process_env(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

fn redact(token: &str) -> String {
    if token.starts_with("demo-") && demo_tokens().iter().any(|t| t.token == token) {
        "demo-…".to_owned()
    } else {
        "****".to_owned()
    }
}

/// Event log backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogSpec {
    /// The embedded sled log in this directory; only one process may open it.
    Sled(PathBuf),
    /// The `EventLogService` of the onecity process that owns the store, e.g.
    /// `http://127.0.0.1:50051`.
    Remote(String),
    /// A NATS JetStream log: `jetstream:nats://A:4222,nats://B:4222[?replicas=3&prefix=onecity]`.
    JetStream {
        /// Server URLs, comma-separated.
        urls: String,
        /// Stream replicas (default 3: the production setting; 1 for development).
        replicas: usize,
        /// Name prefix of the log's streams and buckets (default `onecity`).
        prefix: String,
    },
}

impl FromStr for LogSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let expected = "expected sled:PATH, remote:http://HOST:PORT or jetstream:nats://HOST:PORT[,...][?replicas=N&prefix=NAME]";
        let Some((scheme, rest)) = s.split_once(':') else {
            bail!("log backend {s:?}: {expected}");
        };
        match scheme {
            "sled" if !rest.is_empty() => Ok(LogSpec::Sled(PathBuf::from(rest))),
            "sled" => bail!("log backend {s:?}: empty path; {expected}"),
            "remote" => {
                let uri: tonic::transport::Uri = rest
                    .parse()
                    .map_err(|e| anyhow::anyhow!("log backend {s:?}: {e}; {expected}"))?;
                let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
                let host_ok = uri.host().is_some_and(|h| !h.is_empty());
                let path_ok = matches!(uri.path(), "" | "/") && uri.query().is_none();
                if !(scheme_ok && host_ok && path_ok) {
                    bail!("log backend {s:?}: {expected}");
                }
                Ok(LogSpec::Remote(rest.trim_end_matches('/').to_owned()))
            }
            "jetstream" => {
                let (urls, query) = rest.split_once('?').unwrap_or((rest, ""));
                if urls.is_empty()
                    || !urls
                        .split(',')
                        .all(|u| u.starts_with("nats://") && u.len() > "nats://".len())
                {
                    bail!("log backend {s:?}: {expected}");
                }
                let mut replicas = 3;
                let mut prefix = "onecity".to_owned();
                for kv in query.split('&').filter(|kv| !kv.is_empty()) {
                    match kv.split_once('=') {
                        Some(("replicas", n)) => {
                            replicas = n.parse().ok().filter(|n| (1..=5).contains(n)).ok_or_else(
                                || anyhow::anyhow!("log backend {s:?}: replicas must be 1 to 5"),
                            )?;
                        }
                        Some(("prefix", p)) if !p.is_empty() => prefix = p.to_owned(),
                        _ => bail!("log backend {s:?}: unknown option {kv:?}; {expected}"),
                    }
                }
                Ok(LogSpec::JetStream {
                    urls: urls.to_owned(),
                    replicas,
                    prefix,
                })
            }
            _ => bail!("log backend {s:?}: unknown kind {scheme:?}; {expected}"),
        }
    }
}

impl fmt::Display for LogSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogSpec::Sled(path) => write!(f, "sled:{}", path.display()),
            LogSpec::Remote(url) => write!(f, "remote:{url}"),
            LogSpec::JetStream {
                urls,
                replicas,
                prefix,
            } => {
                write!(f, "jetstream:{urls}?replicas={replicas}&prefix={prefix}")
            }
        }
    }
}

impl Serialize for LogSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LogSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e: anyhow::Error| serde::de::Error::custom(e))
    }
}

/// The kind of principal a token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    /// A street-office intake terminal: needs `id`, `district`, `street_office`.
    Terminal,
    /// A department unit's back-office system: needs `unit`.
    Department,
    /// An administrator: needs `id`.
    Admin,
    /// Another onecity process (e.g. a worker reaching the shared log): needs `id`.
    Service,
}

impl PrincipalKind {
    fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::Terminal => "terminal",
            PrincipalKind::Department => "department",
            PrincipalKind::Admin => "admin",
            PrincipalKind::Service => "service",
        }
    }
}

/// One `[[tokens]]` entry of the config file.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The bearer token, a secret: 1–256 visible ASCII characters, unique in the file.
    pub token: String,
    /// Kind of principal: `terminal`, `department`, `admin` or `service`.
    pub principal: PrincipalKind,
    /// Terminal, admin or service id (e.g. `T-120103-07`), recorded as the actor of events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Terminal only: district code of its street office (one of the 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub district: Option<String>,
    /// Terminal only: name of its street office.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub street_office: Option<String>,
    /// Department only: the unit, `<department>@<district code>` (e.g. `civil-affairs@120103`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

// Hand-written so the token never reaches a log line.
impl fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenConfig")
            .field("token", &"****")
            .field("principal", &self.principal)
            .field("id", &self.id)
            .field("district", &self.district)
            .field("street_office", &self.street_office)
            .field("unit", &self.unit)
            .finish()
    }
}

impl TokenConfig {
    /// A terminal token.
    pub fn terminal(token: &str, id: &str, district: &str, street_office: &str) -> Self {
        TokenConfig {
            token: token.to_owned(),
            principal: PrincipalKind::Terminal,
            id: Some(id.to_owned()),
            district: Some(district.to_owned()),
            street_office: Some(street_office.to_owned()),
            unit: None,
        }
    }

    /// A department unit token.
    pub fn department(token: &str, unit: &str) -> Self {
        TokenConfig {
            token: token.to_owned(),
            principal: PrincipalKind::Department,
            id: None,
            district: None,
            street_office: None,
            unit: Some(unit.to_owned()),
        }
    }

    /// An admin or service token.
    pub fn named(token: &str, kind: PrincipalKind, id: &str) -> Self {
        TokenConfig {
            token: token.to_owned(),
            principal: kind,
            id: Some(id.to_owned()),
            district: None,
            street_office: None,
            unit: None,
        }
    }

    /// How errors name this entry: position, kind and id or unit, never the token.
    fn label(&self, index: usize) -> String {
        let name = self.id.as_deref().or(self.unit.as_deref());
        match name {
            Some(name) => format!("tokens[{index}] ({} {name:?})", self.principal.as_str()),
            None => format!("tokens[{index}] ({})", self.principal.as_str()),
        }
    }

    /// The principal this entry stands for, or why the entry is invalid.
    pub fn to_principal(&self) -> Result<Principal, String> {
        check_token(&self.token)?;
        let a_kind = match self.principal {
            PrincipalKind::Terminal => "a terminal",
            PrincipalKind::Department => "a department",
            PrincipalKind::Admin => "an admin",
            PrincipalKind::Service => "a service",
        };
        // Each kind names the fields it needs; any other field is a mistake worth refusing
        // (e.g. a `district` on a department token suggests the unit was meant elsewhere).
        let needed: &[&str] = match self.principal {
            PrincipalKind::Terminal => &["id", "district", "street_office"],
            PrincipalKind::Department => &["unit"],
            PrincipalKind::Admin | PrincipalKind::Service => &["id"],
        };
        let fields = [
            ("id", self.id.as_deref()),
            ("district", self.district.as_deref()),
            ("street_office", self.street_office.as_deref()),
            ("unit", self.unit.as_deref()),
        ];
        for (name, value) in fields {
            match (needed.contains(&name), value) {
                (true, None) => return Err(format!("{a_kind} token needs `{name}`")),
                (false, Some(_)) => {
                    return Err(format!("`{name}` does not apply to {a_kind} token"))
                }
                _ => {}
            }
        }
        let text = |name: &str, value: Option<&str>| -> Result<String, String> {
            let v = value.unwrap_or_default().trim();
            if v.is_empty() {
                return Err(format!("`{name}` is empty"));
            }
            if v.chars().count() > MAX_ID_CHARS || v.chars().any(char::is_control) {
                return Err(format!(
                    "`{name}` must be at most {MAX_ID_CHARS} characters without control characters"
                ));
            }
            Ok(v.to_owned())
        };
        Ok(match self.principal {
            PrincipalKind::Terminal => {
                let district = self.district.as_deref().unwrap_or_default();
                Principal::Terminal {
                    id: text("id", self.id.as_deref())?,
                    district: DistrictCode::parse(district).ok_or_else(|| {
                        format!("unknown district {district:?}: expected one of the 16 Tianjin district codes (120101..120119)")
                    })?,
                    street_office: text("street_office", self.street_office.as_deref())?,
                }
            }
            PrincipalKind::Department => {
                let unit = self.unit.as_deref().unwrap_or_default();
                Principal::Department {
                    unit: unit.parse::<DepartmentUnit>().map_err(|e| {
                        format!("bad unit {unit:?}: {e} (e.g. civil-affairs@120103)")
                    })?,
                }
            }
            PrincipalKind::Admin => Principal::Admin {
                id: text("id", self.id.as_deref())?,
            },
            PrincipalKind::Service => Principal::Service {
                id: text("id", self.id.as_deref())?,
            },
        })
    }
}

fn check_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("`token` is empty".to_owned());
    }
    // It travels as `authorization: Bearer <token>`, so it must be a plain header value.
    if token.len() > MAX_TOKEN_CHARS || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "`token` must be 1..={MAX_TOKEN_CHARS} visible ASCII characters without spaces"
        ));
    }
    Ok(())
}

/// The built-in DEMO tokens: public, for trying onecity out on one machine. Every token starts
/// with `demo-` and says what it is:
///
/// | token | principal |
/// | --- | --- |
/// | `demo-terminal-120103` | terminal `T-120103-01`, Youyi Road street office, Hexi |
/// | `demo-terminal-120101` | terminal `T-120101-01`, Quanyechang street office, Heping |
/// | `demo-<department>-120103` | each of the 8 department units in Hexi, e.g. `demo-civil-affairs-120103` |
/// | `demo-civil-affairs-120101` | `civil-affairs@120101` (Heping) |
/// | `demo-admin` | admin `demo-admin` |
/// | `demo-service` | service `demo-service` |
pub fn demo_tokens() -> Vec<TokenConfig> {
    let mut tokens = vec![
        TokenConfig::terminal(
            DEMO_TERMINAL_TOKEN,
            "T-120103-01",
            "120103",
            "Youyi Road street office",
        ),
        TokenConfig::terminal(
            "demo-terminal-120101",
            "T-120101-01",
            "120101",
            "Quanyechang street office",
        ),
    ];
    for department in onecity_domain::Department::ALL {
        tokens.push(TokenConfig::department(
            &format!("demo-{department}-120103"),
            &format!("{department}@120103"),
        ));
    }
    tokens.push(TokenConfig::department(
        "demo-civil-affairs-120101",
        "civil-affairs@120101",
    ));
    tokens.push(TokenConfig::named(
        "demo-admin",
        PrincipalKind::Admin,
        "demo-admin",
    ));
    tokens.push(TokenConfig::named(
        "demo-service",
        PrincipalKind::Service,
        "demo-service",
    ));
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;
    use onecity_domain::Department;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    fn load_str(text: &str) -> anyhow::Result<Config> {
        let f = write(text);
        Config::load_with(Some(f.path()), &no_env, Overrides::default())
    }

    #[test]
    fn defaults() {
        let c = Config::load_with(None, &no_env, Overrides::default()).unwrap();
        assert_eq!(c.addr.to_string(), DEFAULT_ADDR);
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.log, None);
        assert_eq!(c.log_spec(), LogSpec::Sled(PathBuf::from("./data")));
        assert_eq!(c.policy_file, None);
        assert_eq!(c.catalogue_file, None);
        assert!(c.uses_demo_tokens());
        assert_eq!(c, Config::default());
    }

    #[test]
    fn demo_tokens_cover_the_walkthrough() {
        let p = Config::default().principals().unwrap();
        assert!(matches!(
            &p[DEMO_TERMINAL_TOKEN],
            Principal::Terminal { district, .. } if district.code() == "120103"
        ));
        assert!(matches!(
            &p["demo-terminal-120101"],
            Principal::Terminal { district, .. } if district.code() == "120101"
        ));
        for d in Department::ALL {
            let unit: DepartmentUnit = format!("{d}@120103").parse().unwrap();
            assert_eq!(
                p[&format!("demo-{d}-120103")],
                Principal::Department { unit }
            );
        }
        assert_eq!(
            p["demo-civil-affairs-120101"],
            Principal::Department {
                unit: "civil-affairs@120101".parse().unwrap()
            }
        );
        assert!(matches!(p["demo-admin"], Principal::Admin { .. }));
        assert!(matches!(p["demo-service"], Principal::Service { .. }));
        assert_eq!(p.len(), 13);
    }

    #[test]
    fn file_overrides_defaults_and_replaces_tokens() {
        let c = load_str(
            r#"
            addr = "0.0.0.0:6000"
            data_dir = "/var/lib/onecity"
            policy_file = "/etc/onecity/policy.toml"

            [[tokens]]
            token = "s3cret-terminal"
            principal = "terminal"
            id = "T-120104-02"
            district = "120104"
            street_office = "Wanxing street office"

            [[tokens]]
            token = "s3cret-dept"
            principal = "department"
            unit = "housing@120104"
            "#,
        )
        .unwrap();
        assert_eq!(c.addr.to_string(), "0.0.0.0:6000");
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/onecity"));
        // The default log follows data_dir.
        assert_eq!(
            c.log_spec(),
            LogSpec::Sled(PathBuf::from("/var/lib/onecity"))
        );
        assert_eq!(
            c.policy_file,
            Some(PathBuf::from("/etc/onecity/policy.toml"))
        );
        assert_eq!(c.catalogue_file, None);
        assert!(!c.uses_demo_tokens());
        let p = c.principals().unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p["s3cret-terminal"].actor(), "terminal:T-120104-02");
        assert_eq!(p["s3cret-dept"].actor(), "department:housing@120104");
    }

    #[test]
    fn precedence_file_then_env_then_flags() {
        let f = write(
            r#"
            addr = "127.0.0.1:7000"
            data_dir = "/from/file"
            log = "sled:/file/log"
            catalogue_file = "/file/catalogue.toml"
            "#,
        );
        let env = env_of(&[
            ("ONECITY_ADDR", "127.0.0.1:7001"),
            ("ONECITY_DATA_DIR", "/from/env"),
            ("ONECITY_POLICY_FILE", "/env/policy.toml"),
            // Empty counts as unset: the file's value stays.
            ("ONECITY_CATALOGUE_FILE", ""),
        ]);
        let c = Config::load_with(Some(f.path()), &env, Overrides::default()).unwrap();
        assert_eq!(c.addr.to_string(), "127.0.0.1:7001");
        assert_eq!(c.data_dir, PathBuf::from("/from/env"));
        assert_eq!(c.log_spec(), LogSpec::Sled(PathBuf::from("/file/log")));
        assert_eq!(c.policy_file, Some(PathBuf::from("/env/policy.toml")));
        assert_eq!(
            c.catalogue_file,
            Some(PathBuf::from("/file/catalogue.toml"))
        );

        let env = env_of(&[
            ("ONECITY_ADDR", "127.0.0.1:7001"),
            ("ONECITY_LOG", "remote:http://10.0.0.5:50051"),
        ]);
        let flags = Overrides {
            addr: Some("127.0.0.1:7002".parse().unwrap()),
            data_dir: Some(PathBuf::from("/from/flag")),
            ..Overrides::default()
        };
        let c = Config::load_with(Some(f.path()), &env, flags).unwrap();
        assert_eq!(c.addr.to_string(), "127.0.0.1:7002");
        assert_eq!(c.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(
            c.log_spec(),
            LogSpec::Remote("http://10.0.0.5:50051".to_owned())
        );

        let flags = Overrides {
            log: Some("sled:/flag/log".parse().unwrap()),
            ..Overrides::default()
        };
        let c = Config::load_with(Some(f.path()), &env, flags).unwrap();
        assert_eq!(c.log_spec(), LogSpec::Sled(PathBuf::from("/flag/log")));
    }

    #[test]
    fn default_log_follows_data_dir_flag() {
        let flags = Overrides {
            data_dir: Some(PathBuf::from("/tmp/x")),
            ..Overrides::default()
        };
        let c = Config::load_with(None, &no_env, flags).unwrap();
        assert_eq!(c.log_spec(), LogSpec::Sled(PathBuf::from("/tmp/x")));
    }

    #[test]
    fn roles_and_partition_layer_like_the_rest() {
        let f = write("roles = [\"intake\", \"handoff\"]\npartition = \"1/3\"\n");
        let c = Config::load_with(Some(f.path()), &no_env, Overrides::default()).unwrap();
        assert_eq!(c.roles, vec![Role::Intake, Role::Handoff]);
        assert!(c.runs(Role::Handoff) && !c.runs(Role::Eligibility));
        assert_eq!(c.partition.to_string(), "1/3");
        let env = env_of(&[
            ("ONECITY_ROLES", "eligibility,log"),
            ("ONECITY_PARTITION", "0/2"),
        ]);
        let c = Config::load_with(Some(f.path()), &env, Overrides::default()).unwrap();
        assert_eq!(c.roles, vec![Role::Eligibility, Role::Log]);
        assert_eq!(c.partition.to_string(), "0/2");
        let flags = Overrides {
            roles: vec![Role::All],
            ..Overrides::default()
        };
        let c = Config::load_with(Some(f.path()), &env, flags).unwrap();
        assert!(c.runs(Role::Intake) && c.runs(Role::Log));
        assert!(load_str("partition = \"2/2\"\n").is_err());
        assert!(load_str("roles = [\"billing\"]\n").is_err());
        assert!(load_str("roles = []\n").is_err());
        let remote_log_role = Config::load_with(
            None,
            &env_of(&[
                ("ONECITY_ROLES", "log"),
                ("ONECITY_LOG", "remote:http://127.0.0.1:1"),
            ]),
            Overrides::default(),
        );
        assert!(format!("{:#}", remote_log_role.unwrap_err()).contains("not a remote"));
        // Over JetStream the process reaches the store itself, so it may serve it.
        let jetstream_log_role = Config::load_with(
            None,
            &env_of(&[
                ("ONECITY_ROLES", "log"),
                ("ONECITY_LOG", "jetstream:nats://127.0.0.1:4222"),
            ]),
            Overrides::default(),
        );
        assert!(jetstream_log_role.is_ok(), "{jetstream_log_role:?}");
    }

    #[test]
    fn routing_lag_and_worker_partitions_layer_like_the_rest() {
        let c = Config::default();
        assert_eq!(c.max_routing_lag, 10_000);
        assert_eq!(c.worker_partition_count(), 1);
        let f = write("max_routing_lag = 50\nroles = [\"intake\"]\nworker_partitions = 2\n");
        let c = Config::load_with(Some(f.path()), &no_env, Overrides::default()).unwrap();
        assert_eq!((c.max_routing_lag, c.worker_partition_count()), (50, 2));
        let env = env_of(&[
            ("ONECITY_MAX_ROUTING_LAG", "0"),
            ("ONECITY_WORKER_PARTITIONS", "3"),
        ]);
        let c = Config::load_with(Some(f.path()), &env, Overrides::default()).unwrap();
        assert_eq!((c.max_routing_lag, c.worker_partition_count()), (0, 3));
        // Without the setting, the workers' own partition count.
        assert_eq!(
            load_str("partition = \"1/3\"\n")
                .unwrap()
                .worker_partition_count(),
            3
        );
        // A process that runs workers cannot disagree with itself.
        let err = load_str("partition = \"0/2\"\nworker_partitions = 3\n").unwrap_err();
        assert!(format!("{err:#}").contains("worker_partitions"), "{err:#}");
        assert!(load_str("roles = [\"intake\"]\nworker_partitions = 0\n").is_err());
        let err = Config::load_with(
            None,
            &env_of(&[("ONECITY_MAX_ROUTING_LAG", "lots")]),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("ONECITY_MAX_ROUTING_LAG"),
            "{err:#}"
        );
        // `onecity config` prints both, resolved.
        let text = Config::default().to_redacted_toml().unwrap();
        assert!(text.contains("max_routing_lag = 10000"), "{text}");
        assert!(text.contains("worker_partitions = 1"), "{text}");
    }

    #[test]
    fn bad_env_values_are_refused() {
        let err = Config::load_with(
            None,
            &env_of(&[("ONECITY_ADDR", "localhost")]),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("ONECITY_ADDR"), "{err:#}");
        let err = Config::load_with(
            None,
            &env_of(&[("ONECITY_LOG", "postgres://x")]),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("ONECITY_LOG"), "{err:#}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = load_str("adress = \"127.0.0.1:1\"\n").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("unknown field `adress`"), "{msg}");
        assert!(msg.contains("config file"), "{msg}");

        let err = load_str(
            r#"
            [[tokens]]
            token = "x-123"
            principal = "admin"
            id = "a"
            role = "root"
            "#,
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown field `role`"),
            "{err:#}"
        );

        let err = load_str("[[tokens]]\ntoken = \"x\"\nprincipal = \"clerk\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("clerk"), "{err:#}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = Config::load_with(
            Some(Path::new("/nonexistent/onecity.toml")),
            &no_env,
            Overrides::default(),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").starts_with("read config file /nonexistent/onecity.toml"),
            "{err:#}"
        );
    }

    fn token_error(entry: &str) -> String {
        let err = load_str(&format!("[[tokens]]\n{entry}\n")).unwrap_err();
        format!("{err:#}")
    }

    #[test]
    fn bad_token_entries_name_the_entry() {
        let e = token_error(
            "token = \"t-1\"\nprincipal = \"terminal\"\nid = \"T-9\"\ndistrict = \"120199\"\nstreet_office = \"x\"",
        );
        assert!(
            e.starts_with("tokens[0] (terminal \"T-9\"): unknown district \"120199\""),
            "{e}"
        );

        let e =
            token_error("token = \"t-1\"\nprincipal = \"department\"\nunit = \"police@120103\"");
        assert!(
            e.starts_with("tokens[0] (department \"police@120103\"): bad unit"),
            "{e}"
        );
        assert!(e.contains("unknown department"), "{e}");

        let e =
            token_error("token = \"t-1\"\nprincipal = \"department\"\nunit = \"civil-affairs\"");
        assert!(e.contains("bad unit \"civil-affairs\""), "{e}");

        let e = token_error(
            "token = \"t-1\"\nprincipal = \"terminal\"\nid = \"T-1\"\ndistrict = \"120103\"",
        );
        assert!(e.contains("a terminal token needs `street_office`"), "{e}");

        let e = token_error("token = \"t-1\"\nprincipal = \"department\"\nunit = \"housing@120103\"\ndistrict = \"120103\"");
        assert!(
            e.contains("`district` does not apply to a department token"),
            "{e}"
        );

        let e = token_error("token = \"t-1\"\nprincipal = \"admin\"");
        assert!(
            e.starts_with("tokens[0] (admin): an admin token needs `id`"),
            "{e}"
        );

        let e = token_error("token = \"\"\nprincipal = \"service\"\nid = \"w\"");
        assert!(e.contains("`token` is empty"), "{e}");

        let e = token_error("token = \"has space\"\nprincipal = \"service\"\nid = \"w\"");
        assert!(e.contains("visible ASCII"), "{e}");
        assert!(
            !e.contains("has space"),
            "the token must not be echoed: {e}"
        );

        let e = token_error("token = \"t-1\"\nprincipal = \"service\"\nid = \"  \"");
        assert!(e.contains("`id` is empty"), "{e}");
    }

    #[test]
    fn duplicate_tokens_are_refused() {
        let err = load_str(
            r#"
            [[tokens]]
            token = "same-token"
            principal = "admin"
            id = "a"
            [[tokens]]
            token = "same-token"
            principal = "service"
            id = "b"
            "#,
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert_eq!(
            msg,
            "tokens[1] (service \"b\"): the same token is already given to tokens[0]"
        );
    }

    #[test]
    fn log_spec_forms() {
        assert_eq!(
            "sled:./data".parse::<LogSpec>().unwrap(),
            LogSpec::Sled(PathBuf::from("./data"))
        );
        assert_eq!(
            "remote:http://127.0.0.1:50051/".parse::<LogSpec>().unwrap(),
            LogSpec::Remote("http://127.0.0.1:50051".to_owned())
        );
        for bad in [
            "",
            "sled:",
            "./data",
            "remote:",
            "remote:127.0.0.1:50051",
            "remote:ftp://h:1",
            "remote:http://h:1/path",
            "nats:x",
        ] {
            assert!(bad.parse::<LogSpec>().is_err(), "{bad:?} accepted");
        }
        for s in ["sled:/var/lib/onecity", "remote:https://log.example:443"] {
            assert_eq!(s.parse::<LogSpec>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn redacted_toml_hides_tokens_and_round_trips() {
        let mut c = Config::default();
        c.tokens.push(TokenConfig::named(
            "real-secret-token",
            PrincipalKind::Service,
            "worker",
        ));
        c.log_token = Some("another-secret".to_owned());
        let text = c.to_redacted_toml().unwrap();
        assert!(!text.contains("real-secret-token"), "{text}");
        assert!(!text.contains("another-secret"), "{text}");
        assert!(!text.contains(DEMO_TERMINAL_TOKEN), "{text}");
        assert!(text.contains("token = \"demo-…\""), "{text}");
        assert!(text.contains("token = \"****\""), "{text}");
        assert!(text.contains("log = \"sled:./data\""), "{text}");
        // The printed form is itself a valid config file.
        let back = Config::from_toml_str(&text).unwrap();
        assert_eq!(back.tokens.len(), c.tokens.len());
        assert_eq!(back.log_spec(), c.log_spec());
        // Debug never shows tokens either.
        let debug = format!("{c:?}");
        assert!(!debug.contains("real-secret-token") && !debug.contains("another-secret"));
    }

    #[test]
    fn shipped_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/onecity.toml");
        let c = Config::load_with(Some(&path), &no_env, Overrides::default()).unwrap();
        assert_eq!(c.addr.to_string(), DEFAULT_ADDR);
        assert!(c.uses_demo_tokens());
        assert_eq!(
            c.principals().unwrap(),
            Config::default().principals().unwrap()
        );
    }
}
