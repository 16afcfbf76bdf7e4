//! The console in a real Chromium (headless), driven over WebDriver by chromedriver.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`/usr/bin/chromium`,
//! `/usr/bin/chromedriver`; `ONECITY_CHROMIUM` / `ONECITY_CHROMEDRIVER` name others).
//! `.ci/run` and `.ci/test` install them; without them these tests fail, saying so: a
//! browser test that passes without a browser would prove nothing.
//!
//! Screenshots go to `target/console-screenshots/`; with `ONECITY_UPDATE_SCREENSHOTS=1`
//! they are also written to `docs/console/`, where docs/console.md shows them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chrono::NaiveDate;
use fantoccini::{Client, ClientBuilder, Locator};
use onecity_proto::v1 as pb;
use onecity_tests::{today, tokens, valid_id_number, TestServer};

/// Longest any one wait for the browser or the server may take.
const PATIENCE: Duration = Duration::from_secs(30);

fn tool(env: &str, default: &str, package: &str) -> PathBuf {
    let path = std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.is_file(),
        "{} not found: install Debian's `{package}` package (`.ci/run` does), or set {env}",
        path.display()
    );
    path
}

/// A headless Chromium under its own chromedriver; both end when this is dropped.
struct Browser {
    client: Client,
    _driver: tokio::process::Child,
}

impl Browser {
    async fn start() -> Browser {
        let chromium = tool("ONECITY_CHROMIUM", "/usr/bin/chromium", "chromium");
        let chromedriver = tool(
            "ONECITY_CHROMEDRIVER",
            "/usr/bin/chromedriver",
            "chromium-driver",
        );
        // chromedriver cannot report a port it chose; take a free one and give it that.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = tokio::process::Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", chromedriver.display()));
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,1000",
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        // The driver accepts connections once it is up: retry until then, with a deadline.
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if tokio::time::Instant::now() > deadline => {
                    panic!("chromedriver at {url} did not start a session: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        Browser {
            client,
            _driver: driver,
        }
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("goto");
    }

    /// Waits for the element `css` names: the page's state the test waits for is written
    /// as a selector (`tr[data-state=…]`), so this polls a real condition.
    async fn wait(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(PATIENCE)
            .every(Duration::from_millis(100))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e,
            Err(e) => {
                let source = self.client.source().await.unwrap_or_default();
                panic!("no {css} on the page ({e}):\n{source}")
            }
        }
    }

    async fn fill(&self, id: &str, text: &str) {
        let input = self.wait(&format!("#{id}")).await;
        input.clear().await.expect("clear");
        input.send_keys(text).await.expect("type");
    }

    async fn choose(&self, id: &str, value: &str) {
        self.wait(&format!("#{id}"))
            .await
            .select_by_value(value)
            .await
            .unwrap_or_else(|e| panic!("choose {value} in #{id}: {e}"));
    }

    async fn click(&self, css: &str) {
        self.wait(css).await.click().await.expect("click");
    }

    async fn text(&self, css: &str) -> String {
        self.wait(css).await.text().await.expect("text")
    }

    async fn source(&self) -> String {
        self.client.source().await.expect("page source")
    }

    async fn sign_in(&self, console: &str, token: &str) {
        self.client.delete_all_cookies().await.expect("sign out");
        self.goto(console).await;
        self.fill("token", token).await;
        self.click("form[action='/signin'] button").await;
        self.wait("form[action='/signout']").await;
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a png");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
        let mut dirs = vec![target.join("console-screenshots")];
        if std::env::var_os("ONECITY_UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
            dirs.push(root.join("docs").join("console"));
        }
        for dir in dirs {
            std::fs::create_dir_all(&dir).expect("screenshot dir");
            std::fs::write(dir.join(format!("{name}.png")), &png).expect("write screenshot");
        }
    }
}

/// `demo-<department>-<district>`: the demo token of a referral's unit.
fn unit_token(unit: &str) -> String {
    format!("demo-{}", unit.replace('@', "-"))
}

async fn case_of(server: &TestServer, case_id: &str) -> pb::Case {
    server
        .intake(tokens::ADMIN)
        .await
        .get_case(pb::GetCaseRequest {
            case_id: case_id.into(),
        })
        .await
        .expect("get case")
        .into_inner()
        .case
        .expect("case")
}

