//! The browser console: server-rendered pages for clerks, departments and supervisors.
//!
//! The console is a gRPC client of this very server (over loopback, or over in-process pipes
//! when the gRPC listener has TLS and the console speaks HTTPS): every page calls the
//! API with the signed-in principal's own token and `onecity-purpose: console`, so who sees
//! what, and the access records of every read, are exactly those of the API; the console
//! holds no privilege of its own. The token is kept server-side in a session; the browser
//! only holds the session id in an HttpOnly, SameSite=Strict cookie, and every form carries
//! the session's CSRF token, checked before any write.

mod apply;
mod clerk;
mod labels;
mod page;
mod referral;
mod supervise;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::StreamExt as _;
use onecity_proto::v1 as pb;
use pb::admin_service_client::AdminServiceClient;
use pb::eligibility_service_client::EligibilityServiceClient;
use pb::handoff_service_client::HandoffServiceClient;
use pb::intake_service_client::IntakeServiceClient;
use subtle::ConstantTimeEq as _;
use tokio::io::DuplexStream;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

pub use page::Lang;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "onecity_session";
/// The purpose every console call declares (recorded with each read).
pub const PURPOSE: &str = "console";
/// Most referrals one inbox page asks for in one call (the API's page limit); the page
/// links the next.
const INBOX_PAGE: u32 = 500;

/// One signed-in browser.
#[derive(Clone)]
struct Session {
    token: String,
    csrf: String,
    lang: Lang,
}

/// Shared state of the console's handlers.
#[derive(Clone)]
pub struct Console {
    channel: Channel,
    /// Whether the console is served over HTTPS: its cookie is then `Secure`.
    secure: bool,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
    /// Ends the live event streams, which would otherwise hold a graceful shutdown open.
    stop: CancellationToken,
}

// Hand-written: the sessions hold tokens, which no log line may show.
impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sessions = self.sessions.lock().map(|s| s.len()).unwrap_or_default();
        f.debug_struct("Console")
            .field("sessions", &sessions)
            .finish()
    }
}

impl Console {
    /// A console calling the plaintext gRPC listener at `grpc` (loopback).
    pub fn new(grpc: SocketAddr) -> anyhow::Result<Console> {
        let channel = Endpoint::from_shared(format!("http://{grpc}"))?.connect_lazy();
        Ok(Console {
            channel,
            secure: false,
            sessions: Arc::default(),
            stop: CancellationToken::new(),
        })
    }

