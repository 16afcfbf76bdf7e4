//! `onecity-bench --quick` runs every scenario end to end (its own in-process server, real
//! gRPC on loopback, and the `rebuild` child process) and prints one JSON line per cell.
//! Nothing here asserts a timing: figures from a debug build on a shared machine mean
//! nothing; the harness itself working is what is checked.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

/// Runs `onecity-bench --quick ARGS`, checks it succeeded, and returns its stdout and
/// JSON lines (every one of which must parse).
fn quick(args: &[&str]) -> (String, Vec<Value>) {
    let out = Command::new(env!("CARGO_BIN_EXE_onecity-bench"))
        .arg("--quick")
        .args(args)
        .output()
        .expect("run onecity-bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "onecity-bench --quick {args:?} failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let lines = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect();
    (stdout, lines)
}

/// Each named scenario printed exactly this many cells.
fn assert_cells(lines: &[Value], stdout: &str, expected: &[(&str, usize)]) {
    for &(scenario, cells) in expected {
        let n = lines.iter().filter(|j| j["scenario"] == scenario).count();
        assert_eq!(n, cells, "{scenario} cells in {stdout}");
    }
}

#[test]
fn quick_run_prints_parseable_json_for_every_scenario() {
    let (stdout, lines) = quick(&[]);
    let scenarios: BTreeSet<&str> = lines
        .iter()
        .map(|j| j["scenario"].as_str().expect("scenario is a string"))
        .collect();
    assert_eq!(
        scenarios,
        BTreeSet::from([
            "durable-noop",
            "find-cases",
            "find-cases-unrecorded",
            "get-case",
            "get-case-unrecorded",
            "noop",
            "rebuild",
            "route",
            "screen",
            "screen-full",
            "submit",
            "submit-intake",
            "submit-observe-off",
            "submit-observe-on",
            "submit-unchecked"
        ]),
        "{stdout}"
    );
    for j in &lines {
        for key in [
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
            assert!(j.get(key).is_some(), "{key} missing in {j}");
        }
        assert!(j["ops_per_s"].is_number(), "{j}");
        assert!(j["errors"].is_object(), "{j}");
    }
    // submit, noop and durable-noop at 1, 64 and 256; route at two loads and saturation.
    assert_cells(
        &lines,
        &stdout,
        &[
            ("submit", 3),
            ("noop", 3),
            ("durable-noop", 3),
            ("route", 3),
            ("submit-intake", 1),
            ("submit-unchecked", 1),
            ("find-cases", 1),
            ("find-cases-unrecorded", 1),
            ("get-case", 1),
            ("get-case-unrecorded", 1),
        ],
    );
    let get_case = lines
        .iter()
        .find(|j| j["scenario"] == "get-case")
        .expect("get-case");
    assert_eq!(get_case["ceiling_name"], "get-case-unrecorded c=64");
    // Every cell that has a ceiling reports its ratio to it.
    for j in lines.iter().filter(|j| !j["ceiling"].is_null()) {
        assert!(j["ratio"].is_number(), "{j}");
    }
    let submit = lines
        .iter()
        .find(|j| j["scenario"] == "submit" && j["concurrency"] == 64)
        .expect("submit c=64");
    assert_eq!(submit["ceiling_name"], "durable-noop c=64");
    // Every call succeeded. Only the route scenario's timing-dependent reasons (a case not
    // routed before the drain limit, a submission the open loop could not start) are
    // tolerated: a slow debug build on a busy machine may hit them.
    for j in &lines {
        for code in j["errors"].as_object().expect("errors").keys() {
            assert!(
                code == "not_routed" || code == "client_backlog",
                "unexpected error {code} in {j}"
            );
        }
    }
    let rebuild = lines
        .iter()
        .find(|j| j["scenario"] == "rebuild")
        .expect("rebuild");
    assert!(rebuild["ready_s"].is_number(), "{rebuild}");
    assert!(rebuild["peak_rss_mib"].is_number(), "{rebuild}");
    // The human table follows the JSON lines.
    assert!(stdout.contains("targets (2-core machine):"), "{stdout}");
}

/// `--backend jetstream`: the same scenarios over a JetStream log on a private
/// nats-server (needs `nats-server` on PATH, as the JetStream tests do; `.ci/test`
/// installs it). Checks that the ceiling, both submit cells and the route cells run and
/// that nothing was refused or failed.
#[test]
fn quick_run_on_jetstream_covers_submit_and_route() {
    // A longer window than sled's: a JetStream submission (its person claims, then the
    // case) takes several publish round trips, and the cell must see some complete.
    let (stdout, lines) = quick(&[
        "--backend",
        "jetstream",
        "--secs",
        "1.5",
        "--scenario",
        "submit",
        "--scenario",
        "route",
    ]);
    assert!(
        stdout.contains("backend: in-process server, JetStream log"),
        "{stdout}"
    );
    assert_cells(
        &lines,
        &stdout,
        &[
            ("durable-noop", 3),
            ("submit", 3),
            ("submit-intake", 1),
            ("route", 3),
        ],
    );
    assert!(
        !lines.iter().any(|j| j["scenario"] == "rebuild"),
        "rebuild is sled only: {stdout}"
    );
    for j in lines.iter().filter(|j| j["scenario"] != "route") {
        // Over JetStream a submission's person claims are sequential appends, and at
        // c=256 one takes longer than the quick window (docs/performance.md, "Person
        // claims"): that cell may complete nothing in it, but must still refuse and fail
        // nothing.
        let slow = j["scenario"] == "submit" && j["concurrency"] == 256;
        if !slow {
            assert!(j["ops_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{j}");
        }
        assert_eq!(j["errors"].as_object().map(|e| e.len()), Some(0), "{j}");
    }
}

/// The `reassess` cell over a few hundred cases: every case re-assessed once, its figures
/// reported (a new policy version on a manual clock, in the bench's own process).
#[test]
fn reassess_re_assesses_every_case_once() {
    let out = Command::new(env!("CARGO_BIN_EXE_onecity-bench"))
        .args(["reassess", "--cases", "300", "--batch", "64"])
        .output()
        .expect("run onecity-bench reassess");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "onecity-bench reassess failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line: Value = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .expect("a JSON line");
    assert_eq!(line["scenario"], "reassess");
    assert_eq!(line["reassessed"], 300, "{line}");
    assert!(line["events_appended"].as_u64().unwrap() >= 300, "{line}");
    for figure in [
        "sweep_s",
        "cases_per_s",
        "peak_rss_mib",
        "log_bytes_appended_mib",
    ] {
        assert!(line[figure].is_number(), "{figure} in {line}");
    }
}
