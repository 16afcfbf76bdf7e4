//! The conformance suite against the sled backend (as configured by default, and with a
//! commit-id index that lives in run files after a few commits) and the remote (gRPC) backend.

mod sled {
    onecity_eventlog::conformance_suite!(onecity_eventlog::conformance::SledBackend);
}

mod sled_tiny_runs {
    onecity_eventlog::conformance_suite!(onecity_eventlog::conformance::SledTinyRunsBackend);
}

mod remote {
    onecity_eventlog::conformance_suite!(onecity_eventlog::conformance::RemoteBackend);
}
