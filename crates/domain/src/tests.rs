//! Validation rules, one by one, and the domain → proto → domain round trip.

use chrono::NaiveDate;
use onecity_proto::v1 as proto;
use proptest::prelude::*;

use crate::fixtures::{sample_application, valid_id_number};
use crate::*;

fn d(s: &str) -> NaiveDate {
    parse_date(s).unwrap()
}

const TODAY: &str = "2025-09-10";

fn check(p: proto::Application) -> Result<Application, Invalid> {
    validate_application(p, d(TODAY))
}

/// Applies `edit` to the sample and expects the given field and reason.
fn refused(edit: impl FnOnce(&mut proto::Application), field: &str, reason: &str) {
    let mut p = sample_application();
    edit(&mut p);
    let err = check(p).expect_err("expected a violation");
    assert_eq!((err.field.as_str(), err.reason.as_str()), (field, reason));
}

#[test]
fn sample_is_valid() {
    let app = check(sample_application()).unwrap();
    assert_eq!(app.members.len(), 3);
    assert_eq!(app.district.code(), "120103");
    assert_eq!(app.applicant().map(|a| a.name.as_str()), Some("张伟"));
    assert_eq!(app.emergency, None);
}

#[test]
fn message_names_field() {
    let mut p = sample_application();
    p.members[2].id_number.replace_range(17.., "0");
    if p.members[2].id_number == sample_application().members[2].id_number {
        p.members[2].id_number.replace_range(17.., "1");
    }
    let err = check(p).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid application.members[2].id_number: check character does not match"
    );
}

#[test]
fn district() {
    refused(
        |p| p.district_code = "120107".into(),
        "application.district_code",
        "must be one of the 16 tianjin district codes",
    );
    refused(
        |p| p.district_code.clear(),
        "application.district_code",
        "must be one of the 16 tianjin district codes",
    );
}

#[test]
fn member_count_and_applicant() {
    refused(
        |p| p.members.clear(),
        "application.members",
        "at least 1 member is required",
    );
    refused(
        |p| {
            let extra = p.members[2].clone();
            for i in 0..18u16 {
                let mut m = extra.clone();
                m.id_number = valid_id_number("120103", d("2016-06-01"), 100 + i);
                p.members.push(m);
            }
        },
        "application.members",
        "at most 20 members are allowed, got 21",
    );
    refused(
        |p| p.members[0].relationship = proto::Relationship::Spouse as i32,
        "application.members",
        "exactly one member must be the applicant, found 0",
    );
    refused(
        |p| p.members[1].relationship = proto::Relationship::Applicant as i32,
        "application.members",
        "exactly one member must be the applicant, found 2",
    );
    // 20 members is fine.
    let mut p = sample_application();
    for i in 0..17u16 {
        let mut m = p.members[2].clone();
        m.id_number = valid_id_number("120103", d("2016-06-01"), 100 + i);
        p.members.push(m);
    }
    assert_eq!(check(p).unwrap().members.len(), 20);
}

#[test]
fn id_numbers() {
    let f = "application.members[1].id_number";
    refused(
        |p| {
            p.members[1].id_number.pop();
        },
        f,
        "must be 18 characters",
    );
    refused(
        |p| p.members[1].id_number.replace_range(0..1, "A"),
        f,
        "first 17 characters must be digits",
    );
    refused(
        |p| p.members[1].id_number.replace_range(17.., "Z"),
        f,
        "last character must be a digit or X",
    );
    refused(
        |p| p.members[1].birth_date = "1982-11-03".into(),
        f,
        "embedded birth date does not match birth_date",
    );
    refused(
        |p| p.members[1].id_number = p.members[0].id_number.clone(),
        f,
        "embedded birth date does not match birth_date",
    );
    refused(
        |p| {
            p.members[1].id_number = p.members[0].id_number.clone();
            p.members[1].birth_date = p.members[0].birth_date.clone();
        },
        f,
        "duplicate identity number in the household",
    );
    // Lowercase x is accepted and normalised.
    let mut p = sample_application();
    let birth = d("1982-11-02");
    let id = (0..1000)
        .map(|s| valid_id_number("120103", birth, s))
        .find(|id| id.ends_with('X'))
        .unwrap();
    p.members[1].id_number = id.to_lowercase();
    assert_eq!(check(p).unwrap().members[1].id_number.expose(), id);
}

