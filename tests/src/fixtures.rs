//! Tokens and households.

use onecity_proto::v1 as pb;

pub use onecity_domain::fixtures::{sample_application, valid_id_number};

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
pub fn application(i: usize) -> pb::Application {
    let mut app = sample_application();
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
    }
}

/// Today in Beijing as `YYYY-MM-DD`.
pub fn today() -> String {
    onecity_domain::today().format("%Y-%m-%d").to_string()
}
