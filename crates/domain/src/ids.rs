//! Every deterministic id of onecity, in one place: the commit id of each step a case goes
//! through, the id of each referral, and the stream and commit ids of the quarantine
//! records.
//!
//! The log never forgets a commit id, so deriving a step's commit id from what identifies
//! the step makes a retry or a replay of that step a no-op: the services, the benchmark's
//! log generator and the tests all derive them here. The formats are stored in every log
//! ever written: changing one would make old steps run again, which
//! `tests::ids_are_pinned` guards against.

use uuid::Uuid;

use crate::Programme;

/// Namespace of onecity's name-based (v5) ids.
pub const NAMESPACE: Uuid = Uuid::from_u128(0x6f6e_6563_6974_7900_8000_0000_0000_0001);

/// Name-based id of `parts`, separated by NUL (which no part contains: ids, slugs and
/// printable request ids).
fn derive(parts: &[&str]) -> Uuid {
    Uuid::new_v5(&NAMESPACE, parts.join("\u{0}").as_bytes())
}

/// Commit id of a terminal's submission: the same request id from the same terminal is
/// always the same commit, hence the same case.
pub fn submit_commit(terminal_id: &str, request_id: &str) -> Uuid {
    derive(&["submit", terminal_id, request_id])
}

/// Commit id of a case's eligibility assessment: a case is assessed once.
pub fn assess_commit(case_id: Uuid) -> Uuid {
    derive(&["assess", &case_id.to_string()])
}

/// Commit id of a case's handoff (its referrals, or its closing when nothing is referred):
/// a case is handed off once.
pub fn handoff_commit(case_id: Uuid) -> Uuid {
    derive(&["handoff", &case_id.to_string()])
}

/// Commit id of a withdrawal written on top of case version `version`: a retry of that
/// exact write is deduplicated, a write after someone else's is a new commit.
pub fn withdraw_commit(case_id: Uuid, version: u64) -> Uuid {
    derive(&["withdraw", &case_id.to_string(), &version.to_string()])
}

/// Commit id of a principal's request carrying an idempotency key (`AcknowledgeReferral`,
/// `RecordDecision`, `WithdrawApplication`): the same request id from the same principal is
/// always the same commit, so a retry finds the original instead of acting twice, and a
/// reuse of the key for other content is recognised as such. `actor` is
/// [`crate::Principal::actor`]; submissions keep their own [`submit_commit`].
pub fn request_commit(actor: &str, request_id: &str) -> Uuid {
    derive(&["request", actor, request_id])
}

/// Commit id of the deadline worker's `stage` event (`due-soon`, `overdue`, `escalated`)
/// for `referral_id`: each is written once per referral, whichever instance or restart
/// writes it.
pub fn deadline_commit(referral_id: Uuid, stage: &str) -> Uuid {
    derive(&["deadline", &referral_id.to_string(), stage])
}

/// Commit id of the linkage step for the decided recognition referral `referral_id` of
/// `case_id`: a referral is decided once, so its decision is linked once.
pub fn linkage_commit(case_id: Uuid, referral_id: &str) -> Uuid {
    derive(&["linkage", &case_id.to_string(), referral_id])
}

/// Commit id of a case's charity referral of last resort (no dead end): issued once.
pub fn charity_commit(case_id: Uuid) -> Uuid {
    derive(&["charity", &case_id.to_string()])
}

/// Id of the referral of `programme` in `case_id`: a replayed handoff derives the same id,
/// so a referral can never exist twice.
pub fn referral_id(case_id: Uuid, programme: Programme) -> Uuid {
    derive(&["referral", &case_id.to_string(), programme.as_str()])
}

/// Id of the stream of the signal `source_id` of `source` (and of the warning it raises):
/// a retry of the report names the same signal.
pub fn signal_stream(source: &str, source_id: &str) -> Uuid {
    derive(&["signal", source, source_id])
}

/// Commit id of the report of the signal `signal_id`: written once.
pub fn signal_commit(signal_id: Uuid) -> Uuid {
    derive(&["signal-report", &signal_id.to_string()])
}

/// Commit id of the review a DEATH signal `signal_id` asks of `case_id`: once per case.
pub fn death_review_commit(signal_id: Uuid, case_id: Uuid) -> Uuid {
    derive(&["death-review", &signal_id.to_string(), &case_id.to_string()])
}

/// Commit id of the escalation of warning `warning_id`: once per warning.
pub fn warning_escalation_commit(warning_id: Uuid) -> Uuid {
    derive(&["warning-escalated", &warning_id.to_string()])
}

/// Id of the referral that replaces `referral_id` at `to_unit` after a transfer: a
/// referral is transferred at most once, so the pair names the new referral, and a retried
/// transfer names the same one.
pub fn transferred_referral(referral_id: &str, to_unit: &str) -> Uuid {
    derive(&["transfer", referral_id, to_unit])
}

