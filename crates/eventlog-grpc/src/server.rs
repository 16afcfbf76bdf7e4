//! gRPC face of the log (`onecity.v1.EventLogService`): lets service roles in other
//! processes share the log owned by one process.

use std::sync::Arc;

use futures::StreamExt;
use onecity_proto::v1 as pb;
use onecity_proto::v1::event_log_service_server::{EventLogService, EventLogServiceServer};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use onecity_eventlog::codec::{self, parse_uuid};
use onecity_eventlog::{access, EventLog, Filter, Stamped};

use crate::status;

/// Marks a request whose caller may write to the log (`Append`, `SaveCheckpoint`): the
/// embedding's authentication puts it in the request's extensions for the principals it
/// trusts with writes, naming the principal it authenticated. See
/// [`EventLogGrpc::writers_only`]. `Append` stamps each commit with that name
/// (`appended_by`); a request without the mark (a log served without authentication)
/// appends with an empty stamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writer {
    /// The authenticated principal, as recorded in `appended_by` (e.g. `service:intake`).
    pub principal: String,
    /// What it may write.
    pub grant: Arc<Grant>,
}

/// What a [`Writer`] may write: which event types it may append and which consumers'
/// checkpoints it may save. The embedding builds it from its own table of who owns what;
/// the log service only applies it, so a stolen writer's credential cannot write what its
/// holder never writes (an intake node forging a department's decision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Every event type and every checkpoint.
    All,
    /// Only these.
    Only {
        /// How refusals name the holder, e.g. `roles [intake]`: no secret.
        holder: String,
        /// The event types it may append, exactly.
        event_types: Vec<String>,
        /// The consumers whose checkpoints it may save: each name itself, or the name
        /// followed by `-` and anything (a partition's checkpoint, `assessment-1of2`).
        consumers: Vec<String>,
    },
}

impl Grant {
    /// Whether an event of `event_type` may be appended.
    pub fn may_append(&self, event_type: &str) -> bool {
        match self {
            Grant::All => true,
            Grant::Only { event_types, .. } => event_types.iter().any(|t| t == event_type),
        }
    }

    /// Whether the checkpoint of `consumer` may be saved.
    pub fn may_checkpoint(&self, consumer: &str) -> bool {
        match self {
            Grant::All => true,
            Grant::Only { consumers, .. } => consumers.iter().any(|c| {
                consumer
                    .strip_prefix(c.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
            }),
        }
    }

    fn holder(&self) -> &str {
        match self {
            Grant::All => "every role",
            Grant::Only { holder, .. } => holder,
        }
    }
}

/// Marks a request whose reads leave access records, naming the reader as recorded for
/// actors (e.g. `admin:ops-1`): the embedding's authentication puts it in the request's
/// extensions for the principals whose raw-log reads are reads of residents' data by a
/// person. Each read is recorded (`onecity_eventlog::access`) before it is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audited(pub String);

/// Serves any [`EventLog`] over gRPC.
#[derive(Debug, Clone)]
pub struct EventLogGrpc {
    log: Arc<dyn EventLog>,
    shutdown: CancellationToken,
    writers_only: bool,
}

impl EventLogGrpc {
    /// Serves `log`; open subscriptions end when `shutdown` is cancelled, so a graceful
    /// server shutdown never waits on a stream that would otherwise never finish.
    pub fn new(log: Arc<dyn EventLog>, shutdown: CancellationToken) -> Self {
        EventLogGrpc {
            log,
            shutdown,
            writers_only: false,
        }
    }

    /// Refuses writes (`Append`, `SaveCheckpoint`) with `PERMISSION_DENIED` unless the
    /// request carries a [`Writer`] mark; reads stay open to whoever the authentication
    /// let in. Least privilege: a reader's token, stolen, cannot change the log.
    pub fn writers_only(mut self) -> Self {
        self.writers_only = true;
        self
    }

    fn check_writer<T>(&self, req: &Request<T>, action: &str) -> Result<(), Status> {
        if self.writers_only && req.extensions().get::<Writer>().is_none() {
            return Err(Status::permission_denied(format!(
                "only service principals may {action}: the event log is read-only to this caller"
            )));
        }
        Ok(())
    }

