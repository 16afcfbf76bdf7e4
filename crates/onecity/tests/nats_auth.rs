//! A role on a `jetstream:` log authenticates to NATS (issue 14): with `[nats]` user and
//! password file it serves; with wrong credentials, in the URL or the config, `serve` exits
//! at once naming the log's servers and never the secret.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use onecity_eventlog_jetstream::testing::NatsServer;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

const PASSWORD: &str = "right-password-never-shown";

fn onecity(dir: &Path, log: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_onecity"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ONECITY_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("ONECITY_CONSOLE_ADDR", "off");
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--log", log])
        .kill_on_drop(true);
    cmd
}

/// Runs `cmd` to its exit (bounded) and returns its stderr; it must fail.
async fn refused(mut cmd: Command) -> String {
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("serve did not exit")
        .expect("run onecity");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "serve started: {stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_credentials_authenticate_and_wrong_ones_fail_naming_the_server_only() {
    let server = tokio::task::spawn_blocking(|| {
        NatsServer::start_with(&format!(
            "authorization {{\n  user: \"onecity\"\n  password: \"{PASSWORD}\"\n}}\n"
        ))
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let hostport = server.url().trim_start_matches("nats://").to_owned();
    let log = format!("jetstream:nats://{hostport}?replicas=1");

    // Wrong password in the URL.
    let in_url = format!("jetstream:nats://onecity:wrong-in-url@{hostport}?replicas=1");
    let err = refused(onecity(dir.path(), &in_url)).await;
    assert!(!err.contains("wrong-in-url"), "the secret is shown: {err}");
    assert!(err.contains(&format!("****@{hostport}")), "{err}");
    assert!(err.contains("credentials"), "{err}");

    // Wrong password in the password file of `[nats]`.
    let wrong = dir.path().join("wrong.password");
    std::fs::write(&wrong, "wrong-in-file\n").unwrap();
    let config = dir.path().join("wrong.toml");
    std::fs::write(
        &config,
        format!(
            "[nats]\nuser = \"onecity\"\npassword_file = \"{}\"\n",
            wrong.display()
        ),
    )
    .unwrap();
    let mut cmd = onecity(dir.path(), &log);
    cmd.arg("--config").arg(&config);
    let err = refused(cmd).await;
    assert!(!err.contains("wrong-in-file"), "the secret is shown: {err}");
    assert!(
        err.contains(&hostport) && err.contains("credentials"),
        "{err}"
    );

    // The right one serves.
    let right = dir.path().join("right.password");
    std::fs::write(&right, format!("{PASSWORD}\n")).unwrap();
    let config = dir.path().join("right.toml");
    std::fs::write(
        &config,
        format!(
            "[nats]\nuser = \"onecity\"\npassword_file = \"{}\"\n",
            right.display()
        ),
    )
    .unwrap();
    let mut cmd = onecity(dir.path(), &log);
    let mut child = cmd
        .arg("--config")
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn onecity");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read stderr") {
            assert!(!line.contains(PASSWORD), "the password is logged: {line}");
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("onecity serving") {
                return;
            }
        }
        panic!("serve exited: {seen}");
    })
    .await
    .unwrap_or_else(|_| panic!("serve did not start: {seen}"));
    child.kill().await.unwrap();
}
