use std::collections::HashMap;

use onecity_domain::{Department, DepartmentUnit, Principal};

use super::*;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |k| map.get(k).cloned()
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn write(text: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), text).unwrap();
    f
}

fn load_str(text: &str) -> anyhow::Result<Config> {
    let f = write(text);
    Config::load_with(Some(f.path()), &no_env, Overrides::default())
}

#[test]
fn defaults() {
    let c = Config::load_with(None, &no_env, Overrides::default()).unwrap();
    assert_eq!(c.addr.to_string(), DEFAULT_ADDR);
    assert_eq!(c.data_dir, PathBuf::from("./data"));
    assert_eq!(c.log, None);
    assert_eq!(c.log_spec(), LogSpec::Sled(PathBuf::from("./data")));
    assert_eq!(c.policy_file, None);
    assert_eq!(c.catalogue_file, None);
    assert!(c.uses_demo_tokens());
    assert_eq!(c, Config::default());
}

#[test]
fn demo_tokens_cover_the_walkthrough() {
    let p = Config::default().principals().unwrap();
    assert!(matches!(
        p.token(DEMO_TERMINAL_TOKEN).unwrap(),
        Principal::Terminal { district, .. } if district.code() == "120103"
    ));
    assert!(matches!(
        p.token("demo-terminal-120101").unwrap(),
        Principal::Terminal { district, .. } if district.code() == "120101"
    ));
    for d in Department::ALL {
        let unit: DepartmentUnit = format!("{d}@120103").parse().unwrap();
        assert_eq!(
            *p.token(&format!("demo-{d}-120103")).unwrap(),
            Principal::Department { unit }
        );
    }
    assert_eq!(
        *p.token("demo-civil-affairs-120101").unwrap(),
        Principal::Department {
            unit: "civil-affairs@120101".parse().unwrap()
        }
    );
    assert!(matches!(
        *p.token("demo-admin").unwrap(),
        Principal::Admin { .. }
    ));
    assert!(matches!(
        *p.token("demo-service").unwrap(),
        Principal::Service { .. }
    ));
    assert_eq!(
        *p.token("demo-supervisor-120103").unwrap(),
        Principal::Supervisor {
            district: "120103".parse().unwrap()
        }
    );
    assert_eq!(p.tokens(), 14);
}

#[test]
fn file_overrides_defaults_and_replaces_tokens() {
    let c = load_str(
        r#"
        addr = "0.0.0.0:6000"
        data_dir = "/var/lib/onecity"
        policy_file = "/etc/onecity/policy.toml"

        [[tokens]]
        token = "s3cret-terminal"
        principal = "terminal"
        id = "T-120104-02"
        district = "120104"
        street_office = "Wanxing street office"

        [[tokens]]
        token = "s3cret-dept"
        principal = "department"
        unit = "housing@120104"
        "#,
    )
    .unwrap();
    assert_eq!(c.addr.to_string(), "0.0.0.0:6000");
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/onecity"));
    // The default log follows data_dir.
    assert_eq!(
        c.log_spec(),
        LogSpec::Sled(PathBuf::from("/var/lib/onecity"))
    );
    assert_eq!(
        c.policy_file,
        Some(PathBuf::from("/etc/onecity/policy.toml"))
    );
    assert_eq!(c.catalogue_file, None);
    assert!(!c.uses_demo_tokens());
    let p = c.principals().unwrap();
    assert_eq!(p.tokens(), 2);
    assert_eq!(
        p.token("s3cret-terminal").unwrap().actor(),
        "terminal:T-120104-02"
    );
    assert_eq!(
        p.token("s3cret-dept").unwrap().actor(),
        "department:housing@120104"
    );
}

