//! Certificates are re-read on SIGHUP without dropping connections, with the real binary: a
//! connection made before the reload keeps working (it could not reconnect: the client
//! trusts only the old CA), new connections get the new certificate, and a certificate that
//! does not load leaves the one in use.
#![cfg(unix)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use onecity_tests::Pki;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tonic::transport::{Channel, ClientTlsConfig};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const DEADLINE: Duration = Duration::from_secs(30);

/// `onecity serve` on loopback with the certificate and key in `tls_dir`: the child, its
/// port, and its stderr lines from then on.
async fn serve(dir: &Path, tls_dir: &Path) -> (Child, u16, mpsc::UnboundedReceiver<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_onecity"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ONECITY_") {
            cmd.env_remove(name);
        }
    }
    let mut child = cmd
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .env("ONECITY_TLS_CERT", tls_dir.join("server.pem"))
        .env("ONECITY_TLS_KEY", tls_dir.join("server.key"))
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn onecity");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                // Nobody listens any more; keep draining so the server never blocks.
                while let Ok(Some(_)) = lines.next_line().await {}
                return;
            }
        }
    });
    let line = wait_for(&mut rx, "onecity serving").await;
    let addr = line.split("addr=").nth(1).expect("addr in the line");
    let port = addr.split_whitespace().next().unwrap().rsplit(':').next();
    (child, port.unwrap().parse().expect("port"), rx)
}

/// The first line from `rx` containing `needle`.
async fn wait_for(rx: &mut mpsc::UnboundedReceiver<String>, needle: &str) -> String {
    let mut seen = String::new();
    tokio::time::timeout(DEADLINE, async {
        while let Some(line) = rx.recv().await {
            if line.contains(needle) {
                return line;
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        panic!("serve exited before {needle:?}: {seen}");
    })
    .await
    .unwrap_or_else(|_| panic!("no {needle:?} within {DEADLINE:?}"))
}

async fn connect(port: u16, tls: ClientTlsConfig) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

async fn serving(channel: Channel) -> Result<ServingStatus, tonic::Status> {
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner()
        .status();
    Ok(status)
}

/// Puts `pki`'s server certificate where the server reads it, each file replaced at once.
fn install(pki: &Pki, tls_dir: &Path) {
    let issued = pki.issue("server", &["127.0.0.1", "localhost"], &[]);
    for (from, to) in [(issued.cert, "server.pem"), (issued.key, "server.key")] {
        let tmp = tls_dir.join(format!("{to}.tmp"));
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(tmp, tls_dir.join(to)).unwrap();
    }
}

fn hangup(child: &Child) {
    let pid = child.id().expect("running").to_string();
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("run kill");
    assert!(ok.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_the_certificate_and_keeps_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let tls_dir = tempfile::tempdir().unwrap();
    let (old, new) = (Pki::new("old ca"), Pki::new("new ca"));
    install(&old, tls_dir.path());
    let (child, port, mut log) = serve(dir.path(), tls_dir.path()).await;

    let before = connect(port, old.client(None))
        .await
        .expect("old ca trusted");
    assert_eq!(
        serving(before.clone()).await.unwrap(),
        ServingStatus::Serving
    );

    install(&new, tls_dir.path());
    hangup(&child);
    wait_for(&mut log, "tls certificates reloaded").await;

    // The open connection still answers; a reconnect would have failed its handshake.
    assert_eq!(
        serving(before.clone()).await.unwrap(),
        ServingStatus::Serving
    );
    assert!(
        connect(port, old.client(None)).await.is_err(),
        "a new connection still got the old certificate"
    );
    let after = connect(port, new.client(None))
        .await
        .expect("new ca trusted");
    assert_eq!(serving(after).await.unwrap(), ServingStatus::Serving);

    // A key that does not load: the reload is refused and the new certificate stays.
    std::fs::write(tls_dir.path().join("server.key"), "not a key").unwrap();
    hangup(&child);
    wait_for(&mut log, "tls certificates not reloaded").await;
    let again = connect(port, new.client(None)).await.expect("still served");
    assert_eq!(serving(again).await.unwrap(), ServingStatus::Serving);
}
