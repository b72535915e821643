//! The authority's operations on its database, each one transaction: what it reads,
//! what it may change, the audit events it appends and the refusals it answers with.
//!
//! - [`policies`] — plans;
//! - [`licenses`] — keys, statuses, expiry;
//! - [`activations`] — slots, heartbeats, culling, offline activations;
//! - [`usage`] — received usage reports;
//! - [`events`] — the append-only audit.

pub mod activations;
pub mod events;
pub mod licenses;
pub mod policies;
pub mod usage;

use sqlx::any::AnyRow;
use sqlx::Row as _;

use super::config::PolicyDefaults;
use super::db::Db;
use super::error::Refusal;

/// The database with the configured policy defaults.
#[derive(Clone)]
pub struct Store {
    pub(crate) db: Db,
    pub(crate) defaults: PolicyDefaults,
}

impl Store {
    pub fn new(db: Db, defaults: PolicyDefaults) -> Store {
        Store { db, defaults }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }
}

/// A random identifier `<prefix>_<26 Crockford base32 characters>` (130 bits).
pub(crate) fn new_id(prefix: &str) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let mut bytes = [0u8; 26];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("system randomness available");
    let mut id = String::with_capacity(prefix.len() + 27);
    id.push_str(prefix);
    id.push('_');
    id.extend(bytes.iter().map(|b| ALPHABET[usize::from(b & 31)] as char));
    id
}

/// Column `name` of `row` as text.
pub(crate) fn text(row: &AnyRow, name: &str) -> Result<String, sqlx::Error> {
    row.try_get::<String, _>(name)
}

/// Column `name` of `row` as optional text.
pub(crate) fn opt_text(row: &AnyRow, name: &str) -> Result<Option<String>, sqlx::Error> {
    row.try_get::<Option<String>, _>(name)
}

/// Column `name` of `row` as an integer.
pub(crate) fn int(row: &AnyRow, name: &str) -> Result<i64, sqlx::Error> {
    row.try_get::<i64, _>(name)
}

/// Column `name` of `row` as an optional integer.
pub(crate) fn opt_int(row: &AnyRow, name: &str) -> Result<Option<i64>, sqlx::Error> {
    row.try_get::<Option<i64>, _>(name)
}

/// Column `name` of `row`, JSON text decoded into `T`.
pub(crate) fn json<T: serde::de::DeserializeOwned>(
    row: &AnyRow,
    name: &str,
) -> Result<T, sqlx::Error> {
    let text = text(row, name)?;
    serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// `value` as JSON text for a column.
pub(crate) fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("model values serialize")
}

/// A non-negative count from the database as `u32` (saturating).
pub(crate) fn count(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// Refuses text that is empty, longer than `max` or holds control characters.
pub(crate) fn check_text(what: &str, value: &str, max: usize) -> Result<(), Refusal> {
    if value.trim().is_empty() {
        return Err(Refusal::BadRequest(format!("{what} must not be empty")));
    }
    if value.len() > max {
        return Err(Refusal::BadRequest(format!(
            "{what} is longer than {max} bytes"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(Refusal::BadRequest(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(())
}
