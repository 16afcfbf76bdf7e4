//! The lease conformance suite against the in-process leases (the embedded and in-memory
//! logs). The JetStream backend runs the same suite against its KV bucket.
//!
//! `cargo test -p onecity-eventlog --test lease_conformance`

onecity_eventlog::lease_conformance_suite!(onecity_eventlog::lease_conformance::MemoryLeaseBackend);
