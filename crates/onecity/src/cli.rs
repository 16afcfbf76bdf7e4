//! The `onecity` command line: `onecity serve` runs every service in one process; the other
//! commands are a gRPC client for people (street-office clerks, department staff, operators).
//!
//! Client commands read and print the proto3 JSON mapping of `onecity.v1` messages (see
//! [`crate::json`]). A failed call prints `error: <STATUS_CODE>: <message>` on stderr and exits
//! with status 1.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use onecity_eventlog_grpc::Bearer;
use onecity_proto::v1 as pb;
use onecity_proto::v1::eligibility_service_client::EligibilityServiceClient;
use onecity_proto::v1::event_log_service_client::EventLogServiceClient;
use onecity_proto::v1::handoff_service_client::HandoffServiceClient;
use onecity_proto::v1::intake_service_client::IntakeServiceClient;
use prost::Message as _;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tracing_subscriber::EnvFilter;

use crate::config::{self, Config, LogSpec, Overrides};
use crate::json::{self, ProtoName};

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
    },
    /// List the calling department unit's referrals.
    Referrals {
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
        /// Only referrals in this state.
        #[arg(long, value_enum)]
        state: Option<StateArg>,
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
    },
    /// Show the policy parameters in force on a date.
    Policy {
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
    /// Write the whole log to a file (stop the server first for a sled log: sled is
    /// opened by one process at a time). Prints the log's checksum.
    Export {
        /// Log backend to read: sled:PATH, remote:URL or jetstream:URLS.
        #[arg(long, value_parser = parse_log_spec)]
        log: LogSpec,
        /// Token for a remote log.
        #[arg(long, env = config::ENV_LOG_TOKEN)]
        log_token: Option<String>,
        /// Output file.
        file: PathBuf,
    },
    /// Append an export to an EMPTY log, preserving order, versions and positions, then
    /// verify the target's checksum against the file's.
    Import {
        /// Log backend to write: sled:PATH, remote:URL or jetstream:URLS.
        #[arg(long, value_parser = parse_log_spec)]
        log: LogSpec,
        /// Token for a remote log.
        #[arg(long, env = config::ENV_LOG_TOKEN)]
        log_token: Option<String>,
        /// Export file.
        file: PathBuf,
    },
    /// Print the checksum of a whole log (compare two logs after a migration).
    Checksum {
        /// Log backend: sled:PATH, remote:URL or jetstream:URLS.
        #[arg(long, value_parser = parse_log_spec)]
        log: LogSpec,
        /// Token for a remote log.
        #[arg(long, env = config::ENV_LOG_TOKEN)]
        log_token: Option<String>,
    },
}

/// Flags of `serve` and `config`.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Listen address [default: 127.0.0.1:50051].
    #[arg(long, env = config::ENV_ADDR)]
    pub addr: Option<SocketAddr>,
    /// Data directory [default: ./data].
    #[arg(long, env = config::ENV_DATA_DIR)]
    pub data_dir: Option<PathBuf>,
    /// Configuration file (TOML; see deploy/onecity.toml).
    #[arg(long, env = "ONECITY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Event log backend: sled:PATH or remote:http://HOST:PORT [default: sled:<data dir>].
    #[arg(long, env = config::ENV_LOG, value_parser = parse_log_spec)]
    pub log: Option<LogSpec>,
    /// Service role to run: intake, eligibility, handoff, log or all (repeatable,
    /// or comma-separated) [default: all].
    #[arg(long = "role", value_delimiter = ',', value_parser = parse_role)]
    pub roles: Vec<config::Role>,
    /// This instance's share of the cases for its workers, INDEX/COUNT [default: 0/1].
    #[arg(long, value_parser = parse_partition)]
    pub partition: Option<onecity_domain::Partition>,
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
        Config::load_with(
            self.config.as_deref(),
            &|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()),
            Overrides {
                addr: self.addr,
                data_dir: self.data_dir.clone(),
                log: self.log.clone(),
                roles: self.roles.clone(),
                partition: self.partition,
            },
        )
    }
}

/// Server address and token of the client commands.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Server URL.
    #[arg(long = "addr", value_name = "URL", env = "ONECITY_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// Bearer token [default: the demo terminal token demo-terminal-120103].
    #[arg(long, env = "ONECITY_TOKEN", hide_env_values = true, default_value = config::DEMO_TERMINAL_TOKEN, hide_default_value = true)]
    pub token: String,
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
    /// Cancelled by withdrawal.
    Cancelled,
}