/// Waits until every routing worker has handled everything in the log (the admin API's
/// routing lag is zero), so the case's referrals are all issued.
async fn settled(server: &TestServer) {
    let mut admin = server.admin(tokens::ADMIN).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let lag = admin
            .get_routing_lag(pb::GetRoutingLagRequest {})
            .await
            .expect("routing lag")
            .into_inner();
        if lag.consumers.iter().all(|c| c.lag == 0) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the workers did not catch up: {lag:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The clerk enters a household with a mistake, corrects it, screens and submits it and
/// watches the referrals arrive; the civil-affairs unit acknowledges and approves the
/// dibao referral in its browser; the test approves the case's other referrals over gRPC
/// with their units' tokens; the case page shows the referral decided and the case
/// closed. Then another district's unit is refused the referral page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clerk_applies_and_a_department_decides_in_chromium() {
    let browser = Browser::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let console = server.console().await;
    let url = |path: &str| format!("{}{path}", console.url);

    // --- the clerk ---
    browser.sign_in(&console.url, tokens::TERMINAL).await;
    browser.click("a[href='/apply']").await;
    browser.choose("district_code", "120103").await;
    browser.fill("application_date", &today()).await;
    browser.fill("contact_phone", "022-12345678").await;
    browser.choose("housing", "HOUSING_RENTING").await;
    browser.fill("financial_assets_fen", "8000").await;
    browser.click("#consent_to_share").await;
    let applicant_birth = NaiveDate::from_ymd_opt(1980, 3, 15).unwrap();
    let applicant_id = valid_id_number("120103", applicant_birth, 11);
    // The mistake: the last (check) character of the identity number.
    let mistyped = format!(
        "{}{}",
        &applicant_id[..17],
        if applicant_id.ends_with('0') {
            "1"
        } else {
            "0"
        }
    );
    browser.fill("members-0-name", "Zhang Wei").await;
    browser.fill("members-0-id_number", &mistyped).await;
    browser.fill("members-0-birth_date", "1980-03-15").await;
    browser
        .choose("members-0-relationship", "RELATIONSHIP_APPLICANT")
        .await;
    browser
        .choose("members-0-employment", "EMPLOYMENT_UNEMPLOYED")
        .await;
    browser
        .choose("members-0-education", "EDUCATION_STAGE_NONE")
        .await;
    browser
        .choose("members-0-supporter", "SUPPORTER_NONE")
        .await;
    // A second member: the form comes back with one more row and everything kept.
    browser.click("#add-member").await;
    assert_eq!(
        browser
            .wait("#members-0-name")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("Zhang Wei")
    );
    let child_birth = NaiveDate::from_ymd_opt(2016, 6, 1).unwrap();
    browser.fill("members-1-name", "Zhang Xiaoming").await;
    browser
        .fill(
            "members-1-id_number",
            &valid_id_number("120103", child_birth, 31),
        )
        .await;
    browser.fill("members-1-birth_date", "2016-06-01").await;
    browser
        .choose("members-1-relationship", "RELATIONSHIP_CHILD")
        .await;
    browser
        .choose("members-1-employment", "EMPLOYMENT_NOT_IN_LABOUR_FORCE")
        .await;
    browser
        .choose("members-1-education", "EDUCATION_STAGE_PRIMARY")
        .await;
    browser
        .choose("members-1-supporter", "SUPPORTER_NONE")
        .await;
    browser.click("#submit").await;

    // The server's error is next to the field, which has the focus; the entries are kept.
    let error = browser.text("#members-0-id_number-error").await;
    assert!(!error.is_empty());
    let input = browser.wait("#members-0-id_number").await;
    assert_eq!(
        input.attr("aria-describedby").await.unwrap().as_deref(),
        Some("members-0-id_number-error")
    );
    assert_eq!(
        input.prop("value").await.unwrap().as_deref(),
        Some(mistyped.as_str())
    );
    let focused = browser.client.active_element().await.unwrap();
    assert_eq!(
        focused.attr("id").await.unwrap().as_deref(),
        Some("members-0-id_number")
    );
    assert_eq!(
        browser
            .wait("#members-1-name")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("Zhang Xiaoming")
    );
    browser.screenshot("form-error").await;

    // Corrected, screened (the twelve programmes), submitted.
    browser.fill("members-0-id_number", &applicant_id).await;
    browser.click("#screen").await;
    browser.wait("#screened").await;
    let rows = browser
        .client
        .find_all(Locator::Css("#screened tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 12);
    assert!(browser.source().await.contains("<details>"));
    browser.screenshot("screen").await;
    browser.click("#submit").await;

    // The case page: the referrals appear as the workers issue them (live, or already
    // there when they were quicker than the page).
    browser.wait("#referrals tr[data-referral]").await;
    let case_id = browser
        .wait("#timeline")
        .await
        .attr("data-case")
        .await
        .unwrap()
        .expect("the case id");
    settled(&server).await;
    let case = case_of(&server, &case_id).await;
    let dibao = case
        .referrals
        .iter()
        .find(|r| r.programme == pb::Programme::Dibao as i32)
        .expect("a dibao referral")
        .clone();
    for r in &case.referrals {
        browser
            .wait(&format!("#referrals tr[data-referral='{}']", r.referral_id))
            .await;
    }
    browser.screenshot("case").await;

    // Live: another unit acknowledges over gRPC while the page is open; the timeline and
    // the referral's row change without a reload (the marker set now would not survive
    // one).
    let other = case
        .referrals
        .iter()
        .find(|r| r.referral_id != dibao.referral_id)
        .expect("a referral besides dibao")
        .clone();
    browser
        .client
        .execute("window.notReloaded = true;", vec![])
        .await
        .unwrap();
    let shown = browser
        .client
        .find_all(Locator::Css("#timeline li"))
        .await
        .unwrap()
        .len();
    server
        .handoff(&unit_token(&other.department_unit))
        .await
        .acknowledge_referral(pb::AcknowledgeReferralRequest {
            referral_id: other.referral_id.clone(),
            request_id: String::new(),
        })
        .await
        .expect("acknowledge");
    browser
        .wait(&format!(
            "#referrals tr[data-referral='{}'][data-state='REFERRAL_STATE_ACKNOWLEDGED']",
            other.referral_id
        ))
        .await;
    browser
        .wait(&format!("#timeline li:nth-child({})", shown + 1))
        .await;
    assert!(browser
        .text("#timeline")
        .await
        .contains("ReferralAcknowledged"));
    assert_eq!(
        browser
            .client
            .execute("return window.notReloaded === true;", vec![])
            .await
            .unwrap(),
        serde_json::Value::Bool(true),
        "the page was reloaded"
    );

    // --- the department ---
    browser.sign_in(&console.url, tokens::CIVIL_AFFAIRS).await;
    browser.click("a[href='/inbox']").await;
    let link = format!("a[href^='/referrals/{}']", dibao.referral_id);
    browser.wait(&link).await;
    browser.screenshot("inbox").await;
    browser.click(&link).await;
    browser.click("#acknowledge").await;
    browser
        .wait("#referral-state[data-state='REFERRAL_STATE_ACKNOWLEDGED']")
        .await;
    browser.choose("decision", "DECISION_APPROVED").await;
    browser.screenshot("referral").await;
    browser.fill("amount_fen", "1200.50").await;
    browser
        .fill("note", "household visited; income confirmed")
        .await;
    browser.click("#decide").await;
    browser
        .wait("#referral-state[data-state='REFERRAL_STATE_APPROVED']")
        .await;
    assert!(browser.source().await.contains("1,200.50"));

    // The other referrals, approved by their units over gRPC, until the case closes.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        settled(&server).await;
        let case = case_of(&server, &case_id).await;
        if case.status == pb::CaseStatus::Closed as i32 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the case did not close: {case:?}"
        );
        for r in case.referrals.iter().filter(|r| {
            r.state == pb::ReferralState::Issued as i32
                || r.state == pb::ReferralState::Acknowledged as i32
        }) {
            server
                .handoff(&unit_token(&r.department_unit))
                .await
                .record_decision(pb::RecordDecisionRequest {
                    referral_id: r.referral_id.clone(),
                    decision: pb::Decision::Approved.into(),
                    amount_fen: r.assessed_amount_fen,
                    note: "approved by the test".into(),
                    request_id: String::new(),
                })
                .await
                .expect("decide");
        }
    }
    browser.click(&format!("a[href='/cases/{case_id}']")).await;
    browser
        .wait("#case-status[data-status='CASE_STATUS_CLOSED']")
        .await;
    browser
        .wait(&format!(
            "#referrals tr[data-referral='{}'][data-state='REFERRAL_STATE_APPROVED']",
            dibao.referral_id
        ))
        .await;
    browser.screenshot("case-closed").await;

    // --- another district's unit: the 403 page, and nothing of the referral ---
    browser
        .sign_in(&console.url, tokens::CIVIL_AFFAIRS_HEPING)
        .await;
    for path in [
        format!("/referrals/{}", dibao.referral_id),
        format!("/referrals/{}?case={case_id}", dibao.referral_id),
    ] {
        browser.goto(&url(&path)).await;
        let page = browser.source().await;
        assert!(page.contains("You may not see this page."), "{page}");
        let body = browser.text("main").await;
        for secret in [
            dibao.referral_id.as_str(),
            case_id.as_str(),
            "Zhang Wei",
            "Zhang Xiaoming",
            &applicant_id[6..14],
        ] {
            assert!(!body.contains(secret), "{secret} in {body}");
        }
    }
    browser.screenshot("forbidden").await;

    // --- the admin's supervision page ---
    browser.sign_in(&console.url, tokens::ADMIN).await;
    browser.click("a[href='/supervision']").await;
    browser.wait("#lag table").await;
    browser.screenshot("supervision").await;

    browser
        .client
        .clone()
        .close()
        .await
        .expect("close the browser");
    drop(console);
    server.stop().await;
}
