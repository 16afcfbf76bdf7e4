//! Tamper evidence end to end: every commit names the role that appended it, `onecity log
//! verify` passes on an intact log, and after one byte of a stored commit is changed in
//! the sled files while the server is stopped, it names that commit and exits non-zero.

use onecity_tests::{application, tokens, TestServer};

/// Runs `onecity log verify` against `url` as the admin; (success, stdout, stderr).
fn verify(url: &str) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_onecity"))
        .args(["log", "verify", "--addr", url, "--token", tokens::ADMIN])
        .env("NO_COLOR", "1")
        .output()
        .expect("run onecity");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_name_their_appender_and_verify_finds_a_flipped_byte() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    for i in 0..4 {
        server.submit_handed_off(application(i)).await;
    }
    let head = server.head().await;
    let events = server.whole_log().await;
    for e in &events {
        let want = match e.event_type.as_str() {
            "onecity.v1.ApplicationSubmitted" => "service:intake",
            "onecity.v1.EligibilityAssessed" => "service:assessment",
            "onecity.v1.ReferralIssued" => "service:handoff",
            _ => continue,
        };
        assert_eq!(e.appended_by, want, "{} at {}", e.event_type, e.position);
        assert_eq!(e.commit_hash.len(), 32);
    }

    let (ok, out, err) = verify(&server.url);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!("intact up to position {head}")),
        "{out}"
    );

    // The second submission's commit, edited while the server is stopped.
    let victim = events
        .iter()
        .filter(|e| e.event_type == "onecity.v1.ApplicationSubmitted")
        .nth(1)
        .expect("a second submission");
    server.stop().await;
    {
        let db = sled::open(dir.path().join("log")).unwrap();
        let mut key = vec![b'E'];
        key.extend_from_slice(&victim.position.to_be_bytes());
        let mut value = db.get(&key).unwrap().expect("stored").to_vec();
        // The last byte belongs to the payload (an application is stored uncompressed).
        *value.last_mut().unwrap() ^= 0x01;
        db.insert(&key, value).unwrap();
        db.flush().unwrap();
    }

    let server = TestServer::start(dir.path()).await;
    let (ok, out, err) = verify(&server.url);
    assert!(!ok, "verify must fail: {out}");
    assert!(
        err.contains(&format!("chain broken at position {}", victim.position))
            && err.contains(&victim.case_id)
            && err.contains("does not match its hash"),
        "{err}"
    );
    server.stop().await;
}
