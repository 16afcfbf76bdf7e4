//! The referral state machine: the one place that says which action may move a referral
//! from which state to which. Services ask [`next_state`] before they write; anything it
//! refuses is a failed precondition naming the current state. `docs/api.md` draws it.

use onecity_proto::v1 as pb;

/// Where a referral is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReferralState {
    /// Issued to the department unit.
    Issued,
    /// The department has received it.
    Acknowledged,
    /// Waiting for information from the household; the deadline is paused.
    NeedsInfo,
    /// The department approved (final).
    Approved,
    /// The department denied (final).
    Denied,
    /// Cancelled, by withdrawal or linkage (final).
    Cancelled,
    /// Moved to another unit, which holds a new referral (final).
    Transferred,
}

/// Something a principal or worker wants to do to a referral.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReferralAction {
    /// The department acknowledges receipt.
    Acknowledge,
    /// The department approves.
    Approve,
    /// The department denies.
    Deny,
    /// The case no longer needs it (withdrawal, linkage).
    Cancel,
    /// A department or supervisor moves it to another unit.
    Transfer,
    /// The department asks the household for information.
    RequestInformation,
    /// A terminal provides the information asked for.
    ProvideInformation,
}

/// Every state, for exhaustive checks and docs.
pub const ALL_STATES: [ReferralState; 7] = [
    ReferralState::Issued,
    ReferralState::Acknowledged,
    ReferralState::NeedsInfo,
    ReferralState::Approved,
    ReferralState::Denied,
    ReferralState::Cancelled,
    ReferralState::Transferred,
];

/// Every action, for exhaustive checks and docs.
pub const ALL_ACTIONS: [ReferralAction; 7] = [
    ReferralAction::Acknowledge,
    ReferralAction::Approve,
    ReferralAction::Deny,
    ReferralAction::Cancel,
    ReferralAction::Transfer,
    ReferralAction::RequestInformation,
    ReferralAction::ProvideInformation,
];

/// An action the state machine does not allow from the referral's current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} referral {referral_id}: it is {}", describe(*.state))]
pub struct IllegalTransition {
    /// The referral.
    pub referral_id: String,
    /// Its current state.
    pub state: ReferralState,
    /// What was asked.
    pub action: ReferralAction,
}

fn describe(state: ReferralState) -> String {
    match state {
        ReferralState::Approved | ReferralState::Denied => {
            format!("already decided ({})", state.name())
        }
        _ => state.name().to_owned(),
    }
}

impl ReferralState {
    /// The proto enum name without its prefix (`ACKNOWLEDGED`).
    pub fn name(self) -> &'static str {
        pb::ReferralState::from(self)
            .as_str_name()
            .trim_start_matches("REFERRAL_STATE_")
    }

    /// No action leaves a final state.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ReferralState::Approved
                | ReferralState::Denied
                | ReferralState::Cancelled
                | ReferralState::Transferred
        )
    }

    /// Open and waiting on the department, so its deadline runs (ISSUED or ACKNOWLEDGED;
    /// NEEDS_INFO waits on the household and the clock is paused).
    pub fn deadline_runs(self) -> bool {
        matches!(self, ReferralState::Issued | ReferralState::Acknowledged)
    }

    /// The state of a stored referral; `None` for 0 or a value this version does not know.
    pub fn from_proto(state: i32) -> Option<Self> {
        Some(match pb::ReferralState::try_from(state).ok()? {
            pb::ReferralState::Unspecified => return None,
            pb::ReferralState::Issued => ReferralState::Issued,
            pb::ReferralState::Acknowledged => ReferralState::Acknowledged,
            pb::ReferralState::NeedsInfo => ReferralState::NeedsInfo,
            pb::ReferralState::Approved => ReferralState::Approved,
            pb::ReferralState::Denied => ReferralState::Denied,
            pb::ReferralState::Cancelled => ReferralState::Cancelled,
            pb::ReferralState::Transferred => ReferralState::Transferred,
        })
    }
}

impl From<ReferralState> for pb::ReferralState {
    fn from(s: ReferralState) -> Self {
        match s {
            ReferralState::Issued => pb::ReferralState::Issued,
            ReferralState::Acknowledged => pb::ReferralState::Acknowledged,
            ReferralState::NeedsInfo => pb::ReferralState::NeedsInfo,
            ReferralState::Approved => pb::ReferralState::Approved,
            ReferralState::Denied => pb::ReferralState::Denied,
            ReferralState::Cancelled => pb::ReferralState::Cancelled,
            ReferralState::Transferred => pb::ReferralState::Transferred,
        }
    }
}

impl std::fmt::Display for ReferralAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReferralAction::Acknowledge => "acknowledge",
            ReferralAction::Approve => "approve",
            ReferralAction::Deny => "deny",
            ReferralAction::Cancel => "cancel",
            ReferralAction::Transfer => "transfer",
            ReferralAction::RequestInformation => "request information on",
            ReferralAction::ProvideInformation => "provide information on",
        })
    }
}

