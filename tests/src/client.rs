//! Authenticated gRPC clients over a channel, and what the tests do with them more than
//! once: wait until a case is handed off, read the whole log.

use std::time::Duration;

use futures::StreamExt;
use onecity_proto::v1 as pb;
use pb::admin_service_client::AdminServiceClient;
use pb::eligibility_service_client::EligibilityServiceClient;
use pb::event_log_service_client::EventLogServiceClient;
use pb::handoff_service_client::HandoffServiceClient;
use pb::intake_service_client::IntakeServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub use onecity_eventlog_grpc::Bearer;

/// The interceptor for `token` (every test token is visible ASCII).
pub fn bearer(token: &str) -> Bearer {
    Bearer::new(token).expect("ascii token")
}

/// A channel that sends a token with every call.
pub type Authed = InterceptedService<Channel, Bearer>;
/// Intake client with a token.
pub type IntakeClient = IntakeServiceClient<Authed>;
/// Eligibility client with a token.
pub type EligibilityClient = EligibilityServiceClient<Authed>;
/// Handoff client with a token.
pub type HandoffClient = HandoffServiceClient<Authed>;
/// Event log client with a token.
pub type LogClient = EventLogServiceClient<Authed>;
/// Admin client with a token.
pub type AdminClient = AdminServiceClient<Authed>;

/// Intake client over `channel`, authenticated with `token`.
pub fn intake(channel: Channel, token: &str) -> IntakeClient {
    IntakeServiceClient::with_interceptor(channel, bearer(token))
}

/// Eligibility client over `channel`, authenticated with `token`.
pub fn eligibility(channel: Channel, token: &str) -> EligibilityClient {
    EligibilityServiceClient::with_interceptor(channel, bearer(token))
}

/// Handoff client over `channel`, authenticated with `token`.
pub fn handoff(channel: Channel, token: &str) -> HandoffClient {
    HandoffServiceClient::with_interceptor(channel, bearer(token))
}

/// Event log client over `channel`, authenticated with `token`.
pub fn log(channel: Channel, token: &str) -> LogClient {
    EventLogServiceClient::with_interceptor(channel, bearer(token))
}

/// Admin client over `channel`, authenticated with `token`.
pub fn admin(channel: Channel, token: &str) -> AdminClient {
    AdminServiceClient::with_interceptor(channel, bearer(token))
}

/// Waits (by watching the case, not by sleeping) until the handoff step has run for the
/// case: a referral issued, or the case closed or withdrawn. Panics when the case shows
/// no progress for `idle` (the workers may be restarting, so this is not a deadline for
/// the whole handoff).
pub async fn wait_handed_off(intake: &mut IntakeClient, case_id: &str, idle: Duration) {
    let mut watch = intake
        .watch_case(pb::WatchCaseRequest {
            case_id: case_id.into(),
        })
        .await
        .expect("watch")
        .into_inner();
    loop {
        let next = tokio::time::timeout(idle, watch.next())
            .await
            .unwrap_or_else(|_| panic!("case {case_id} was not handed off in time"))
            .unwrap_or_else(|| panic!("watch ended before case {case_id} was handed off"))
            .expect("watch failed");
        let ty = next.event.map(|e| e.event_type).unwrap_or_default();
        if ty == "onecity.v1.ReferralIssued"
            || ty == "onecity.v1.CaseClosed"
            || ty == "onecity.v1.ApplicationWithdrawn"
        {
            return;
        }
    }
}

/// What `WatchCase` streams of the case until it ends or stays silent for `idle`.
pub async fn watched(
    intake: &mut IntakeClient,
    case_id: &str,
    idle: Duration,
) -> Vec<pb::WatchCaseResponse> {
    let mut watch = intake
        .watch_case(pb::WatchCaseRequest {
            case_id: case_id.into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let mut out = Vec::new();
    while let Ok(Some(next)) = tokio::time::timeout(idle, watch.next()).await {
        out.push(next.expect("watch failed"));
    }
    out
}

/// Panics if `text` (a whole response, printed) holds anything that could give back an
/// identity number or birth date of `application`'s members: an 18-character identity
/// number, or a birth date in either of its spellings.
pub fn assert_nothing_identifying(text: &str, application: &pb::Application) {
    let id = regex::Regex::new(r"\d{17}[\dXx]").expect("regex");
    assert!(
        !id.is_match(text),
        "an 18-character identity number in {text}"
    );
    for m in &application.members {
        let compact = m.birth_date.replace('-', "");
        for birth in [&m.birth_date, &compact] {
            assert!(
                !text.contains(birth.as_str()),
                "birth date {birth} in {text}"
            );
        }
    }
}

/// Every event of the log, in order, as `ReadAll` pages it.
pub async fn whole_log(log: &mut LogClient) -> Vec<pb::RecordedEvent> {
    read_whole(|from| {
        let mut log = log.clone();
        async move {
            log.read_all(pb::ReadAllRequest {
                from_position: from,
                limit: 1000,
            })
            .await
            .expect("read_all")
            .into_inner()
            .events
        }
    })
    .await
}

/// Reads a log from position 1 by pages (`page(from)` returns the events from `from` on,
/// empty at the end) until an empty page: the one paging loop, for the gRPC face and for a
/// backend read directly.
pub async fn read_whole<E, F, Fut>(mut page: F) -> Vec<E>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Vec<E>>,
{
    let mut out = Vec::new();
    loop {
        let next = page(out.len() as u64 + 1).await;
        if next.is_empty() {
            return out;
        }
        out.extend(next);
    }
}

/// The referral of `programme` in `case`; panics if there is none.
pub fn referral(case: &pb::Case, programme: pb::Programme) -> &pb::Referral {
    case.referrals
        .iter()
        .find(|r| r.programme == programme as i32)
        .unwrap_or_else(|| panic!("case {} has no {programme:?} referral", case.case_id))
}