impl StateArg {
    fn to_proto(self) -> pb::ReferralState {
        match self {
            StateArg::Issued => pb::ReferralState::Issued,
            StateArg::Acknowledged => pb::ReferralState::Acknowledged,
            StateArg::Approved => pb::ReferralState::Approved,
            StateArg::Denied => pb::ReferralState::Denied,
            StateArg::Cancelled => pb::ReferralState::Cancelled,
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

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `<STATUS_CODE>: <message>` for a gRPC status, the whole context chain otherwise.
pub fn render_error(e: &anyhow::Error) -> String {
    match e.downcast_ref::<Status>() {
        Some(status) => {
            let mut line = format!("{}: {}", code_name(status.code()), status.message());
            match status.code() {
                Code::Unauthenticated => line.push_str(" (pass --token or set ONECITY_TOKEN)"),
                Code::Unavailable => line.push_str(" (is `onecity serve` running? see --addr)"),
                _ => {}
            }
            line
        }
        None => format!("{e:#}"),
    }
}

/// The canonical name of a gRPC status code, e.g. `INVALID_ARGUMENT`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Installs the stderr log subscriber: `ONECITY_LOG_LEVEL` (RUST_LOG syntax), else `default`.
pub fn init_tracing(default: &str) {
    let (filter, bad) = match std::env::var(ENV_LOG_LEVEL) {
        Ok(spec) if !spec.trim().is_empty() => match EnvFilter::try_new(&spec) {
            Ok(f) => (f, None),
            Err(e) => (EnvFilter::new(default), Some((spec, e))),
        },
        _ => (EnvFilter::new(default), None),
    };
    // A second initialisation (tests) is harmless: keep the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
    if let Some((spec, e)) = bad {
        tracing::warn!(spec = %spec, error = %e, "invalid {ENV_LOG_LEVEL}, using {default:?}");
    }
}

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            init_tracing("info");
            serve(args).await
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
        command => {
            init_tracing("warn");
            client_command(command).await
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // The demo-token warning is the server's (`Config::uses_demo_tokens`), so that tests
    // starting the server without this CLI see it too.
    let config = args.load()?;
    if config.tokens.is_empty() {
        tracing::warn!(
            "no tokens configured: every call except health and reflection will be refused"
        );
    }
    // Signal handlers go in before anything else so that a SIGTERM during start-up already
    // means "shut down gracefully" rather than the default immediate exit.
    let shutdown = shutdown_signal()?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("listen on {}", config.addr))?;
    let local = listener.local_addr().context("local address")?;
    tracing::info!(
        addr = %local,
        log = %config.log_spec(),
        policy_file = ?config.policy_file,
        catalogue_file = ?config.catalogue_file,
        tokens = config.tokens.len(),
        "configuration loaded"
    );
    crate::server::run(listener, config, shutdown).await
}

/// Resolves on the first Ctrl-C (SIGINT) or SIGTERM. A second signal exits at once, for when
/// a graceful shutdown hangs.
pub fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
        let mut terminate = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
        Ok(async move {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            };
            tracing::info!(
                signal = name,
                "shutting down gracefully; send the signal again to exit at once"
            );
            tokio::spawn(async move {
                tokio::select! {
                    _ = interrupt.recv() => {},
                    _ = terminate.recv() => {},
                }
                tracing::warn!("second signal: exiting without a graceful shutdown");
                std::process::exit(130);
            });
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!(signal = "ctrl-c", "shutting down gracefully");
            } else {
                std::future::pending::<()>().await;
            }
        })
    }
}

/// A connected client: one HTTP/2 channel and the caller's bearer token.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    bearer: Bearer,
}

