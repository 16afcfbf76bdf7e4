//! `onecity`: run the services (`onecity serve`) or call them (`onecity submit`, ...).
//! Everything lives in the library so that tests exercise the same code.

fn main() -> std::process::ExitCode {
    onecity::cli::main()
}
