//! Durable-append benchmark of the sled log against the raw durable-write ceiling of the
//! same machine, measured in the same run.
//!
//! `cargo bench -p onecity-eventlog-sled --bench append` (add `-- --secs 10` for longer runs,
//! `-- --concurrency 64` for one level, e.g. under `perf record`).
//!
//! - `log`: `SledLog::append` of one 128-byte event, each task on its own case.
//! - `raw`: the same-sized record inserted into plain sled by a single writer thread that
//!   drains a queue, applies one batch, flushes once and `fdatasync`s exactly as the log
//!   does. No event log on sled can beat it, so `log / raw` is the figure to watch.
//! - `lag`: with a subscriber attached during the log run at concurrency 64, time from
//!   the start of an append to its delivery on the subscription.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use onecity_eventlog::{EventLog, Expected, Filter, NewEvent};
use onecity_eventlog_sled::raw::RawDurable;
use onecity_eventlog_sled::{SledConfig, SledLog};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

const PAYLOAD: usize = 128;

// The allocator the `onecity` binary ships with (crates/onecity/src/main.rs), for both the
// log and the raw reference: the log is measured as it runs in the server. (With glibc's
// malloc the writer thread spends much of its time in `malloc`/`free`.)
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Run {
    ops: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

async fn drive<F, Fut>(concurrency: usize, secs: f64, op: F) -> Run
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let op = Arc::clone(&op);
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let s = Instant::now();
                    op(t, i).await;
                    lat.push(s.elapsed());
                    i += 1;
                }
                lat
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    latencies.sort();
    Run {
        ops: latencies.len(),
        elapsed,
        latencies,
    }
}

async fn bench_log(
    concurrency: usize,
    secs: f64,
    with_subscriber: bool,
) -> (Run, Option<Vec<Duration>>) {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(SledLog::open(dir.path(), SledConfig::default()).unwrap());
    let lag = if with_subscriber {
        let mut sub = log.subscribe(1, Filter::all()).await.unwrap();
        Some(tokio::spawn(async move {
            let mut lags = Vec::new();
            while let Some(Ok(e)) = sub.next().await {
                let sent = u64::from_le_bytes(e.payload[..8].try_into().unwrap());
                lags.push(Duration::from_nanos(now_nanos().saturating_sub(sent)));
            }
            lags
        }))
    } else {
        None
    };
    let cases: Arc<Vec<Uuid>> = Arc::new((0..concurrency).map(|_| Uuid::now_v7()).collect());
    let l = Arc::clone(&log);
    let run = drive(concurrency, secs, move |t, _| {
        let l = Arc::clone(&l);
        let case = cases[t];
        async move {
            let mut payload = vec![0u8; PAYLOAD];
            payload[..8].copy_from_slice(&now_nanos().to_le_bytes());
            let ev = NewEvent::new("onecity.bench.Append", "bench", payload);
            l.append(case, Expected::Any, vec![ev], Uuid::now_v7())
                .await
                .unwrap();
        }
    })
    .await;
    log.shutdown();
    let lags = match lag {
        Some(h) => {
            let mut v = h.await.unwrap();
            v.sort();
            Some(v)
        }
        None => None,
    };
    (run, lags)
}

async fn bench_raw(concurrency: usize, secs: f64) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = RawDurable::open(dir.path()).unwrap();
    let (tx, mut rx) = mpsc::channel::<(Vec<u8>, oneshot::Sender<()>)>(4096);
    let writer = std::thread::spawn(move || {
        let mut key = 0u64;
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < 1024 {
                match rx.try_recv() {
                    Ok(x) => batch.push(x),
                    Err(_) => break,
                }
            }
            let records: Vec<(u64, Vec<u8>)> = batch
                .iter()
                .map(|(v, _)| {
                    key += 1;
                    (key, v.clone())
                })
                .collect();
            raw.write_batch(&records).unwrap();
            for (_, done) in batch {
                let _ = done.send(());
            }
        }
    });
    let run = drive(concurrency, secs, move |_, _| {
        let tx = tx.clone();
        async move {
            let (done, wait) = oneshot::channel();
            tx.send((vec![7u8; PAYLOAD], done)).await.unwrap();
            wait.await.unwrap();
        }
    })
    .await;
    writer.join().unwrap();
    run
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let mut secs = 5.0;
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--secs") {
        secs = args[i + 1].parse().expect("--secs takes a number");
    }
    let levels: Vec<usize> = match args.iter().position(|a| a == "--concurrency") {
        Some(i) => vec![args[i + 1].parse().expect("--concurrency takes a number")],
        None => vec![1, 64, 256],
    };
    println!("durable appends, {PAYLOAD}-byte events, {secs} s per cell");
    println!(
        "{:>5} | {:>10} {:>8} {:>8} | {:>10} {:>8} {:>8} | {:>6}",
        "conc", "log/s", "p50 ms", "p99 ms", "raw/s", "p50 ms", "p99 ms", "ratio"
    );
    for c in levels {
        let (log, lags) = bench_log(c, secs, c == 64).await;
        let raw = bench_raw(c, secs).await;
        let ratio = log.rate() / raw.rate();
        println!(
            "{:>5} | {:>10.0} {:>8} {:>8} | {:>10.0} {:>8} {:>8} | {:>5.0}%",
            c,
            log.rate(),
            ms(pct(&log.latencies, 0.5)),
            ms(pct(&log.latencies, 0.99)),
            raw.rate(),
            ms(pct(&raw.latencies, 0.5)),
            ms(pct(&raw.latencies, 0.99)),
            ratio * 100.0
        );
        println!(
            "{{\"bench\":\"eventlog-append\",\"concurrency\":{c},\"log_per_s\":{:.0},\"log_p50_ms\":{},\"log_p99_ms\":{},\"raw_per_s\":{:.0},\"raw_p50_ms\":{},\"raw_p99_ms\":{},\"ratio\":{:.3}}}",
            log.rate(),
            ms(pct(&log.latencies, 0.5)),
            ms(pct(&log.latencies, 0.99)),
            raw.rate(),
            ms(pct(&raw.latencies, 0.5)),
            ms(pct(&raw.latencies, 0.99)),
            ratio
        );
        if let Some(l) = lags {
            println!(
                "      subscription lag at concurrency {c}: p50 {} ms, p99 {} ms, max {} ms over {} events",
                ms(pct(&l, 0.5)),
                ms(pct(&l, 0.99)),
                ms(pct(&l, 1.0)),
                l.len()
            );
        }
    }
}
