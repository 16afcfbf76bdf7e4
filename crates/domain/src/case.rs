//! The case projection: a pure fold of a case stream into its current state. Intake
//! (`GetCase`, withdrawal) and handoff (transition checks) both use it, so the rules of
//! the lifecycle live in one place.

use onecity_proto::v1 as pb;

use crate::events::{Audience, CaseEvent};

/// Lifecycle state of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseStatus {
    /// Submitted and not yet fully decided.
    Open,
    /// Every referral decided, or none was needed.
    Closed,
    /// Withdrawn by the applicant.
    Withdrawn,
}

impl From<CaseStatus> for pb::CaseStatus {
    fn from(s: CaseStatus) -> Self {
        match s {
            CaseStatus::Open => pb::CaseStatus::Open,
            CaseStatus::Closed => pb::CaseStatus::Closed,
            CaseStatus::Withdrawn => pb::CaseStatus::Withdrawn,
        }
    }
}

/// Where an event sits in the log, as needed by the projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMeta {
    /// Version in the case stream.
    pub version: u64,
    /// Global position.
    pub position: u64,
    /// Event type.
    pub event_type: String,
    /// Who caused it.
    pub actor: String,
    /// When it was recorded (RFC 3339, UTC).
    pub recorded_at: String,
}

/// The state of one case, folded from its stream.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseState {
    /// Version of the last event applied.
    pub version: u64,
    /// Lifecycle state.
    pub status: CaseStatus,
    /// The submission (the first event).
    pub submitted: Option<pb::ApplicationSubmitted>,
    /// The current assessment, once made: the first one (`EligibilityAssessed`), or the
    /// latest re-assessment's (`EligibilityReassessed`).
    pub assessed: Option<pb::EligibilityAssessed>,
    /// The latest change of circumstances, if any: its application is the household's
    /// current one ([`CaseState::application`]).
    pub amended: Option<pb::ApplicationAmended>,
    /// The causes of the re-assessments made (`EligibilityReassessed.cause`: amendment
    /// event ids, policy version ids), in order.
    pub reassessed: Vec<String>,
    /// Referrals in issue order, each in its latest state.
    pub referrals: Vec<pb::Referral>,
    /// One history line per event.
    pub history: Vec<pb::CaseEvent>,
    /// Which departments may read each history line, one per line.
    pub audiences: Vec<Audience>,
    /// The recognition referrals whose decision the linkage worker applied
    /// (`RecognitionLinked`), in order.
    pub linked: Vec<String>,
}

impl Default for CaseState {
    fn default() -> Self {
        CaseState {
            version: 0,
            status: CaseStatus::Open,
            submitted: None,
            assessed: None,
            amended: None,
            reassessed: Vec::new(),
            referrals: Vec::new(),
            history: Vec::new(),
            audiences: Vec::new(),
            linked: Vec::new(),
        }
    }
}

/// The programmes whose decision is the household's low-income recognition: the
/// departmental programmes are linked to it.
pub const RECOGNITION_PROGRAMMES: [pb::Programme; 4] = [
    pb::Programme::Dibao,
    pb::Programme::ExtremePoverty,
    pb::Programme::LowIncomeMarginal,
    pb::Programme::RigidExpenditure,
];

/// Whether `programme` (wire value) is one of [`RECOGNITION_PROGRAMMES`].
pub fn is_recognition(programme: i32) -> bool {
    RECOGNITION_PROGRAMMES
        .iter()
        .any(|p| *p as i32 == programme)
}

/// The departmental programmes linked to the recognition (their rules take it as an
/// input): these referrals carry a basis.
pub const DEPENDENT_PROGRAMMES: [pb::Programme; 5] = [
    pb::Programme::Medical,
    pb::Programme::Education,
    pb::Programme::Housing,
    pb::Programme::Employment,
    pb::Programme::DisabilitySubsidy,
];

/// Whether `programme` (wire value) is one of [`DEPENDENT_PROGRAMMES`].
pub fn is_dependent(programme: i32) -> bool {
    DEPENDENT_PROGRAMMES.iter().any(|p| *p as i32 == programme)
}

/// Whether a referral state is a department's decision.
pub fn is_decided(state: i32) -> bool {
    state == pb::ReferralState::Approved as i32 || state == pb::ReferralState::Denied as i32
}

