//! Deterministic cost of one `Screen`, for `valgrind --tool=callgrind` (instruction counts
//! repeat exactly, on a busy machine too; the bench's ops/s do not).
//!
//! Each iteration does what the server does for a `Screen` outside h2/tonic framing (decode
//! the request, the `EligibilityService` handler, encode the response) and, separately, what
//! the bench client does (encode the request, decode the response), on the bench's own
//! households (same generator, same seed), cycling through them.
//!
//! ```text
//! cargo build --release -p onecity-bench --example screen_cost
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!     --toggle-collect='screen_cost::server*' target/release/examples/screen_cost basic 4096
//! ```
//!
//! Collected instructions ÷ iterations = instructions per `Screen` on the server side
//! (`--toggle-collect='screen_cost::client*'` for the client side). `golden` prints a
//! digest of every FULL response and every BASIC response of the pool, so a change that
//! must not alter results can be checked against the digest from before it.

#![allow(missing_docs)]

use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::sync::Arc;

use onecity_assessment::grpc::EligibilityGrpc;
use onecity_assessment::Screener;
use onecity_domain::{DistrictCode, Principal};
use onecity_eligibility::{Catalogue, PolicyBook};
use onecity_proto::prost::Message as _;
use onecity_proto::v1 as pb;
use pb::eligibility_service_server::EligibilityService as _;

#[path = "../src/household.rs"]
#[allow(dead_code)]
mod household;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The bench's seed (`HOUSEHOLD_SEED` in main.rs).
const SEED: u64 = 0x006f_6e65_6369_7479;

fn terminal() -> Principal {
    Principal::Terminal {
        id: "T-120103-01".into(),
        district: DistrictCode::parse("120103").expect("Hexi is a district"),
        street_office: "demo".into(),
    }
}

/// The server's share: decode, handle, encode.
#[inline(never)]
fn server_screen(grpc: &EligibilityGrpc, principal: &Principal, body: &[u8]) -> Vec<u8> {
    let req = pb::ScreenRequest::decode(body).expect("encoded by us");
    let mut req = tonic::Request::new(req);
    req.extensions_mut().insert(principal.clone());
    let resp = futures::executor::block_on(grpc.screen(req)).expect("a valid household");
    resp.into_inner().encode_to_vec()
}

/// The client's share: build and encode the request from the pool, decode the response.
#[inline(never)]
fn client_screen(application: &pb::Application, view: pb::ScreenView, resp: &[u8]) -> usize {
    let req = pb::ScreenRequest {
        application: Some(application.clone()),
        view: view as i32,
    };
    let body = req.encode_to_vec();
    let decoded = pb::ScreenResponse::decode(resp).expect("encoded by the server");
    body.len() + decoded.assessments.len()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "basic".into());
    let iterations: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(4096);
    let pool = household::Pool::generate(4096, SEED).expect("households generate");
    let screener = Screener::new(
        Arc::new(PolicyBook::embedded_default()),
        Arc::new(Catalogue::embedded()),
    );
    let grpc = EligibilityGrpc::new(screener);
    let principal = terminal();
    let request = |h: &household::Household, view: pb::ScreenView| {
        pb::ScreenRequest {
            application: Some(h.application.clone()),
            view: view as i32,
        }
        .encode_to_vec()
    };

    if mode == "golden" {
        for view in [pb::ScreenView::Full, pb::ScreenView::Basic] {
            let mut hasher = DefaultHasher::new();
            let mut bytes = 0;
            for h in &pool.households {
                let resp = server_screen(&grpc, &principal, &request(h, view));
                bytes += resp.len();
                resp.hash(&mut hasher);
            }
            println!(
                "{view:?}: {} responses, {bytes} bytes, digest {:016x}",
                pool.households.len(),
                hasher.finish()
            );
        }
        return;
    }

    let view = match mode.as_str() {
        "full" => pb::ScreenView::Full,
        _ => pb::ScreenView::Unspecified,
    };
    let bodies: Vec<Vec<u8>> = pool.households.iter().map(|h| request(h, view)).collect();
    let mut total = 0usize;
    for i in 0..iterations {
        let n = i % bodies.len();
        let resp = server_screen(&grpc, &principal, &bodies[n]);
        total += client_screen(&pool.households[n].application, view, &resp);
        total += resp.len();
    }
    println!("{mode}: {iterations} screens, {total} bytes");
}
