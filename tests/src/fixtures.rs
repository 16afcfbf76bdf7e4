//! Tokens and households.

use onecity_proto::v1 as pb;

pub use onecity_domain::fixtures::valid_id_number;

/// The sample household (`onecity_domain::fixtures::sample_application`) with identity
/// numbers of its own, new at each call: a person may be in one open case only, so two
/// submissions of "the sample" are two households unless the test reuses the value.
pub fn sample_application() -> pb::Application {
    // The low 62 bits of a UUID v7 are random.
    let fresh = uuid::Uuid::now_v7().as_u128() as u64;
    with_ids(
        onecity_domain::fixtures::sample_application(),
        &format!("{:06}", fresh % 1_000_000),
        (fresh >> 32) as u16,
    )
}

/// `app` with each member's identity number in region `region` (six digits), with
/// sequence numbers from `seq` on; birth dates kept.
pub fn with_ids(mut app: pb::Application, region: &str, seq: u16) -> pb::Application {
    for (i, m) in app.members.iter_mut().enumerate() {
        let birth = chrono::NaiveDate::parse_from_str(&m.birth_date, "%Y-%m-%d")
            .expect("fixture birth date");
        m.id_number = valid_id_number(region, birth, seq.wrapping_add(i as u16 * 7));
    }
    app
}

/// Demo tokens (see `onecity::config::demo_tokens`).
pub mod tokens {
    /// Terminal in Hexi (120103).
    pub const TERMINAL: &str = "demo-terminal-120103";
    /// Terminal in Heping (120101).
    pub const TERMINAL_HEPING: &str = "demo-terminal-120101";
    /// Civil affairs of Hexi.
    pub const CIVIL_AFFAIRS: &str = "demo-civil-affairs-120103";
    /// Civil affairs of Heping.
    pub const CIVIL_AFFAIRS_HEPING: &str = "demo-civil-affairs-120101";
    /// Medical security of Hexi.
    pub const MEDICAL: &str = "demo-medical-security-120103";
    /// Housing of Hexi.
    pub const HOUSING: &str = "demo-housing-120103";
    /// Administrator.
    pub const ADMIN: &str = "demo-admin";
    /// Service principal.
    pub const SERVICE: &str = "demo-service";
}

/// The `i`-th of a series of households: the sample household with its income and housing
/// varied by `i`, so a run of them reaches different programme mixes.
///
/// Each `i` is its own household (its members' identity numbers are derived from it), so
/// the same `i` is the same people.
pub fn application(i: usize) -> pb::Application {
    let mut app = with_ids(
        onecity_domain::fixtures::sample_application(),
        &format!("{:06}", 100_000 + i / 997 % 900_000),
        (i % 997) as u16,
    );
    app.members[1].monthly_income_fen = 40_000 * (i % 11) as i64;
    if i.is_multiple_of(4) {
        app.housing = pb::Housing::OwnedAdequate as i32;
    }
    app
}

/// A submission of `application` with a fresh request id.
pub fn submission(application: pb::Application) -> pb::SubmitApplicationRequest {
    pb::SubmitApplicationRequest {
        request_id: uuid::Uuid::now_v7().to_string(),
        application: Some(application),
        duplicate_override_reason: String::new(),
    }
}

/// Today in Beijing as `YYYY-MM-DD`.
pub fn today() -> String {
    onecity_domain::today().format("%Y-%m-%d").to_string()
}

/// A department's decision on referral `id`, no amount and no note (the departments' demo
/// decisions in the lifecycle tests).
pub fn decide(id: &str, decision: pb::Decision) -> pb::RecordDecisionRequest {
    pb::RecordDecisionRequest {
        referral_id: id.into(),
        decision: decision as i32,
        amount_fen: 0,
        note: String::new(),
        request_id: String::new(),
    }
}

/// The demo token of a department unit (`civil-affairs@120103` →
/// `demo-civil-affairs-120103`).
pub fn token_of(unit: &str) -> String {
    format!("demo-{}", unit.replace('@', "-"))
}
