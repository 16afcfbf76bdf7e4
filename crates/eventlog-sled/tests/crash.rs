//! Crash safety of the sled backend: a child process appends at high concurrency and
//! reports every acknowledged write; we SIGKILL it at a random moment, reopen the store
//! and check that every acknowledged commit is there exactly once, versions and
//! positions have no gaps, and the checkpoint is intact.
//!
//! The child is this same test binary, re-run with `ONECITY_CRASH_CHILD` set (see
//! `crash_child`), so the test needs no extra binary. `ONECITY_CRASH_ITERATIONS=50`
//! runs the stress mode; the normal suite runs a few iterations.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use onecity_eventlog::{Error, EventLog, Expected, NewEvent, RecordedEvent};
use onecity_eventlog_sled::{SledConfig, SledLog};
use uuid::Uuid;

const CHILD_ENV: &str = "ONECITY_CRASH_CHILD";
const CONSUMER: &str = "crash-test";

/// Not a test on its own: the body of the child process.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        // Tiny memtables: the kill lands among run writes and merges, not only appends.
        let config = SledConfig {
            commit_index_flush: 64,
            ..SledConfig::default()
        };
        let log = Arc::new(SledLog::open(&path, config).unwrap());
        let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
        let shared_cases: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
        let mut tasks = Vec::new();
        for t in 0..64usize {
            let log = Arc::clone(&log);
            let out = Arc::clone(&out);
            let case = if t % 2 == 0 {
                shared_cases[t % 4]
            } else {
                Uuid::now_v7()
            };
            tasks.push(tokio::spawn(async move {
                for i in 0usize.. {
                    let n = 1 + (i + t) % 3;
                    let events = (0..n)
                        .map(|k| {
                            NewEvent::new("onecity.test.Crash", "crash", vec![k as u8; 64 + t])
                        })
                        .collect();
                    let commit = Uuid::now_v7();
                    let a = log
                        .append(case, Expected::Any, events, commit)
                        .await
                        .unwrap();
                    let line = format!(
                        "A {commit} {case} {} {} {} {}\n",
                        a.first_position, a.last_position, a.first_version, a.last_version
                    );
                    if t == 0 && i % 10 == 0 {
                        log.save_checkpoint(CONSUMER, a.last_position)
                            .await
                            .unwrap();
                        let mut o = out.lock().unwrap();
                        o.write_all(line.as_bytes()).unwrap();
                        writeln!(o, "C {}", a.last_position).unwrap();
                        o.flush().unwrap();
                    } else {
                        let mut o = out.lock().unwrap();
                        o.write_all(line.as_bytes()).unwrap();
                        o.flush().unwrap();
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

struct Acked {
    commit: Uuid,
    case: Uuid,
    first_position: u64,
    last_position: u64,
    first_version: u64,
    last_version: u64,
}

/// A small xorshift seeded from the clock: the kill moment varies per run, and the seed
/// is printed so a failure can be replayed with `ONECITY_CRASH_SEED`.
fn seed() -> u64 {
    std::env::var("ONECITY_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        })
}

fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Records one line of the child's report: an acknowledged commit (`A ...`) or a saved
/// checkpoint (`C position`; the highest seen is the one that must survive). A line cut
/// off by the kill matches neither and is ignored.
fn record(line: &str, acked: &mut Vec<Acked>, checkpoint: &mut u64) {
    let f: Vec<&str> = line.split_whitespace().collect();
    match f.as_slice() {
        ["A", commit, case, fp, lp, fv, lv] => acked.push(Acked {
            commit: commit.parse().unwrap(),
            case: case.parse().unwrap(),
            first_position: fp.parse().unwrap(),
            last_position: lp.parse().unwrap(),
            first_version: fv.parse().unwrap(),
            last_version: lv.parse().unwrap(),
        }),
        ["C", p] => *checkpoint = (*checkpoint).max(p.parse().unwrap()),
        _ => {}
    }
}

/// Commit-index run files in `dir` (none while it does not exist yet).
fn run_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension() == Some("run".as_ref()))
            .count()
    })
}

async fn one_iteration(rng: &mut u64) {
    let dir = tempfile::tempdir().unwrap();
    let kill_after = 50 + next(rng) % 1500;
    // Half the iterations are killed only once the child has written a commit-index run
    // (with 64-entry memtables, shortly after the indexer's first pass), so recovery starts
    // from runs plus a lost memtable and the kill lands among run writes and merges; the
    // others may be killed before the first run, when recovery starts from nothing.
    let after_a_run = next(rng).is_multiple_of(2);
    let commit_dir = dir.path().join("commits");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked = Vec::new();
    let mut checkpoint = 0u64;
    let mut lines = BufReader::new(stdout).lines();
    while let Some(Ok(line)) = lines.next() {
        record(&line, &mut acked, &mut checkpoint);
        if acked.len() as u64 >= kill_after && (!after_a_run || run_files(&commit_dir) > 0) {
            break;
        }
        // The indexer writes a run within one pass of 64 commits; a child that has not
        // after this many is broken, and the test fails instead of waiting for ever.
        assert!(
            acked.len() < 200_000,
            "no commit-index run after {} commits",
            acked.len()
        );
    }
    // SIGKILL: no destructor, no final flush. Whatever was acknowledged must survive.
    child.kill().unwrap();
    child.wait().unwrap();
    // Lines still buffered in the pipe were acknowledged too: read them all.
    for line in lines.map_while(Result::ok) {
        record(&line, &mut acked, &mut checkpoint);
    }
    assert!(!acked.is_empty(), "child acknowledged nothing");

    // A small memtable here too, so recovery writes its rebuilt entries as several runs.
    let config = SledConfig {
        commit_index_flush: 100,
        ..SledConfig::default()
    };
    let log = SledLog::open(dir.path(), config).expect("reopen after SIGKILL");
    let head = log.head().await.unwrap();
    let mut all = Vec::new();
    while (all.len() as u64) < head {
        let chunk = log.read_all(all.len() as u64 + 1, 10_000).await.unwrap();
        assert!(!chunk.is_empty());
        all.extend(chunk);
    }
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.position, i as u64 + 1, "global positions have a gap");
    }
    // Whole batches only: the hash chain holds across the kill.
    let mut chain = onecity_eventlog::chain::Verifier::new();
    for e in all.iter().cloned() {
        chain.push(e).expect("hash chain intact after SIGKILL");
    }
    assert_eq!(chain.finish().expect("hash chain intact").head, head);
    let mut versions: HashMap<Uuid, u64> = HashMap::new();
    let mut per_commit: BTreeMap<Uuid, usize> = BTreeMap::new();
    for e in &all {
        let v = versions.entry(e.case_id).or_default();
        *v += 1;
        assert_eq!(e.version, *v, "case {} versions have a gap", e.case_id);
        *per_commit.entry(e.commit_id).or_default() += 1;
    }
    for a in &acked {
        let n = (a.last_position - a.first_position + 1) as usize;
        assert_eq!(
            per_commit.get(&a.commit),
            Some(&n),
            "acknowledged commit {} lost or duplicated",
            a.commit
        );
        for (k, p) in (a.first_position..=a.last_position).enumerate() {
            let e = &all[p as usize - 1];
            assert_eq!(e.commit_id, a.commit);
            assert_eq!(e.case_id, a.case);
            assert_eq!(e.version, a.first_version + k as u64);
        }
        assert_eq!(
            a.last_version - a.first_version,
            a.last_position - a.first_position
        );
    }
    assert!(
        log.load_checkpoint(CONSUMER).await.unwrap() >= checkpoint,
        "checkpoint went back"
    );
    // The dedup index survived too: retrying an acknowledged commit writes nothing.
    let last = acked.last().unwrap();
    let retry = log
        .append(
            last.case,
            Expected::NoStream,
            vec![NewEvent::new("x", "x", vec![])],
            last.commit,
        )
        .await
        .unwrap();
    assert!(retry.deduplicated);
    assert_eq!(retry.first_position, last.first_position);
    assert_eq!(log.head().await.unwrap(), head);
    assert!(!matches!(
        log.read_case(last.case, 1, 1).await,
        Err(Error::NotFound(_))
    ));
    // The case index and the commit-id index were rebuilt from the events wherever the
    // background indexer had not made them durable: every case reads back exactly its
    // events, every acknowledged commit deduplicates to its original result, and a case's
    // head admits exactly its last version.
    let mut by_case: HashMap<Uuid, Vec<&RecordedEvent>> = HashMap::new();
    for e in &all {
        by_case.entry(e.case_id).or_default().push(e);
    }
    for (case, events) in &by_case {
        let read = log.read_case(*case, 1, 100_000).await.unwrap();
        let read: Vec<&RecordedEvent> = read.iter().collect();
        assert_eq!(&read, events, "case {case} reads back differently");
    }
    let retries = acked.iter().map(|a| {
        let log = &log;
        async move {
            let r = log
                .append(
                    Uuid::now_v7(),
                    Expected::NoStream,
                    vec![NewEvent::new("x", "x", vec![])],
                    a.commit,
                )
                .await
                .unwrap();
            assert!(r.deduplicated, "commit {} not deduplicated", a.commit);
            assert_eq!(r.case_id, a.case);
            assert_eq!(
                (r.first_version, r.last_position),
                (a.first_version, a.last_position)
            );
        }
    });
    futures::future::join_all(retries).await;
    let (case, events) = by_case.iter().next().unwrap();
    let stale = Expected::Exact(events.len() as u64 - 1);
    assert!(matches!(
        log.append(
            *case,
            stale,
            vec![NewEvent::new("x", "x", vec![])],
            Uuid::now_v7()
        )
        .await,
        Err(Error::Conflict { .. })
    ));
    let next = log
        .append(
            *case,
            Expected::Exact(events.len() as u64),
            vec![NewEvent::new("x", "x", vec![])],
            Uuid::now_v7(),
        )
        .await
        .unwrap();
    assert_eq!(next.first_version, events.len() as u64 + 1);
    assert_eq!(log.head().await.unwrap(), head + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let iterations: usize = std::env::var("ONECITY_CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let seed = seed();
    eprintln!("crash test seed {seed} ({iterations} iterations)");
    let mut rng = seed;
    for _ in 0..iterations {
        one_iteration(&mut rng).await;
    }
}