/// Commit id of the re-verification of the approved recognition referral `referral_id`
/// (`ReverificationDue` and its review referral): an approval falls due for review once.
pub fn reverification_commit(referral_id: &str) -> Uuid {
    derive(&["reverification", referral_id])
}

/// Id of the review referral of the approved recognition referral `referral_id`: a
/// replayed re-verification names the same referral. A renewed review is itself approved,
/// so the next review derives from it and never repeats an id.
pub fn review_referral(referral_id: &str) -> Uuid {
    derive(&["review", referral_id])
}

/// Commit id of a case's re-assessment caused by `cause` of kind `trigger` (`amendment`:
/// the `ApplicationAmended` event id; `policy`: the policy version id): each amendment, and
/// each policy version, re-assesses a case once.
pub fn reassess_commit(case_id: Uuid, trigger: &str, cause: &str) -> Uuid {
    derive(&["reassess", &case_id.to_string(), trigger, cause])
}

/// Id of the referral of `programme` a re-assessment (`trigger`, `cause` as for
/// [`reassess_commit`]) issues in `case_id`: the programme may have had a referral before
/// (cancelled, denied), so the cause is part of the name; a replayed re-assessment names
/// the same referral.
pub fn reassessed_referral(
    case_id: Uuid,
    programme: Programme,
    trigger: &str,
    cause: &str,
) -> Uuid {
    derive(&[
        "reassessed-referral",
        &case_id.to_string(),
        programme.as_str(),
        trigger,
        cause,
    ])
}

/// Id of the policy stream: the `PolicyVersionRecorded` records of the policy versions in
/// force, one system stream, never a case.
pub fn policy_stream() -> Uuid {
    derive(&["policy"])
}

/// Commit id of the record of policy version `version_id` with `fingerprint`: written
/// once per content, whichever process records it first.
pub fn policy_record_commit(version_id: &str, fingerprint: &str) -> Uuid {
    derive(&["policy-record", version_id, fingerprint])
}

/// Id of the system stream of quarantine records (`EventQuarantined`,
/// `QuarantineReleased`): one stream for every consumer, never a case.
pub fn quarantine_stream() -> Uuid {
    derive(&["quarantine"])
}

/// Id of the access stream of the principal recorded as `actor`: its
/// `PersonalDataRead` records, one stream per reader, never a case.
pub fn access_stream(actor: &str) -> Uuid {
    derive(&["access", actor])
}

/// Id of the person stream of the person whose keyed identity hash (HMAC-SHA256, see
/// `onecity_intake::PersonKey`) is `person`: its `PersonClaimed` records, never a case.
/// Derived from the hash, never from the number, so the log holds no identity number.
pub fn person_stream(person: &[u8; 32]) -> Uuid {
    derive(&["person", &hex(person)])
}

/// Commit id of the claim of the person stream `person` by the submission opening
/// `case_id`: a retried claim append is deduplicated.
pub fn claim_commit(case_id: Uuid, person: Uuid) -> Uuid {
    derive(&["claim", &case_id.to_string(), &person.to_string()])
}