#[test]
fn precedence_file_then_env_then_flags() {
    let f = write(
        r#"
        addr = "127.0.0.1:7000"
        data_dir = "/from/file"
        log = "sled:/file/log"
        catalogue_file = "/file/catalogue.toml"
        "#,
    );
    let env = env_of(&[
        ("ONECITY_ADDR", "127.0.0.1:7001"),
        ("ONECITY_DATA_DIR", "/from/env"),
        ("ONECITY_POLICY_FILE", "/env/policy.toml"),
        // Empty counts as unset: the file's value stays.
        ("ONECITY_CATALOGUE_FILE", ""),
    ]);
    let c = Config::load_with(Some(f.path()), &env, Overrides::default()).unwrap();
    assert_eq!(c.addr.to_string(), "127.0.0.1:7001");
    assert_eq!(c.data_dir, PathBuf::from("/from/env"));
    assert_eq!(c.log_spec(), LogSpec::Sled(PathBuf::from("/file/log")));
    assert_eq!(c.policy_file, Some(PathBuf::from("/env/policy.toml")));
    assert_eq!(
        c.catalogue_file,
        Some(PathBuf::from("/file/catalogue.toml"))
    );

    let env = env_of(&[
        ("ONECITY_ADDR", "127.0.0.1:7001"),
        ("ONECITY_LOG", "remote:http://10.0.0.5:50051"),
    ]);
    let flags = Overrides {
        addr: Some("127.0.0.1:7002".parse().unwrap()),
        data_dir: Some(PathBuf::from("/from/flag")),
        ..Overrides::default()
    };
    let c = Config::load_with(Some(f.path()), &env, flags).unwrap();
    assert_eq!(c.addr.to_string(), "127.0.0.1:7002");
    assert_eq!(c.data_dir, PathBuf::from("/from/flag"));
    assert_eq!(
        c.log_spec(),
        LogSpec::Remote("http://10.0.0.5:50051".to_owned())
    );

    let flags = Overrides {
        log: Some("sled:/flag/log".parse().unwrap()),
        ..Overrides::default()
    };
    let c = Config::load_with(Some(f.path()), &env, flags).unwrap();
    assert_eq!(c.log_spec(), LogSpec::Sled(PathBuf::from("/flag/log")));
}

#[test]
fn default_log_follows_data_dir_flag() {
    let flags = Overrides {
        data_dir: Some(PathBuf::from("/tmp/x")),
        ..Overrides::default()
    };
    let c = Config::load_with(None, &no_env, flags).unwrap();
    assert_eq!(c.log_spec(), LogSpec::Sled(PathBuf::from("/tmp/x")));
}

#[test]
fn roles_and_partition_layer_like_the_rest() {
    let f = write("roles = [\"intake\", \"handoff\"]\npartition = \"1/3\"\n");
    let c = Config::load_with(Some(f.path()), &no_env, Overrides::default()).unwrap();
    assert_eq!(c.roles, vec![Role::Intake, Role::Handoff]);
    assert!(c.runs(Role::Handoff) && !c.runs(Role::Eligibility));
    assert_eq!(c.partition.to_string(), "1/3");
    let env = env_of(&[
        ("ONECITY_ROLES", "eligibility,log"),
        ("ONECITY_PARTITION", "0/2"),
    ]);
    let c = Config::load_with(Some(f.path()), &env, Overrides::default()).unwrap();
    assert_eq!(c.roles, vec![Role::Eligibility, Role::Log]);
    assert_eq!(c.partition.to_string(), "0/2");
    let flags = Overrides {
        roles: vec![Role::All],
        ..Overrides::default()
    };
    let c = Config::load_with(Some(f.path()), &env, flags).unwrap();
    assert!(c.runs(Role::Intake) && c.runs(Role::Log));
    assert!(load_str("partition = \"2/2\"\n").is_err());
    assert!(load_str("roles = [\"billing\"]\n").is_err());
    assert!(load_str("roles = []\n").is_err());
    let remote_log_role = Config::load_with(
        None,
        &env_of(&[
            ("ONECITY_ROLES", "log"),
            ("ONECITY_LOG", "remote:http://127.0.0.1:1"),
        ]),
        Overrides::default(),
    );
    assert!(format!("{:#}", remote_log_role.unwrap_err()).contains("not a remote"));
    // Over JetStream the process reaches the store itself, so it may serve it.
    let jetstream_log_role = Config::load_with(
        None,
        &env_of(&[
            ("ONECITY_ROLES", "log"),
            ("ONECITY_LOG", "jetstream:nats://127.0.0.1:4222"),
        ]),
        Overrides::default(),
    );
    assert!(jetstream_log_role.is_ok(), "{jetstream_log_role:?}");
}

