//! The bearer-token client interceptor.

use std::fmt;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Adds `authorization: Bearer <token>` to every call (or nothing, for [`Bearer::none`]).
/// Use it with a generated client's `with_interceptor`, or [`Bearer::apply`] on a request.
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

/// A token that cannot be sent in a gRPC header (not visible ASCII).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the bearer token is not visible ascii")]
pub struct InvalidToken;

impl Bearer {
    /// Sends `token` with every call.
    pub fn new(token: &str) -> Result<Self, InvalidToken> {
        format!("Bearer {token}")
            .parse()
            .map(|v| Bearer(Some(v)))
            .map_err(|_| InvalidToken)
    }

    /// Sends no token.
    pub fn none() -> Self {
        Bearer(None)
    }

    /// Adds the `authorization` header to `req` (if there is a token).
    pub fn apply<T>(&self, req: &mut Request<T>) {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        self.apply(&mut req);
        Ok(req)
    }
}

/// Never shows the token.
impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.0.is_some() { "token" } else { "none" };
        f.debug_tuple("Bearer").field(&what).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_the_header_or_nothing() {
        let mut b = Bearer::new("demo-admin").unwrap();
        let req = b.call(Request::new(())).unwrap();
        assert_eq!(
            req.metadata().get("authorization").unwrap(),
            "Bearer demo-admin"
        );
        let req = Bearer::none().call(Request::new(())).unwrap();
        assert!(req.metadata().get("authorization").is_none());
        assert_eq!(Bearer::new("bad\ntoken").unwrap_err(), InvalidToken);
        assert!(!format!("{b:?}").contains("demo-admin"));
    }
}
