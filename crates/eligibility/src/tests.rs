//! Rule-by-rule boundary tables, policy loading and versioning, conversions and properties.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate, TimeDelta};
use onecity_domain::fixtures::valid_id_number;
use onecity_domain::{
    parse_date, Application, Disability, DisabilityKind, DistrictCode, EducationStage, Emergency,
    EmergencyKind, Employment, Housing, IdNumber, Outcome, Person, Programme, Relationship,
    Supporter,
};
use onecity_proto::v1 as proto;
use proptest::prelude::*;

use crate::*;

use Outcome::{Eligible as E, Ineligible as I, NeedsReview as R};

fn d(s: &str) -> NaiveDate {
    parse_date(s).unwrap()
}

/// In the 2025-07 example policy, Hexi (120103) uses the default standard S = 1,070.00 yuan.
const APP_DATE: &str = "2025-09-01";
const S: i64 = 107_000;

fn book() -> PolicyBook {
    PolicyBook::embedded_default()
}

fn policy() -> PolicyVersion {
    book().in_force(d(APP_DATE)).unwrap().clone()
}

fn policy_with(edit: impl FnOnce(&mut Parameters)) -> PolicyVersion {
    let base = policy();
    let mut params = base.params().clone();
    edit(&mut params);
    PolicyVersion::new("test", base.effective_from(), params, BTreeMap::new()).unwrap()
}

/// A working-age employed adult with an able supporter and no disability: qualifies for nothing
/// on their own.
fn adult(seq: u16, income: i64) -> Person {
    aged(seq, 40, income)
}

/// A member whose `age`th birthday is the application date.
fn aged(seq: u16, age: i32, income: i64) -> Person {
    let app = d(APP_DATE);
    born(seq, app.with_year(app.year() - age).unwrap(), income)
}

fn born(seq: u16, birth: NaiveDate, income: i64) -> Person {
    Person {
        id_number: IdNumber::parse(&valid_id_number("120103", birth, seq)).unwrap(),
        name: format!("member {seq}"),
        birth_date: birth,
        relationship: if seq == 0 {
            Relationship::Applicant
        } else {
            Relationship::Other
        },
        disability: None,
        seriously_ill: false,
        employment: Employment::Employed,
        education: EducationStage::None,
        monthly_income_fen: income,
        supporter: Supporter::Able,
    }
}

/// Household of adults with these incomes, owning adequate housing, no assets, no emergency.
fn household(incomes: &[i64]) -> Application {
    Application {
        district: DistrictCode::parse("120103").unwrap(),
        members: incomes
            .iter()
            .enumerate()
            .map(|(i, inc)| adult(i as u16, *inc))
            .collect(),
        financial_assets_fen: 0,
        homes_owned: 0,
        vehicles_owned: 0,
        housing: Housing::OwnedAdequate,
        medical_expense_12m_fen: 0,
        other_rigid_expense_12m_fen: 0,
        emergency: None,
        disaster_affected: false,
        consent_to_share: false,
        application_date: d(APP_DATE),
        contact_phone: String::new(),
    }
}

/// Three members with household income `h` (all on the applicant).
fn three(h: i64) -> Application {
    household(&[h, 0, 0])
}

fn run(app: &Application, policy: &PolicyVersion) -> Vec<Assessment> {
    assess(app, policy, &Catalogue::embedded())
}

fn get(results: &[Assessment], p: Programme) -> &Assessment {
    &results[p.to_proto() as usize - 1]
}

fn outcome(app: &Application, p: Programme) -> (Outcome, i64) {
    let r = run(app, &policy());
    let a = get(&r, p);
    (a.outcome, a.amount_fen)
}

fn rule<'a>(a: &'a Assessment, id: &str) -> &'a RuleResult {
    a.rules
        .iter()
        .find(|r| r.rule == id)
        .unwrap_or_else(|| panic!("no rule {id} in {:?}", a.rules))
}

const SN: i64 = 3 * S; // 321,000

type PersonEdit = Box<dyn Fn(&mut Person)>;
type AppEdit = fn(&mut Application);

// ---------------------------------------------------------------- dibao

#[test]
fn dibao_income_boundaries() {
    let floor = SN * 2000 / 10_000; // 64,200
    let band = SN * 10_500 / 10_000; // 337,050
    let cases = [
        (0, E, SN),
        (SN - floor - 1, E, floor + 1),
        (SN - floor, E, floor),
        (SN - floor + 1, E, floor),
        (SN - 1, E, floor),
        (SN, R, 0),
        (SN + 1, R, 0),
        (band - 1, R, 0),
        (band, I, 0),
        (band + 1, I, 0),
    ];
    for (h, want, amount) in cases {
        assert_eq!(
            outcome(&three(h), Programme::Dibao),
            (want, amount),
            "H = {h}"
        );
    }
    let r = run(&three(band), &policy());
    assert_eq!(get(&r, Programme::Dibao).margin_fen, band - SN + 1);
    let r = run(&three(SN - 1), &policy());
    assert_eq!(get(&r, Programme::Dibao).margin_fen, 0);
}

#[test]
fn dibao_asset_boundaries() {
    let limit = 24 * SN;
    let with = |edit: &dyn Fn(&mut Application)| {
        let mut a = three(0);
        edit(&mut a);
        outcome(&a, Programme::Dibao).0
    };
    assert_eq!(with(&|a| a.financial_assets_fen = limit - 1), E);
    assert_eq!(with(&|a| a.financial_assets_fen = limit), E);
    assert_eq!(with(&|a| a.financial_assets_fen = limit + 1), I);
    assert_eq!(with(&|a| a.homes_owned = 1), E);
    assert_eq!(with(&|a| a.homes_owned = 2), I);
    assert_eq!(with(&|a| a.vehicles_owned = 1), I);
    let mut a = three(0);
    a.vehicles_owned = 1;
    let r = run(&a, &policy());
    let dibao = get(&r, Programme::Dibao);
    assert!(!rule(dibao, "dibao.assets.vehicles").held);
    assert_eq!(rule(dibao, "dibao.assets.financial").threshold, limit);
    // Income would pass, so no income margin: the assets are the reason.
    assert_eq!(dibao.margin_fen, 0);
    assert!(
        dibao.summary.contains("vehicles owned 1 > 0"),
        "{}",
        dibao.summary
    );
}

#[test]
fn dibao_special_member_supplement() {
    let supplement = S * 1000 / 10_000; // 10,700
    let base = SN; // H = 0
    let app_date = d(APP_DATE);
    let cases: Vec<(&str, PersonEdit, i64)> = vec![
        ("none", Box::new(|_| {}), 0),
        ("aged 60 today", Box::new(|p| *p = aged(1, 60, 0)), 1),
        (
            "59, turns 60 tomorrow",
            Box::new(move |p| {
                *p = born(
                    1,
                    app_date.with_year(app_date.year() - 60).unwrap() + TimeDelta::days(1),
                    0,
                )
            }),
            0,
        ),
        (
            "grade 2",
            Box::new(|p| {
                p.disability = Some(Disability {
                    kind: DisabilityKind::Hearing,
                    grade: 2,
                })
            }),
            1,
        ),
        (
            "grade 3",
            Box::new(|p| {
                p.disability = Some(Disability {
                    kind: DisabilityKind::Hearing,
                    grade: 3,
                })
            }),
            0,
        ),
        ("seriously ill", Box::new(|p| p.seriously_ill = true), 1),
        (
            "elderly, disabled and ill counts once",
            Box::new(|p| {
                *p = aged(1, 80, 0);
                p.disability = Some(Disability {
                    kind: DisabilityKind::Physical,
                    grade: 1,
                });
                p.seriously_ill = true;
            }),
            1,
        ),
    ];
    for (name, edit, special) in cases {
        let mut a = three(0);
        edit(&mut a.members[1]);
        assert_eq!(
            outcome(&a, Programme::Dibao),
            (E, base + special * supplement),
            "{name}"
        );
    }
}

