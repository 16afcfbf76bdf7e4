//! The handoff worker: for each assessed case, one commit that issues its referrals (or
//! closes the case when nothing is referred).

use std::sync::Arc;

use onecity_domain::case::is_recognition;
use onecity_domain::events::{
    CaseEvent, APPLICATION_WITHDRAWN, CASE_CLOSED, ELIGIBILITY_ASSESSED, ELIGIBILITY_REASSESSED,
    REFERRAL_PREFIX,
};
use onecity_domain::{ids, Partition, Programme};
use onecity_eligibility::reassess::issued_basis;
use onecity_eligibility::Catalogue;
use onecity_eventlog::{EventLog, Filter, NewEvent, RecordedEvent, MAX_READ_LIMIT};
use onecity_proto::v1 as pb;
use onecity_service::case::{append_with_retries, Commit, Outcome, Step};
use onecity_service::clock::{Clock, SystemClock};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{referral_id, Error, Result, CONSUMER};

/// Issues referrals for assessed cases.
#[derive(Debug, Clone)]
pub struct HandoffWorker {
    log: Arc<dyn EventLog>,
    catalogue: Arc<Catalogue>,
    partition: Partition,
    clock: Arc<dyn Clock>,
}

/// What the worker did with one assessment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Issued this many referrals (0 = closed the case with the assessments as the answer).
    Issued(usize),
    /// Already handed off (a replay), or the case was withdrawn.
    Skipped,
}

impl HandoffWorker {
    /// A worker over `log`; deadlines come from `catalogue`.
    pub fn new(log: Arc<dyn EventLog>, catalogue: Arc<Catalogue>) -> Self {
        HandoffWorker {
            log,
            catalogue,
            partition: Partition::default(),
            clock: Arc::new(SystemClock),
        }
    }

    /// Reads the time (a referral's `issued_at`) from `clock` instead of the system's.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Makes this instance handle only the cases of `partition` (with its own checkpoint),
    /// so several instances share the work and exactly one decides for each case.
    pub fn with_partition(mut self, partition: Partition) -> Self {
        self.partition = partition;
        self
    }

    /// The event type the worker follows (a case's assessment).
    pub const FOLLOWS: &'static str = ELIGIBILITY_ASSESSED;

    /// The checkpoint name of the worker that handles `partition`: [`CONSUMER`], with the
    /// partition's suffix when there are several.
    pub fn consumer_name(partition: &Partition) -> String {
        format!("{CONSUMER}{}", partition.consumer_suffix())
    }

    /// Follows the log from the saved checkpoint until `shutdown`. At-least-once: after a
    /// crash it replays from the checkpoint, and [`HandoffWorker::process`] makes a replay a
    /// no-op. Transient log errors are retried with backoff.
    pub async fn run(self, shutdown: CancellationToken) {
        let consumer = Self::consumer_name(&self.partition);
        let filter = Filter::prefixes([Self::FOLLOWS]);
        onecity_eventlog::consumer::run(Arc::clone(&self.log), &consumer, filter, shutdown, &self)
            .await;
    }