    /// The tonic service, ready to add to a router.
    pub fn into_server(self) -> EventLogServiceServer<Self> {
        EventLogServiceServer::new(self)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    }
}

/// The identity the log service stamps on the access records it writes itself.
const LOG_APPENDS_AS: &str = "service:log";

/// Records the read of `subject` through `method` when the request is [`Audited`].
async fn audit<T>(
    log: &Arc<dyn EventLog>,
    req: &Request<T>,
    method: &str,
    subject: access::Subject,
) -> Result<(), Status> {
    let Some(Audited(principal)) = req.extensions().get::<Audited>() else {
        return Ok(());
    };
    let purpose = crate::purpose(req.metadata())?;
    access::record(
        &Stamped::new(Arc::clone(log), LOG_APPENDS_AS),
        access::Read {
            principal,
            method,
            subject,
            purpose: &purpose,
        },
    )
    .await
    .map_err(status)
}

/// `PERMISSION_DENIED` for a write outside the writer's grant, logged with the principal.
fn refused(w: &Writer, action: &str) -> Status {
    let holder = w.grant.holder();
    tracing::warn!(principal = %w.principal, holder, action, "event log write refused");
    Status::permission_denied(format!(
        "{} ({holder}) may not {action}: it belongs to another role",
        w.principal
    ))
}

fn limit(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[tonic::async_trait]
impl EventLogService for EventLogGrpc {
    async fn append(
        &self,
        req: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendResponse>, Status> {
        self.check_writer(&req, "append to the event log")?;
        let writer = req.extensions().get::<Writer>().cloned();
        let pb::AppendRequest {
            case_id,
            expected,
            events,
            commit_id,
        } = req.into_inner();
        let case_id = parse_uuid("case_id", &case_id).map_err(status)?;
        let expected = codec::expected(expected).map_err(status)?;
        let events = codec::new_events(events).map_err(status)?;
        if let Some(w) = &writer {
            if let Some(e) = events.iter().find(|e| !w.grant.may_append(&e.event_type)) {
                return Err(refused(w, &format!("append {}", e.event_type)));
            }
        }
        let appended_by = writer.map(|w| w.principal).unwrap_or_default();
        let commit_id = parse_uuid("commit_id", &commit_id).map_err(status)?;
        let a = self
            .log
            .append_as(&appended_by, case_id, expected, events, commit_id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::AppendResponse {
            first_version: a.first_version,
            last_version: a.last_version,
            first_position: a.first_position,
            last_position: a.last_position,
            deduplicated: a.deduplicated,
            case_id: a.case_id.to_string(),
        }))
    }

    async fn read_case(
        &self,
        req: Request<pb::ReadCaseRequest>,
    ) -> Result<Response<pb::ReadCaseResponse>, Status> {
        let pb::ReadCaseRequest {
            case_id,
            from_version,
            limit: n,
        } = req.get_ref().clone();
        let case_id = parse_uuid("case_id", &case_id).map_err(status)?;
        let events = self
            .log
            .read_case(case_id, from_version, limit(n))
            .await
            .map_err(status)?;
        let read = access::Subject::Cases(vec![case_id]);
        audit(&self.log, &req, "onecity.v1.EventLogService/ReadCase", read).await?;
        Ok(Response::new(pb::ReadCaseResponse {
            events: events.iter().map(Into::into).collect(),
        }))
    }

    async fn read_all(
        &self,
        req: Request<pb::ReadAllRequest>,
    ) -> Result<Response<pb::ReadAllResponse>, Status> {
        let &pb::ReadAllRequest {
            from_position,
            limit: n,
        } = req.get_ref();
        let events = self
            .log
            .read_all(from_position, limit(n))
            .await
            .map_err(status)?;
        if let (Some(first), Some(last)) = (events.first(), events.last()) {
            let read = access::Subject::Range {
                from: first.position,
                to: Some(last.position),
            };
            audit(&self.log, &req, "onecity.v1.EventLogService/ReadAll", read).await?;
        }
        Ok(Response::new(pb::ReadAllResponse {
            events: events.iter().map(Into::into).collect(),
        }))
    }

    type SubscribeStream =
        futures::stream::BoxStream<'static, Result<pb::SubscribeResponse, Status>>;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let read = access::Subject::Range {
            from: req.get_ref().from_position,
            to: None,
        };
        audit(
            &self.log,
            &req,
            "onecity.v1.EventLogService/Subscribe",
            read,
        )
        .await?;
        let pb::SubscribeRequest {
            from_position,
            event_type_prefixes,
        } = req.into_inner();
        let filter = Filter::prefixes(event_type_prefixes);
        let stream = self
            .log
            .subscribe(from_position, filter)
            .await
            .map_err(status)?;
        let shutdown = self.shutdown.clone().cancelled_owned();
        let out = stream
            .map(|r| {
                r.map(|e| pb::SubscribeResponse {
                    event: Some((&e).into()),
                })
                .map_err(status)
            })
            .take_until(shutdown);
        Ok(Response::new(out.boxed()))
    }

