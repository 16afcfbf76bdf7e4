//! `onecity serve`: load the configuration, bind, and run the server until a signal.

use anyhow::Context as _;

use crate::config::Config;

/// Runs `onecity serve` with `config` (its flags applied) until a signal.
pub(super) async fn serve(config: Config) -> anyhow::Result<()> {
    // The demo-token warning is the server's (`Config::uses_demo_tokens`), so that tests
    // starting the server without this CLI see it too.
    if config.tokens.is_empty() {
        tracing::warn!(
            "no tokens configured: every call except health and reflection will be refused"
        );
    }
    // Signal handlers go in before anything else so that a SIGTERM during start-up already
    // means "shut down gracefully" rather than the default immediate exit.
    let shutdown = shutdown_signal()?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("listen on {}", config.addr))?;
    let local = listener.local_addr().context("local address")?;
    tracing::info!(
        addr = %local,
        log = %config.log_spec().redacted(),
        policy_file = ?config.policy_file,
        catalogue_file = ?config.catalogue_file,
        tokens = config.tokens.len(),
        "configuration loaded"
    );
    crate::server::run(listener, config, shutdown).await
}

/// Resolves on the first Ctrl-C (SIGINT) or SIGTERM. A second signal exits at once, for when
/// a graceful shutdown hangs.
pub fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
        let mut terminate = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
        Ok(async move {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            };
            tracing::info!(
                signal = name,
                "shutting down gracefully; send the signal again to exit at once"
            );
            tokio::spawn(async move {
                tokio::select! {
                    _ = interrupt.recv() => {},
                    _ = terminate.recv() => {},
                }
                tracing::warn!("second signal: exiting without a graceful shutdown");
                std::process::exit(130);
            });
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!(signal = "ctrl-c", "shutting down gracefully");
            } else {
                std::future::pending::<()>().await;
            }
        })
    }
}
