//! Authentication: `authorization: Bearer <token>` → [`Principal`], or, for a call without
//! a token over mTLS, the URI SAN of the client certificate → [`Principal`].
//!
//! [`Auth`] is a tonic interceptor put in front of the onecity services (not health or
//! reflection, which need no token). It only establishes *who* calls and stores the
//! [`Principal`] in the request extensions; *what* each principal may do is decided by the
//! services, which read it back with [`principal`] (or the same `extensions().get::<Principal>()`
//! in their own crates). The exceptions are the services that know nothing of principals:
//! [`EventLogAuth`] also requires a `service` or `admin` principal for the event log, and
//! [`AdminAuth`] an `admin` principal for the `AdminService`.
//!
//! Tokens are never echoed in errors or logs: a mistyped token is often one character away from
//! a real one.

use std::fmt;
use std::sync::Arc;

use onecity_domain::Principal;
use onecity_eventlog_grpc::{Audited, Grant, Writer};
use rustls_pki_types::CertificateDer;
use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::config::{Config, Credentials, Identity};

/// The authenticating interceptor.
#[derive(Clone)]
pub struct Auth {
    credentials: Arc<Credentials>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.credentials.tokens())
            .field("client_uris", &self.credentials.client_uris())
            .finish()
    }
}

impl Auth {
    /// An interceptor accepting exactly these credentials.
    pub fn new(credentials: Credentials) -> Self {
        Auth {
            credentials: Arc::new(credentials),
        }
    }

    /// An interceptor for the configured tokens (validated, see [`Config::principals`]).
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        Ok(Auth::new(config.principals()?))
    }

    /// Authenticates a call and stores its [`Principal`] in the request extensions.
    ///
    /// A call with a bearer token is its token's principal (the client certificate, if
    /// any, only admitted the connection); a call without one is the principal its client
    /// certificate's URI SAN is mapped to.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` when the `authorization` metadata is not `Bearer <token>` or names
    /// an unknown token, or when it is missing and there is no client certificate or the
    /// certificate is not mapped to a principal.
    pub fn intercept(&self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let certs = req.peer_certs();
        let cert = certs.as_ref().and_then(|c| c.first());
        match self.identify(req.metadata(), cert) {
            Ok(Identity { principal, grant }) => {
                req.extensions_mut().insert(principal);
                req.extensions_mut().insert(grant);
                Ok(req)
            }
            Err(reason) => {
                metrics::counter!(crate::observe::exposition::AUTH_FAILURES, "reason" => reason.as_str())
                    .increment(1);
                tracing::warn!(
                    reason = reason.as_str(),
                    remote = ?req.remote_addr(),
                    "unauthenticated call refused"
                );
                Err(Status::unauthenticated(reason.message()))
            }
        }
    }

    /// The principal of a bearer token in `metadata`, else of the client certificate
    /// `cert` (the leaf the peer presented, verified by the handshake).
    pub fn authenticate(
        &self,
        metadata: &MetadataMap,
        cert: Option<&CertificateDer<'_>>,
    ) -> Result<Principal, Refusal> {
        self.identify(metadata, cert).map(|i| i.principal)
    }

    /// [`Auth::authenticate`], with what the principal may write to the event log.
    pub fn identify(
        &self,
        metadata: &MetadataMap,
        cert: Option<&CertificateDer<'_>>,
    ) -> Result<Identity, Refusal> {
        let Some(value) = metadata.get("authorization") else {
            let cert = cert.ok_or(Refusal::MissingToken)?;
            return crate::tls::uri_sans(cert)
                .iter()
                .find_map(|uri| self.credentials.client_identity(uri))
                .cloned()
                .ok_or(Refusal::UnmappedCertificate);
        };
        let value = value.to_str().map_err(|_| Refusal::MalformedToken)?;
        // The scheme is case-insensitive (RFC 9110 §11.1); the token is taken verbatim.
        let (scheme, token) = value.split_once(' ').ok_or(Refusal::MalformedToken)?;
        let token = token.trim_start_matches(' ');
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
            return Err(Refusal::MalformedToken);
        }
        self.credentials
            .token_identity(token)
            .cloned()
            .ok_or(Refusal::UnknownToken)
    }

    /// An interceptor for the `EventLogService`: authenticated, and only `service` or `admin`.
    pub fn event_log(&self) -> EventLogAuth {
        EventLogAuth(self.clone())
    }

    /// An interceptor for the `AdminService`: authenticated, and only `admin`.
    pub fn admin(&self) -> AdminAuth {
        AdminAuth(self.clone())
    }
}

impl Interceptor for Auth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        self.intercept(req)
    }
}

/// Why a call was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `authorization` metadata.
    MissingToken,
    /// `authorization` is not `Bearer <token>`.
    MalformedToken,
    /// The token is not configured.
    UnknownToken,
    /// No token, and the client certificate's URI is not mapped to a principal.
    UnmappedCertificate,
}

