//! Golden tests of the explanations: what a clerk and a department were shown when a
//! household was assessed must be what the log renders for it later, byte for byte.
//!
//! The log keeps an assessment lean (rule ids, inputs and thresholds, no text; see
//! docs/eventlog.md, "Assessments") and renders its explanations and summaries when they
//! are read. That is only honest if the rendering never changes for a version that was in
//! force. These tests pin it: for every policy version shipped in `policy/default.toml`,
//! the bench's households (4,096 of them, generated as on 2026-12-01) are assessed with
//! nothing decided and with a dibao decision, and the rendered text of every programme
//! (outcome, amount, margin, unit, summary, and each rule's id, result, threshold and
//! explanation) is compared with `golden/<version>.txt`: one digest per household, and
//! the whole text of the first households in `golden/<version>.sample.txt` to read.
//!
//! A golden file is written only when it does not exist, with `ONECITY_GOLDEN_WRITE=1`:
//! a new policy version gets its own. An existing file is never rewritten by a test; a
//! mismatch means that text shown to residents would now read differently, which a
//! change of wording must not do to a version in force.

use std::fmt::Write as _;
use std::path::PathBuf;

use chrono::NaiveDate;
use onecity_domain::Programme;
use onecity_eligibility::{
    decide, explain, explain_stored, Assessment, Catalogue, Decided, Detail, PolicyBook,
};
use onecity_proto::prost::Message as _;
use onecity_proto::v1 as pb;
use sha2::{Digest as _, Sha256};

use crate::household::Pool;

const HOUSEHOLDS: usize = 4096;
const SEED: u64 = crate::HOUSEHOLD_SEED;
const SAMPLE: usize = 8;

fn generated_on() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, 1).expect("a valid date")
}

/// Everything a reader of the assessments is shown, one programme after the other.
fn text(assessments: &[Assessment]) -> String {
    let mut s = String::new();
    for a in assessments {
        let _ = writeln!(
            s,
            "{} {} amount={} margin={} unit={} version={}",
            a.programme.as_str(),
            a.outcome.as_str(),
            a.amount_fen,
            a.margin_fen,
            a.department_unit,
            a.policy_version
        );
        let _ = writeln!(s, "  summary: {}", a.summary);
        for r in &a.rules {
            let _ = writeln!(
                s,
                "  {} held={} threshold={}: {}",
                r.rule, r.held, r.threshold, r.explanation
            );
        }
    }
    s
}

/// The assessments of `app` as the log keeps them (the stored form, through its bytes),
/// rendered as a reader sees them; checked against the live assessment, which a `Screen`
/// shows.
fn stored_and_rendered(
    app: &onecity_domain::Application,
    policy: &onecity_eligibility::PolicyVersion,
    decided: &[Decided],
) -> Vec<Assessment> {
    let lean = decide(app, policy, &Catalogue::embedded(), decided);
    let bytes = pb::EligibilityAssessed {
        assessments: lean.iter().map(Into::into).collect(),
        policy_version: policy.id().to_owned(),
    }
    .encode_to_vec();
    let stored = pb::EligibilityAssessed::decode(bytes.as_slice()).expect("decodes");
    let rendered: Vec<Assessment> = explain_stored(stored.assessments)
        .expect("renders")
        .into_iter()
        .map(|a| Assessment::try_from(a).expect("reads back"))
        .collect();
    assert_eq!(
        rendered,
        explain(&lean, Detail::Full),
        "the stored form renders what was shown"
    );
    rendered
}

/// The text of household `i` under `version`: as assessed at intake (nothing decided),
/// then with civil affairs' dibao decision (approved for even `i`, denied for odd), which
/// the linked programmes explain differently.
fn household_text(pool: &Pool, i: usize, policies: &PolicyBook, version: &str) -> String {
    let policy = policies.get(version).expect("a shipped version");
    let app = &pool.households[i].validated;
    let decided = [Decided {
        programme: Programme::Dibao,
        approved: i.is_multiple_of(2),
    }];
    let mut s = format!("household {i}, nothing decided\n");
    s.push_str(&text(&stored_and_rendered(app, policy, &[])));
    let _ = writeln!(
        s,
        "household {i}, dibao decided (approved: {})",
        i.is_multiple_of(2)
    );
    s.push_str(&text(&stored_and_rendered(app, policy, &decided)));
    s
}

fn digest(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..12])
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden")
}

#[test]
fn explanations_render_as_they_were_shown_under_every_shipped_version() {
    let pool = Pool::generate_on(HOUSEHOLDS, SEED, generated_on()).expect("households");
    let policies = PolicyBook::embedded_default();
    let write = std::env::var_os("ONECITY_GOLDEN_WRITE").is_some();
    for version in policies.versions() {
        let id = version.id();
        let digests_path = golden_dir().join(format!("{id}.txt"));
        let sample_path = golden_dir().join(format!("{id}.sample.txt"));
        let mut digests = format!(
            "# golden digests of the rendered assessments under policy version {id}: see crates/bench/src/golden.rs\n"
        );
        let mut sample = String::new();
        for i in 0..HOUSEHOLDS {
            let t = household_text(&pool, i, &policies, id);
            let _ = writeln!(digests, "{i} {}", digest(&t));
            if i < SAMPLE {
                sample.push_str(&t);
            }
        }
        if !digests_path.exists() && write {
            std::fs::write(&digests_path, &digests).expect("write golden digests");
            std::fs::write(&sample_path, &sample).expect("write golden sample");
        }
        let want_sample = std::fs::read_to_string(&sample_path).unwrap_or_else(|_| {
            panic!(
                "no golden file {} for policy version {id}: a new version needs one (ONECITY_GOLDEN_WRITE=1)",
                sample_path.display()
            )
        });
        // The sample first: its mismatch shows the text itself.
        for (n, (got, want)) in sample.lines().zip(want_sample.lines()).enumerate() {
            assert_eq!(got, want, "{id}.sample.txt line {}", n + 1);
        }
        assert_eq!(
            sample.lines().count(),
            want_sample.lines().count(),
            "{id}.sample.txt"
        );
        let want = std::fs::read_to_string(&digests_path).expect("golden digests");
        for (got, want) in digests.lines().zip(want.lines()) {
            if got != want {
                let i: usize = got
                    .split(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                panic!(
                    "policy version {id}: the rendered text of household {i} changed ({got} ≠ {want} in {}); it now reads:\n{}",
                    digests_path.display(),
                    household_text(&pool, i, &policies, id)
                );
            }
        }
        assert_eq!(digests.lines().count(), want.lines().count(), "{id}.txt");
    }
}
