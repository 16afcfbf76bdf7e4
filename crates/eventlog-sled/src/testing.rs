//! Test support (feature `testing`): fresh sled logs in temporary directories, as
//! conformance backends.

use std::sync::Arc;

use onecity_eventlog::conformance::{Backend, BoxLog, Owning};

use crate::{SledConfig, SledLog};

/// A sled log with `config` in a temporary directory of its own.
fn fresh_sled(config: SledConfig) -> BoxLog {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = SledLog::open(dir.path(), config).expect("open sled log");
    Arc::new(Owning::new(Arc::new(log), dir))
}

/// Fresh sled logs, each in its own temporary directory.
#[derive(Debug, Default)]
pub struct SledBackend;

#[async_trait::async_trait]
impl Backend for SledBackend {
    async fn fresh(&self) -> BoxLog {
        fresh_sled(SledConfig::default())
    }
}

/// Fresh sled logs that write their commit-id index to a run file every few commits, so
/// that every promise is also checked while lookups are served by run files and merges
/// run behind the writer (the default run size is far beyond what any conformance check
/// writes).
#[derive(Debug, Default)]
pub struct SledTinyRunsBackend;

#[async_trait::async_trait]
impl Backend for SledTinyRunsBackend {
    async fn fresh(&self) -> BoxLog {
        fresh_sled(SledConfig {
            commit_index_flush: 4,
            ..SledConfig::default()
        })
    }
}