impl Client {
    /// Connects to `args.server` (eagerly, so a wrong address fails before any work).
    pub async fn connect(args: &ClientArgs) -> anyhow::Result<Self> {
        let bearer = Bearer::new(&args.token).map_err(|_| {
            anyhow::anyhow!("the token contains characters not allowed in a header")
        })?;
        let channel = Endpoint::from_shared(args.server.clone())
            .with_context(|| format!("bad server address {:?}", args.server))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| {
                anyhow::Error::new(e).context(format!(
                    "cannot connect to {} (is `onecity serve` running?)",
                    args.server
                ))
            })?;
        Ok(Client { channel, bearer })
    }

    /// `msg` with the `authorization` metadata.
    pub fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        self.bearer.apply(&mut req);
        req
    }

    /// Intake service client.
    pub fn intake(&self) -> IntakeServiceClient<Channel> {
        IntakeServiceClient::new(self.channel.clone())
    }

    /// Eligibility service client.
    pub fn eligibility(&self) -> EligibilityServiceClient<Channel> {
        EligibilityServiceClient::new(self.channel.clone())
    }

    /// Handoff service client.
    pub fn handoff(&self) -> HandoffServiceClient<Channel> {
        HandoffServiceClient::new(self.channel.clone())
    }

    /// Event log service client (large pages: a ReadAll page may hold 1,000 events).
    pub fn event_log(&self) -> EventLogServiceClient<Channel> {
        EventLogServiceClient::new(self.channel.clone()).max_decoding_message_size(64 * 1024 * 1024)
    }
}

/// Reads an application file (proto3 JSON of `onecity.v1.Application`).
pub fn read_application(path: &Path) -> anyhow::Result<pb::Application> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    json::from_json(&text).with_context(|| format!("{}", path.display()))
}

/// The default request id of `submit`: a name-based UUID of the application's protobuf
/// encoding, so the same application (however its JSON is formatted) is one request.
pub fn default_request_id(app: &pb::Application) -> String {
    // Fixed namespace for onecity CLI request ids (a v4 UUID chosen once).
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6f6e_6563_6974_4a79_a5d1_3c2b_8e4f_0a17);
    format!(
        "cli-{}",
        uuid::Uuid::new_v5(&NAMESPACE, &app.encode_to_vec())
    )
}

/// Writes one line (or block) to stdout; unlike `println!` a closed pipe is an error, not a
/// panic.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .context("write to stdout")
}

fn print<T: ProtoName>(msg: &T) -> anyhow::Result<()> {
    emit(&json::to_json(msg)?)
}

