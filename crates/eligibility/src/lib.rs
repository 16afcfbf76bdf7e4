//! Eligibility as code: given a validated application and the policy version in force on its
//! date, [`assess`] decides every one of the twelve programmes and explains each result (rules,
//! inputs, thresholds, policy version, margin and next tier), with integer arithmetic only.
//!
//! Configuration, not code, says which department runs each programme, how long it has to
//! decide and which facts of a case it may see ([`Catalogue`], `policy/catalogue.toml`) and
//! what the parameters are ([`PolicyBook`], dated versions in `policy/default.toml`). Both are refused at start-up with the file, field
//! and reason when malformed. The rules are documented in `docs/policy.md`. No I/O beyond
//! loading those files, no tonic.

mod assess;
mod catalogue;
mod convert;
mod error;
pub mod format;
mod holidays;
mod policy;
pub mod reassess;
pub mod review;

pub use assess::{
    assess, assess_with, decide, explain, Assessment, Decided, Detail, LeanAssessment, LeanRule,
    Linked, RuleKind, RuleResult,
};
pub use catalogue::{Catalogue, CatalogueEntry, Facts};
pub use convert::explain_stored;
pub use error::{Error, Result};
pub use holidays::{DeadlineUnit, HolidayCalendar};
pub use policy::{Parameters, PolicyBook, PolicyVersion, MAX_PARAMETER};

#[cfg(test)]
mod tests;
