//! A gRPC service that is routed from the start but set only once it can work.
//!
//! The server listens (and answers `grpc.health.v1` with `NOT_SERVING`) while the log is
//! still out of reach, so an orchestrator sees a live process that is not ready rather
//! than one that keeps crashing. The role services need the log, so until it is open
//! their calls are answered `UNAVAILABLE`, which every client retries.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::{http, Body as HttpBody, BoxFuture, Bytes, Service, StdError};
use tonic::server::NamedService;

/// What a call to a service not set yet is told.
const NOT_YET: &str = "starting: the event log is not reachable yet, retry shortly";

/// A slot for the service `S`, cheap to clone (clones share the slot).
#[derive(Debug)]
pub struct Late<S>(Arc<OnceLock<S>>);

impl<S> Clone for Late<S> {
    fn clone(&self) -> Self {
        Late(Arc::clone(&self.0))
    }
}

impl<S> Late<S> {
    /// An empty slot: calls are answered `UNAVAILABLE`.
    pub fn new() -> Self {
        Late(Arc::new(OnceLock::new()))
    }

    /// Sets the service; calls go to it from now on. A second set is ignored.
    pub fn set(&self, service: S) {
        let _ = self.0.set(service);
    }
}

impl<S> Default for Late<S> {
    fn default() -> Self {
        Late::new()
    }
}

impl<S: NamedService> NamedService for Late<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<Body>> for Late<S>
where
    S: Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Readiness is the set service's, awaited per call below.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match self.0.get() {
            Some(service) => {
                let mut service = service.clone();
                Box::pin(async move {
                    std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
                    let response = service.call(request).await?;
                    Ok(response.map(Body::new))
                })
            }
            None => Box::pin(async { Ok(tonic::Status::unavailable(NOT_YET).into_http()) }),
        }
    }
}
