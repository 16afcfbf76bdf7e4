//! The `onecity` command line: `onecity serve` runs every service in one process; the other
//! commands are a gRPC client for people (street-office clerks, department staff, operators).
//!
//! Client commands read and print the proto3 JSON mapping of `onecity.v1` messages (see
//! [`crate::json`]). A failed call prints `error: <STATUS_CODE>: <message>` on stderr and exits
//! with status 1.
//!
//! This module defines the commands and their flags and dispatches them; the commands live by
//! concern: `serve` in [`serve`](serve::serve), the client commands for people in [`client`],
//! the `log` commands in [`log`], and what they print in [`output`].

mod client;
mod keys;
mod log;
mod output;
mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use onecity_proto::v1 as pb;
use tracing_subscriber::EnvFilter;

use crate::config::{self, Config, LogSpec, Overrides};

use client::client_command;
pub use client::{default_request_id, read_application, Client};
pub use output::{code_name, render_error};
use output::{emit, is_broken_pipe};
use serve::serve;
pub use serve::shutdown_signal;

/// Environment variable with the log filter (`RUST_LOG` syntax, e.g. `info,onecity_eventlog=debug`).
pub const ENV_LOG_LEVEL: &str = "ONECITY_LOG_LEVEL";
/// Default server address of the client commands.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// onecity: one application at any street office, every relevant department receives its
/// referral.
#[derive(Debug, Parser)]
#[command(name = "onecity", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// A subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every onecity service in one process until Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Print the effective configuration of `serve` (same flags), tokens redacted.
    Config(ServeArgs),
    /// Submit an application (JSON file of onecity.v1.Application) and print the case id.
    Submit {
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
        /// Application in proto3 JSON (see docs/examples/).
        file: PathBuf,
        /// Idempotency key; default: derived from the application's content, so submitting the
        /// same file again returns the same case instead of opening a new one.
        #[arg(long)]
        request_id: Option<String>,
        /// Print only the case id (for scripts).
        #[arg(short, long)]
        quiet: bool,
        /// Open the case even though a member already belongs to an open case, for this
        /// reason (recorded on the case).
        #[arg(long, default_value = "")]
        duplicate_override_reason: String,
    },
    /// List every case naming a person, by identity number (terminal or admin token).
    FindCases {
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
        /// Resident identity number (18 characters).
        #[arg(long)]
        id_number: String,
    },
    /// Assess an application without submitting it (nothing is written).
    Screen {
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
        /// Application in proto3 JSON.
        file: PathBuf,
        /// Every rule with its inputs and explanation too (the FULL view); by default
        /// each programme's outcome, amount and summary.
        #[arg(long)]
        full: bool,
    },
    /// Show a case: status, assessments, referrals, history.
    Case {
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
        /// Case id (UUID).
        case_id: String,
        /// Stream the case's events (recorded ones, then new ones) until it is closed or
        /// withdrawn.
        #[arg(long)]
        watch: bool,
    },
    /// Record a change of the household's circumstances (terminal token): the whole
    /// application as it now stands; the case is re-assessed and its referrals follow.
    Amend {
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
        /// Case id (UUID).
        case_id: String,
        /// The application as it now stands, in proto3 JSON.
        file: PathBuf,
        /// Why it changed (required; no identity numbers).
        #[arg(long)]
        reason: String,
        /// Idempotency key; default: derived from the case, the application and the
        /// reason, so running the same command again records nothing new.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Withdraw an application; its open referrals are cancelled.
    Withdraw {
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
        /// Case id (UUID).
        case_id: String,
        /// Reason given by the applicant.
        #[arg(long, default_value = "")]
        reason: String,
        /// Idempotency key: retrying with the same key returns the original result instead
        /// of acting twice (see docs/api.md).
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// A terminal records that the household provided what a department asked for: the
    /// referral is ACKNOWLEDGED again and its deadline moves by the time it waited.
    Provide {
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
        /// Case id (UUID).
        case_id: String,
        /// The referral that asked (NEEDS_INFO).
        referral_id: String,
        /// What was provided (no identity numbers).
        #[arg(long)]
        note: String,
        /// Idempotency key: retrying with the same key returns the original result instead
        /// of acting twice (see docs/api.md).
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// List the calling department unit's referrals (a supervisor: its district's).
    Referrals {
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
        /// Only referrals in this state.
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        /// Only referrals of this programme (slug, e.g. `medical`).
        #[arg(long, conflicts_with = "follow")]
        programme: Option<String>,
        /// Only overdue referrals not yet in a final state.
        #[arg(long, conflicts_with = "follow")]
        overdue: bool,
        /// Only referrals due before this instant (RFC 3339).
        #[arg(long, conflicts_with = "follow")]
        due_before: Option<String>,
        /// Stream referrals (backlog, then live) instead of listing once.
        #[arg(long)]
        follow: bool,
        /// With --follow: resume after this cursor (printed with every streamed referral).
        #[arg(long, requires = "follow")]
        after: Option<String>,
        /// Print only referral ids, one a line (for scripts).
        #[arg(short, long)]
        quiet: bool,
    },
    /// Acknowledge a referral (the department has received it).
    Ack {
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
        /// Referral id.
        referral_id: String,
        /// Idempotency key: retrying with the same key returns the original result instead
        /// of acting twice (see docs/api.md).
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Report a signal about a resident (department or service token); see
    /// docs/monitoring.md.
    Signal {
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
        /// What happened: medical-expense, unemployment, disability-recognised, death,
        /// disaster or income-drop.
        kind: String,
        /// Reporting system, e.g. `medical-insurance`.
        #[arg(long)]
        source: String,
        /// The source's record id (with --source, the idempotency key).
        #[arg(long)]
        source_id: String,
        /// Resident identity number (18 characters).
        #[arg(long)]
        id_number: String,
        /// When it happened (YYYY-MM-DD).
        #[arg(long)]
        occurred_on: String,
        /// Amount in fen (1 yuan = 100 fen), for the kinds that have one.
        #[arg(long, default_value_t = 0)]
        amount_fen: i64,
        /// District where it happened (six digits).
        #[arg(long)]
        district: String,
    },
    /// List warnings (civil affairs and supervisors: their district's; admins: all).
    Warnings {
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
        /// Only open warnings.
        #[arg(long)]
        open: bool,
        /// Only open warnings past their deadline.
        #[arg(long)]
        overdue: bool,
        /// Admins: only this district's.
        #[arg(long, default_value = "")]
        district: String,
    },
    /// Count referrals, decisions, warnings and re-verifications over a range of days
    /// (supervisors: their district; admins: any or every district); see
    /// docs/monitoring.md.
    Stats {
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
        /// District (six digits); empty: the supervisor's own, or every district for an
        /// admin.
        #[arg(long, default_value = "")]
        district: String,
        /// Only this programme's referrals (slug, e.g. `dibao`).
        #[arg(long)]
        programme: Option<String>,
        /// First day counted (YYYY-MM-DD, Beijing).
        #[arg(long)]
        from: String,
        /// Last day counted, included (YYYY-MM-DD, Beijing).
        #[arg(long)]
        to: String,
    },
    /// Resolve a warning (civil affairs of its district).
    ResolveWarning {
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
        /// Warning id.
        warning_id: String,
        /// visited-no-need, case-opened or referred-to-charity.
        outcome: String,
        /// With case-opened: the case (UUID).
        #[arg(long, default_value = "")]
        case_id: String,
        /// What civil affairs found.
        #[arg(long, default_value = "")]
        note: String,
        /// Idempotency key.
        #[arg(long)]
        request_id: String,
    },
    /// Record a department's decision on a referral.
    Decide {
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
        /// Referral id.
        referral_id: String,
        /// The decision.
        #[arg(value_enum)]
        decision: DecisionArg,
        /// Decided amount in fen (1 yuan = 100 fen); 0 when denied.
        #[arg(long, default_value_t = 0)]
        amount_fen: i64,
        /// Note explaining the decision.
        #[arg(long, default_value = "")]
        note: String,
        /// Idempotency key: retrying with the same key returns the original result instead
        /// of acting twice (see docs/api.md).
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Move a referral to another unit: a department to its department in another
    /// district, a supervisor to another unit of its district.
    Transfer {
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
        /// Referral id.
        referral_id: String,
        /// The receiving unit, e.g. `housing@120101`.
        #[arg(long)]
        to: String,
        /// Why (shown to both units and on the case).
        #[arg(long)]
        reason: String,
        /// Idempotency key: retrying with the same key returns the original result instead
        /// of acting twice (see docs/api.md).
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Ask the household for information on a referral: it waits (NEEDS_INFO) and its
    /// deadline pauses until a terminal provides it (`onecity provide`).
    Ask {
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
        /// Referral id.
        referral_id: String,
        /// What is needed.
        #[arg(long)]
        what: String,
        /// Idempotency key: retrying with the same key returns the original result instead
        /// of acting twice (see docs/api.md).
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Show the policy parameters in force on a date, or what a version would change.
    #[command(args_conflicts_with_subcommands = true)]
    Policy {
        /// What else to do with the policy.
        #[command(subcommand)]
        command: Option<PolicyCommand>,
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
        /// Date (YYYY-MM-DD); default today.
        #[arg(long)]
        as_of: Option<String>,
    },
    /// Read the event log (service or admin token).
    Log {
        /// Log command.
        #[command(subcommand)]
        command: LogCommand,
    },
    /// Operate the workers (admin token).
    Admin {
        /// Admin command.
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Check a server's health (grpc.health.v1, no token needed); exits 0 when SERVING.
    /// For probes of a TLS listener, which the kubelet's own gRPC probe cannot reach.
    Health {
        /// Server and TLS.
        #[command(flatten)]
        client: ClientArgs,
        /// The service to check, e.g. onecity.v1.IntakeService; default the whole server.
        #[arg(long, default_value = "")]
        service: String,
    },
    /// Make bearer tokens for the config file.
    Token {
        /// Token command.
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Make TLS certificates (a CA, and certificates it signs) for small deployments and
    /// trials; see docs/operations.md.
    Cert {
        /// Certificate command.
        #[command(subcommand)]
        command: CertCommand,
    },
}

/// `onecity token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a fresh random 256-bit token once, then the `[[tokens]]` entry holding its
    /// SHA-256 for the server's config file.
    New {
        /// Kind of principal.
        #[arg(long, value_enum)]
        principal: PrincipalArg,
        /// Terminal, admin or service id (e.g. T-120103-07).
        #[arg(long)]
        id: Option<String>,
        /// Terminal: district code of its street office.
        #[arg(long)]
        district: Option<String>,
        /// Terminal: name of its street office.
        #[arg(long)]
        street_office: Option<String>,
        /// Department: the unit, <department>@<district code>.
        #[arg(long)]
        unit: Option<String>,
        /// Service: a role it may act as, intake, eligibility, handoff or all (repeatable,
        /// or comma-separated); it may append only its roles' event types. Default: all.
        #[arg(long = "role", value_delimiter = ',', value_parser = parse_role)]
        roles: Vec<config::Role>,
        /// Write the token to this new file (mode 0600) instead of printing it.
        #[arg(long)]
        token_out: Option<PathBuf>,
    },
}

/// `--principal` values of `token new`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrincipalArg {
    /// A street-office terminal.
    Terminal,
    /// A department unit.
    Department,
    /// An administrator.
    Admin,
    /// Another onecity process.
    Service,
}

/// `onecity cert ...`.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Make a CA: DIR/ca.pem (give it to every client and server) and DIR/ca.key (keep it
    /// offline).
    Ca {
        /// Directory to write to (created).
        #[arg(long)]
        out: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "onecity CA")]
        name: String,
    },
    /// Make a certificate signed by the CA in --ca: DIR/NAME.pem and DIR/NAME.key, usable
    /// by a server (for --host names) and as a client certificate (for --uri identities).
    Issue {
        /// Directory holding ca.pem and ca.key.
        #[arg(long)]
        ca: PathBuf,
        /// Directory to write to (created).
        #[arg(long)]
        out: PathBuf,
        /// File name stem of the certificate and key.
        #[arg(long)]
        name: String,
        /// DNS name or IP address the server is reached at (repeatable).
        #[arg(long)]
        host: Vec<String>,
        /// URI identity of a client, e.g. spiffe://onecity/service/intake-1 (repeatable).
        #[arg(long)]
        uri: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 90)]
        days: u32,
    },
}

/// `onecity admin ...`.
/// `onecity policy ...` beyond showing a version.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// What a policy version would change if it took effect now (admin token; writes
    /// nothing): programmes newly eligible, no longer eligible and with another amount,
    /// by programme and by district.
    #[command(disable_version_flag = true)]
    Impact {
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
        /// The policy version id (e.g. 2027-01).
        #[arg(long, value_name = "ID")]
        version: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// List the events the workers quarantined (could not handle and moved past).
    Quarantined {
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// How far behind each routing worker checkpoint (role and partition) is, and who
    /// holds its partition.
    Lag {
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Re-run the owning worker on a quarantined event (after a fix); released on success.
    Retry {
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
        /// Log position of the quarantined event.
        position: u64,
        /// The worker to retry it with (needed only when several quarantined it).
        #[arg(long)]
        consumer: Option<String>,
    },
    /// Who looked at a household: the recorded reads of a case's data, or by a principal.
    Access {
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
        /// Reads of this case's data.
        #[arg(
            long = "case",
            value_name = "CASE_ID",
            conflicts_with = "principal",
            required_unless_present = "principal"
        )]
        case_id: Option<String>,
        /// Reads by this principal, e.g. `department:housing@120103`.
        #[arg(long)]
        principal: Option<String>,
        /// Earliest read (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Latest read (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// Most records, oldest first (default 1,000).
        #[arg(long, default_value_t = 0, hide_default_value = true)]
        limit: u32,
    },
}

/// `onecity log ...`.
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Print events of the global log, with decoded payloads.
    Tail {
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
        /// First position to print (1 is the start of the log); default: the last --lines events.
        #[arg(long)]
        from: Option<u64>,
        /// Without --from: how many of the latest events to print.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u64,
        /// Keep printing new events as they are appended.
        #[arg(long)]
        follow: bool,
    },
    /// Recompute the log's hash chain from position 1 through the log's read API (any
    /// principal that may read the raw log). Prints "intact up to position N" or the first
    /// broken link (position, case, what differs) and exits non-zero.
    Verify {
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Write the whole log to a file (stop the server first for a sled log: sled is
    /// opened by one process at a time). Prints the log's checksum.
    Export {
        /// Log backend to read: sled:PATH, remote:http(s)://HOST:PORT or
        /// jetstream:nats://HOST:PORT[,...][?replicas=N&prefix=NAME].
        #[arg(long, value_parser = parse_log_spec, long_help = config::log_spec_help("Log backend to read"))]
        log: LogSpec,
        /// Token for a remote log.
        #[arg(long, env = config::ENV_LOG_TOKEN, hide_env_values = true)]
        log_token: Option<String>,
        /// TLS of a remote:https:// log.
        #[command(flatten)]
        tls: TlsArgs,
        /// Output file.
        file: PathBuf,
    },
    /// Append an export to an EMPTY log, preserving order, versions and positions, then
    /// verify the target's checksum against the file's.
    Import {
        /// Log backend to write: sled:PATH, remote:http(s)://HOST:PORT or
        /// jetstream:nats://HOST:PORT[,...][?replicas=N&prefix=NAME].
        #[arg(long, value_parser = parse_log_spec, long_help = config::log_spec_help("Log backend to write"))]
        log: LogSpec,
        /// Token for a remote log.
        #[arg(long, env = config::ENV_LOG_TOKEN, hide_env_values = true)]
        log_token: Option<String>,
        /// TLS of a remote:https:// log.
        #[command(flatten)]
        tls: TlsArgs,
        /// Export file.
        file: PathBuf,
    },
    /// Print the checksum of a whole log (compare two logs after a migration).
    Checksum {
        /// Log backend: sled:PATH, remote:http(s)://HOST:PORT or
        /// jetstream:nats://HOST:PORT[,...][?replicas=N&prefix=NAME].
        #[arg(long, value_parser = parse_log_spec, long_help = config::log_spec_help("Log backend"))]
        log: LogSpec,
        /// Token for a remote log.
        #[arg(long, env = config::ENV_LOG_TOKEN, hide_env_values = true)]
        log_token: Option<String>,
        /// TLS of a remote:https:// log.
        #[command(flatten)]
        tls: TlsArgs,
    },
}

/// Flags of `serve` and `config`. The `ONECITY_*` variables named in the help are read by
/// [`Config::load_with`] (one reader, in their layer under the flags), not by these flags.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Listen address [env: ONECITY_ADDR] [default: 127.0.0.1:50051].
    #[arg(long)]
    pub addr: Option<SocketAddr>,
    /// Data directory [env: ONECITY_DATA_DIR] [default: ./data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Configuration file (TOML; see deploy/onecity.toml).
    #[arg(long, env = config::ENV_CONFIG)]
    pub config: Option<PathBuf>,
    /// Event log backend: sled:PATH, remote:http(s)://HOST:PORT or
    /// jetstream:nats://HOST:PORT[,...][?replicas=N&prefix=NAME] [env: ONECITY_LOG]
    /// [default: sled:<data dir>].
    #[arg(long, value_parser = parse_log_spec, long_help = config::log_spec_help(
        "Event log backend [env: ONECITY_LOG] [default: sled:<data dir>]"
    ))]
    pub log: Option<LogSpec>,
    /// Service role to run: intake, eligibility, handoff, log or all (repeatable,
    /// or comma-separated) [env: ONECITY_ROLES] [default: all].
    #[arg(long = "role", value_delimiter = ',', value_parser = parse_role)]
    pub roles: Vec<config::Role>,
    /// How many partitions the worker roles' work is split into; over a JetStream log
    /// the instances of a role share them through leases
    /// [env: ONECITY_WORKER_PARTITIONS] [default: the COUNT of --partition].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub partitions: Option<u32>,
    /// A fixed partition for this instance's workers, INDEX/COUNT; over a JetStream log
    /// only the partition tried first [env: ONECITY_PARTITION] [default: 0/1].
    #[arg(long, value_parser = parse_partition)]
    pub partition: Option<onecity_domain::Partition>,
    /// Serve on a non-loopback address even with demo tokens, no tokens, tokens in
    /// clear or without TLS (for a trusted network only; the server warns)
    /// [env: ONECITY_INSECURE].
    #[arg(long)]
    pub insecure: bool,
    /// Prometheus endpoint address, or off [env: ONECITY_METRICS_ADDR]
    /// [default: 127.0.0.1:9464].
    #[arg(long)]
    pub metrics_addr: Option<config::MetricsAddr>,
    /// Log lines as text or json (one object per line, with the span fields)
    /// [env: ONECITY_LOG_FORMAT] [default: text].
    #[arg(long, value_enum)]
    pub log_format: Option<crate::observe::LogFormat>,
    /// OTLP (gRPC) collector to export spans to, e.g. http://127.0.0.1:4317
    /// [env: ONECITY_OTLP_ENDPOINT] [default: none].
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
}