impl Refusal {
    /// Short machine-friendly reason for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::MissingToken => "missing_token",
            Refusal::MalformedToken => "malformed_token",
            Refusal::UnknownToken => "unknown_token",
            Refusal::UnmappedCertificate => "unmapped_certificate",
        }
    }

    /// The `UNAUTHENTICATED` message sent to the caller.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::MissingToken => {
                "missing authorization metadata: send `authorization: Bearer <token>`"
            }
            Refusal::MalformedToken => {
                "malformed authorization metadata: expected `Bearer <token>`"
            }
            Refusal::UnknownToken => "unknown bearer token",
            Refusal::UnmappedCertificate => {
                "the client certificate is not mapped to a principal: send `authorization: Bearer <token>` or map its URI SAN (`client_uri`)"
            }
        }
    }
}

/// The interceptor of the `EventLogService` (see [`Auth::event_log`]).
#[derive(Debug, Clone)]
pub struct EventLogAuth(Auth);

impl EventLogAuth {
    /// Authenticates, then requires a `service` or `admin` principal; only a `service`
    /// principal is marked [`Writer`], so an admin reads the log and cannot change it (the
    /// service must be built [`EventLogGrpc::writers_only`]). The mark carries the grant of
    /// the service's `roles`: the log service refuses the event types and checkpoints of
    /// roles it does not hold ([`crate::ownership`]).
    ///
    /// # Errors
    /// `UNAUTHENTICATED` as for [`Auth::intercept`]; `PERMISSION_DENIED` for terminals and
    /// departments (logged).
    ///
    /// [`EventLogGrpc::writers_only`]: onecity_eventlog_grpc::EventLogGrpc::writers_only
    pub fn intercept(&self, req: Request<()>) -> Result<Request<()>, Status> {
        let mut req = self.0.intercept(req)?;
        let principal = principal(&req)?;
        match principal {
            Principal::Service { .. } => {
                let principal = principal.actor();
                // Fail closed: a request that reached here without the grant the
                // authentication stored may write nothing.
                let grant = req
                    .extensions()
                    .get::<Arc<Grant>>()
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(Grant::Only {
                            holder: "no roles".to_owned(),
                            event_types: Vec::new(),
                            consumers: Vec::new(),
                        })
                    });
                req.extensions_mut().insert(Writer { principal, grant });
                Ok(req)
            }
            // A person reading the raw log reads residents' data: each read is recorded.
            // Service principals are the roles themselves, whose reads serve callers
            // whose reads are recorded where they are answered.
            Principal::Admin { .. } => {
                req.extensions_mut().insert(Audited(principal.actor()));
                Ok(req)
            }
            Principal::Terminal { .. }
            | Principal::Department { .. }
            | Principal::Supervisor { .. } => {
                tracing::warn!(
                    principal = %principal,
                    kind = principal.kind(),
                    "event log access denied"
                );
                Err(Status::permission_denied(format!(
                    "{} principals may not use the event log service",
                    principal.kind()
                )))
            }
        }
    }
}

impl Interceptor for EventLogAuth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        self.intercept(req)
    }
}

/// The interceptor of the `AdminService` (see [`Auth::admin`]).
#[derive(Debug, Clone)]
pub struct AdminAuth(Auth);

impl AdminAuth {
    /// Authenticates, then requires an `admin` principal.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` as for [`Auth::intercept`]; `PERMISSION_DENIED` for every other
    /// principal (logged).
    pub fn intercept(&self, req: Request<()>) -> Result<Request<()>, Status> {
        let req = self.0.intercept(req)?;
        let principal = principal(&req)?;
        if let Principal::Admin { .. } = principal {
            return Ok(req);
        }
        tracing::warn!(
            principal = %principal,
            kind = principal.kind(),
            "admin service access denied"
        );
        Err(Status::permission_denied(format!(
            "{} principals may not use the admin service",
            principal.kind()
        )))
    }
}

impl Interceptor for AdminAuth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        self.intercept(req)
    }
}

