//! The deployment files parse: every Kubernetes manifest is valid YAML with the fields a
//! cluster needs (kinds, probes on grpc.health.v1), every systemd unit has its sections
//! and an ExecStart, and the local cluster script is valid bash.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

#[test]
fn kubernetes_manifests_parse_and_probe_grpc_health() {
    let manifests = files(&deploy().join("k8s"), "yaml");
    assert!(manifests.len() >= 4, "{manifests:?}");
    let mut kinds = Vec::new();
    for path in manifests {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let value: serde_norway::Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let kind = value["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: no kind", path.display()))
                .to_owned();
            assert!(
                value["apiVersion"].is_string(),
                "{}: no apiVersion",
                path.display()
            );
            assert!(
                value["metadata"]["name"].is_string(),
                "{}: no name",
                path.display()
            );
            if kind == "Deployment" || kind == "StatefulSet" {
                let containers = value["spec"]["template"]["spec"]["containers"]
                    .as_sequence()
                    .unwrap();
                for c in containers {
                    let image = c["image"].as_str().unwrap();
                    if image.starts_with("onecity") {
                        // The kubelet's gRPC probe speaks no TLS: `onecity health` over
                        // the pod's TLS listener.
                        for probe in ["readinessProbe", "livenessProbe"] {
                            let command =
                                serde_norway::to_string(&c[probe]["exec"]["command"]).unwrap();
                            assert!(
                                command.contains("health") && command.contains("https://"),
                                "{}: {probe} checks health over tls: {command}",
                                path.display()
                            );
                        }
                        let args = serde_norway::to_string(&c["args"]).unwrap();
                        assert!(
                            args.contains("--role"),
                            "{}: each workload runs one role",
                            path.display()
                        );
                        // Worker pods share partitions through leases: no ordinals, so
                        // no StatefulSet and no --partition.
                        if args.contains("eligibility") || args.contains("handoff") {
                            assert_eq!(kind, "Deployment", "{}", path.display());
                            assert!(!args.contains("--partition"), "{}", path.display());
                        }
                    }
                }
            }
            if kind == "Secret" {
                secret_is_not_usable_as_is(&path, &value);
            }
            if kind == "ConfigMap" && value["metadata"]["name"] == "nats-config" {
                nats_requires_login_and_tls(&path, value["data"]["nats.conf"].as_str().unwrap());
            }
            if kind == "ConfigMap" && value["metadata"]["name"] == "onecity-env" {
                let log = value["data"]["ONECITY_LOG"].as_str().unwrap();
                assert!(
                    log.starts_with("jetstream:tls://"),
                    "{}: onecity reaches NATS over tls: {log}",
                    path.display()
                );
            }
            if kind == "NetworkPolicy" && value["metadata"]["name"] == "nats-admits-onecity-only" {
                let from = serde_norway::to_string(&value["spec"]["ingress"]).unwrap();
                assert!(
                    value["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "nats"
                        && from.contains("app.kubernetes.io/part-of: onecity")
                        && !from.contains("namespaceSelector"),
                    "{}: only onecity pods reach nats: {from}",
                    path.display()
                );
            }
            kinds.push(kind);
        }
    }
    for k in [
        "Deployment",
        "StatefulSet",
        "Service",
        "ConfigMap",
        "Secret",
        "NetworkPolicy",
    ] {
        assert!(kinds.iter().any(|x| x == k), "no {k} among {kinds:?}");
    }
}

/// A NATS server configuration that requires every client to log in (an `authorization`
/// block with a user whose password is not written in it) and to speak TLS.
fn nats_requires_login_and_tls(path: &Path, conf: &str) {
    assert!(
        conf.contains("authorization") && conf.contains("user:"),
        "{}: nats requires a login: {conf}",
        path.display()
    );
    assert!(
        !conf
            .lines()
            .any(|l| l.trim_start().starts_with("password:") && !l.contains('$')),
        "{}: the nats password is not written in the config",
        path.display()
    );
    assert!(
        conf.contains("tls {") && conf.contains("cert_file"),
        "{}: nats requires tls: {conf}",
        path.display()
    );
}

