//! The authority's clock: Unix seconds. Debug builds (the tests') add the offset in
//! the file named by `LICGATE_TEST_CLOCK_OFFSET_FILE`, as the gateway's quota clock
//! does, so a test can move a running authority past a heartbeat timeout.

use crate::license::UnixTime;

/// Now, in Unix seconds.
pub fn now() -> UnixTime {
    crate::quota::clock::now()
}
