use std::process::ExitCode;

use clap::Parser;

/// mimalloc: the request path allocates small, short-lived buffers on several
/// threads, where glibc malloc spent about a tenth of the proxy's CPU time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Frees mimalloc's unused pages now (after a license store reload).
#[allow(
    unsafe_code,
    reason = "the crate's one foreign call: mimalloc's collect"
)]
fn release_unused_memory() {
    // SAFETY: mi_collect only walks mimalloc's own heaps; any thread may call it.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

fn main() -> ExitCode {
    licgate::memory::set_release(release_unused_memory);
    licgate::cli::run(licgate::cli::Cli::parse())
}
