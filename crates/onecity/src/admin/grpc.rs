//! The gRPC face of [`Admin`]: `onecity.v1.AdminService`.

use futures::StreamExt as _;
use onecity_proto::v1 as pb;
use pb::admin_service_server::{AdminService, AdminServiceServer};
use tonic::{Request, Response, Status};

use onecity_eventlog::access;

use super::{AccessQuery, AccessSubject, Admin, Error};

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
            Error::Assessment(e) => e.into_kind(),
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

fn count_to_proto(key: String, c: onecity_assessment::Counts) -> pb::ImpactCount {
    let onecity_assessment::Counts {
        newly_eligible,
        no_longer_eligible,
        amount_changed,
    } = c;
    pb::ImpactCount {
        key,
        newly_eligible,
        no_longer_eligible,
        amount_changed,
    }
}

fn impact_to_proto(version_id: &str, update: super::ImpactUpdate) -> pb::GetPolicyImpactResponse {
    let i = match update {
        super::ImpactUpdate::Progress(onecity_assessment::ImpactProgress { read, to_read }) => {
            return pb::GetPolicyImpactResponse {
                version_id: version_id.to_owned(),
                cases_read: read,
                cases_to_read: to_read,
                ..Default::default()
            };
        }
        super::ImpactUpdate::Done(i) => i,
    };
    let onecity_assessment::Impact {
        version_id,
        cases,
        unchanged,
        by_programme,
        by_district,
        read,
    } = i;
    pb::GetPolicyImpactResponse {
        version_id,
        cases,
        by_programme: by_programme
            .into_iter()
            .map(|(p, c)| count_to_proto(p.as_str().to_owned(), c))
            .collect(),
        by_district: by_district
            .into_iter()
            .map(|(d, c)| count_to_proto(d, c))
            .collect(),
        unchanged,
        cases_read: read,
        cases_to_read: read,
        done: true,
    }
}

fn lag_to_proto(r: super::RoutingLag) -> pb::ConsumerLag {
    let onecity_intake::ConsumerLag {
        consumer,
        checkpoint,
        head,
        lag,
    } = r.lag;
    pb::ConsumerLag {
        consumer,
        checkpoint,
        head,
        lag,
        holder: r.holder.unwrap_or_default(),
    }
}

fn access_to_proto(r: onecity_eventlog::access::AccessRecord) -> pb::AccessRecord {
    let pb::PersonalDataRead {
        principal,
        method,
        case_ids,
        from_position,
        to_position,
        purpose,
    } = r.read;
    pb::AccessRecord {
        principal,
        method,
        case_ids,
        from_position,
        to_position,
        purpose,
        accessed_at: r.accessed_at,
        position: r.position,
    }
}

/// An optional RFC 3339 time of the request.
fn time(field: &'static str, value: &str) -> Result<Option<std::time::SystemTime>, Error> {
    if value.is_empty() {
        return Ok(None);
    }
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| Some(t.into()))
        .map_err(|e| Error::Invalid {
            field,
            reason: format!("not an RFC 3339 time: {e}"),
        })
}

impl TryFrom<pb::ListAccessRequest> for AccessQuery {
    type Error = Error;

    fn try_from(req: pb::ListAccessRequest) -> Result<Self, Error> {
        let pb::ListAccessRequest {
            subject,
            since,
            until,
            limit,
        } = req;
        let subject = match subject {
            Some(pb::list_access_request::Subject::CaseId(id)) => {
                AccessSubject::Case(id.parse().map_err(|_| Error::Invalid {
                    field: "case_id",
                    reason: "not a uuid".into(),
                })?)
            }
            Some(pb::list_access_request::Subject::Principal(p)) if !p.trim().is_empty() => {
                AccessSubject::Principal(p)
            }
            Some(pb::list_access_request::Subject::Principal(_)) => {
                return Err(Error::Invalid {
                    field: "principal",
                    reason: "must not be empty".into(),
                })
            }
            None => {
                return Err(Error::Invalid {
                    field: "subject",
                    reason: "name a case_id or a principal".into(),
                })
            }
        };
        let window = access::Window {
            since: time("since", &since)?,
            until: time("until", &until)?,
        };
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        Ok(AccessQuery {
            subject,
            window,
            limit,
        })
    }
}

#[tonic::async_trait]
impl AdminService for AdminGrpc {
    async fn list_access(
        &self,
        req: Request<pb::ListAccessRequest>,
    ) -> Result<Response<pb::ListAccessResponse>, Status> {
        let query = req.into_inner().try_into()?;
        let records = self.0.access(query).await?;
        let records = records.into_iter().map(access_to_proto).collect();
        Ok(Response::new(pb::ListAccessResponse { records }))
    }

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

    async fn get_routing_lag(
        &self,
        _req: Request<pb::GetRoutingLagRequest>,
    ) -> Result<Response<pb::GetRoutingLagResponse>, Status> {
        let consumers = self
            .0
            .routing_lag()
            .await?
            .into_iter()
            .map(lag_to_proto)
            .collect();
        Ok(Response::new(pb::GetRoutingLagResponse { consumers }))
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

    type GetPolicyImpactStream =
        futures::stream::BoxStream<'static, Result<pb::GetPolicyImpactResponse, Status>>;

    async fn get_policy_impact(
        &self,
        req: Request<pb::GetPolicyImpactRequest>,
    ) -> Result<Response<Self::GetPolicyImpactStream>, Status> {
        let pb::GetPolicyImpactRequest { version_id } = req.into_inner();
        let updates = self.0.policy_impact(&version_id)?;
        Ok(Response::new(
            updates
                .map(move |u| Ok(impact_to_proto(&version_id, u?)))
                .boxed(),
        ))
    }
}