fn parse_role(s: &str) -> Result<config::Role, String> {
    s.parse().map_err(|e: anyhow::Error| e.to_string())
}

fn parse_partition(s: &str) -> Result<onecity_domain::Partition, String> {
    s.parse()
        .map_err(|e: onecity_domain::BadPartition| e.to_string())
}

fn parse_log_spec(s: &str) -> Result<LogSpec, String> {
    s.parse().map_err(|e: anyhow::Error| e.to_string())
}

impl ServeArgs {
    /// Defaults, file, environment, then these flags.
    pub fn load(&self) -> anyhow::Result<Config> {
        let mut config = Config::load_with(
            self.config.as_deref(),
            &config::process_env,
            Overrides {
                addr: self.addr,
                data_dir: self.data_dir.clone(),
                log: self.log.clone(),
                roles: self.roles.clone(),
                partition: self.partition,
                insecure: self.insecure,
                worker_partitions: self.partitions,
            },
        )?;
        if let Some(addr) = self.metrics_addr {
            config.metrics_addr = addr;
        }
        if let Some(format) = self.log_format {
            config.log_format = format;
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            config.otlp_endpoint = Some(endpoint.clone());
        }
        Ok(config)
    }
}

/// Server address, token and TLS of the client commands.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Server URL (https://HOST:PORT for a server with TLS).
    #[arg(long = "addr", value_name = "URL", env = "ONECITY_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// Bearer token; it shows in `ps`, so prefer --token-file [default: the demo
    /// terminal token demo-terminal-120103].
    #[arg(long, env = "ONECITY_TOKEN", hide_env_values = true, default_value = config::DEMO_TERMINAL_TOKEN, hide_default_value = true)]
    pub token: String,
    /// Why you read residents' data (sent as `onecity-purpose`, recorded with each read).
    #[arg(long, env = "ONECITY_PURPOSE")]
    pub purpose: Option<String>,
    /// File holding the bearer token (surrounding whitespace ignored); wins over --token.
    #[arg(long, env = "ONECITY_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// TLS.
    #[command(flatten)]
    pub tls: TlsArgs,
}

