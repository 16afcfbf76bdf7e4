//! Compiles `proto/` with protox (a pure-Rust protobuf compiler), so a fresh machine
//! needs no system `protoc` for `cargo build`.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "onecity/v1/admin.proto",
        "onecity/v1/application.proto",
        "onecity/v1/eligibility.proto",
        "onecity/v1/events.proto",
        "onecity/v1/eventlog.proto",
        "onecity/v1/handoff.proto",
        "onecity/v1/intake.proto",
        "onecity/v1/monitoring.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // compile_fds does not write the descriptor set itself (only the protoc path does),
    // so write it for server reflection here.
    std::fs::write(out.join("onecity_descriptor.bin"), fds.encode_to_vec())?;
    // Clients and servers only with the `grpc` feature: the messages alone need no tonic,
    // not even to build (the log contract's dependency tree holds no tonic at all).
    // The rules build their inputs as a BTreeMap: the same map type here lets the
    // domain -> proto conversion move it instead of rehashing every key into a HashMap,
    // and encodes an assessment's inputs in one deterministic order.
    let btree = ".onecity.v1.RuleResult.inputs";
    #[cfg(feature = "grpc")]
    tonic_prost_build::configure()
        .btree_map(btree)
        .compile_fds(fds)?;
    #[cfg(not(feature = "grpc"))]
    prost_build::Config::new()
        .btree_map([btree])
        .compile_fds(fds)?;
    Ok(())
}