#[test]
fn routing_lag_and_worker_partitions_layer_like_the_rest() {
    let c = Config::default();
    assert_eq!(c.max_routing_lag, 10_000);
    assert_eq!(c.worker_partition_count(), 1);
    let f = write("max_routing_lag = 50\nroles = [\"intake\"]\nworker_partitions = 2\n");
    let c = Config::load_with(Some(f.path()), &no_env, Overrides::default()).unwrap();
    assert_eq!((c.max_routing_lag, c.worker_partition_count()), (50, 2));
    let env = env_of(&[
        ("ONECITY_MAX_ROUTING_LAG", "0"),
        ("ONECITY_WORKER_PARTITIONS", "3"),
    ]);
    let c = Config::load_with(Some(f.path()), &env, Overrides::default()).unwrap();
    assert_eq!((c.max_routing_lag, c.worker_partition_count()), (0, 3));
    // Without the setting, the workers' own partition count.
    assert_eq!(
        load_str("partition = \"1/3\"\n")
            .unwrap()
            .worker_partition_count(),
        3
    );
    // A process that runs workers cannot disagree with itself.
    let err = load_str("partition = \"0/2\"\nworker_partitions = 3\n").unwrap_err();
    assert!(format!("{err:#}").contains("worker_partitions"), "{err:#}");
    assert!(load_str("roles = [\"intake\"]\nworker_partitions = 0\n").is_err());
    // Leased workers need no partition of their own, only the count (`--partitions`).
    let flags = Overrides {
        roles: vec![Role::Eligibility],
        worker_partitions: Some(4),
        ..Overrides::default()
    };
    let c = Config::load_with(None, &no_env, flags).unwrap();
    assert_eq!((c.worker_partition_count(), c.partition.count()), (4, 1));
    let err = Config::load_with(
        None,
        &env_of(&[("ONECITY_MAX_ROUTING_LAG", "lots")]),
        Overrides::default(),
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("ONECITY_MAX_ROUTING_LAG"),
        "{err:#}"
    );
    // `onecity config` prints both, resolved.
    let text = Config::default().to_redacted_toml().unwrap();
    assert!(text.contains("max_routing_lag = 10000"), "{text}");
    assert!(text.contains("worker_partitions = 1"), "{text}");
}

#[test]
fn bad_env_values_are_refused() {
    let err = Config::load_with(
        None,
        &env_of(&[("ONECITY_ADDR", "localhost")]),
        Overrides::default(),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("ONECITY_ADDR"), "{err:#}");
    let err = Config::load_with(
        None,
        &env_of(&[("ONECITY_LOG", "postgres://x")]),
        Overrides::default(),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("ONECITY_LOG"), "{err:#}");
}

#[test]
fn unknown_fields_are_refused() {
    let err = load_str("adress = \"127.0.0.1:1\"\n").unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("unknown field `adress`"), "{msg}");
    assert!(msg.contains("config file"), "{msg}");

    let err = load_str(
        r#"
        [[tokens]]
        token = "x-123"
        principal = "admin"
        id = "a"
        role = "root"
        "#,
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("unknown field `role`"),
        "{err:#}"
    );

    let err = load_str("[[tokens]]\ntoken = \"x\"\nprincipal = \"clerk\"\n").unwrap_err();
    assert!(format!("{err:#}").contains("clerk"), "{err:#}");
}

#[test]
fn missing_file_is_an_error() {
    let err = Config::load_with(
        Some(Path::new("/nonexistent/onecity.toml")),
        &no_env,
        Overrides::default(),
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").starts_with("read config file /nonexistent/onecity.toml"),
        "{err:#}"
    );
}

fn token_error(entry: &str) -> String {
    let err = load_str(&format!("[[tokens]]\n{entry}\n")).unwrap_err();
    format!("{err:#}")
}

