//! The client commands for people: one connection with the caller's token, and one call
//! (or stream) per command.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use onecity_eventlog_grpc::Bearer;
use onecity_proto::v1 as pb;
use onecity_proto::v1::admin_service_client::AdminServiceClient;
use onecity_proto::v1::eligibility_service_client::EligibilityServiceClient;
use onecity_proto::v1::event_log_service_client::EventLogServiceClient;
use onecity_proto::v1::handoff_service_client::HandoffServiceClient;
use onecity_proto::v1::intake_service_client::IntakeServiceClient;
use onecity_proto::v1::monitoring_service_client::MonitoringServiceClient;
use prost::Message as _;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::Request;

use super::output::{emit, print};
use super::{AdminCommand, ClientArgs, Command, DecisionArg, PolicyCommand, StateArg};
use crate::json;

/// A connected client: one HTTP/2 channel and the caller's bearer token.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    bearer: Bearer,
    purpose: Option<MetadataValue<Ascii>>,
}

impl Client {
    /// Connects to `args.server` (eagerly, so a wrong address fails before any work), over
    /// TLS for `https://`.
    pub async fn connect(args: &ClientArgs) -> anyhow::Result<Self> {
        let bearer = Bearer::new(&args.token()?).map_err(|_| {
            anyhow::anyhow!("the token contains characters not allowed in a header")
        })?;
        let mut endpoint = Endpoint::from_shared(args.server.clone())
            .with_context(|| format!("bad server address {:?}", args.server))?
            .connect_timeout(Duration::from_secs(5));
        if let Some(tls) = args.tls.files().for_url(&args.server)? {
            endpoint = endpoint.tls_config(tls)?;
        }
        let channel = endpoint.connect().await.map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "cannot connect to {} (is `onecity serve` running?)",
                args.server
            ))
        })?;
        let purpose = args
            .purpose
            .as_deref()
            .map(|p| {
                p.parse().map_err(|_| {
                    anyhow::anyhow!("--purpose must be printable ASCII (it travels in a header)")
                })
            })
            .transpose()?;
        Ok(Client {
            channel,
            bearer,
            purpose,
        })
    }

    /// `msg` with the `authorization` metadata.
    pub fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        self.bearer.apply(&mut req);
        if let Some(purpose) = &self.purpose {
            req.metadata_mut()
                .insert(onecity_eventlog_grpc::PURPOSE_HEADER, purpose.clone());
        }
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

    /// Monitoring service client.
    pub fn monitoring(&self) -> MonitoringServiceClient<Channel> {
        MonitoringServiceClient::new(self.channel.clone())
    }

    /// Health client (no token needed).
    pub fn health(&self) -> tonic_health::pb::health_client::HealthClient<Channel> {
        tonic_health::pb::health_client::HealthClient::new(self.channel.clone())
    }

    /// Admin service client.
    pub fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel.clone())
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
    format!(
        "cli-{}",
        onecity_domain::ids::cli_request_id(&app.encode_to_vec())
    )
}

/// The default request id of `amend`: a name-based UUID of the case id, the application's
/// protobuf encoding and the reason, so the same amendment of the same case is one request.
pub fn default_amend_request_id(case_id: &str, app: &pb::Application, reason: &str) -> String {
    let key = [
        case_id.as_bytes(),
        &[0],
        &app.encode_to_vec(),
        &[0],
        reason.as_bytes(),
    ]
    .concat();
    format!("cli-{}", onecity_domain::ids::cli_request_id(&key))
}

