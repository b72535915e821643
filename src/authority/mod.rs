//! `licgate authority`: the vendor's license server. It issues license keys, counts
//! activations against each license's limit, renews tokens on signed heartbeats,
//! culls silent floating activations, revokes, and takes offline activations and
//! usage reports.
//!
//! - [`config`]: `authority.toml`, raw → validated;
//! - [`db`]: SQLite or PostgreSQL, one set of queries, embedded migrations;
//! - [`model`]: policies, licenses, activations, events;
//! - [`store`]: the operations, one transaction each, audited;
//! - [`key`]: license keys (`LG-…`, check character, stored as a hash);
//! - [`protocol`]: the gateway-facing JSON and its signatures;
//! - [`token`]: the license token of an activation;
//! - [`offline`]: request and response files for air-gapped installations;
//! - [`api`]: the HTTP API; [`server`]: `authority serve`;
//! - [`client`]: the vendor CLI's client of the admin API.

pub mod api;
pub mod attempts;
pub mod client;
pub mod clock;
pub mod config;
pub mod db;
pub mod error;
pub mod key;
pub mod metrics;
pub mod model;
pub mod offline;
pub mod protocol;
pub mod server;
pub mod store;
pub mod token;
