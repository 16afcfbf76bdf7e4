//! The gRPC scenarios and their ceilings: `noop`, `durable-noop`, `submit`, `screen` and
//! `route`. Each returns one [`Cell`]; the caller attaches the ceiling.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use onecity_proto::v1 as pb;
use pb::eligibility_service_client::EligibilityServiceClient;
use pb::event_log_service_client::EventLogServiceClient;
use pb::handoff_service_client::HandoffServiceClient;
use pb::intake_service_client::IntakeServiceClient;
use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use uuid::Uuid;

use crate::client::{closed_loop, connections_for, cpu_over, Authed, Conns, Progress, Run, Window};
use crate::household::Pool;
use crate::stats::{code_name, Cell, Samples};

/// Demo tokens (see `onecity::config::demo_tokens`).
pub mod tokens {
    /// Terminal `T-120103-01` (Hexi).
    pub const TERMINAL: &str = "demo-terminal-120103";
    /// Administrator.
    pub const ADMIN: &str = "demo-admin";
    /// Service principal (the only kind, with admin, the event log service accepts).
    pub const SERVICE: &str = "demo-service";
}

/// How long a submitting task pauses after `RESOURCE_EXHAUSTED` (intake's backpressure)
/// before its next call, as a terminal following the retry hint would: refused calls are
/// counted by code, and a client spinning on them would only take CPU from the workers.
pub const REFUSED_PAUSE: Duration = Duration::from_millis(100);

/// Submits `req`; after a refusal by backpressure, pauses for [`REFUSED_PAUSE`].
async fn submit_once(
    client: &mut IntakeServiceClient<Authed>,
    req: pb::SubmitApplicationRequest,
) -> Result<pb::SubmitApplicationResponse, tonic::Status> {
    match client.submit_application(req).await {
        Ok(r) => Ok(r.into_inner()),
        Err(s) => {
            if s.code() == tonic::Code::ResourceExhausted {
                tokio::time::sleep(REFUSED_PAUSE).await;
            }
            Err(s)
        }
    }
}

/// Payload of a `durable-noop` append: the size the eventlog bench uses too.
pub const NOOP_PAYLOAD: usize = 128;

/// What every scenario needs.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// `http://host:port` of the server under test.
    pub url: String,
    /// Pre-generated households.
    pub pool: Arc<Pool>,
    /// Warm-up and measured window of each cell.
    pub window: Window,
    /// Longest wait for routed cases after a `route` cell's window (backlog drain).
    pub drain_limit: Duration,
    /// Progress display.
    pub progress: Progress,
}

pub(crate) fn closed_cell(scenario: &str, c: usize, window: Window, run: Run) -> Cell {
    let mut cell = Cell::new(scenario, Some(c), run.ok, window.measure, run.samples);
    cell.cpu = Some(run.cpu);
    cell
}

/// What a new client pays before its first answer: a new connection (TCP, and the TLS
/// handshake over `https://`) and one `Health/Check` on it, `n` times in sequence. The
/// latencies are the cell's figure; ops/s is just their inverse.
pub async fn connect(url: &str, n: usize) -> anyhow::Result<Cell> {
    let endpoint = crate::client::endpoint(url)?;
    // The server is up (the first connection may wait for it, and is not measured).
    drop(Conns::connect(url, 1).await?);
    let mut samples = Samples::default();
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let result = async {
            let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
            HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map_err(|s| code_name(s.code()))
        }
        .await;
        match result {
            Ok(_) => samples.latencies.push(t.elapsed()),
            Err(e) => samples.error(e),
        }
    }
    let scenario = if url.starts_with("https://") {
        "connect-tls"
    } else {
        "connect-plaintext"
    };
    let ok = samples.latencies.len();
    Ok(Cell::new(scenario, Some(1), ok, started.elapsed(), samples))
}

/// `grpc.health.v1.Health/Check`: the cheapest unary call the server answers. The token
/// is sent too (and ignored), so requests are the same size as the other scenarios' headers.
pub async fn noop(ctx: &Ctx, c: usize) -> anyhow::Result<Cell> {
    let conns = Conns::connect(&ctx.url, connections_for(c)).await?;
    let clients: Arc<Vec<_>> = Arc::new(
        (0..c)
            .map(|t| HealthClient::new(conns.authed(t, tokens::SERVICE)))
            .collect(),
    );
    let run = closed_loop(c, ctx.window, move |t, _| {
        let mut client = clients[t].clone();
        async move {
            client
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|_| ())
        }
    })
    .await;
    Ok(closed_cell("noop", c, ctx.window, run))
}

