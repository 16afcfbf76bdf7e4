//! Generated protobuf and gRPC code for `onecity.v1`. This crate holds no logic:
//! domain types live in `onecity-domain` and convert from these with `TryFrom`.

// Generated code does not follow our lints.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]
pub mod v1 {
    tonic::include_proto!("onecity.v1");
}

/// Encoded `FileDescriptorSet` of every onecity proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("onecity_descriptor");

pub use prost;
pub use prost_types;
pub use tonic;
pub use tonic_prost;