#[test]
fn names_and_strings_count_characters() {
    let f = "application.members[0].name";
    refused(|p| p.members[0].name.clear(), f, "must not be empty");
    refused(
        |p| p.members[0].name = "张".repeat(65),
        f,
        "must be at most 64 characters",
    );
    let mut p = sample_application();
    p.members[0].name = "张".repeat(64); // 192 bytes, 64 characters
    p.contact_phone = "电".repeat(32);
    p.emergency = Some(proto::Emergency {
        kind: proto::EmergencyKind::Fire as i32,
        description: "火".repeat(2000),
    });
    let app = check(p).unwrap();
    assert_eq!(app.emergency.map(|e| e.kind), Some(EmergencyKind::Fire));
    refused(
        |p| p.contact_phone = "1".repeat(33),
        "application.contact_phone",
        "must be at most 32 characters",
    );
    refused(
        |p| {
            p.emergency = Some(proto::Emergency {
                kind: proto::EmergencyKind::Fire as i32,
                description: "x".repeat(2001),
            })
        },
        "application.emergency.description",
        "must be at most 2000 characters",
    );
}

#[test]
fn free_text_refuses_control_and_bidi_characters_and_blank_names() {
    refused(
        |p| p.members[1].name = "  \u{3000}".into(),
        "application.members[1].name",
        "must not be whitespace only",
    );
    refused(
        |p| p.members[0].name = "张\u{202E}伟".into(),
        "application.members[0].name",
        "must not contain bidirectional formatting characters (found U+202E)",
    );
    refused(
        |p| p.contact_phone = "1380\r\n0000".into(),
        "application.contact_phone",
        "must not contain control characters (found U+000D)",
    );
    refused(
        |p| {
            p.emergency = Some(proto::Emergency {
                kind: proto::EmergencyKind::Fire as i32,
                description: "fire\u{2066}x".into(),
            })
        },
        "application.emergency.description",
        "must not contain bidirectional formatting characters (found U+2066)",
    );
    // Prose may run over lines.
    let mut p = sample_application();
    p.emergency = Some(proto::Emergency {
        kind: proto::EmergencyKind::Fire as i32,
        description: "kitchen fire\n\tflat uninhabitable".into(),
    });
    assert!(check(p).is_ok());
}

#[test]
fn dates() {
    let f = "application.members[2].birth_date";
    refused(
        |p| p.members[2].birth_date = "2016-6-1".into(),
        f,
        "must be a real date written YYYY-MM-DD",
    );
    let future = "2025-09-11";
    refused(
        |p| {
            p.members[2].birth_date = future.into();
            p.members[2].id_number = valid_id_number("120103", d(future), 31);
            p.application_date = future.into();
        },
        f,
        "must not be in the future",
    );
    refused(
        |p| {
            p.members[2].birth_date = "2025-09-05".into();
            p.members[2].id_number = valid_id_number("120103", d("2025-09-05"), 31);
        },
        f,
        "is after the application date",
    );
    let a = "application.application_date";
    refused(
        |p| p.application_date = "2025-02-29".into(),
        a,
        "must be a real date written YYYY-MM-DD",
    );
    refused(
        |p| p.application_date = "".into(),
        a,
        "must be a real date written YYYY-MM-DD",
    );
    refused(
        |p| p.application_date = "2025-09-11".into(),
        a,
        "must not be in the future",
    );
    let mut p = sample_application();
    p.application_date = TODAY.into();
    assert!(check(p).is_ok());
}

