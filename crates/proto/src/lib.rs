//! Generated protobuf and gRPC code for `onecity.v1`. This crate holds no logic:
//! domain types live in `onecity-domain` and convert from these with `TryFrom`. The gRPC
//! clients and servers (and the tonic re-exports) need the `grpc` feature.

// Generated code does not follow our lints.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/onecity.v1.rs"));
}

/// Encoded `FileDescriptorSet` of every onecity proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/onecity_descriptor.bin"));

pub use prost;
pub use prost_types;
#[cfg(feature = "grpc")]
pub use tonic;
#[cfg(feature = "grpc")]
pub use tonic_prost;
