//! The gRPC face of [`Admin`]: `onecity.v1.AdminService`.

use onecity_proto::v1 as pb;
use pb::admin_service_server::{AdminService, AdminServiceServer};
use tonic::{Request, Response, Status};

use super::{Admin, Error};

/// `AdminService` over an [`Admin`].
#[derive(Debug, Clone)]
pub struct AdminGrpc(Admin);

impl AdminGrpc {
    /// The service.
    pub fn new(admin: Admin) -> Self {
        AdminGrpc(admin)
    }

    /// As a tonic server.
    pub fn into_server(self) -> AdminServiceServer<AdminGrpc> {
        AdminServiceServer::new(self)
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        match e {
            Error::NotFound(m) => Status::not_found(m),
            Error::Invalid { .. } => Status::invalid_argument(e.to_string()),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::Log(e) => onecity_eventlog_grpc::status(e),
            Error::Unavailable(m) => Status::unavailable(m),
        }
    }
}

fn to_proto(q: onecity_eventlog::quarantine::Quarantined) -> pb::QuarantinedEvent {
    pb::QuarantinedEvent {
        position: q.position,
        case_id: q.case_id.to_string(),
        consumer: q.consumer,
        event_type: q.event_type,
        reason: q.reason,
        quarantined_at: q.quarantined_at,
    }
}

#[tonic::async_trait]
impl AdminService for AdminGrpc {
    async fn list_quarantined(
        &self,
        _req: Request<pb::ListQuarantinedRequest>,
    ) -> Result<Response<pb::ListQuarantinedResponse>, Status> {
        let events = self
            .0
            .quarantined()
            .await?
            .into_iter()
            .map(to_proto)
            .collect();
        Ok(Response::new(pb::ListQuarantinedResponse { events }))
    }

    async fn retry_quarantined(
        &self,
        req: Request<pb::RetryQuarantinedRequest>,
    ) -> Result<Response<pb::RetryQuarantinedResponse>, Status> {
        let req = req.into_inner();
        let consumer = Some(req.consumer.as_str()).filter(|c| !c.is_empty());
        let consumer = self.0.retry(req.position, consumer).await?;
        Ok(Response::new(pb::RetryQuarantinedResponse { consumer }))
    }
}