/// Runs one client command (`serve` and `config` are [`super::run`]'s).
pub(super) async fn client_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(_) | Command::Config(_) | Command::Token { .. } | Command::Cert { .. } => {
            unreachable!("handled by run")
        }
        Command::Submit {
            client,
            file,
            request_id,
            quiet,
            duplicate_override_reason,
        } => {
            let application = read_application(&file)?;
            let request_id = request_id.unwrap_or_else(|| default_request_id(&application));
            let c = Client::connect(&client).await?;
            let resp = c
                .intake()
                .submit_application(c.request(pb::SubmitApplicationRequest {
                    request_id,
                    application: Some(application),
                    duplicate_override_reason,
                }))
                .await?;
            if quiet {
                return emit(&resp.get_ref().case_id);
            }
            print(resp.get_ref())
        }
        Command::FindCases { client, id_number } => {
            let c = Client::connect(&client).await?;
            let resp = c
                .intake()
                .find_cases(c.request(pb::FindCasesRequest { id_number }))
                .await?;
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
        Command::Amend {
            client,
            case_id,
            file,
            reason,
            request_id,
        } => {
            let application = read_application(&file)?;
            let request_id = request_id
                .unwrap_or_else(|| default_amend_request_id(&case_id, &application, &reason));
            let c = Client::connect(&client).await?;
            let resp = c
                .intake()
                .amend_application(c.request(pb::AmendApplicationRequest {
                    case_id,
                    request_id,
                    application: Some(application),
                    reason,
                }))
                .await?;
            print(resp.get_ref())
        }
        Command::Withdraw {
            client,
            case_id,
            reason,
            request_id,
        } => {
            let c = Client::connect(&client).await?;
            let resp = c
                .intake()
                .withdraw_application(c.request(pb::WithdrawApplicationRequest {
                    case_id,
                    reason,
                    request_id,
                }))
                .await?;
            print(resp.get_ref())
        }
        Command::Referrals {
            client,
            state,
            programme,
            overdue,
            due_before,
            follow,
            after,
            quiet,
        } => {
            let programme = programme_arg(programme.as_deref())?;
            let c = Client::connect(&client).await?;
            let state = state.map(StateArg::to_proto);
            if follow {
                follow_referrals(&c, state, after.unwrap_or_default(), quiet).await
            } else {
                let filters = pb::ListReferralsRequest {
                    state: state.map_or(0, |s| s as i32),
                    programme,
                    overdue_only: overdue,
                    due_before: due_before.unwrap_or_default(),
                    ..Default::default()
                };
                list_referrals(&c, filters, quiet).await
            }
        }
        Command::Ack {
            client,
            referral_id,
            request_id,
        } => {
            let c = Client::connect(&client).await?;
            let resp = c
                .handoff()
                .acknowledge_referral(c.request(pb::AcknowledgeReferralRequest {
                    referral_id,
                    request_id,
                }))
                .await?;
            print(resp.get_ref())
        }
        Command::Signal {
            client,
            kind,
            source,
            source_id,
            id_number,
            occurred_on,
            amount_fen,
            district,
        } => {
            let kind = enum_arg::<pb::SignalKind>("SIGNAL_KIND_", &kind, pb::SignalKind::from_str_name)
                .context("kind: one of medical-expense, unemployment, disability-recognised, death, disaster, income-drop")?;
            let c = Client::connect(&client).await?;
            let resp = c
                .monitoring()
                .report_signal(c.request(pb::ReportSignalRequest {
                    source,
                    source_id,
                    id_number,
                    kind: kind as i32,
                    occurred_on,
                    amount_fen,
                    district_code: district,
                }))
                .await?;
            print(resp.get_ref())
        }
        Command::Warnings {
            client,
            open,
            overdue,
            district,
        } => {
            let c = Client::connect(&client).await?;
            let resp = c
                .monitoring()
                .list_warnings(c.request(pb::ListWarningsRequest {
                    open_only: open,
                    overdue_only: overdue,
                    district_code: district,
                }))
                .await?;
            print(resp.get_ref())
        }
        Command::Stats {
            client,
            district,
            programme,
            from,
            to,
        } => {
            let programme = programme_arg(programme.as_deref())?;
            let c = Client::connect(&client).await?;
            let resp = c
                .monitoring()
                .get_statistics(c.request(pb::GetStatisticsRequest {
                    district_code: district,
                    programme,
                    from,
                    to,
                }))
                .await?;
            print(resp.get_ref())
        }
        Command::ResolveWarning {
            client,
            warning_id,
            outcome,
            case_id,
            note,
            request_id,
        } => {
            let outcome = enum_arg::<pb::WarningOutcome>(
                "WARNING_OUTCOME_",
                &outcome,
                pb::WarningOutcome::from_str_name,
            )
            .context("outcome: one of visited-no-need, case-opened, referred-to-charity")?;
            let c = Client::connect(&client).await?;
            let resp = c
                .monitoring()
                .resolve_warning(c.request(pb::ResolveWarningRequest {
                    warning_id,
                    request_id,
                    outcome: outcome as i32,
                    case_id,
                    note,
                }))
                .await?;
            print(resp.get_ref())
        }
        Command::Decide {
            client,
            referral_id,
            decision,
            amount_fen,
            note,
            request_id,
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
                    request_id,
                }))
                .await?;
            print(resp.get_ref())
        }
        Command::Transfer {
            client,
            referral_id,
            to,
            reason,
            request_id,
        } => {
            let c = Client::connect(&client).await?;
            let resp = c
                .handoff()
                .transfer_referral(c.request(pb::TransferReferralRequest {
                    referral_id,
                    request_id,
                    to_unit: to,
                    reason,
                }))
                .await?;
            print(resp.get_ref())
        }
        Command::Ask {
            client,
            referral_id,
            what,
            request_id,
        } => {
            let c = Client::connect(&client).await?;
            let resp = c
                .handoff()
                .request_information(c.request(pb::RequestInformationRequest {
                    referral_id,
                    request_id,
                    what,
                }))
                .await?;
            print(resp.get_ref())
        }
        Command::Provide {
            client,
            case_id,
            referral_id,
            note,
            request_id,
        } => {
            let c = Client::connect(&client).await?;
            let resp = c
                .intake()
                .provide_information(c.request(pb::ProvideInformationRequest {
                    case_id,
                    referral_id,
                    request_id,
                    note,
                }))
                .await?;
            print(resp.get_ref())
        }
        Command::Policy {
            command: Some(PolicyCommand::Impact { client, version }),
            ..
        } => {
            let c = Client::connect(&client).await?;
            let mut stream = c
                .admin()
                .get_policy_impact(c.request(pb::GetPolicyImpactRequest {
                    version_id: version,
                }))
                .await?
                .into_inner();
            // Progress to stderr, the report alone to stdout.
            while let Some(msg) = stream.message().await? {
                if msg.done {
                    return print(&msg);
                }
                eprintln!(
                    "read {} of {} active cases",
                    msg.cases_read, msg.cases_to_read
                );
            }
            anyhow::bail!("the impact report ended without its result")
        }
        Command::Policy {
            command: None,
            client,
            as_of,
        } => {
            let c = Client::connect(&client).await?;
            let resp = c
                .eligibility()
                .get_policy(c.request(pb::GetPolicyRequest {
                    as_of: as_of.unwrap_or_default(),
                }))
                .await?;
            print(resp.get_ref())
        }
        Command::Log { command } => super::log::run(command).await,
        Command::Health { client, service } => {
            use tonic_health::pb::health_check_response::ServingStatus;
            let c = Client::connect(&client).await?;
            let status = c
                .health()
                .check(tonic_health::pb::HealthCheckRequest { service })
                .await?
                .into_inner()
                .status;
            let status = ServingStatus::try_from(status).unwrap_or(ServingStatus::Unknown);
            emit(status.as_str_name())?;
            if status != ServingStatus::Serving {
                anyhow::bail!("not serving");
            }
            Ok(())
        }
        Command::Admin { command } => admin(command).await,
    }
}

