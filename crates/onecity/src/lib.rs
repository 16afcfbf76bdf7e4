//! The `onecity` binary as a library, so integration tests can start the server and call the
//! same configuration, authentication and CLI code the binary uses.
//!
//! - [`config`]: layered configuration (defaults, TOML file, `ONECITY_*` env, flags) and tokens.
//! - [`admin`]: the `AdminService` (quarantined events and their retry).
//! - [`auth`]: the bearer-token interceptor that turns a token into a `Principal`.
//! - [`server`]: every service in one process (`onecity serve`).
//! - [`late`]: a routed service set once the log is open (`UNAVAILABLE` until then).
//! - [`health`]: the `grpc.health.v1` statuses that tell the truth, and worker supervision.
//! - [`console`]: the browser console, a gRPC client of this server over loopback.
//! - [`cli`]: the command line (`serve` and the client commands for people).
//! - [`json`]: the proto3 JSON mapping used by the CLI.
//! - [`migrate`]: `onecity log export | import | checksum`.
//! - [`observe`]: Prometheus metrics, the per-RPC layer and the log format.

pub mod admin;
pub mod auth;
pub mod cli;
pub mod config;
pub mod console;
pub mod health;
pub mod json;
pub mod late;
pub mod migrate;
pub mod observe;
pub mod ownership;
pub mod server;
pub mod tls;