    /// Issues the referrals of the case assessed by `assessed`, exactly once per case.
    ///
    /// The referrals come from the assessment in hand; the case is read only for its
    /// submission (version 1, for the deadlines) and for what happened after the
    /// assessment, so the assessment, by far the largest event of a case, is decoded once,
    /// not again through a fold of the whole case. Exactly once as before: a deterministic commit id, the case's
    /// expected version, and a case already handed off, withdrawn or closed is skipped.
    pub async fn process(&self, assessed: &RecordedEvent) -> Result<Done> {
        let case_id = assessed.case_id;
        if assessed.event_type != ELIGIBILITY_ASSESSED {
            return Ok(Done::Skipped);
        }
        let assessment = <AssessedRefs as prost::Message>::decode(assessed.payload.as_slice())
            .map_err(|e| onecity_domain::events::DecodeError {
                event_type: assessed.event_type.clone(),
                reason: e.to_string(),
            })?;
        // Version 1 of every case is its submission (intake opens the stream with it).
        let first = self.log.read_case(case_id, 1, 1).await?;
        let submitted = match first.first() {
            Some(e) => match CaseEvent::decode(&e.event_type, &e.payload)? {
                Some(CaseEvent::ApplicationSubmitted(s)) => s,
                _ => {
                    tracing::error!(%case_id, event_type = %e.event_type, "assessed case does not start with a submission, skipped");
                    return Ok(Done::Skipped);
                }
            },
            None => {
                tracing::error!(%case_id, "assessed case without a submission, skipped");
                return Ok(Done::Skipped);
            }
        };
        let events = self.referrals(case_id, &submitted, &assessment);
        let issued = events
            .iter()
            .filter(|e| matches!(e, CaseEvent::ReferralIssued(_)))
            .count();
        let cause = assessed.event_id.to_string();
        let events = &events;
        let outcome = append_with_retries(self.log.as_ref(), case_id, |_| {
            let cause = cause.clone();
            async move {
                let Some(version) = self.version_if_waiting(assessed).await? else {
                    return Ok(Step::Done(()));
                };
                let new = events
                    .iter()
                    .map(|e| {
                        NewEvent::new(e.event_type(), crate::ACTOR, e.encode())
                            .caused_by(cause.clone())
                    })
                    .collect();
                Ok::<_, Error>(Step::Append(
                    Commit {
                        version,
                        events: new,
                        commit_id: ids::handoff_commit(case_id),
                    },
                    (),
                ))
            }
        })
        .await?;
        Ok(match outcome {
            Outcome::Appended((), a) if !a.deduplicated => {
                tracing::info!(%case_id, referrals = issued, "referrals issued");
                Done::Issued(issued)
            }
            Outcome::Appended(..) | Outcome::Unchanged(()) => Done::Skipped,
        })
    }

    /// The case's version when it still waits for its referrals after `assessed`; `None`
    /// when it has moved on: referrals issued (a replay), re-assessed, withdrawn or closed. Reads only
    /// the events after the assessment (decoding none of them): nothing that ends the
    /// wait can come before it, since the assessor skips withdrawn cases and referrals
    /// follow the assessment.
    async fn version_if_waiting(&self, assessed: &RecordedEvent) -> Result<Option<u64>> {
        let mut version = assessed.version;
        loop {
            let later = self
                .log
                .read_case(assessed.case_id, version + 1, MAX_READ_LIMIT)
                .await?;
            // A re-assessment (an amendment came first) issues what the case now needs
            // itself, from the application as amended.
            let moved_on = later.iter().any(|e| {
                e.event_type.starts_with(REFERRAL_PREFIX)
                    || e.event_type == APPLICATION_WITHDRAWN
                    || e.event_type == CASE_CLOSED
                    || e.event_type == ELIGIBILITY_REASSESSED
            });
            if moved_on {
                return Ok(None);
            }
            let Some(last) = later.last() else {
                return Ok(Some(version));
            };
            version = last.version;
            if later.len() < MAX_READ_LIMIT {
                return Ok(Some(version));
            }
        }
    }

    fn referrals(
        &self,
        case_id: Uuid,
        submitted: &pb::ApplicationSubmitted,
        assessed: &AssessedRefs,
    ) -> Vec<CaseEvent> {
        let submitted_at = chrono::DateTime::parse_from_rfc3339(&submitted.submitted_at)
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or_else(|_| self.clock.now());
        let issued_at = onecity_domain::rfc3339(self.clock.now());
        // A dependent referral rests on the predicted recognition when any recognition
        // programme was referred, else on none (it is met another way).
        let predicted = assessed.assessments.iter().any(|a| {
            is_recognition(a.programme)
                && (a.outcome == pb::Outcome::Eligible as i32
                    || a.outcome == pb::Outcome::NeedsReview as i32)
        });
        let basis = |programme: i32| issued_basis(programme, predicted);
        let mut events = Vec::new();
        for a in &assessed.assessments {
            let referred = a.outcome == pb::Outcome::Eligible as i32
                || a.outcome == pb::Outcome::NeedsReview as i32;
            let Some(programme) = Programme::from_proto(a.programme) else {
                continue;
            };
            if !referred {
                continue;
            }
            let due_at = onecity_domain::rfc3339(self.catalogue.due_at(programme, submitted_at));
            events.push(CaseEvent::ReferralIssued(pb::Referral {
                referral_id: referral_id(case_id, programme).to_string(),
                case_id: case_id.to_string(),
                programme: a.programme,
                department_unit: a.department_unit.clone(),
                state: pb::ReferralState::Issued as i32,
                due_at,
                outcome: a.outcome,
                assessed_amount_fen: a.amount_fen,
                decided_amount_fen: 0,
                note: String::new(),
                issued_at: issued_at.clone(),
                policy_version: a.policy_version.clone(),
                basis: basis(a.programme) as i32,
                ..Default::default()
            }));
        }
        if events.is_empty() {
            events.push(CaseEvent::CaseClosed(pb::CaseClosed {
                reason: "no programme to refer: the assessments are the answer".into(),
            }));
        }
        events
    }
}