/// One durable 128-byte append through `EventLogService.Append` on a fresh case with a
/// fresh commit id (`EXPECTED_KIND_ANY`): the same log, group commit and fsync that every
/// onecity write goes through, with no domain work. No durable write path can beat it.
pub async fn durable_noop(ctx: &Ctx, c: usize) -> anyhow::Result<Cell> {
    let conns = Conns::connect(&ctx.url, connections_for(c)).await?;
    let clients: Arc<Vec<_>> = Arc::new(
        (0..c)
            .map(|t| EventLogServiceClient::new(conns.authed(t, tokens::SERVICE)))
            .collect(),
    );
    let run = closed_loop(c, ctx.window, move |t, _| {
        let mut client = clients[t].clone();
        async move {
            client
                .append(pb::AppendRequest {
                    case_id: Uuid::now_v7().to_string(),
                    expected: Some(pb::ExpectedVersion {
                        kind: pb::ExpectedKind::Any as i32,
                        version: 0,
                    }),
                    events: vec![pb::NewEvent {
                        metadata: Default::default(),
                        event_id: Uuid::now_v7().to_string(),
                        event_type: "onecity.bench.DurableNoop".into(),
                        actor: "service:demo-service".into(),
                        causation_id: String::new(),
                        payload: vec![0xa5; NOOP_PAYLOAD],
                    }],
                    commit_id: Uuid::now_v7().to_string(),
                })
                .await
                .map(|_| ())
        }
    })
    .await;
    Ok(closed_cell("durable-noop", c, ctx.window, run))
}

/// A submission of the pool's household `n`, its members made people no other submission
/// of this run names (the next number of a process-wide sequence as their region:
/// [`crate::household::with_region`]).
fn submission(pool: &Pool, n: u64) -> pb::SubmitApplicationRequest {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let round = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut application = pool.get(n).application.clone();
    crate::household::with_region(&mut application, round);
    pb::SubmitApplicationRequest {
        request_id: Uuid::now_v7().to_string(),
        application: Some(application),
        duplicate_override_reason: String::new(),
    }
}

/// A distinct household sequence per task, so concurrent tasks do not all send the
/// same household at the same moment.
pub(crate) fn nth(t: usize, i: u64) -> u64 {
    (t as u64).wrapping_mul(7_919).wrapping_add(i)
}

/// `SubmitApplication` back to back: validation, one durable `ApplicationSubmitted`.
/// Once the workers fall behind by more than intake's bound, intake refuses
/// (`RESOURCE_EXHAUSTED`, counted in the errors) and the accepted rate is what the
/// workers route.
pub async fn submit(ctx: &Ctx, c: usize) -> anyhow::Result<Cell> {
    let conns = Conns::connect(&ctx.url, connections_for(c)).await?;
    let clients: Arc<Vec<_>> = Arc::new(
        (0..c)
            .map(|t| IntakeServiceClient::new(conns.authed(t, tokens::TERMINAL)))
            .collect(),
    );
    let pool = Arc::clone(&ctx.pool);
    let run = closed_loop(c, ctx.window, move |t, i| {
        let mut client = clients[t].clone();
        let req = submission(&pool, nth(t, i));
        async move { submit_once(&mut client, req).await.map(|_| ()) }
    })
    .await;
    Ok(closed_cell("submit", c, ctx.window, run))
}

/// How many cases the `get-case` cells read, submitted before the window.
const GET_CASE_CASES: u64 = 256;

