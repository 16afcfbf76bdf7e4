//! `onecity.v1.IntakeService` over the intake core: thin handlers, and the one place
//! where intake errors become gRPC statuses.

use futures::StreamExt;
use onecity_proto::v1 as pb;
use onecity_proto::v1::intake_service_server::{IntakeService, IntakeServiceServer};
use onecity_service::grpc::StreamLimit;
use onecity_service::grpc::{principal, reader, request_key};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{Error, Intake};

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        onecity_service::grpc::status(e)
    }
}

/// Serves [`Intake`] over gRPC.
#[derive(Debug, Clone)]
pub struct IntakeGrpc {
    intake: Intake,
    shutdown: CancellationToken,
    streams: StreamLimit,
}

impl IntakeGrpc {
    /// `WatchCase` streams end when `shutdown` is cancelled, so shutdown never hangs.
    pub fn new(intake: Intake, shutdown: CancellationToken) -> Self {
        IntakeGrpc {
            intake,
            shutdown,
            streams: StreamLimit::default(),
        }
    }

    /// Counts `WatchCase` streams in `streams` (shared with the other streaming services).
    pub fn with_stream_limit(mut self, streams: StreamLimit) -> Self {
        self.streams = streams;
        self
    }

    /// The tonic service, decoding requests up to
    /// [`MAX_REQUEST_BYTES`](onecity_service::grpc::MAX_REQUEST_BYTES).
    pub fn into_server(self) -> IntakeServiceServer<Self> {
        IntakeServiceServer::new(self)
            .max_decoding_message_size(onecity_service::grpc::MAX_REQUEST_BYTES)
    }
}

#[tonic::async_trait]
impl IntakeService for IntakeGrpc {
    async fn submit_application(
        &self,
        req: Request<pb::SubmitApplicationRequest>,
    ) -> Result<Response<pb::SubmitApplicationResponse>, Status> {
        let who = principal(&req)?;
        let pb::SubmitApplicationRequest {
            request_id,
            application,
            duplicate_override_reason,
        } = req.into_inner();
        let s = self
            .intake
            .submit_with_override(&who, &request_id, application, &duplicate_override_reason)
            .await?;
        Ok(Response::new(pb::SubmitApplicationResponse {
            case_id: s.case_id.to_string(),
            duplicate: s.duplicate,
            submitted_at: s.submitted_at,
        }))
    }

    async fn get_case(
        &self,
        req: Request<pb::GetCaseRequest>,
    ) -> Result<Response<pb::GetCaseResponse>, Status> {
        let who = reader(&req)?;
        let pb::GetCaseRequest { case_id } = req.into_inner();
        let case = self.intake.get_case(&who, &case_id).await?;
        Ok(Response::new(pb::GetCaseResponse { case: Some(case) }))
    }

    type WatchCaseStream =
        futures::stream::BoxStream<'static, Result<pb::WatchCaseResponse, Status>>;

    async fn watch_case(
        &self,
        req: Request<pb::WatchCaseRequest>,
    ) -> Result<Response<Self::WatchCaseStream>, Status> {
        let who = reader(&req)?;
        let permit = self.streams.acquire(&who.principal)?;
        let pb::WatchCaseRequest { case_id } = req.into_inner();
        let stream = self.intake.watch_case(&who, &case_id).await?;
        let stop = self.shutdown.clone().cancelled_owned();
        Ok(Response::new(
            stream
                .map(move |r| {
                    // Held as long as the stream lives.
                    let _permit = &permit;
                    r.map_err(Status::from)
                })
                .take_until(stop)
                .boxed(),
        ))
    }

    async fn withdraw_application(
        &self,
        req: Request<pb::WithdrawApplicationRequest>,
    ) -> Result<Response<pb::WithdrawApplicationResponse>, Status> {
        let who = principal(&req)?;
        let pb::WithdrawApplicationRequest {
            case_id,
            reason,
            request_id,
        } = req.into_inner();
        let case = self
            .intake
            .withdraw_with_request_id(&who, &case_id, &reason, request_key(&request_id))
            .await?;
        Ok(Response::new(pb::WithdrawApplicationResponse {
            case: Some(case),
        }))
    }

    async fn provide_information(
        &self,
        req: Request<pb::ProvideInformationRequest>,
    ) -> Result<Response<pb::ProvideInformationResponse>, Status> {
        let who = principal(&req)?;
        let pb::ProvideInformationRequest {
            case_id,
            referral_id,
            request_id,
            note,
        } = req.into_inner();
        let referral = self
            .intake
            .provide_information(
                &who,
                &case_id,
                &referral_id,
                &note,
                request_key(&request_id),
            )
            .await?;
        Ok(Response::new(pb::ProvideInformationResponse {
            referral: Some(referral),
        }))
    }

    async fn find_cases(
        &self,
        req: Request<pb::FindCasesRequest>,
    ) -> Result<Response<pb::FindCasesResponse>, Status> {
        let who = reader(&req)?;
        let pb::FindCasesRequest { id_number } = req.into_inner();
        let cases = self.intake.find_cases(&who, &id_number).await?;
        Ok(Response::new(pb::FindCasesResponse { cases }))
    }

    async fn amend_application(
        &self,
        req: Request<pb::AmendApplicationRequest>,
    ) -> Result<Response<pb::AmendApplicationResponse>, Status> {
        let who = principal(&req)?;
        let pb::AmendApplicationRequest {
            case_id,
            request_id,
            application,
            reason,
        } = req.into_inner();
        let amended = self
            .intake
            .amend(&who, &case_id, &request_id, application, &reason)
            .await?;
        Ok(Response::new(pb::AmendApplicationResponse {
            case: Some(amended.case),
            duplicate: amended.duplicate,
        }))
    }
}
