//! `--log` / `log =`: which event log backend a process uses.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::bail;
use serde::{Deserialize, Serialize};

/// Every backend form `--log` accepts, with its options.
const FORMS: &str = "\
Backends:
  sled:PATH
      the embedded log in directory PATH; one process at a time may open it
  remote:http://HOST:PORT, remote:https://HOST:PORT
      the EventLogService of the onecity process that owns the store (its `log` role),
      called with the log token (ONECITY_LOG_TOKEN)
  jetstream:nats://HOST:PORT[,nats://HOST:PORT...][?replicas=N&prefix=NAME]
      a NATS JetStream cluster; replicas 1 to 5 (default 3, the production setting;
      1 for development), NAME prefixes the log's streams and buckets (default onecity);
      tls://HOST:PORT requires TLS; credentials and the servers' CA come from [nats] in
      the config (or user:password@ / token@ in the URL, for development)";

/// The `--help` text of a `--log` option: `head` (what the option is for), then every
/// backend with its options, so that each command lists them all alike.
pub fn log_spec_help(head: &str) -> String {
    format!("{head}\n\n{FORMS}")
}

/// Event log backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogSpec {
    /// The embedded sled log in this directory; only one process may open it.
    Sled(PathBuf),
    /// The `EventLogService` of the onecity process that owns the store, e.g.
    /// `http://127.0.0.1:50051`.
    Remote(String),
    /// A NATS JetStream log: `jetstream:nats://A:4222,nats://B:4222[?replicas=3&prefix=onecity]`.
    JetStream {
        /// Server URLs, comma-separated.
        urls: String,
        /// Stream replicas (default 3: the production setting; 1 for development).
        replicas: usize,
        /// Name prefix of the log's streams and buckets (default `onecity`).
        prefix: String,
    },
}

impl FromStr for LogSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let expected = "expected sled:PATH, remote:http://HOST:PORT or jetstream:nats://HOST:PORT[,...][?replicas=N&prefix=NAME]";
        // Messages show the spec without the credentials a NATS URL may hold.
        let shown = onecity_eventlog_jetstream::redact_url(s);
        let Some((scheme, rest)) = s.split_once(':') else {
            bail!("log backend {shown:?}: {expected}");
        };
        match scheme {
            "sled" if !rest.is_empty() => Ok(LogSpec::Sled(PathBuf::from(rest))),
            "sled" => bail!("log backend {shown:?}: empty path; {expected}"),
            "remote" => {
                let uri: tonic::transport::Uri = rest
                    .parse()
                    .map_err(|e| anyhow::anyhow!("log backend {shown:?}: {e}; {expected}"))?;
                let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
                let host_ok = uri.host().is_some_and(|h| !h.is_empty());
                let path_ok = matches!(uri.path(), "" | "/") && uri.query().is_none();
                if !(scheme_ok && host_ok && path_ok) {
                    bail!("log backend {shown:?}: {expected}");
                }
                Ok(LogSpec::Remote(rest.trim_end_matches('/').to_owned()))
            }
            "jetstream" => {
                let (urls, query) = rest.split_once('?').unwrap_or((rest, ""));
                let nats_url = |u: &str| {
                    ["nats://", "tls://"]
                        .iter()
                        .any(|scheme| u.starts_with(scheme) && u.len() > scheme.len())
                };
                if urls.is_empty() || !urls.split(',').all(nats_url) {
                    bail!("log backend {shown:?}: {expected}");
                }
                let mut replicas = 3;
                let mut prefix = "onecity".to_owned();
                for kv in query.split('&').filter(|kv| !kv.is_empty()) {
                    match kv.split_once('=') {
                        Some(("replicas", n)) => {
                            replicas = n.parse().ok().filter(|n| (1..=5).contains(n)).ok_or_else(
                                || {
                                    anyhow::anyhow!(
                                        "log backend {shown:?}: replicas must be 1 to 5"
                                    )
                                },
                            )?;
                        }
                        Some(("prefix", p)) if !p.is_empty() => prefix = p.to_owned(),
                        _ => bail!("log backend {shown:?}: unknown option {kv:?}; {expected}"),
                    }
                }
                Ok(LogSpec::JetStream {
                    urls: urls.to_owned(),
                    replicas,
                    prefix,
                })
            }
            _ => bail!("log backend {shown:?}: unknown kind {scheme:?}; {expected}"),
        }
    }
}

impl LogSpec {
    /// The spec without the credentials a NATS URL may hold, for showing.
    pub fn redacted(&self) -> LogSpec {
        match self {
            LogSpec::JetStream {
                urls,
                replicas,
                prefix,
            } => LogSpec::JetStream {
                urls: onecity_eventlog_jetstream::redact_url(urls),
                replicas: *replicas,
                prefix: prefix.clone(),
            },
            other => other.clone(),
        }
    }
}

impl fmt::Display for LogSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogSpec::Sled(path) => write!(f, "sled:{}", path.display()),
            LogSpec::Remote(url) => write!(f, "remote:{url}"),
            LogSpec::JetStream {
                urls,
                replicas,
                prefix,
            } => {
                write!(f, "jetstream:{urls}?replicas={replicas}&prefix={prefix}")
            }
        }
    }
}

impl Serialize for LogSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LogSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e: anyhow::Error| serde::de::Error::custom(e))
    }
}