impl ClientArgs {
    /// The bearer token: the --token-file's content, else --token.
    pub fn token(&self) -> anyhow::Result<String> {
        match &self.token_file {
            Some(path) => read_token_file(path),
            None => Ok(self.token.clone()),
        }
    }
}

/// Reads a token file: its content without surrounding whitespace, which must not be empty.
pub fn read_token_file(path: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read token file {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        anyhow::bail!("token file {} is empty", path.display());
    }
    Ok(token.to_owned())
}

/// The TLS files of a client: the CA that signed the server's certificate, and a client
/// certificate for a server that requires one (mTLS).
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// CA certificate(s), PEM, that signed the server's certificate (needed for https://).
    #[arg(long, env = "ONECITY_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate, PEM, for a server that requires one.
    #[arg(long, env = "ONECITY_CERT", value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key of --cert, PEM.
    #[arg(long, env = "ONECITY_KEY", value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
}

impl TlsArgs {
    /// As [`crate::tls::ClientTlsFiles`].
    pub fn files(&self) -> crate::tls::ClientTlsFiles {
        crate::tls::ClientTlsFiles {
            ca: self.ca_cert.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

/// `--state` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    /// Issued, not yet acknowledged.
    Issued,
    /// Acknowledged, not yet decided.
    Acknowledged,
    /// Approved.
    Approved,
    /// Denied.
    Denied,
    /// Cancelled by withdrawal or linkage.
    Cancelled,
    /// Moved to another unit.
    Transferred,
    /// Waiting for information from the household.
    NeedsInfo,
}

impl StateArg {
    fn to_proto(self) -> pb::ReferralState {
        match self {
            StateArg::Issued => pb::ReferralState::Issued,
            StateArg::Acknowledged => pb::ReferralState::Acknowledged,
            StateArg::Approved => pb::ReferralState::Approved,
            StateArg::Denied => pb::ReferralState::Denied,
            StateArg::Cancelled => pb::ReferralState::Cancelled,
            StateArg::Transferred => pb::ReferralState::Transferred,
            StateArg::NeedsInfo => pb::ReferralState::NeedsInfo,
        }
    }
}

/// `decide` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DecisionArg {
    /// Approve.
    Approve,
    /// Deny.
    Deny,
}

/// Entry point of the binary: parses arguments, runs, prints errors, returns the exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // Output piped into `head` and the like: the reader has what it wanted.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", render_error(&e));
            ExitCode::FAILURE
        }
    }
}

