//! Intake backpressure: over the routing-lag bound `SubmitApplication` answers
//! RESOURCE_EXHAUSTED and writes nothing, while a retry of an accepted request still gets
//! its case back.

use onecity::config::Role;
use onecity_tests::{sample_application, submission, tokens, TestServer};
use tonic::Code;

/// A household of one, of its own.
fn single() -> onecity_proto::v1::Application {
    let mut app = sample_application();
    app.members.truncate(1);
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_routing_lag_bound_submissions_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    // No worker runs, so nothing is ever routed and every accepted case adds to the lag.
    let server = TestServer::start_with(dir.path(), |c| {
        c.roles = vec![Role::Intake, Role::Log];
        c.max_routing_lag = 4;
    })
    .await;
    let mut intake = server.intake(tokens::TERMINAL).await;
    let mut accepted = Vec::new();
    // Each accepted case writes two events, its one member's claim and its submission.
    // Accepted until a measurement sees more than four unrouted events (measurements are
    // reused for a few milliseconds, so a few more may get in first).
    let refused = loop {
        assert!(accepted.len() < 1_000, "never refused");
        let req = submission(single());
        match intake.submit_application(req.clone()).await {
            Ok(r) => accepted.push((req, r.into_inner())),
            Err(status) => break status,
        }
    };
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("routing is behind") && refused.message().contains("retry"),
        "{}",
        refused.message()
    );
    assert!(
        accepted.len() >= 3,
        "refused at a lag of {}",
        accepted.len()
    );

    // A refusal writes nothing.
    let head = server.head().await;
    assert_eq!(head, 2 * accepted.len() as u64);
    let again = intake
        .submit_application(submission(single()))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::ResourceExhausted);
    assert_eq!(server.head().await, head);

    // A terminal retrying a request that was accepted gets its case, as always.
    let (req, first) = &accepted[0];
    let retry = intake
        .submit_application(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retry.case_id, first.case_id);
    assert!(retry.duplicate);
    assert_eq!(retry.submitted_at, first.submitted_at);
    assert_eq!(server.head().await, head);
    server.stop().await;
}