/// `IntakeService.GetCase` by the Hexi terminal, cycling over cases submitted before the
/// window: the fold of a case stream, the view, and (when the server records reads, as it
/// does by default) one durable access record per call. Named `scenario`, so the same cell
/// against a server with `record_reads = false` can stand beside it.
pub async fn get_case(ctx: &Ctx, c: usize, scenario: &str) -> anyhow::Result<Cell> {
    let conns = Conns::connect(&ctx.url, connections_for(c)).await?;
    let mut intake = IntakeServiceClient::new(conns.authed(0, tokens::TERMINAL));
    let mut cases = Vec::new();
    for n in 0..GET_CASE_CASES {
        let r = intake
            .submit_application(submission(&ctx.pool, n))
            .await
            .map_err(|s| anyhow::anyhow!("submit a case to read: {s}"))?;
        cases.push(r.into_inner().case_id);
    }
    let cases = Arc::new(cases);
    let clients: Arc<Vec<_>> = Arc::new(
        (0..c)
            .map(|t| IntakeServiceClient::new(conns.authed(t, tokens::TERMINAL)))
            .collect(),
    );
    let run = closed_loop(c, ctx.window, move |t, i| {
        let mut client = clients[t].clone();
        let case_id = cases[(nth(t, i) % cases.len() as u64) as usize].clone();
        async move {
            client
                .get_case(pb::GetCaseRequest { case_id })
                .await
                .map(|_| ())
        }
    })
    .await;
    Ok(closed_cell(scenario, c, ctx.window, run))
}

/// `EligibilityService.Screen`: validation and all twelve rules, nothing written; in the
/// default view (BASIC: outcomes, amounts, summaries) or, with `full`, every rule's
/// explanation too (cell `screen-full`).
pub async fn screen(ctx: &Ctx, c: usize, full: bool) -> anyhow::Result<Cell> {
    let conns = Conns::connect(&ctx.url, connections_for(c)).await?;
    let clients: Arc<Vec<_>> = Arc::new(
        (0..c)
            .map(|t| EligibilityServiceClient::new(conns.authed(t, tokens::TERMINAL)))
            .collect(),
    );
    let pool = Arc::clone(&ctx.pool);
    let run = closed_loop(c, ctx.window, move |t, i| {
        let mut client = clients[t].clone();
        let application = Some(pool.get(nth(t, i)).application.clone());
        let view = if full {
            pb::ScreenView::Full
        } else {
            pb::ScreenView::Unspecified
        };
        async move {
            client
                .screen(pb::ScreenRequest {
                    application,
                    view: view as i32,
                })
                .await
                .map(|_| ())
        }
    })
    .await;
    let name = if full { "screen-full" } else { "screen" };
    Ok(closed_cell(name, c, ctx.window, run))
}

/// The log's head (service token).
pub async fn head(url: &str) -> anyhow::Result<u64> {
    let conns = Conns::connect(url, 1).await?;
    let mut log = EventLogServiceClient::new(conns.authed(0, tokens::SERVICE));
    Ok(log
        .get_head(pb::GetHeadRequest {})
        .await?
        .into_inner()
        .position)
}

/// Waits until the server at `url` reports `SERVING` overall on `grpc.health.v1`: a
/// server listens before its log is open (answering `UNAVAILABLE` meanwhile), and a
/// JetStream log can take a while to reach.
pub async fn ready(url: &str, limit: Duration) -> anyhow::Result<()> {
    let conns = Conns::connect(url, 1).await?;
    let mut health = HealthClient::new(conns.channel(0));
    let watch = async {
        let mut updates = health
            .watch(HealthCheckRequest {
                service: String::new(),
            })
            .await?
            .into_inner();
        while let Some(update) = updates.message().await? {
            if update.status() == ServingStatus::Serving {
                return Ok(());
            }
        }
        anyhow::bail!("health watch of {url} ended before SERVING")
    };
    tokio::time::timeout(limit, watch)
        .await
        .with_context(|| format!("{url} not SERVING within {limit:?}"))?
}

