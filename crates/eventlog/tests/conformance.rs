//! The conformance suite against the in-memory backend. Each backend crate runs the same
//! suite against its own backend.

onecity_eventlog::conformance_suite!(onecity_eventlog::conformance::MemoryBackend);
