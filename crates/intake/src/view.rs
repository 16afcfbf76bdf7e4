//! What each principal may see of a case: the one projection from the case state to the
//! `Case` message that `GetCase`, `WatchCase` and `WithdrawApplication` answer with.
//!
//! Terminals (any district: the one-city link) and administrators see all of it. A
//! department unit sees only what deciding its own referrals needs (data minimisation):
//! its referrals and their history, the assessments of those programmes, who the members
//! are (name, relationship, masked identity number, age) and the facts its programmes'
//! rules read, as the catalogue lists them.

use chrono::NaiveDate;
use onecity_domain::case::CaseState;
use onecity_domain::events::Audience;
use onecity_domain::{age_on, parse_date, IdNumber, Principal, Programme};
use onecity_eligibility::{explain_stored, Catalogue, Facts};
use onecity_proto::v1 as pb;
use onecity_service::case::{denied, Subject};
use uuid::Uuid;

use crate::Result;

/// The case as `principal` may see it on `today` (members' ages count to it). A department
/// unit sees a case only if it holds one of its referrals; see the module documentation
/// for what it then sees.
pub fn view(
    principal: &Principal,
    case_id: Uuid,
    state: &CaseState,
    catalogue: &Catalogue,
    today: NaiveDate,
) -> Result<pb::Case> {
    let submitted = state.submitted.clone().unwrap_or_default();
    let mut case = pb::Case {
        case_id: case_id.to_string(),
        status: pb::CaseStatus::from(state.status) as i32,
        version: state.version,
        // The log keeps them lean; their words are rendered here, as they read when made.
        assessments: explain_stored(
            state
                .assessed
                .clone()
                .map(|a| a.assessments)
                .unwrap_or_default(),
        )?,
        referrals: state.referrals.clone(),
        events: state.history.clone(),
        district_code: state
            .application()
            .map(|a| a.district_code.clone())
            .unwrap_or_default(),
        terminal_id: submitted.terminal_id,
        submitted_at: submitted.submitted_at,
        // As it now stands: the latest amendment's, else the submission's.
        application: state.application().cloned(),
        // Every principal that sees the case sees why it was opened beside another.
        duplicate_override_reason: submitted.duplicate_override_reason,
    };
    if let Some(app) = &mut case.application {
        set_ages(app, today);
    }
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
            case.events = state
                .history
                .iter()
                .zip(&state.audiences)
                .filter_map(|(e, audience)| department_event(&unit, e, audience))
                .collect();
            let facts = programmes
                .iter()
                .filter_map(|&p| Programme::from_proto(p))
                .fold(Facts::empty(), |all, p| all | catalogue.visible_facts(p));
            case.application = case.application.map(|a| minimise(a, facts));
            Ok(case)
        }
        // A supervisor works on referrals (HandoffService), not on households' applications.
        Principal::Service { .. } | Principal::Supervisor { .. } => {
            Err(denied(principal, "read cases", Subject::Case(case_id)).into())
        }
    }
}

fn set_ages(app: &mut pb::Application, today: NaiveDate) {
    for m in &mut app.members {
        m.age_years = parse_date(&m.birth_date)
            .map_or(0, |birth| age_on(birth, today))
            .try_into()
            .unwrap_or(i32::MAX);
    }
}

/// The members of `app` as `FindCases` shows them: name, relationship, masked identity
/// number and age on `today`, nothing else.
pub(crate) fn masked_members(mut app: pb::Application, today: NaiveDate) -> Vec<pb::Person> {
    set_ages(&mut app, today);
    minimise(app, Facts::empty()).members
}

/// One history entry as `principal` may see it, if at all; `audience` is the entry's
/// (see [`CaseState::audiences`]). Call it only after [`view`] allowed the principal the
/// case.
pub(crate) fn event(
    principal: &Principal,
    event: &pb::CaseEvent,
    audience: &Audience,
) -> Option<pb::CaseEvent> {
    match principal {
        Principal::Terminal { .. } | Principal::Admin { .. } => Some(event.clone()),
        Principal::Department { unit } => department_event(&unit.to_string(), event, audience),
        Principal::Service { .. } | Principal::Supervisor { .. } => None,
    }
}

