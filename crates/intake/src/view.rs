//! What each principal may see of a case: the one projection from the case state to the
//! `Case` message that `GetCase`, `WatchCase` and `WithdrawApplication` answer with.

use onecity_domain::case::CaseState;
use onecity_domain::{IdNumber, Principal};
use onecity_proto::v1 as pb;
use onecity_service::case::{denied, Subject};
use uuid::Uuid;

use crate::Result;

/// Masks every identity number of an application (for department principals).
fn mask_application(mut app: pb::Application) -> pb::Application {
    for m in &mut app.members {
        m.id_number = match IdNumber::parse(&m.id_number) {
            Ok(id) => id.masked(),
            Err(_) => "******************".into(),
        };
    }
    app
}

/// The case as `principal` may see it. Terminals (any district: the one-city link) and
/// administrators see all of it. A department unit sees a case only if it holds one of
/// its referrals, and then only its own referrals, the assessments of those programmes,
/// and the application with identity numbers masked.
pub fn view(principal: &Principal, case_id: Uuid, state: &CaseState) -> Result<pb::Case> {
    let submitted = state.submitted.clone().unwrap_or_default();
    let mut case = pb::Case {
        case_id: case_id.to_string(),
        status: pb::CaseStatus::from(state.status) as i32,
        version: state.version,
        assessments: state
            .assessed
            .clone()
            .map(|a| a.assessments)
            .unwrap_or_default(),
        referrals: state.referrals.clone(),
        events: state.history.clone(),
        district_code: submitted
            .application
            .as_ref()
            .map(|a| a.district_code.clone())
            .unwrap_or_default(),
        terminal_id: submitted.terminal_id,
        submitted_at: submitted.submitted_at,
        application: submitted.application,
    };
    match principal {
        Principal::Terminal { .. } | Principal::Admin { .. } => Ok(case),
        Principal::Department { unit } => {
            let unit = unit.to_string();
            case.referrals.retain(|r| r.department_unit == unit);
            if case.referrals.is_empty() {
                return Err(denied(
                    principal,
                    "read a case without a referral to its unit",
                    Subject::Case(case_id),
                )
                .into());
            }
            let programmes: Vec<i32> = case.referrals.iter().map(|r| r.programme).collect();
            case.assessments
                .retain(|a| programmes.contains(&a.programme));
            case.application = case.application.map(mask_application);
            Ok(case)
        }
        Principal::Service { .. } => {
            Err(denied(principal, "read cases", Subject::Case(case_id)).into())
        }
    }
}
