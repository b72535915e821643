//! Returning freed memory to the operating system after large rebuilds.
//!
//! Loading a store of many licenses allocates and frees far more than it keeps
//! (file contents, verification temporaries, the previous snapshot). The binary
//! installs its allocator's "give back free pages" call here; the license manager
//! calls [`release_unused`] after publishing each snapshot so the process's resident memory
//! reflects what it really keeps.

use std::sync::OnceLock;

static RELEASE: OnceLock<fn()> = OnceLock::new();

/// Installs the allocator's release function (once; later calls are ignored).
pub fn set_release(release: fn()) {
    let _ = RELEASE.set(release);
}

/// Gives freed memory back to the operating system, if a release function is installed.
pub fn release_unused() {
    if let Some(release) = RELEASE.get() {
        release();
    }
}