/// Waits until the log's head has not moved for a while, i.e. the workers have finished
/// the previous cell's backlog and the next cell starts on a quiet server. Returns how
/// long that took: after a `submit` cell it is the time the workers needed to route what
/// intake accepted.
pub async fn quiesce(url: &str, limit: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let conns = Conns::connect(url, 1).await?;
    let mut log = EventLogServiceClient::new(conns.authed(0, tokens::SERVICE));
    let deadline = Instant::now() + limit;
    let mut last = u64::MAX;
    let mut still = 0;
    while Instant::now() < deadline && still < 6 {
        let h = log
            .get_head(pb::GetHeadRequest {})
            .await?
            .into_inner()
            .position;
        if h == last {
            still += 1;
        } else {
            still = 0;
            last = h;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The quiet period itself is not part of the settling time.
    Ok(start.elapsed().saturating_sub(Duration::from_millis(300)))
}

/// First arrival of a referral per case, as seen by an admin's `StreamReferrals`.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

/// Subscribes as admin from the current end of the log and records when the first
/// referral of each case arrives. A case's referrals are issued in one commit, so the
/// first one arriving means all of them are durable and visible to their departments.
async fn watch_referrals(url: &str) -> anyhow::Result<(Arrivals, tokio::task::JoinHandle<()>)> {
    let from = head(url).await?;
    let conns = Conns::connect(url, 1).await?;
    let mut handoff: HandoffServiceClient<Authed> =
        HandoffServiceClient::new(conns.authed(0, tokens::ADMIN));
    // The server subscribes before it answers, so nothing after `from` is missed.
    let mut stream = handoff
        .stream_referrals(pb::StreamReferralsRequest {
            after_cursor: from.to_string(),
        })
        .await?
        .into_inner();
    let arrivals: Arrivals = Arc::default();
    let a = Arc::clone(&arrivals);
    let task = tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            let now = Instant::now();
            if let Some(r) = msg.referral {
                a.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(r.case_id)
                    .or_insert(now);
            }
        }
    });
    Ok((arrivals, task))
}

/// A submitted case: its id, when it was due (open loop: the schedule; closed loop: the
/// call's start) and whether it falls in the measured window.
struct Sent {
    case_id: String,
    due: Instant,
    measured: bool,
}

/// Open-loop `route` at a fixed offered load: submissions are scheduled at `rate` per
/// second whatever the server does, and each case's end-to-end latency runs from its
/// scheduled time (so a stalled server cannot hide its queueing, "coordinated omission").
pub async fn route_open(ctx: &Ctx, rate: f64) -> anyhow::Result<Cell> {
    // Enough in flight for the highest offered rate even at latencies far above a healthy
    // server's; beyond that the server is not keeping up and the cell records
    // `client_backlog` instead of queueing without bound.
    const MAX_IN_FLIGHT: usize = 4096;
    let conns = Conns::connect(&ctx.url, 4).await?;
    let (arrivals, watcher) = watch_referrals(&ctx.url).await?;
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let errors: Arc<Mutex<Samples>> = Arc::default();
    let submit_lat: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + ctx.window.warmup;
    let end = measure_from + ctx.window.measure;
    let cpu = tokio::spawn(cpu_over(measure_from, end));
    let mut inflight = JoinSet::new();
    let interval = Duration::from_secs_f64(1.0 / rate);
    for i in 0u64.. {
        let due = start + interval.mul_f64(i as f64);
        if due >= end {
            break;
        }
        tokio::time::sleep_until(due).await;
        let measured = due >= measure_from;
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            if measured {
                errors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .error("client_backlog");
            }
            continue;
        };
        let mut client = IntakeServiceClient::new(conns.authed(i as usize, tokens::TERMINAL));
        let req = submission(&ctx.pool, i);
        let (sent, errors, submit_lat) = (
            Arc::clone(&sent),
            Arc::clone(&errors),
            Arc::clone(&submit_lat),
        );
        inflight.spawn(async move {
            let r = client.submit_application(req).await;
            drop(permit);
            match r {
                Ok(resp) => {
                    if measured {
                        submit_lat
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(due.elapsed());
                    }
                    sent.lock().unwrap_or_else(|p| p.into_inner()).push(Sent {
                        case_id: resp.into_inner().case_id,
                        due,
                        measured,
                    });
                }
                Err(s) if measured => errors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .error(code_name(s.code())),
                Err(_) => {}
            }
        });
    }
    while inflight.join_next().await.is_some() {}
    let cpu = cpu.await.expect("cpu sampler");
    let sent = std::mem::take(&mut *sent.lock().unwrap_or_else(|p| p.into_inner()));
    let errors = std::mem::take(&mut *errors.lock().unwrap_or_else(|p| p.into_inner()));
    let submit_lat = std::mem::take(&mut *submit_lat.lock().unwrap_or_else(|p| p.into_inner()));
    let mut cell = finish_route(ctx, sent, errors, &arrivals, measure_from, end).await;
    watcher.abort();
    cell.offered_per_s = Some(rate);
    cell.cpu = Some(cpu);
    let mut s = submit_lat;
    s.sort_unstable();
    cell.extra.insert(
        "submit_p99_ms".into(),
        json!(crate::stats::pct(&s, 0.99).map(|d| (d.as_secs_f64() * 1e6).round() / 1e3)),
    );
    Ok(cell)
}

