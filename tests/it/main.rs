//! The integration tests, in one binary (one link instead of one per file). Each
//! module starts the real gateway, upstreams and servers on loopback ports.
//! `tests/no_alloc.rs` stays apart: it installs a counting global allocator.

mod common;

mod authority;
mod browser;
mod bypass;
mod cli;
mod deploy;
mod e2e_django;
mod e2e_odoo;
mod enforce;
mod fuzz_corpus;
mod hardening;
mod license;
mod lifecycle;
mod link;
mod operations;
mod prometheus;
mod proxy;
mod quota;
mod redis_quota;
mod restrictions;
mod seats;
mod tls_upstream;
mod usage;