#[test]
fn explanation_line_matches_the_specification() {
    let r = run(&three(246_000), &policy());
    let dibao = get(&r, Programme::Dibao);
    let income = rule(dibao, "dibao.income_below_standard");
    assert_eq!(
        income.explanation,
        "household income 2,460.00 yuan < 3 × standard 1,070.00 = 3,210.00"
    );
    assert_eq!(income.threshold, SN);
    assert_eq!(income.inputs["household_income_fen"], 246_000);
    assert_eq!(income.inputs["members"], 3);
    assert!(income.held);
    assert_eq!(dibao.amount_fen, SN - 246_000);
    assert_eq!(dibao.policy_version, "2025-07");
    assert_eq!(dibao.department_unit.to_string(), "civil-affairs@120103");
    assert!(
        dibao.summary.starts_with("eligible: 750.00 yuan a month"),
        "{}",
        dibao.summary
    );
}

#[test]
fn ineligible_summary_states_margin_and_next_tier() {
    let h = 400_000; // above dibao's band, below the marginal line
    let r = run(&three(h), &policy());
    let dibao = get(&r, Programme::Dibao);
    assert_eq!(dibao.outcome, I);
    assert_eq!(dibao.margin_fen, h - SN + 1);
    assert!(
        dibao.summary.contains("missed by 790.01 yuan"),
        "{}",
        dibao.summary
    );
    assert!(
        dibao
            .summary
            .contains("next tier: low-income marginal household (ELIGIBLE)"),
        "{}",
        dibao.summary
    );
}

// ---------------------------------------------------------------- extreme poverty

#[test]
fn extreme_poverty_labour_capacity_table() {
    let each = S * 13_000 / 10_000; // 139,100
    let dis = |kind, grade| Some(Disability { kind, grade });
    use DisabilityKind::*;
    let cases: Vec<(&str, Person, Outcome)> = vec![
        ("aged 60", aged(0, 60, 0), E),
        ("aged 59", aged(0, 59, 0), I),
        ("aged 17", aged(0, 17, 0), E),
        ("aged 18", aged(0, 18, 0), I),
        (
            "intellectual 3",
            Person {
                disability: dis(Intellectual, 3),
                ..adult(0, 0)
            },
            E,
        ),
        (
            "intellectual 4",
            Person {
                disability: dis(Intellectual, 4),
                ..adult(0, 0)
            },
            I,
        ),
        (
            "mental 1",
            Person {
                disability: dis(Mental, 1),
                ..adult(0, 0)
            },
            E,
        ),
        (
            "mental 4",
            Person {
                disability: dis(Mental, 4),
                ..adult(0, 0)
            },
            I,
        ),
        (
            "physical 2",
            Person {
                disability: dis(Physical, 2),
                ..adult(0, 0)
            },
            E,
        ),
        (
            "physical 3",
            Person {
                disability: dis(Physical, 3),
                ..adult(0, 0)
            },
            I,
        ),
        (
            "visual 1",
            Person {
                disability: dis(Visual, 1),
                ..adult(0, 0)
            },
            E,
        ),
        (
            "visual 2",
            Person {
                disability: dis(Visual, 2),
                ..adult(0, 0)
            },
            I,
        ),
        (
            "hearing 1",
            Person {
                disability: dis(Hearing, 1),
                ..adult(0, 0)
            },
            I,
        ),
        (
            "multiple 1",
            Person {
                disability: dis(Multiple, 1),
                ..adult(0, 0)
            },
            I,
        ),
    ];
    for (name, mut p, want) in cases {
        p.supporter = Supporter::None;
        let mut a = household(&[]);
        a.members = vec![p];
        let expected = if want == E { each } else { 0 };
        assert_eq!(
            outcome(&a, Programme::ExtremePoverty),
            (want, expected),
            "{name}"
        );
    }
}

#[test]
fn extreme_poverty_income_supporter_assets() {
    let each = S * 13_000 / 10_000;
    let single = |income: i64, supporter: Supporter| {
        let mut a = household(&[]);
        a.members = vec![Person {
            supporter,
            ..aged(0, 70, income)
        }];
        a
    };
    assert_eq!(
        outcome(&single(S - 1, Supporter::None), Programme::ExtremePoverty),
        (E, each)
    );
    assert_eq!(
        outcome(&single(S - 1, Supporter::Unable), Programme::ExtremePoverty),
        (E, each)
    );
    assert_eq!(
        outcome(&single(S - 1, Supporter::Able), Programme::ExtremePoverty),
        (I, 0)
    );
    assert_eq!(
        outcome(&single(S, Supporter::None), Programme::ExtremePoverty),
        (I, 0)
    );
    let r = run(&single(S + 5, Supporter::None), &policy());
    assert_eq!(get(&r, Programme::ExtremePoverty).margin_fen, 6);
    let mut a = single(0, Supporter::None);
    a.homes_owned = 2;
    assert_eq!(outcome(&a, Programme::ExtremePoverty), (I, 0));
    // Two qualifying members, one not.
    let mut a = household(&[]);
    a.members = vec![
        Person {
            supporter: Supporter::None,
            ..aged(0, 75, 0)
        },
        Person {
            supporter: Supporter::Unable,
            ..aged(1, 8, 0)
        },
        adult(2, 500_000),
    ];
    assert_eq!(outcome(&a, Programme::ExtremePoverty), (E, 2 * each));
}

// ---------------------------------------------------------------- marginal and rigid

#[test]
fn marginal_boundaries() {
    let line = SN * 15_000 / 10_000; // 481,500
    let band = SN * 15_500 / 10_000; // 497,550
    let cases = [
        (SN - 1, I), // covered by dibao
        (SN, E),     // dibao only needs review
        (line - 1, E),
        (line, R),
        (band - 1, R),
        (band, I),
    ];
    for (h, want) in cases {
        assert_eq!(
            outcome(&three(h), Programme::LowIncomeMarginal).0,
            want,
            "H = {h}"
        );
    }
    let r = run(&three(band), &policy());
    assert_eq!(
        get(&r, Programme::LowIncomeMarginal).margin_fen,
        band - line + 1
    );
    let r = run(&three(SN - 1), &policy());
    let m = get(&r, Programme::LowIncomeMarginal);
    assert_eq!(m.margin_fen, 0);
    assert!(m.summary.contains("covered by dibao"), "{}", m.summary);
    let mut a = three(line - 1);
    a.financial_assets_fen = 24 * SN + 1;
    assert_eq!(outcome(&a, Programme::LowIncomeMarginal).0, I);
}

