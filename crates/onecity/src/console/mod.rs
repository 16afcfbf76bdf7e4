//! The browser console: server-rendered pages for clerks, departments and supervisors.
//!
//! The console is a gRPC client of this very server over loopback: every page calls the
//! API with the signed-in principal's own token and `onecity-purpose: console`, so who sees
//! what, and the access records of every read, are exactly those of the API; the console
//! holds no privilege of its own. The token is kept server-side in a session; the browser
//! only holds the session id in an HttpOnly, SameSite=Strict cookie, and every form carries
//! the session's CSRF token, checked before any write.

mod page;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use onecity_proto::v1 as pb;
use pb::handoff_service_client::HandoffServiceClient;
use pb::intake_service_client::IntakeServiceClient;
use subtle::ConstantTimeEq as _;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

pub use page::Lang;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "onecity_session";
/// The purpose every console call declares (recorded with each read).
pub const PURPOSE: &str = "console";
/// Most referrals the inbox page asks for in one call (the API's page limit).
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
    sessions: Arc<Mutex<HashMap<String, Session>>>,
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
            sessions: Arc::default(),
        })
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
            .with_state(self)
    }

    fn session(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = session_id(headers)?;
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.get(&id).cloned().map(|s| (id, s))
    }

    /// A call as the session's principal; a token that cannot be sent (not ASCII) is
    /// UNAUTHORIZED, as the API would answer.
    fn request<T>(&self, session: &Session, message: T) -> Result<tonic::Request<T>, StatusCode> {
        let mut request = tonic::Request::new(message);
        let bearer = MetadataValue::try_from(format!("Bearer {}", session.token))
            .map_err(|_| StatusCode::UNAUTHORIZED)?;
        request.metadata_mut().insert("authorization", bearer);
        request
            .metadata_mut()
            .insert("onecity-purpose", MetadataValue::from_static(PURPOSE));
        Ok(request)
    }
}

/// Serves the console on `listener` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    console: Console,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, console.router())
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
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
    let cookie = format!("{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/");
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn sign_out(State(console): State<Console>, headers: HeaderMap, body: Bytes) -> Response {
    let Some((id, session)) = console.session(&headers) else {
        return Redirect::to("/").into_response();
    };
    if !csrf_ok(&session, &form(&body)) {
        return page::error(session.lang, StatusCode::FORBIDDEN);
    }
    console
        .sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&id);
    let expired = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&expired) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn switch_lang(State(console): State<Console>, headers: HeaderMap, body: Bytes) -> Response {
    let Some((id, session)) = console.session(&headers) else {
        return Redirect::to("/").into_response();
    };
    let form = form(&body);
    if !csrf_ok(&session, &form) {
        return page::error(session.lang, StatusCode::FORBIDDEN);
    }
    if let Some(lang) = form.get("lang").and_then(|l| l.parse().ok()) {
        let mut sessions = console.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = sessions.get_mut(&id) {
            s.lang = lang;
        }
    }
    Redirect::to("/").into_response()
}

async fn inbox(State(console): State<Console>, headers: HeaderMap) -> Response {
    let Some((_, session)) = console.session(&headers) else {
        return Redirect::to("/").into_response();
    };
    let request = match console.request(
        &session,
        pb::ListReferralsRequest {
            state: pb::ReferralState::Unspecified.into(),
            page_size: INBOX_PAGE,
            page_token: String::new(),
            ..Default::default()
        },
    ) {
        Ok(r) => r,
        Err(code) => return page::error(session.lang, code),
    };
    let mut client = HandoffServiceClient::new(console.channel.clone());
    match client.list_referrals(request).await {
        Ok(reply) => page::inbox(&reply.into_inner().referrals, session.lang).into_response(),
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

async fn case(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(case_id): Path<String>,
) -> Response {
    let Some((_, session)) = console.session(&headers) else {
        return Redirect::to("/").into_response();
    };
    let request = match console.request(&session, pb::GetCaseRequest { case_id }) {
        Ok(r) => r,
        Err(code) => return page::error(session.lang, code),
    };
    let mut client = IntakeServiceClient::new(console.channel.clone());
    match client.get_case(request).await {
        Ok(reply) => match reply.into_inner().case {
            Some(case) => page::case(&case, session.lang).into_response(),
            None => page::error(session.lang, StatusCode::NOT_FOUND),
        },
        Err(status) => page::status(session.lang, &status),
    }
}

#[cfg(test)]
mod tests;
