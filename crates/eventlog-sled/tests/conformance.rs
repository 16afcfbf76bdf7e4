//! The conformance suite against the sled backend, as configured by default and with a
//! commit-id index that lives in run files after a few commits.

mod sled {
    onecity_eventlog::conformance_suite!(onecity_eventlog_sled::testing::SledBackend);
}

mod sled_tiny_runs {
    onecity_eventlog::conformance_suite!(onecity_eventlog_sled::testing::SledTinyRunsBackend);
}
