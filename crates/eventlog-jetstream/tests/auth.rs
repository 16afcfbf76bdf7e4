//! The log over an authenticated, encrypted NATS connection (issue 14): servers started
//! with an `authorization` block and TLS under a CA of the test's own. The conformance
//! suite passes over such a connection; user and password, a token and an nkey seed file
//! authenticate; wrong credentials and an untrusted server fail start-up with a message
//! that names the server but never the secret.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use onecity_eventlog::conformance::{Backend, BoxLog};
use onecity_eventlog::Error;
use onecity_eventlog_jetstream::testing::{fresh_prefix, NatsServer};
use onecity_eventlog_jetstream::{JetStreamConfig, JetStreamLog, NatsAuth};

const USER: &str = "onecity-log";
const PASSWORD: &str = "s3cret-password-never-shown";
const TOKEN: &str = "s3cret-token-never-shown";

/// A CA and a server certificate for 127.0.0.1, as PEM files in a directory that lives as
/// long as the test process.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::default();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "onecity test nats ca");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("server-key.pem"), key.serialize_pem()).unwrap();
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The server's `tls` block.
    fn tls_block(&self) -> String {
        format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n",
            self.path("server.pem").display(),
            self.path("server-key.pem").display()
        )
    }
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(Pki::new)
}

/// One server for the whole file: TLS, and a user with a password.
fn user_server() -> &'static NatsServer {
    static SERVER: OnceLock<NatsServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let extra = format!(
            "{}authorization {{\n  user: \"{USER}\"\n  password: \"{PASSWORD}\"\n}}\n",
            pki().tls_block()
        );
        NatsServer::start_with(&extra).unwrap_or_else(|e| panic!("{e}"))
    })
}

fn trusted(auth: NatsAuth) -> NatsAuth {
    NatsAuth {
        tls_ca: Some(pki().path("ca.pem")),
        ..auth
    }
}

fn config(url: String, auth: NatsAuth) -> JetStreamConfig {
    JetStreamConfig {
        url,
        prefix: fresh_prefix(),
        replicas: 1,
        auth,
        ..JetStreamConfig::default()
    }
}

async fn url_of(server: fn() -> &'static NatsServer) -> String {
    tokio::task::spawn_blocking(move || server().url())
        .await
        .unwrap()
}

/// Fresh logs over the TLS + password server.
#[derive(Debug, Default, Clone, Copy)]
struct Authenticated;

#[async_trait::async_trait]
impl Backend for Authenticated {
    async fn fresh(&self) -> BoxLog {
        let auth = trusted(NatsAuth {
            user_password: Some((USER.into(), PASSWORD.into())),
            ..NatsAuth::default()
        });
        let log = JetStreamLog::connect(config(url_of(user_server).await, auth))
            .await
            .unwrap_or_else(|e| panic!("connect over tls with a password: {e}"));
        Arc::new(log)
    }
}

mod over_tls_with_a_password {
    onecity_eventlog::conformance_suite!(super::Authenticated);
}

/// The refusal of `config`, checked to name the server and not to show `secret`.
async fn refused(config: JetStreamConfig, secret: &str) -> (String, String) {
    let shown = config.url.clone();
    match JetStreamLog::connect(config).await {
        Err(Error::Invalid { field, reason }) => {
            assert!(!reason.contains(secret), "the secret is shown: {reason}");
            assert!(
                reason.contains("127.0.0.1:"),
                "the server is not named: {reason}"
            );
            (field, reason)
        }
        Err(other) => panic!("expected a refusal of the settings for {shown}, got {other}"),
        Ok(_) => panic!("connected to {shown} with settings it should refuse"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_naming_the_server_not_the_secret() {
    let url = url_of(user_server).await;
    let wrong = trusted(NatsAuth {
        user_password: Some((USER.into(), "wrong-password".into())),
        ..NatsAuth::default()
    });
    let (field, _) = refused(config(url.clone(), wrong), "wrong-password").await;
    assert_eq!(field, "credentials");

    // Credentials in the URL are taken, and never shown.
    let in_url = url.replace("nats://", "nats://onecity-log:wrong-in-url@");
    let (field, reason) =
        refused(config(in_url, trusted(NatsAuth::default())), "wrong-in-url").await;
    assert_eq!(field, "credentials");
    assert!(reason.contains("****@127.0.0.1"), "{reason}");
    let right_in_url = url.replace("nats://", &format!("nats://{USER}:{PASSWORD}@"));
    JetStreamLog::connect(config(right_in_url, trusted(NatsAuth::default())))
        .await
        .expect("the password in the URL authenticates");

    // No credentials at all.
    let (field, _) = refused(config(url.clone(), trusted(NatsAuth::default())), PASSWORD).await;
    assert_eq!(field, "credentials");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_signed_by_another_ca_is_refused() {
    let url = url_of(user_server).await;
    let other = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::default();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&key).unwrap();
    let other_ca = other.path().join("other-ca.pem");
    std::fs::write(&other_ca, ca.pem()).unwrap();
    let auth = NatsAuth {
        user_password: Some((USER.into(), PASSWORD.into())),
        tls_ca: Some(other_ca),
        ..NatsAuth::default()
    };
    let (field, _) = refused(config(url, auth), PASSWORD).await;
    assert_eq!(field, "tls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_and_an_nkey_seed_authenticate() {
    let extra = format!(
        "{}authorization {{\n  token: \"{TOKEN}\"\n}}\n",
        pki().tls_block()
    );
    let token_server = tokio::task::spawn_blocking(move || NatsServer::start_with(&extra))
        .await
        .unwrap()
        .unwrap();
    let with_token = trusted(NatsAuth {
        token: Some(TOKEN.into()),
        ..NatsAuth::default()
    });
    JetStreamLog::connect(config(token_server.url(), with_token))
        .await
        .expect("the token authenticates");
    let wrong_token = trusted(NatsAuth {
        token: Some("not-the-token".into()),
        ..NatsAuth::default()
    });
    refused(config(token_server.url(), wrong_token), "not-the-token").await;

    let user = nkeys::KeyPair::new_user();
    let extra = format!(
        "{}authorization {{\n  users: [ {{ nkey: \"{}\" }} ]\n}}\n",
        pki().tls_block(),
        user.public_key()
    );
    let nkey_server = tokio::task::spawn_blocking(move || NatsServer::start_with(&extra))
        .await
        .unwrap()
        .unwrap();
    let seeds = tempfile::tempdir().unwrap();
    let seed_file = seeds.path().join("log.nk");
    std::fs::write(&seed_file, user.seed().unwrap()).unwrap();
    let with_nkey = trusted(NatsAuth {
        nkey_seed_file: Some(seed_file),
        ..NatsAuth::default()
    });
    let log = JetStreamLog::connect(config(nkey_server.url(), with_nkey))
        .await
        .expect("the nkey seed authenticates");
    drop(log);
    let stranger = nkeys::KeyPair::new_user();
    let stranger_file = seeds.path().join("stranger.nk");
    std::fs::write(&stranger_file, stranger.seed().unwrap()).unwrap();
    let with_stranger = trusted(NatsAuth {
        nkey_seed_file: Some(stranger_file),
        ..NatsAuth::default()
    });
    refused(
        config(nkey_server.url(), with_stranger),
        &stranger.seed().unwrap(),
    )
    .await;
}