    type SubscribeCaseStream =
        futures::stream::BoxStream<'static, Result<pb::SubscribeCaseResponse, Status>>;

    async fn subscribe_case(
        &self,
        req: Request<pb::SubscribeCaseRequest>,
    ) -> Result<Response<Self::SubscribeCaseStream>, Status> {
        let pb::SubscribeCaseRequest {
            case_id,
            from_version,
        } = req.get_ref().clone();
        let case_id = parse_uuid("case_id", &case_id).map_err(status)?;
        let read = access::Subject::Cases(vec![case_id]);
        audit(
            &self.log,
            &req,
            "onecity.v1.EventLogService/SubscribeCase",
            read,
        )
        .await?;
        let stream = self
            .log
            .subscribe_case(case_id, from_version)
            .await
            .map_err(status)?;
        let shutdown = self.shutdown.clone().cancelled_owned();
        let out = stream
            .map(|r| {
                r.map(|e| pb::SubscribeCaseResponse {
                    event: Some((&e).into()),
                })
                .map_err(status)
            })
            .take_until(shutdown);
        Ok(Response::new(out.boxed()))
    }

    async fn save_checkpoint(
        &self,
        req: Request<pb::SaveCheckpointRequest>,
    ) -> Result<Response<pb::SaveCheckpointResponse>, Status> {
        self.check_writer(&req, "save checkpoints")?;
        if let Some(w) = req.extensions().get::<Writer>() {
            let consumer = &req.get_ref().consumer;
            if !w.grant.may_checkpoint(consumer) {
                return Err(refused(w, &format!("save the checkpoint of {consumer:?}")));
            }
        }
        let pb::SaveCheckpointRequest { consumer, position } = req.into_inner();
        self.log
            .save_checkpoint(&consumer, position)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::SaveCheckpointResponse {}))
    }

    async fn load_checkpoint(
        &self,
        req: Request<pb::LoadCheckpointRequest>,
    ) -> Result<Response<pb::LoadCheckpointResponse>, Status> {
        let pb::LoadCheckpointRequest { consumer } = req.into_inner();
        let position = self.log.load_checkpoint(&consumer).await.map_err(status)?;
        Ok(Response::new(pb::LoadCheckpointResponse { position }))
    }

    async fn get_head(
        &self,
        _req: Request<pb::GetHeadRequest>,
    ) -> Result<Response<pb::GetHeadResponse>, Status> {
        let position = self.log.head().await.map_err(status)?;
        Ok(Response::new(pb::GetHeadResponse { position }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eligibility() -> Grant {
        Grant::Only {
            holder: "roles [eligibility]".into(),
            event_types: vec!["onecity.v1.EligibilityAssessed".into()],
            consumers: vec!["assessment".into()],
        }
    }

    #[test]
    fn a_grant_names_event_types_exactly() {
        let g = eligibility();
        assert!(g.may_append("onecity.v1.EligibilityAssessed"));
        for t in [
            "onecity.v1.EligibilityAssessedX",
            "onecity.v1.Eligibility",
            "onecity.v1.ReferralDecided",
            "",
        ] {
            assert!(!g.may_append(t), "{t}");
        }
        assert!(Grant::All.may_append("onecity.test.Anything"));
    }

    #[test]
    fn a_grant_covers_its_consumers_and_their_partitions_only() {
        let g = eligibility();
        for c in ["assessment", "assessment-0of2", "assessment-1of2"] {
            assert!(g.may_checkpoint(c), "{c}");
        }
        for c in [
            "assessments",
            "assessmentx-1of2",
            "handoff",
            "handoff-0of2",
            "",
        ] {
            assert!(!g.may_checkpoint(c), "{c}");
        }
        assert!(Grant::All.may_checkpoint("handoff"));
    }
}
