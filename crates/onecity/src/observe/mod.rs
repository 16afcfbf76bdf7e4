//! What an operator sees of `onecity serve`: Prometheus metrics on their own listener
//! ([`exposition`]), the per-RPC metrics and span of every call ([`rpc`]) and the log
//! format ([`logs`]). The library crates record through the `metrics` facade only; this
//! module installs the one recorder of the process. docs/operations.md lists every metric.

pub mod exposition;
pub mod logs;
pub mod rpc;
pub mod trace;

pub use exposition::{install, serve_metrics, Sources};
pub use logs::LogFormat;
pub use rpc::RpcLayer;
pub use trace::Traced;
