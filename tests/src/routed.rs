//! What a log says was routed, counted per case: the facts the exactly-once tests assert on.

use std::collections::{BTreeMap, HashMap};

use onecity_domain::events::CaseEvent;
use onecity_proto::v1 as pb;

/// Submissions, assessments and referrals in a log, per case (and programme), and the
/// referrals its assessments call for.
#[derive(Debug, Default)]
pub struct Routed {
    /// `ApplicationSubmitted` events per case.
    pub submitted: HashMap<String, usize>,
    /// `EligibilityAssessed` events per case.
    pub assessed: HashMap<String, usize>,
    /// `ReferralIssued` events per (case, programme).
    pub referred: BTreeMap<(String, i32), usize>,
    /// (case, programme) → 1 for every programme assessed ELIGIBLE or NEEDS_REVIEW: what
    /// `referred` is when every referral was issued exactly once.
    pub expected: BTreeMap<(String, i32), usize>,
}

impl Routed {
    /// Counts the events of a log read through its gRPC face.
    pub fn of(events: &[pb::RecordedEvent]) -> Routed {
        let mut r = Routed::default();
        for e in events {
            r.add(&e.case_id, &e.event_type, &e.payload);
        }
        r
    }

    /// Counts one event.
    pub fn add(&mut self, case_id: &str, event_type: &str, payload: &[u8]) {
        let case = case_id.to_owned();
        match CaseEvent::decode(event_type, payload).expect("decode a case event") {
            Some(CaseEvent::ApplicationSubmitted(_)) => {
                *self.submitted.entry(case).or_default() += 1
            }
            Some(CaseEvent::EligibilityAssessed(a)) => {
                *self.assessed.entry(case.clone()).or_default() += 1;
                for x in a.assessments {
                    if x.outcome == pb::Outcome::Eligible as i32
                        || x.outcome == pb::Outcome::NeedsReview as i32
                    {
                        self.expected.insert((case.clone(), x.programme), 1);
                    }
                }
            }
            Some(CaseEvent::ReferralIssued(r)) => {
                *self.referred.entry((case, r.programme)).or_default() += 1
            }
            _ => {}
        }
    }
}
