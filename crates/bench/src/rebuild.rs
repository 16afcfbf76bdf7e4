//! `rebuild`: cold start of a server over a log of N cases.
//!
//! 1. The log is written directly through `SledLog` (no gRPC: this is set-up, not the
//!    measurement), with exactly the commits the services write for a case —
//!    `ApplicationSubmitted`, `EligibilityAssessed` (the real rules' output), then
//!    `ReferralIssued`×k in one commit, with the services' commit ids, actors and
//!    causation ids — from many concurrent tasks so group commit batches them. The
//!    workers' checkpoints are saved at the head, as a server that had processed
//!    everything would have left them.
//! 2. A server is started on that data dir as a child process (this binary re-executed
//!    as `serve-child`), so its start-up and peak RSS are its own.
//! 3. Measured from the spawn: the first `GetCase` of the last case that answers with
//!    every referral, and the first `ListReferrals` (admin) that includes the last case's
//!    referral (the department inbox is replayed from the log on start). Peak RSS is the
//!    child's `VmHWM`.
//! 4. Ceiling, same run: reading every event of the same log once, in-process.

use onecity_domain::rfc3339;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use onecity_domain::events::CaseEvent;
use onecity_domain::{ids, Partition};
use onecity_eventlog::{EventLog, Expected, NewEvent};
use onecity_eventlog_sled::{SledConfig, SledLog};
use onecity_proto::v1 as pb;
use pb::handoff_service_client::HandoffServiceClient;
use pb::intake_service_client::IntakeServiceClient;
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::time::Instant;
use uuid::Uuid;

use crate::client::{Conns, Progress, Window};
use crate::household::{Household, Pool};
use crate::scenarios::tokens;
use crate::stats::{Cell, Samples};

/// The demo terminal that "submitted" every generated case.
const TERMINAL_ID: &str = "T-120103-01";
const STREET_OFFICE: &str = "Youyi Road street office";

/// A household's commits that do not depend on the case: encoded once, reused by every
/// case generated from the household.
struct Template {
    application: pb::Application,
    assessed_payload: Vec<u8>,
    /// Referred programmes: the domain programme (for the referral id), its assessment
    /// and its deadline in days.
    referred: Vec<(onecity_domain::Programme, pb::Assessment, i64)>,
}

impl Template {
    fn new(household: &Household, catalogue: &onecity_eligibility::Catalogue) -> Self {
        // As the assessment worker writes them: the stored form.
        let assessments: Vec<pb::Assessment> = household.lean.iter().map(Into::into).collect();
        let assessed_payload = CaseEvent::EligibilityAssessed(pb::EligibilityAssessed {
            assessments: assessments.clone(),
            policy_version: household.policy_version.clone(),
        })
        .encode();
        let referred = household
            .lean
            .iter()
            .zip(assessments)
            .filter(|(a, _)| a.outcome.is_referred())
            .map(|(a, p)| {
                (
                    a.programme,
                    p,
                    i64::from(catalogue.deadline_days(a.programme)),
                )
            })
            .collect();
        Template {
            application: (&household.validated).into(),
            assessed_payload,
            referred,
        }
    }
}

