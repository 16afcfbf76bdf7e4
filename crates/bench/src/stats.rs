//! Results of one measured cell (a scenario at one concurrency or offered load), their
//! percentiles and their JSON line.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::cpu::CpuShare;

/// Latencies and errors gathered by the tasks of one cell.
#[derive(Debug, Default)]
pub struct Samples {
    /// Latencies of successful operations.
    pub latencies: Vec<Duration>,
    /// Failed operations by gRPC code name (or a bench-side reason).
    pub errors: BTreeMap<String, u64>,
}

impl Samples {
    /// Records a failure.
    pub fn error(&mut self, code: impl Into<String>) {
        *self.errors.entry(code.into()).or_default() += 1;
    }

    /// Merges another task's samples.
    pub fn merge(&mut self, other: Samples) {
        self.latencies.extend(other.latencies);
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

/// The `p`-quantile (0..=1) of sorted values, nearest rank.
pub fn pct(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Some(sorted[i.min(sorted.len() - 1)])
}

/// Name of a gRPC code as the JSON and the table show it.
pub fn code_name(code: tonic::Code) -> String {
    format!("{code:?}")
}

/// One row of the report.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Scenario name (`noop`, `durable-noop`, `submit`, `screen`, `route`, `rebuild`).
    pub scenario: String,
    /// Closed-loop concurrency (tasks), if closed-loop.
    pub concurrency: Option<usize>,
    /// Open-loop offered load per second, if open-loop.
    pub offered_per_s: Option<f64>,
    /// Successful operations per second in the measured window.
    pub ops_per_s: f64,
    /// Sorted latencies.
    pub latencies: Vec<Duration>,
    /// Errors by code.
    pub errors: BTreeMap<String, u64>,
    /// What this row is compared against, and that figure.
    pub ceiling: Option<(String, f64)>,
    /// CPU used during the cell, by thread group.
    pub cpu: Option<CpuShare>,
    /// Scenario-specific figures (appear in the JSON line).
    pub extra: Map<String, Value>,
}

impl Cell {
    /// A cell from samples gathered over `window`.
    pub fn new(
        scenario: &str,
        concurrency: Option<usize>,
        ops: usize,
        window: Duration,
        samples: Samples,
    ) -> Cell {
        let mut latencies = samples.latencies;
        latencies.sort_unstable();
        Cell {
            scenario: scenario.to_owned(),
            concurrency,
            offered_per_s: None,
            ops_per_s: ops as f64 / window.as_secs_f64().max(1e-9),
            latencies,
            errors: samples.errors,
            ceiling: None,
            cpu: None,
            extra: Map::new(),
        }
    }

    /// `ops_per_s / ceiling`.
    pub fn ratio(&self) -> Option<f64> {
        self.ceiling
            .as_ref()
            .filter(|(_, c)| *c > 0.0)
            .map(|(_, c)| self.ops_per_s / c)
    }

    /// Latency quantile in milliseconds.
    pub fn ms(&self, p: f64) -> Option<f64> {
        pct(&self.latencies, p).map(|d| d.as_secs_f64() * 1000.0)
    }

    /// The load column of the table: `c=64` or `200/s`.
    pub fn load(&self) -> String {
        match (self.concurrency, self.offered_per_s) {
            (_, Some(r)) => format!("{r:.0}/s"),
            (Some(c), None) => format!("c={c}"),
            (None, None) => "-".into(),
        }
    }

    /// The JSON line.
    pub fn json(&self) -> Value {
        let round = |v: Option<f64>| v.map(|x| (x * 1000.0).round() / 1000.0);
        let mut obj = json!({
            "scenario": self.scenario,
            "concurrency": self.concurrency,
            "ops_per_s": (self.ops_per_s * 10.0).round() / 10.0,
            "p50_ms": round(self.ms(0.50)),
            "p90_ms": round(self.ms(0.90)),
            "p99_ms": round(self.ms(0.99)),
            "max_ms": round(self.ms(1.0)),
            "errors": self.errors,
            "ceiling": self.ceiling.as_ref().map(|(_, v)| (v * 10.0).round() / 10.0),
            "ceiling_name": self.ceiling.as_ref().map(|(n, _)| n.clone()),
            "ratio": round(self.ratio()),
            "samples": self.latencies.len(),
        });
        let map = obj.as_object_mut().expect("object");
        if let Some(r) = self.offered_per_s {
            map.insert("offered_per_s".into(), json!(r));
        }
        if let Some(cpu) = &self.cpu {
            map.insert("cpu_cores".into(), cpu.json());
        }
        for (k, v) in &self.extra {
            map.insert(k.clone(), v.clone());
        }
        obj
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(pct(&v, 0.5), Some(Duration::from_millis(51)));
        assert_eq!(pct(&v, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(pct(&v, 1.0), Some(Duration::from_millis(100)));
        assert_eq!(pct(&[], 0.5), None);
    }

    #[test]
    fn json_line_has_the_documented_keys() {
        let mut s = Samples::default();
        s.latencies.push(Duration::from_millis(2));
        s.error("Unavailable");
        let mut c = Cell::new("submit", Some(64), 10, Duration::from_secs(1), s);
        c.ceiling = Some(("durable-noop@64".into(), 20.0));
        let j = c.json();
        for k in [
            "scenario",
            "concurrency",
            "ops_per_s",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "max_ms",
            "errors",
            "ceiling",
            "ratio",
        ] {
            assert!(j.get(k).is_some(), "{k} missing in {j}");
        }
        assert_eq!(j["ratio"], json!(0.5));
        assert_eq!(j["errors"]["Unavailable"], json!(1));
    }
}
