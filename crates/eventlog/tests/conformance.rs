//! The conformance suite against the sled backend and the remote (gRPC) backend.

mod sled {
    onecity_eventlog::conformance_suite!(onecity_eventlog::conformance::SledBackend);
}

mod remote {
    onecity_eventlog::conformance_suite!(onecity_eventlog::conformance::RemoteBackend);
}
