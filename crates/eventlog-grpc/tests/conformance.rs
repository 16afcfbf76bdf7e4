//! The conformance suite against the remote backend: a sled log in a temp dir served over
//! gRPC on a loopback port, used through `RemoteLog`.

use std::sync::Arc;

use onecity_eventlog::conformance::{Backend, BoxLog, Owning};
use onecity_eventlog_grpc::{EventLogGrpc, Grant, RemoteLog, Writer};
use onecity_eventlog_sled::testing::SledBackend;
use tokio_util::sync::CancellationToken;

/// Fresh remote logs, each in front of a fresh sled log.
#[derive(Debug, Default)]
struct RemoteBackend;

/// What the embedding's authentication does for a service principal: mark the request a
/// writer's, naming the principal the server authenticated.
#[allow(clippy::result_large_err)]
fn stamp_caller(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    req.extensions_mut().insert(Writer {
        principal: CALLER.into(),
        grant: std::sync::Arc::new(Grant::All),
    });
    Ok(req)
}

const CALLER: &str = "service:conformance";

#[async_trait::async_trait]
impl Backend for RemoteBackend {
    /// The server stamps the principal it authenticated, whatever the client names.
    fn stamps(&self, _asked: &str) -> String {
        CALLER.into()
    }

    async fn fresh(&self) -> BoxLog {
        let sled = SledBackend.fresh().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let svc = tonic::service::interceptor::InterceptedService::new(
            EventLogGrpc::new(Arc::clone(&sled), shutdown.clone()).into_server(),
            stamp_caller,
        );
        let stop = shutdown.clone();
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stop.cancelled_owned(),
                )
                .await
        });
        let remote = RemoteLog::connect_lazy(&format!("http://{addr}")).expect("client");
        Arc::new(Owning::new(
            Arc::new(remote),
            ServerGuard {
                shutdown,
                _server: server,
                _sled: sled,
            },
        ))
    }
}

struct ServerGuard {
    shutdown: CancellationToken,
    _server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    _sled: BoxLog,
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

onecity_eventlog::conformance_suite!(RemoteBackend);