#[test]
fn enums_must_be_set_and_known() {
    refused(
        |p| p.members[0].relationship = 0,
        "application.members[0].relationship",
        "must be set",
    );
    refused(
        |p| p.members[0].relationship = 42,
        "application.members[0].relationship",
        "unknown value 42",
    );
    refused(
        |p| p.members[1].employment = 0,
        "application.members[1].employment",
        "must be set",
    );
    refused(
        |p| p.members[1].education = 0,
        "application.members[1].education",
        "must be set",
    );
    refused(
        |p| p.members[1].supporter = 9,
        "application.members[1].supporter",
        "unknown value 9",
    );
    refused(|p| p.housing = 0, "application.housing", "must be set");
    refused(
        |p| {
            p.emergency = Some(proto::Emergency {
                kind: 77,
                description: String::new(),
            })
        },
        "application.emergency.kind",
        "unknown value 77",
    );
    // Unspecified emergency kind means no emergency.
    let mut p = sample_application();
    p.emergency = Some(proto::Emergency {
        kind: 0,
        description: "nothing".into(),
    });
    assert_eq!(check(p).unwrap().emergency, None);
}

#[test]
fn disability() {
    let g = "application.members[0].disability.grade";
    let dis = |kind: i32, grade: i32| Some(proto::Disability { kind, grade });
    refused(
        |p| p.members[0].disability = dis(1, 0),
        g,
        "must be between 1 and 4",
    );
    refused(
        |p| p.members[0].disability = dis(1, 5),
        g,
        "must be between 1 and 4",
    );
    refused(
        |p| p.members[0].disability = dis(0, 2),
        g,
        "must be 0 when no disability kind is set",
    );
    refused(
        |p| p.members[0].disability = dis(8, 2),
        "application.members[0].disability.kind",
        "unknown value 8",
    );
    let mut p = sample_application();
    p.members[0].disability = dis(proto::DisabilityKind::Visual as i32, 1);
    p.members[1].disability = dis(0, 0);
    let app = check(p).unwrap();
    assert_eq!(
        app.members[0].disability,
        Some(Disability {
            kind: DisabilityKind::Visual,
            grade: 1
        })
    );
    assert_eq!(app.members[1].disability, None);
}

#[test]
fn money_and_counts_non_negative() {
    refused(
        |p| p.financial_assets_fen = -1,
        "application.financial_assets_fen",
        "must not be negative",
    );
    refused(
        |p| p.homes_owned = -1,
        "application.homes_owned",
        "must not be negative",
    );
    refused(
        |p| p.vehicles_owned = -1,
        "application.vehicles_owned",
        "must not be negative",
    );
    refused(
        |p| p.medical_expense_12m_fen = -1,
        "application.medical_expense_12m_fen",
        "must not be negative",
    );
    refused(
        |p| p.other_rigid_expense_12m_fen = -1,
        "application.other_rigid_expense_12m_fen",
        "must not be negative",
    );
    refused(
        |p| p.members[1].monthly_income_fen = -1,
        "application.members[1].monthly_income_fen",
        "must not be negative",
    );
    let mut p = sample_application();
    p.financial_assets_fen = 0;
    p.members[1].monthly_income_fen = i64::MAX;
    assert!(check(p).is_ok());
}

#[test]
fn first_violation_in_field_order_wins() {
    refused(
        |p| {
            p.contact_phone = "1".repeat(40);
            p.housing = 0;
            p.members[2].name.clear();
            p.members[1].supporter = 0;
        },
        "application.members[1].supporter",
        "must be set",
    );
    refused(
        |p| {
            p.contact_phone = "1".repeat(40);
            p.district_code = "x".into();
            p.members.clear();
        },
        "application.district_code",
        "must be one of the 16 tianjin district codes",
    );
    // A malformed birth date is reported as such, not as an id_number mismatch.
    refused(
        |p| p.members[0].birth_date = "1980-03-1".into(),
        "application.members[0].birth_date",
        "must be a real date written YYYY-MM-DD",
    );
}