/// Writes one case the way intake, the assessment worker and the handoff worker do, its
/// members the people of `region` ([`crate::household::with_region`]).
async fn write_case(log: &SledLog, t: &Template, region: u64) -> anyhow::Result<()> {
    let mut application = t.application.clone();
    crate::household::with_region(&mut application, region);
    let case_id = Uuid::now_v7();
    let request_id = Uuid::now_v7().to_string();
    let now = chrono::Utc::now();
    let submitted = CaseEvent::ApplicationSubmitted(pb::ApplicationSubmitted {
        application: Some(application),
        terminal_id: TERMINAL_ID.into(),
        street_office: STREET_OFFICE.into(),
        request_id: request_id.clone(),
        submitted_at: rfc3339(now),
        duplicate_override_reason: String::new(),
    });
    let submit_event = NewEvent::new(
        submitted.event_type(),
        format!("terminal:{TERMINAL_ID}"),
        submitted.encode(),
    )
    .caused_by(request_id.as_str());
    let submit_event_id = submit_event.event_id;
    log.append(
        case_id,
        Expected::NoStream,
        vec![submit_event],
        ids::submit_commit(TERMINAL_ID, &request_id),
    )
    .await?;

    let assess_event = NewEvent::new(
        onecity_domain::events::ELIGIBILITY_ASSESSED,
        onecity_assessment::ACTOR,
        t.assessed_payload.clone(),
    )
    .caused_by(submit_event_id.to_string());
    let assess_event_id = assess_event.event_id;
    log.append(
        case_id,
        Expected::Exact(1),
        vec![assess_event],
        ids::assess_commit(case_id),
    )
    .await?;

    let issued_at = rfc3339(chrono::Utc::now());
    let referrals: Vec<NewEvent> = t
        .referred
        .iter()
        .map(|(programme, p, days)| {
            let event = CaseEvent::ReferralIssued(pb::Referral {
                referral_id: ids::referral_id(case_id, *programme).to_string(),
                case_id: case_id.to_string(),
                programme: p.programme,
                department_unit: p.department_unit.clone(),
                state: pb::ReferralState::Issued as i32,
                due_at: rfc3339(now + chrono::TimeDelta::days(*days)),
                outcome: p.outcome,
                assessed_amount_fen: p.amount_fen,
                decided_amount_fen: 0,
                note: String::new(),
                issued_at: issued_at.clone(),
                policy_version: p.policy_version.clone(),
                // The rebuild measures reading, not the linkage: no basis.
                ..Default::default()
            });
            NewEvent::new(event.event_type(), onecity_handoff::ACTOR, event.encode())
                .caused_by(assess_event_id.to_string())
        })
        .collect();
    log.append(
        case_id,
        Expected::Exact(2),
        referrals,
        ids::handoff_commit(case_id),
    )
    .await?;
    Ok(())
}

/// The household and region of generated case `i`: every case of the log names its own
/// people (unique as long as the pool's households do not share a member's birth date and
/// sequence number), as in a city, so a `FindCases` answers one case, not hundreds.
fn case_people(i: u64, households: usize) -> (usize, u64) {
    let n = households as u64;
    ((i % n) as usize, i / n)
}

/// What the generated log ends with: the last case and what a correct server says of it.
#[derive(Debug, Clone)]
pub(crate) struct LastCase {
    case_id: String,
    version: u64,
    referral_ids: Vec<String>,
    first_referral_position: u64,
    /// A member of the last case, for the person index's readiness.
    id_number: String,
}

/// Generates the log in `dir` and returns its last case and the number of events.
pub(crate) async fn generate(
    dir: &Path,
    pool: &Pool,
    cases: u64,
    concurrency: usize,
    progress: &Progress,
) -> anyhow::Result<(LastCase, u64)> {
    let log = Arc::new(SledLog::open(dir, SledConfig::default())?);
    let catalogue = onecity_eligibility::Catalogue::embedded();
    let templates: Arc<Vec<Template>> = Arc::new(
        pool.households
            .iter()
            .map(|h| Template::new(h, &catalogue))
            .collect(),
    );
    let next = Arc::new(AtomicU64::new(0));
    let bar = progress.count("rebuild: writing the log", cases);
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (log, templates, next, bar) = (
                Arc::clone(&log),
                Arc::clone(&templates),
                Arc::clone(&next),
                bar.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= cases {
                        return anyhow::Ok(());
                    }
                    let (household, region) = case_people(i, templates.len());
                    write_case(&log, &templates[household], region).await?;
                    bar.inc(1);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.context("writer task")??;
    }
    let head = log.head().await?;
    // A server that had processed all of this would have checkpointed at the head.
    let single = Partition::default();
    log.save_checkpoint(&onecity_assessment::Assessor::consumer_name(&single), head)
        .await?;
    log.save_checkpoint(
        &onecity_handoff::HandoffWorker::consumer_name(&single),
        head,
    )
    .await?;
    let last = log
        .read_all(head, 1)
        .await?
        .pop()
        .context("generated log is empty")?;
    let events = log.read_case_all(last.case_id).await?;
    let mut referral_ids = Vec::new();
    let mut first_referral_position = 0;
    let mut id_number = String::new();
    for e in &events {
        match CaseEvent::decode(&e.event_type, &e.payload)? {
            Some(CaseEvent::ReferralIssued(r)) => {
                if first_referral_position == 0 {
                    first_referral_position = e.position;
                }
                referral_ids.push(r.referral_id);
            }
            Some(CaseEvent::ApplicationSubmitted(s)) => {
                id_number = s
                    .application
                    .and_then(|a| a.members.into_iter().next())
                    .map(|m| m.id_number)
                    .unwrap_or_default();
            }
            _ => {}
        }
    }
    let last = LastCase {
        case_id: last.case_id.to_string(),
        version: events.len() as u64,
        referral_ids,
        first_referral_position,
        id_number,
    };
    log.shutdown();
    drop(log);
    Ok((last, head))
}