    /// A console calling this process's gRPC services over in-process pipes (no socket,
    /// no TLS to trust or present), for a server whose gRPC listener speaks TLS: the
    /// connections arrive on the returned stream, which the server serves as it serves
    /// its listener (the same services, interceptors and layers). Its cookie is `Secure`.
    pub fn in_process() -> anyhow::Result<(Console, InProcessIncoming)> {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        // The address is never dialled: the connector hands over one end of a pipe.
        let channel = Endpoint::from_static("http://in-process.console")
            .connect_with_connector_lazy(InProcess(tx));
        let console = Console {
            channel,
            secure: true,
            sessions: Arc::default(),
            stop: CancellationToken::new(),
        };
        Ok((console, tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    /// The console's routes.
    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(home))
            .route("/signin", post(sign_in))
            .route("/signout", post(sign_out))
            .route("/lang", post(switch_lang))
            .route("/inbox", get(inbox))
            .route("/case", get(find_case))
            .route("/cases/{id}", get(case))
            .route("/cases/{id}/events", get(case_events))
            .route("/cases/{id}/provide-information", post(provide_information))
            .route("/find", get(find_form).post(find_cases))
            .route("/console.js", get(script))
            .route("/apply", get(apply_form).post(apply))
            .route("/referrals/{id}", get(referral_page))
            .route("/referrals/{id}/acknowledge", post(acknowledge))
            .route("/referrals/{id}/decide", post(decide))
            .route("/referrals/{id}/transfer", post(transfer))
            .route(
                "/referrals/{id}/request-information",
                post(request_information),
            )
            .route("/supervision", get(supervision))
            .layer(axum::middleware::map_response(security_headers))
            .with_state(self)
    }

    /// The session of a form post and its fields, once the form proved it comes from
    /// this session's pages (its CSRF token); otherwise the answer to send: back to the
    /// sign-in page without a session, 403 with a wrong or missing token (nothing done).
    fn posted(
        &self,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<(String, Session, HashMap<String, String>), Box<Response>> {
        let Some((id, session)) = self.session(headers) else {
            return Err(Box::new(Redirect::to("/").into_response()));
        };
        let form = form(body);
        if !csrf_ok(&session, &form) {
            return Err(Box::new(page::error(session.lang, StatusCode::FORBIDDEN)));
        }
        Ok((id, session, form))
    }

    fn session(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = session_id(headers)?;
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.get(&id).cloned().map(|s| (id, s))
    }

    /// A call as the session's principal; a token that cannot be sent (not ASCII) is
    /// UNAUTHENTICATED, as the API would answer.
    fn request<T>(
        &self,
        session: &Session,
        message: T,
    ) -> Result<tonic::Request<T>, tonic::Status> {
        let mut request = tonic::Request::new(message);
        let bearer = MetadataValue::try_from(format!("Bearer {}", session.token))
            .map_err(|_| tonic::Status::unauthenticated("the token is not ascii"))?;
        request.metadata_mut().insert("authorization", bearer);
        request
            .metadata_mut()
            .insert("onecity-purpose", MetadataValue::from_static(PURPOSE));
        Ok(request)
    }
}

/// The in-process connections of [`Console::in_process`], for the gRPC server to serve.
pub type InProcessIncoming = tokio_stream::wrappers::ReceiverStream<tokio::io::DuplexStream>;

/// Bytes a pipe buffers each way (one gRPC frame of a usual page, or more).
const PIPE_BUFFER: usize = 64 * 1024;

/// The connector of the in-process channel: each connection is a new pipe whose other end
/// goes to the server.
#[derive(Clone)]
struct InProcess(tokio::sync::mpsc::Sender<DuplexStream>);

impl tower::Service<tonic::codegen::http::Uri> for InProcess {
    type Response = hyper_util::rt::TokioIo<DuplexStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: tonic::codegen::http::Uri) -> Self::Future {
        let server = self.0.clone();
        Box::pin(async move {
            let (client, served) = tokio::io::duplex(PIPE_BUFFER);
            server.send(served).await.map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::NotConnected, "the server has stopped")
            })?;
            Ok(hyper_util::rt::TokioIo::new(client))
        })
    }
}