#[test]
fn round_trip_of_sample() {
    let app = check(sample_application()).unwrap();
    assert_eq!(proto::Application::from(&app), sample_application());
}

fn arb_enum<T: Copy + std::fmt::Debug + 'static>(all: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(all)
}

fn arb_person(i: usize, application_date: NaiveDate) -> impl Strategy<Value = Person> {
    let max_days = (application_date - d("1900-01-01")).num_days();
    let relationship = if i == 0 {
        Just(Relationship::Applicant).boxed()
    } else {
        arb_enum(&Relationship::ALL[1..]).boxed()
    };
    (
        0..=max_days,
        "[a-zA-Z\u{4e00}-\u{9fa5}·][a-zA-Z\u{4e00}-\u{9fa5} ·]{0,63}",
        relationship,
        proptest::option::of((arb_enum(DisabilityKind::ALL), 1u8..=4)),
        any::<bool>(),
        arb_enum(Employment::ALL),
        arb_enum(EducationStage::ALL),
        0..=i64::MAX,
        arb_enum(Supporter::ALL),
        prop_oneof![Just("120103"), Just("110105"), Just("440305")],
    )
        .prop_map(
            move |(
                days,
                name,
                relationship,
                disability,
                ill,
                job,
                edu,
                income,
                supporter,
                region,
            )| {
                let birth_date = d("1900-01-01") + chrono::TimeDelta::days(days);
                Person {
                    // The sequence is the index, so numbers are unique within the household.
                    id_number: IdNumber::parse(&valid_id_number(region, birth_date, i as u16))
                        .unwrap(),
                    name,
                    birth_date,
                    relationship,
                    disability: disability.map(|(kind, grade)| Disability { kind, grade }),
                    seriously_ill: ill,
                    employment: job,
                    education: edu,
                    monthly_income_fen: income,
                    supporter,
                }
            },
        )
}

fn arb_application() -> impl Strategy<Value = Application> {
    (0i64..=3650, 1usize..=MAX_MEMBERS)
        .prop_flat_map(|(days_back, n)| {
            let application_date = d(TODAY) - chrono::TimeDelta::days(days_back);
            let members: Vec<_> = (0..n).map(|i| arb_person(i, application_date)).collect();
            (
                Just(application_date),
                members,
                arb_enum(&[0u8, 5, 15])
                    .prop_map(|i| DistrictCode::all().nth(usize::from(i)).unwrap()),
                0..=i64::MAX,
                0..=i32::MAX as u32,
                0..=i32::MAX as u32,
                arb_enum(Housing::ALL),
                (0..=i64::MAX, 0..=i64::MAX),
                proptest::option::of((arb_enum(EmergencyKind::ALL), "\\PC{0,80}")),
                (any::<bool>(), any::<bool>()),
                "[0-9 +-]{0,32}",
            )
        })
        .prop_map(
            |(
                application_date,
                members,
                district,
                assets,
                homes,
                vehicles,
                housing,
                (med, rigid),
                emergency,
                (disaster, consent),
                phone,
            )| {
                Application {
                    district,
                    members,
                    financial_assets_fen: assets,
                    homes_owned: homes,
                    vehicles_owned: vehicles,
                    housing,
                    medical_expense_12m_fen: med,
                    other_rigid_expense_12m_fen: rigid,
                    emergency: emergency.map(|(kind, description)| Emergency { kind, description }),
                    disaster_affected: disaster,
                    consent_to_share: consent,
                    application_date,
                    contact_phone: phone,
                }
            },
        )
}

proptest! {
    #[test]
    fn domain_proto_domain_is_lossless(app in arb_application()) {
        let p = proto::Application::from(&app);
        let back = check(p).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, app);
    }
}
