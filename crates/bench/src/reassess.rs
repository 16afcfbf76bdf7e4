//! `reassess`: a new policy version reaches every active case.
//!
//! 1. Set-up (not measured): `--cases` cases written directly to a fresh `SledLog` as the
//!    services write them (the `rebuild` generator: submission, assessment under the
//!    shipped versions, referrals issued), so every case is open, hence active.
//! 2. The eligibility role's share of a server, in this process: the active cases
//!    projection rebuilt from the log (measured: `ready_s`) and a `PolicySweeper` with a
//!    manual clock, over the shipped versions plus `2027-01` (the 2026-07 parameters with
//!    a higher standard) taking effect on 1 January 2027.
//! 3. Measured: the policy impact report of `2027-01` before it takes effect (`impact_s`,
//!    over every active case, writing nothing).
//! 4. Measured: from the clock passing 00:00 Beijing on 1 January 2027 until every case
//!    is re-assessed, its `EligibilityReassessed` and referral effects appended (fsynced):
//!    cases per second, events and log bytes appended, and the peak resident set of this
//!    process over the sweep (its peak is reset after the set-up).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use onecity_assessment::{ActiveCases, Assessor, PolicySweeper};
use onecity_eligibility::{Catalogue, PolicyBook, PolicyVersion};
use onecity_eventlog::EventLog;
use onecity_eventlog_sled::{SledConfig, SledLog};
use onecity_service::clock::ManualClock;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::client::Progress;
use crate::household::Pool;

/// The version the bench lets take effect.
const NEW_VERSION: &str = "2027-01";
/// Its standard, fen per person per month (the 2026-07 example value is 111000).
const NEW_STANDARD: i64 = 125_000;
/// Tasks writing the set-up log.
const WRITERS: usize = 32;
/// Households the cases are drawn from.
const HOUSEHOLDS: usize = 4096;
/// Households are the same in every run.
const SEED: u64 = 0x0072_6561_7373_6573;

fn at(s: &str) -> anyhow::Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc))
}

/// The shipped versions and `2027-01`.
fn policies() -> anyhow::Result<PolicyBook> {
    let shipped = PolicyBook::embedded_default();
    let last = shipped.versions().last().context("no shipped version")?;
    let mut params = last.params().clone();
    params.dibao_standard_fen = NEW_STANDARD;
    let next = PolicyVersion::new(
        NEW_VERSION,
        chrono::NaiveDate::from_ymd_opt(2027, 1, 1).context("date")?,
        params,
        last.district_overrides().clone(),
    )?;
    let mut versions = shipped.versions().to_vec();
    versions.push(next);
    Ok(PolicyBook::from_versions(versions)?)
}

/// Runs the cell over `cases` cases (`batch` per sweep batch) and prints its JSON line.
pub async fn reassess(cases: u64, batch: usize) -> anyhow::Result<()> {
    let progress = Progress::new(1);
    let dir = tempfile::tempdir()?;
    let log_dir = dir.path().join("log");
    let pool = tokio::task::spawn_blocking(|| Pool::generate(HOUSEHOLDS, SEED)).await??;
    let written = Instant::now();
    let (_, events_before) =
        crate::rebuild::generate(&log_dir, &pool, cases, WRITERS, &progress).await?;
    let setup_s = written.elapsed().as_secs_f64();
    drop(pool);
    let bytes_before = crate::rebuild::dir_bytes(&log_dir);

    let sled = Arc::new(SledLog::open(&log_dir, SledConfig::default())?);
    let log: Arc<dyn EventLog> = sled.clone();
    let policies = Arc::new(policies()?);
    let clock = ManualClock::new(at("2026-12-31T12:00:00Z")?);
    onecity_assessment::check_in_force(log.as_ref(), &policies, clock_now(&clock)).await?;
    reset_peak_rss();
    let rss_before = rss().context("no VmRSS")?;
    let stop = CancellationToken::new();
    let cold = Instant::now();
    let active = ActiveCases::start(Arc::clone(&log), &policies, stop.clone());
    active.wait_for(log.as_ref(), log.head().await?).await?;
    let ready_s = cold.elapsed().as_secs_f64();
    let rss_ready = rss().context("no VmRSS")?;
    let assessor = Assessor::new(
        Arc::clone(&log),
        Arc::clone(&policies),
        Arc::new(Catalogue::embedded()),
    );
    let sweeper = PolicySweeper::new(
        assessor,
        active,
        Arc::new(clock.clone()),
        Duration::from_millis(10),
    )
    .with_batch(batch);

    // What an admin runs first (`onecity policy impact`): the same cases re-assessed in
    // memory, nothing written.
    let impact_at = Instant::now();
    let impact = sweeper.impact(NEW_VERSION).await?;
    let impact_s = impact_at.elapsed().as_secs_f64();

    let head = log.head().await?;
    clock.set(at("2026-12-31T16:00:00Z")?);
    let swept_at = Instant::now();
    let mut reassessed = 0;
    loop {
        let s = sweeper.sweep().await?;
        reassessed += s.reassessed;
        if s.reassessed == 0 && s.waiting == 0 {
            break;
        }
    }
    let sweep_s = swept_at.elapsed().as_secs_f64();
    let appended = log.head().await? - head;
    stop.cancel();
    let peak = peak_rss().context("no VmHWM")?;
    drop(sweeper);
    sled.shutdown();
    let bytes_after = crate::rebuild::dir_bytes(&log_dir);
    let line = json!({
        "scenario": "reassess",
        "cases": cases,
        "events_before": events_before,
        "setup_write_s": (setup_s * 10.0).round() / 10.0,
        "ready_s": ready_s,
        "impact_s": impact_s,
        "impact_cases": impact.cases,
        "rss_before_mib": mib(rss_before),
        "projection_rss_mib": mib(rss_ready.saturating_sub(rss_before)),
        "reassessed": reassessed,
        "sweep_s": sweep_s,
        "cases_per_s": reassessed as f64 / sweep_s.max(1e-9),
        "events_appended": appended,
        "log_bytes_appended_mib": mib(bytes_after.saturating_sub(bytes_before)),
        "peak_rss_mib": mib(peak),
        "batch": batch,
    });
    println!("{line}");
    anyhow::ensure!(
        impact.cases == cases,
        "the impact report saw {} of {cases} cases",
        impact.cases
    );
    anyhow::ensure!(
        reassessed as u64 == cases,
        "{reassessed} of {cases} cases re-assessed"
    );
    Ok(())
}

fn clock_now(clock: &ManualClock) -> DateTime<Utc> {
    onecity_service::clock::Clock::now(clock)
}

fn mib(bytes: u64) -> f64 {
    (bytes as f64 / 1_048_576.0 * 10.0).round() / 10.0
}

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn rss() -> Option<u64> {
    status_kib("VmRSS:").map(|k| k * 1024)
}

fn peak_rss() -> Option<u64> {
    status_kib("VmHWM:").map(|k| k * 1024)
}

/// Resets this process's peak resident set (`VmHWM`) to its current one, so the peak
/// measured is the sweep's, not the set-up's.
fn reset_peak_rss() {
    if let Err(e) = std::fs::write(Path::new("/proc/self/clear_refs"), "5") {
        eprintln!("reassess: peak RSS not reset ({e}); it includes the set-up");
    }
}