/// Commit id of the `SubmissionAbandoned` that voids `case_id`: written once, by whoever
/// writes it first.
pub fn abandon_commit(case_id: Uuid) -> Uuid {
    derive(&["abandon", &case_id.to_string()])
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Commit id of `consumer`'s quarantine record of the event at `position`: a replay
/// quarantines the event once.
pub fn quarantine_commit(consumer: &str, position: u64) -> Uuid {
    derive(&["quarantine", consumer, &position.to_string()])
}

/// Commit id of the release of the event at `position` by `consumer`.
pub fn release_commit(consumer: &str, position: u64) -> Uuid {
    derive(&["release", consumer, &position.to_string()])
}

/// Namespace of the request ids the CLI derives (a v4 UUID chosen once). Request ids are
/// the terminal's, not commit ids, so they have a namespace of their own.
pub const CLI_REQUEST_NAMESPACE: Uuid = Uuid::from_u128(0x6f6e_6563_6974_4a79_a5d1_3c2b_8e4f_0a17);

/// The CLI's default request id of a submission: a name-based id of the application's
/// protobuf encoding, so the same application (however its JSON is formatted) is one
/// request.
pub fn cli_request_id(encoded_application: &[u8]) -> Uuid {
    Uuid::new_v5(&CLI_REQUEST_NAMESPACE, encoded_application)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const CASE: Uuid = Uuid::from_u128(0x0199_0000_0000_7000_8000_0000_0000_00aa);

    /// The ids every log written so far holds: a change of format fails here.
    #[test]
    fn ids_are_pinned() {
        let pinned = [
            (NAMESPACE, "6f6e6563-6974-7900-8000-000000000001"),
            (
                submit_commit("t-1", "req-1"),
                "2a4e86b2-7cae-5513-bbec-9c6db6ec4531",
            ),
            (assess_commit(CASE), "6b0c5b0e-25bb-590c-b26d-7edfe620cac7"),
            (handoff_commit(CASE), "1841374e-b8d1-5210-8866-723644b87dde"),
            (
                withdraw_commit(CASE, 3),
                "6d953a82-1168-520b-86f5-7ad9d24b7c28",
            ),
            (
                referral_id(CASE, Programme::Dibao),
                "cbdc29df-0ceb-5a88-8ec2-c30d0ddee7eb",
            ),
            (quarantine_stream(), "91875d07-5df4-5032-bb91-c6c1e5908f6f"),
            (
                access_stream("terminal:t-1"),
                "a94ba312-7ed6-5c28-8de7-fe787a7a7c2d",
            ),
            (
                quarantine_commit("assessment", 42),
                "6096c362-63bc-58be-a1ad-a38e11dc7625",
            ),
            (
                release_commit("assessment", 42),
                "2f5bd375-62ce-5b30-8522-56c7ec972caa",
            ),
            (
                request_commit("terminal:t-1", "req-1"),
                "3f86250f-61db-5572-a203-a314a14f3e57",
            ),
            (
                reverification_commit("r-1"),
                "8d88687a-3a23-54f0-9b5e-394f4916a0d3",
            ),
            (
                review_referral("r-1"),
                "2a24e1d5-7b2f-56ba-b569-e0e061896571",
            ),
            (
                person_stream(&[7; 32]),
                "f79972ce-2800-5725-9526-2c4659d6e7d7",
            ),
            (
                claim_commit(CASE, person_stream(&[7; 32])),
                "7a0abb1c-8a33-5a12-be7b-09151ae4e9d9",
            ),
            (abandon_commit(CASE), "fb5176b2-8892-5e16-8085-ef8f969ac9d7"),
            (
                transferred_referral("r-1", "housing@120103"),
                "0b7bc50a-e5fd-53ff-acab-7d7cd5ca3533",
            ),
            (policy_stream(), "66b8810a-672b-5616-a921-3740f97c6bc8"),
            (
                reassess_commit(CASE, "policy", "2027-01"),
                "026e22bc-0b44-56c7-bda3-27f5ecbb81b0",
            ),
            (
                reassessed_referral(CASE, Programme::Dibao, "policy", "2027-01"),
                "06a3d920-f725-5bf0-a3e4-7b777cd25286",
            ),
        ];
        for (id, want) in pinned {
            assert_eq!(id.to_string(), want);
        }
    }

    /// Distinct steps never share an id: not two requests, not two cases, not two kinds of
    /// step, not two versions, not two programmes.
    fn all_ids(terminal: &str, request: &str, case: Uuid, version: u64) -> Vec<Uuid> {
        let mut ids = vec![
            submit_commit(terminal, request),
            request_commit(terminal, request),
            assess_commit(case),
            handoff_commit(case),
            withdraw_commit(case, version),
            linkage_commit(case, "r"),
            charity_commit(case),
            reverification_commit(&case.to_string()),
            review_referral(&case.to_string()),
            abandon_commit(case),
            transferred_referral(&case.to_string(), "housing@120103"),
            reassess_commit(case, "amendment", "e"),
            reassess_commit(case, "policy", "e"),
        ];
        ids.extend(Programme::ALL.iter().map(|p| referral_id(case, *p)));
        ids.extend(
            Programme::ALL
                .iter()
                .map(|p| reassessed_referral(case, *p, "policy", "e")),
        );
        ids
    }

    proptest! {
        #[test]
        fn different_inputs_give_different_ids(
            a in ("[a-z0-9-]{1,12}", "[ -~]{1,40}", any::<u128>(), any::<u64>()),
            b in ("[a-z0-9-]{1,12}", "[ -~]{1,40}", any::<u128>(), any::<u64>()),
        ) {
            let ids_a = all_ids(&a.0, &a.1, Uuid::from_u128(a.2), a.3);
            let ids_b = all_ids(&b.0, &b.1, Uuid::from_u128(b.2), b.3);
            let mut seen: Vec<Uuid> = ids_a.iter().chain(&ids_b).copied().collect();
            seen.sort();
            seen.dedup();
            // Every id of `a` differs from every other id of `a`; likewise for `b`; and
            // an id is shared between the two only for the very same step.
            let same_submit = (a.0.as_str(), a.1.as_str()) == (b.0.as_str(), b.1.as_str());
            let same_case = a.2 == b.2;
            let same_version = same_case && a.3 == b.3;
            let shared = 2 * usize::from(same_submit)
                + if same_case { ids_a.len() - 2 } else { 0 }
                + usize::from(same_version);
            prop_assert_eq!(seen.len(), ids_a.len() + ids_b.len() - shared);
        }
    }
}