/// Whether a referral state is final (decided or cancelled).
pub fn is_final(state: i32) -> bool {
    crate::referral::ReferralState::from_proto(state).is_some_and(|s| s.is_final())
}

impl CaseState {
    /// Applies one event (unknown event types only advance the version).
    pub fn apply(&mut self, meta: EventMeta, event: Option<&CaseEvent>) {
        self.record(meta, event);
        if let Some(event) = event {
            self.fold(event.clone());
        }
    }

    /// [`CaseState::apply`] with the event given away: its messages move into the state
    /// instead of being copied (a stream read back is folded this way).
    pub fn apply_owned(&mut self, meta: EventMeta, event: Option<CaseEvent>) {
        self.record(meta, event.as_ref());
        if let Some(event) = event {
            self.fold(event);
        }
    }

    /// The version and the history line of one event.
    fn record(&mut self, meta: EventMeta, event: Option<&CaseEvent>) {
        self.version = meta.version;
        let summary = event.map_or_else(
            || format!("{} (not understood by this version)", meta.event_type),
            CaseEvent::summary,
        );
        self.history.push(pb::CaseEvent {
            version: meta.version,
            position: meta.position,
            event_type: meta.event_type,
            actor: meta.actor,
            recorded_at: meta.recorded_at,
            summary,
        });
        self.audiences
            .push(event.map_or(Audience::Nobody, CaseEvent::audience));
    }

    /// What one event changes besides the version and the history.
    fn fold(&mut self, event: CaseEvent) {
        match event {
            CaseEvent::ApplicationSubmitted(s) => self.submitted = Some(s),
            CaseEvent::EligibilityAssessed(a) => self.assessed = Some(a),
            CaseEvent::ReferralIssued(r) => self.referrals.push(r),
            CaseEvent::ReferralAcknowledged(r)
            | CaseEvent::ReferralDecided(r)
            | CaseEvent::ReferralCancelled(r)
            | CaseEvent::ReferralDueSoon(r)
            | CaseEvent::ReferralOverdue(r)
            | CaseEvent::ReferralEscalated(r)
            | CaseEvent::ReferralBasisUpdated(r)
            | CaseEvent::ReferralTransferred(r)
            | CaseEvent::ReferralInformationRequested(r)
            | CaseEvent::ReferralInformationProvided(r) => {
                match self
                    .referrals
                    .iter_mut()
                    .find(|x| x.referral_id == r.referral_id)
                {
                    Some(slot) => *slot = r,
                    None => self.referrals.push(r),
                }
            }
            CaseEvent::RecognitionLinked(l) => self.linked.push(l.referral_id),
            // A recognition in force on a closed case is still reviewed: the case is open
            // again until the review is decided and linked, then closes as any case does.
            CaseEvent::ReverificationDue(_) => {
                if self.status == CaseStatus::Closed {
                    self.status = CaseStatus::Open;
                }
            }
            // A closed case may be amended only while an approval is in force (intake checks),
            // and a re-assessment may issue referrals on a closed case: either re-opens it
            // until what it started is decided (the re-assessment's own commit closes it
            // again when it left nothing open).
            CaseEvent::ApplicationAmended(a) => {
                self.amended = Some(a);
                if self.status == CaseStatus::Closed {
                    self.status = CaseStatus::Open;
                }
            }
            CaseEvent::EligibilityReassessed(a) => {
                self.assessed = Some(pb::EligibilityAssessed {
                    assessments: a.assessments,
                    policy_version: a.policy_version,
                });
                self.reassessed.push(a.cause);
                if self.status == CaseStatus::Closed {
                    self.status = CaseStatus::Open;
                }
            }
            // Its review referral comes in the same commit, as a `ReferralIssued`.
            CaseEvent::ReviewRequested(_) => {}
            CaseEvent::ApplicationWithdrawn(_) => self.status = CaseStatus::Withdrawn,
            CaseEvent::CaseClosed(_) => {
                if self.status == CaseStatus::Open {
                    self.status = CaseStatus::Closed;
                }
            }
        }
    }