async fn client_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(_) | Command::Config(_) => unreachable!("handled by run"),
        Command::Submit {
            client,
            file,
            request_id,
            quiet,
        } => {
            let application = read_application(&file)?;
            let request_id = request_id.unwrap_or_else(|| default_request_id(&application));
            let c = Client::connect(&client).await?;
            let resp = c
                .intake()
                .submit_application(c.request(pb::SubmitApplicationRequest {
                    request_id,
                    application: Some(application),
                }))
                .await?;
            if quiet {
                return emit(&resp.get_ref().case_id);
            }
            print(resp.get_ref())
        }
        Command::Screen { client, file, full } => {
            let application = read_application(&file)?;
            let c = Client::connect(&client).await?;
            let view = if full {
                pb::ScreenView::Full
            } else {
                pb::ScreenView::Basic
            };
            let resp = c
                .eligibility()
                .screen(c.request(pb::ScreenRequest {
                    application: Some(application),
                    view: view as i32,
                }))
                .await?;
            print(resp.get_ref())
        }
        Command::Case {
            client,
            case_id,
            watch,
        } => {
            let c = Client::connect(&client).await?;
            if !watch {
                let resp = c
                    .intake()
                    .get_case(c.request(pb::GetCaseRequest { case_id }))
                    .await?;
                return print(resp.get_ref());
            }
            let mut stream = c
                .intake()
                .watch_case(c.request(pb::WatchCaseRequest { case_id }))
                .await?
                .into_inner();
            while let Some(msg) = stream.message().await? {
                print(&msg)?;
                let done = matches!(
                    pb::CaseStatus::try_from(msg.status),
                    Ok(pb::CaseStatus::Closed | pb::CaseStatus::Withdrawn)
                );
                if done {
                    break;
                }
            }
            Ok(())
        }
        Command::Withdraw {
            client,
            case_id,
            reason,
        } => {
            let c = Client::connect(&client).await?;
            let resp = c
                .intake()
                .withdraw_application(c.request(pb::WithdrawApplicationRequest { case_id, reason }))
                .await?;
            print(resp.get_ref())
        }
        Command::Referrals {
            client,
            state,
            follow,
            after,
            quiet,
        } => {
            let c = Client::connect(&client).await?;
            let state = state.map(StateArg::to_proto);
            if follow {
                follow_referrals(&c, state, after.unwrap_or_default(), quiet).await
            } else {
                list_referrals(&c, state, quiet).await
            }
        }
        Command::Ack {
            client,
            referral_id,
        } => {
            let c = Client::connect(&client).await?;
            let resp = c
                .handoff()
                .acknowledge_referral(c.request(pb::AcknowledgeReferralRequest { referral_id }))
                .await?;
            print(resp.get_ref())
        }
        Command::Decide {
            client,
            referral_id,
            decision,
            amount_fen,
            note,
        } => {
            let decision = match decision {
                DecisionArg::Approve => pb::Decision::Approved,
                DecisionArg::Deny => pb::Decision::Denied,
            };
            let c = Client::connect(&client).await?;
            let resp = c
                .handoff()
                .record_decision(c.request(pb::RecordDecisionRequest {
                    referral_id,
                    decision: decision as i32,
                    amount_fen,
                    note,
                }))
                .await?;
            print(resp.get_ref())
        }
        Command::Policy { client, as_of } => {
            let c = Client::connect(&client).await?;
            let resp = c
                .eligibility()
                .get_policy(c.request(pb::GetPolicyRequest {
                    as_of: as_of.unwrap_or_default(),
                }))
                .await?;
            print(resp.get_ref())
        }
        Command::Log {
            command:
                LogCommand::Tail {
                    client,
                    from,
                    lines,
                    follow,
                },
        } => {
            let c = Client::connect(&client).await?;
            log_tail(&c, from, lines, follow).await
        }
        Command::Log {
            command:
                LogCommand::Export {
                    log,
                    log_token,
                    file,
                },
        } => {
            let (log, _) = crate::server::open_log_spec(&log, log_token.as_deref()).await?;
            let sum = crate::migrate::export(log.as_ref(), &file).await?;
            emit(&format!(
                "exported {} events to {}\nchecksum {}",
                sum.events,
                file.display(),
                sum.hex()
            ))
        }
        Command::Log {
            command:
                LogCommand::Import {
                    log,
                    log_token,
                    file,
                },
        } => {
            let (log, _) = crate::server::open_log_spec(&log, log_token.as_deref()).await?;
            let sum = crate::migrate::import(log.as_ref(), &file).await?;
            emit(&format!(
                "imported {} events from {}\nchecksum {} (verified)",
                sum.events,
                file.display(),
                sum.hex()
            ))
        }
        Command::Log {
            command: LogCommand::Checksum { log, log_token },
        } => {
            let (log, _) = crate::server::open_log_spec(&log, log_token.as_deref()).await?;
            let sum = crate::migrate::checksum(log.as_ref()).await?;
            emit(&format!("{} events\nchecksum {}", sum.events, sum.hex()))
        }
    }
}

/// Every page of ListReferrals, printed as one `ListReferralsResponse`.
async fn list_referrals(
    c: &Client,
    state: Option<pb::ReferralState>,
    quiet: bool,
) -> anyhow::Result<()> {
    let mut all = pb::ListReferralsResponse::default();
    let mut page_token = String::new();
    loop {
        let page = c
            .handoff()
            .list_referrals(c.request(pb::ListReferralsRequest {
                state: state.map_or(0, |s| s as i32),
                page_size: 500,
                page_token: page_token.clone(),
            }))
            .await?
            .into_inner();
        all.referrals.extend(page.referrals);
        // A server handing back the token it was given would loop forever; stop instead.
        if page.next_page_token.is_empty() || page.next_page_token == page_token {
            break;
        }
        page_token = page.next_page_token;
    }
    if quiet {
        for r in &all.referrals {
            emit(&r.referral_id)?;
        }
        return Ok(());
    }
    print(&all)
}

