//! licgate: a license app gateway built on pingora.
//!
//! The binary (`src/main.rs`) only parses the command line and calls [`cli::run`].
//! Modules, one concern each:
//! - [`config`]: the TOML file → raw serde mirror → validated [`config::Config`];
//! - [`proxy`]: the pingora `ProxyHttp` implementation and header hygiene;
//! - [`quota`]: rate quotas and concurrency leases from the license;
//! - [`request_body`]: reading request bodies within a size limit;
//! - [`response`]: every locally generated response (JSON errors, pages, redirects);
//! - [`pages`]: the HTML pages shown to browsers;
//! - [`policy`]: path normalization (and, with app, the decision function);
//! - [`admin`]: the operators' listener (`/healthz`, `/readyz`, `/metrics`, `/admin/v1/`);
//! - [`metrics`]: every Prometheus metric;
//! - [`memory`]: giving freed memory back after large rebuilds;
//! - [`reload`]: live reload of the configuration and the license store;
//! - [`license`]: license tokens, verification, status, store and snapshot;
//! - [`link`]: the gateway's side of the license authority (activation by key, heartbeats);
//! - [`lifecycle`]: readiness, in-flight accounting, signals and draining;
//! - [`server`]: assembling and running the pingora server;
//! - [`demo`]: the demo upstream app and `licgate demo`;
//! - [`sharded`]: the sharded name → value map behind license snapshots and tenant tables;
//! - [`throttle`]: rate limiting of repetitive log lines;
//! - [`cli`]: the subcommands.

mod access_log;
mod admin;
mod app;
pub mod authority;
pub mod background;
mod calendar;
pub mod cli;
pub mod config;
mod connection;
pub mod database;
pub mod demo;
mod forwarding;
pub mod fuzzing;
pub mod license;
pub mod lifecycle;
pub mod link;
mod logging;
pub mod memory;
pub mod metrics;
mod pages;
mod periodic;
pub mod policy;
mod proxy;
pub mod quota;
mod reload;
mod request_body;
mod request_parts;
mod response;
pub mod restrictions;
pub mod seats;
mod server;
pub mod sharded;
pub mod tenants;
mod throttle;
pub mod usage;