#[test]
fn bad_token_entries_name_the_entry() {
    let e = token_error(
        "token = \"t-1\"\nprincipal = \"terminal\"\nid = \"T-9\"\ndistrict = \"120199\"\nstreet_office = \"x\"",
    );
    assert!(
        e.starts_with("tokens[0] (terminal \"T-9\"): unknown district \"120199\""),
        "{e}"
    );

    let e = token_error("token = \"t-1\"\nprincipal = \"department\"\nunit = \"police@120103\"");
    assert!(
        e.starts_with("tokens[0] (department \"police@120103\"): bad unit"),
        "{e}"
    );
    assert!(e.contains("unknown department"), "{e}");

    let e = token_error("token = \"t-1\"\nprincipal = \"department\"\nunit = \"civil-affairs\"");
    assert!(e.contains("bad unit \"civil-affairs\""), "{e}");

    let e = token_error(
        "token = \"t-1\"\nprincipal = \"terminal\"\nid = \"T-1\"\ndistrict = \"120103\"",
    );
    assert!(e.contains("a terminal token needs `street_office`"), "{e}");

    let e = token_error("token = \"t-1\"\nprincipal = \"department\"\nunit = \"housing@120103\"\ndistrict = \"120103\"");
    assert!(
        e.contains("`district` does not apply to a department token"),
        "{e}"
    );

    let e = token_error("token = \"t-1\"\nprincipal = \"supervisor\"\ndistrict = \"120199\"");
    assert!(
        e.starts_with("tokens[0] (supervisor \"120199\"): unknown district"),
        "{e}"
    );
    let e = token_error("token = \"t-1\"\nprincipal = \"supervisor\"\nunit = \"housing@120103\"");
    assert!(e.contains("a supervisor token needs `district`"), "{e}");

    let e = token_error("token = \"t-1\"\nprincipal = \"admin\"");
    assert!(
        e.starts_with("tokens[0] (admin): an admin token needs `id`"),
        "{e}"
    );

    let e = token_error("token = \"\"\nprincipal = \"service\"\nid = \"w\"");
    assert!(e.contains("`token` is empty"), "{e}");

    let e = token_error("token = \"has space\"\nprincipal = \"service\"\nid = \"w\"");
    assert!(e.contains("visible ASCII"), "{e}");
    assert!(
        !e.contains("has space"),
        "the token must not be echoed: {e}"
    );

    let e = token_error("token = \"t-1\"\nprincipal = \"service\"\nid = \"  \"");
    assert!(e.contains("`id` is empty"), "{e}");
}

#[test]
fn duplicate_tokens_are_refused() {
    let err = load_str(
        r#"
        [[tokens]]
        token = "same-token"
        principal = "admin"
        id = "a"
        [[tokens]]
        token = "same-token"
        principal = "service"
        id = "b"
        "#,
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert_eq!(
        msg,
        "tokens[1] (service \"b\"): the same token is already given to tokens[0]"
    );
}

#[test]
fn log_spec_forms() {
    assert_eq!(
        "sled:./data".parse::<LogSpec>().unwrap(),
        LogSpec::Sled(PathBuf::from("./data"))
    );
    assert_eq!(
        "remote:http://127.0.0.1:50051/".parse::<LogSpec>().unwrap(),
        LogSpec::Remote("http://127.0.0.1:50051".to_owned())
    );
    for bad in [
        "",
        "sled:",
        "./data",
        "remote:",
        "remote:127.0.0.1:50051",
        "remote:ftp://h:1",
        "remote:http://h:1/path",
        "nats:x",
    ] {
        assert!(bad.parse::<LogSpec>().is_err(), "{bad:?} accepted");
    }
    for s in ["sled:/var/lib/onecity", "remote:https://log.example:443"] {
        assert_eq!(s.parse::<LogSpec>().unwrap().to_string(), s);
    }
}

#[test]
fn redacted_toml_hides_tokens_and_round_trips() {
    let mut c = Config::default();
    c.tokens.push(TokenConfig::named(
        "real-secret-token",
        PrincipalKind::Service,
        "worker",
    ));
    c.log_token = Some("another-secret".to_owned());
    let text = c.to_redacted_toml().unwrap();
    assert!(!text.contains("real-secret-token"), "{text}");
    assert!(!text.contains("another-secret"), "{text}");
    assert!(!text.contains(DEMO_TERMINAL_TOKEN), "{text}");
    assert!(text.contains("token = \"demo-…\""), "{text}");
    assert!(text.contains("token = \"****\""), "{text}");
    assert!(text.contains("log = \"sled:./data\""), "{text}");
    // The printed form is itself a valid config file.
    let back = Config::from_toml_str(&text).unwrap();
    assert_eq!(back.tokens.len(), c.tokens.len());
    assert_eq!(back.log_spec(), c.log_spec());
    // Debug never shows tokens either.
    let debug = format!("{c:?}");
    assert!(!debug.contains("real-secret-token") && !debug.contains("another-secret"));
}

#[test]
fn shipped_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/onecity.toml");
    let c = Config::load_with(Some(&path), &no_env, Overrides::default()).unwrap();
    assert_eq!(c.addr.to_string(), DEFAULT_ADDR);
    assert!(c.uses_demo_tokens());
    assert_eq!(
        c.principals().unwrap(),
        Config::default().principals().unwrap()
    );
}

