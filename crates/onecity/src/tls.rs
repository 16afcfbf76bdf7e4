//! TLS of the listener and of the clients: the acceptor (its certificates re-read on
//! SIGHUP, open connections kept), the clients' configuration, the identity a client
//! certificate carries (its URI SAN), and certificates for development, tests and the bench
//! (`onecity cert`).
//!
//! The listener does its own handshakes (tokio-rustls) rather than use tonic's
//! `ServerTlsConfig`, which is fixed when the server starts: each new connection takes the
//! configuration current at its accept, so a SIGHUP swaps the certificates for new
//! connections while established ones go on with the ones they shook hands with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{bail, Context as _};
use futures::Stream;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::config::TlsConfig;

/// How long a peer may take to finish the TLS handshake before the connection is dropped,
/// so half-open connections do not pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to take them.
const ACCEPT_QUEUE: usize = 128;

/// The listener's TLS configuration, swappable while serving.
#[derive(Clone)]
pub struct ServerTls {
    files: TlsConfig,
    current: Arc<RwLock<Arc<ServerConfig>>>,
    /// The ALPN protocols of this listener when they are not gRPC's `h2` (the console's
    /// HTTP/1.1); the certificates are the shared ones, so a reload reaches every listener.
    alpn: Option<Vec<Vec<u8>>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish()
    }
}

impl ServerTls {
    /// Reads `[tls]`'s certificate, key and client CA; `None` when the listener has no TLS.
    pub fn load(files: &TlsConfig) -> anyhow::Result<Option<ServerTls>> {
        if !files.enabled() {
            return Ok(None);
        }
        let config = server_config(files)?;
        Ok(Some(ServerTls {
            files: files.clone(),
            current: Arc::new(RwLock::new(Arc::new(config))),
            alpn: None,
        }))
    }

    /// The same certificates (and reloads) for a listener speaking HTTP/1.1 (the console).
    pub fn for_http1(&self) -> ServerTls {
        ServerTls {
            alpn: Some(vec![b"http/1.1".to_vec()]),
            ..self.clone()
        }
    }

    /// Re-reads every file; on any error the configuration in use stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let config = server_config(&self.files)?;
        *self.current.write().expect("tls config lock") = Arc::new(config);
        Ok(())
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_certificates(&self) -> bool {
        self.files.client_ca.is_some()
    }

    fn acceptor(&self) -> TlsAcceptor {
        let current = Arc::clone(&self.current.read().expect("tls config lock"));
        match &self.alpn {
            None => TlsAcceptor::from(current),
            Some(alpn) => {
                let mut config = (*current).clone();
                config.alpn_protocols.clone_from(alpn);
                TlsAcceptor::from(Arc::new(config))
            }
        }
    }

    /// The TLS connections accepted on `listener` until `stop`: each handshake runs in its
    /// own task (bounded by a timeout), so a slow or failing peer holds up no other; a
    /// failed handshake is logged and dropped.
    pub fn incoming(
        &self,
        listener: TcpListener,
        stop: CancellationToken,
    ) -> impl Stream<Item = std::io::Result<TlsStream<TcpStream>>> + Send + 'static {
        let (tx, rx) = tokio::sync::mpsc::channel(ACCEPT_QUEUE);
        let tls = self.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: do not spin on the error.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // As for plaintext (server.rs): no Nagle delay on small responses.
                let _ = stream.set_nodelay(true);
                let acceptor = tls.acceptor();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send(Ok(stream)).await;
                        }
                        Ok(Err(e)) => log_handshake_failure(peer, &e),
                        Err(_) => tracing::info!(%peer, "tls handshake timed out"),
                    }
                });
            }
        });
        ReceiverStream::new(rx)
    }
}

fn log_handshake_failure(peer: SocketAddr, e: &std::io::Error) {
    tracing::info!(%peer, error = %e, "tls handshake failed");
}

