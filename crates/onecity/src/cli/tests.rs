use clap::CommandFactory;
use tonic::Status;

use super::*;

#[test]
fn cli_definition_is_consistent() {
    Cli::command().debug_assert();
}

fn parse(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("onecity").chain(args.iter().copied())).unwrap()
}

#[test]
fn parses_the_walkthrough_commands() {
    match parse(&["serve", "--addr", "127.0.0.1:6000", "--log", "sled:/tmp/l"]).command {
        Command::Serve(a) => {
            assert_eq!(a.addr, Some("127.0.0.1:6000".parse().unwrap()));
            assert_eq!(a.log, Some(LogSpec::Sled("/tmp/l".into())));
        }
        other => panic!("{other:?}"),
    }
    match parse(&[
        "decide",
        "r-1",
        "approve",
        "--amount-fen",
        "111000",
        "--token",
        "t",
    ])
    .command
    {
        Command::Decide {
            decision,
            amount_fen,
            client,
            ..
        } => {
            assert_eq!(decision, DecisionArg::Approve);
            assert_eq!(amount_fen, 111_000);
            assert_eq!(client.token, "t");
        }
        other => panic!("{other:?}"),
    }
    match parse(&["referrals", "--state", "issued"]).command {
        Command::Referrals { state, follow, .. } => {
            assert_eq!(state, Some(StateArg::Issued));
            assert!(!follow);
        }
        other => panic!("{other:?}"),
    }
    match parse(&["log", "tail", "--from", "3", "--follow"]).command {
        Command::Log {
            command: LogCommand::Tail { from, follow, .. },
        } => {
            assert_eq!(from, Some(3));
            assert!(follow);
        }
        other => panic!("{other:?}"),
    }
    assert!(Cli::try_parse_from(["onecity", "serve", "--log", "nats:x"]).is_err());
    assert!(Cli::try_parse_from(["onecity", "decide", "r-1", "maybe"]).is_err());
}

#[test]
fn status_errors_render_with_the_canonical_code() {
    let e = anyhow::Error::new(Status::invalid_argument(
        "invalid application.members[2].id_number: bad check character",
    ));
    assert_eq!(
        render_error(&e),
        "INVALID_ARGUMENT: invalid application.members[2].id_number: bad check character"
    );
    let e = anyhow::Error::new(Status::not_found("no case 0190"));
    assert_eq!(render_error(&e), "NOT_FOUND: no case 0190");
    let e = anyhow::anyhow!("inner").context("outer");
    assert_eq!(render_error(&e), "outer: inner");
}

#[test]
fn default_request_id_depends_on_content_only() {
    let a = pb::Application {
        district_code: "120103".into(),
        ..Default::default()
    };
    let mut b = a.clone();
    assert_eq!(default_request_id(&a), default_request_id(&b));
    b.contact_phone = "1".into();
    assert_ne!(default_request_id(&a), default_request_id(&b));
    assert!(default_request_id(&a).len() <= 128);
}

#[test]
fn parses_amend_and_policy_impact() {
    match parse(&["amend", "c-1", "now.json", "--reason", "new job"]).command {
        Command::Amend {
            case_id,
            file,
            reason,
            request_id,
            ..
        } => {
            assert_eq!(case_id, "c-1");
            assert_eq!(file, std::path::PathBuf::from("now.json"));
            assert_eq!(reason, "new job");
            assert_eq!(request_id, None);
        }
        other => panic!("{other:?}"),
    }
    // A reason is required.
    assert!(Cli::try_parse_from(["onecity", "amend", "c-1", "now.json"]).is_err());
    match parse(&["policy", "impact", "--version", "2027-01", "--token", "a"]).command {
        Command::Policy {
            command: Some(PolicyCommand::Impact { version, client }),
            ..
        } => {
            assert_eq!(version, "2027-01");
            assert_eq!(client.token, "a");
        }
        other => panic!("{other:?}"),
    }
    match parse(&["policy", "--as-of", "2026-03-01"]).command {
        Command::Policy {
            command: None,
            as_of,
            ..
        } => assert_eq!(as_of.as_deref(), Some("2026-03-01")),
        other => panic!("{other:?}"),
    }
    // The same amendment of the same case is one request; another reason is another.
    let app = onecity_proto::v1::Application::default();
    assert_eq!(
        client::default_amend_request_id("c-1", &app, "x"),
        client::default_amend_request_id("c-1", &app, "x")
    );
    assert_ne!(
        client::default_amend_request_id("c-1", &app, "x"),
        client::default_amend_request_id("c-1", &app, "y")
    );
}