/// The principal [`Auth`] stored in a request: the one extractor, shared with the services.
pub use onecity_service::grpc::principal;

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn auth() -> Auth {
        Auth::from_config(&Config::default()).unwrap()
    }

    fn request(authorization: Option<&str>) -> Request<()> {
        let mut req = Request::new(());
        if let Some(v) = authorization {
            req.metadata_mut()
                .insert("authorization", v.parse().unwrap());
        }
        req
    }

    #[test]
    fn known_token_yields_its_principal() {
        let req = auth()
            .intercept(request(Some("Bearer demo-terminal-120103")))
            .unwrap();
        let p = principal(&req).unwrap();
        assert_eq!(p.actor(), "terminal:T-120103-01");

        // Scheme case and extra spaces before the token do not matter.
        let req = auth()
            .intercept(request(Some("bearer   demo-civil-affairs-120103")))
            .unwrap();
        assert_eq!(
            principal(&req).unwrap(),
            Principal::Department {
                unit: "civil-affairs@120103".parse().unwrap()
            }
        );
    }

    #[test]
    fn missing_malformed_and_unknown_tokens_are_unauthenticated() {
        let cases = [
            (None, "missing authorization"),
            (Some("demo-terminal-120103"), "malformed"),
            (Some("Basic ZGVtbzpkZW1v"), "malformed"),
            (Some("Bearer "), "malformed"),
            (Some("Bearer demo-admin extra"), "malformed"),
            (Some("Bearer demo-terminal-12010"), "unknown bearer token"),
        ];
        for (header, expected) in cases {
            let err = auth().intercept(request(header)).unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated, "{header:?}");
            assert!(
                err.message().contains(expected),
                "{header:?}: {}",
                err.message()
            );
            if let Some(h) = header {
                if let Some(token) = h.split_whitespace().nth(1) {
                    assert!(
                        !err.message().contains(token),
                        "token echoed: {}",
                        err.message()
                    );
                }
            }
        }
    }

    #[test]
    fn non_ascii_authorization_is_malformed() {
        let mut req = Request::new(());
        req.metadata_mut().insert(
            "authorization",
            tonic::metadata::MetadataValue::try_from(&b"Bearer \xe4\xbd\xa0"[..]).unwrap(),
        );
        let err = auth().intercept(req).unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        assert!(err.message().starts_with("malformed"));
    }

    #[test]
    fn principal_without_interceptor_fails_closed() {
        let err = principal(&Request::new(())).unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }

    #[test]
    fn event_log_needs_service_or_admin() {
        let log = auth().event_log();
        for token in ["demo-service", "demo-admin"] {
            let req = log
                .intercept(request(Some(&format!("Bearer {token}"))))
                .unwrap();
            assert!(principal(&req).is_ok());
        }
        for token in ["demo-terminal-120103", "demo-housing-120103"] {
            let err = log
                .intercept(request(Some(&format!("Bearer {token}"))))
                .unwrap_err();
            assert_eq!(err.code(), Code::PermissionDenied, "{token}");
        }
        let err = log.intercept(request(None)).unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }

    #[test]
    fn admin_service_needs_admin() {
        let admin = auth().admin();
        let req = admin.intercept(request(Some("Bearer demo-admin"))).unwrap();
        assert!(principal(&req).is_ok());
        for token in [
            "demo-service",
            "demo-terminal-120103",
            "demo-housing-120103",
        ] {
            let err = admin
                .intercept(request(Some(&format!("Bearer {token}"))))
                .unwrap_err();
            assert_eq!(err.code(), Code::PermissionDenied, "{token}");
        }
        let err = admin.intercept(request(None)).unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }

    #[test]
    fn a_client_certificate_stands_for_its_mapped_principal_only_without_a_token() {
        use crate::config::{PrincipalKind, TlsConfig, TokenConfig};
        let ca = crate::tls::Ca::new("test").unwrap();
        let der = |pem: &str| {
            use rustls_pki_types::pem::PemObject as _;
            CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
        };
        let mapped = ca
            .issue(&[], &["spiffe://onecity/service/intake-1".to_owned()], 1)
            .unwrap();
        let unmapped = ca
            .issue(&[], &["spiffe://onecity/service/other".to_owned()], 1)
            .unwrap();
        let mut entry = TokenConfig::named("x", PrincipalKind::Service, "intake-1");
        entry.token = None;
        entry.client_uri = Some("spiffe://onecity/service/intake-1".to_owned());
        let config = Config {
            tokens: vec![entry, TokenConfig::named("t", PrincipalKind::Admin, "ops")],
            tls: TlsConfig {
                cert: Some("c".into()),
                key: Some("k".into()),
                client_ca: Some("ca".into()),
                ..TlsConfig::default()
            },
            ..Config::default()
        };
        let auth = Auth::from_config(&config).unwrap();
        let none = MetadataMap::new();
        let p = auth
            .authenticate(&none, Some(&der(&mapped.cert_pem)))
            .unwrap();
        assert_eq!(p.actor(), "service:intake-1");
        assert_eq!(
            auth.authenticate(&none, Some(&der(&unmapped.cert_pem))),
            Err(Refusal::UnmappedCertificate)
        );
        assert_eq!(auth.authenticate(&none, None), Err(Refusal::MissingToken));
        // A token decides over the certificate.
        let mut with_token = MetadataMap::new();
        with_token.insert("authorization", "Bearer t".parse().unwrap());
        let p = auth
            .authenticate(&with_token, Some(&der(&mapped.cert_pem)))
            .unwrap();
        assert_eq!(p.actor(), "admin:ops");
    }

    #[test]
    fn works_as_a_tonic_interceptor() {
        fn assert_interceptor<I: Interceptor + Clone + Send + Sync + 'static>(_: &I) {}
        let a = auth();
        assert_interceptor(&a);
        assert_interceptor(&a.event_log());
        assert_interceptor(&a.admin());
        assert_eq!(format!("{a:?}"), "Auth { tokens: 14, client_uris: 0 }");
    }
}