    /// Folds a stored stream: `(meta, payload)` per event, in version order. Fails on a
    /// payload that does not decode as its declared type (a damaged or foreign event).
    pub fn from_stored<'a>(
        events: impl IntoIterator<Item = (EventMeta, &'a [u8])>,
    ) -> Result<CaseState, crate::events::DecodeError> {
        let mut state = CaseState::default();
        for (meta, payload) in events {
            let event = CaseEvent::decode(&meta.event_type, payload)?;
            state.apply_owned(meta, event);
        }
        Ok(state)
    }

    /// The household's application as it now stands: the latest amendment's, else the
    /// submission's.
    pub fn application(&self) -> Option<&pb::Application> {
        self.amended
            .as_ref()
            .and_then(|a| a.application.as_ref())
            .or_else(|| self.submitted.as_ref()?.application.as_ref())
    }

    /// The policy version of the current assessment (empty before the first).
    pub fn policy_version(&self) -> &str {
        self.assessed
            .as_ref()
            .map_or("", |a| a.policy_version.as_str())
    }

    /// The referral that now carries `programme` (wire value) at a unit: the latest one
    /// issued for it (a review, a re-issue after a cancellation), followed through its
    /// transfers. `None` when the programme was never referred.
    pub fn current_referral(&self, programme: i32) -> Option<&pb::Referral> {
        let latest = self
            .referrals
            .iter()
            .rev()
            .find(|r| r.programme == programme)?;
        self.successor(&latest.referral_id)
    }

    /// Whether `r` is an approval in force: APPROVED and not replaced by the decision of a
    /// review of it (a review still open leaves it in force).
    pub fn approval_in_force(&self, r: &pb::Referral) -> bool {
        r.state == pb::ReferralState::Approved as i32
            && self
                .review_of(&r.referral_id)
                .and_then(|review| self.successor(&review.referral_id))
                .is_none_or(|review| !is_decided(review.state))
    }

    /// Whether the case holds a decided approval in force (what lets a closed case be
    /// amended, and keeps it among the active cases a new policy version reaches).
    pub fn holds_approval(&self) -> bool {
        self.status != CaseStatus::Withdrawn
            && self.referrals.iter().any(|r| self.approval_in_force(r))
    }

    /// Whether a new policy version reaches the case: open, or closed holding an approval
    /// in force.
    pub fn is_active(&self) -> bool {
        match self.status {
            CaseStatus::Open => self.submitted.is_some(),
            CaseStatus::Closed => self.holds_approval(),
            CaseStatus::Withdrawn => false,
        }
    }

    /// The referral with this id.
    pub fn referral(&self, referral_id: &str) -> Option<&pb::Referral> {
        self.referrals.iter().find(|r| r.referral_id == referral_id)
    }

    /// The referral that now carries `referral_id`'s programme at a unit: the referral
    /// itself, or, when it was transferred, the referral that replaced it (followed along
    /// the whole chain of transfers).
    pub fn successor(&self, referral_id: &str) -> Option<&pb::Referral> {
        let mut current = self.referral(referral_id)?;
        // A chain cannot be longer than the case's referrals; the bound guards a damaged log.
        for _ in 0..self.referrals.len() {
            if current.state != pb::ReferralState::Transferred as i32 {
                break;
            }
            match self.referral(&current.transferred_to) {
                Some(next) => current = next,
                None => break,
            }
        }
        Some(current)
    }

    /// The review referral issued for the approved recognition referral `referral_id`
    /// (the first one carrying `reviews` = it; a transferred review's successor carries it
    /// too).
    pub fn review_of(&self, referral_id: &str) -> Option<&pb::Referral> {
        self.referrals.iter().find(|r| r.reviews == referral_id)
    }

    /// The recognition referral whose approval is due for re-verification: APPROVED, a
    /// recognition programme, carrying a review date, no review issued for it yet, and the
    /// case not withdrawn. The one place "still in force and not yet under review" is
    /// written.
    pub fn review_due(&self, referral_id: &str) -> Option<&pb::Referral> {
        let r = self.referral(referral_id)?;
        (self.status != CaseStatus::Withdrawn
            && r.state == pb::ReferralState::Approved as i32
            && is_recognition(r.programme)
            && !r.review_due_on.is_empty()
            && self.review_of(referral_id).is_none())
        .then_some(r)
    }

