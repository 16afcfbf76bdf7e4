//! Safe by default, with the real binary: `serve` on a non-loopback address refuses demo
//! tokens, no tokens, tokens in clear and no TLS, naming the setting; `--insecure` starts
//! and warns. A deployment made with `onecity token new` and `onecity cert` serves over
//! TLS, and the CLI reaches it with `--ca-cert` and `--token-file`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

fn onecity() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_onecity"));
    // Only what a test sets: no ONECITY_* of the environment running the tests.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ONECITY_") {
            cmd.env_remove(name);
        }
    }
    // Tests run many servers at once: none of them wants the console.
    cmd.env("ONECITY_CONSOLE_ADDR", "off");
    cmd.kill_on_drop(true);
    cmd
}

/// `onecity serve` on 0.0.0.0 (port 0) with `args`: its exit and stderr if it exits within
/// the deadline.
async fn refused(dir: &Path, args: &[&str]) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        onecity()
            .args(["serve", "--addr", "0.0.0.0:0", "--data-dir"])
            .arg(dir.join("data"))
            .args(args)
            .output(),
    )
    .await
    .expect("serve did not exit")
    .expect("run onecity");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "serve started: {stderr}");
    stderr
}

/// Starts `onecity serve` with `args` and reads its stderr until it serves: the child,
/// its port and what it logged until then.
async fn started(dir: &Path, args: &[&str]) -> (Child, u16, String) {
    let mut child = onecity()
        .args(["serve", "--data-dir"])
        .arg(dir.join("data"))
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn onecity");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let port = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read stderr") {
            log.push_str(&line);
            log.push('\n');
            if line.contains("onecity serving") {
                let addr = line.split("addr=").nth(1).expect("addr in the line");
                let port = addr.split_whitespace().next().unwrap().rsplit(':').next();
                return port.unwrap().parse::<u16>().expect("port");
            }
        }
        panic!("serve exited: {log}");
    })
    .await
    .unwrap_or_else(|_| panic!("serve did not start"));
    // Keep draining stderr so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, port, log)
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn serve_off_loopback_refuses_what_is_unsafe_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    // The demo tokens (no config file), and no TLS.
    let err = refused(dir.path(), &[]).await;
    assert!(err.contains("not a loopback address"), "{err}");
    assert!(err.contains("tokens: the public demo tokens"), "{err}");
    assert!(err.contains("tls: no certificate"), "{err}");
    assert!(err.contains("person_index_key_file"), "{err}");

    // No tokens at all.
    let none = dir.path().join("none.toml");
    write(&none, "tokens = []\n");
    let err = refused(dir.path(), &["--config", none.to_str().unwrap()]).await;
    assert!(err.contains("tokens: none configured"), "{err}");

    // A real token, in clear, and no TLS.
    let clear = dir.path().join("clear.toml");
    write(
        &clear,
        "[[tokens]]\ntoken = \"s3cret-admin-token\"\nprincipal = \"admin\"\nid = \"ops\"\n",
    );
    let err = refused(dir.path(), &["--config", clear.to_str().unwrap()]).await;
    assert!(err.contains("store `token_sha256`"), "{err}");
    assert!(err.contains("tls: no certificate"), "{err}");
    assert!(
        !err.contains("s3cret-admin-token"),
        "the token was echoed: {err}"
    );
}

#[tokio::test]
async fn serve_off_loopback_with_insecure_starts_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _port, log) = started(dir.path(), &["--addr", "0.0.0.0:0", "--insecure"]).await;
    assert!(log.contains("INSECURE"), "{log}");
    assert!(log.contains("demo tokens"), "{log}");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn a_deployment_made_with_onecity_serves_tls_and_the_cli_reaches_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name);
    let run = |args: Vec<String>| async move {
        let out = onecity().args(&args).output().await.expect("run onecity");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), stdout, stderr)
    };
    let s = |p: std::path::PathBuf| p.to_string_lossy().into_owned();

    // The certificates.
    let (ok, _, err) = run(vec![
        "cert".into(),
        "ca".into(),
        "--out".into(),
        s(d("pki")),
    ])
    .await;
    assert!(ok, "{err}");
    let (ok, _, err) = run(vec![
        "cert".into(),
        "issue".into(),
        "--ca".into(),
        s(d("pki")),
        "--out".into(),
        s(d("pki")),
        "--name".into(),
        "server".into(),
        "--host".into(),
        "127.0.0.1".into(),
    ])
    .await;
    assert!(ok, "{err}");

    // A token: the holder's file gets the token, the config only its hash.
    let (ok, stanza, err) = run(vec![
        "token".into(),
        "new".into(),
        "--principal".into(),
        "admin".into(),
        "--id".into(),
        "ops".into(),
        "--token-out".into(),
        s(d("admin.token")),
    ])
    .await;
    assert!(ok, "{err}");
    let token = std::fs::read_to_string(d("admin.token")).unwrap();
    let token = token.trim();
    assert_eq!(token.len(), 64, "256 bits in hex");
    assert!(
        !stanza.contains(token),
        "the token is in the stanza: {stanza}"
    );
    assert!(stanza.contains("token_sha256 = "), "{stanza}");

    // The person index key, as `openssl rand -hex 32` writes it.
    write(&d("person-index.key"), &format!("{}\n", "5a".repeat(32)));
    let config = d("onecity.toml");
    write(
        &config,
        &format!(
            "person_index_key_file = \"{}\"\n\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n\n{stanza}\n",
            s(d("person-index.key")),
            s(d("pki/server.pem")),
            s(d("pki/server.key"))
        ),
    );
    let (mut child, port, log) = started(
        dir.path(),
        &["--addr", "0.0.0.0:0", "--config", config.to_str().unwrap()],
    )
    .await;
    assert!(!log.contains("INSECURE"), "{log}");
    let url = format!("https://127.0.0.1:{port}");

    let policy = |extra: Vec<String>| {
        let mut args = vec!["policy".to_owned(), "--addr".to_owned(), url.clone()];
        args.extend(extra);
        run(args)
    };
    let (ok, out, err) = policy(vec![
        "--ca-cert".into(),
        s(d("pki/ca.pem")),
        "--token-file".into(),
        s(d("admin.token")),
    ])
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("dibao") || out.contains("DIBAO"), "{out}");

    // The probe of a TLS listener (no token).
    let (ok, out, err) = run(vec![
        "health".into(),
        "--addr".into(),
        url.clone(),
        "--ca-cert".into(),
        s(d("pki/ca.pem")),
    ])
    .await;
    assert!(ok && out.trim() == "SERVING", "{out} {err}");

    // https without the CA: refused before any call, saying what is missing.
    let (ok, _, err) = policy(vec!["--token-file".into(), s(d("admin.token"))]).await;
    assert!(!ok && err.contains("--ca-cert"), "{err}");
    // The demo token means nothing here.
    let (ok, _, err) = policy(vec!["--ca-cert".into(), s(d("pki/ca.pem"))]).await;
    assert!(!ok && err.contains("UNAUTHENTICATED"), "{err}");
    child.kill().await.unwrap();
}
