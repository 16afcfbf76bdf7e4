//! The browser console over plain HTTP against a whole server: every page is a gRPC call
//! with the signed-in principal's token, so the API's rules decide what a page shows.
//! (tests/tests/browser.rs drives the same pages in Chromium.)

use std::net::SocketAddr;
use std::time::Duration;

use onecity::console::SESSION_COOKIE;
use onecity_proto::v1 as pb;
use onecity_tests::{referral, sample_application, tokens, TestServer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The request a browser would send (one per connection).
fn request_text(method: &str, path: &str, cookie: Option<&str>, body: &str) -> String {
    let cookie = cookie
        .map(|c| format!("Cookie: {SESSION_COOKIE}={c}\r\n"))
        .unwrap_or_default();
    format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{cookie}\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    body: &str,
) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = request_text(method, path, cookie, body);
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// The status, head and body of the response read to its end.
async fn response(mut stream: impl tokio::io::AsyncRead + Unpin) -> (u16, String, String) {
    let mut raw = Vec::new();
    // A TLS peer that closes without close_notify ends the read with UnexpectedEof, after
    // the whole response.
    if let Err(e) = stream.read_to_end(&mut raw).await {
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
    }
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    response(send(addr, method, path, cookie, body).await).await
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(": ")?;
        n.eq_ignore_ascii_case(name).then_some(v)
    })
}

