//! Plain HTTP tests of the console's sessions: sign-in, the cookie's attributes, CSRF.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

use super::*;

/// A console whose gRPC side is an address nothing answers on: these tests never get that
/// far, and a call that did would fail instead of passing.
async fn start() -> (SocketAddr, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let console = Console::new(SocketAddr::from(([127, 0, 0, 1], 9))).unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(serve(listener, console, None, stop.clone()));
    (addr, stop)
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    body: &str,
) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let cookie = cookie
        .map(|c| format!("Cookie: {SESSION_COOKIE}={c}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{cookie}\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Signs in and returns the session id and the CSRF token of its forms.
async fn sign_in(addr: SocketAddr) -> (String, String) {
    let reply = call(addr, "POST", "/signin", None, "token=secret-token&lang=en").await;
    assert_eq!(reply.status, 303);
    let cookie = reply.header("set-cookie").expect("a session cookie");
    let id = cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix(&format!("{SESSION_COOKIE}="))
        .unwrap()
        .to_owned();
    let home = call(addr, "GET", "/", Some(&id), "").await;
    let csrf = home
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .expect("a csrf field in the home page's forms")
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    (id, csrf)
}

#[tokio::test]
async fn sign_in_sets_an_http_only_strict_cookie_and_never_shows_the_token() {
    let (addr, stop) = start().await;
    let reply = call(addr, "POST", "/signin", None, "token=secret-token&lang=en").await;
    assert_eq!(reply.status, 303);
    let cookie = reply.header("set-cookie").unwrap();
    let attributes: Vec<&str> = cookie.split(';').map(str::trim).collect();
    assert!(attributes.contains(&"HttpOnly"), "{cookie}");
    assert!(attributes.contains(&"SameSite=Strict"), "{cookie}");
    assert!(attributes.contains(&"Path=/"), "{cookie}");
    assert!(!cookie.contains("secret-token"));
    let id = attributes[0].split_once('=').unwrap().1;
    assert_eq!(id.len(), 64, "256 random bits");
    let home = call(addr, "GET", "/", Some(id), "").await;
    assert_eq!(home.status, 200);
    assert!(home.body.contains("/signout"));
    assert!(!home.body.contains("secret-token"));
    stop.cancel();
}

#[tokio::test]
async fn without_a_session_the_sign_in_page_is_shown() {
    let (addr, stop) = start().await;
    let home = call(addr, "GET", "/", Some("not-a-session"), "").await;
    assert_eq!(home.status, 200);
    assert!(home.body.contains("action=\"/signin\""));
    let inbox = call(addr, "GET", "/inbox", None, "").await;
    assert_eq!(inbox.status, 303);
    assert_eq!(inbox.header("location"), Some("/"));
    let empty = call(addr, "POST", "/signin", None, "token=").await;
    assert_eq!(empty.status, 400);
    assert!(empty.header("set-cookie").is_none());
    stop.cancel();
}

#[tokio::test]
async fn a_form_without_the_session_csrf_token_is_refused() {
    let (addr, stop) = start().await;
    let (id, csrf) = sign_in(addr).await;
    let missing = call(addr, "POST", "/signout", Some(&id), "").await;
    assert_eq!(missing.status, 403);
    let wrong = call(addr, "POST", "/signout", Some(&id), "csrf=00").await;
    assert_eq!(wrong.status, 403);
    let lang = call(addr, "POST", "/lang", Some(&id), "lang=zh").await;
    assert_eq!(lang.status, 403);
    // The writing forms too: refused before any call (the gRPC side here answers nothing).
    for path in [
        "/apply",
        "/referrals/00000000-0000-0000-0000-000000000000/acknowledge",
        "/referrals/00000000-0000-0000-0000-000000000000/decide",
    ] {
        let refused = call(addr, "POST", path, Some(&id), "action=submit&csrf=00").await;
        assert_eq!(refused.status, 403, "{path}");
    }
    // Refused forms changed nothing: the session is still there, still in English.
    let home = call(addr, "GET", "/", Some(&id), "").await;
    assert!(home.body.contains("lang=\"en\""));
    assert!(home.body.contains("/signout"));

    let switched = call(
        addr,
        "POST",
        "/lang",
        Some(&id),
        &format!("csrf={csrf}&lang=zh"),
    )
    .await;
    assert_eq!(switched.status, 303);
    let home = call(addr, "GET", "/", Some(&id), "").await;
    assert!(home.body.contains("lang=\"zh\""));

    let out = call(addr, "POST", "/signout", Some(&id), &format!("csrf={csrf}")).await;
    assert_eq!(out.status, 303);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    let home = call(addr, "GET", "/", Some(&id), "").await;
    assert!(
        home.body.contains("action=\"/signin\""),
        "the session is gone"
    );
    stop.cancel();
}

#[tokio::test]
async fn the_script_comes_from_the_binary_and_pages_run_no_other() {
    let (addr, stop) = start().await;
    let js = call(addr, "GET", "/console.js", None, "").await;
    assert_eq!(js.status, 200);
    assert!(js
        .header("content-type")
        .unwrap()
        .starts_with("text/javascript"));
    assert!(js.body.contains("EventSource"));
    let page = call(addr, "GET", "/", None, "").await;
    let csp = page.header("content-security-policy").expect("a policy");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        !csp.contains("script-src"),
        "scripts only from the console: {csp}"
    );
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    stop.cancel();
}

#[tokio::test]
async fn page_text_is_escaped() {
    assert_eq!(
        page::esc("<a href=\"x\">'&'</a>"),
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
    );
}
