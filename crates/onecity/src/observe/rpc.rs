//! One tower layer around every gRPC service of `onecity serve`: a `rpc` span per call
//! and the request count and latency by service, method and status code, so no handler
//! carries metrics code of its own.

use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use tonic::Code;
use tower::{Layer, Service};
use tracing::Instrument as _;

/// Counter of finished calls, by `service`, `method` and `code`.
pub const RPC_REQUESTS: &str = "onecity_rpc_requests_total";
/// Histogram of call latency until the response headers, by `service`, `method` and
/// `code` (a stream's is the time to its first response).
pub const RPC_DURATION: &str = "onecity_rpc_duration_seconds";

/// The layer; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcLayer;

impl<S> Layer<S> for RpcLayer {
    type Service = Rpc<S>;

    fn layer(&self, inner: S) -> Rpc<S> {
        Rpc { inner }
    }
}

/// A service wrapped by [`RpcLayer`].
#[derive(Debug, Clone)]
pub struct Rpc<S> {
    inner: S,
}

impl<S, B, RB> Service<http::Request<B>> for Rpc<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let (service, method) = split_path(req.uri().path());
        let span = tracing::info_span!(
            "rpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.code = tracing::field::Empty,
            case_id = tracing::field::Empty,
        );
        crate::observe::trace::continue_from_headers(&span, req.headers());
        let started = Instant::now();
        let call = self.inner.call(req);
        Box::pin(
            async move {
                let response = call.await;
                let code = match &response {
                    // A successful unary call and a stream carry their status in the
                    // trailers; an error before the first message is a trailers-only
                    // response, its status in the headers.
                    Ok(r) => r
                        .headers()
                        .get("grpc-status")
                        .map_or(Code::Ok, |v| Code::from_bytes(v.as_bytes())),
                    Err(_) => Code::Unknown,
                };
                // Paths no service answers are one series, whatever a caller sends: the
                // labels stay a bounded set.
                let (service, method) = if code == Code::Unimplemented {
                    ("unknown".to_owned(), "unknown".to_owned())
                } else {
                    (service, method)
                };
                let code = format!("{code:?}");
                tracing::Span::current().record("rpc.code", code.as_str());
                let labels = [("service", service), ("method", method), ("code", code)];
                metrics::counter!(RPC_REQUESTS, &labels).increment(1);
                metrics::histogram!(RPC_DURATION, &labels).record(started.elapsed().as_secs_f64());
                response
            }
            .instrument(span),
        )
    }
}

/// `/onecity.v1.IntakeService/SubmitApplication` → (`onecity.v1.IntakeService`,
/// `SubmitApplication`).
fn split_path(path: &str) -> (String, String) {
    let path = path.trim_start_matches('/');
    match path.split_once('/') {
        Some((service, method)) => (service.to_owned(), method.to_owned()),
        None => ("unknown".to_owned(), "unknown".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/onecity.v1.IntakeService/SubmitApplication"),
            (
                "onecity.v1.IntakeService".to_owned(),
                "SubmitApplication".to_owned()
            )
        );
        assert_eq!(
            split_path("/nonsense"),
            ("unknown".to_owned(), "unknown".to_owned())
        );
    }
}
