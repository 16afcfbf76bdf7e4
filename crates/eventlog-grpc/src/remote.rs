//! `RemoteLog`: the [`EventLog`] contract over gRPC, for service roles that run in a
//! different process from the one owning the sled store.

use futures::StreamExt;
use onecity_eventlog::codec::parse_uuid;
use onecity_eventlog::{
    check_consumer, clamp_limit, Appended, Error, EventLog, EventStream, Expected, Filter, Limits,
    NewEvent, RecordedEvent, Result,
};
use onecity_proto::v1 as pb;
use onecity_proto::v1::event_log_service_client::EventLogServiceClient;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use uuid::Uuid;

use crate::{from_status as error, Bearer};

/// A client of `onecity.v1.EventLogService`. Cheap to clone; one HTTP/2 connection.
///
/// Every promise of [`EventLog`] holds because the server enforces it; this client only
/// translates. A retry after `Unavailable` is safe: the commit id makes it idempotent.
#[derive(Debug, Clone)]
pub struct RemoteLog {
    client: EventLogServiceClient<Channel>,
    limits: Limits,
    bearer: Bearer,
}

impl RemoteLog {
    /// Connects lazily to `addr` (e.g. `http://127.0.0.1:50051`), in plaintext.
    pub fn connect_lazy(addr: &str) -> Result<Self> {
        RemoteLog::connect_lazy_tls(addr, None)
    }

    /// Connects lazily to `addr`, over TLS with `tls` (the CA to trust, and the client
    /// certificate for a server that requires one); `addr` is then `https://…`.
    pub fn connect_lazy_tls(addr: &str, tls: Option<ClientTlsConfig>) -> Result<Self> {
        let mut endpoint = Endpoint::from_shared(addr.to_owned())
            .map_err(|e| Error::invalid("addr", e.to_string()))?
            .tcp_nodelay(true);
        if let Some(tls) = tls {
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| Error::invalid("tls", e.to_string()))?;
        }
        let client = EventLogServiceClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        Ok(RemoteLog {
            client,
            limits: Limits::default(),
            bearer: Bearer::none(),
        })
    }

    /// Sends `authorization: Bearer <token>` with every call; [`Error::Invalid`] for a
    /// token that cannot be sent.
    pub fn with_token(self, token: impl AsRef<str>) -> Result<Self> {
        let bearer =
            Bearer::new(token.as_ref()).map_err(|e| Error::invalid("token", e.to_string()))?;
        Ok(self.with_bearer(bearer))
    }

    /// Sends what `bearer` adds with every call.
    pub fn with_bearer(mut self, bearer: Bearer) -> Self {
        self.bearer = bearer;
        self
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        self.bearer.apply(&mut req);
        req
    }
}

fn decode(events: Vec<pb::RecordedEvent>) -> Result<Vec<RecordedEvent>> {
    events.into_iter().map(RecordedEvent::try_from).collect()
}

fn wire_limit(limit: usize) -> u32 {
    u32::try_from(clamp_limit(limit)).unwrap_or(u32::MAX)
}

#[async_trait::async_trait]
impl EventLog for RemoteLog {
    /// `appended_by` is not sent: the serving process stamps the principal of this
    /// client's token (see [`EventLog::append_as`]).
    async fn append_as(
        &self,
        _appended_by: &str,
        case_id: Uuid,
        expected: Expected,
        events: Vec<NewEvent>,
        commit_id: Uuid,
    ) -> Result<Appended> {
        self.limits.check_append(case_id, &events, commit_id)?;
        let msg = pb::AppendRequest {
            case_id: case_id.to_string(),
            expected: Some(expected.into()),
            events: events.iter().map(Into::into).collect(),
            commit_id: commit_id.to_string(),
        };
        let r = self
            .client
            .clone()
            .append(self.request(msg))
            .await
            .map_err(|s| error(s, Some(case_id), Some(expected)))?
            .into_inner();
        Ok(Appended {
            case_id: parse_uuid("case_id", &r.case_id)?,
            first_version: r.first_version,
            last_version: r.last_version,
            first_position: r.first_position,
            last_position: r.last_position,
            deduplicated: r.deduplicated,
        })
    }

    async fn read_case(
        &self,
        case_id: Uuid,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let msg = pb::ReadCaseRequest {
            case_id: case_id.to_string(),
            from_version,
            limit: wire_limit(limit),
        };
        let r = self
            .client
            .clone()
            .read_case(self.request(msg))
            .await
            .map_err(|s| error(s, Some(case_id), None))?;
        decode(r.into_inner().events)
    }

    async fn read_all(&self, from_position: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        let msg = pb::ReadAllRequest {
            from_position,
            limit: wire_limit(limit),
        };
        let r = self
            .client
            .clone()
            .read_all(self.request(msg))
            .await
            .map_err(|s| error(s, None, None))?;
        decode(r.into_inner().events)
    }

    async fn subscribe(&self, from_position: u64, filter: Filter) -> Result<EventStream> {
        let msg = pb::SubscribeRequest {
            from_position,
            event_type_prefixes: filter.event_type_prefixes,
        };
        let stream = self
            .client
            .clone()
            .subscribe(self.request(msg))
            .await
            .map_err(|s| error(s, None, None))?
            .into_inner();
        Ok(Box::pin(stream.map(|r| match r {
            Ok(pb::SubscribeResponse { event: Some(e) }) => RecordedEvent::try_from(e),
            Ok(pb::SubscribeResponse { event: None }) => Err(Error::Unavailable(
                "subscription message without an event".into(),
            )),
            Err(s) => Err(error(s, None, None)),
        })))
    }

    async fn subscribe_case(&self, case_id: Uuid, from_version: u64) -> Result<EventStream> {
        let msg = pb::SubscribeCaseRequest {
            case_id: case_id.to_string(),
            from_version,
        };
        let stream = self
            .client
            .clone()
            .subscribe_case(self.request(msg))
            .await
            .map_err(|s| error(s, Some(case_id), None))?
            .into_inner();
        Ok(Box::pin(stream.map(move |r| match r {
            Ok(pb::SubscribeCaseResponse { event: Some(e) }) => RecordedEvent::try_from(e),
            Ok(pb::SubscribeCaseResponse { event: None }) => Err(Error::Unavailable(
                "subscription message without an event".into(),
            )),
            Err(s) => Err(error(s, Some(case_id), None)),
        })))
    }

    async fn save_checkpoint(&self, consumer: &str, position: u64) -> Result<()> {
        check_consumer(consumer)?;
        let msg = pb::SaveCheckpointRequest {
            consumer: consumer.to_owned(),
            position,
        };
        self.client
            .clone()
            .save_checkpoint(self.request(msg))
            .await
            .map_err(|s| error(s, None, None))?;
        Ok(())
    }

    async fn load_checkpoint(&self, consumer: &str) -> Result<u64> {
        check_consumer(consumer)?;
        let msg = pb::LoadCheckpointRequest {
            consumer: consumer.to_owned(),
        };
        let r = self
            .client
            .clone()
            .load_checkpoint(self.request(msg))
            .await
            .map_err(|s| error(s, None, None))?;
        Ok(r.into_inner().position)
    }

    async fn head(&self) -> Result<u64> {
        let r = self
            .client
            .clone()
            .get_head(self.request(pb::GetHeadRequest {}))
            .await
            .map_err(|s| error(s, None, None))?;
        Ok(r.into_inner().position)
    }
}
