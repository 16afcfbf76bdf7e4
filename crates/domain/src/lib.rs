//! Domain types of onecity: a household's application as validated Rust values (identity
//! numbers, Tianjin districts, dates, fen), the twelve programmes, outcomes, departments and
//! department units, with conversions from and to the `onecity.v1` proto messages.
//!
//! Proto messages are what travels and is stored; these types are what the rules work on.
//! [`validate_application`] is the only way from one to the other and reports the first broken
//! rule as an [`Invalid`] naming the request field. Identity numbers never print in full.

mod application;
pub mod case;
mod date;
mod district;
mod enums;
mod error;
pub mod events;
mod id_number;
pub mod ids;
mod partition;
mod principal;
pub mod referral;
pub mod text;

#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;

pub use application::{
    validate_application, Application, Disability, Emergency, Person, MAX_DESCRIPTION_CHARS,
    MAX_MEMBERS, MAX_NAME_CHARS, MAX_PHONE_CHARS,
};
pub use date::{age_on, format_date, parse_date, rfc3339, today};
pub use district::DistrictCode;
pub use enums::{
    Department, DepartmentUnit, DisabilityKind, EducationStage, EmergencyKind, Employment, Housing,
    Outcome, Programme, Relationship, Supporter,
};
pub use error::{Error, Invalid, Result};
pub use id_number::{IdNumber, IdNumberError};
pub use partition::{BadPartition, Partition};
pub use principal::Principal;

#[cfg(test)]
mod tests;
