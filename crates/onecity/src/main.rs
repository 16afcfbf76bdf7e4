//! `onecity`: run the services (`onecity serve`) or call them (`onecity submit`, ...).
//! Everything lives in the library so that tests exercise the same code.

// mimalloc rather than glibc malloc: the server allocates and frees many short-lived
// buffers (protobuf payloads, rule explanations), where glibc's malloc/free took a large
// share of the server's samples in `Screen` and during a rebuild replay
// (docs/performance.md).
// onecity-bench sets the same allocator so that it measures what this binary runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    onecity::cli::main()
}
