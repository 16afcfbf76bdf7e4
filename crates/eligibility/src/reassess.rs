//! Re-assessment of a case that is already under way: after a change of circumstances
//! (`ApplicationAmended`) or when a new policy version takes effect. One pure function,
//! [`reassess`], computes the new assessment and every referral effect of it, as the events
//! of one commit; the assessment worker appends them for an amendment, the policy sweep
//! for a version, and the policy impact report counts them without writing.
//!
//! It lives here, beside the rules, because every caller can reach this crate and none
//! can reach the others: the assessment crate runs it (amendments, policy sweep, impact),
//! the handoff crate's re-verification builds the same review referral ([`review_events`],
//! re-exported there), and neither of those may depend on the other. It reads only the
//! folded case (`onecity_domain::case::CaseState`), so it needs no log either.
//!
//! The effects, per programme, against the referral that now carries it
//! (`CaseState::current_referral`, through transfers):
//! - met now (ELIGIBLE or NEEDS_REVIEW) and no live referral: a new referral, when the
//!   programme was never referred, or was cancelled or denied and was not met by the
//!   assessment this one replaces (a denial stands while nothing the rules see changed);
//! - an open referral no longer met: cancelled, the reason in its `cancel_reason`;
//! - an approval in force whose outcome or amount would change: `ReviewRequested` and a
//!   review referral to the unit that decided it, carrying the new figures (an approval
//!   already under review is left to that review);
//! - charity is only ever issued (at most once per case, as at intake and after denials),
//!   and a temporary payment, being one-off, is never reviewed.
//!
//! The recognition approvals in force count as decided for the linked programmes, as the
//! linkage does: an approval stands until its review decides, and the linkage applies that
//! decision when it comes.

use chrono::{DateTime, Utc};
use onecity_domain::case::{is_dependent, is_final, is_recognition, CaseState};
use onecity_domain::events::CaseEvent;
use onecity_domain::{ids, rfc3339, Application, Programme};
use onecity_proto::v1 as pb;
use uuid::Uuid;

use crate::{decide, Catalogue, Decided, PolicyVersion};

/// What caused a re-assessment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// A change of circumstances: the `ApplicationAmended` event and its reason.
    Amendment {
        /// Id of the `ApplicationAmended` event.
        event_id: Uuid,
        /// Why the household's application changed, as the terminal recorded it.
        reason: String,
    },
    /// The policy version the case is re-assessed under took effect.
    PolicyVersion,
}

impl Trigger {
    /// The trigger's kind, as the deterministic ids spell it.
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::Amendment { .. } => "amendment",
            Trigger::PolicyVersion => "policy",
        }
    }

    /// What the re-assessment records as its cause: the amendment's event id, or the
    /// policy version id.
    pub fn cause(&self, policy: &PolicyVersion) -> String {
        match self {
            Trigger::Amendment { event_id, .. } => event_id.to_string(),
            Trigger::PolicyVersion => policy.id().to_owned(),
        }
    }

    fn reason(&self, policy: &PolicyVersion) -> String {
        match self {
            Trigger::Amendment { reason, .. } => format!("change of circumstances: {reason}"),
            Trigger::PolicyVersion => format!("policy version {} took effect", policy.id()),
        }
    }

    fn to_proto(&self) -> pb::ReassessmentTrigger {
        match self {
            Trigger::Amendment { .. } => pb::ReassessmentTrigger::Amendment,
            Trigger::PolicyVersion => pb::ReassessmentTrigger::PolicyVersion,
        }
    }
}

/// How a re-assessment changed one programme, as its referral effect shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Effect {
    /// Met now, and a new referral is issued.
    NewlyEligible,
    /// No longer met: its open referral is cancelled, or its approval goes to review.
    NoLongerEligible,
    /// Still met, with another outcome or amount: its approval goes to review.
    AmountChanged,
}

/// One programme's change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The programme.
    pub programme: Programme,
    /// What happened to it.
    pub effect: Effect,
}

