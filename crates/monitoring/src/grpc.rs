//! `onecity.v1.MonitoringService` over the [`Monitoring`] core: thin handlers.

use onecity_domain::{beijing_date, DistrictCode};
use onecity_proto::v1 as pb;
use onecity_proto::v1::monitoring_service_server::{MonitoringService, MonitoringServiceServer};
use onecity_service::grpc::{principal, reader};
use tonic::{Request, Response, Status};

use crate::{invalid, Error, Monitoring, Resolution, Signal, StatsQuery, WarningQuery};

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        onecity_service::grpc::status(e)
    }
}

/// Serves [`Monitoring`] over gRPC.
#[derive(Debug, Clone)]
pub struct MonitoringGrpc {
    monitoring: Monitoring,
}

impl MonitoringGrpc {
    /// Serves `monitoring`.
    pub fn new(monitoring: Monitoring) -> Self {
        MonitoringGrpc { monitoring }
    }

    /// The tonic service, decoding requests up to
    /// [`MAX_REQUEST_BYTES`](onecity_service::grpc::MAX_REQUEST_BYTES).
    pub fn into_server(self) -> MonitoringServiceServer<Self> {
        MonitoringServiceServer::new(self)
            .max_decoding_message_size(onecity_service::grpc::MAX_REQUEST_BYTES)
    }
}

#[tonic::async_trait]
impl MonitoringService for MonitoringGrpc {
    async fn report_signal(
        &self,
        req: Request<pb::ReportSignalRequest>,
    ) -> Result<Response<pb::ReportSignalResponse>, Status> {
        let who = principal(&req)?;
        let today = beijing_date(self.monitoring.clock.now());
        let signal = Signal::parse(req.into_inner(), today)?;
        Ok(Response::new(
            self.monitoring.report_signal(&who, signal).await?,
        ))
    }

    async fn list_warnings(
        &self,
        req: Request<pb::ListWarningsRequest>,
    ) -> Result<Response<pb::ListWarningsResponse>, Status> {
        let who = reader(&req)?;
        let pb::ListWarningsRequest {
            open_only,
            overdue_only,
            district_code,
        } = req.into_inner();
        let district = if district_code.is_empty() {
            None
        } else {
            Some(
                DistrictCode::parse(&district_code)
                    .ok_or_else(|| invalid("district_code", "not a district of the city"))?,
            )
        };
        let warnings = self
            .monitoring
            .list_warnings(
                &who,
                WarningQuery {
                    open_only,
                    overdue_only,
                    district,
                },
            )
            .await?;
        Ok(Response::new(pb::ListWarningsResponse { warnings }))
    }

    async fn resolve_warning(
        &self,
        req: Request<pb::ResolveWarningRequest>,
    ) -> Result<Response<pb::ResolveWarningResponse>, Status> {
        let who = principal(&req)?;
        let resolution = Resolution::try_from(req.into_inner())?;
        let warning = self.monitoring.resolve_warning(&who, resolution).await?;
        Ok(Response::new(pb::ResolveWarningResponse {
            warning: Some(warning),
        }))
    }

    async fn get_statistics(
        &self,
        req: Request<pb::GetStatisticsRequest>,
    ) -> Result<Response<pb::GetStatisticsResponse>, Status> {
        let who = principal(&req)?;
        let query = StatsQuery::try_from(req.into_inner())?;
        Ok(Response::new(self.monitoring.statistics(&who, query)?))
    }
}
