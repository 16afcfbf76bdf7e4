//! `onecity.v1.HandoffService` over the [`Handoff`] core: thin handlers and the error
//! mapping of this crate.

use futures::StreamExt;
use onecity_proto::v1 as pb;
use onecity_proto::v1::handoff_service_server::{HandoffService, HandoffServiceServer};
use onecity_service::grpc::StreamLimit;
use onecity_service::grpc::{principal, reader, request_key};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{DecisionInput, Error, Handoff, ListQuery, Transfer};

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        onecity_service::grpc::status(e)
    }
}

/// Serves [`Handoff`] over gRPC.
#[derive(Debug, Clone)]
pub struct HandoffGrpc {
    handoff: Handoff,
    shutdown: CancellationToken,
    streams: StreamLimit,
}

impl HandoffGrpc {
    /// `StreamReferrals` streams end when `shutdown` is cancelled.
    pub fn new(handoff: Handoff, shutdown: CancellationToken) -> Self {
        HandoffGrpc {
            handoff,
            shutdown,
            streams: StreamLimit::default(),
        }
    }

    /// Counts `StreamReferrals` streams in `streams` (shared with the other streaming
    /// services).
    pub fn with_stream_limit(mut self, streams: StreamLimit) -> Self {
        self.streams = streams;
        self
    }

    /// The tonic service, decoding requests up to
    /// [`MAX_REQUEST_BYTES`](onecity_service::grpc::MAX_REQUEST_BYTES).
    pub fn into_server(self) -> HandoffServiceServer<Self> {
        HandoffServiceServer::new(self)
            .max_decoding_message_size(onecity_service::grpc::MAX_REQUEST_BYTES)
    }
}

#[tonic::async_trait]
impl HandoffService for HandoffGrpc {
    async fn list_referrals(
        &self,
        req: Request<pb::ListReferralsRequest>,
    ) -> Result<Response<pb::ListReferralsResponse>, Status> {
        let who = reader(&req)?;
        let pb::ListReferralsRequest {
            state,
            page_size,
            page_token,
            programme,
            overdue_only,
            due_before,
        } = req.into_inner();
        let query = ListQuery {
            state,
            programme,
            overdue_only,
            due_before,
        };
        let (referrals, next_page_token) = self
            .handoff
            .list_where(&who, &query, page_size, &page_token)
            .await?;
        Ok(Response::new(pb::ListReferralsResponse {
            referrals,
            next_page_token,
        }))
    }

    type StreamReferralsStream =
        futures::stream::BoxStream<'static, Result<pb::StreamReferralsResponse, Status>>;

    async fn stream_referrals(
        &self,
        req: Request<pb::StreamReferralsRequest>,
    ) -> Result<Response<Self::StreamReferralsStream>, Status> {
        let who = reader(&req)?;
        let permit = self.streams.acquire(&who.principal)?;
        let pb::StreamReferralsRequest { after_cursor } = req.into_inner();
        let stream = self.handoff.stream(&who, &after_cursor).await?;
        let stop = self.shutdown.clone().cancelled_owned();
        let out = stream.map(move |r| {
            // Held as long as the stream lives.
            let _permit = &permit;
            r.map(|(referral, cursor)| pb::StreamReferralsResponse {
                referral: Some(referral),
                cursor,
            })
            .map_err(Status::from)
        });
        Ok(Response::new(out.take_until(stop).boxed()))
    }

    async fn acknowledge_referral(
        &self,
        req: Request<pb::AcknowledgeReferralRequest>,
    ) -> Result<Response<pb::AcknowledgeReferralResponse>, Status> {
        let who = principal(&req)?;
        let pb::AcknowledgeReferralRequest {
            referral_id,
            request_id,
        } = req.into_inner();
        let referral = self
            .handoff
            .acknowledge_with_request_id(&who, &referral_id, request_key(&request_id))
            .await?;
        Ok(Response::new(pb::AcknowledgeReferralResponse {
            referral: Some(referral),
        }))
    }

    async fn record_decision(
        &self,
        req: Request<pb::RecordDecisionRequest>,
    ) -> Result<Response<pb::RecordDecisionResponse>, Status> {
        let who = principal(&req)?;
        let pb::RecordDecisionRequest {
            referral_id,
            decision,
            amount_fen,
            note,
            request_id,
        } = req.into_inner();
        let input = DecisionInput {
            decision,
            amount_fen,
            note,
        };
        let referral = self
            .handoff
            .decide_with_request_id(&who, &referral_id, input, request_key(&request_id))
            .await?;
        Ok(Response::new(pb::RecordDecisionResponse {
            referral: Some(referral),
        }))
    }

    async fn transfer_referral(
        &self,
        req: Request<pb::TransferReferralRequest>,
    ) -> Result<Response<pb::TransferReferralResponse>, Status> {
        let who = principal(&req)?;
        let pb::TransferReferralRequest {
            referral_id,
            request_id,
            to_unit,
            reason,
        } = req.into_inner();
        let transfer = Transfer { to_unit, reason };
        let (transferred, issued) = self
            .handoff
            .transfer(&who, &referral_id, &transfer, request_key(&request_id))
            .await?;
        Ok(Response::new(pb::TransferReferralResponse {
            transferred: Some(transferred),
            issued: Some(issued),
        }))
    }

    async fn request_information(
        &self,
        req: Request<pb::RequestInformationRequest>,
    ) -> Result<Response<pb::RequestInformationResponse>, Status> {
        let who = principal(&req)?;
        let pb::RequestInformationRequest {
            referral_id,
            request_id,
            what,
        } = req.into_inner();
        let referral = self
            .handoff
            .request_information(&who, &referral_id, &what, request_key(&request_id))
            .await?;
        Ok(Response::new(pb::RequestInformationResponse {
            referral: Some(referral),
        }))
    }
}