#[test]
fn token_sha256_authenticates_and_the_plain_value_of_another_token_does_not() {
    let hash = hex::encode(sha256("the-real-token"));
    let c = load_str(&format!(
        r#"
        [[tokens]]
        token_sha256 = "{hash}"
        principal = "admin"
        id = "ops"

        [[tokens]]
        token = "a-clear-token"
        principal = "service"
        id = "worker"
        "#
    ))
    .unwrap();
    let p = c.principals().unwrap();
    assert_eq!(p.token("the-real-token").unwrap().actor(), "admin:ops");
    assert_eq!(p.token("a-clear-token").unwrap().actor(), "service:worker");
    // Neither the hash itself nor another token's value is a token.
    assert!(p.token(&hash).is_none());
    assert!(p.token("the-real-token ").is_none());
    assert!(p.token("demo-admin").is_none());
    assert_eq!(c.clear_tokens(), vec!["tokens[1] (service \"worker\")"]);
    // The demo tokens are recognised hashed too.
    let demo = TokenConfig::named("demo-admin", PrincipalKind::Admin, "x").hashed();
    assert!(demo.token.is_none() && demo.token_sha256.is_some());
    let c = Config {
        tokens: vec![demo],
        ..Config::default()
    };
    assert!(c.uses_demo_tokens());
}

#[test]
fn a_token_entry_has_exactly_one_credential() {
    for (entry, expected) in [
        ("token_sha256 = \"abc\"", "64 hex digits"),
        (
            "token = \"x\"\ntoken_sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"",
            "exactly one",
        ),
        ("client_uri = \"not a uri\"", "client_uri"),
        ("", "exactly one"),
    ] {
        let err = load_str(&format!(
            "[[tokens]]\n{entry}\nprincipal = \"admin\"\nid = \"ops\"\n"
        ))
        .unwrap_err();
        assert!(format!("{err:#}").contains(expected), "{entry}: {err:#}");
    }
    // A client certificate mapping needs client certificates.
    let err = load_str(
        "[[tokens]]\nclient_uri = \"spiffe://onecity/service/a\"\nprincipal = \"service\"\nid = \"a\"\n",
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("client_ca"), "{err:#}");
}

#[test]
fn a_non_loopback_address_refuses_what_is_unsafe_naming_the_setting() {
    let exposed: SocketAddr = "0.0.0.0:50051".parse().unwrap();
    let loopback: SocketAddr = "127.0.0.1:50051".parse().unwrap();
    // The demo: anything goes on loopback.
    assert!(Config::default()
        .check_exposure(loopback)
        .unwrap()
        .is_empty());
    let err = format!(
        "{:#}",
        Config::default().check_exposure(exposed).unwrap_err()
    );
    assert!(err.contains("demo tokens") && err.contains("tls:"), "{err}");
    assert!(err.contains("--insecure"), "{err}");

    let none = Config {
        tokens: Vec::new(),
        ..Config::default()
    };
    let err = format!("{:#}", none.check_exposure(exposed).unwrap_err());
    assert!(err.contains("tokens: none configured"), "{err}");

    let clear = Config {
        tokens: vec![TokenConfig::named("s3cret", PrincipalKind::Admin, "ops")],
        ..Config::default()
    };
    let err = format!("{:#}", clear.check_exposure(exposed).unwrap_err());
    assert!(
        err.contains("token_sha256") && !err.contains("s3cret"),
        "{err}"
    );

    let safe = Config {
        tokens: vec![TokenConfig::named("s3cret", PrincipalKind::Admin, "ops").hashed()],
        tls: TlsConfig {
            cert: Some("c.pem".into()),
            key: Some("k.pem".into()),
            ..TlsConfig::default()
        },
        person_index_key_file: Some("person.key".into()),
        ..Config::default()
    };
    assert!(safe.check_exposure(exposed).unwrap().is_empty());
    // Intake and handoff (its monitoring) off loopback need the person index key; other
    // roles do not.
    let keyless = Config {
        person_index_key_file: None,
        ..safe.clone()
    };
    let err = format!("{:#}", keyless.check_exposure(exposed).unwrap_err());
    assert!(err.contains("person_index_key_file"), "{err}");
    let handoff_only = Config {
        roles: vec![Role::Handoff],
        ..keyless.clone()
    };
    assert!(handoff_only.check_exposure(exposed).is_err());
    let eligibility_only = Config {
        roles: vec![Role::Eligibility],
        ..keyless
    };
    assert!(eligibility_only.check_exposure(exposed).unwrap().is_empty());

    // --insecure turns the refusals into warnings.
    let insecure = Config {
        insecure: true,
        ..Config::default()
    };
    assert_eq!(insecure.check_exposure(exposed).unwrap().len(), 3);
}