#[test]
fn bp_comparisons_are_exact_without_rounding() {
    // S = 1,070.01, n = 1: the marginal line 1.5 × S is 1,605.015 yuan.
    let p = policy_with(|p| p.dibao_standard_fen = 107_001);
    let one = |h| {
        let mut a = household(&[h]);
        a.members[0].supporter = Supporter::Able;
        a
    };
    let m = |h| get(&run(&one(h), &p), Programme::LowIncomeMarginal).outcome;
    assert_eq!(m(160_501), E);
    assert_eq!(m(160_502), R);
    let r = run(&one(160_502), &p);
    assert_eq!(
        rule(
            get(&r, Programme::LowIncomeMarginal),
            "low_income_marginal.income"
        )
        .threshold,
        160_502
    );
}

#[test]
fn rigid_expenditure_boundaries() {
    let line = SN * 15_000 / 10_000; // 481,500
    let h = 600_000;
    let with = |med: i64, other: i64| {
        let mut a = three(h);
        a.medical_expense_12m_fen = med;
        a.other_rigid_expense_12m_fen = other;
        a
    };
    // H' = H − floor(expenses / 12) must be < 481,500: expenses / 12 > 118,500.
    let need = (h - line + 1) * 12; // floor(need / 12) = 118,501
    assert_eq!(outcome(&with(need, 0), Programme::RigidExpenditure).0, E);
    assert_eq!(
        outcome(&with(need - 7, 7), Programme::RigidExpenditure).0,
        E
    );
    assert_eq!(
        outcome(&with(need - 1, 0), Programme::RigidExpenditure).0,
        I
    ); // floors to 118,500
    assert_eq!(
        outcome(&with((h - line) * 12, 0), Programme::RigidExpenditure).0,
        I
    );
    let r = run(&with(need - 1, 0), &policy());
    let rigid = get(&r, Programme::RigidExpenditure);
    assert_eq!(
        rule(rigid, "rigid_expenditure.income_after_expenses").inputs["adjusted_income_fen"],
        line
    );
    assert_eq!(rigid.margin_fen, 1);
    // Expenses above income clamp H' at 0.
    let r = run(&with(12 * 10_000_000, 0), &policy());
    let rigid = get(&r, Programme::RigidExpenditure);
    assert_eq!(rigid.outcome, E);
    assert_eq!(
        rule(rigid, "rigid_expenditure.income_after_expenses").inputs["adjusted_income_fen"],
        0
    );
    // Covered by a higher tier.
    let mut a = with(need, 0);
    a.members[0].monthly_income_fen = line - 1;
    assert_eq!(outcome(&a, Programme::RigidExpenditure).0, I);
    a.members[0].monthly_income_fen = SN - 1;
    assert_eq!(outcome(&a, Programme::RigidExpenditure).0, I);
    // Marginal only needs review: rigid expenditure can still be eligible.
    a.members[0].monthly_income_fen = line;
    a.medical_expense_12m_fen = 12;
    assert_eq!(outcome(&a, Programme::LowIncomeMarginal).0, R);
    assert_eq!(outcome(&a, Programme::RigidExpenditure).0, E);
    // Assets.
    let mut a = with(need, 0);
    a.vehicles_owned = 1;
    assert_eq!(outcome(&a, Programme::RigidExpenditure).0, I);
}

// ---------------------------------------------------------------- linked programmes

/// Households whose linked status is YES, PENDING and NO, and have no other needs.
fn linked_households() -> [(Linked, Application); 3] {
    let line = SN * 15_000 / 10_000;
    [
        (Linked::Yes, three(SN - 1)),
        (Linked::Pending, three(line)),
        (Linked::No, three(600_000)),
    ]
}

#[test]
fn linked_status() {
    for (linked, app) in linked_households() {
        assert_eq!(Linked::from_assessments(&run(&app, &policy())), linked);
    }
}

#[test]
fn medical_table() {
    for (linked, app) in linked_households() {
        let want = match linked {
            Linked::Yes => E,
            Linked::Pending => R,
            Linked::No => I,
        };
        assert_eq!(outcome(&app, Programme::Medical).0, want, "{linked:?}");
    }
    // Catastrophic costs, with failing assets so nothing is linked:
    // expense · 10000 > 5000 · 12 · H  ⇔  expense > 6 · H.
    let cat = |h: i64, expense: i64| {
        let mut a = three(h);
        a.vehicles_owned = 1;
        a.medical_expense_12m_fen = expense;
        let r = run(&a, &policy());
        assert_eq!(Linked::from_assessments(&r), Linked::No);
        get(&r, Programme::Medical).clone()
    };
    assert_eq!(cat(600_000, 3_600_000).outcome, I);
    assert_eq!(cat(600_000, 3_600_001).outcome, E);
    assert_eq!(cat(600_000, 3_599_999).outcome, I);
    assert_eq!(
        rule(&cat(600_000, 0), "medical.catastrophic").threshold,
        3_600_000
    );
    // With no income, any medical cost is catastrophic; none is not.
    assert_eq!(cat(0, 1).outcome, E);
    assert_eq!(cat(0, 0).outcome, I);
}

#[test]
fn education_housing_employment_tables() {
    let conditions: [(Programme, AppEdit); 3] = [
        (Programme::Education, |a| {
            a.members[2].education = EducationStage::Primary
        }),
        (Programme::Housing, |a| a.housing = Housing::Renting),
        (Programme::Employment, |a| {
            a.members[1].employment = Employment::Unemployed
        }),
    ];
    for (programme, set) in conditions {
        for (linked, app) in linked_households() {
            assert_eq!(
                outcome(&app, programme).0,
                I,
                "{programme} without condition, {linked:?}"
            );
            let mut with = app.clone();
            set(&mut with);
            let want = match linked {
                Linked::Yes => E,
                Linked::Pending => R,
                Linked::No => I,
            };
            assert_eq!(outcome(&with, programme).0, want, "{programme} {linked:?}");
        }
    }
    let (_, yes) = linked_households()[0].clone();
    for h in [Housing::NoHome, Housing::Dilapidated, Housing::Renting] {
        let mut a = yes.clone();
        a.housing = h;
        assert_eq!(outcome(&a, Programme::Housing).0, E, "{h:?}");
    }
    for stage in &EducationStage::ALL[1..] {
        let mut a = yes.clone();
        a.members[0].education = *stage;
        assert_eq!(outcome(&a, Programme::Education).0, E, "{stage:?}");
    }
}

#[test]
fn employment_member_conditions() {
    let (_, yes) = linked_households()[0].clone();
    let app_date = d(APP_DATE);
    let with = |edit: &dyn Fn(&mut Person)| {
        let mut a = yes.clone();
        let mut p = adult(1, 0);
        p.employment = Employment::Unemployed;
        edit(&mut p);
        a.members[1] = p;
        outcome(&a, Programme::Employment).0
    };
    assert_eq!(with(&|_| {}), E);
    assert_eq!(
        with(&|p| *p = Person {
            employment: Employment::Unemployed,
            ..aged(1, 16, 0)
        }),
        E
    );
    assert_eq!(
        with(&|p| *p = Person {
            employment: Employment::Unemployed,
            ..aged(1, 15, 0)
        }),
        I
    );
    assert_eq!(
        with(&|p| *p = Person {
            employment: Employment::Unemployed,
            ..aged(1, 59, 0)
        }),
        E
    );
    assert_eq!(
        with(&|p| *p = Person {
            employment: Employment::Unemployed,
            ..aged(1, 60, 0)
        }),
        I
    );
    let turns_60_tomorrow = app_date.with_year(app_date.year() - 60).unwrap() + TimeDelta::days(1);
    assert_eq!(
        with(&|p| *p = Person {
            employment: Employment::Unemployed,
            ..born(1, turns_60_tomorrow, 0)
        }),
        E
    );
    assert_eq!(with(&|p| p.employment = Employment::Retired), I);
    assert_eq!(with(&|p| p.seriously_ill = true), I);
    assert_eq!(
        with(&|p| p.disability = Some(Disability {
            kind: DisabilityKind::Speech,
            grade: 2
        })),
        I
    );
    assert_eq!(
        with(&|p| p.disability = Some(Disability {
            kind: DisabilityKind::Speech,
            grade: 3
        })),
        E
    );
}

