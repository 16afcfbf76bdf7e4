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

impl onecity_service::ErrorClass for Error {
    fn into_kind(self) -> onecity_service::Kind {
        use onecity_service::Kind;
        match self {
            Error::NotFound(_) => Kind::NotFound,
            Error::Invalid { field, reason } => Kind::Invalid {
                field: field.to_owned(),
                reason,
            },
            Error::FailedPrecondition(_) => Kind::FailedPrecondition,
            Error::Log(e) => Kind::Log(e),
            Error::Unavailable(_) => Kind::Unavailable,
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        onecity_service::grpc::status(e)
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
