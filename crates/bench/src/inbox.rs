//! `inbox`: the console's inbox page of a unit holding many referrals (issue 17: 10,000
//! referrals render in at most 200 ms server time).
//!
//! 1. Set-up (not measured): `--referrals` open referrals of `civil-affairs@120103` written
//!    directly to a fresh sled log ([`write_open_referrals`]).
//! 2. A server in this process over that log with the console on a loopback port; the
//!    unit signs in once.
//! 3. Measured: `GET /inbox` with the session cookie, one request at a time over loopback,
//!    after three warm-up requests: the time from sending the request to the last byte of
//!    the page. Loopback adds well under a millisecond, so this is the server's time: the
//!    session lookup, `ListReferrals` (one page, with its access record) over the
//!    console's gRPC channel, and rendering.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use onecity_eventlog::EventLog;
use onecity_eventlog_sled::{SledConfig, SledLog};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::deadlines::write_open_referrals;

const WARM_UP: usize = 3;
const TOKEN: &str = "demo-civil-affairs-120103";

/// Runs the cell and prints its JSON line.
pub async fn inbox(referrals: usize, requests: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("log");
    let total = {
        let log: Arc<dyn EventLog> = Arc::new(SledLog::open(&path, SledConfig::default())?);
        write_open_referrals(&log, referrals, Utc::now()).await?
    };
    // A free loopback port for the console (the console does not report an ephemeral one).
    let console = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let config = onecity::config::Config {
        data_dir: dir.path().to_path_buf(),
        log: Some(onecity::config::LogSpec::Sled(path)),
        metrics_addr: onecity::config::MetricsAddr::OFF,
        console_addr: onecity::config::ConsoleAddr::At(console),
        ..onecity::config::Config::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(onecity::server::run(listener, config, async move {
        let _ = stopped.await;
    }));
    crate::scenarios::ready(&url, Duration::from_secs(60)).await?;

    let signed_in = http(
        console,
        &format!(
            "POST /signin HTTP/1.1\r\nHost: {console}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\ntoken={TOKEN}&lang=en",
            "token=&lang=en".len() + TOKEN.len()
        ),
    )
    .await?;
    let cookie = signed_in
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .and_then(|c| c.split(';').next())
        .context("sign-in set no cookie")?
        .to_owned();
    let get = format!(
        "GET /inbox HTTP/1.1\r\nHost: {console}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    );
    let mut times = Vec::with_capacity(requests);
    let mut rows = 0;
    let mut bytes = 0;
    for i in 0..WARM_UP + requests {
        let sent = Instant::now();
        let page = http(console, &get).await?;
        let took = sent.elapsed();
        anyhow::ensure!(
            page.starts_with("HTTP/1.1 200"),
            "inbox answered {:?}",
            page.lines().next()
        );
        if i >= WARM_UP {
            times.push(took);
        }
        rows = page.matches("<tr").count().saturating_sub(1);
        bytes = page.len();
    }
    let _ = stop.send(());
    server.await.context("server task")?.context("server")?;
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| ms(times[((times.len() as f64 * q) as usize).min(times.len() - 1)]);
    let line = json!({
        "scenario": "console-inbox",
        "referrals_of_unit": total,
        "rows_shown": rows,
        "page_bytes": bytes,
        "requests": times.len(),
        "p50_ms": at(0.5),
        "p99_ms": at(0.99),
        "max_ms": times.last().map_or(0.0, |d| ms(*d)),
    });
    println!("{line}");
    Ok(())
}

/// One HTTP/1.1 exchange on a new connection; the whole response as text.
async fn http(addr: std::net::SocketAddr, request: &str) -> anyhow::Result<String> {
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    conn.write_all(request.as_bytes()).await?;
    let mut out = Vec::new();
    conn.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}
