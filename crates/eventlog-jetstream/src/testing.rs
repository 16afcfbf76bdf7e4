//! Test support (feature `testing`): nats-server processes of the
//! test's own, and fresh JetStream logs on them for the conformance suite.
//!
//! Tests never use a server that happens to be running: each [`NatsServer`] is a child
//! process on a free loopback port with its storage in a temporary directory. It is
//! killed when dropped, and also when the test process dies in any way (a watchdog
//! shell holds a pipe from the test process and kills the server when the pipe closes),
//! which matters for servers kept in statics, whose destructors never run.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use onecity_eventlog::conformance::{Backend, BoxLog};

use crate::{JetStreamConfig, JetStreamLog};

/// Environment variable naming the nats-server binary to use instead of the one on PATH.
pub const BINARY_ENV: &str = "ONECITY_NATS_SERVER";

/// The test servers' `max_payload`: the default 1 MiB cannot hold an event with the
/// largest allowed payload (1 MiB) plus its envelope.
pub const TEST_MAX_PAYLOAD: &str = "8MB";

/// How long a starting server may take to accept clients.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A nats-server child process with JetStream, listening on a loopback port.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    child: Child,
    watchdog: Child,
    _watchdog_pipe: ChildStdin,
    port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts `nats-server` from PATH (or [`BINARY_ENV`]) on a free loopback port, with
    /// JetStream storing into a fresh temporary directory, and waits (bounded) until it
    /// accepts clients. The error says how to install nats-server when it is missing.
    pub fn start() -> Result<Self, String> {
        NatsServer::start_with("")
    }

    /// [`NatsServer::start`] with `extra` lines in the server's configuration file (an
    /// `authorization` block, a `tls` block).
    pub fn start_with(extra: &str) -> Result<Self, String> {
        let binary = find_binary()?;
        let mut last_error = String::new();
        // The port is free when we pick it but another process may take it before the
        // server binds; a few tries with fresh ports make that harmless.
        for _ in 0..5 {
            let mut server = NatsServer::launch(&binary, free_port()?, extra)?;
            match server.wait_ready() {
                Ok(()) => return Ok(server),
                Err(e) => last_error = e,
            }
        }
        Err(format!("nats-server did not start: {last_error}"))
    }

    /// Starts `nats-server` on the loopback `port` (one the test picked, e.g. to start a
    /// client before any server is up), and waits (bounded) until it accepts clients.
    pub fn start_on(port: u16) -> Result<Self, String> {
        let mut server = NatsServer::launch(&find_binary()?, port, "")?;
        server.wait_ready()?;
        Ok(server)
    }

    /// Starts a server on `port` with `extra` configuration, without waiting for it.
    fn launch(binary: &Path, port: u16, extra: &str) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("onecity-nats-")
            .tempdir()
            .map_err(|e| format!("temporary directory for nats-server: {e}"))?;
        let config = dir.path().join("nats.conf");
        std::fs::write(&config, format!("max_payload: {TEST_MAX_PAYLOAD}\n{extra}"))
            .map_err(|e| format!("write {}: {e}", config.display()))?;
        let (child, watchdog, pipe) = spawn(binary, dir.path(), port)?;
        Ok(NatsServer {
            binary: binary.to_path_buf(),
            child,
            watchdog,
            _watchdog_pipe: pipe,
            port,
            dir,
        })
    }

    /// Kills the server with SIGKILL (a crash, not a shutdown) and starts it again on
    /// the same port and storage, waiting until it accepts clients.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        let (child, watchdog, pipe) = spawn(&self.binary, self.dir.path(), self.port)?;
        self.child = child;
        self.watchdog = watchdog;
        self._watchdog_pipe = pipe;
        self.wait_ready()
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log file (useful when a test fails).
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    /// Polls until the server sends an `INFO` with JetStream on: no fixed sleep, a
    /// short growing pause between tries, and a deadline.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut pause = Duration::from_millis(5);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "nats-server exited with {status}; its log:\n{}",
                    self.log_tail()
                ));
            }
            match probe(self.port) {
                Ok(true) => return Ok(()),
                Ok(false) => {
                    return Err(format!(
                        "nats-server on port {} runs without jetstream",
                        self.port
                    ))
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!(
                    "nats-server on port {} not ready after {READY_TIMEOUT:?} ({e}); its log:\n{}",
                    self.port,
                    self.log_tail()
                ))
                }
                Err(_) => {}
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_file()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn stop(&mut self) {
        // The watchdog first, so it cannot fire at a recycled pid later.
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A JetStream cluster of nats-server child processes on loopback ports (client and
/// route ports picked free), each with its own temporary storage.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` servers routed to each other and waits until each accepts clients.
    /// JetStream needs a moment more to elect its meta leader: connect with retries.
    pub fn start(size: usize) -> Result<Self, String> {
        let binary = find_binary()?;
        let mut last_error = String::new();
        for _ in 0..3 {
            let ports = (0..size)
                .map(|_| Ok((free_port()?, free_port()?)))
                .collect::<Result<Vec<_>, String>>()?;
            let routes = ports
                .iter()
                .map(|(_, route)| format!("nats-route://127.0.0.1:{route}"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut nodes = Vec::with_capacity(size);
            for (i, (client, route)) in ports.iter().enumerate() {
                let extra = format!(
                    "server_name: n{i}\ncluster {{\n  name: onecity-test\n  listen: 127.0.0.1:{route}\n  routes: [{routes}]\n}}\n"
                );
                nodes.push(NatsServer::launch(&binary, *client, &extra)?);
            }
            match nodes.iter_mut().try_for_each(NatsServer::wait_ready) {
                Ok(()) => return Ok(NatsCluster { nodes }),
                Err(e) => last_error = e,
            }
        }
        Err(format!("nats cluster did not start: {last_error}"))
    }

    /// Every node's client URL, comma-separated (what `JetStreamConfig::url` takes).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// One node, e.g. to restart it.
    pub fn node_mut(&mut self, i: usize) -> &mut NatsServer {
        &mut self.nodes[i]
    }
}

/// Starts the server (config, storage and log in `dir`) and its watchdog.
fn spawn(binary: &Path, dir: &Path, port: u16) -> Result<(Child, Child, ChildStdin), String> {
    let child = Command::new(binary)
        .arg("-c")
        .arg(dir.join("nats.conf"))
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.join("store"))
        .arg("-l")
        .arg(dir.join("nats.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start {}: {e}", binary.display()))?;
    let (watchdog, pipe) = watchdog(child.id(), dir)?;
    Ok((child, watchdog, pipe))
}

/// A shell that waits for its stdin to close (the test process ended, however it
/// ended) and then kills the server and removes its directory.
fn watchdog(pid: u32, dir: &Path) -> Result<(Child, ChildStdin), String> {
    let script = format!(
        "read _; kill -9 {pid} 2>/dev/null; sleep 1; rm -rf '{}'",
        dir.display()
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start the nats-server watchdog: {e}"))?;
    let pipe = child
        .stdin
        .take()
        .ok_or("the nats-server watchdog has no stdin")?;
    Ok((child, pipe))
}

/// Connects, reads the greeting and reports whether JetStream is on.
fn probe(port: u16) -> std::io::Result<bool> {
    let addr = (Ipv4Addr::LOCALHOST, port).into();
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(250))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    if !line.starts_with("INFO ") {
        return Err(std::io::Error::other(format!(
            "unexpected greeting {line:?}"
        )));
    }
    let _ = (&stream).write_all(b"QUIT\r\n");
    Ok(line.contains("\"jetstream\":true"))
}

/// A loopback port free when asked (another process may take it before it is bound).
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("find a free loopback port: {e}"))
}