/// What one case's re-assessment needs.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The case.
    pub case_id: Uuid,
    /// Its state, folded from its stream.
    pub state: &'a CaseState,
    /// The household's application to assess (validated; normally the case's current one).
    pub application: &'a Application,
    /// The policy version to assess under.
    pub policy: &'a PolicyVersion,
    /// Units and deadlines.
    pub catalogue: &'a Catalogue,
    /// When: the new referrals' issue time and the start of their deadlines.
    pub now: DateTime<Utc>,
    /// Why.
    pub trigger: &'a Trigger,
}

/// A re-assessment: the events of its one commit, and the changes they make.
#[derive(Debug, Clone, PartialEq)]
pub struct Reassessment {
    /// `EligibilityReassessed`, then its referral effects in programme order, then
    /// `CaseClosed` when they leave the case ready to close.
    pub events: Vec<CaseEvent>,
    /// The programmes whose referrals change, in programme order.
    pub changes: Vec<Change>,
}

/// Re-assesses the case (see the module documentation).
pub fn reassess(input: Input<'_>) -> Reassessment {
    let Input {
        case_id,
        state,
        application,
        policy,
        catalogue,
        now,
        trigger,
    } = input;
    let approved: Vec<Decided> = Programme::ALL
        .iter()
        .filter(|p| is_recognition(p.to_proto()))
        .filter(|p| {
            state
                .current_referral(p.to_proto())
                .is_some_and(|r| state.approval_in_force(r))
        })
        .map(|p| Decided {
            programme: *p,
            approved: true,
        })
        .collect();
    let assessments = decide(application, policy, catalogue, &approved);
    let cause = trigger.cause(policy);
    let reason = trigger.reason(policy);
    let previously_met = |p: Programme| {
        state.assessed.as_ref().is_some_and(|a| {
            a.assessments.iter().any(|x| {
                x.programme == p.to_proto()
                    && (x.outcome == pb::Outcome::Eligible as i32
                        || x.outcome == pb::Outcome::NeedsReview as i32)
            })
        })
    };
    let recognition_referred = !approved.is_empty()
        || assessments
            .iter()
            .any(|a| is_recognition(a.programme.to_proto()) && a.outcome.is_referred());
    let mut events = vec![CaseEvent::EligibilityReassessed(
        pb::EligibilityReassessed {
            assessments: assessments.iter().map(Into::into).collect(),
            policy_version: policy.id().to_owned(),
            trigger: trigger.to_proto() as i32,
            cause: cause.clone(),
            reason: reason.clone(),
            previous_policy_version: state.policy_version().to_owned(),
        },
    )];
    let mut changes = Vec::new();
    for a in &assessments {
        let p = a.programme;
        let wire = p.to_proto();
        let met = a.outcome.is_referred();
        let outcome = a.outcome.to_proto();
        let current = state.current_referral(wire);
        let change = match current {
            // An open review is the decision still to come on an approval: left to it.
            Some(r) if !is_final(r.state) && !r.reviews.is_empty() => None,
            Some(r) if !is_final(r.state) => (!met && p != Programme::Charity).then(|| {
                events.push(CaseEvent::ReferralCancelled(pb::Referral {
                    state: pb::ReferralState::Cancelled as i32,
                    cancel_reason: format!("no longer met after the {reason}"),
                    ..r.clone()
                }));
                Effect::NoLongerEligible
            }),
            Some(r) if state.approval_in_force(r) => {
                let changed = outcome != r.outcome || a.amount_fen != r.assessed_amount_fen;
                let reviewable = !matches!(p, Programme::Temporary | Programme::Charity);
                let under_review = state.review_of(&r.referral_id).is_some();
                (changed && reviewable && !under_review).then(|| {
                    let mut review = review_referral(catalogue, case_id, r, now);
                    review.outcome = outcome;
                    review.assessed_amount_fen = a.amount_fen;
                    review.policy_version = policy.id().to_owned();
                    events.push(CaseEvent::ReviewRequested(pb::ReviewRequested {
                        referral_id: r.referral_id.clone(),
                        programme: wire,
                        department_unit: r.department_unit.clone(),
                        review_referral_id: review.referral_id.clone(),
                        cause: reason.clone(),
                        outcome,
                        amount_fen: a.amount_fen,
                        policy_version: policy.id().to_owned(),
                    }));
                    events.push(CaseEvent::ReferralIssued(review));
                    if met {
                        Effect::AmountChanged
                    } else {
                        Effect::NoLongerEligible
                    }
                })
            }
            // Approved but replaced by its review's decision, which is a later referral of
            // the programme: not the current one.
            Some(r) if r.state == pb::ReferralState::Approved as i32 => None,
            ended => {
                let issue = met
                    && match ended {
                        None => true,
                        Some(_) if p == Programme::Charity => false,
                        Some(_) => !previously_met(p),
                    };
                issue.then(|| {
                    let id = ids::reassessed_referral(case_id, p, trigger.kind(), &cause);
                    events.push(CaseEvent::ReferralIssued(pb::Referral {
                        referral_id: id.to_string(),
                        case_id: case_id.to_string(),
                        programme: wire,
                        department_unit: a.department_unit.to_string(),
                        state: pb::ReferralState::Issued as i32,
                        due_at: rfc3339(catalogue.due_at(p, now)),
                        outcome,
                        assessed_amount_fen: a.amount_fen,
                        issued_at: rfc3339(now),
                        policy_version: a.policy_version.clone(),
                        basis: issued_basis(wire, recognition_referred) as i32,
                        ..Default::default()
                    }));
                    Effect::NewlyEligible
                })
            }
        };
        if let Some(effect) = change {
            changes.push(Change {
                programme: p,
                effect,
            });
        }
    }
    events.extend(state.closed_by(&events));
    Reassessment { events, changes }
}