    /// Whether every referral is final (vacuously true with none).
    pub fn all_referrals_final(&self) -> bool {
        self.referrals.iter().all(|r| is_final(r.state))
    }

    /// The decided recognition referrals whose decision the linkage worker has not applied
    /// yet.
    pub fn linkage_pending(&self) -> impl Iterator<Item = &pb::Referral> {
        self.referrals.iter().filter(|r| {
            is_recognition(r.programme)
                && is_decided(r.state)
                && !self.linked.contains(&r.referral_id)
        })
    }

    /// Whether the household is owed the charity referral of last resort: the case is open,
    /// the household consented to share, it has public referrals and every one of them
    /// ended denied or cancelled, no linkage step is pending (it may still refer a
    /// programme) and no charity referral exists (from intake's charity rule or an earlier
    /// dead end). The one place this condition is written.
    pub fn charity_due(&self) -> bool {
        let consent = self.application().is_some_and(|a| a.consent_to_share);
        let charity = pb::Programme::Charity as i32;
        let public = || self.referrals.iter().filter(|r| r.programme != charity);
        self.status == CaseStatus::Open
            && consent
            && public().next().is_some()
            // A transferred referral has ended only at its unit: its successor at the
            // receiving unit (another referral of the case) is the one that counts.
            && public()
                .filter(|r| r.state != pb::ReferralState::Transferred as i32)
                .all(|r| {
                    r.state == pb::ReferralState::Denied as i32
                        || r.state == pb::ReferralState::Cancelled as i32
                })
            && !self.referrals.iter().any(|r| r.programme == charity)
            && self.linkage_pending().next().is_none()
    }

    /// Whether the case may close now: open, every referral final, no linkage step pending
    /// and no charity referral due. Whoever closes a case asks this.
    pub fn ready_to_close(&self) -> bool {
        self.status == CaseStatus::Open
            && self.all_referrals_final()
            && self.linkage_pending().next().is_none()
            && !self.charity_due()
    }

    /// The `CaseClosed` to append after `events` when they leave the case ready to close
    /// ([`CaseState::ready_to_close`]); `None` otherwise. Whoever writes referral events
    /// asks this, so a case closes in the commit that ends its last referral.
    pub fn closed_by(&self, events: &[CaseEvent]) -> Option<CaseEvent> {
        // Only what `ready_to_close` reads (status, referrals, links, the application):
        // copying the assessment and the history as well was most of what a policy sweep
        // spent per case.
        let mut after = CaseState {
            version: self.version,
            status: self.status,
            submitted: self.submitted.clone(),
            assessed: None,
            amended: self.amended.clone(),
            reassessed: Vec::new(),
            referrals: self.referrals.clone(),
            history: Vec::new(),
            audiences: Vec::new(),
            linked: self.linked.clone(),
        };
        for e in events {
            after.fold(e.clone());
        }
        after.ready_to_close().then(|| {
            CaseEvent::CaseClosed(pb::CaseClosed {
                reason: "every referral is decided".into(),
            })
        })
    }