/// The nats-server binary: [`BINARY_ENV`], else the first `nats-server` on PATH, else
/// Debian's `/usr/sbin/nats-server` (not on PATH for non-root users).
pub fn find_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(BINARY_ENV) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "{BINARY_ENV}={} is not a file: point it at nats-server (2.9 or newer), \
                 or unset it and install nats-server with `apt-get install nats-server`",
                p.display()
            ))
        };
    }
    find_binary_in(
        &std::env::var_os("PATH").unwrap_or_default(),
        &[PathBuf::from("/usr/sbin")],
    )
}

fn find_binary_in(path: &std::ffi::OsStr, fallbacks: &[PathBuf]) -> Result<PathBuf, String> {
    std::env::split_paths(path)
        .chain(fallbacks.iter().cloned())
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "nats-server is not installed: the jetstream tests start their own nats-server \
             (2.9 or newer) and need the binary on PATH. Install it with \
             `apt-get install nats-server` (Debian/Ubuntu), or set ONECITY_NATS_SERVER to its path"
                .to_string()
        })
}

/// The server shared by every test of one test binary, started on first use. A missing
/// binary makes every test that needs it fail with the installation hint.
pub fn shared_server() -> &'static NatsServer {
    static SERVER: OnceLock<NatsServer> = OnceLock::new();
    SERVER.get_or_init(|| NatsServer::start().unwrap_or_else(|e| panic!("{e}")))
}

