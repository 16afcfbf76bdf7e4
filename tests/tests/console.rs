//! The browser console over plain HTTP against a whole server: every page is a gRPC call
//! with the signed-in principal's token, so the API's rules decide what a page shows.

use std::net::SocketAddr;

use onecity::config::ConsoleAddr;
use onecity::console::SESSION_COOKIE;
use onecity_proto::v1 as pb;
use onecity_tests::{referral, sample_application, tokens, TestServer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A port nothing listens on now (the server binds it right after).
async fn free_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    let mut stream = connect(addr).await;
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
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

/// The console listens once the server does; poll until it accepts, with a deadline.
async fn connect(addr: SocketAddr) -> tokio::net::TcpStream {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(stream) => return stream,
            Err(e) if tokio::time::Instant::now() > deadline => panic!("console at {addr}: {e}"),
            Err(_) => tokio::task::yield_now().await,
        }
    }
}

async fn sign_in(addr: SocketAddr, token: &str) -> String {
    let (status, head, _) = call(addr, "POST", "/signin", None, &format!("token={token}")).await;
    assert_eq!(status, 303);
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("set-cookie: {SESSION_COOKIE}=")))
        .expect("session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_show_what_the_api_lets_the_principal_see() {
    let dir = tempfile::tempdir().unwrap();
    let console = free_addr().await;
    let server =
        TestServer::start_with(dir.path(), |c| c.console_addr = ConsoleAddr::At(console)).await;
    let case = server.submit_handed_off(sample_application()).await;
    let dibao = referral(&case, pb::Programme::Dibao);

    // The clerk's case page lists the referrals and the timeline.
    let clerk = sign_in(console, tokens::TERMINAL).await;
    let (status, _, page) = call(
        console,
        "GET",
        &format!("/cases/{}", case.case_id),
        Some(&clerk),
        "",
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(&dibao.department_unit), "{page}");
    assert!(page.contains("REFERRAL_STATE_ISSUED"), "{page}");

    // The department's inbox holds the referral, linked to its case.
    let civil = sign_in(console, tokens::CIVIL_AFFAIRS).await;
    let (status, _, inbox) = call(console, "GET", "/inbox", Some(&civil), "").await;
    assert_eq!(status, 200, "{inbox}");
    assert!(inbox.contains(&dibao.referral_id), "{inbox}");
    assert!(
        inbox.contains(&format!("/cases/{}", case.case_id)),
        "{inbox}"
    );

    // Another district's unit sees neither the referral nor the case.
    let heping = sign_in(console, tokens::CIVIL_AFFAIRS_HEPING).await;
    let (status, _, inbox) = call(console, "GET", "/inbox", Some(&heping), "").await;
    assert_eq!(status, 200, "{inbox}");
    assert!(!inbox.contains(&case.case_id), "{inbox}");
    let (status, _, page) = call(
        console,
        "GET",
        &format!("/cases/{}", case.case_id),
        Some(&heping),
        "",
    )
    .await;
    assert_eq!(status, 403, "{page}");
    assert!(!page.contains(&case.case_id), "{page}");
    assert!(!page.contains(&dibao.referral_id), "{page}");

    // A clerk has no inbox: the API refuses, and so does the page.
    let (status, _, page) = call(console, "GET", "/inbox", Some(&clerk), "").await;
    assert_eq!(status, 403, "{page}");
    server.stop().await;
}