/// Closed-loop `route` at saturation: `c` tasks submit back to back; the routed rate is
/// what the assessment and handoff workers sustain behind that intake.
pub async fn route_saturation(ctx: &Ctx, c: usize) -> anyhow::Result<Cell> {
    let conns = Conns::connect(&ctx.url, connections_for(c)).await?;
    let (arrivals, watcher) = watch_referrals(&ctx.url).await?;
    let start = Instant::now();
    let measure_from = start + ctx.window.warmup;
    let end = measure_from + ctx.window.measure;
    let cpu = tokio::spawn(cpu_over(measure_from, end));
    let tasks: Vec<_> = (0..c)
        .map(|t| {
            let mut client = IntakeServiceClient::new(conns.authed(t, tokens::TERMINAL));
            let pool = Arc::clone(&ctx.pool);
            tokio::spawn(async move {
                let mut sent = Vec::new();
                let mut samples = Samples::default();
                for i in 0u64.. {
                    let due = Instant::now();
                    if due >= end {
                        break;
                    }
                    let measured = due >= measure_from;
                    match submit_once(&mut client, submission(&pool, nth(t, i))).await {
                        Ok(r) => sent.push(Sent {
                            case_id: r.case_id,
                            due,
                            measured,
                        }),
                        Err(s) if measured => samples.error(code_name(s.code())),
                        Err(_) => {}
                    }
                }
                (sent, samples)
            })
        })
        .collect();
    let mut sent = Vec::new();
    let mut errors = Samples::default();
    for t in tasks {
        let (s, e) = t.await.expect("submit task");
        sent.extend(s);
        errors.merge(e);
    }
    let cpu = cpu.await.expect("cpu sampler");
    let mut cell = finish_route(ctx, sent, errors, &arrivals, measure_from, end).await;
    watcher.abort();
    cell.concurrency = Some(c);
    cell.cpu = Some(cpu);
    Ok(cell)
}

/// Waits for the routed cases (bounded), then builds the cell: throughput = referrals'
/// first arrivals inside the measured window per second (what the workers sustained);
/// latency = arrival − due, over the cases due inside the window, including those that
/// arrived during the drain.
async fn finish_route(
    ctx: &Ctx,
    sent: Vec<Sent>,
    mut samples: Samples,
    arrivals: &Arrivals,
    measure_from: Instant,
    end: Instant,
) -> Cell {
    ctx.progress.message("route: waiting for the backlog");
    let deadline = Instant::now() + ctx.drain_limit;
    // Only the cases still missing are checked again, and not too often: this runs beside
    // a server that is working through a backlog, on the same two cores.
    let mut missing: Vec<&str> = sent.iter().map(|s| s.case_id.as_str()).collect();
    loop {
        {
            let a = arrivals.lock().unwrap_or_else(|p| p.into_inner());
            missing.retain(|id| !a.contains_key(*id));
        }
        if missing.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let a = arrivals.lock().unwrap_or_else(|p| p.into_inner());
    let mut routed_in_window = 0usize;
    let mut measured = 0usize;
    let mut last_arrival = end;
    for s in &sent {
        let arrived = a.get(&s.case_id).copied();
        if let Some(t) = arrived {
            if t >= measure_from && t < end {
                routed_in_window += 1;
            }
            last_arrival = last_arrival.max(t);
        }
        if s.measured {
            measured += 1;
            match arrived {
                Some(t) => samples.latencies.push(t.saturating_duration_since(s.due)),
                None => samples.error("not_routed"),
            }
        }
    }
    let window = end.duration_since(measure_from);
    let mut cell = Cell::new("route", None, routed_in_window, window, samples);
    cell.extra.insert(
        "submitted_per_s".into(),
        json!(((measured as f64 / window.as_secs_f64()) * 10.0).round() / 10.0),
    );
    cell.extra.insert(
        "drain_s".into(),
        json!((last_arrival.duration_since(end).as_secs_f64() * 100.0).round() / 100.0),
    );
    cell
}