async fn sign_in(addr: SocketAddr, token: &str) -> String {
    let (status, head, _) = call(addr, "POST", "/signin", None, &format!("token={token}")).await;
    assert_eq!(status, 303);
    header(&head, "set-cookie")
        .and_then(|c| c.strip_prefix(&format!("{SESSION_COOKIE}=")))
        .expect("session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// The value of the hidden input `name` in a page.
fn hidden(page: &str, name: &str) -> String {
    page.split(&format!("name=\"{name}\" value=\""))
        .nth(1)
        .unwrap_or_else(|| panic!("no {name} in {page}"))
        .split('"')
        .next()
        .unwrap()
        .to_owned()
}

fn encode(pairs: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn yuan(fen: i64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

/// The application form's fields for `app`, as a browser would post them.
fn form_of(app: &pb::Application) -> Vec<(String, String)> {
    let name = |n: &str| n.to_owned();
    let mut pairs = vec![
        (name("members"), app.members.len().to_string()),
        (name("district_code"), app.district_code.clone()),
        (name("application_date"), app.application_date.clone()),
        (name("contact_phone"), app.contact_phone.clone()),
        (
            name("housing"),
            pb::Housing::try_from(app.housing)
                .unwrap()
                .as_str_name()
                .into(),
        ),
        (name("homes_owned"), app.homes_owned.to_string()),
        (name("vehicles_owned"), app.vehicles_owned.to_string()),
        (name("financial_assets_fen"), yuan(app.financial_assets_fen)),
        (
            name("medical_expense_12m_fen"),
            yuan(app.medical_expense_12m_fen),
        ),
        (
            name("other_rigid_expense_12m_fen"),
            yuan(app.other_rigid_expense_12m_fen),
        ),
    ];
    if app.consent_to_share {
        pairs.push((name("consent_to_share"), name("on")));
    }
    for (i, m) in app.members.iter().enumerate() {
        let k = |key: &str| format!("members[{i}].{key}");
        pairs.extend([
            (k("name"), m.name.clone()),
            (k("id_number"), m.id_number.clone()),
            (k("birth_date"), m.birth_date.clone()),
            (
                k("relationship"),
                pb::Relationship::try_from(m.relationship)
                    .unwrap()
                    .as_str_name()
                    .into(),
            ),
            (
                k("employment"),
                pb::Employment::try_from(m.employment)
                    .unwrap()
                    .as_str_name()
                    .into(),
            ),
            (
                k("education"),
                pb::EducationStage::try_from(m.education)
                    .unwrap()
                    .as_str_name()
                    .into(),
            ),
            (k("monthly_income_fen"), yuan(m.monthly_income_fen)),
            (
                k("supporter"),
                pb::Supporter::try_from(m.supporter)
                    .unwrap()
                    .as_str_name()
                    .into(),
            ),
        ]);
    }
    pairs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_show_what_the_api_lets_the_principal_see() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let running = server.console().await;
    let console = running.addr;
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
    assert!(page.contains("<script src=\"/console.js\""), "{page}");

    // The department's inbox holds the referral, linked to its page and its case.
    let civil = sign_in(console, tokens::CIVIL_AFFAIRS).await;
    let (status, _, inbox) = call(console, "GET", "/inbox", Some(&civil), "").await;
    assert_eq!(status, 200, "{inbox}");
    assert!(
        inbox.contains(&format!(
            "/referrals/{}?case={}",
            dibao.referral_id, case.case_id
        )),
        "{inbox}"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_form_shows_the_servers_error_at_its_field_keeps_the_entries_and_submits_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let running = server.console().await;
    let console = running.addr;
    let clerk = sign_in(console, tokens::TERMINAL).await;
    let (status, _, form) = call(console, "GET", "/apply", Some(&clerk), "").await;
    assert_eq!(status, 200, "{form}");
    let csrf = hidden(&form, "csrf");
    let request_id = hidden(&form, "request_id");
    let with = |action: &str, app: &pb::Application| {
        let mut pairs = form_of(app);
        pairs.push(("csrf".into(), csrf.clone()));
        pairs.push(("request_id".into(), request_id.clone()));
        pairs.push(("action".into(), action.into()));
        encode(&pairs)
    };

    // A mistyped identity number: the server's field path puts the error at its input.
    let app = sample_application();
    let mut wrong = app.clone();
    let id = &mut wrong.members[1].id_number;
    let last = if id.ends_with('0') { "1" } else { "0" };
    id.replace_range(17.., last);
    let (status, _, page) = call(
        console,
        "POST",
        "/apply",
        Some(&clerk),
        &with("submit", &wrong),
    )
    .await;
    assert_eq!(status, 400, "{page}");
    assert!(
        page.contains("id=\"members-1-id_number\" name=\"members[1].id_number\""),
        "{page}"
    );
    let input = page
        .split("id=\"members-1-id_number\"")
        .nth(1)
        .unwrap()
        .split('>')
        .next()
        .unwrap();
    assert!(input.contains("aria-invalid=\"true\""), "{input}");
    assert!(
        input.contains("aria-describedby=\"members-1-id_number-error\""),
        "{input}"
    );
    assert!(page.contains("<p class=\"error\" id=\"members-1-id_number-error\">"));
    assert!(!page.contains("members-0-id_number-error"), "{page}");
    // Every entry is kept, the request id too.
    assert!(page.contains(&format!("value=\"{}\"", app.members[2].name)));
    assert!(page.contains("value=\"022-12345678\""), "{page}");
    assert_eq!(hidden(&page, "request_id"), request_id);

    // Screen: the twelve assessments with their rules' explanations; nothing is written.
    let head = server.head().await;
    let (status, _, page) = call(
        console,
        "POST",
        "/apply",
        Some(&clerk),
        &with("screen", &app),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let screened = page.split("id=\"screened\"").nth(1).expect("the preview");
    assert_eq!(
        screened.matches("<tr class=\"outcome-").count(),
        12,
        "{page}"
    );
    assert!(screened.contains("<details>"), "{page}");
    assert_eq!(server.head().await, head, "screening wrote nothing");

    // Add a member: one more row, the entries kept.
    let (status, _, page) = call(
        console,
        "POST",
        "/apply",
        Some(&clerk),
        &with("add_member", &app),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("id=\"members-3-name\""), "{page}");
    assert!(page.contains(&format!("value=\"{}\"", app.members[0].name)));

    // Submit, and submit again (a double click): one case.
    let (status, head, page) = call(
        console,
        "POST",
        "/apply",
        Some(&clerk),
        &with("submit", &app),
    )
    .await;
    assert_eq!(status, 303, "{page}");
    let location = header(&head, "location").unwrap().to_owned();
    let case_id = location.strip_prefix("/cases/").unwrap().to_owned();
    let (status, head, _) = call(
        console,
        "POST",
        "/apply",
        Some(&clerk),
        &with("submit", &app),
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(header(&head, "location"), Some(location.as_str()));
    let cases: std::collections::HashSet<String> = server
        .whole_log()
        .await
        .into_iter()
        .filter(|e| e.event_type == "onecity.v1.ApplicationSubmitted")
        .map(|e| e.case_id)
        .collect();
    assert_eq!(cases.len(), 1, "{cases:?}");
    assert!(cases.contains(&case_id));

    // Without the session's CSRF token nothing is submitted.
    let body = with("submit", &app).replace(&csrf, "0");
    let (status, _, _) = call(console, "POST", "/apply", Some(&clerk), &body).await;
    assert_eq!(status, 403);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_referral_page_lets_its_unit_act_and_shows_nothing_to_another() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let running = server.console().await;
    let console = running.addr;
    let app = sample_application();
    let case = server.submit_handed_off(app.clone()).await;
    let dibao = referral(&case, pb::Programme::Dibao);
    let page_of = |hint: bool| {
        if hint {
            format!("/referrals/{}?case={}", dibao.referral_id, case.case_id)
        } else {
            format!("/referrals/{}", dibao.referral_id)
        }
    };

    // Another district's unit, and another unit of the same district that holds a referral
    // of the same case: the 403 page, with nothing of the referral or the household.
    for token in [tokens::CIVIL_AFFAIRS_HEPING, tokens::MEDICAL] {
        let other = sign_in(console, token).await;
        for hint in [false, true] {
            let (status, _, page) = call(console, "GET", &page_of(hint), Some(&other), "").await;
            assert_eq!(status, 403, "{token}: {page}");
            assert!(!page.contains(&dibao.referral_id), "{page}");
            for m in &app.members {
                assert!(!page.contains(&m.name), "{page}");
            }
            assert!(!page.contains("/decide"), "{page}");
        }
    }

    // The unit's own page, found with or without the hint: the household as the API
    // minimises it (masked identity numbers, no birth dates).
    let civil = sign_in(console, tokens::CIVIL_AFFAIRS).await;
    let (status, _, page) = call(console, "GET", &page_of(false), Some(&civil), "").await;
    assert_eq!(status, 200, "{page}");
    let (status, _, page) = call(console, "GET", &page_of(true), Some(&civil), "").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(&app.members[0].name), "{page}");
    onecity_tests::assert_nothing_identifying(&page, &app);
    assert!(
        page.contains("data-state=\"REFERRAL_STATE_ISSUED\""),
        "{page}"
    );
    let csrf = hidden(&page, "csrf");
    let action = |path: &str| format!("/referrals/{}/{path}", dibao.referral_id);

    // Acknowledge: without the CSRF token refused and nothing written; with it done.
    let (status, _, _) = call(console, "POST", &action("acknowledge"), Some(&civil), "").await;
    assert_eq!(status, 403);
    let ack = encode(&[
        ("csrf".into(), csrf.clone()),
        ("case".into(), case.case_id.clone()),
        ("request_id".into(), hidden(&page, "request_id")),
    ]);
    let (status, head, _) = call(console, "POST", &action("acknowledge"), Some(&civil), &ack).await;
    assert_eq!(status, 303);
    assert_eq!(header(&head, "location"), Some(page_of(true).as_str()));
    let (_, _, page) = call(console, "GET", &page_of(true), Some(&civil), "").await;
    assert!(
        page.contains("data-state=\"REFERRAL_STATE_ACKNOWLEDGED\""),
        "{page}"
    );

    // Decide: an amount that is no amount, then no decision, are shown at their fields
    // with the entries kept; then approved.
    let decide_request = hidden(&page, "request_id");
    let decide = |decision: &str, amount: &str| {
        encode(&[
            ("csrf".into(), csrf.clone()),
            ("case".into(), case.case_id.clone()),
            ("request_id".into(), decide_request.clone()),
            ("decision".into(), decision.into()),
            ("amount_fen".into(), amount.into()),
            ("note".into(), "checked at home visit".into()),
        ])
    };
    let (status, _, page) = call(
        console,
        "POST",
        &action("decide"),
        Some(&civil),
        &decide("DECISION_APPROVED", "12x"),
    )
    .await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("id=\"amount_fen-error\""), "{page}");
    assert!(page.contains("value=\"12x\""), "{page}");
    assert!(page.contains("checked at home visit"), "{page}");
    let (status, _, page) = call(
        console,
        "POST",
        &action("decide"),
        Some(&civil),
        &decide("", "1200"),
    )
    .await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("id=\"decision-error\""), "{page}");
    for _ in 0..2 {
        let (status, head, _) = call(
            console,
            "POST",
            &action("decide"),
            Some(&civil),
            &decide("DECISION_APPROVED", "1,200.50"),
        )
        .await;
        assert_eq!(status, 303, "a resubmission is answered, not refused");
        assert_eq!(header(&head, "location"), Some(page_of(true).as_str()));
    }
    let decided: Vec<_> = server
        .whole_log()
        .await
        .into_iter()
        .filter(|e| e.event_type == "onecity.v1.ReferralDecided" && e.case_id == case.case_id)
        .collect();
    assert_eq!(decided.len(), 1, "one decision for two submissions");
    let (_, _, page) = call(console, "GET", &page_of(true), Some(&civil), "").await;
    assert!(
        page.contains("data-state=\"REFERRAL_STATE_APPROVED\""),
        "{page}"
    );
    assert!(page.contains("1,200.50"), "{page}");
    assert!(
        !page.contains("action=\"/referrals/"),
        "no more actions: {page}"
    );
    server.stop().await;
}

/// Reads from an event stream until `text` has arrived (with a deadline).
async fn read_until(stream: &mut tokio::net::TcpStream, seen: &mut String, text: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while !seen.contains(text) {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {text:?} in {seen}"))
            .unwrap();
        assert!(n > 0, "the stream ended before {text:?}: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_case_event_stream_relays_watch_case_after_the_shown_version() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let running = server.console().await;
    let console = running.addr;
    let case = server.submit_handed_off(sample_application()).await;
    let clerk = sign_in(console, tokens::TERMINAL).await;

    // From the start: the first event, in the page's words.
    let path = format!("/cases/{}/events?after=0", case.case_id);
    let mut stream = send(console, "GET", &path, Some(&clerk), "").await;
    let mut seen = String::new();
    read_until(&mut stream, &mut seen, "\r\n\r\n").await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.contains("text/event-stream"), "{seen}");
    read_until(&mut stream, &mut seen, "id: 1\n").await;
    assert!(seen.contains("event: case"), "{seen}");
    assert!(seen.contains("ApplicationSubmitted"), "{seen}");
    drop(stream);

    // After the version a page shows: only what happens next.
    let shown = server.handed_off(&case.case_id).await.version;
    let path = format!("/cases/{}/events?after={shown}", case.case_id);
    let mut stream = send(console, "GET", &path, Some(&clerk), "").await;
    let mut seen = String::new();
    read_until(&mut stream, &mut seen, "\r\n\r\n").await;
    let dibao = referral(&case, pb::Programme::Dibao);
    server
        .handoff(tokens::CIVIL_AFFAIRS)
        .await
        .acknowledge_referral(pb::AcknowledgeReferralRequest {
            referral_id: dibao.referral_id.clone(),
            request_id: String::new(),
        })
        .await
        .unwrap();
    read_until(&mut stream, &mut seen, "ReferralAcknowledged").await;
    assert!(seen.contains(&format!("id: {}\n", shown + 1)), "{seen}");
    assert!(!seen.contains(&format!("id: {shown}\n")), "{seen}");
    drop(stream);

    // Another district's unit gets the 403, no stream.
    let heping = sign_in(console, tokens::CIVIL_AFFAIRS_HEPING).await;
    let path = format!("/cases/{}/events", case.case_id);
    let (status, _, _) = call(console, "GET", &path, Some(&heping), "").await;
    assert_eq!(status, 403);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supervision_page_shows_each_section_the_api_answers() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let running = server.console().await;
    let console = running.addr;
    server.submit_handed_off(sample_application()).await;

    let admin = sign_in(console, tokens::ADMIN).await;
    let (status, _, page) = call(console, "GET", "/supervision", Some(&admin), "").await;
    assert_eq!(status, 200, "{page}");
    for section in ["id=\"overdue\"", "id=\"quarantined\"", "id=\"lag\""] {
        assert!(page.contains(section), "{page}");
    }
    let lag = page.split("id=\"lag\"").nth(1).unwrap();
    assert!(lag.contains("<td>handoff"), "{page}");
    assert!(!page.contains("Not available to you"), "{page}");

    // A department may list its own overdue referrals, not the admin's sections.
    let civil = sign_in(console, tokens::CIVIL_AFFAIRS).await;
    let (status, _, page) = call(console, "GET", "/supervision", Some(&civil), "").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page.matches("Not available to you").count(), 2, "{page}");

    // A district supervisor lists its district's overdue referrals; the admin's sections
    // stay the admin's. The console has no list of roles: the API decides.
    let supervisor = sign_in(console, "demo-supervisor-120103").await;
    let (status, _, page) = call(console, "GET", "/supervision", Some(&supervisor), "").await;
    assert_eq!(status, 200, "{page}");
    let overdue = page.split("id=\"overdue\"").nth(1).unwrap();
    let overdue = overdue.split("</section>").next().unwrap();
    assert!(!overdue.contains("Not available to you"), "{page}");
    assert_eq!(page.matches("Not available to you").count(), 2, "{page}");

    // A clerk may read none of it.
    let clerk = sign_in(console, tokens::TERMINAL).await;
    let (status, _, page) = call(console, "GET", "/supervision", Some(&clerk), "").await;
    assert_eq!(status, 403, "{page}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_referral_page_transfers_and_requests_information() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let running = server.console().await;
    let console = running.addr;
    let case = server.submit_handed_off(sample_application()).await;
    let dibao = referral(&case, pb::Programme::Dibao);
    let page = format!("/referrals/{}?case={}", dibao.referral_id, case.case_id);

    // Hexi's civil affairs transfers it to Heping's: a refused unit is shown at its field,
    // then the transfer is done and the page shows the referral transferred.
    let civil = sign_in(console, tokens::CIVIL_AFFAIRS).await;
    let (status, _, shown) = call(console, "GET", &page, Some(&civil), "").await;
    assert_eq!(status, 200, "{shown}");
    assert!(shown.contains("action=\"/referrals/"), "{shown}");
    let csrf = hidden(&shown, "csrf");
    let request_id = shown
        .split("/transfer\"")
        .nth(1)
        .map(|form| hidden(form, "request_id"))
        .expect("a transfer form");
    let transfer = |to_unit: &str| {
        encode(&[
            ("csrf".into(), csrf.clone()),
            ("case".into(), case.case_id.clone()),
            ("request_id".into(), request_id.clone()),
            ("to_unit".into(), to_unit.into()),
            ("reason".into(), "the household moved to Heping".into()),
        ])
    };
    let path = format!("/referrals/{}/transfer", dibao.referral_id);
    let (status, _, refused) =
        call(console, "POST", &path, Some(&civil), &transfer("nowhere")).await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused.contains("id=\"to_unit-error\""), "{refused}");
    assert!(
        refused.contains("the household moved to Heping"),
        "{refused}"
    );
    let (status, _, _) = call(
        console,
        "POST",
        &path,
        Some(&civil),
        &transfer("civil-affairs@120101"),
    )
    .await;
    assert_eq!(status, 303);
    let (_, _, shown) = call(console, "GET", &page, Some(&civil), "").await;
    assert!(
        shown.contains("data-state=\"REFERRAL_STATE_TRANSFERRED\""),
        "{shown}"
    );
    assert!(!shown.contains("/transfer\""), "no more actions: {shown}");

    // Heping's unit finds the new referral in its inbox and asks for information.
    let heping = sign_in(console, tokens::CIVIL_AFFAIRS_HEPING).await;
    let (_, _, inbox) = call(console, "GET", "/inbox", Some(&heping), "").await;
    let link = inbox
        .split("href=\"/referrals/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(|l| format!("/referrals/{}", l.replace("&amp;", "&")))
        .expect("the transferred referral in Heping's inbox");
    let (status, _, shown) = call(console, "GET", &link, Some(&heping), "").await;
    assert_eq!(status, 200, "{shown}");
    let csrf = hidden(&shown, "csrf");
    let form = shown
        .split("/request-information\"")
        .nth(1)
        .expect("a request-information form");
    let new_id = link
        .strip_prefix("/referrals/")
        .unwrap()
        .split('?')
        .next()
        .unwrap();
    let ask = |what: &str| {
        encode(&[
            ("csrf".into(), csrf.clone()),
            ("case".into(), case.case_id.clone()),
            ("request_id".into(), hidden(form, "request_id")),
            ("what".into(), what.into()),
        ])
    };
    let path = format!("/referrals/{new_id}/request-information");
    let (status, _, refused) = call(console, "POST", &path, Some(&heping), &ask("")).await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused.contains("id=\"what-error\""), "{refused}");
    let (status, _, _) = call(
        console,
        "POST",
        &path,
        Some(&heping),
        &ask("the lease in Heping"),
    )
    .await;
    assert_eq!(status, 303);
    let (_, _, shown) = call(console, "GET", &link, Some(&heping), "").await;
    assert!(
        shown.contains("data-state=\"REFERRAL_STATE_NEEDS_INFO\""),
        "{shown}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clerk_finds_cases_by_identity_number_and_provides_requested_information() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let running = server.console().await;
    let console = running.addr;
    let application = sample_application();
    let id_number = application.members[0].id_number.clone();
    let case = server.submit_handed_off(application.clone()).await;
    let dibao = referral(&case, pb::Programme::Dibao);

    // Find: the number goes in a POST body; a malformed one is refused at its input.
    let clerk = sign_in(console, tokens::TERMINAL).await;
    let (status, _, form) = call(console, "GET", "/find", Some(&clerk), "").await;
    assert_eq!(status, 200, "{form}");
    assert!(form.contains("method=\"post\" action=\"/find\""), "{form}");
    let csrf = hidden(&form, "csrf");
    let find = |number: &str| {
        encode(&[
            ("csrf".into(), csrf.clone()),
            ("id_number".into(), number.into()),
        ])
    };
    let (status, _, refused) = call(console, "POST", "/find", Some(&clerk), &find("12345")).await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused.contains("id=\"id_number-error\""), "{refused}");
    assert!(refused.contains("value=\"12345\""), "{refused}");
    let (status, _, found) = call(console, "POST", "/find", Some(&clerk), &find(&id_number)).await;
    assert_eq!(status, 200, "{found}");
    assert!(
        found.contains(&format!("href=\"/cases/{}\"", case.case_id)),
        "{found}"
    );
    assert!(!found.contains(&id_number), "the number unmasked: {found}");
    // Without the session's CSRF token nothing is looked up.
    let (status, _, _) = call(
        console,
        "POST",
        "/find",
        Some(&clerk),
        &format!("id_number={id_number}"),
    )
    .await;
    assert_eq!(status, 403);
    // A department may not search by person: the API's refusal is the 403 page.
    let civil = sign_in(console, tokens::CIVIL_AFFAIRS).await;
    let (_, _, form) = call(console, "GET", "/find", Some(&civil), "").await;
    let body = encode(&[
        ("csrf".into(), hidden(&form, "csrf")),
        ("id_number".into(), id_number.clone()),
    ]);
    let (status, _, page) = call(console, "POST", "/find", Some(&civil), &body).await;
    assert_eq!(status, 403, "{page}");
    assert!(!page.contains(&case.case_id), "{page}");

    // The department asks for information; the clerk's case page shows what and a form.
    server
        .handoff(tokens::CIVIL_AFFAIRS)
        .await
        .request_information(pb::RequestInformationRequest {
            referral_id: dibao.referral_id.clone(),
            request_id: String::new(),
            what: "the tenancy contract".into(),
        })
        .await
        .expect("request information");
    let case_page = format!("/cases/{}", case.case_id);
    let (status, _, shown) = call(console, "GET", &case_page, Some(&clerk), "").await;
    assert_eq!(status, 200, "{shown}");
    let section = shown
        .split("id=\"needs-info\"")
        .nth(1)
        .expect("a needs-info section");
    assert!(section.contains("the tenancy contract"), "{shown}");
    let csrf = hidden(&shown, "csrf");
    let request_id = hidden(section, "request_id");
    assert_eq!(hidden(section, "referral_id"), dibao.referral_id);
    let provide = |note: &str| {
        encode(&[
            ("csrf".into(), csrf.clone()),
            ("referral_id".into(), dibao.referral_id.clone()),
            ("request_id".into(), request_id.clone()),
            ("note".into(), note.into()),
        ])
    };
    let path = format!("/cases/{}/provide-information", case.case_id);
    let (status, _, refused) = call(console, "POST", &path, Some(&clerk), &provide("")).await;
    assert_eq!(status, 400, "{refused}");
    let error_id = format!("id=\"note-{}-error\"", dibao.referral_id);
    assert!(refused.contains(&error_id), "{refused}");
    assert_eq!(hidden(&refused, "request_id"), request_id, "{refused}");
    let head = server.head().await;
    let (status, _, _) = call(
        console,
        "POST",
        &path,
        Some(&clerk),
        &provide("contract scanned, 3 pages"),
    )
    .await;
    assert_eq!(status, 303);
    // The same form again (a double click) is answered, not recorded twice.
    let once = server.head().await;
    assert!(once > head, "nothing recorded");
    let (status, _, _) = call(
        console,
        "POST",
        &path,
        Some(&clerk),
        &provide("contract scanned, 3 pages"),
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(server.head().await, once, "a resubmission wrote again");
    let (_, _, shown) = call(console, "GET", &case_page, Some(&clerk), "").await;
    assert!(!shown.contains("id=\"needs-info\""), "{shown}");
    assert!(
        shown.contains(&format!(
            "data-referral=\"{}\" data-state=\"REFERRAL_STATE_ACKNOWLEDGED\"",
            dibao.referral_id
        )),
        "{shown}"
    );
    // The department's referral page shows what was asked and provided.
    let (_, _, referral_page) = call(
        console,
        "GET",
        &format!("/referrals/{}?case={}", dibao.referral_id, case.case_id),
        Some(&civil),
        "",
    )
    .await;
    assert!(
        referral_page.contains("contract scanned, 3 pages"),
        "{referral_page}"
    );

    // A case opened over a duplicate shows why, on its page.
    let second = server
        .intake(tokens::TERMINAL)
        .await
        .submit_application(pb::SubmitApplicationRequest {
            duplicate_override_reason: "the household split after a divorce".into(),
            ..onecity_tests::submission(application)
        })
        .await
        .expect("submit with override")
        .into_inner()
        .case_id;
    let (status, _, shown) = call(
        console,
        "GET",
        &format!("/cases/{second}"),
        Some(&clerk),
        "",
    )
    .await;
    assert_eq!(status, 200, "{shown}");
    let reason = shown
        .split("id=\"duplicate-override\"")
        .nth(1)
        .expect("the override reason");
    assert!(
        reason.contains("the household split after a divorce"),
        "{shown}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_lists_its_district_and_transfers_within_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let running = server.console().await;
    let console = running.addr;
    let case = server.submit_handed_off(sample_application()).await;
    let housing = referral(&case, pb::Programme::Housing);
    let supervisor = sign_in(console, "demo-supervisor-120103").await;

    let (status, _, home) = call(console, "GET", "/", Some(&supervisor), "").await;
    assert_eq!(status, 200, "{home}");
    assert!(home.contains("href=\"/inbox\""), "{home}");
    assert!(home.contains("href=\"/supervision\""), "{home}");
    // The district's referrals, every unit's.
    let (status, _, inbox) = call(console, "GET", "/inbox", Some(&supervisor), "").await;
    assert_eq!(status, 200, "{inbox}");
    for r in &case.referrals {
        assert!(inbox.contains(&r.referral_id), "{inbox}");
    }
    let (status, _, page) = call(console, "GET", "/supervision", Some(&supervisor), "").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("id=\"overdue\""), "{page}");

    // The referral page: the referral without its case, and the transfer form.
    let link = format!("/referrals/{}?case={}", housing.referral_id, case.case_id);
    let (status, _, shown) = call(console, "GET", &link, Some(&supervisor), "").await;
    assert_eq!(status, 200, "{shown}");
    assert!(
        shown.contains("The case itself is not available to you"),
        "{shown}"
    );
    let csrf = hidden(&shown, "csrf");
    let form = shown.split("/transfer\"").nth(1).expect("a transfer form");
    let request_id = hidden(form, "request_id");
    let transfer = |to: &str| {
        encode(&[
            ("csrf".into(), csrf.clone()),
            ("case".into(), case.case_id.clone()),
            ("request_id".into(), request_id.clone()),
            ("to_unit".into(), to.into()),
            ("reason".into(), "handled by civil affairs this year".into()),
        ])
    };
    let path = format!("/referrals/{}/transfer", housing.referral_id);
    // Out of its district: the API refuses the supervisor, shown as the 403 page.
    let head = server.head().await;
    let (status, _, refused) = call(
        console,
        "POST",
        &path,
        Some(&supervisor),
        &transfer("housing@120101"),
    )
    .await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(server.head().await, head, "a refusal wrote something");
    // Deciding is not the supervisor's either.
    let body = encode(&[
        ("csrf".into(), csrf.clone()),
        ("case".into(), case.case_id.clone()),
        ("request_id".into(), request_id.clone()),
        ("decision".into(), "DECISION_APPROVED".into()),
        ("amount_fen".into(), "1.00".into()),
    ]);
    let decide = format!("/referrals/{}/decide", housing.referral_id);
    let (status, _, _) = call(console, "POST", &decide, Some(&supervisor), &body).await;
    assert_eq!(status, 403);
    // Within its district: done, and the page shows it transferred.
    let (status, _, _) = call(
        console,
        "POST",
        &path,
        Some(&supervisor),
        &transfer("civil-affairs@120103"),
    )
    .await;
    assert_eq!(status, 303);
    let (_, _, shown) = call(console, "GET", &link, Some(&supervisor), "").await;
    assert!(
        shown.contains("data-state=\"REFERRAL_STATE_TRANSFERRED\""),
        "{shown}"
    );
    server.stop().await;
}

/// A TLS client trusting only `ca`, offering HTTP/2 and HTTP/1.1 as browsers do.
fn https_client(ca: &std::path::Path) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

async fn https_call(
    client: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = client.connect(name, tcp).await.expect("tls handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let request = request_text(method, path, cookie, body);
    tls.write_all(request.as_bytes()).await.unwrap();
    response(tls).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_the_console_speaks_https_with_a_secure_cookie() {
    let pki = onecity_tests::Pki::new("console test CA");
    let dir = tempfile::tempdir().unwrap();
    // A free port for `console_addr`, as an operator would name one.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server = TestServer::start_with(dir.path(), |c| {
        c.tls = pki.server_tls();
        c.console_addr = onecity::config::ConsoleAddr::At(addr);
    })
    .await
    .with_client_tls(pki.client(None));
    // The console is bound before the gRPC listener answers its first call.
    let case = server.submit_handed_off(sample_application()).await;
    let client = https_client(&pki.ca());

    let body = format!("token={}", tokens::TERMINAL);
    let (status, head, _) = https_call(&client, addr, "POST", "/signin", None, &body).await;
    assert_eq!(status, 303, "{head}");
    let cookie = header(&head, "set-cookie").expect("a session cookie");
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    let session = cookie
        .strip_prefix(&format!("{SESSION_COOKIE}="))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_owned();
    // The page calls the gRPC services in-process, with the clerk's token.
    let path = format!("/cases/{}", case.case_id);
    let (status, _, page) = https_call(&client, addr, "GET", &path, Some(&session), "").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("REFERRAL_STATE_ISSUED"), "{page}");
    // ...as that principal: another district's unit gets the 403 page.
    let body = format!("token={}", tokens::CIVIL_AFFAIRS_HEPING);
    let (_, head, _) = https_call(&client, addr, "POST", "/signin", None, &body).await;
    let heping = header(&head, "set-cookie")
        .and_then(|c| c.strip_prefix(&format!("{SESSION_COOKIE}=")))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_owned();
    let (status, _, _) = https_call(&client, addr, "GET", &path, Some(&heping), "").await;
    assert_eq!(status, 403);

    // Plain HTTP to the console's port gets no HTTP answer.
    let mut plain = send(addr, "GET", "/", None, "").await;
    let mut raw = Vec::new();
    let _ = plain.read_to_end(&mut raw).await;
    assert!(
        !raw.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    server.stop().await;
}
