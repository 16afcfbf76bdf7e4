//! Re-verification: when an approved low-income recognition is reviewed again
//! (`docs/policy.md`, "Re-verification").

use chrono::NaiveDate;
use onecity_domain::{add_months, Application, Employment};

use crate::PolicyVersion;

/// Whether the household's income is unstable, by the one rule `docs/policy.md` documents:
/// a member of working age (`working_age_min..=working_age_max` on `on`) is EMPLOYED or
/// UNEMPLOYED. The application records no informal work or varying income, so being in
/// the labour force at working age stands for income that can change from month to month;
/// households of minors, students, retired, elderly or carers live on fixed income.
pub fn unstable_income(app: &Application, policy: &PolicyVersion, on: NaiveDate) -> bool {
    let p = policy.params();
    app.members.iter().any(|m| {
        let age = i64::from(m.age_on(on));
        (p.working_age_min..=p.working_age_max).contains(&age)
            && matches!(m.employment, Employment::Employed | Employment::Unemployed)
    })
}

/// The review interval of the household in calendar months: the shorter one when its
/// income is unstable on `on`.
pub fn review_interval_months(app: &Application, policy: &PolicyVersion, on: NaiveDate) -> u32 {
    let p = policy.params();
    let months = if unstable_income(app, policy, on) {
        p.unstable_income_review_interval_months
    } else {
        p.review_interval_months
    };
    // The loader keeps both within 1..=1200.
    u32::try_from(months).unwrap_or(1)
}

/// The date a recognition approved on `approved_on` (Beijing) falls due for
/// re-verification: that date plus the household's interval in calendar months, a day the
/// target month lacks becoming its last day.
pub fn review_due_on(
    app: &Application,
    policy: &PolicyVersion,
    approved_on: NaiveDate,
) -> NaiveDate {
    add_months(
        approved_on,
        review_interval_months(app, policy, approved_on),
    )
}
