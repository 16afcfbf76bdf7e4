//! `onecity.v1.EligibilityService` over the [`Screener`]: thin handlers and the error
//! mapping of this crate.

use onecity_proto::v1 as pb;
use onecity_proto::v1::eligibility_service_server::{EligibilityService, EligibilityServiceServer};
use onecity_service::grpc::principal;
use tonic::{Request, Response, Status};

use crate::{Error, Screener, View};

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        onecity_service::grpc::status(e)
    }
}

/// Serves the [`Screener`] over gRPC.
#[derive(Debug, Clone)]
pub struct EligibilityGrpc {
    screener: Screener,
}

impl EligibilityGrpc {
    /// Wraps a screener.
    pub fn new(screener: Screener) -> Self {
        EligibilityGrpc { screener }
    }

    /// The tonic service, decoding requests up to
    /// [`MAX_REQUEST_BYTES`](onecity_service::grpc::MAX_REQUEST_BYTES).
    pub fn into_server(self) -> EligibilityServiceServer<Self> {
        EligibilityServiceServer::new(self)
            .max_decoding_message_size(onecity_service::grpc::MAX_REQUEST_BYTES)
    }
}

#[tonic::async_trait]
impl EligibilityService for EligibilityGrpc {
    async fn screen(
        &self,
        req: Request<pb::ScreenRequest>,
    ) -> Result<Response<pb::ScreenResponse>, Status> {
        let who = principal(&req)?;
        let pb::ScreenRequest { application, view } = req.into_inner();
        let assessments = self
            .screener
            .screen(&who, application, View::from_proto(view)?)?;
        Ok(Response::new(pb::ScreenResponse { assessments }))
    }

    async fn get_policy(
        &self,
        req: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::GetPolicyResponse>, Status> {
        principal(&req)?;
        let pb::GetPolicyRequest { as_of } = req.into_inner();
        let policy = self.screener.policy(&as_of)?;
        Ok(Response::new(pb::GetPolicyResponse {
            policy: Some(policy),
        }))
    }
}