/// Installs the stderr log subscriber: `ONECITY_LOG_LEVEL` (RUST_LOG syntax), else `default`.
pub fn init_tracing(default: &str) {
    init_tracing_as(crate::observe::LogFormat::Text, default);
}

/// [`init_tracing`] in `format`.
pub fn init_tracing_as(format: crate::observe::LogFormat, default: &str) {
    let (filter, bad) = log_filter(default);
    // Without an OTLP endpoint installing needs nothing that can fail.
    let _ = crate::observe::logs::install(format, filter, None);
    warn_bad_filter(bad, default);
}

type BadFilter = Option<(String, tracing_subscriber::filter::ParseError)>;

/// `ONECITY_LOG_LEVEL` (RUST_LOG syntax), else `default`, and the bad spec if any.
fn log_filter(default: &str) -> (EnvFilter, BadFilter) {
    match std::env::var(ENV_LOG_LEVEL) {
        Ok(spec) if !spec.trim().is_empty() => match EnvFilter::try_new(&spec) {
            Ok(f) => (f, None),
            Err(e) => (EnvFilter::new(default), Some((spec, e))),
        },
        _ => (EnvFilter::new(default), None),
    }
}

fn warn_bad_filter(bad: BadFilter, default: &str) {
    if let Some((spec, e)) = bad {
        tracing::warn!(spec = %spec, error = %e, "invalid {ENV_LOG_LEVEL}, using {default:?}");
    }
}

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            // The configuration first: it says how to log (a bad one is reported on
            // stderr by `main`).
            let config = args.load()?;
            let filter = log_filter("info");
            crate::observe::logs::install(
                config.log_format,
                filter.0,
                config.otlp_endpoint.as_deref(),
            )?;
            warn_bad_filter(filter.1, "info");
            let served = serve(config).await;
            crate::observe::logs::flush();
            served
        }
        Command::Config(args) => {
            init_tracing("warn");
            let config = args.load()?;
            let text = config.to_redacted_toml()?;
            emit(&format!(
                "# effective configuration of `onecity serve` (tokens redacted)\n{}",
                text.trim_end()
            ))
        }
        Command::Token { command } => keys::token(command),
        Command::Cert { command } => keys::cert(command),
        command => {
            init_tracing("warn");
            client_command(command).await
        }
    }
}

#[cfg(test)]
mod tests;
