//! Returning freed memory to the operating system after large rebuilds.
//!
//! Loading a store of many licenses allocates and frees far more than it keeps
//! (file contents, verification temporaries, the previous snapshot), much of it on
//! verifying threads that end when the load does. The binary installs its
//! allocator's calls here; the license manager calls [`release_unused`] after
//! verifying and after publishing a full snapshot, so the process's resident memory
//! reflects what it really keeps.

use std::sync::OnceLock;

/// The allocator's calls.
#[derive(Debug, Clone, Copy)]
pub struct Release {
    /// Gives free pages back now.
    pub now: fn(),
    /// Gives pages back as soon as they are free (`true`), or as the allocator
    /// usually does (`false`).
    pub eagerly: fn(bool),
}

static RELEASE: OnceLock<Release> = OnceLock::new();

/// Installs the allocator's calls (once; later calls are ignored).
pub fn set_release(release: Release) {
    let _ = RELEASE.set(release);
}

/// Gives freed memory back to the operating system now, if the allocator's calls are
/// installed, including the pages of threads that ended (which the allocator would
/// otherwise keep until its delayed purge, some 30 MB after verifying 100,000
/// licenses on two threads).
pub fn release_unused() {
    if let Some(release) = RELEASE.get() {
        (release.eagerly)(true);
        (release.now)();
        (release.eagerly)(false);
    }
}