    /// Whether the referrals have been issued (the handoff step ran for this case).
    pub fn handed_off(&self) -> bool {
        !self.referrals.is_empty() || self.status != CaseStatus::Open && self.assessed.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(v: u64, ty: &str) -> EventMeta {
        EventMeta {
            version: v,
            position: v,
            event_type: ty.into(),
            actor: "t".into(),
            recorded_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn referral(id: &str, state: pb::ReferralState) -> pb::Referral {
        pb::Referral {
            referral_id: id.into(),
            state: state as i32,
            ..Default::default()
        }
    }

    #[test]
    fn lifecycle_folds() {
        let mut c = CaseState::default();
        let events = [
            CaseEvent::ApplicationSubmitted(pb::ApplicationSubmitted::default()),
            CaseEvent::EligibilityAssessed(pb::EligibilityAssessed::default()),
            CaseEvent::ReferralIssued(referral("a", pb::ReferralState::Issued)),
            CaseEvent::ReferralIssued(referral("b", pb::ReferralState::Issued)),
            CaseEvent::ReferralAcknowledged(referral("a", pb::ReferralState::Acknowledged)),
            CaseEvent::ReferralDecided(referral("a", pb::ReferralState::Approved)),
        ];
        for (i, e) in events.iter().enumerate() {
            c.apply(meta(i as u64 + 1, e.event_type()), Some(e));
        }
        assert_eq!(c.version, 6);
        assert_eq!(c.referrals.len(), 2);
        assert_eq!(
            c.referral("a").unwrap().state,
            pb::ReferralState::Approved as i32
        );
        assert!(!c.all_referrals_final());
        assert_eq!(c.status, CaseStatus::Open);
        let d = CaseEvent::ReferralDecided(referral("b", pb::ReferralState::Denied));
        c.apply(meta(7, d.event_type()), Some(&d));
        assert!(c.all_referrals_final());
        let close = CaseEvent::CaseClosed(pb::CaseClosed::default());
        c.apply(meta(8, close.event_type()), Some(&close));
        assert_eq!(c.status, CaseStatus::Closed);
        assert_eq!(c.history.len(), 8);
        c.apply(meta(9, "onecity.v9.Future"), None);
        assert_eq!(c.version, 9);
        assert!(c.history[8].summary.contains("not understood"));
        assert_eq!(c.audiences.len(), c.history.len());
        assert_eq!(c.audiences[0], Audience::Case);
        assert!(matches!(c.audiences[1], Audience::CaseRedacted(_)));
        assert_eq!(c.audiences[2], Audience::Unit(String::new()));
        assert_eq!(c.audiences[7], Audience::Case);
        assert_eq!(c.audiences[8], Audience::Nobody);
    }

    #[test]
    fn withdrawal_wins_over_a_later_close() {
        let mut c = CaseState::default();
        let w = CaseEvent::ApplicationWithdrawn(pb::ApplicationWithdrawn::default());
        c.apply(meta(1, w.event_type()), Some(&w));
        let close = CaseEvent::CaseClosed(pb::CaseClosed::default());
        c.apply(meta(2, close.event_type()), Some(&close));
        assert_eq!(c.status, CaseStatus::Withdrawn);
    }

    #[test]
    fn a_transferred_referral_waits_for_its_successor_before_charity() {
        let mut c = CaseState::default();
        let submitted = CaseEvent::ApplicationSubmitted(pb::ApplicationSubmitted {
            application: Some(pb::Application {
                consent_to_share: true,
                ..Default::default()
            }),
            ..Default::default()
        });
        let of = |id: &str, programme: pb::Programme, state| pb::Referral {
            programme: programme as i32,
            ..referral(id, state)
        };
        let events = [
            submitted,
            CaseEvent::ReferralIssued(of("t", pb::Programme::Temporary, pb::ReferralState::Issued)),
            CaseEvent::ReferralIssued(of("h", pb::Programme::Housing, pb::ReferralState::Issued)),
            CaseEvent::ReferralDecided(of(
                "t",
                pb::Programme::Temporary,
                pb::ReferralState::Denied,
            )),
            // Any referral event carrying the state: the fold takes the state it carries.
            CaseEvent::ReferralDecided(of(
                "h",
                pb::Programme::Housing,
                pb::ReferralState::Transferred,
            )),
            CaseEvent::ReferralIssued(of("h2", pb::Programme::Housing, pb::ReferralState::Issued)),
        ];
        for (i, e) in events.iter().enumerate() {
            c.apply(meta(i as u64 + 1, e.event_type()), Some(e));
        }
        assert!(
            !c.charity_due(),
            "the transferred referral's successor is open"
        );
        let denied =
            CaseEvent::ReferralDecided(of("h2", pb::Programme::Housing, pb::ReferralState::Denied));
        c.apply(meta(7, denied.event_type()), Some(&denied));
        assert!(c.charity_due());
        assert!(!c.ready_to_close());
    }

    #[test]
    fn a_review_reopens_a_closed_case_and_is_due_once() {
        let mut c = CaseState::default();
        let approved = pb::Referral {
            programme: pb::Programme::Dibao as i32,
            review_due_on: "2027-12-04".into(),
            ..referral("d", pb::ReferralState::Approved)
        };
        let review = pb::Referral {
            programme: pb::Programme::Dibao as i32,
            reviews: "d".into(),
            ..referral("v", pb::ReferralState::Issued)
        };
        let events = [
            CaseEvent::ReferralIssued(referral("d", pb::ReferralState::Issued)),
            CaseEvent::ReferralDecided(approved),
            CaseEvent::CaseClosed(pb::CaseClosed::default()),
        ];
        for (i, e) in events.iter().enumerate() {
            c.apply(meta(i as u64 + 1, e.event_type()), Some(e));
        }
        assert_eq!(c.status, CaseStatus::Closed);
        assert!(c.review_due("d").is_some());
        let due = [
            CaseEvent::ReverificationDue(pb::ReverificationDue::default()),
            CaseEvent::ReferralIssued(review),
        ];
        for (i, e) in due.iter().enumerate() {
            c.apply(meta(i as u64 + 4, e.event_type()), Some(e));
        }
        assert_eq!(c.status, CaseStatus::Open);
        assert!(c.review_due("d").is_none(), "reviewed once");
        assert_eq!(c.review_of("d").unwrap().referral_id, "v");
        assert!(!c.ready_to_close());
        let w = CaseEvent::ApplicationWithdrawn(pb::ApplicationWithdrawn::default());
        c.apply(meta(6, w.event_type()), Some(&w));
        let again = CaseEvent::ReverificationDue(pb::ReverificationDue::default());
        c.apply(meta(7, again.event_type()), Some(&again));
        assert_eq!(
            c.status,
            CaseStatus::Withdrawn,
            "a withdrawal is never undone"
        );

        // An approval on a withdrawn case is no longer in force: never reviewed.
        let mut w = CaseState::default();
        let approved = pb::Referral {
            programme: pb::Programme::Dibao as i32,
            review_due_on: "2027-12-04".into(),
            ..referral("d", pb::ReferralState::Approved)
        };
        let events = [
            CaseEvent::ReferralDecided(approved.clone()),
            CaseEvent::ApplicationWithdrawn(pb::ApplicationWithdrawn::default()),
        ];
        for (i, e) in events.iter().enumerate() {
            w.apply(meta(i as u64 + 1, e.event_type()), Some(e));
        }
        assert!(w.review_due("d").is_none());
        // Nor is a departmental approval or one without a review date.
        let mut d = CaseState::default();
        for (i, r) in [
            pb::Referral {
                programme: pb::Programme::Medical as i32,
                ..approved.clone()
            },
            pb::Referral {
                referral_id: "e".into(),
                review_due_on: String::new(),
                ..approved
            },
        ]
        .into_iter()
        .enumerate()
        {
            let e = CaseEvent::ReferralDecided(r);
            d.apply(meta(i as u64 + 1, e.event_type()), Some(&e));
        }
        assert!(d.review_due("d").is_none());
        assert!(d.review_due("e").is_none());
    }

    #[test]
    fn the_successor_of_a_referral_follows_every_transfer() {
        let mut c = CaseState::default();
        let moved = |id: &str, to: &str| pb::Referral {
            transferred_to: to.into(),
            ..referral(id, pb::ReferralState::Transferred)
        };
        let events = [
            CaseEvent::ReferralIssued(referral("a", pb::ReferralState::Issued)),
            CaseEvent::ReferralTransferred(moved("a", "b")),
            CaseEvent::ReferralIssued(referral("b", pb::ReferralState::Issued)),
            CaseEvent::ReferralTransferred(moved("b", "c")),
            CaseEvent::ReferralIssued(referral("c", pb::ReferralState::Acknowledged)),
        ];
        for (i, e) in events.iter().enumerate() {
            c.apply(meta(i as u64 + 1, e.event_type()), Some(e));
        }
        assert_eq!(c.successor("a").unwrap().referral_id, "c");
        assert_eq!(c.successor("b").unwrap().referral_id, "c");
        assert_eq!(c.successor("c").unwrap().referral_id, "c");
        assert!(c.successor("x").is_none());
        // A chain that loops (a damaged log) ends rather than spinning.
        let looped = CaseEvent::ReferralTransferred(moved("c", "a"));
        c.apply(meta(6, looped.event_type()), Some(&looped));
        assert!(c.successor("a").is_some());
    }
}
