//! The example applications in docs/examples/ stay valid and keep meaning what the README and
//! docs/api.md say they mean: each file parses with the CLI's JSON reader, passes intake
//! validation and is assessed as documented under the shipped policy.

use std::collections::BTreeMap;
use std::path::PathBuf;

use onecity::json;
use onecity_domain::{validate_application, Outcome, Programme};
use onecity_eligibility::{assess, Catalogue, PolicyBook};
use onecity_proto::v1 as pb;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples")
}

/// Programme → (outcome, amount) for every programme that would be referred.
fn referred(file: &str) -> (String, BTreeMap<Programme, (Outcome, i64)>) {
    let path = examples_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let proto: pb::Application = json::from_json(&text).unwrap();
    // Validate as intake does; "today" is fixed after every example date so the test does not
    // depend on the clock.
    let today = onecity_domain::parse_date("2026-11-30").unwrap();
    let app = validate_application(proto, today).unwrap_or_else(|e| panic!("{file}: {e}"));
    let policies = PolicyBook::embedded_default();
    let policy = policies.in_force(app.application_date).unwrap();
    let out = assess(&app, policy, &Catalogue::embedded())
        .into_iter()
        .filter(|a| a.outcome != Outcome::Ineligible)
        .map(|a| (a.programme, (a.outcome, a.amount_fen)))
        .collect();
    (policy.id().to_owned(), out)
}

fn eligible(list: &[(Programme, i64)]) -> BTreeMap<Programme, (Outcome, i64)> {
    list.iter()
        .map(|&(p, amount)| (p, (Outcome::Eligible, amount)))
        .collect()
}

#[test]
fn every_example_is_tested() {
    let mut files: Vec<String> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "above-thresholds-charity.json",
            "elderly-alone.json",
            "flood-household.json",
            "low-income-family.json",
        ]
    );
}

#[test]
fn low_income_family_qualifies_for_six_programmes() {
    use Programme::*;
    let (policy, got) = referred("low-income-family.json");
    assert_eq!(policy, "2026-07");
    // S = 1,110.00, n = 5, H = 2,400.00: dibao 5,550.00 - 2,400.00 + one special member 111.00;
    // disability: living 110.00 + care 130.00 for the grandmother (grade 2).
    assert_eq!(
        got,
        eligible(&[
            (Dibao, 326_100),
            (Medical, 0),
            (Education, 0),
            (Housing, 0),
            (Employment, 0),
            (DisabilitySubsidy, 24_000),
        ])
    );
}

#[test]
fn elderly_person_alone_is_extreme_poverty() {
    use Programme::*;
    let (policy, got) = referred("elderly-alone.json");
    assert_eq!(policy, "2026-07");
    assert_eq!(
        got.get(&ExtremePoverty),
        Some(&(Outcome::Eligible, 144_300))
    );
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        [Dibao, ExtremePoverty, Medical, Housing]
    );
}

#[test]
fn flood_household_gets_temporary_and_disaster_relief() {
    use Programme::*;
    let (policy, got) = referred("flood-household.json");
    assert_eq!(policy, "2026-07");
    // min(2 x 1,110.00 x 3, cap 6,500.00)
    assert_eq!(got, eligible(&[(Temporary, 650_000), (DisasterRelief, 0)]));
}

#[test]
fn household_above_every_threshold_is_referred_to_charity_only() {
    let (policy, got) = referred("above-thresholds-charity.json");
    // Applied before 2026-07-01: the earlier policy version decides.
    assert_eq!(policy, "2025-07");
    assert_eq!(got, eligible(&[(Programme::Charity, 0)]));
}

#[test]
fn identity_numbers_match_the_reference_algorithm() {
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let app: pb::Application = json::from_json(&text).unwrap();
        for m in &app.members {
            let birth = chrono::NaiveDate::parse_from_str(&m.birth_date, "%Y-%m-%d").unwrap();
            let seq: u16 = m.id_number[14..17].parse().unwrap();
            assert_eq!(
                m.id_number,
                onecity_domain::fixtures::valid_id_number(&m.id_number[..6], birth, seq),
                "{}",
                path.display()
            );
        }
    }
}
