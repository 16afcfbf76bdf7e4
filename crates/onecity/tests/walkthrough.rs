//! The README walkthrough, run with the real `onecity` binary against a server on a loopback
//! port: if this passes, the commands a newcomer types work as documented.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use onecity_tests::{tokens, TestServer};
use tokio::process::Command;

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `onecity ARGS` against `server` with `token`.
async fn onecity(server: &str, token: &str, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_onecity"))
        .args(args)
        .env("ONECITY_SERVER", server)
        .env("ONECITY_TOKEN", token)
        .env_remove("ONECITY_LOG_LEVEL")
        .current_dir(repo_root())
        .output()
        .await
        .expect("run onecity");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn ok(server: &str, token: &str, args: &[&str]) -> String {
    let r = onecity(server, token, args).await;
    assert!(r.ok, "onecity {args:?} failed: {}", r.stderr);
    r.stdout
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Polls `f` until it returns `Some` (the workers run asynchronously after a submission).
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_walkthrough() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let url = server.url.as_str();
    let terminal = tokens::TERMINAL;
    let family = "docs/examples/low-income-family.json";

    // A clerk screens first: nothing is written.
    let screen = ok(url, terminal, &["screen", family]).await;
    assert!(screen.contains("\"PROGRAMME_DIBAO\""), "{screen}");

    // Submit; submitting the same file again is the same case.
    let case = ok(url, terminal, &["submit", "-q", family]).await;
    let case = case.trim().to_owned();
    assert_eq!(case.len(), 36, "{case:?}");
    let again = ok(url, terminal, &["submit", family]).await;
    assert!(
        again.contains(&case) && again.contains("\"duplicate\": true"),
        "{again}"
    );

    // Six referrals reach six units of Hexi.
    eventually("six referrals", || async {
        let c = ok(url, terminal, &["case", &case]).await;
        (c.matches("\"referralId\"").count() == 6).then_some(())
    })
    .await;

    // Civil affairs of Hexi: list, acknowledge, decide.
    let civil = tokens::CIVIL_AFFAIRS;
    let listed = ok(url, civil, &["referrals", "--state", "issued"]).await;
    assert!(listed.contains("\"PROGRAMME_DIBAO\""), "{listed}");
    let refs = lines(&ok(url, civil, &["referrals", "-q", "--state", "issued"]).await);
    assert_eq!(refs.len(), 1, "{refs:?}");
    let acked = ok(url, civil, &["ack", &refs[0]]).await;
    assert!(acked.contains("REFERRAL_STATE_ACKNOWLEDGED"), "{acked}");
    let decided = ok(
        url,
        civil,
        &[
            "decide",
            &refs[0],
            "approve",
            "--amount-fen",
            "326100",
            "--note",
            "income and assets verified",
        ],
    )
    .await;
    assert!(decided.contains("REFERRAL_STATE_APPROVED"), "{decided}");

    // Another unit cannot act on it; a terminal cannot list referrals.
    let denied = onecity(url, tokens::HOUSING, &["ack", &refs[0]]).await;
    assert!(!denied.ok);
    assert!(
        denied.stderr.starts_with("error: PERMISSION_DENIED: "),
        "{}",
        denied.stderr
    );

    // The supervisor of Hexi sees every unit's referrals and moves one between its units;
    // the receiving unit decides it.
    let supervisor = "demo-supervisor-120103";
    let district = lines(&ok(url, supervisor, &["referrals", "-q", "--state", "issued"]).await);
    let education = lines(
        &ok(
            url,
            "demo-education-120103",
            &["referrals", "-q", "--state", "issued"],
        )
        .await,
    );
    assert_eq!(education.len(), 1, "{education:?}");
    assert!(district.contains(&education[0]), "{district:?}");
    let moved = ok(
        url,
        supervisor,
        &[
            "transfer",
            &education[0],
            "--to",
            "civil-affairs@120103",
            "--reason",
            "handled by civil affairs this term",
        ],
    )
    .await;
    assert!(moved.contains("REFERRAL_STATE_TRANSFERRED"), "{moved}");
    let received = lines(&ok(url, civil, &["referrals", "-q", "--state", "issued"]).await);
    assert_eq!(received.len(), 1, "{received:?}");
    ok(url, civil, &["decide", &received[0], "approve"]).await;

    // Housing asks the household for a document; the terminal records it, and housing
    // decides.
    let housing = lines(
        &ok(
            url,
            tokens::HOUSING,
            &["referrals", "-q", "--state", "issued"],
        )
        .await,
    );
    assert_eq!(housing.len(), 1, "{housing:?}");
    let asked = ok(
        url,
        tokens::HOUSING,
        &["ask", &housing[0], "--what", "tenancy contract"],
    )
    .await;
    assert!(asked.contains("REFERRAL_STATE_NEEDS_INFO"), "{asked}");
    let provided = ok(
        url,
        terminal,
        &["provide", &case, &housing[0], "--note", "contract scanned"],
    )
    .await;
    assert!(
        provided.contains("REFERRAL_STATE_ACKNOWLEDGED"),
        "{provided}"
    );
    ok(url, tokens::HOUSING, &["decide", &housing[0], "approve"]).await;

    // The other three departments decide.
    for department in [
        "medical-security",
        "human-resources",
        "disabled-persons-federation",
    ] {
        let token = format!("demo-{department}-120103");
        let refs = lines(&ok(url, &token, &["referrals", "-q", "--state", "issued"]).await);
        assert_eq!(refs.len(), 1, "{department}: {refs:?}");
        ok(url, &token, &["decide", &refs[0], "approve"]).await;
    }

    // The case is closed.
    eventually("case closed", || async {
        let c = ok(url, terminal, &["case", &case]).await;
        c.contains("\"status\": \"CASE_STATUS_CLOSED\"")
            .then_some(())
    })
    .await;

    // A department reads the case with masked identity numbers.
    let masked = ok(url, tokens::HOUSING, &["case", &case]).await;
    assert!(masked.contains("120103********1352"), "{masked}");
    assert!(!masked.contains("120103198405121352"));

    // The log, for admins and services: the case closed, then the reads that saw it closed
    // (the terminal's and the department's) left their access records.
    let tail = ok(url, tokens::ADMIN, &["log", "tail", "-n", "3"]).await;
    assert!(tail.contains("onecity.v1.CaseClosed"), "{tail}");
    assert!(tail.contains("onecity.v1.PersonalDataRead"), "{tail}");

    // The impact of the version in force (every case is already under it): progress on
    // stderr, the report alone on stdout.
    let impact = onecity(
        url,
        tokens::ADMIN,
        &["policy", "impact", "--version", "2026-07"],
    )
    .await;
    assert!(impact.ok, "{}", impact.stderr);
    assert!(impact.stderr.contains("active cases"), "{}", impact.stderr);
    assert!(
        impact.stdout.contains("\"done\": true"),
        "{}",
        impact.stdout
    );
    assert!(
        impact.stdout.contains("\"versionId\": \"2026-07\""),
        "{}",
        impact.stdout
    );

    // Errors: status code and message, non-zero exit.
    let missing = onecity(
        url,
        terminal,
        &["case", "01890000-0000-7000-8000-000000000000"],
    )
    .await;
    assert!(!missing.ok);
    assert!(
        missing.stderr.starts_with("error: NOT_FOUND: "),
        "{}",
        missing.stderr
    );
    let unknown = onecity(url, "not-a-token", &["policy"]).await;
    assert!(
        unknown.stderr.starts_with("error: UNAUTHENTICATED: "),
        "{}",
        unknown.stderr
    );

    server.stop().await;
}