/// Every config file a shipped Secret holds is refused by onecity as it is: its token
/// entries hold no usable token (no token in clear, no hash that is one), and it asks for TLS.
fn secret_is_not_usable_as_is(path: &Path, secret: &serde_norway::Value) {
    let data = secret["stringData"]
        .as_mapping()
        .unwrap_or_else(|| panic!("{}: a Secret with stringData", path.display()));
    for (name, value) in data {
        let text = value.as_str().unwrap();
        assert!(
            !text.lines().any(|l| l.trim_start().starts_with("token =")),
            "{}: {name:?} holds a token in clear",
            path.display()
        );
        let config = onecity::config::Config::from_toml_str(text)
            .unwrap_or_else(|e| panic!("{}: {name:?}: {e}", path.display()));
        assert!(
            config.tls.enabled(),
            "{}: {name:?} without tls",
            path.display()
        );
        let err = config
            .validate()
            .expect_err("a shipped Secret's config must not start as is");
        assert!(
            format!("{err:#}").contains("token_sha256"),
            "{}: {name:?}: {err:#}",
            path.display()
        );
    }
}

/// A minimal systemd unit parser: sections, `Key=Value` lines, comments.
fn parse_unit(text: &str) -> Result<BTreeMap<String, BTreeMap<String, String>>, String> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section: Option<String> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.to_owned());
            out.entry(name.to_owned()).or_default();
            continue;
        }
        let s = section
            .as_ref()
            .ok_or_else(|| format!("line {}: key outside a section", n + 1))?;
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: not Key=Value: {raw}", n + 1))?;
        if k.trim().is_empty() || k.contains(char::is_whitespace) {
            return Err(format!("line {}: bad key {k:?}", n + 1));
        }
        out.get_mut(s)
            .unwrap()
            .insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(out)
}

#[test]
fn systemd_units_parse() {
    let units = files(&deploy().join("systemd"), "service");
    assert!(units.len() >= 5);
    for path in units {
        let unit = parse_unit(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for section in ["Unit", "Service", "Install"] {
            assert!(
                unit.contains_key(section),
                "{}: no [{section}]",
                path.display()
            );
        }
        let exec = &unit["Service"]["ExecStart"];
        assert!(
            exec.starts_with('/'),
            "{}: ExecStart needs an absolute path",
            path.display()
        );
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("onecity") {
            assert!(exec.contains(" serve"), "{name}");
        }
        if name.contains('@') && name.starts_with("onecity") {
            // Instances share the partitions through leases: the instance name is no
            // partition index.
            assert!(!exec.contains("%i"), "{name}: instances need no ordinal");
        }
    }
    assert!(
        parse_unit("[Service]\nExecStart /bin/true\n").is_err(),
        "the parser rejects what systemd rejects"
    );
}

#[test]
fn nats_configs_of_systemd_and_the_local_cluster_require_a_login() {
    let example = std::fs::read_to_string(deploy().join("systemd/nats-node.conf.example")).unwrap();
    assert!(example.contains("authorization") && example.contains("tls {"));
    let script = std::fs::read_to_string(deploy().join("local/cluster.sh")).unwrap();
    assert!(
        script.contains("authorization {") && script.contains("ONECITY_NATS_PASSWORD_FILE"),
        "cluster.sh runs nats with a login and gives the roles the password file"
    );
}

#[test]
fn local_cluster_script_is_valid_bash() {
    let script = deploy().join("local/cluster.sh");
    let status = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(status.success());
}

/// The alert rules and the Grafana dashboard parse, and every onecity metric they query
/// is one docs/operations.md lists (a renamed metric cannot leave a silent alert behind).
#[test]
fn observability_files_parse_and_query_documented_metrics() {
    let dir = deploy().join("observability");
    let operations = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md"),
    )
    .unwrap();
    let metric = regex::Regex::new(r"onecity_[a-z_]+").unwrap();
    let mut queried = Vec::new();
    let alerts = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    let rules: serde_norway::Value = serde_norway::from_str(&alerts).unwrap();
    let groups = rules["groups"].as_sequence().expect("groups");
    for rule in groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap())
    {
        assert!(rule["alert"].as_str().is_some(), "{rule:?}");
        queried.push(rule["expr"].as_str().expect("expr").to_owned());
    }
    let dashboard = std::fs::read_to_string(dir.join("grafana-dashboard.json")).unwrap();
    let dashboard: serde_norway::Value = serde_norway::from_str(&dashboard).unwrap();
    for panel in dashboard["panels"].as_sequence().expect("panels") {
        for target in panel["targets"].as_sequence().expect("targets") {
            queried.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    assert!(queried.len() > 10);
    for expr in &queried {
        for m in metric.find_iter(expr) {
            let name = m.as_str();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            assert!(
                operations.contains(&format!("`{base}`")),
                "{base} (in {expr}) is not in docs/operations.md"
            );
        }
    }
}