/// The basis a referral of `programme` (wire value) is issued with: a departmental
/// programme linked to the recognition rests on the predicted recognition when a
/// recognition programme is referred (or approved), else on none (it is met another way);
/// any other programme has no basis. The handoff and the re-assessment both issue with it.
pub fn issued_basis(programme: i32, recognition_referred: bool) -> pb::ReferralBasis {
    if !is_dependent(programme) {
        pb::ReferralBasis::Unspecified
    } else if recognition_referred {
        pb::ReferralBasis::Predicted
    } else {
        pb::ReferralBasis::None
    }
}

/// The review referral of the approved referral `under_review`, issued at `now`: same
/// programme and figures, to the unit that decided it, a fresh deadline from `catalogue`,
/// `reviews` naming it. Its id is derived from the referral under review, so an approval
/// is reviewed once (its renewal, a new approval, gets reviews of its own).
pub fn review_referral(
    catalogue: &Catalogue,
    case_id: Uuid,
    under_review: &pb::Referral,
    now: DateTime<Utc>,
) -> pb::Referral {
    let due_at = match Programme::from_proto(under_review.programme) {
        Some(p) => catalogue.due_at(p, now),
        // A programme this version does not know cannot be stored approved by it; the
        // catalogue's longest default would be a guess.
        None => now,
    };
    pb::Referral {
        referral_id: ids::review_referral(&under_review.referral_id).to_string(),
        case_id: case_id.to_string(),
        programme: under_review.programme,
        department_unit: under_review.department_unit.clone(),
        state: pb::ReferralState::Issued as i32,
        due_at: rfc3339(due_at),
        outcome: under_review.outcome,
        assessed_amount_fen: under_review.assessed_amount_fen,
        issued_at: rfc3339(now),
        policy_version: under_review.policy_version.clone(),
        basis: under_review.basis,
        reviews: under_review.referral_id.clone(),
        ..Default::default()
    }
}