fn department_event(
    unit: &str,
    event: &pb::CaseEvent,
    audience: &Audience,
) -> Option<pb::CaseEvent> {
    match audience {
        Audience::Case => Some(event.clone()),
        Audience::CaseRedacted(summary) => Some(pb::CaseEvent {
            summary: summary.clone(),
            ..event.clone()
        }),
        Audience::Unit(u) if u == unit => Some(event.clone()),
        Audience::Unit(_) | Audience::Nobody => None,
    }
}

/// The application as a department with `facts` may see it: each member's name,
/// relationship, masked identity number and age, the household's district, date and
/// contact phone (the applicant's), and of the rest only `facts`. A fact not shown keeps
/// its field's default.
///
/// The birth date goes: the identity number's masked digits are the birth date, so
/// showing both would give the whole number back. Every field is named, so that a field
/// added to the messages is shown to departments by a decision here, never by default.
fn minimise(app: pb::Application, facts: Facts) -> pb::Application {
    let keep = |fact: Facts| facts.contains(fact);
    let members = app
        .members
        .into_iter()
        .map(|m| pb::Person {
            id_number: match IdNumber::parse(&m.id_number) {
                Ok(id) => id.masked(),
                Err(_) => "******************".into(),
            },
            name: m.name,
            birth_date: String::new(),
            relationship: m.relationship,
            age_years: m.age_years,
            disability: m.disability.filter(|_| keep(Facts::DISABILITY)),
            seriously_ill: m.seriously_ill && keep(Facts::SERIOUSLY_ILL),
            employment: if keep(Facts::EMPLOYMENT) {
                m.employment
            } else {
                0
            },
            education: if keep(Facts::EDUCATION) {
                m.education
            } else {
                0
            },
            monthly_income_fen: if keep(Facts::MONTHLY_INCOME_FEN) {
                m.monthly_income_fen
            } else {
                0
            },
            supporter: if keep(Facts::SUPPORTER) {
                m.supporter
            } else {
                0
            },
        })
        .collect();
    let amount = |fact: Facts, v: i64| if keep(fact) { v } else { 0 };
    pb::Application {
        district_code: app.district_code,
        members,
        financial_assets_fen: amount(Facts::FINANCIAL_ASSETS_FEN, app.financial_assets_fen),
        homes_owned: if keep(Facts::HOMES_OWNED) {
            app.homes_owned
        } else {
            0
        },
        vehicles_owned: if keep(Facts::VEHICLES_OWNED) {
            app.vehicles_owned
        } else {
            0
        },
        housing: if keep(Facts::HOUSING) { app.housing } else { 0 },
        medical_expense_12m_fen: amount(
            Facts::MEDICAL_EXPENSE_12M_FEN,
            app.medical_expense_12m_fen,
        ),
        other_rigid_expense_12m_fen: amount(
            Facts::OTHER_RIGID_EXPENSE_12M_FEN,
            app.other_rigid_expense_12m_fen,
        ),
        emergency: app.emergency.filter(|_| keep(Facts::EMERGENCY)),
        disaster_affected: app.disaster_affected && keep(Facts::DISASTER_AFFECTED),
        consent_to_share: app.consent_to_share && keep(Facts::CONSENT_TO_SHARE),
        application_date: app.application_date,
        contact_phone: app.contact_phone,
    }
}