/// The state `action` moves a referral in `state` to, or `None` when the machine has no
/// such edge. A department decides only while the household owes it nothing, so
/// NEEDS_INFO must be answered (or the referral moved or cancelled) first.
pub fn edge(state: ReferralState, action: ReferralAction) -> Option<ReferralState> {
    use ReferralAction as A;
    use ReferralState as S;
    match (state, action) {
        (S::Issued, A::Acknowledge) => Some(S::Acknowledged),
        (S::Issued | S::Acknowledged, A::Approve) => Some(S::Approved),
        (S::Issued | S::Acknowledged, A::Deny) => Some(S::Denied),
        (S::Issued | S::Acknowledged, A::RequestInformation) => Some(S::NeedsInfo),
        (S::NeedsInfo, A::ProvideInformation) => Some(S::Acknowledged),
        (S::Issued | S::Acknowledged | S::NeedsInfo, A::Cancel) => Some(S::Cancelled),
        (S::Issued | S::Acknowledged | S::NeedsInfo, A::Transfer) => Some(S::Transferred),
        _ => None,
    }
}

/// [`edge`] for a stored referral, refusing with an [`IllegalTransition`] naming its state.
/// A stored state this version does not know refuses every action, reported as the
/// nearest final state so nothing is written over it.
pub fn next_state(
    referral: &pb::Referral,
    action: ReferralAction,
) -> Result<ReferralState, IllegalTransition> {
    let state = ReferralState::from_proto(referral.state).unwrap_or(ReferralState::Cancelled);
    edge(state, action).ok_or_else(|| IllegalTransition {
        referral_id: referral.referral_id.clone(),
        state,
        action,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn final_states_have_no_way_out_and_open_ones_do() {
        for s in ALL_STATES {
            let exits = ALL_ACTIONS
                .iter()
                .filter(|a| edge(s, **a).is_some())
                .count();
            assert_eq!(exits == 0, s.is_final(), "{s:?}");
        }
    }

    #[test]
    fn needs_info_round_trip_and_no_decision_while_waiting() {
        let asked = edge(
            ReferralState::Acknowledged,
            ReferralAction::RequestInformation,
        );
        assert_eq!(asked, Some(ReferralState::NeedsInfo));
        assert_eq!(
            edge(ReferralState::NeedsInfo, ReferralAction::Approve),
            None
        );
        assert_eq!(
            edge(ReferralState::NeedsInfo, ReferralAction::ProvideInformation),
            Some(ReferralState::Acknowledged)
        );
        assert_eq!(
            edge(ReferralState::Issued, ReferralAction::ProvideInformation),
            None
        );
    }

    #[test]
    fn refusals_name_the_current_state() {
        let r = pb::Referral {
            referral_id: "r1".into(),
            state: pb::ReferralState::Transferred as i32,
            ..Default::default()
        };
        let e = next_state(&r, ReferralAction::Acknowledge).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot acknowledge referral r1: it is TRANSFERRED"
        );
        let r = pb::Referral {
            state: pb::ReferralState::Denied as i32,
            ..r
        };
        assert_eq!(
            next_state(&r, ReferralAction::Approve)
                .unwrap_err()
                .to_string(),
            "cannot approve referral r1: it is already decided (DENIED)"
        );
        let unknown = pb::Referral { state: 99, ..r };
        assert!(next_state(&unknown, ReferralAction::Cancel).is_err());
    }

    fn state() -> impl Strategy<Value = ReferralState> {
        proptest::sample::select(ALL_STATES.to_vec())
    }

    fn action() -> impl Strategy<Value = ReferralAction> {
        proptest::sample::select(ALL_ACTIONS.to_vec())
    }

    proptest! {
        // Whatever is tried, a referral ends in a state reachable by the drawn edges, a
        // final state is never left, and the deadline runs only while the department owes
        // the answer.
        #[test]
        fn random_walks_respect_the_machine(actions in proptest::collection::vec(action(), 0..40)) {
            let mut s = ReferralState::Issued;
            for a in actions {
                match edge(s, a) {
                    Some(next) => {
                        prop_assert!(!s.is_final());
                        prop_assert_ne!(next, ReferralState::Issued);
                        s = next;
                    }
                    None => prop_assert!(s.is_final() || !matches!((s, a),
                        (ReferralState::Issued | ReferralState::Acknowledged, ReferralAction::Approve | ReferralAction::Deny | ReferralAction::Cancel | ReferralAction::Transfer))),
                }
            }
        }

        #[test]
        fn proto_names_round_trip(s in state()) {
            let p = pb::ReferralState::from(s) as i32;
            prop_assert_eq!(ReferralState::from_proto(p), Some(s));
            prop_assert_eq!(s.deadline_runs(), matches!(s, ReferralState::Issued | ReferralState::Acknowledged));
        }
    }
}