/// The events that put the approved recognition referral `under_review` under review at
/// `now` when its review date came (or a death asked for it): `ReverificationDue` and the
/// review referral ([`review_referral`]).
pub fn review_events(
    catalogue: &Catalogue,
    case_id: Uuid,
    under_review: &pb::Referral,
    now: DateTime<Utc>,
) -> [CaseEvent; 2] {
    let review = review_referral(catalogue, case_id, under_review, now);
    [
        CaseEvent::ReverificationDue(pb::ReverificationDue {
            referral_id: under_review.referral_id.clone(),
            programme: under_review.programme,
            department_unit: under_review.department_unit.clone(),
            review_due_on: under_review.review_due_on.clone(),
            review_referral_id: review.referral_id.clone(),
            // Set by the caller for a review asked for before its date (a death).
            cause: String::new(),
            signal_id: String::new(),
        }),
        CaseEvent::ReferralIssued(review),
    ]
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use onecity_domain::case::{CaseStatus, EventMeta};
    use onecity_domain::fixtures::sample_application;
    use onecity_domain::{today, validate_application};

    use super::*;
    use crate::{assess, PolicyBook};

    const CASE: Uuid = Uuid::from_u128(0x0199_0000_0000_7000_8000_0000_0000_00aa);

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 4, 2, 0, 0).unwrap()
    }

    fn app(edit: impl FnOnce(&mut pb::Application)) -> Application {
        let mut a = sample_application();
        edit(&mut a);
        validate_application(a, today()).unwrap()
    }

    fn apply(state: &mut CaseState, event: CaseEvent) {
        let meta = EventMeta {
            version: state.version + 1,
            position: state.version + 1,
            event_type: event.event_type().into(),
            actor: "t".into(),
            recorded_at: String::new(),
        };
        state.apply(meta, Some(&event));
    }

    /// The sample household submitted, assessed under its date's policy and handed off:
    /// one ISSUED referral per programme met.
    fn handed_off(book: &PolicyBook, catalogue: &Catalogue) -> CaseState {
        let submitted = sample_application();
        let a = validate_application(submitted.clone(), today()).unwrap();
        let policy = book.in_force(a.application_date).unwrap();
        let assessments = assess(&a, policy, catalogue);
        let mut state = CaseState::default();
        apply(
            &mut state,
            CaseEvent::ApplicationSubmitted(pb::ApplicationSubmitted {
                application: Some(submitted),
                ..Default::default()
            }),
        );
        apply(
            &mut state,
            CaseEvent::EligibilityAssessed(pb::EligibilityAssessed {
                assessments: assessments.iter().map(Into::into).collect(),
                policy_version: policy.id().into(),
            }),
        );
        for a in assessments.iter().filter(|a| a.outcome.is_referred()) {
            apply(
                &mut state,
                CaseEvent::ReferralIssued(pb::Referral {
                    referral_id: ids::referral_id(CASE, a.programme).to_string(),
                    case_id: CASE.to_string(),
                    programme: a.programme.to_proto(),
                    department_unit: a.department_unit.to_string(),
                    state: pb::ReferralState::Issued as i32,
                    outcome: a.outcome.to_proto(),
                    assessed_amount_fen: a.amount_fen,
                    policy_version: a.policy_version.clone(),
                    ..Default::default()
                }),
            );
        }
        state
    }

    fn decide(state: &mut CaseState, programme: Programme, to: pb::ReferralState) {
        let r = state
            .current_referral(programme.to_proto())
            .unwrap()
            .clone();
        apply(
            state,
            CaseEvent::ReferralDecided(pb::Referral {
                state: to as i32,
                ..r
            }),
        );
    }

    fn run(state: &CaseState, application: &Application, trigger: &Trigger) -> Reassessment {
        let book = PolicyBook::embedded_default();
        let policy = book.in_force(onecity_domain::beijing_date(now())).unwrap();
        reassess(Input {
            case_id: CASE,
            state,
            application,
            policy,
            catalogue: &Catalogue::embedded(),
            now: now(),
            trigger,
        })
    }

    fn amendment(reason: &str) -> Trigger {
        Trigger::Amendment {
            event_id: Uuid::from_u128(7),
            reason: reason.into(),
        }
    }

    fn effects(r: &Reassessment) -> Vec<(Programme, Effect)> {
        r.changes.iter().map(|c| (c.programme, c.effect)).collect()
    }

    #[test]
    fn an_open_referral_no_longer_met_is_cancelled_with_the_reason() {
        let (book, catalogue) = (PolicyBook::embedded_default(), Catalogue::embedded());
        let state = handed_off(&book, &catalogue);
        let richer = app(|a| {
            a.members[1].monthly_income_fen = 600_000;
            a.members[2].supporter = pb::Supporter::Able as i32;
        });
        let r = run(&state, &richer, &amendment("new job"));
        let CaseEvent::EligibilityReassessed(head) = &r.events[0] else {
            panic!("the re-assessment comes first");
        };
        assert_eq!(head.cause, Uuid::from_u128(7).to_string());
        assert_eq!(head.previous_policy_version, "2025-07");
        assert_eq!(head.policy_version, "2026-07");
        assert_eq!(head.assessments.len(), 12);
        let cancelled: Vec<&pb::Referral> = r
            .events
            .iter()
            .filter_map(|e| match e {
                CaseEvent::ReferralCancelled(x) => Some(x),
                _ => None,
            })
            .collect();
        assert!(!cancelled.is_empty());
        assert!(cancelled.iter().all(|c| c.cancel_reason
            == "no longer met after the change of circumstances: new job"
            && c.state == pb::ReferralState::Cancelled as i32));
        assert!(effects(&r).contains(&(Programme::Dibao, Effect::NoLongerEligible)));
        // Nothing public is met any more and the household consented: charity (rule 12).
        assert_eq!(cancelled.len() + 1, r.changes.len());
        assert!(effects(&r).contains(&(Programme::Charity, Effect::NewlyEligible)));
        assert!(!r
            .events
            .iter()
            .any(|e| matches!(e, CaseEvent::CaseClosed(_))));
        // Pure: the same input gives the same events.
        assert_eq!(run(&state, &richer, &amendment("new job")), r);
    }

    #[test]
    fn a_programme_newly_met_gets_a_referral_and_nothing_else_moves() {
        let (book, catalogue) = (PolicyBook::embedded_default(), Catalogue::embedded());
        let state = handed_off(&book, &catalogue);
        let with_disabled = app(|a| {
            a.members[2].disability = Some(pb::Disability {
                kind: pb::DisabilityKind::Physical as i32,
                grade: 2,
            });
        });
        let trigger = amendment("the child was certified disabled");
        let r = run(&state, &with_disabled, &trigger);
        assert_eq!(
            effects(&r),
            [(Programme::DisabilitySubsidy, Effect::NewlyEligible)]
        );
        let [_, CaseEvent::ReferralIssued(issued)] = r.events.as_slice() else {
            panic!("{:?}", r.events);
        };
        assert_eq!(
            issued.referral_id,
            ids::reassessed_referral(
                CASE,
                Programme::DisabilitySubsidy,
                "amendment",
                &Uuid::from_u128(7).to_string()
            )
            .to_string()
        );
        assert_eq!(issued.basis, pb::ReferralBasis::Predicted as i32);
        assert_eq!(issued.issued_at, rfc3339(now()));
        assert_eq!(
            issued.due_at,
            rfc3339(Catalogue::embedded().due_at(Programme::DisabilitySubsidy, now()))
        );
    }

    #[test]
    fn an_approval_whose_amount_changes_goes_to_review_once() {
        let (book, catalogue) = (PolicyBook::embedded_default(), Catalogue::embedded());
        let mut state = handed_off(&book, &catalogue);
        decide(&mut state, Programme::Dibao, pb::ReferralState::Approved);
        let approved = state
            .current_referral(Programme::Dibao.to_proto())
            .unwrap()
            .clone();
        // Same application, new policy version: the dibao amount follows the new standard.
        let same = app(|_| {});
        let r = run(&state, &same, &Trigger::PolicyVersion);
        assert!(effects(&r).contains(&(Programme::Dibao, Effect::AmountChanged)));
        let review = r
            .events
            .iter()
            .find_map(|e| match e {
                CaseEvent::ReferralIssued(x) if x.reviews == approved.referral_id => Some(x),
                _ => None,
            })
            .expect("a review referral");
        assert_eq!(review.department_unit, approved.department_unit);
        assert_eq!(review.policy_version, "2026-07");
        assert_ne!(review.assessed_amount_fen, approved.assessed_amount_fen);
        assert!(r.events.iter().any(|e| matches!(e,
            CaseEvent::ReviewRequested(q) if q.review_referral_id == review.referral_id
                && q.cause == "policy version 2026-07 took effect")));
        // Under review, the approval is left to the review.
        let mut reviewing = state.clone();
        for e in &r.events {
            apply(&mut reviewing, e.clone());
        }
        let again = run(&reviewing, &same, &Trigger::PolicyVersion);
        assert!(!again
            .changes
            .iter()
            .any(|c| c.programme == Programme::Dibao));
    }

    #[test]
    fn a_denial_stands_unless_the_programme_was_not_met_before() {
        let (book, catalogue) = (PolicyBook::embedded_default(), Catalogue::embedded());
        let mut state = handed_off(&book, &catalogue);
        decide(&mut state, Programme::Housing, pb::ReferralState::Denied);
        let r = run(&state, &app(|_| {}), &amendment("x"));
        assert!(!r.changes.iter().any(|c| c.programme == Programme::Housing));
        // Had housing not been met by the assessment replaced, it is referred again.
        let mut unmet = state.clone();
        if let Some(a) = unmet.assessed.as_mut() {
            for x in &mut a.assessments {
                if x.programme == pb::Programme::Housing as i32 {
                    x.outcome = pb::Outcome::Ineligible as i32;
                }
            }
        }
        let r = run(&unmet, &app(|_| {}), &amendment("x"));
        assert!(effects(&r).contains(&(Programme::Housing, Effect::NewlyEligible)));
    }

    #[test]
    fn a_closed_case_left_with_nothing_open_closes_again() {
        let (book, catalogue) = (PolicyBook::embedded_default(), Catalogue::embedded());
        let mut state = handed_off(&book, &catalogue);
        let programmes: Vec<i32> = state.referrals.iter().map(|r| r.programme).collect();
        for p in programmes {
            let to = if p == pb::Programme::Dibao as i32 {
                pb::ReferralState::Approved
            } else {
                pb::ReferralState::Denied
            };
            decide(&mut state, Programme::from_proto(p).unwrap(), to);
        }
        let recognitions: Vec<pb::Referral> = state.linkage_pending().cloned().collect();
        for r in recognitions {
            apply(
                &mut state,
                CaseEvent::RecognitionLinked(pb::RecognitionLinked {
                    referral_id: r.referral_id,
                    ..Default::default()
                }),
            );
        }
        apply(
            &mut state,
            CaseEvent::CaseClosed(pb::CaseClosed {
                reason: "every referral is decided".into(),
            }),
        );
        assert_eq!(state.status, CaseStatus::Closed);
        assert!(state.is_active());
        // The approved amount is what the new policy gives: nothing to review.
        let dibao = state
            .referrals
            .iter_mut()
            .find(|r| r.programme == pb::Programme::Dibao as i32)
            .unwrap();
        let same = app(|_| {});
        let policy = PolicyBook::embedded_default();
        let policy = policy
            .in_force(onecity_domain::beijing_date(now()))
            .unwrap();
        dibao.assessed_amount_fen = assess(&same, policy, &catalogue)[0].amount_fen;
        let r = run(&state, &same, &Trigger::PolicyVersion);
        assert!(r.changes.is_empty(), "{:?}", r.changes);
        assert!(
            matches!(
                r.events.as_slice(),
                [
                    CaseEvent::EligibilityReassessed(_),
                    CaseEvent::CaseClosed(_)
                ]
            ),
            "{:?}",
            r.events.iter().skip(1).collect::<Vec<_>>()
        );
    }
}
