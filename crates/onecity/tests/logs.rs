//! `--log-format json` at trace level over a whole case: every stderr line is one JSON
//! object carrying its spans' fields, and no line, at any level and from any crate, holds
//! an identity number, a birth date, a name of the household or a token.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use onecity_proto::v1 as pb;
use onecity_tests::{assert_nothing_identifying, sample_application, submission, tokens};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_with_span_fields_and_nothing_identifying_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_onecity"))
        .args(["serve", "--addr", "127.0.0.1:0", "--metrics-addr", "off"])
        .args(["--log-format", "json", "--data-dir"])
        .arg(dir.path())
        .env("ONECITY_LOG_LEVEL", "trace")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn onecity");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<String>();
    let reader = {
        let lines = Arc::clone(&lines);
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            let mut addr_tx = Some(addr_tx);
            while let Ok(Some(line)) = stderr.next_line().await {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if v["message"] == "event log open, onecity serving" {
                        if let (Some(tx), Some(addr)) = (addr_tx.take(), v["addr"].as_str()) {
                            let _ = tx.send(addr.to_owned());
                        }
                    }
                }
                lines.lock().unwrap().push(line);
            }
        })
    };
    let addr = tokio::time::timeout(Duration::from_secs(60), addr_rx)
        .await
        .expect("serving in time")
        .expect("the serving line names its address");
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect");

    let application = sample_application();
    let mut intake = onecity_tests::intake(channel.clone(), tokens::TERMINAL);
    let case_id = intake
        .submit_application(submission(application.clone()))
        .await
        .expect("submit")
        .into_inner()
        .case_id;
    onecity_tests::wait_handed_off(&mut intake, &case_id, Duration::from_secs(30)).await;
    let case = intake
        .get_case(pb::GetCaseRequest {
            case_id: case_id.clone(),
        })
        .await
        .expect("get case")
        .into_inner();
    assert!(case.case.is_some());

    let pid = child.id().expect("running").to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(sent.success());
    let exited = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("exited in time")
        .expect("wait");
    assert!(exited.success(), "{exited}");
    reader.await.unwrap();

    let lines = lines.lock().unwrap().clone();
    assert!(lines.len() > 10, "{lines:?}");
    let mut submit_spans = 0;
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.is_object(), "{line}");
        for key in ["timestamp", "level", "target"] {
            assert!(v.get(key).is_some(), "no {key}: {line}");
        }
        let in_submit = v["spans"].as_array().is_some_and(|spans| {
            spans
                .iter()
                .any(|s| s["name"] == "rpc" && s["rpc.method"] == "SubmitApplication")
        });
        submit_spans += usize::from(in_submit);
    }
    assert!(
        submit_spans > 0,
        "no line carries the submission's span fields"
    );
    let text = lines.join("\n");
    assert!(text.contains(&case_id), "the case id is logged");
    assert_nothing_identifying(&text, &application);
    for m in &application.members {
        assert!(!text.contains(&m.name), "a member's name is logged");
        assert!(!text.contains(&m.id_number), "an identity number is logged");
    }
    for token in [tokens::TERMINAL, tokens::ADMIN, tokens::SERVICE] {
        assert!(!text.contains(token), "a token is logged");
    }
}