fn mib(bytes: u64) -> f64 {
    (bytes as f64 / 1048576.0).round()
}

/// Bytes under `dir`, recursively.
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// `VmHWM` (peak resident set) of a process, in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `VmRSS` (current resident set) of a process, in bytes.
fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU seconds (user + system) a process has used so far: with the wall time, says
/// whether start-up waits on the disk or computes.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    let t = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    // USER_HZ is 100 on Linux (see cpu.rs).
    Some((t(11)? + t(12)?) as f64 / 100.0)
}

/// Polls `GetCase` until the last case answers with all its referrals.
async fn until_get_case(
    url: &str,
    last: &LastCase,
    start: Instant,
    pid: u32,
) -> anyhow::Result<(Duration, Option<u64>)> {
    let conns = Conns::connect(url, 1).await?;
    let mut intake = IntakeServiceClient::new(conns.authed(0, tokens::TERMINAL));
    loop {
        let r = intake
            .get_case(pb::GetCaseRequest {
                case_id: last.case_id.clone(),
            })
            .await;
        if let Ok(r) = r {
            if let Some(case) = r.into_inner().case {
                let mut got: Vec<String> = case
                    .referrals
                    .iter()
                    .map(|r| r.referral_id.clone())
                    .collect();
                got.sort();
                let mut want = last.referral_ids.clone();
                want.sort();
                if case.version == last.version && got == want {
                    return Ok((start.elapsed(), rss(pid)));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls `ListReferrals` (admin) until the page after the last case's first referral
/// holds it. The page token is an issue position, so this asks for exactly that page
/// instead of paging through every referral in the city.
async fn until_listed(url: &str, last: &LastCase, start: Instant) -> anyhow::Result<Duration> {
    let conns = Conns::connect(url, 1).await?;
    let mut handoff = HandoffServiceClient::new(conns.authed(0, tokens::ADMIN));
    loop {
        let r = handoff
            .list_referrals(pb::ListReferralsRequest {
                state: 0,
                page_size: 50,
                page_token: (last.first_referral_position - 1).to_string(),
                ..Default::default()
            })
            .await;
        if let Ok(r) = r {
            if r.into_inner()
                .referrals
                .iter()
                .any(|r| Some(&r.referral_id) == last.referral_ids.first())
            {
                return Ok(start.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs the scenario over `cases` cases.
///
/// With `find` (concurrency and window), the child also answers `find-cases`: `FindCases`
/// by the members of random cases of the log, once its person index holds the last case.
pub async fn rebuild(
    pool: &Pool,
    cases: u64,
    concurrency: usize,
    timeout: Duration,
    find: Option<(usize, Window)>,
    progress: &Progress,
) -> anyhow::Result<(Cell, Vec<Cell>)> {
    let tmp = tempfile::tempdir().context("temp dir")?;
    let log_dir = tmp.path().join("log");
    let gen_start = Instant::now();
    let (last, events) = generate(&log_dir, pool, cases, concurrency, progress).await?;
    let generate_s = gen_start.elapsed().as_secs_f64();
    let log_bytes = dir_bytes(&log_dir);
    progress.note(&format!(
        "rebuild: wrote {cases} cases ({events} events, {:.0} MiB on disk) in {generate_s:.1} s",
        log_bytes as f64 / 1048576.0
    ));

    progress.message("rebuild: cold start of a child server");
    let find = find.map(|(c, window)| FindPlan {
        concurrency: c,
        window,
        id_numbers: sample_people(pool, cases, FIND_SAMPLE),
    });
    let child = cold_start(&log_dir, &last, timeout, find.as_ref(), progress).await?;
    let ready = child.ready;
    let mut found: Vec<Cell> = child.find.into_iter().collect();
    if let Some(plan) = &find {
        found.push(find_unrecorded(&log_dir, &last, timeout, plan, progress).await?);
    }

    progress.message("rebuild: ceiling (read every event once)");
    let scan_start = Instant::now();
    let scanned = scan(&log_dir).await?;
    let scan = scan_start.elapsed();

    let mut cell = Cell::new("rebuild", None, cases as usize, ready, Samples::default());
    cell.ceiling = Some((
        "read every event once".into(),
        cases as f64 / scan.as_secs_f64().max(1e-9),
    ));
    let s = |d: Duration| (d.as_secs_f64() * 1000.0).round() / 1000.0;
    for (k, v) in [
        ("cases", json!(cases)),
        ("events", json!(events)),
        ("scanned_events", json!(scanned)),
        ("log_mib", json!((log_bytes as f64 / 1048576.0).round())),
        ("generate_s", json!((generate_s * 10.0).round() / 10.0)),
        ("get_case_s", json!(s(child.get_case))),
        ("list_referrals_s", json!(s(child.listed))),
        ("ready_s", json!(s(ready))),
        ("scan_s", json!(s(scan))),
        ("peak_rss_mib", json!(child.peak_rss.map(mib))),
        ("rss_at_get_case_mib", json!(child.rss_at_get_case.map(mib))),
        ("child_cpu_s", json!(child.cpu_s)),
    ] {
        cell.extra.insert(k.into(), v);
    }
    Ok((cell, found))
}

/// How many distinct people the `find-cases` cell asks for, drawn from the whole log.
const FIND_SAMPLE: u64 = 8192;

/// What the `find-cases` cell asks of the child.
struct FindPlan {
    concurrency: usize,
    window: Window,
    id_numbers: Vec<String>,
}

/// Identity numbers of members of `n` cases spread over the `cases` of the generated log.
fn sample_people(pool: &Pool, cases: u64, n: u64) -> Vec<String> {
    let mut rng = crate::household::Rng::new(0x0f1d_ca5e);
    (0..n.min(cases))
        .filter_map(|k| {
            let i = rng.next_u64() % cases;
            let (household, region) = case_people(i, pool.households.len());
            let mut application = pool.households[household].application.clone();
            crate::household::with_region(&mut application, region);
            let members = application.members.len() as u64;
            application
                .members
                .into_iter()
                .nth((k % members.max(1)) as usize)
                .map(|m| m.id_number)
        })
        .collect()
}

/// Polls `FindCases` until the person index holds the last case of the log.
async fn until_found(url: &str, last: &LastCase) -> anyhow::Result<()> {
    let conns = Conns::connect(url, 1).await?;
    let mut intake = IntakeServiceClient::new(conns.authed(0, tokens::TERMINAL));
    loop {
        let r = intake
            .find_cases(pb::FindCasesRequest {
                id_number: last.id_number.clone(),
            })
            .await;
        if let Ok(r) = r {
            if r.into_inner()
                .cases
                .iter()
                .any(|c| c.case_id == last.case_id)
            {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `find-cases`: `IntakeService.FindCases` by a terminal at `plan.concurrency`, each call a
/// member of a random case of the log (each call also records its read durably, unless
/// the child serves with `record_reads = false`). An answer without a case counts as an
/// error: every number asked for names one.
async fn find_cases(url: &str, plan: &FindPlan, scenario: &str) -> anyhow::Result<Cell> {
    let c = plan.concurrency;
    let conns = Conns::connect(url, crate::client::connections_for(c)).await?;
    let clients: Arc<Vec<_>> = Arc::new(
        (0..c)
            .map(|t| IntakeServiceClient::new(conns.authed(t, tokens::TERMINAL)))
            .collect(),
    );
    let ids: Arc<Vec<String>> = Arc::new(plan.id_numbers.clone());
    let run = crate::client::closed_loop(c, plan.window, move |t, i| {
        let mut client = clients[t].clone();
        let id_number = ids[(crate::scenarios::nth(t, i) % ids.len() as u64) as usize].clone();
        async move {
            let found = client
                .find_cases(pb::FindCasesRequest { id_number })
                .await?
                .into_inner();
            if found.cases.is_empty() {
                return Err(tonic::Status::not_found("a generated person has no case"));
            }
            Ok(())
        }
    })
    .await;
    Ok(crate::scenarios::closed_cell(scenario, c, plan.window, run))
}

/// Starts the child on `log_dir` and measures it until it is ready.
async fn cold_start(
    log_dir: &Path,
    last: &LastCase,
    timeout: Duration,
    find: Option<&FindPlan>,
    progress: &Progress,
) -> anyhow::Result<ColdStart> {
    let start = Instant::now();
    let (child, pid, url) = spawn_child(log_dir, false, timeout).await?;
    let measured = tokio::time::timeout(timeout, async {
        tokio::try_join!(
            until_get_case(&url, last, start, pid),
            until_listed(&url, last, start)
        )
    })
    .await
    .context("child server did not become ready in time")??;
    let ((get_case, rss_at_get_case), listed) = measured;
    let ready = get_case.max(listed);
    let peak = peak_rss(pid);
    let cpu = cpu_secs(pid);
    let find = match find {
        Some(plan) => {
            progress.message("find-cases: waiting for the person index");
            tokio::time::timeout(timeout, until_found(&url, last))
                .await
                .context("the child's person index did not reach the last case in time")??;
            progress.message("find-cases");
            Some(find_cases(&url, plan, "find-cases").await?)
        }
        None => None,
    };
    stop_child(child).await;
    Ok(ColdStart {
        ready,
        get_case,
        listed,
        peak_rss: peak,
        rss_at_get_case,
        cpu_s: cpu,
        find,
    })
}

/// `find-cases-unrecorded`: `find-cases` against a second child on the same log serving
/// with `record_reads = false`, once its person index holds the last case: the same calls
/// without the durable access record, to show what the record costs.
async fn find_unrecorded(
    log_dir: &Path,
    last: &LastCase,
    timeout: Duration,
    plan: &FindPlan,
    progress: &Progress,
) -> anyhow::Result<Cell> {
    progress.message("find-cases-unrecorded: waiting for a second child's person index");
    let (child, _pid, url) = spawn_child(log_dir, true, timeout).await?;
    tokio::time::timeout(timeout, until_found(&url, last))
        .await
        .context("the second child's person index did not reach the last case in time")??;
    progress.message("find-cases-unrecorded");
    let cell = find_cases(&url, plan, "find-cases-unrecorded").await;
    stop_child(child).await;
    cell
}

/// Starts `serve-child` on `log_dir`; returns it, its pid and the URL it reported.
async fn spawn_child(
    log_dir: &Path,
    unrecorded_reads: bool,
    timeout: Duration,
) -> anyhow::Result<(tokio::process::Child, u32, String)> {
    let exe = std::env::current_exe().context("own executable")?;
    let mut command = tokio::process::Command::new(exe);
    command.arg("serve-child").arg("--log").arg(log_dir);
    if unrecorded_reads {
        command.arg("--unrecorded-reads");
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("start the child server")?;
    let pid = child.id().context("child pid")?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let url = tokio::time::timeout(timeout, lines.next_line())
        .await
        .context("child did not report its address in time")??
        .and_then(|l| l.strip_prefix("LISTENING ").map(str::to_owned))
        .context("child did not report its address")?;
    Ok((child, pid, url))
}

/// Stops a child: closing its stdin asks it to shut down gracefully (it releases the sled
/// lock, which the next child on the log needs); killed after a minute.
async fn stop_child(mut child: tokio::process::Child) {
    drop(child.stdin.take());
    if tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .is_err()
    {
        child.kill().await.ok();
    }
}

/// What the cold start measured.
#[derive(Debug)]
struct ColdStart {
    ready: Duration,
    get_case: Duration,
    listed: Duration,
    peak_rss: Option<u64>,
    rss_at_get_case: Option<u64>,
    cpu_s: Option<f64>,
    /// The `find-cases` cell, when asked for.
    find: Option<Cell>,
}

/// The ceiling: every event read (and decoded as a `RecordedEvent`) once, in position order.
async fn scan(log_dir: &Path) -> anyhow::Result<u64> {
    let log = SledLog::open(log_dir, SledConfig::default())?;
    let head = log.head().await?;
    let mut from = 1;
    let mut n = 0u64;
    while from <= head {
        let page = log.read_all(from, onecity_eventlog::MAX_READ_LIMIT).await?;
        let Some(last) = page.last() else { break };
        from = last.position + 1;
        n += page.len() as u64;
    }
    log.shutdown();
    Ok(n)
}

/// `serve-child`: serves the log at `log` on a loopback port, prints `LISTENING <url>` on
/// stdout, and shuts down gracefully when stdin closes (the parent's exit closes it too).
pub fn serve_child(log: PathBuf, unrecorded_reads: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let config = onecity::config::Config {
            data_dir: log.parent().map_or_else(|| log.clone(), Path::to_path_buf),
            log: Some(onecity::config::LogSpec::Sled(log)),
            metrics_addr: onecity::config::MetricsAddr::OFF,
            console_addr: onecity::config::ConsoleAddr::Off,
            record_reads: !unrecorded_reads,
            ..onecity::config::Config::default()
        };
        {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            writeln!(out, "LISTENING {url}")?;
            out.flush()?;
        }
        // A plain thread waits for EOF on stdin (blocking reads have no place on the runtime).
        let (eof_tx, eof) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            let _ = eof_tx.send(());
        });
        onecity::server::run(listener, config, async {
            let _ = eof.await;
        })
        .await
    })
}