#[test]
fn tls_settings_come_from_the_file_and_the_environment() {
    let c = load_str("[tls]\ncert = \"/etc/onecity/tls.pem\"\nkey = \"/etc/onecity/tls.key\"\n")
        .unwrap();
    assert!(c.tls.enabled());
    let env = env_of(&[
        ("ONECITY_TLS_CERT", "/env/c.pem"),
        ("ONECITY_TLS_KEY", "/env/k.pem"),
        ("ONECITY_TLS_CLIENT_CA", "/env/ca.pem"),
        ("ONECITY_INSECURE", "true"),
    ]);
    let c = Config::load_with(None, &env, Overrides::default()).unwrap();
    assert_eq!(c.tls.cert, Some(PathBuf::from("/env/c.pem")));
    assert_eq!(c.tls.client_ca, Some(PathBuf::from("/env/ca.pem")));
    assert!(c.insecure);
    assert!(load_str("[tls]\ncert = \"/c.pem\"\n").is_err());
    assert!(load_str("[tls]\nclient_ca = \"/ca.pem\"\n").is_err());
}

#[test]
fn a_service_token_names_its_roles_and_gets_their_grant() {
    use onecity_eventlog_grpc::Grant;
    let c = load_str(
        r#"
        [[tokens]]
        token = "intake-token"
        principal = "service"
        id = "intake-1"
        roles = ["intake"]

        [[tokens]]
        token = "workers-token"
        principal = "service"
        id = "workers"
        roles = ["eligibility", "handoff"]

        [[tokens]]
        token = "all-token"
        principal = "service"
        id = "everything"
        roles = ["all"]

        [[tokens]]
        token = "old-token"
        principal = "service"
        id = "old"
        "#,
    )
    .unwrap();
    let p = c.principals().unwrap();
    let intake = p.token_identity("intake-token").unwrap();
    assert_eq!(intake.principal.actor(), "service:intake-1");
    assert!(intake
        .grant
        .may_append(onecity_domain::events::APPLICATION_SUBMITTED));
    assert!(!intake
        .grant
        .may_append(onecity_domain::events::REFERRAL_DECIDED));
    let workers = p.token_identity("workers-token").unwrap();
    assert!(workers
        .grant
        .may_append(onecity_domain::events::REFERRAL_DECIDED));
    assert!(workers.grant.may_checkpoint("assessment-1of2"));
    assert!(!workers
        .grant
        .may_append(onecity_domain::events::APPLICATION_SUBMITTED));
    for token in ["all-token", "old-token"] {
        assert_eq!(
            *p.token_identity(token).unwrap().grant,
            Grant::All,
            "{token}"
        );
    }
}

#[test]
fn bad_roles_are_refused_naming_the_entry() {
    let cases = [
        (
            "principal = \"service\"\nid = \"s\"\nroles = []",
            "tokens[0] (service \"s\"): `roles` is empty",
        ),
        (
            "principal = \"service\"\nid = \"s\"\nroles = [\"log\"]",
            "role \"log\" writes nothing to the log",
        ),
        (
            "principal = \"admin\"\nid = \"a\"\nroles = [\"intake\"]",
            "`roles` applies to a service token only",
        ),
    ];
    for (entry, expected) in cases {
        let err = load_str(&format!("[[tokens]]\ntoken = \"tok-x\"\n{entry}\n")).unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains(expected), "{entry}: {err}");
        assert!(!err.contains("tok-x"), "token echoed: {err}");
    }
    let err = load_str(
        "[[tokens]]\ntoken = \"tok-x\"\nprincipal = \"service\"\nid = \"s\"\nroles = [\"decider\"]\n",
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("decider"), "{err:#}");
}
