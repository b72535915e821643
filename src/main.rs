use std::process::ExitCode;

use clap::Parser;

/// mimalloc: the request path allocates small, short-lived buffers on several
/// threads, where glibc malloc spent about a tenth of the proxy's CPU time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    licgate::cli::run(licgate::cli::Cli::parse())
}