// ---------------------------------------------------------------- temporary, disaster, disability, charity

#[test]
fn temporary_amounts() {
    let emergency = Some(Emergency {
        kind: EmergencyKind::Fire,
        description: String::new(),
    });
    let mut a = three(600_000);
    assert_eq!(outcome(&a, Programme::Temporary), (I, 0));
    a.emergency = emergency.clone();
    // min(2 × 3 × 1,070.00 = 6,420.00, cap 6,000.00)
    assert_eq!(outcome(&a, Programme::Temporary), (E, 600_000));
    let mut one = household(&[600_000]);
    one.emergency = emergency.clone();
    assert_eq!(outcome(&one, Programme::Temporary), (E, 2 * S));
    for (cap, want) in [
        (2 * SN - 1, 2 * SN - 1),
        (2 * SN, 2 * SN),
        (2 * SN + 1, 2 * SN),
    ] {
        let p = policy_with(|p| p.temporary_cap_fen = cap);
        assert_eq!(
            get(&run(&a, &p), Programme::Temporary).amount_fen,
            want,
            "cap {cap}"
        );
    }
    let r = run(&a, &policy());
    assert!(get(&r, Programme::Temporary)
        .summary
        .starts_with("eligible: 6,000.00 yuan once"));
}

#[test]
fn disaster_relief() {
    let mut a = three(600_000);
    assert_eq!(outcome(&a, Programme::DisasterRelief).0, I);
    a.disaster_affected = true;
    assert_eq!(outcome(&a, Programme::DisasterRelief), (E, 0));
}

#[test]
fn disability_subsidy_table() {
    let living = 10_000;
    let care = 12_000;
    let cases = [
        (Linked::Yes, 3, E, living),
        (Linked::Yes, 4, E, living),
        (Linked::Yes, 2, E, living + care),
        (Linked::Yes, 1, E, living + care),
        (Linked::Pending, 3, R, 0),
        (Linked::Pending, 2, E, care),
        (Linked::No, 4, I, 0),
        (Linked::No, 1, E, care),
    ];
    for (linked, grade, want, amount) in cases {
        let (l, mut a) = linked_households()
            .into_iter()
            .find(|(l, _)| *l == linked)
            .unwrap();
        a.members[1].disability = Some(Disability {
            kind: DisabilityKind::Hearing,
            grade,
        });
        let r = run(&a, &policy());
        assert_eq!(Linked::from_assessments(&r), l);
        let got = get(&r, Programme::DisabilitySubsidy);
        assert_eq!(
            (got.outcome, got.amount_fen),
            (want, amount),
            "{linked:?} grade {grade}"
        );
    }
    for (_, a) in linked_households() {
        assert_eq!(outcome(&a, Programme::DisabilitySubsidy).0, I);
    }
    // Two disabled members in a low-income household.
    let (_, mut a) = linked_households()[0].clone();
    a.members[1].disability = Some(Disability {
        kind: DisabilityKind::Visual,
        grade: 1,
    });
    a.members[2].disability = Some(Disability {
        kind: DisabilityKind::Mental,
        grade: 4,
    });
    assert_eq!(
        outcome(&a, Programme::DisabilitySubsidy),
        (E, 2 * living + care)
    );
}

#[test]
fn charity_boundaries() {
    let line = 2 * SN; // 642,000
    let with = |h: i64, consent: bool| {
        let mut a = three(h);
        a.consent_to_share = consent;
        a
    };
    assert_eq!(outcome(&with(line - 1, true), Programme::Charity).0, E);
    assert_eq!(outcome(&with(line, true), Programme::Charity).0, I);
    assert_eq!(outcome(&with(line - 1, false), Programme::Charity).0, I);
    let r = run(&with(line + 9, true), &policy());
    assert_eq!(get(&r, Programme::Charity).margin_fen, 10);
    // Anything else referred (even only for review) closes the charity route.
    let mut a = with(600_000, true);
    a.disaster_affected = true;
    assert_eq!(outcome(&a, Programme::Charity).0, I);
    let line_m = SN * 15_000 / 10_000;
    assert_eq!(outcome(&with(line_m, true), Programme::Charity).0, I);
    // Ineligible programmes point at charity as the next tier.
    let r = run(&with(600_000, true), &policy());
    let dibao = get(&r, Programme::Dibao);
    assert!(
        dibao
            .summary
            .ends_with("next tier: charity referral (ELIGIBLE)"),
        "{}",
        dibao.summary
    );
}

#[test]
fn twelve_assessments_in_order_with_units() {
    let app = onecity_domain::validate_application(
        onecity_domain::fixtures::sample_application(),
        d("2026-01-01"),
    )
    .unwrap();
    let r = run(&app, &policy());
    assert_eq!(r.len(), 12);
    let cat = Catalogue::embedded();
    for (a, p) in r.iter().zip(Programme::ALL) {
        assert_eq!(a.programme, *p);
        assert_eq!(a.department_unit, cat.unit(*p, app.district));
        assert_eq!(a.policy_version, "2025-07");
        assert!(!a.rules.is_empty() && !a.summary.is_empty());
    }
}

// ---------------------------------------------------------------- conversions

#[test]
fn assessments_round_trip_through_proto() {
    let mut a = three(400_000);
    a.emergency = Some(Emergency {
        kind: EmergencyKind::Flood,
        description: "x".into(),
    });
    a.members[1].disability = Some(Disability {
        kind: DisabilityKind::Physical,
        grade: 1,
    });
    for assessment in run(&a, &policy()) {
        let p = proto::Assessment::from(&assessment);
        assert_eq!(p.department_unit, assessment.department_unit.to_string());
        // The by-value conversion (Screen, the assessment worker) says the same.
        assert_eq!(proto::Assessment::from(assessment.clone()), p);
        assert_eq!(Assessment::try_from(p).unwrap(), assessment);
    }
    let bad = proto::Assessment {
        programme: 0,
        ..proto::Assessment::from(&run(&a, &policy())[0])
    };
    assert_eq!(
        Assessment::try_from(bad).unwrap_err().to_string(),
        "invalid assessment.programme: Programme value 0 is unspecified or unknown"
    );
    let bad = proto::Assessment {
        department_unit: "civil-affairs@1".into(),
        ..proto::Assessment::from(&run(&a, &policy())[0])
    };
    assert!(Assessment::try_from(bad).is_err());
}

#[test]
fn policy_to_proto() {
    let p = proto::Policy::from(&policy());
    assert_eq!(p.version_id, "2025-07");
    assert_eq!(p.effective_from, "2025-07-01");
    assert_eq!(p.parameters.len(), Parameters::NAMES.len());
    assert_eq!(p.parameters["dibao_standard_fen"], S);
    assert_eq!(p.district_standards.len(), 16);
    assert_eq!(p.district_standards["120103"], S);
    assert_eq!(p.district_standards["120119"], 98_000);
}

