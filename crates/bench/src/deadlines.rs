//! `deadlines`: the deadline worker over a log of many open referrals.
//!
//! 1. Set-up (not measured): `--referrals` open referrals are written directly to a fresh
//!    `SledLog`, eight per case in one `ReferralIssued` commit as the handoff writes them,
//!    from many tasks so group commit batches them. Their deadlines are spread over 100
//!    days from their issue, so each simulated day 1 % of them falls due.
//! 2. Cold start: a `DeadlineWorker` over that log with a manual clock, in this process;
//!    measured: the time until it reports ready (its state rebuilt from the log) and the
//!    growth of this process's resident set across the rebuild (its state).
//! 3. One day's tick: the clock moves past the first day's deadlines; measured: the time
//!    until every one of them has its `ReferralOverdue` appended (each also gets its
//!    `ReferralDueSoon` in the same tick, written first).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use onecity_domain::events::{CaseEvent, REFERRAL_OVERDUE};
use onecity_domain::{ids, Programme};
use onecity_eventlog::{EventLog, Expected, NewEvent};
use onecity_eventlog_sled::{SledConfig, SledLog};
use onecity_handoff::{DeadlinePolicy, DeadlineWorker};
use onecity_proto::v1 as pb;
use onecity_service::clock::ManualClock;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const PER_CASE: usize = 8;
const SPREAD_DAYS: usize = 100;
const WRITERS: usize = 64;

/// Runs the cell and prints its JSON line.
pub async fn deadlines(referrals: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log: Arc<dyn EventLog> = Arc::new(SledLog::open(
        dir.path().join("log"),
        SledConfig::default(),
    )?);
    let start = Utc::now();
    let written = Instant::now();
    let total = write_open_referrals(&log, referrals, start).await?;
    let write_secs = written.elapsed().as_secs_f64();

    // Issued at `start` and due 1..=100 days later: at `start` nothing is due; a day on,
    // the first day's referrals are due soon and overdue (two events each) and no other
    // referral's due-soon instant (80 % of at least two days) has come.
    let clock = ManualClock::new(start);
    let worker = DeadlineWorker::new(
        Arc::clone(&log),
        Arc::new(clock.clone()),
        DeadlinePolicy {
            escalation_days: 5,
            tick: Duration::from_millis(50),
        },
    );
    let rss_before = rss().context("no VmRSS")?;
    let stop = CancellationToken::new();
    let cold = Instant::now();
    let running = tokio::spawn(worker.clone().run(stop.clone()));
    while !worker.is_ready() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ready_secs = cold.elapsed().as_secs_f64();
    let rss_after = rss().context("no VmRSS")?;
    let open = worker.open_referrals();

    let head = log.head().await?;
    clock.set(start + TimeDelta::days(1) + TimeDelta::seconds(1));
    let tick = Instant::now();
    let due_today = total.div_ceil(SPREAD_DAYS);
    let mut overdue = 0;
    let mut from = head + 1;
    while overdue < due_today {
        let page = log.read_all(from, onecity_eventlog::MAX_READ_LIMIT).await?;
        if page.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        from = page.last().map_or(from, |e| e.position + 1);
        overdue += page
            .iter()
            .filter(|e| e.event_type == REFERRAL_OVERDUE)
            .count();
    }
    let tick_secs = tick.elapsed().as_secs_f64();
    stop.cancel();
    running.await?;
    let line = json!({
        "scenario": "deadlines",
        "referrals": total,
        "open_in_worker": open,
        "setup_write_s": write_secs,
        "ready_s": ready_secs,
        "state_rss_mib": (rss_after.saturating_sub(rss_before)) as f64 / 1_048_576.0,
        "process_rss_mib": rss_after as f64 / 1_048_576.0,
        "due_in_day": due_today,
        "overdue_appended": overdue,
        "tick_s": tick_secs,
        "overdue_per_s": overdue as f64 / tick_secs,
    });
    println!("{line}");
    Ok(())
}

/// Writes `referrals` (rounded up to whole cases) open referrals of `civil-affairs@120103`
/// directly to `log`, eight per case in one `ReferralIssued` commit as the handoff writes
/// them, from many tasks so group commit batches them; issued at `start`, due 1..=100 days
/// later (each day 1 % of them). Returns how many it wrote.
pub async fn write_open_referrals(
    log: &Arc<dyn EventLog>,
    referrals: usize,
    start: DateTime<Utc>,
) -> anyhow::Result<usize> {
    let cases = referrals.div_ceil(PER_CASE);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let (log, next) = (Arc::clone(log), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= cases {
                    return anyhow::Ok(());
                }
                let case_id = Uuid::from_u128(0x0de1_u128 << 112 | i as u128);
                let events = Programme::ALL
                    .iter()
                    .take(PER_CASE)
                    .enumerate()
                    .map(|(k, p)| {
                        let n = i * PER_CASE + k;
                        // Day d+1 holds the referrals falling due on the d-th simulated day.
                        let due = start + TimeDelta::days((n % SPREAD_DAYS) as i64 + 1);
                        let r = pb::Referral {
                            referral_id: ids::referral_id(case_id, *p).to_string(),
                            case_id: case_id.to_string(),
                            programme: p.to_proto(),
                            department_unit: "civil-affairs@120103".into(),
                            state: pb::ReferralState::Issued as i32,
                            due_at: onecity_domain::rfc3339(due),
                            issued_at: onecity_domain::rfc3339(start),
                            ..Default::default()
                        };
                        let e = CaseEvent::ReferralIssued(r);
                        NewEvent::new(e.event_type(), onecity_handoff::ACTOR, e.encode())
                    })
                    .collect();
                log.append(
                    case_id,
                    Expected::NoStream,
                    events,
                    ids::handoff_commit(case_id),
                )
                .await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(cases * PER_CASE)
}

fn rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