#[cfg(test)]
mod tests {
    use onecity_domain::case::EventMeta;
    use onecity_domain::events::CaseEvent;
    use onecity_domain::fixtures::sample_application;

    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, 14).unwrap()
    }

    fn referral(programme: pb::Programme, unit: &str, state: pb::ReferralState) -> pb::Referral {
        pb::Referral {
            referral_id: format!("{programme:?}"),
            programme: programme as i32,
            department_unit: unit.into(),
            state: state as i32,
            ..Default::default()
        }
    }

    /// A Hexi case referred to civil affairs (dibao, decided with a note; temporary) and
    /// to housing, with a member fact of every kind set.
    fn state() -> CaseState {
        use pb::{Programme as P, ReferralState as S};
        let mut app = sample_application();
        app.members[1].disability = Some(pb::Disability {
            kind: pb::DisabilityKind::Physical as i32,
            grade: 2,
        });
        app.members[1].seriously_ill = true;
        app.members[0].supporter = pb::Supporter::Unable as i32;
        app.emergency = Some(pb::Emergency {
            kind: pb::EmergencyKind::Fire as i32,
            description: "kitchen fire".into(),
        });
        app.medical_expense_12m_fen = 123_400;
        app.disaster_affected = true;
        let assessment = |p: P, unit: &str| pb::Assessment {
            programme: p as i32,
            outcome: pb::Outcome::Eligible as i32,
            department_unit: unit.into(),
            ..Default::default()
        };
        let events = [
            CaseEvent::ApplicationSubmitted(pb::ApplicationSubmitted {
                application: Some(app),
                terminal_id: "T-120103-01".into(),
                ..Default::default()
            }),
            CaseEvent::EligibilityAssessed(pb::EligibilityAssessed {
                assessments: vec![
                    assessment(P::Dibao, "civil-affairs@120103"),
                    assessment(P::Housing, "housing@120103"),
                    assessment(P::Temporary, "civil-affairs@120103"),
                    assessment(P::Medical, "medical-security@120103"),
                ],
                policy_version: "2026-01".into(),
            }),
            CaseEvent::ReferralIssued(referral(P::Dibao, "civil-affairs@120103", S::Issued)),
            CaseEvent::ReferralIssued(referral(P::Housing, "housing@120103", S::Issued)),
            CaseEvent::ReferralIssued(referral(P::Temporary, "civil-affairs@120103", S::Issued)),
            CaseEvent::ReferralDecided(pb::Referral {
                note: "civil affairs only".into(),
                ..referral(P::Dibao, "civil-affairs@120103", S::Approved)
            }),
            CaseEvent::ReferralAcknowledged(referral(
                P::Housing,
                "housing@120103",
                S::Acknowledged,
            )),
        ];
        let mut state = CaseState::default();
        for (i, e) in events.iter().enumerate() {
            let meta = EventMeta {
                version: i as u64 + 1,
                position: i as u64 + 1,
                event_type: e.event_type().into(),
                actor: "someone".into(),
                recorded_at: "2026-03-01T00:00:00Z".into(),
            };
            state.apply(meta, Some(e));
        }
        state.apply(
            EventMeta {
                version: 8,
                position: 8,
                event_type: "onecity.v9.Future".into(),
                actor: "someone".into(),
                recorded_at: "2026-03-01T00:00:00Z".into(),
            },
            None,
        );
        state
    }

    fn as_department(unit: &str) -> Principal {
        Principal::Department {
            unit: unit.parse().unwrap(),
        }
    }

    fn seen(principal: &Principal) -> pb::Case {
        view(
            principal,
            Uuid::nil(),
            &state(),
            &Catalogue::embedded(),
            today(),
        )
        .unwrap()
    }

    /// Nothing in the whole view could give an identity number or a birth date back.
    fn assert_nothing_identifying(case: &pb::Case) {
        let text = format!("{case:?}");
        let id = regex::Regex::new(r"\d{17}[\dXx]").unwrap();
        assert!(!id.is_match(&text), "an identity number in {text}");
        for birth in [
            "1980-03-15",
            "1982-11-02",
            "2016-06-01",
            "19800315",
            "19821102",
        ] {
            assert!(!text.contains(birth), "birth date {birth} in {text}");
        }
    }

    #[test]
    fn terminals_and_admins_see_everything_and_ages() {
        let terminal = Principal::Terminal {
            id: "T-120101-01".into(),
            district: onecity_domain::DistrictCode::parse("120101").unwrap(),
            street_office: "x".into(),
        };
        let admin = Principal::Admin { id: "a".into() };
        let state = state();
        for who in [terminal, admin] {
            let case = seen(&who);
            assert_eq!(case.events, state.history);
            assert_eq!(case.referrals, state.referrals);
            assert_eq!(
                case.assessments,
                state.assessed.clone().unwrap().assessments
            );
            let mut app = case.application.unwrap();
            let ages: Vec<i32> = app.members.iter().map(|m| m.age_years).collect();
            assert_eq!(ages, [45, 43, 9]);
            // Besides the ages, exactly the application as submitted.
            for m in &mut app.members {
                m.age_years = 0;
            }
            assert_eq!(Some(app), state.submitted.clone().unwrap().application);
        }
    }

    #[test]
    fn a_department_sees_its_own_referrals_and_the_facts_its_programmes_read() {
        let case = seen(&as_department("housing@120103"));
        assert_nothing_identifying(&case);
        assert_eq!(case.referrals.len(), 1);
        assert_eq!(case.assessments.len(), 1);
        assert_eq!(case.assessments[0].programme, pb::Programme::Housing as i32);
        let history: Vec<&str> = case.events.iter().map(|e| e.summary.as_str()).collect();
        assert_eq!(
            history,
            [
                state().history[0].summary.as_str(),
                "assessed under policy 2026-01",
                "referral housing issued to housing@120103, due ",
                "referral housing acknowledged by housing@120103",
            ]
        );
        let app = case.application.unwrap();
        let sample = sample_application();
        for (m, s) in app.members.iter().zip(&sample.members) {
            assert_eq!(m.name, s.name);
            assert_eq!(m.relationship, s.relationship);
            assert_eq!(m.id_number, IdNumber::parse(&s.id_number).unwrap().masked());
            assert!(m.birth_date.is_empty());
            assert_eq!(
                (m.disability, m.seriously_ill, m.monthly_income_fen),
                (None, false, 0)
            );
            assert_eq!((m.employment, m.education, m.supporter), (0, 0, 0));
        }
        assert_eq!(app.members[0].age_years, 45);
        assert_eq!(app.housing, pb::Housing::Renting as i32);
        assert_eq!(app.contact_phone, sample.contact_phone);
        assert_eq!(app.financial_assets_fen, 0);
        assert_eq!(app.medical_expense_12m_fen, 0);
        assert_eq!(app.emergency, None);
        assert!(!app.disaster_affected && !app.consent_to_share);
    }

    #[test]
    fn a_unit_with_several_programmes_sees_the_union() {
        let case = seen(&as_department("civil-affairs@120103"));
        assert_nothing_identifying(&case);
        let programmes: Vec<i32> = case.assessments.iter().map(|a| a.programme).collect();
        assert_eq!(
            programmes,
            [pb::Programme::Dibao as i32, pb::Programme::Temporary as i32]
        );
        assert!(case.events.iter().any(|e| e.summary.contains("approved")));
        assert!(!case.events.iter().any(|e| e.summary.contains("housing")));
        assert!(!case.events.iter().any(|e| e.event_type.contains("v9")));
        let app = case.application.unwrap();
        // dibao: income, assets, disability, illness; temporary: the emergency.
        assert_eq!(app.members[1].monthly_income_fen, 200_000);
        assert_eq!(app.financial_assets_fen, 800_000);
        assert!(app.members[1].disability.is_some() && app.members[1].seriously_ill);
        assert_eq!(app.emergency.unwrap().description, "kitchen fire");
        // Read by neither.
        assert_eq!(app.housing, 0);
        assert_eq!(app.members[0].supporter, 0);
        assert_eq!(app.members[2].education, 0);
        assert!(!app.disaster_affected);
    }

    #[test]
    fn others_see_nothing() {
        for who in [
            as_department("civil-affairs@120101"),
            as_department("charity@120103"),
            Principal::Service { id: "s".into() },
        ] {
            let err = view(&who, Uuid::nil(), &state(), &Catalogue::embedded(), today());
            assert!(err.is_err(), "{who:?}");
        }
    }

    #[test]
    fn events_are_filtered_one_by_one_as_in_the_view() {
        let state = state();
        for unit in ["housing@120103", "civil-affairs@120103"] {
            let who = as_department(unit);
            let streamed: Vec<pb::CaseEvent> = state
                .history
                .iter()
                .zip(&state.audiences)
                .filter_map(|(e, a)| event(&who, e, a))
                .collect();
            assert_eq!(streamed, seen(&who).events, "{unit}");
        }
    }
}