// ---------------------------------------------------------------- policy files

#[test]
fn default_policy_has_every_parameter_with_the_specified_defaults() {
    let b = book();
    assert!(b.versions().len() >= 2);
    let defaults = [
        ("asset_limit_months", 24),
        ("max_homes", 1),
        ("max_vehicles", 0),
        ("dibao_floor_bp", 2000),
        ("special_supplement_bp", 1000),
        ("elderly_age", 60),
        ("minor_age", 18),
        ("marginal_multiple_bp", 15000),
        ("review_band_bp", 500),
        ("extreme_poverty_multiple_bp", 13000),
        ("catastrophic_medical_bp", 5000),
        ("working_age_min", 16),
        ("working_age_max", 59),
        ("temporary_months", 2),
        ("charity_multiple_bp", 20000),
        ("review_interval_months", 12),
        ("unstable_income_review_interval_months", 6),
        ("warning_days", 7),
        ("income_drop_warning_bp", 3000),
    ];
    for v in b.versions() {
        let params = v.parameters();
        assert_eq!(params.len(), 23);
        for name in [
            "dibao_standard_fen",
            "temporary_cap_fen",
            "disability_living_subsidy_fen",
            "disability_care_subsidy_fen",
        ] {
            assert!(params.contains_key(name), "{name}");
        }
        for (name, value) in defaults {
            assert_eq!(params[name], value, "{} {name}", v.id());
        }
        assert_eq!(v.district_standards().len(), 16);
    }
    assert_eq!(
        b.get("2026-07").map(|v| v.effective_from()),
        Some(d("2026-07-01"))
    );
}

#[test]
fn version_in_force_at_each_boundary() {
    let b = book();
    assert_eq!(b.in_force(d("2025-06-30")), None);
    let cases = [
        ("2025-07-01", "2025-07"),
        ("2025-07-02", "2025-07"),
        ("2026-06-30", "2025-07"),
        ("2026-07-01", "2026-07"),
        ("2026-07-02", "2026-07"),
        ("2099-01-01", "2026-07"),
    ];
    for (date, id) in cases {
        assert_eq!(
            b.in_force(d(date)).map(PolicyVersion::id),
            Some(id),
            "{date}"
        );
    }
    // A new version never changes a past assessment: the same application keeps its version.
    let a = three(0);
    let v = b.in_force(a.application_date).unwrap();
    assert_eq!(run(&a, v)[0].policy_version, "2025-07");
}

const MINIMAL: &str = r#"
[[version]]
id = "a"
effective_from = 2025-01-01
dibao_standard_fen = 100000
asset_limit_months = 24
max_homes = 1
max_vehicles = 0
dibao_floor_bp = 2000
special_supplement_bp = 1000
elderly_age = 60
minor_age = 18
marginal_multiple_bp = 15000
review_band_bp = 500
extreme_poverty_multiple_bp = 13000
catastrophic_medical_bp = 5000
working_age_min = 16
working_age_max = 59
temporary_months = 2
temporary_cap_fen = 500000
disability_living_subsidy_fen = 10000
disability_care_subsidy_fen = 10000
charity_multiple_bp = 20000
review_interval_months = 12
unstable_income_review_interval_months = 6
warning_days = 7
income_drop_warning_bp = 3000
"#;

fn second(id: &str, date: &str) -> String {
    MINIMAL
        .replace("id = \"a\"", &format!("id = \"{id}\""))
        .replace(
            "effective_from = 2025-01-01",
            &format!("effective_from = {date}"),
        )
}

fn policy_refused(text: &str, field: &str, reason: &str) {
    let e = PolicyBook::from_toml_str(text, "p.toml").unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("p.toml: "), "{msg}");
    let Error::Config {
        field: f,
        reason: r,
        ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(f, field, "{msg}");
    assert!(r.contains(reason), "{msg}");
}

#[test]
fn policy_loading_errors_name_file_field_and_reason() {
    assert!(PolicyBook::from_toml_str(MINIMAL, "p.toml").is_ok());
    policy_refused(
        &MINIMAL.replace("max_homes = 1\n", ""),
        "version[0].max_homes",
        "missing",
    );
    policy_refused(
        &MINIMAL.replace("max_homes = 1", "max_homes = -1"),
        "version[0].max_homes",
        "must not be negative",
    );
    policy_refused(
        &MINIMAL.replace("max_homes = 1", "max_homes = 10000000000000000"),
        "version[0].max_homes",
        "must be at most",
    );
    policy_refused(
        &MINIMAL.replace("dibao_standard_fen = 100000", "dibao_standard_fen = 0"),
        "version[0].dibao_standard_fen",
        "must be positive",
    );
    policy_refused(
        &MINIMAL.replace("working_age_min = 16", "working_age_min = 60"),
        "version[0].working_age_min",
        "must not exceed working_age_max",
    );
    policy_refused(
        &MINIMAL.replace("id = \"a\"\n", ""),
        "version[0].id",
        "missing",
    );
    policy_refused(
        &MINIMAL.replace("effective_from = 2025-01-01\n", ""),
        "version[0].effective_from",
        "missing",
    );
    policy_refused(
        &MINIMAL.replace("2025-01-01", "2025-02-30"),
        "effective_from",
        "line 4",
    );
    policy_refused(
        &MINIMAL.replace("2025-01-01", "\"soon\""),
        "version[0].effective_from",
        "must be a date",
    );
    policy_refused(
        &MINIMAL.replace("max_homes = 1", "max_homes = \"one\""),
        "max_homes",
        "invalid type",
    );
    policy_refused(
        &MINIMAL.replace("max_homes = 1", "max_homes = 1\nmax_boats = 1"),
        "max_boats",
        "unknown field",
    );
    policy_refused(
        &format!("{MINIMAL}{}", second("a", "2026-01-01")),
        "version[1].id",
        "duplicate version id \"a\"",
    );
    policy_refused(
        &format!("{MINIMAL}{}", second("b", "2025-01-01")),
        "version[1].effective_from",
        "must be later than the previous version's 2025-01-01",
    );
    policy_refused(
        &format!("{MINIMAL}{}", second("b", "2024-01-01")),
        "version[1].effective_from",
        "must be later",
    );
    policy_refused(
        &format!("{MINIMAL}[version.district_standards]\n\"120199\" = 5\n"),
        "version[0].district_standards.120199",
        "unknown district code",
    );
    policy_refused(
        &format!("{MINIMAL}[version.district_standards]\n\"120101\" = -5\n"),
        "version[0].district_standards.120101",
        "must not be negative",
    );
    policy_refused("", "version", "at least one version is required");
    policy_refused("[[version]\n", "[[version]", "line 1");

    let ok = PolicyBook::from_toml_str(
        &format!(
            "{MINIMAL}[version.district_standards]\n\"120101\" = 5\n{}",
            second("b", "\"2026-01-01\"")
        ),
        "p.toml",
    )
    .unwrap();
    assert_eq!(
        ok.versions()[0].standard_for(DistrictCode::parse("120101").unwrap()),
        5
    );
    assert_eq!(
        ok.versions()[1].standard_for(DistrictCode::parse("120101").unwrap()),
        100_000
    );
}