/// The three-node cluster shared by the R3 tests of one test binary, started on first use.
pub fn shared_cluster() -> &'static NatsCluster {
    static CLUSTER: OnceLock<NatsCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| NatsCluster::start(3).unwrap_or_else(|e| panic!("{e}")))
}

/// A prefix no other log on the shared server uses.
pub fn fresh_prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Fresh JetStream logs (R1), each under its own prefix on the [`shared_server`].
#[derive(Debug, Default, Clone, Copy)]
pub struct JetStreamBackend;

#[async_trait::async_trait]
impl Backend for JetStreamBackend {
    async fn fresh(&self) -> BoxLog {
        Arc::new(connect_shared(&fresh_prefix()).await)
    }
}

/// A log under `prefix` on the [`shared_server`] (R1).
pub async fn connect_shared(prefix: &str) -> JetStreamLog {
    // Starting the server blocks for a moment; keep that off the async workers.
    let url = tokio::task::spawn_blocking(|| shared_server().url())
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    JetStreamLog::connect(JetStreamConfig {
        url,
        prefix: prefix.to_owned(),
        replicas: 1,
        ..JetStreamConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("connect to the test nats-server: {e}"))
}

/// Fresh JetStream logs with three replicas (the production setting), each under its
/// own prefix on the [`shared_cluster`].
#[derive(Debug, Default, Clone, Copy)]
pub struct JetStreamClusterBackend;

#[async_trait::async_trait]
impl Backend for JetStreamClusterBackend {
    async fn fresh(&self) -> BoxLog {
        Arc::new(connect_shared_cluster(&fresh_prefix()).await)
    }
}

/// A log under `prefix` with three replicas on the [`shared_cluster`].
pub async fn connect_shared_cluster(prefix: &str) -> JetStreamLog {
    let url = tokio::task::spawn_blocking(|| shared_cluster().url())
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    let config = JetStreamConfig {
        url,
        prefix: prefix.to_owned(),
        replicas: 3,
        ..JetStreamConfig::default()
    };
    // Right after start the cluster is still electing its JetStream leaders.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match JetStreamLog::connect(config.clone()).await {
            Ok(log) => return log,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "cluster not ready yet");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("connect to the test nats cluster: {e}"),
        }
    }
}

/// Fresh JetStream lease buckets: each view is its own `JetStreamLog` (its own
/// connection, as another process would have), all under one fresh prefix, on the
/// [`shared_server`] (R1) or, with `cluster`, the [`shared_cluster`] (R3).
#[derive(Debug, Default, Clone, Copy)]
pub struct JetStreamLeaseBackend {
    /// Three replicas on the shared cluster instead of one on the shared server.
    pub cluster: bool,
}

#[async_trait::async_trait]
impl onecity_eventlog::lease_conformance::LeaseBackend for JetStreamLeaseBackend {
    async fn fresh(
        &self,
        timing: onecity_eventlog::leases::LeaseTiming,
        views: usize,
    ) -> Vec<Arc<dyn onecity_eventlog::leases::Leases>> {
        let prefix = fresh_prefix();
        let mut out: Vec<Arc<dyn onecity_eventlog::leases::Leases>> = Vec::new();
        for _ in 0..views {
            let log = if self.cluster {
                connect_shared_cluster(&prefix).await
            } else {
                connect_shared(&prefix).await
            };
            // The leases hold what they need of the log; the log itself may go.
            let leases = log
                .leases(timing)
                .await
                .unwrap_or_else(|e| panic!("lease bucket: {e}"));
            out.push(Arc::new(leases));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_says_how_to_install_it() {
        let empty = tempfile::tempdir().unwrap();
        let err = find_binary_in(empty.path().as_os_str(), &[]).unwrap_err();
        assert!(err.contains("apt-get install nats-server"), "{err}");
    }

    #[test]
    fn the_binary_is_found_on_path() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("nats-server");
        std::fs::write(&bin, "").unwrap();
        let path = std::env::join_paths([Path::new("/nonexistent"), dir.path()]).unwrap();
        assert_eq!(find_binary_in(&path, &[]).unwrap(), bin);
    }
}