fn server_config(files: &TlsConfig) -> anyhow::Result<ServerConfig> {
    let (Some(cert), Some(key)) = (&files.cert, &files.key) else {
        bail!("tls: `cert` and `key` go together");
    };
    let chain = read_certs(cert).context("tls cert")?;
    let key = read_key(key).context("tls key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("tls protocol versions")?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let roots = roots(ca).context("tls client_ca")?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .context("tls client_ca")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).with_context(|| {
        format!(
            "tls: {} and its key do not make a certificate",
            cert.display()
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("read {}", path.display()))
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: bad PEM", path.display()))?;
    if certs.is_empty() {
        bail!("{}: no CERTIFICATE in it", path.display());
    }
    Ok(certs)
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(&read(path)?)
        .with_context(|| format!("{}: no private key in it", path.display()))
}

fn roots(path: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots
            .add(cert)
            .with_context(|| format!("{}: not a CA certificate", path.display()))?;
    }
    Ok(roots)
}

/// What a client needs to call a TLS server: the CA that signed the server's certificate,
/// and the client's own certificate for a server that requires one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// CA certificates (PEM) to trust.
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// The key of `cert`.
    pub key: Option<PathBuf>,
}

impl ClientTlsFiles {
    /// The client side of a server's `[tls]`: its `ca`, and its `client_cert`/`client_key`,
    /// else its own `cert`/`key`.
    pub fn of(tls: &TlsConfig) -> Self {
        let (cert, key) = match (&tls.client_cert, &tls.client_key) {
            (Some(c), Some(k)) => (Some(c.clone()), Some(k.clone())),
            _ => (tls.cert.clone(), tls.key.clone()),
        };
        ClientTlsFiles {
            ca: tls.ca.clone(),
            cert,
            key,
        }
    }

    /// The TLS configuration for calling `url`: `None` for `http://` (a CA or certificate
    /// given anyway is refused, since it would be silently unused), an error for
    /// `https://` without a CA.
    pub fn for_url(&self, url: &str) -> anyhow::Result<Option<ClientTlsConfig>> {
        let https = url.starts_with("https://");
        if !https {
            if self.ca.is_some() || self.cert.is_some() {
                bail!("{url}: a CA or client certificate is given but the URL is not https://");
            }
            return Ok(None);
        }
        let Some(ca) = &self.ca else {
            bail!("{url}: https:// needs the CA that signed the server's certificate (--ca-cert, ONECITY_CA_CERT; [tls] ca for a server)");
        };
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            (None, None) => {}
            _ => bail!("a client certificate needs both the certificate and its key"),
        }
        Ok(Some(config))
    }
}

/// The URI SANs of a certificate (e.g. `spiffe://onecity/service/intake-1`); empty when it
/// has none or does not parse (the handshake has already verified it).
pub fn uri_sans(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        })
        .collect()
}

/// A certificate authority for development, tests and the bench, and for small
/// deployments that make their own (`onecity cert`).
pub struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// The CA's private key, PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").finish_non_exhaustive()
    }
}

/// Validity of a CA `onecity cert` makes.
const CA_DAYS: i64 = 10 * 365;

impl Ca {
    /// A new CA named `name`, valid ten years.
    pub fn new(name: &str) -> anyhow::Result<Ca> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(CA_DAYS);
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: rcgen::Issuer::new(params, key),
        })
    }

    /// A CA from its certificate and key (PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> anyhow::Result<Ca> {
        let key = rcgen::KeyPair::from_pem(key_pem).context("ca key")?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(cert_pem, key).context("ca certificate")?;
        Ok(Ca {
            issuer,
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
        })
    }

    /// A certificate for servers and clients alike: `hosts` (DNS names or IP addresses)
    /// and `uris` (a service's identity) as SANs, valid `days` days.
    pub fn issue(&self, hosts: &[String], uris: &[String], days: u32) -> anyhow::Result<Issued> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(hosts.to_vec())?;
        for uri in uris {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI(uri.as_str().try_into()?));
        }
        let name = hosts
            .first()
            .or(uris.first())
            .map_or("onecity", String::as_str);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(i64::from(days));
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}
