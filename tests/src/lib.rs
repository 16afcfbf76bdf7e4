//! The one set of helpers of onecity's black-box tests: this package's tests over real gRPC
//! and the tests in crates/onecity/tests that spawn the `onecity` binary (a dev-dependency
//! there). A server on a loopback port with a temporary data dir, authenticated clients,
//! household fixtures, reading the whole log, and counting what it routed.

mod client;
mod faulty;
mod fixtures;
mod pki;
mod routed;
mod server;

pub use client::{
    admin, assert_nothing_identifying, bearer, eligibility, handoff, intake, log, read_whole,
    referral, wait_handed_off, watched, whole_log, AdminClient, Authed, Bearer, EligibilityClient,
    HandoffClient, IntakeClient, LogClient,
};
pub use faulty::FaultyLog;
pub use fixtures::{
    application, decide, sample_application, submission, today, token_of, tokens, valid_id_number,
    with_ids,
};
pub use pki::{CertFiles, Pki};
pub use routed::Routed;
pub use server::{ConsoleServer, TestServer};