/// StreamReferrals until the server ends the stream; `state` filters on this side because the
/// stream carries every change.
async fn follow_referrals(
    c: &Client,
    state: Option<pb::ReferralState>,
    after_cursor: String,
    quiet: bool,
) -> anyhow::Result<()> {
    let mut stream = c
        .handoff()
        .stream_referrals(c.request(pb::StreamReferralsRequest { after_cursor }))
        .await?
        .into_inner();
    while let Some(msg) = stream.message().await? {
        let wanted = match (state, &msg.referral) {
            (None, _) => true,
            (Some(s), Some(r)) => r.state == s as i32,
            (Some(_), None) => false,
        };
        match (&msg.referral, wanted, quiet) {
            (_, false, _) => {}
            (Some(r), true, true) => emit(&r.referral_id)?,
            (_, true, _) => print(&msg)?,
        }
    }
    Ok(())
}

/// ReadAll from a position up to the head at the start (or Subscribe with `follow`).
async fn log_tail(c: &Client, from: Option<u64>, lines: u64, follow: bool) -> anyhow::Result<()> {
    let mut log = c.event_log();
    let head = log
        .get_head(c.request(pb::GetHeadRequest {}))
        .await?
        .into_inner()
        .position;
    let from = from.unwrap_or_else(|| head.saturating_sub(lines.saturating_sub(1)).max(1));
    let show = |event: &pb::RecordedEvent| -> anyhow::Result<()> {
        emit(&json::pretty(&json::recorded_event_to_value(event)?))
    };
    if follow {
        let mut stream = log
            .subscribe(c.request(pb::SubscribeRequest {
                from_position: from,
                event_type_prefixes: Vec::new(),
            }))
            .await?
            .into_inner();
        while let Some(msg) = stream.message().await? {
            if let Some(event) = &msg.event {
                show(event)?;
            }
        }
        return Ok(());
    }
    let mut next = from;
    while next <= head {
        let events = log
            .read_all(c.request(pb::ReadAllRequest {
                from_position: next,
                limit: 0,
            }))
            .await?
            .into_inner()
            .events;
        let Some(last) = events.last().map(|e| e.position) else {
            break;
        };
        for event in events.iter().filter(|e| e.position <= head) {
            show(event)?;
        }
        next = last + 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("onecity").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn parses_the_walkthrough_commands() {
        match parse(&["serve", "--addr", "127.0.0.1:6000", "--log", "sled:/tmp/l"]).command {
            Command::Serve(a) => {
                assert_eq!(a.addr, Some("127.0.0.1:6000".parse().unwrap()));
                assert_eq!(a.log, Some(LogSpec::Sled("/tmp/l".into())));
            }
            other => panic!("{other:?}"),
        }
        match parse(&[
            "decide",
            "r-1",
            "approve",
            "--amount-fen",
            "111000",
            "--token",
            "t",
        ])
        .command
        {
            Command::Decide {
                decision,
                amount_fen,
                client,
                ..
            } => {
                assert_eq!(decision, DecisionArg::Approve);
                assert_eq!(amount_fen, 111_000);
                assert_eq!(client.token, "t");
            }
            other => panic!("{other:?}"),
        }
        match parse(&["referrals", "--state", "issued"]).command {
            Command::Referrals { state, follow, .. } => {
                assert_eq!(state, Some(StateArg::Issued));
                assert!(!follow);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["log", "tail", "--from", "3", "--follow"]).command {
            Command::Log {
                command: LogCommand::Tail { from, follow, .. },
            } => {
                assert_eq!(from, Some(3));
                assert!(follow);
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["onecity", "serve", "--log", "nats:x"]).is_err());
        assert!(Cli::try_parse_from(["onecity", "decide", "r-1", "maybe"]).is_err());
    }

    #[test]
    fn status_errors_render_with_the_canonical_code() {
        let e = anyhow::Error::new(Status::invalid_argument(
            "invalid application.members[2].id_number: bad check character",
        ));
        assert_eq!(
            render_error(&e),
            "INVALID_ARGUMENT: invalid application.members[2].id_number: bad check character"
        );
        let e = anyhow::Error::new(Status::not_found("no case 0190"));
        assert_eq!(render_error(&e), "NOT_FOUND: no case 0190");
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(render_error(&e), "outer: inner");
    }

    #[test]
    fn default_request_id_depends_on_content_only() {
        let a = pb::Application {
            district_code: "120103".into(),
            ..Default::default()
        };
        let mut b = a.clone();
        assert_eq!(default_request_id(&a), default_request_id(&b));
        b.contact_phone = "1".into();
        assert_ne!(default_request_id(&a), default_request_id(&b));
        assert!(default_request_id(&a).len() <= 128);
    }
}
