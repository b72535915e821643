//! Usage: the durable ledger of what every tenant did (per feature and hour: allowed,
//! refused by error code, limited by a quota, peak concurrency), read back as series
//! and reports, and exported as signed, chained usage reports for true-up.
//!
//! - [`recorder`]: the request path's side, a lock-free queue and the thread that
//!   sums and writes it;
//! - [`ledger`]: the rows and how they are written and pruned;
//! - [`query`]: reading periods back (hour, day, month);
//! - [`series`]: one tenant's dense series (the admin API, the usage page);
//! - [`advice`]: limits nearly reached, licensed features unused;
//! - [`report`]: signed usage reports and their verification.
//!
//! The ledger lives in the store's database ([`crate::database`]).

pub mod advice;
pub mod ledger;
pub mod query;
pub mod recorder;
pub mod report;
pub mod series;

pub use ledger::{Tally, NO_FEATURE};
pub use query::{Granularity, UsageQuery, UsageRecord};
pub use recorder::{RecorderSettings, UsageEvent, UsageRecorder};
