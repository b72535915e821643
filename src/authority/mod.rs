//! `licgate authority`: the vendor's license server (issue 21, being built). So far:
//! license keys (`key`).

pub mod key;
