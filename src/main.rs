use std::process::ExitCode;

use clap::Parser;

/// mimalloc: the request path allocates small, short-lived buffers on several
/// threads, where glibc malloc spent about a tenth of the proxy's CPU time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Frees mimalloc's unused pages now (after a license store reload).
#[allow(
    unsafe_code,
    reason = "the crate's foreign calls: mimalloc's collect and purge delay"
)]
fn release_unused_memory() {
    // SAFETY: mi_collect only walks mimalloc's own heaps; any thread may call it.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// `mi_option_purge_delay` in the mimalloc (v3) that libmimalloc-sys 0.1.49 builds:
/// the 16th option of `mi_option_e` in its `mimalloc.h` (the crate's own constants
/// follow an older header). Only set when it reads as mimalloc's documented default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// mimalloc's default purge delay (ms).
const DEFAULT_PURGE_DELAY_MS: std::ffi::c_long = 10;

/// Purges freed pages at once (`true`) or after mimalloc's default delay.
#[allow(unsafe_code, reason = "mimalloc's option calls")]
fn release_eagerly(eagerly: bool) {
    static USUAL: std::sync::OnceLock<std::ffi::c_long> = std::sync::OnceLock::new();
    // SAFETY: mimalloc's option calls read and write one integer; any thread may call them.
    let usual =
        *USUAL.get_or_init(|| unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) });
    if usual != DEFAULT_PURGE_DELAY_MS {
        return; // Not the option expected, or set by MIMALLOC_PURGE_DELAY: left alone.
    }
    let delay = if eagerly { 0 } else { usual };
    // SAFETY: as above.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, delay) }
}

fn main() -> ExitCode {
    licgate::memory::set_release(licgate::memory::Release {
        now: release_unused_memory,
        eagerly: release_eagerly,
    });
    licgate::cli::run(licgate::cli::Cli::parse())
}