#[test]
fn policy_load_from_file() {
    let dir = std::env::temp_dir().join(format!("onecity-eligibility-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, MINIMAL).unwrap();
    assert_eq!(PolicyBook::load(&good).unwrap().versions().len(), 1);
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, MINIMAL.replace("minor_age = 18\n", "")).unwrap();
    let msg = PolicyBook::load(&bad).unwrap_err().to_string();
    assert_eq!(
        msg,
        format!("{}: version[0].minor_age: missing", bad.display())
    );
    let missing = dir.join("missing.toml");
    let msg = PolicyBook::load(&missing).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!("{}: (file): cannot read", missing.display())),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------- properties

fn arb_person(i: usize, app_date: NaiveDate) -> impl Strategy<Value = Person> {
    (
        0i64..=95 * 366,
        proptest::option::of((proptest::sample::select(DisabilityKind::ALL), 1u8..=4)),
        any::<bool>(),
        proptest::sample::select(Employment::ALL),
        proptest::sample::select(EducationStage::ALL),
        prop_oneof![Just(0i64), 0i64..=300_000, 0i64..=2_000_000],
        proptest::sample::select(Supporter::ALL),
    )
        .prop_map(
            move |(days, disability, ill, employment, education, income, supporter)| {
                let birth = app_date - TimeDelta::days(days);
                Person {
                    disability: disability.map(|(kind, grade)| Disability { kind, grade }),
                    seriously_ill: ill,
                    employment,
                    education,
                    supporter,
                    ..born(i as u16, birth, income)
                }
            },
        )
}

fn arb_app() -> impl Strategy<Value = Application> {
    (0i64..=900, 1usize..=6)
        .prop_flat_map(|(day, n)| {
            let app_date = d("2025-07-01") + TimeDelta::days(day);
            (
                Just(app_date),
                (0..n).map(|i| arb_person(i, app_date)).collect::<Vec<_>>(),
                0usize..16,
                prop_oneof![Just(0i64), 0i64..=20_000_000],
                (0u32..=2, 0u32..=1),
                proptest::sample::select(Housing::ALL),
                (
                    prop_oneof![Just(0i64), 0i64..=10_000_000],
                    prop_oneof![Just(0i64), 0i64..=3_000_000],
                ),
                proptest::option::of(proptest::sample::select(EmergencyKind::ALL)),
                (any::<bool>(), any::<bool>()),
            )
        })
        .prop_map(
            |(
                app_date,
                members,
                district,
                assets,
                (homes, vehicles),
                housing,
                (med, other),
                emergency,
                (disaster, consent),
            )| Application {
                district: DistrictCode::all().nth(district).unwrap(),
                members,
                financial_assets_fen: assets,
                homes_owned: homes,
                vehicles_owned: vehicles,
                housing,
                medical_expense_12m_fen: med,
                other_rigid_expense_12m_fen: other,
                emergency: emergency.map(|kind| Emergency {
                    kind,
                    description: String::new(),
                }),
                disaster_affected: disaster,
                consent_to_share: consent,
                application_date: app_date,
                contact_phone: String::new(),
            },
        )
}

fn rank(o: Outcome) -> u8 {
    match o {
        E => 2,
        R => 1,
        I => 0,
    }
}

fn assess_in_force(app: &Application) -> Vec<Assessment> {
    let b = book();
    run(app, b.in_force(app.application_date).unwrap())
}

/// Outcomes that only depend on income through tests of "income below a line": more income can
/// never make them better. Marginal, rigid expenditure and charity are left out on purpose:
/// they step aside when a higher tier covers the household, so less income can worsen them.
const INCOME_MONOTONE: [Programme; 7] = [
    Programme::Dibao,
    Programme::ExtremePoverty,
    Programme::Medical,
    Programme::Education,
    Programme::Housing,
    Programme::Employment,
    Programme::DisabilitySubsidy,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn more_income_never_improves_an_income_tested_outcome(
        app in arb_app(),
        who in any::<prop::sample::Index>(),
        extra in prop_oneof![1i64..=100, 1i64..=5_000_000],
    ) {
        let before = assess_in_force(&app);
        let mut richer = app.clone();
        let k = who.index(richer.members.len());
        richer.members[k].monthly_income_fen += extra;
        let after = assess_in_force(&richer);
        for p in INCOME_MONOTONE {
            let (b, a) = (get(&before, p), get(&after, p));
            prop_assert!(rank(a.outcome) <= rank(b.outcome), "{} improved: {} -> {}", p, b.outcome, a.outcome);
        }
        prop_assert!(Linked::from_assessments(&after) <= Linked::from_assessments(&before));
        let (b, a) = (get(&before, Programme::Dibao), get(&after, Programme::Dibao));
        if a.outcome == E {
            prop_assert!(a.amount_fen <= b.amount_fen);
        }
    }

    #[test]
    fn invariants_of_every_assessment(app in arb_app()) {
        let r = assess_in_force(&app);
        prop_assert_eq!(r.len(), 12);
        let linked = Linked::from_assessments(&r);
        for (a, p) in r.iter().zip(Programme::ALL) {
            prop_assert_eq!(a.programme, *p);
            prop_assert!(a.amount_fen >= 0);
            prop_assert!(a.margin_fen >= 0);
            if a.outcome != E {
                prop_assert_eq!(a.amount_fen, 0);
            } else {
                prop_assert_eq!(a.margin_fen, 0);
            }
            prop_assert_eq!(a.department_unit.district, app.district);
        }
        // Charity only when nothing else is referred.
        if get(&r, Programme::Charity).outcome == E {
            for a in &r[..11] {
                prop_assert_eq!(a.outcome, I, "{} alongside charity", a.programme);
            }
        }
        // Linked programmes are never eligible without low-income recognition, except
        // medical's catastrophic case and the disability care part.
        if linked == Linked::No {
            for p in [Programme::Education, Programme::Housing, Programme::Employment] {
                prop_assert_ne!(get(&r, p).outcome, E);
            }
            let medical = get(&r, Programme::Medical);
            if medical.outcome == E {
                prop_assert!(rule(medical, "medical.catastrophic").held);
            }
            prop_assert_ne!(medical.outcome, R);
            let dis = get(&r, Programme::DisabilitySubsidy);
            prop_assert_eq!(rule(dis, "disability_subsidy.living").inputs["living_members"], 0);
            let severe = app.members.iter().filter(|m| m.disability_grade().is_some_and(|g| g <= 2)).count() as i64;
            let care = book().in_force(app.application_date).unwrap().params().disability_care_subsidy_fen;
            prop_assert_eq!(dis.amount_fen, severe * care);
        }
    }

    /// The summary-only detail (`Screen`'s BASIC view) gives exactly the full result
    /// without its rules: it renders only the explanations summaries quote, so a summary
    /// built from an explanation the full detail would word differently shows up here.
    #[test]
    fn summary_detail_is_the_full_result_without_rules(app in arb_app()) {
        let b = book();
        let policy = b.in_force(app.application_date).unwrap();
        let catalogue = Catalogue::embedded();
        let full = assess_with(&app, policy, &catalogue, Detail::Full);
        prop_assert_eq!(&full, &assess(&app, policy, &catalogue));
        let brief = assess_with(&app, policy, &catalogue, Detail::Summary);
        prop_assert!(brief.iter().all(|a| a.rules.is_empty()));
        let stripped: Vec<Assessment> = full
            .into_iter()
            .map(|a| Assessment { rules: Vec::new(), ..a })
            .collect();
        prop_assert_eq!(brief, stripped);
    }

    #[test]
    fn version_in_force_is_the_latest_started(day in 0i64..2000) {
        let b = book();
        let date = d("2025-01-01") + TimeDelta::days(day);
        match b.in_force(date) {
            None => prop_assert!(date < b.versions()[0].effective_from()),
            Some(v) => {
                prop_assert!(v.effective_from() <= date);
                let later = b.versions().iter().find(|w| w.effective_from() > v.effective_from());
                if let Some(next) = later {
                    prop_assert!(next.effective_from() > date);
                }
            }
        }
    }

    #[test]
    fn huge_incomes_do_not_overflow(income in (i64::MAX / 20)..=i64::MAX, n in 1usize..=20) {
        let mut app = household(&vec![income / 20; n]);
        app.medical_expense_12m_fen = i64::MAX;
        app.other_rigid_expense_12m_fen = i64::MAX;
        app.financial_assets_fen = i64::MAX;
        app.emergency = Some(Emergency { kind: EmergencyKind::Other, description: String::new() });
        let r = run(&app, &policy());
        prop_assert!(r.iter().all(|a| a.amount_fen >= 0 && a.margin_fen >= 0));
    }
}

// ---------------------------------------------------------------- decided recognition

fn decided(app: &Application, decisions: &[Decided]) -> Vec<Assessment> {
    explain(
        &decide(app, &policy(), &Catalogue::embedded(), decisions),
        Detail::Full,
    )
}

fn deny(programme: Programme) -> Decided {
    Decided {
        programme,
        approved: false,
    }
}

fn approve(programme: Programme) -> Decided {
    Decided {
        programme,
        approved: true,
    }
}

const LINKED_PROGRAMMES: [Programme; 5] = [
    Programme::Medical,
    Programme::Education,
    Programme::Housing,
    Programme::Employment,
    Programme::DisabilitySubsidy,
];

/// A renting household with a child at school, an unemployed adult and a member with
/// disability grade 3, at income `h`: every linked programme has its condition met.
fn linked_needs(h: i64) -> Application {
    let mut a = three(h);
    a.members[2].education = EducationStage::Primary;
    a.members[2].disability = Some(Disability {
        kind: DisabilityKind::ALL[0],
        grade: 3,
    });
    a.housing = Housing::Renting;
    a.members[0].employment = Employment::Unemployed;
    a
}

#[test]
fn decided_recognition_replaces_the_predicted_one() {
    let line = SN * 15_000 / 10_000;
    // Predicted dibao (YES): a denial leaves no recognition; an approval keeps it.
    let yes = linked_needs(SN - 1);
    assert_eq!(Linked::from_assessments(&run(&yes, &policy())), Linked::Yes);
    let denied = decided(&yes, &[deny(Programme::Dibao)]);
    let approved = decided(&yes, &[approve(Programme::Dibao)]);
    for p in LINKED_PROGRAMMES {
        assert_eq!(get(&denied, p).outcome, I, "{p} after a denial");
        assert_eq!(get(&approved, p).outcome, E, "{p} after an approval");
    }
    let why = rule(get(&denied, Programme::Medical), "medical.linked");
    assert!(!why.held);
    assert!(
        why.explanation.contains("denied (decided)"),
        "{}",
        why.explanation
    );
    assert_eq!(why.inputs["decided_recognitions"], 1);
    let why = rule(get(&approved, Programme::Housing), "housing.linked");
    assert!(
        why.explanation.contains("approved (decided)"),
        "{}",
        why.explanation
    );
    // Predicted marginal review (PENDING): an approval makes every linked programme
    // ELIGIBLE, the disability living subsidy included.
    let pending = linked_needs(line);
    assert_eq!(
        Linked::from_assessments(&run(&pending, &policy())),
        Linked::Pending
    );
    let approved = decided(&pending, &[approve(Programme::LowIncomeMarginal)]);
    for p in LINKED_PROGRAMMES {
        assert_eq!(get(&approved, p).outcome, E, "{p}");
    }
    assert!(get(&approved, Programme::DisabilitySubsidy).amount_fen > 0);
    // A denial of one tier leaves a predicted other one in place, and says so.
    let both = decided(&yes, &[deny(Programme::LowIncomeMarginal)]);
    let why = rule(get(&both, Programme::Education), "education.linked");
    assert!(why.held);
    assert!(
        why.explanation.contains("(predicted)"),
        "{}",
        why.explanation
    );
    // Catastrophic medical costs stay met without any recognition.
    let mut cat = yes.clone();
    cat.medical_expense_12m_fen = 100_000_000;
    assert_eq!(
        get(
            &decided(&cat, &[deny(Programme::Dibao)]),
            Programme::Medical
        )
        .outcome,
        E
    );
}

#[test]
fn decisions_leave_the_recognition_tiers_and_the_unlinked_programmes_alone() {
    let app = linked_needs(SN - 1);
    let before = run(&app, &policy());
    let after = decided(&app, &[deny(Programme::Dibao), approve(Programme::Medical)]);
    for p in [
        Programme::Dibao,
        Programme::ExtremePoverty,
        Programme::LowIncomeMarginal,
        Programme::RigidExpenditure,
        Programme::Temporary,
        Programme::DisasterRelief,
    ] {
        assert_eq!(get(&before, p), get(&after, p), "{p}");
    }
    // A decision of a programme that is not a recognition is ignored.
    assert_eq!(decided(&app, &[approve(Programme::Medical)]), before);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Nothing decided is today's assessment, to the byte (the stored assessments and
    /// their digests do not change); an approval never makes a linked programme worse
    /// than a denial of the same tier; the explanations say when a decision was used.
    #[test]
    fn rules_with_decided_recognition(
        app in arb_app(),
        tier in proptest::sample::select(vec![
            Programme::Dibao,
            Programme::ExtremePoverty,
            Programme::LowIncomeMarginal,
            Programme::RigidExpenditure,
        ]),
    ) {
        let b = book();
        let policy = b.in_force(app.application_date).unwrap();
        let cat = Catalogue::embedded();
        let predicted = assess(&app, policy, &cat);
        prop_assert_eq!(&explain(&decide(&app, policy, &cat, &[]), Detail::Full), &predicted);
        let yes = explain(&decide(&app, policy, &cat, &[approve(tier)]), Detail::Full);
        let no = explain(&decide(&app, policy, &cat, &[deny(tier)]), Detail::Full);
        for p in LINKED_PROGRAMMES {
            prop_assert!(rank(get(&yes, p).outcome) >= rank(get(&no, p).outcome), "{}", p);
            prop_assert!(rank(get(&yes, p).outcome) >= rank(get(&predicted, p).outcome), "{}", p);
            prop_assert!(rank(get(&no, p).outcome) <= rank(get(&predicted, p).outcome), "{}", p);
            for r in &get(&yes, p).rules {
                if r.rule.ends_with(".linked") {
                    prop_assert!(r.explanation.contains("(decided)"), "{}", r.explanation);
                    prop_assert!(r.held);
                }
            }
        }
        for (a, p) in predicted.iter().zip(&yes) {
            // Their summaries may name another tier, whose outcome may have changed.
            if !LINKED_PROGRAMMES.contains(&a.programme) && a.programme != Programme::Charity {
                prop_assert_eq!(a.outcome, p.outcome);
                prop_assert_eq!(a.amount_fen, p.amount_fen);
                prop_assert_eq!(&a.rules, &p.rules);
            }
        }
        // Summary detail agrees with full detail, decisions or not.
        let summary = explain(&decide(&app, policy, &cat, &[deny(tier)]), Detail::Summary);
        for (s, f) in summary.iter().zip(&no) {
            prop_assert_eq!(&s.summary, &f.summary);
            prop_assert_eq!(s.outcome, f.outcome);
        }
    }
}

// ---------------------------------------------------------------- re-verification

#[test]
fn review_dates_count_calendar_months_from_the_approval() {
    let p = policy();
    // Working-age members in the labour force: unstable income, the shorter interval.
    let working = household(&[100_000]);
    assert!(review::unstable_income(&working, &p, d("2026-01-31")));
    assert_eq!(
        review::review_interval_months(&working, &p, d("2026-01-31")),
        6
    );
    assert_eq!(
        review::review_due_on(&working, &p, d("2026-01-31")),
        d("2026-07-31")
    );
    assert_eq!(
        review::review_due_on(&working, &p, d("2026-08-31")),
        d("2027-02-28")
    );
    let mut unemployed = household(&[0]);
    unemployed.members[0].employment = Employment::Unemployed;
    assert!(review::unstable_income(&unemployed, &p, d("2026-01-31")));

    // Nobody of working age in the labour force: the ordinary interval.
    let mut fixed = household(&[100_000, 0]);
    fixed.members[0].employment = Employment::Retired;
    fixed.members[1].employment = Employment::NotInLabourForce;
    assert!(!review::unstable_income(&fixed, &p, d("2026-01-31")));
    assert_eq!(
        review::review_due_on(&fixed, &p, d("2026-01-31")),
        d("2027-01-31")
    );
    assert_eq!(
        review::review_due_on(&fixed, &p, d("2028-02-29")),
        d("2029-02-28")
    );
    // An employed member past working age on the approval date is not in the rule.
    let mut elderly = household(&[100_000]);
    elderly.members[0] = aged(0, 59, 100_000);
    let sixtieth = d(APP_DATE).with_year(d(APP_DATE).year() + 1).unwrap();
    assert!(review::unstable_income(
        &elderly,
        &p,
        sixtieth.pred_opt().unwrap()
    ));
    assert!(!review::unstable_income(&elderly, &p, sixtieth));

    // Each interval is the policy's.
    let q = policy_with(|x| {
        x.review_interval_months = 24;
        x.unstable_income_review_interval_months = 1;
    });
    assert_eq!(
        review::review_due_on(&fixed, &q, d("2026-01-31")),
        d("2028-01-31")
    );
    assert_eq!(
        review::review_due_on(&working, &q, d("2026-01-31")),
        d("2026-02-28")
    );
}

#[test]
fn review_intervals_are_checked() {
    let refused = |interval: i64, unstable: i64| {
        let text = MINIMAL
            .replace(
                "review_interval_months = 12",
                &format!("review_interval_months = {interval}"),
            )
            .replace(
                "unstable_income_review_interval_months = 6",
                &format!("unstable_income_review_interval_months = {unstable}"),
            );
        PolicyBook::from_toml_str(&text, "p.toml")
            .unwrap_err()
            .to_string()
    };
    assert!(refused(0, 0).contains("review_interval_months"));
    assert!(refused(12, 0).contains("unstable_income_review_interval_months"));
    assert!(refused(6, 12).contains("unstable_income_review_interval_months"));
    let missing = MINIMAL.replace("unstable_income_review_interval_months = 6\n", "");
    assert!(PolicyBook::from_toml_str(&missing, "p.toml")
        .unwrap_err()
        .to_string()
        .contains("unstable_income_review_interval_months"));
}

/// Every decision set the linkage can give: each tier undecided, approved or denied.
fn arb_decided() -> impl Strategy<Value = Vec<Decided>> {
    proptest::collection::vec(0u8..3, 4).prop_map(|choice| {
        [
            Programme::Dibao,
            Programme::ExtremePoverty,
            Programme::LowIncomeMarginal,
            Programme::RigidExpenditure,
        ]
        .into_iter()
        .zip(choice)
        .filter_map(|(programme, c)| {
            (c > 0).then_some(Decided {
                programme,
                approved: c == 1,
            })
        })
        .collect()
    })
}

/// What the log stores of `lean`, as it reads back from the bytes.
fn stored(lean: &[LeanAssessment]) -> Vec<proto::Assessment> {
    use onecity_proto::prost::Message as _;
    let bytes = proto::EligibilityAssessed {
        assessments: lean.iter().map(Into::into).collect(),
        policy_version: String::new(),
    }
    .encode_to_vec();
    proto::EligibilityAssessed::decode(bytes.as_slice())
        .unwrap()
        .assessments
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// An assessment read back from its stored form (rule codes and inputs, no words)
    /// renders exactly what was shown when it was made, under every shipped version, with
    /// any recognition decided; and the stored form is several times smaller.
    #[test]
    fn the_stored_form_renders_what_was_assessed(app in arb_app(), decided in arb_decided()) {
        let b = book();
        let cat = Catalogue::embedded();
        for policy in b.versions() {
            let lean = decide(&app, policy, &cat, &decided);
            let shown: Vec<proto::Assessment> =
                explain(&lean, Detail::Full)
                    .into_iter()
                    .map(Into::into)
                    .collect();
            let back = stored(&lean);
            for a in &back {
                prop_assert!(a.summary.is_empty());
                prop_assert!(a.rules.iter().all(|r| r.explanation.is_empty() && r.code != 0));
            }
            let size = |a: &[proto::Assessment]| {
                a.iter().map(onecity_proto::prost::Message::encoded_len).sum::<usize>()
            };
            prop_assert!(size(&back) * 3 < size(&shown), "{} vs {}", size(&back), size(&shown));
            prop_assert_eq!(explain_stored(back).unwrap(), shown);
        }
    }
}

#[test]
fn a_stored_assessment_that_does_not_read_back_is_refused() {
    let b = book();
    let policy = b.versions().last().unwrap();
    let app = household(&[50_000, 0, 30_000]);
    let lean = decide(&app, policy, &Catalogue::embedded(), &[]);

    let mut unknown = stored(&lean);
    unknown[3].rules[0].code = 999;
    let err = explain_stored(unknown).unwrap_err();
    assert!(err.to_string().contains("no rule has code 999"), "{err}");

    let mut short = stored(&lean);
    short[0].rules[0].values.pop();
    let err = explain_stored(short).unwrap_err();
    assert!(err.to_string().contains("rule.values"), "{err}");

    let mut mixed = stored(&lean);
    mixed[5] = assess(&app, policy, &Catalogue::embedded())[5]
        .clone()
        .into();
    let err = explain_stored(mixed).unwrap_err();
    assert!(err.to_string().contains("mixed"), "{err}");
}

/// Events written before the stored form carry their words: they read as they are.
#[test]
fn assessments_stored_rendered_read_as_they_are() {
    let b = book();
    let policy = b.versions().first().unwrap();
    let rendered: Vec<proto::Assessment> =
        assess(&household(&[50_000, 0]), policy, &Catalogue::embedded())
            .into_iter()
            .map(Into::into)
            .collect();
    assert_eq!(explain_stored(rendered.clone()).unwrap(), rendered);
}
