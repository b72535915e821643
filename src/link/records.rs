//! What the gateway remembers of its activations at the authority: one JSON file per
//! license in `store_dir/activations/`, written atomically, read at start. A record
//! holds no secret (never the license key): the activation id and what the last
//! heartbeat said.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::license::store::{create_private_dir, write_atomically, StoreError};
use crate::license::UnixTime;

/// One activation of this installation at the authority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationRecord {
    pub activation_id: String,
    /// The license (`jti` of its tokens).
    pub license_id: String,
    pub tenant: String,
    pub instance_id: String,
    /// Seconds between heartbeats, as the authority last said.
    pub heartbeat_interval: u64,
    pub activated_at: UnixTime,
    /// The last heartbeat (or the activation) the authority answered.
    pub last_success: UnixTime,
    /// When the token installed last expires: the end of the offline grace.
    pub token_expires_at: UnixTime,
    /// The license's status at the authority: `active`, `suspended`, `expired`.
    pub status: String,
    /// The key's last characters (`LG-…-ABCDE`), for operators.
    pub key_hint: String,
    /// The SHA-256 of the installed token's claims less `iat`, `nbf` and `exp`: a
    /// renewed token that grants the same is not installed again until the installed
    /// one has lost a tenth of its life.
    #[serde(default)]
    pub claims_digest: String,
    /// The `last_success` last written to the file (0 when read from it: the next
    /// success writes it again).
    #[serde(skip)]
    pub saved_success: UnixTime,
}

/// The digest of `token`'s claims that a renewal does not change (`iat`, `nbf`, `exp`
/// left out); empty when the token cannot be read.
pub fn claims_digest(token: &str) -> String {
    use base64::Engine as _;
    let payload = token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
    let Some(serde_json::Value::Object(mut claims)) = payload else {
        return String::new();
    };
    for moving in ["iat", "nbf", "exp"] {
        claims.remove(moving);
    }
    let canonical = serde_json::to_vec(&claims).unwrap_or_default();
    crate::usage::report::sha256_hex(&canonical)
}

/// The records' directory.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

impl Records {
    /// The records of the store at `store_dir` (the directory is created).
    pub fn open(store_dir: &Path) -> Result<Records, StoreError> {
        let dir = store_dir.join("activations");
        create_private_dir(&dir)?;
        Ok(Records { dir })
    }

    fn path(&self, license_id: &str) -> PathBuf {
        let plain = !license_id.is_empty()
            && license_id.len() <= 64
            && license_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        let name = if plain {
            license_id.to_string()
        } else {
            crate::usage::report::sha256_hex(license_id.as_bytes())[..24].to_string()
        };
        self.dir.join(format!("{name}.json"))
    }

    /// The file name of `license_id`'s record.
    pub fn file_name(&self, license_id: &str) -> std::ffi::OsString {
        self.path(license_id)
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default()
    }

    /// The records' file names, in order (nothing is read).
    pub fn file_names(&self) -> Vec<std::ffi::OsString> {
        let mut names: Vec<_> = self
            .paths()
            .into_iter()
            .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
            .collect();
        names.sort();
        names
    }

    /// The record in file `name`, when readable.
    pub fn read(&self, name: &std::ffi::OsStr) -> Option<ActivationRecord> {
        read_record(&self.dir.join(name))
    }

    fn paths(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .filter(|p| {
                    !p.file_name()
                        .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."))
                })
                .collect(),
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot list the activation records");
                Vec::new()
            }
        }
    }

    /// Every readable record, in file-name order; unreadable files are logged and
    /// left out (never fatal).
    pub fn list(&self) -> Vec<ActivationRecord> {
        let mut paths = self.paths();
        paths.sort();
        paths.iter().filter_map(|p| read_record(p)).collect()
    }

    /// The records of `tenant`.
    pub fn of_tenant(&self, tenant: &str) -> Vec<ActivationRecord> {
        self.list()
            .into_iter()
            .filter(|r| r.tenant == tenant)
            .collect()
    }

    /// Writes `record` (atomically, replacing the license's previous one).
    pub fn save(&self, record: &ActivationRecord) -> Result<(), StoreError> {
        let body = serde_json::to_vec_pretty(record).expect("a record serializes");
        write_atomically(&self.path(&record.license_id), &body)
    }

    /// Whether a record of `license_id` is stored.
    pub fn contains(&self, license_id: &str) -> bool {
        self.path(license_id).exists()
    }

    /// Removes the record of `license_id` (no error when there is none).
    pub fn remove(&self, license_id: &str) -> Result<(), StoreError> {
        let path = self.path(license_id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::Io { path, source: e }),
        }
    }
}

/// The record at `path`; an unreadable one is logged and `None`.
fn read_record(path: &Path) -> Option<ActivationRecord> {
    let read = std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
    match read {
        Ok(record) => Some(record),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "activation record skipped");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(license: &str, tenant: &str) -> ActivationRecord {
        ActivationRecord {
            activation_id: format!("act_{license}"),
            license_id: license.into(),
            tenant: tenant.into(),
            instance_id: "inst".into(),
            heartbeat_interval: 3600,
            activated_at: 1,
            last_success: 2,
            token_expires_at: 3,
            status: "active".into(),
            key_hint: "LG-…-ABCDE".into(),
            claims_digest: String::new(),
            saved_success: 0,
        }
    }

    #[test]
    fn records_round_trip_replace_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::open(dir.path()).unwrap();
        records.save(&record("lic_a", "acme")).unwrap();
        records.save(&record("lic/../b", "globex")).unwrap();
        let mut changed = record("lic_a", "acme");
        changed.last_success = 99;
        records.save(&changed).unwrap();
        let all = records.list();
        assert_eq!(all.len(), 2);
        assert!(all.contains(&changed));
        assert_eq!(records.of_tenant("globex")[0].license_id, "lic/../b");
        std::fs::write(dir.path().join("activations/bad.json"), b"{").unwrap();
        assert_eq!(records.list().len(), 2);
        records.remove("lic_a").unwrap();
        records.remove("lic_a").unwrap();
        assert_eq!(records.of_tenant("acme"), vec![]);
    }
}