/// Serves the console on `listener` until `stop`: over HTTPS with `tls` (the gRPC
/// listener's certificates, reloaded with them), else plain HTTP.
pub async fn serve(
    listener: tokio::net::TcpListener,
    console: Console,
    tls: Option<crate::tls::ServerTls>,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let console = Console {
        stop: stop.clone(),
        ..console
    };
    match tls {
        None => {
            axum::serve(listener, console.router())
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
        Some(tls) => {
            let local = listener.local_addr()?;
            let incoming = Box::pin(tls.for_http1().incoming(listener, stop.clone()));
            axum::serve(TlsListener { incoming, local }, console.router())
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
    }
}

type TlsConnection = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// The handshaken connections of the console's TLS listener, as axum takes them.
struct TlsListener {
    incoming: std::pin::Pin<
        Box<dyn futures::Stream<Item = std::io::Result<TlsConnection>> + Send + 'static>,
    >,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.incoming.next().await {
                Some(Ok(conn)) => {
                    let peer = conn.get_ref().0.peer_addr().unwrap_or(self.local);
                    return (conn, peer);
                }
                // `incoming` logs and drops failed handshakes; it yields no errors today.
                Some(Err(_)) => continue,
                // Stopped: the graceful shutdown ends the server.
                None => std::future::pending().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl Console {
    /// The `Set-Cookie` value for the session `id` (empty and expired to end it).
    fn cookie(&self, id: &str, expired: bool) -> String {
        let mut cookie = format!("{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/");
        if expired {
            cookie.push_str("; Max-Age=0");
        }
        // Over HTTPS the browser must never send the session id in clear.
        if self.secure {
            cookie.push_str("; Secure");
        }
        cookie
    }
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    // Without operating-system randomness no session can be safe: refusing to run is right.
    getrandom::getrandom(&mut bytes).expect("operating system randomness");
    hex::encode(bytes)
}

fn form(body: &Bytes) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// Whether the form carries this session's CSRF token.
fn csrf_ok(session: &Session, form: &HashMap<String, String>) -> bool {
    form.get("csrf")
        .is_some_and(|t| bool::from(t.as_bytes().ct_eq(session.csrf.as_bytes())))
}

async fn home(State(console): State<Console>, headers: HeaderMap) -> Response {
    match console.session(&headers) {
        Some((_, session)) => page::home(&session.csrf, session.lang).into_response(),
        None => page::sign_in(Lang::En).into_response(),
    }
}

async fn sign_in(State(console): State<Console>, body: Bytes) -> Response {
    let form = form(&body);
    let token = form.get("token").map(|t| t.trim()).unwrap_or_default();
    let lang = form
        .get("lang")
        .and_then(|l| l.parse().ok())
        .unwrap_or(Lang::En);
    if token.is_empty() {
        return (StatusCode::BAD_REQUEST, page::sign_in(lang)).into_response();
    }
    let id = random_hex();
    let session = Session {
        token: token.to_owned(),
        csrf: random_hex(),
        lang,
    };
    console
        .sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.clone(), session);
    let cookie = console.cookie(&id, false);
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn sign_out(State(console): State<Console>, headers: HeaderMap, body: Bytes) -> Response {
    let (id, _, _) = match console.posted(&headers, &body) {
        Ok(posted) => posted,
        Err(answer) => return *answer,
    };
    console
        .sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&id);
    let expired = console.cookie("", true);
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&expired) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn switch_lang(State(console): State<Console>, headers: HeaderMap, body: Bytes) -> Response {
    let (id, _, form) = match console.posted(&headers, &body) {
        Ok(posted) => posted,
        Err(answer) => return *answer,
    };
    if let Some(lang) = form.get("lang").and_then(|l| l.parse().ok()) {
        let mut sessions = console.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = sessions.get_mut(&id) {
            s.lang = lang;
        }
    }
    Redirect::to("/").into_response()
}

/// `GET /inbox?page=…`: one page of the unit's referrals, in issue order, linking the next.
async fn inbox(
    State(console): State<Console>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let Some((_, session)) = console.session(&headers) else {
        return Redirect::to("/").into_response();
    };
    let request = match console.request(
        &session,
        pb::ListReferralsRequest {
            state: pb::ReferralState::Unspecified.into(),
            page_size: INBOX_PAGE,
            page_token: query_param(query.as_deref(), "page").unwrap_or_default(),
            ..Default::default()
        },
    ) {
        Ok(r) => r,
        Err(status) => return page::status(session.lang, &status),
    };
    let mut client = HandoffServiceClient::new(console.channel.clone());
    match client.list_referrals(request).await {
        Ok(reply) => {
            let reply = reply.into_inner();
            let next = Some(reply.next_page_token.as_str()).filter(|t| !t.is_empty());
            page::inbox(&reply.referrals, next, session.lang).into_response()
        }
        Err(status) => page::status(session.lang, &status),
    }
}

/// `GET /case?id=…` (the home page's form) goes to the case's own address.
async fn find_case(RawQuery(query): RawQuery) -> Response {
    let id = query
        .map(|q| form(&Bytes::from(q)))
        .and_then(|f| f.get("id").map(|id| id.trim().to_owned()))
        .unwrap_or_default();
    // A case id is a UUID: anything else cannot be one, and must not shape the redirect.
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Redirect::to("/").into_response();
    }
    Redirect::to(&format!("/cases/{id}")).into_response()
}

impl Console {
    /// The case as the session's principal may see it.
    async fn get_case(&self, session: &Session, case_id: &str) -> Result<pb::Case, tonic::Status> {
        let request = self.request(
            session,
            pb::GetCaseRequest {
                case_id: case_id.to_owned(),
            },
        )?;
        let reply = IntakeServiceClient::new(self.channel.clone())
            .get_case(request)
            .await?;
        reply
            .into_inner()
            .case
            .ok_or_else(|| tonic::Status::not_found("no case in the reply"))
    }

    /// A referral the session's principal may see, with its case as that principal may
    /// see it. The API has no call for one referral, so it is looked up in the case named
    /// by `hint` (the inbox's links carry it) and otherwise among the principal's
    /// referrals, page by page. A referral that is not the principal's is the 403 page,
    /// whether it exists or not, so the page tells nothing about other units' referrals.
    /// A principal that may list the referral but not read its case (a supervisor) gets
    /// the referral alone.
    async fn find_referral(
        &self,
        session: &Session,
        referral_id: &str,
        hint: Option<&str>,
    ) -> Result<(pb::Referral, Option<pb::Case>), Response> {
        let lang = session.lang;
        if let Some(case_id) = hint {
            if let Ok(case) = self.get_case(session, case_id).await {
                if let Some(r) = case.referrals.iter().find(|r| r.referral_id == referral_id) {
                    return Ok((r.clone(), Some(case)));
                }
            }
        }
        let mut client = HandoffServiceClient::new(self.channel.clone());
        let mut page_token = String::new();
        loop {
            let request = self
                .request(
                    session,
                    pb::ListReferralsRequest {
                        page_size: INBOX_PAGE,
                        page_token,
                        ..Default::default()
                    },
                )
                .map_err(|s| page::status(lang, &s))?;
            let reply = client
                .list_referrals(request)
                .await
                .map_err(|s| page::status(lang, &s))?
                .into_inner();
            if let Some(found) = reply
                .referrals
                .into_iter()
                .find(|r| r.referral_id == referral_id)
            {
                let case = match self.get_case(session, &found.case_id).await {
                    Ok(case) => case,
                    Err(s) if s.code() == tonic::Code::PermissionDenied => {
                        return Ok((found, None))
                    }
                    Err(s) => return Err(page::status(lang, &s)),
                };
                let referral = case
                    .referrals
                    .iter()
                    .find(|r| r.referral_id == referral_id)
                    .cloned()
                    .unwrap_or(found);
                return Ok((referral, Some(case)));
            }
            if reply.next_page_token.is_empty() {
                return Err(page::error(lang, StatusCode::FORBIDDEN));
            }
            page_token = reply.next_page_token;
        }
    }
}

/// A query parameter of the request.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query
        .map(|q| form(&Bytes::copy_from_slice(q.as_bytes())))
        .and_then(|f| f.get(name).cloned())
        .filter(|v| !v.is_empty())
}

/// The redirect to a referral's page after an action; the ids are the server's (UUIDs),
/// never the request's.
fn to_referral(referral: &pb::Referral) -> Response {
    let uuid = |s: &str| uuid::Uuid::parse_str(s).ok();
    match (uuid(&referral.referral_id), uuid(&referral.case_id)) {
        (Some(r), Some(c)) => Redirect::to(&format!("/referrals/{r}?case={c}")).into_response(),
        _ => Redirect::to("/inbox").into_response(),
    }
}

async fn case(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(case_id): Path<String>,
) -> Response {
    let Some((_, session)) = console.session(&headers) else {
        return Redirect::to("/").into_response();
    };
    match console.get_case(&session, &case_id).await {
        Ok(case) => page::case(
            &case,
            &clerk::Provide::default(),
            &session.csrf,
            session.lang,
        )
        .into_response(),
        Err(status) => page::status(session.lang, &status),
    }
}

/// `POST /cases/{id}/provide-information`: `ProvideInformation` for one NEEDS_INFO
/// referral of the case, with the form's request id; back to the case page. A refusal of
/// the input is shown at the form, with the note kept.
async fn provide_information(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(case_id): Path<String>,
    body: Bytes,
) -> Response {
    let (_, session, form) = match console.posted(&headers, &body) {
        Ok(posted) => posted,
        Err(answer) => return *answer,
    };
    let lang = session.lang;
    let get = |k: &str| form.get(k).map_or("", |v| v.trim()).to_owned();
    let request = pb::ProvideInformationRequest {
        case_id: case_id.clone(),
        referral_id: get("referral_id"),
        request_id: get("request_id"),
        note: get("note"),
    };
    let request = match console.request(&session, request) {
        Ok(r) => r,
        Err(status) => return page::status(lang, &status),
    };
    let status = match IntakeServiceClient::new(console.channel.clone())
        .provide_information(request)
        .await
    {
        Ok(_) => {
            return match uuid::Uuid::parse_str(&case_id) {
                Ok(id) => Redirect::to(&format!("/cases/{id}")).into_response(),
                Err(_) => Redirect::to("/").into_response(),
            }
        }
        Err(status) => status,
    };
    let code = match status.code() {
        tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
        tonic::Code::FailedPrecondition => StatusCode::CONFLICT,
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated | tonic::Code::NotFound => {
            return page::status(lang, &status)
        }
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    let problems = if code == StatusCode::SERVICE_UNAVAILABLE {
        apply::Problems::general(lang.t("failed"))
    } else {
        referral::problems(&status)
    };
    let provide = clerk::Provide {
        referral_id: get("referral_id"),
        request_id: get("request_id"),
        note: form.get("note").cloned().unwrap_or_default(),
        problems,
    };
    match console.get_case(&session, &case_id).await {
        Ok(case) => (code, page::case(&case, &provide, &session.csrf, lang)).into_response(),
        Err(status) => page::status(lang, &status),
    }
}

/// `GET /find`: the form for finding a person's cases.
async fn find_form(State(console): State<Console>, headers: HeaderMap) -> Response {
    let Some((_, session)) = console.session(&headers) else {
        return Redirect::to("/").into_response();
    };
    clerk::find_page(
        "",
        None,
        &apply::Problems::default(),
        &session.csrf,
        session.lang,
    )
    .into_response()
}

/// `POST /find`: `FindCases` with the posted identity number. The number is in the body
/// only, and the API's refusal of it is shown at the input.
async fn find_cases(State(console): State<Console>, headers: HeaderMap, body: Bytes) -> Response {
    let (_, session, form) = match console.posted(&headers, &body) {
        Ok(posted) => posted,
        Err(answer) => return *answer,
    };
    let lang = session.lang;
    let id_number = form.get("id_number").map_or("", |v| v.trim()).to_owned();
    let request = match console.request(
        &session,
        pb::FindCasesRequest {
            id_number: id_number.clone(),
        },
    ) {
        Ok(r) => r,
        Err(status) => return page::status(lang, &status),
    };
    let status = match IntakeServiceClient::new(console.channel.clone())
        .find_cases(request)
        .await
    {
        Ok(reply) => {
            let found = reply.into_inner().cases;
            // The results carry the number masked; the form starts empty again.
            return clerk::find_page(
                "",
                Some(&found),
                &apply::Problems::default(),
                &session.csrf,
                lang,
            )
            .into_response();
        }
        Err(status) => status,
    };
    let (code, problems) = match status.code() {
        tonic::Code::InvalidArgument => (StatusCode::BAD_REQUEST, find_problems(&status)),
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated | tonic::Code::NotFound => {
            return page::status(lang, &status)
        }
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            apply::Problems::general(lang.t("failed")),
        ),
    };
    (
        code,
        clerk::find_page(&id_number, None, &problems, &session.csrf, lang),
    )
        .into_response()
}

/// A refused search's problems, at the identity number's input: its only field.
fn find_problems(status: &tonic::Status) -> apply::Problems {
    use tonic_types::StatusExt as _;
    let mut problems = apply::Problems::default();
    let message = status
        .get_details_bad_request()
        .and_then(|bad| bad.field_violations.into_iter().next())
        .map_or_else(|| status.message().to_owned(), |v| v.description);
    problems.fields.insert("id_number".to_owned(), message);
    problems
}

/// `GET /cases/{id}/events?after=N`: the case's events after version `N` (or after the
/// `Last-Event-ID` the browser resumes from) as Server-Sent Events, relayed from
/// `WatchCase` with the session's token. The stream holds one of the principal's
/// streams on the server while the page is open.
async fn case_events(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(case_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let Some((_, session)) = console.session(&headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let after_query = query_param(query.as_deref(), "after").and_then(|a| a.parse().ok());
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let after: u64 = after_query.max(resumed).unwrap_or(0);
    let request = match console.request(&session, pb::WatchCaseRequest { case_id }) {
        Ok(r) => r,
        Err(status) => return page::status(session.lang, &status),
    };
    let stream = match IntakeServiceClient::new(console.channel.clone())
        .watch_case(request)
        .await
    {
        Ok(reply) => reply.into_inner(),
        Err(status) => return page::status(session.lang, &status),
    };
    let lang = session.lang;
    let events = stream
        .take_while(|item| std::future::ready(item.is_ok()))
        .filter_map(move |item| {
            let event = item.ok().and_then(|w| {
                let e = w.event?;
                (e.version > after).then(|| {
                    let data = serde_json::json!({
                        "version": e.version,
                        "text": page::timeline_text(&e),
                        "status": labels::case_status(w.status, lang),
                    });
                    Ok::<_, std::convert::Infallible>(
                        Event::default()
                            .event("case")
                            .id(e.version.to_string())
                            .data(data.to_string()),
                    )
                })
            });
            std::future::ready(event)
        })
        .take_until(console.stop.clone().cancelled_owned());
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The case page's script, compiled into the binary (no CDN, no build step).
async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("console.js"),
    )
        .into_response()
}

/// Every page may run only the console's own script and be framed by no one.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

async fn apply_form(State(console): State<Console>, headers: HeaderMap) -> Response {
    let Some((_, session)) = console.session(&headers) else {
        return Redirect::to("/").into_response();
    };
    apply::page(
        &apply::Draft::new(),
        &apply::Shown::default(),
        &session.csrf,
        session.lang,
    )
    .into_response()
}

/// `POST /apply`: the form's buttons. Add and remove re-render the form; screen calls
/// `Screen` and shows the twelve assessments under it; submit calls `SubmitApplication`
/// with the form's request id and goes to the new case. A refusal re-renders the form with
/// the entries and the problems next to their inputs.
async fn apply(State(console): State<Console>, headers: HeaderMap, body: Bytes) -> Response {
    let (_, session, form) = match console.posted(&headers, &body) {
        Ok(posted) => posted,
        Err(answer) => return *answer,
    };
    let lang = session.lang;
    let show = |draft: &apply::Draft, shown: apply::Shown<'_>, code: StatusCode| {
        (code, apply::page(draft, &shown, &session.csrf, lang)).into_response()
    };
    let mut draft = apply::Draft::from_form(&form);
    let action = form.get("action").map_or("screen", String::as_str);
    if action == "add_member" {
        draft.add_member();
        return show(&draft, apply::Shown::default(), StatusCode::OK);
    }
    if let Some(i) = action.strip_prefix("remove:") {
        if let Ok(i) = i.parse() {
            draft.remove_member(i);
        }
        return show(&draft, apply::Shown::default(), StatusCode::OK);
    }
    let application = match draft.application(lang) {
        Ok(a) => a,
        Err(problems) => {
            let shown = apply::Shown {
                problems,
                screened: None,
            };
            return show(&draft, shown, StatusCode::BAD_REQUEST);
        }
    };
    let refused = |draft: &apply::Draft, status: tonic::Status| -> Response {
        let code = match status.code() {
            tonic::Code::PermissionDenied
            | tonic::Code::Unauthenticated
            | tonic::Code::NotFound => return page::status(lang, &status),
            tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
            // A member already in an open case: the server's message names that case.
            tonic::Code::FailedPrecondition | tonic::Code::AlreadyExists => StatusCode::CONFLICT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        let problems = if code == StatusCode::SERVICE_UNAVAILABLE {
            apply::Problems::general(lang.pick(
                "The server could not answer. Try again: submitting again never opens a second case.",
                "服务器暂时无法应答。请重试：重复提交不会重复立案。",
            ))
        } else {
            draft.problems(&status)
        };
        let shown = apply::Shown {
            problems,
            screened: None,
        };
        show(draft, shown, code)
    };
    if action == "submit" {
        let request = pb::SubmitApplicationRequest {
            request_id: draft.request_id.clone(),
            application: Some(application),
            duplicate_override_reason: String::new(),
        };
        let request = match console.request(&session, request) {
            Ok(r) => r,
            Err(status) => return page::status(lang, &status),
        };
        return match IntakeServiceClient::new(console.channel.clone())
            .submit_application(request)
            .await
        {
            Ok(reply) => match uuid::Uuid::parse_str(&reply.into_inner().case_id) {
                Ok(case_id) => Redirect::to(&format!("/cases/{case_id}")).into_response(),
                Err(_) => page::error(lang, StatusCode::BAD_GATEWAY),
            },
            Err(status) => refused(&draft, status),
        };
    }
    let request = pb::ScreenRequest {
        application: Some(application),
        view: pb::ScreenView::Full.into(),
    };
    let request = match console.request(&session, request) {
        Ok(r) => r,
        Err(status) => return page::status(lang, &status),
    };
    match EligibilityServiceClient::new(console.channel.clone())
        .screen(request)
        .await
    {
        Ok(reply) => {
            let assessments = reply.into_inner().assessments;
            let shown = apply::Shown {
                problems: apply::Problems::default(),
                screened: Some(&assessments),
            };
            show(&draft, shown, StatusCode::OK)
        }
        Err(status) => refused(&draft, status),
    }
}

async fn referral_page(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(referral_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let Some((_, session)) = console.session(&headers) else {
        return Redirect::to("/").into_response();
    };
    let hint = query_param(query.as_deref(), "case");
    match console
        .find_referral(&session, &referral_id, hint.as_deref())
        .await
    {
        Ok((r, case)) => referral::page(
            &r,
            case.as_ref(),
            &referral::Forms::new(&r),
            &apply::Problems::default(),
            &session.csrf,
            session.lang,
        )
        .into_response(),
        Err(response) => response,
    }
}

/// A refused action on a referral: the API's refusals of the principal are their pages;
/// anything else (a state that no longer allows the action, bad input) is shown on the
/// referral page with the posted form (`action`) as entered.
async fn action_refused(
    console: &Console,
    session: &Session,
    referral_id: &str,
    action: &str,
    form: &HashMap<String, String>,
    problems: Result<apply::Problems, tonic::Status>,
) -> Response {
    let lang = session.lang;
    let (problems, code) = match problems {
        Ok(problems) => (problems, StatusCode::BAD_REQUEST),
        Err(status) => match status.code() {
            tonic::Code::PermissionDenied
            | tonic::Code::Unauthenticated
            | tonic::Code::NotFound => return page::status(lang, &status),
            tonic::Code::InvalidArgument => (referral::problems(&status), StatusCode::BAD_REQUEST),
            tonic::Code::FailedPrecondition => (referral::problems(&status), StatusCode::CONFLICT),
            _ => (
                apply::Problems::general(lang.t("failed")),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
        },
    };
    let hint = form.get("case").map(String::as_str);
    match console.find_referral(session, referral_id, hint).await {
        Ok((r, case)) => {
            let forms = referral::Forms::posted(form, &r, action);
            (
                code,
                referral::page(&r, case.as_ref(), &forms, &problems, &session.csrf, lang),
            )
                .into_response()
        }
        Err(response) => response,
    }
}

/// The answer to a referral action's API call: the referral's page as the action left it,
/// or the page again with the API's refusal at its fields (see [`action_refused`]).
async fn answer_action(
    console: &Console,
    session: &Session,
    referral_id: &str,
    action: &str,
    form: &HashMap<String, String>,
    result: Result<pb::Referral, tonic::Status>,
) -> Response {
    match result {
        Ok(referral) => to_referral(&referral),
        Err(status) => {
            action_refused(console, session, referral_id, action, form, Err(status)).await
        }
    }
}

async fn acknowledge(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(referral_id): Path<String>,
    body: Bytes,
) -> Response {
    let (_, session, form) = match console.posted(&headers, &body) {
        Ok(posted) => posted,
        Err(answer) => return *answer,
    };
    let request = pb::AcknowledgeReferralRequest {
        referral_id: referral_id.clone(),
        request_id: form.get("request_id").cloned().unwrap_or_default(),
    };
    let request = match console.request(&session, request) {
        Ok(r) => r,
        Err(status) => return page::status(session.lang, &status),
    };
    let result = HandoffServiceClient::new(console.channel.clone())
        .acknowledge_referral(request)
        .await
        .map(|reply| reply.into_inner().referral.unwrap_or_default());
    answer_action(
        &console,
        &session,
        &referral_id,
        "acknowledge",
        &form,
        result,
    )
    .await
}

async fn decide(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(referral_id): Path<String>,
    body: Bytes,
) -> Response {
    let (_, session, form) = match console.posted(&headers, &body) {
        Ok(posted) => posted,
        Err(answer) => return *answer,
    };
    let get = |k: &str| form.get(k).map_or("", |v| v.trim());
    let Some(amount_fen) = labels::parse_yuan(get("amount_fen")) else {
        let mut problems = apply::Problems::default();
        problems.fields.insert(
            "amount_fen".to_owned(),
            session
                .lang
                .pick(
                    "not an amount in yuan (e.g. 1200.50)",
                    "不是以元为单位的金额（如 1200.50）",
                )
                .to_owned(),
        );
        return action_refused(
            &console,
            &session,
            &referral_id,
            "decide",
            &form,
            Ok(problems),
        )
        .await;
    };
    let request = pb::RecordDecisionRequest {
        referral_id: referral_id.clone(),
        decision: labels::DECISION.parse(get("decision")).unwrap_or(0),
        amount_fen,
        note: get("note").to_owned(),
        request_id: get("request_id").to_owned(),
    };
    let request = match console.request(&session, request) {
        Ok(r) => r,
        Err(status) => return page::status(session.lang, &status),
    };
    let result = HandoffServiceClient::new(console.channel.clone())
        .record_decision(request)
        .await
        .map(|reply| reply.into_inner().referral.unwrap_or_default());
    answer_action(&console, &session, &referral_id, "decide", &form, result).await
}

/// `POST /referrals/{id}/transfer`: `TransferReferral`; back to the (now transferred)
/// referral's page.
async fn transfer(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(referral_id): Path<String>,
    body: Bytes,
) -> Response {
    let (_, session, form) = match console.posted(&headers, &body) {
        Ok(posted) => posted,
        Err(answer) => return *answer,
    };
    let get = |k: &str| form.get(k).map_or("", |v| v.trim()).to_owned();
    let request = pb::TransferReferralRequest {
        referral_id: referral_id.clone(),
        request_id: get("request_id"),
        to_unit: get("to_unit"),
        reason: get("reason"),
    };
    let request = match console.request(&session, request) {
        Ok(r) => r,
        Err(status) => return page::status(session.lang, &status),
    };
    let result = HandoffServiceClient::new(console.channel.clone())
        .transfer_referral(request)
        .await
        .map(|reply| reply.into_inner().transferred.unwrap_or_default());
    answer_action(&console, &session, &referral_id, "transfer", &form, result).await
}

/// `POST /referrals/{id}/request-information`: `RequestInformation`.
async fn request_information(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(referral_id): Path<String>,
    body: Bytes,
) -> Response {
    let (_, session, form) = match console.posted(&headers, &body) {
        Ok(posted) => posted,
        Err(answer) => return *answer,
    };
    let get = |k: &str| form.get(k).map_or("", |v| v.trim()).to_owned();
    let request = pb::RequestInformationRequest {
        referral_id: referral_id.clone(),
        request_id: get("request_id"),
        what: get("what"),
    };
    let request = match console.request(&session, request) {
        Ok(r) => r,
        Err(status) => return page::status(session.lang, &status),
    };
    let result = HandoffServiceClient::new(console.channel.clone())
        .request_information(request)
        .await
        .map(|reply| reply.into_inner().referral.unwrap_or_default());
    answer_action(
        &console,
        &session,
        &referral_id,
        "request-information",
        &form,
        result,
    )
    .await
}

/// `GET /supervision`: three API calls, each shown as the API answers it (see
/// `supervise`); only when the API refuses all three is it the 403 page.
async fn supervision(State(console): State<Console>, headers: HeaderMap) -> Response {
    let Some((_, session)) = console.session(&headers) else {
        return Redirect::to("/").into_response();
    };
    let overdue = async {
        let request = console.request(
            &session,
            pb::ListReferralsRequest {
                overdue_only: true,
                page_size: INBOX_PAGE,
                ..Default::default()
            },
        )?;
        let reply = HandoffServiceClient::new(console.channel.clone())
            .list_referrals(request)
            .await?;
        Ok(reply.into_inner().referrals)
    };
    let quarantined = async {
        let request = console.request(&session, pb::ListQuarantinedRequest {})?;
        let reply = AdminServiceClient::new(console.channel.clone())
            .list_quarantined(request)
            .await?;
        Ok(reply.into_inner().events)
    };
    let lag = async {
        let request = console.request(&session, pb::GetRoutingLagRequest {})?;
        let reply = AdminServiceClient::new(console.channel.clone())
            .get_routing_lag(request)
            .await?;
        Ok(reply.into_inner().consumers)
    };
    let (overdue, quarantined, lag): (
        Result<_, tonic::Status>,
        Result<_, tonic::Status>,
        Result<_, tonic::Status>,
    ) = tokio::join!(overdue, quarantined, lag);
    for result in [
        overdue.as_ref().err(),
        quarantined.as_ref().err(),
        lag.as_ref().err(),
    ] {
        if let Some(status) = result.filter(|s| s.code() == tonic::Code::Unauthenticated) {
            return page::status(session.lang, status);
        }
    }
    let sections = supervise::Sections {
        overdue: supervise::Section::of(overdue),
        quarantined: supervise::Section::of(quarantined),
        lag: supervise::Section::of(lag),
    };
    if sections.overdue.refused() && sections.quarantined.refused() && sections.lag.refused() {
        return page::error(session.lang, StatusCode::FORBIDDEN);
    }
    supervise::page(&sections, session.lang).into_response()
}

#[cfg(test)]
mod tests;
