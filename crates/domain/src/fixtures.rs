//! Test helpers for this and other crates (feature `fixtures`).

use chrono::NaiveDate;
use onecity_proto::v1 as proto;

use crate::IdNumber;

/// A valid identity number for a six-digit region code, birth date and 3-digit sequence
/// (`seq % 1000`; odd for men, even for women), with the right check character.
///
/// # Panics
/// If `district` is not six ASCII digits.
pub fn valid_id_number(district: &str, birth: NaiveDate, seq: u16) -> String {
    let first17 = format!("{district}{}{:03}", birth.format("%Y%m%d"), seq % 1000);
    let check = IdNumber::check_character(&first17)
        .unwrap_or_else(|| panic!("region code {district:?} must be six digits"));
    format!("{first17}{check}")
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default()
}

fn person(
    seq: u16,
    name: &str,
    birth: NaiveDate,
    relationship: proto::Relationship,
    employment: proto::Employment,
    education: proto::EducationStage,
    monthly_income_fen: i64,
) -> proto::Person {
    proto::Person {
        id_number: valid_id_number("120103", birth, seq),
        name: name.to_owned(),
        birth_date: birth.format("%Y-%m-%d").to_string(),
        relationship: relationship as i32,
        disability: None,
        seriously_ill: false,
        employment: employment as i32,
        education: education as i32,
        monthly_income_fen,
        supporter: proto::Supporter::None as i32,
        age_years: 0,
    }
}

/// A valid 3-member household in Hexi (120103) applying on 2025-09-01: an unemployed applicant
/// (born 1980-03-15, no income), an employed spouse (born 1982-11-02, 2,000.00 yuan a month) and
/// a primary-school child (born 2016-06-01), renting, 8,000.00 yuan in savings, no emergency.
pub fn sample_application() -> proto::Application {
    use proto::{EducationStage as E, Employment as J, Relationship as R};
    proto::Application {
        district_code: "120103".to_owned(),
        members: vec![
            person(
                11,
                "张伟",
                date(1980, 3, 15),
                R::Applicant,
                J::Unemployed,
                E::None,
                0,
            ),
            person(
                22,
                "李娜",
                date(1982, 11, 2),
                R::Spouse,
                J::Employed,
                E::None,
                200_000,
            ),
            person(
                31,
                "张小明",
                date(2016, 6, 1),
                R::Child,
                J::NotInLabourForce,
                E::Primary,
                0,
            ),
        ],
        financial_assets_fen: 800_000,
        homes_owned: 0,
        vehicles_owned: 0,
        housing: proto::Housing::Renting as i32,
        medical_expense_12m_fen: 0,
        other_rigid_expense_12m_fen: 0,
        emergency: None,
        disaster_affected: false,
        consent_to_share: true,
        application_date: "2025-09-01".to_owned(),
        contact_phone: "022-12345678".to_owned(),
    }
}