/// Runs one `onecity admin` command.
async fn admin(command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::Quarantined { client } => {
            let c = Client::connect(&client).await?;
            let resp = c
                .admin()
                .list_quarantined(c.request(pb::ListQuarantinedRequest {}))
                .await?;
            print(resp.get_ref())
        }
        AdminCommand::Lag { client } => {
            let c = Client::connect(&client).await?;
            let resp = c
                .admin()
                .get_routing_lag(c.request(pb::GetRoutingLagRequest {}))
                .await?;
            print(resp.get_ref())
        }
        AdminCommand::Retry {
            client,
            position,
            consumer,
        } => {
            let c = Client::connect(&client).await?;
            let resp = c
                .admin()
                .retry_quarantined(c.request(pb::RetryQuarantinedRequest {
                    position,
                    consumer: consumer.unwrap_or_default(),
                }))
                .await?;
            print(resp.get_ref())
        }
        AdminCommand::Access {
            client,
            case_id,
            principal,
            since,
            until,
            limit,
        } => {
            use pb::list_access_request::Subject;
            let subject = match (case_id, principal) {
                (Some(case_id), _) => Subject::CaseId(case_id),
                (None, Some(p)) => Subject::Principal(p),
                (None, None) => anyhow::bail!("name --case or --principal"),
            };
            let c = Client::connect(&client).await?;
            let resp = c
                .admin()
                .list_access(c.request(pb::ListAccessRequest {
                    subject: Some(subject),
                    since: since.unwrap_or_default(),
                    until: until.unwrap_or_default(),
                    limit,
                }))
                .await?;
            print(resp.get_ref())
        }
    }
}

/// Every page of ListReferrals, printed as one `ListReferralsResponse`.
/// A proto enum from its CLI spelling: `death` for `SIGNAL_KIND_DEATH` (`prefix`); the
/// unspecified value is no answer.
fn enum_arg<E>(prefix: &str, arg: &str, from: fn(&str) -> Option<E>) -> anyhow::Result<E> {
    let name = format!("{prefix}{}", arg.to_uppercase().replace('-', "_"));
    match from(&name) {
        Some(e) if !name.ends_with("_UNSPECIFIED") => Ok(e),
        _ => anyhow::bail!("unknown value {arg:?}"),
    }
}

async fn list_referrals(
    c: &Client,
    filters: pb::ListReferralsRequest,
    quiet: bool,
) -> anyhow::Result<()> {
    let mut all = pb::ListReferralsResponse::default();
    let mut page_token = String::new();
    loop {
        let page = c
            .handoff()
            .list_referrals(c.request(pb::ListReferralsRequest {
                page_size: 500,
                page_token: page_token.clone(),
                ..filters.clone()
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

/// `--programme SLUG` as its wire value; 0 (every programme) without one.
fn programme_arg(slug: Option<&str>) -> anyhow::Result<i32> {
    slug.map_or(Ok(0), |slug| {
        slug.parse::<onecity_domain::Programme>()
            .map(|p| p.to_proto())
            .map_err(|e| anyhow::anyhow!("--programme: {e}"))
    })
}
