//! The installation's own Ed25519 key pair: created once in the store (PKCS#8 PEM,
//! mode 0600, never overwritten: two processes creating it at once end up with the
//! same key), it signs what the installation reports (usage reports, later the
//! authority's heartbeats). Only its public half ever leaves the store.

use std::path::{Path, PathBuf};

use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};

use super::keys::{generate_ed25519, pem_body, pem_encode};

/// The key's file name in the store (`license.instance_key_file` by default).
pub const FILE: &str = "instance-key.pem";

/// SPKI prefix of an Ed25519 public key (RFC 8410), before the 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Why the instance key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InstanceKeyError {
    #[error("instance key {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("instance key {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// The installation's key pair.
pub struct InstanceKey {
    pair: Ed25519KeyPair,
    path: PathBuf,
}

impl std::fmt::Debug for InstanceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceKey")
            .field("path", &self.path)
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

impl InstanceKey {
    /// The key at `path`, created there (with its directory) when there is none.
    pub fn load_or_create(path: &Path) -> Result<InstanceKey, InstanceKeyError> {
        let io = |source| InstanceKeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(pem) => return InstanceKey::from_pem(&pem, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        // Written whole to a temporary file, then linked in place: linking fails when
        // another process got there first, whose key is then the one.
        let pem = generate_ed25519().private_pem;
        let temp = path.with_extension(format!(
            "tmp-{}-{}",
            std::process::id(),
            super::store::generate_instance_id()
        ));
        let written = (|| {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(pem.as_bytes())?;
            file.sync_all()?;
            match std::fs::hard_link(&temp, path) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
                _ => Ok(()),
            }
        })();
        let _ = std::fs::remove_file(&temp);
        written.map_err(io)?;
        if let Some(dir) = path.parent() {
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        let pem = std::fs::read_to_string(path).map_err(io)?;
        InstanceKey::from_pem(&pem, path)
    }

    /// The existing key at `path` (nothing is created).
    pub fn load(path: &Path) -> Result<InstanceKey, InstanceKeyError> {
        let pem = std::fs::read_to_string(path).map_err(|source| InstanceKeyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        InstanceKey::from_pem(&pem, path)
    }

    fn from_pem(pem: &str, path: &Path) -> Result<InstanceKey, InstanceKeyError> {
        let invalid = |reason: &str| InstanceKeyError::Invalid {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let der = pem_body(pem, "PRIVATE KEY")
            .ok_or_else(|| invalid("no -----BEGIN PRIVATE KEY----- block"))?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map_err(|_| invalid("not an Ed25519 PKCS#8 key"))?;
        Ok(InstanceKey {
            pair,
            path: path.to_path_buf(),
        })
    }

    /// The public key as SPKI DER.
    pub fn public_key_der(&self) -> Vec<u8> {
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(self.pair.public_key().as_ref());
        der
    }

    /// The public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn public_key_pem(&self) -> String {
        pem_encode("PUBLIC KEY", &self.public_key_der())
    }

    /// `SHA256:` and the hex SHA-256 of the public key's SPKI DER.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.public_key_der())
    }

    /// The Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }
}

/// `SHA256:` and the hex SHA-256 of `spki_der`.
pub fn fingerprint(spki_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("SHA256:{hex}")
}

/// An instance's public key, read from SPKI PEM, that checks its signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstancePublicKey {
    spki_der: Vec<u8>,
}

impl InstancePublicKey {
    /// Parses an Ed25519 `PUBLIC KEY` PEM.
    pub fn from_pem(pem: &str) -> Result<InstancePublicKey, String> {
        let der = pem_body(pem, "PUBLIC KEY").ok_or("no -----BEGIN PUBLIC KEY----- block")?;
        if der.len() != ED25519_SPKI_PREFIX.len() + 32 || !der.starts_with(&ED25519_SPKI_PREFIX) {
            return Err("not an Ed25519 public key".into());
        }
        Ok(InstancePublicKey { spki_der: der })
    }

    /// Whether `signature` is this key's signature of `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        let raw = &self.spki_der[ED25519_SPKI_PREFIX.len()..];
        UnparsedPublicKey::new(&ED25519, raw)
            .verify(message, signature)
            .is_ok()
    }

    /// The key's fingerprint ([`fingerprint`]).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.spki_der)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store").join(FILE);
        let first = InstanceKey::load_or_create(&path).unwrap();
        let again = InstanceKey::load_or_create(&path).unwrap();
        assert_eq!(first.fingerprint(), again.fingerprint());
        assert!(first.fingerprint().starts_with("SHA256:"));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "private: {mode:o}");
        let public = InstancePublicKey::from_pem(&first.public_key_pem()).unwrap();
        assert_eq!(public.fingerprint(), first.fingerprint());
        let signature = first.sign(b"usage");
        assert!(public.verifies(b"usage", &signature));
        assert!(!public.verifies(b"usagf", &signature));
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }

    #[test]
    fn a_damaged_key_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        std::fs::write(&path, "not a key").unwrap();
        let err = InstanceKey::load_or_create(&path).unwrap_err();
        assert!(err.to_string().contains("PRIVATE KEY"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a key");
        assert!(InstancePublicKey::from_pem("junk").is_err());
    }
}