/// What the handoff reads of `onecity.v1.EligibilityAssessed`: the fields a referral is
/// built from, at their numbers in `proto/onecity/v1/events.proto` (`assessments = 1`) and
/// `eligibility.proto` (`Assessment`). prost steps over the fields a message does not
/// declare, so decoding this instead of the whole event passes over the rule explanations
/// without allocating them (they are most of the event, and were most of the handoff's
/// cost per case).
/// `tests::assessed_refs_read_what_the_full_event_holds` keeps the two in step.
#[derive(Clone, PartialEq, prost::Message)]
struct AssessedRefs {
    #[prost(message, repeated, tag = "1")]
    assessments: Vec<AssessmentRef>,
}

/// The referral-relevant fields of one `onecity.v1.Assessment`.
#[derive(Clone, PartialEq, prost::Message)]
struct AssessmentRef {
    /// `Programme`, as its wire value.
    #[prost(int32, tag = "1")]
    programme: i32,
    /// `Outcome`, as its wire value.
    #[prost(int32, tag = "2")]
    outcome: i32,
    #[prost(int64, tag = "3")]
    amount_fen: i64,
    #[prost(string, tag = "4")]
    policy_version: String,
    #[prost(string, tag = "6")]
    department_unit: String,
}

#[async_trait::async_trait]
impl onecity_eventlog::consumer::ChunkHandler for HandoffWorker {
    type Error = Error;
    /// Chunks overlap safely: a case is assessed once, and every write is checked against
    /// the case's version.
    const IN_FLIGHT: usize = 4;

    /// A chunk holds at most one such event per case, so its cases are processed
    /// concurrently: their writes share the log's group commit instead of each waiting for
    /// its own fsync.
    async fn handle(&self, events: &[RecordedEvent]) -> Result<()> {
        let owned = events
            .iter()
            .filter(|e| self.partition.owns(e.case_id.as_bytes()));
        futures::future::try_join_all(owned.map(|e| self.process(e)))
            .await
            .map(drop)
    }

    /// A stored event that does not decode never will: the consumer quarantines it.
    fn is_poison(err: &Error) -> bool {
        matches!(err, Error::Corrupt(_))
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    /// The partial view reads exactly what the whole event holds in the fields it declares,
    /// and steps over the rest (rules in either form, margin, summary, the event's own
    /// policy version).
    #[test]
    fn assessed_refs_read_what_the_full_event_holds() {
        let full = pb::EligibilityAssessed {
            assessments: (0..12)
                .map(|i: i32| pb::Assessment {
                    programme: i + 1,
                    outcome: i % 4,
                    amount_fen: i64::from(i) * 123_456 - 7,
                    policy_version: format!("2026-0{}", i % 3 + 1),
                    rules: (0..4)
                        .map(|r| pb::RuleResult {
                            rule: format!("rule.{i}.{r}"),
                            held: r % 2 == 0,
                            inputs: [("income_fen".to_owned(), i64::from(r) * 1000)].into(),
                            threshold: 99,
                            explanation: "x".repeat(200),
                            // Both forms at once: the view steps over either.
                            code: r + 1,
                            values: vec![i64::from(r), -1, 1 << 40],
                        })
                        .collect(),
                    department_unit: format!("civil-affairs@12010{i}"),
                    margin_fen: -5,
                    summary: "s".repeat(100),
                })
                .collect(),
            policy_version: "2026-01".into(),
        };
        let bytes = full.encode_to_vec();
        let refs = AssessedRefs::decode(bytes.as_slice()).unwrap();
        assert_eq!(refs.assessments.len(), full.assessments.len());
        for (r, a) in refs.assessments.iter().zip(&full.assessments) {
            assert_eq!(r.programme, a.programme);
            assert_eq!(r.outcome, a.outcome);
            assert_eq!(r.amount_fen, a.amount_fen);
            assert_eq!(r.policy_version, a.policy_version);
            assert_eq!(r.department_unit, a.department_unit);
        }
    }
}
