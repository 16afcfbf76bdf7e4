//! Certificates for the TLS tests: a CA, a server certificate for the loopback address, and
//! client certificates with URI identities, written to a directory as the server reads
//! them, with the matching client configurations.

use std::path::{Path, PathBuf};

use onecity::config::TlsConfig;
use onecity::tls::Ca;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// A CA and the files of the certificates it issued, in a temporary directory.
#[derive(Debug)]
pub struct Pki {
    ca: Ca,
    dir: tempfile::TempDir,
}

/// A certificate and key written to files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
}

impl Pki {
    /// A fresh CA named `name`.
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new(name).expect("ca");
        std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).expect("write ca");
        Pki { ca, dir }
    }

    /// The CA certificate's file.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The directory of the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Issues a certificate for `hosts` and `uris`, written as NAME.pem and NAME.key.
    pub fn issue(&self, name: &str, hosts: &[&str], uris: &[&str]) -> CertFiles {
        let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let issued = self.ca.issue(&own(hosts), &own(uris), 2).expect("issue");
        let files = CertFiles {
            cert: self.dir.path().join(format!("{name}.pem")),
            key: self.dir.path().join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, issued.cert_pem).expect("write cert");
        std::fs::write(&files.key, issued.key_pem).expect("write key");
        files
    }

    /// A server certificate for the loopback address, as `[tls]` (no client certificates).
    pub fn server_tls(&self) -> TlsConfig {
        let server = self.issue("server", &["127.0.0.1", "localhost"], &[]);
        TlsConfig {
            cert: Some(server.cert),
            key: Some(server.key),
            ..TlsConfig::default()
        }
    }

    /// [`Pki::server_tls`] requiring client certificates this CA signed (mTLS).
    pub fn server_mtls(&self) -> TlsConfig {
        TlsConfig {
            client_ca: Some(self.ca()),
            ..self.server_tls()
        }
    }

    /// A client trusting this CA, presenting `identity` if given.
    pub fn client(&self, identity: Option<&CertFiles>) -> ClientTlsConfig {
        let read = |p: &Path| std::fs::read(p).expect("read pem");
        let mut tls =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&self.ca())));
        if let Some(id) = identity {
            tls = tls.identity(Identity::from_pem(read(&id.cert), read(&id.key)));
        }
        tls
    }
}
