//! TLS and mTLS over real gRPC on loopback, with certificates made in the test: who can
//! connect, who a client certificate stands for, and a worker process that reaches the
//! log over `remote:https://` with its client certificate.

use onecity::config::{LogSpec, PrincipalKind, Role, TokenConfig};
use onecity_proto::v1 as pb;
use onecity_tests::{sample_application, tokens, Pki, TestServer};
use pb::event_log_service_client::EventLogServiceClient;
use tonic::transport::ClientTlsConfig;
use tonic::Code;
use uuid::Uuid;

const WORKER_URI: &str = "spiffe://onecity/service/worker-1";

/// A `GetHead` with the admin token over a fresh connection with `tls`: the call's
/// status, or `None` when no connection could be made.
async fn head_over(server: &TestServer, tls: Option<ClientTlsConfig>) -> Option<Code> {
    let channel = server.try_channel(tls).await.ok()?;
    let mut log = onecity_tests::log(channel, tokens::ADMIN);
    Some(match log.get_head(pb::GetHeadRequest {}).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    })
}

fn probe() -> pb::AppendRequest {
    pb::AppendRequest {
        case_id: Uuid::now_v7().to_string(),
        expected: Some(pb::ExpectedVersion {
            kind: pb::ExpectedKind::NoStream as i32,
            version: 0,
        }),
        events: vec![pb::NewEvent {
            metadata: Default::default(),
            event_id: Uuid::now_v7().to_string(),
            event_type: "onecity.test.Probe".into(),
            actor: "test".into(),
            causation_id: String::new(),
            payload: vec![1, 2, 3],
        }],
        commit_id: Uuid::now_v7().to_string(),
    }
}

/// A service entry identified by the certificate with `uri` instead of a token.
fn cert_entry(uri: &str, id: &str) -> TokenConfig {
    TokenConfig {
        token: None,
        token_sha256: None,
        client_uri: Some(uri.to_owned()),
        ..TokenConfig::named("unused", PrincipalKind::Service, id)
    }
}

#[tokio::test]
async fn a_tls_server_serves_tls_clients_of_its_ca_only() {
    let pki = Pki::new("onecity test CA");
    let other = Pki::new("another CA");
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), |c| c.tls = pki.server_tls())
        .await
        .with_client_tls(pki.client(None));
    assert!(server.url.starts_with("https://"), "{}", server.url);
    // `head` waits until the server is up, over TLS (the log holds the policy versions in
    // force, recorded at start).
    assert_eq!(server.head().await, 2);
    assert_eq!(
        head_over(&server, Some(pki.client(None))).await,
        Some(Code::Ok)
    );

    // Plaintext to a TLS listener: no call gets through.
    let http_url = server.url.replacen("https://", "http://", 1);
    let plaintext = async {
        let channel = tonic::transport::Channel::from_shared(http_url)
            .unwrap()
            .connect()
            .await
            .ok()?;
        let mut log = onecity_tests::log(channel, tokens::ADMIN);
        log.get_head(pb::GetHeadRequest {}).await.ok()
    };
    assert!(plaintext.await.is_none(), "a plaintext call succeeded");

    // A client that trusts another CA refuses the server's certificate.
    assert_eq!(head_over(&server, Some(other.client(None))).await, None);
}

#[tokio::test]
async fn mtls_maps_a_client_certificate_to_its_service_and_refuses_the_rest() {
    let pki = Pki::new("onecity test CA");
    let worker = pki.issue("worker", &[], &[WORKER_URI]);
    let stranger = pki.issue("stranger", &[], &["spiffe://onecity/service/unknown"]);
    let outsider_ca = Pki::new("outsider CA");
    let outsider = outsider_ca.issue("outsider", &[], &[WORKER_URI]);
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir.path(), |c| {
        c.tls = pki.server_mtls();
        c.tokens.push(cert_entry(WORKER_URI, "worker-1"));
    })
    .await
    .with_client_tls(pki.client(Some(&worker)));
    // The policy versions in force, recorded at start.
    let start = server.head().await;

    // The worker's certificate alone (no token) is the service principal: it appends.
    let channel = server
        .try_channel(Some(pki.client(Some(&worker))))
        .await
        .unwrap();
    let appended = EventLogServiceClient::new(channel)
        .append(probe())
        .await
        .expect("append by client certificate")
        .into_inner();
    assert_eq!(appended.last_position, start + 1);
    assert_eq!(server.head().await, start + 1);

    // A certificate of the right CA that is not mapped: UNAUTHENTICATED, nothing written.
    let channel = server
        .try_channel(Some(pki.client(Some(&stranger))))
        .await
        .unwrap();
    let err = EventLogServiceClient::new(channel)
        .append(probe())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    assert!(err.message().contains("not mapped"), "{err}");

    // No certificate, or one of another CA (even naming the worker): no call gets through,
    // not even with a valid token.
    for (what, tls) in [
        ("no certificate", pki.client(None)),
        ("another CA's certificate", pki.client(Some(&outsider))),
    ] {
        let code = head_over(&server, Some(tls)).await;
        assert!(
            matches!(code, None | Some(Code::Unavailable | Code::Unknown)),
            "{what}: {code:?}"
        );
    }
    assert_eq!(server.head().await, start + 1, "nothing else was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_worker_over_https_with_a_client_certificate_routes_cases() {
    let pki = Pki::new("onecity test CA");
    let worker = pki.issue("worker", &[], &[WORKER_URI]);
    let log_dir = tempfile::tempdir().unwrap();
    let log_server = TestServer::start_with(log_dir.path(), |c| {
        c.roles = vec![Role::Log];
        c.tls = pki.server_mtls();
        c.tokens.push(cert_entry(WORKER_URI, "worker-1"));
    })
    .await
    .with_client_tls(pki.client(Some(&worker)));
    assert_eq!(log_server.head().await, 0);

    let roles_dir = tempfile::tempdir().unwrap();
    let url = log_server.url.clone();
    let roles = TestServer::start_with(roles_dir.path(), |c| {
        c.roles = vec![Role::Intake, Role::Eligibility, Role::Handoff];
        c.log = Some(LogSpec::Remote(url));
        // No log token: the client certificate is the worker's identity.
        c.log_token = None;
        c.tls.ca = Some(pki.ca());
        c.tls.client_cert = Some(worker.cert.clone());
        c.tls.client_key = Some(worker.key.clone());
    })
    .await;
    let case = roles.submit_handed_off(sample_application()).await;
    assert!(!case.referrals.is_empty(), "{case:?}");

    // Everything went through the TLS log server.
    let events = log_server.whole_log().await;
    assert!(
        events
            .iter()
            .any(|e| e.event_type == "onecity.v1.ReferralIssued"),
        "{events:?}"
    );
}
