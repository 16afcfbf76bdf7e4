//! CPU time of this process's threads, grouped by thread name, so each row can say who
//! burnt the machine's two cores: the load-generating client, the server's runtime, the
//! event log's write path (its writer and indexer threads: every sled
//! insert of the log, and every fsync) or sled's own threads.
//!
//! Read from `/proc/self/task/*/stat` (utime + stime). Threads that exit between two
//! snapshots are lost, which only matters for short-lived blocking-pool threads.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{json, Value};

/// Thread-name prefix of the client runtime's threads.
pub const CLIENT_THREADS: &str = "bench-client";
/// Thread-name prefix of the in-process server runtime's threads.
pub const SERVER_THREADS: &str = "onecity-server";
/// Name prefix of the log's write-path threads (`onecity-log-writer`,
/// `onecity-log-index`; the kernel truncates names to 15 bytes).
const WRITER_THREAD: &str = "onecity-log-";

/// Kernel clock ticks per second for `/proc` times. USER_HZ is 100 on every Linux
/// architecture we run on; asking `sysconf` would need `unsafe`, which the workspace denies.
const TICKS_PER_SEC: f64 = 100.0;

/// Per-group CPU seconds at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    at: Instant,
    ticks: BTreeMap<&'static str, u64>,
}

fn group(name: &str) -> &'static str {
    if name.starts_with(CLIENT_THREADS) {
        "client"
    } else if name.starts_with(SERVER_THREADS) {
        "server"
    } else if name.starts_with(WRITER_THREAD) {
        "log_writer"
    } else {
        "other"
    }
}

impl Snapshot {
    /// Reads every thread of this process (empty on systems without `/proc`).
    pub fn take() -> Snapshot {
        let mut ticks: BTreeMap<&'static str, u64> = BTreeMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
            for entry in dir.flatten() {
                let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                    continue;
                };
                // `pid (comm) state ...`: comm may hold spaces, so split at the last ')'.
                let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                    continue;
                };
                let name = &stat[open + 1..close];
                let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
                // After comm: state is field 3, utime 14 and stime 15 (1-based) → 11, 12 here.
                let t = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
                if let (Some(u), Some(s)) = (t(11), t(12)) {
                    *ticks.entry(group(name)).or_default() += u + s;
                }
            }
        }
        Snapshot {
            at: Instant::now(),
            ticks,
        }
    }

    /// CPU used since `earlier`, as cores (1.0 = one core busy the whole time).
    pub fn since(&self, earlier: &Snapshot) -> CpuShare {
        let wall = self.at.duration_since(earlier.at);
        let mut cores = BTreeMap::new();
        for g in ["client", "server", "log_writer", "other"] {
            let now = self.ticks.get(g).copied().unwrap_or(0);
            let d = now.saturating_sub(earlier.ticks.get(g).copied().unwrap_or(0));
            cores.insert(g, d as f64 / TICKS_PER_SEC / wall.as_secs_f64().max(1e-9));
        }
        CpuShare { cores }
    }
}

/// CPU use over a cell by group, in cores.
#[derive(Debug, Clone)]
pub struct CpuShare {
    /// Group → cores.
    pub cores: BTreeMap<&'static str, f64>,
}

impl CpuShare {
    /// Short form for the table: `cli 0.9 srv 0.7 wr 0.2 oth 0.0`.
    pub fn short(&self) -> String {
        let g = |k: &str| self.cores.get(k).copied().unwrap_or(0.0);
        format!(
            "{:.2}/{:.2}/{:.2}/{:.2}",
            g("client"),
            g("server"),
            g("log_writer"),
            g("other")
        )
    }

    /// JSON object of cores by group.
    pub fn json(&self) -> Value {
        let mut m = serde_json::Map::new();
        for (k, v) in &self.cores {
            m.insert((*k).to_owned(), json!((v * 100.0).round() / 100.0));
        }
        Value::Object(m)
    }
}
