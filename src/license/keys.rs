//! Vendor keys: the algorithms licgate accepts, loading public keys for verification,
//! loading a signing key for `license issue`, and generating Ed25519 key pairs.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use jsonwebtoken::{DecodingKey, EncodingKey};
use ring::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
};

/// The signature algorithms a license may use. `none` and HMAC are never accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    EdDSA,
    ES256,
    RS256,
}

impl Algorithm {
    /// Parses the JOSE name (`EdDSA`, `ES256`, `RS256`).
    pub fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "EdDSA" => Some(Algorithm::EdDSA),
            "ES256" => Some(Algorithm::ES256),
            "RS256" => Some(Algorithm::RS256),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::EdDSA => "EdDSA",
            Algorithm::ES256 => "ES256",
            Algorithm::RS256 => "RS256",
        }
    }

    pub fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
            Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a PEM {expected} key: {reason}")]
    Parse {
        path: PathBuf,
        expected: &'static str,
        reason: String,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} already exists; remove it first or choose another --out directory")]
    Exists(PathBuf),
}

/// A public key that verifies licenses, pinned to one algorithm.
#[derive(Clone)]
pub struct PublicKey {
    /// Key id; when set, only tokens whose header names this `kid` use this key.
    pub kid: Option<String>,
    pub alg: Algorithm,
    /// Where the key came from (for messages).
    pub path: PathBuf,
    pub key: DecodingKey,
    /// SHA-256 of the PEM text: tells whether a reload changed the key.
    pub digest: [u8; 32],
    /// The key for batch verification, when it is an Ed25519 key.
    pub(crate) ed25519: Option<super::batch::Ed25519Key>,
}

/// Keys are equal when their id, algorithm and PEM text are.
impl PartialEq for PublicKey {
    fn eq(&self, other: &PublicKey) -> bool {
        self.kid == other.kid && self.alg == other.alg && self.digest == other.digest
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("path", &self.path)
            .finish()
    }
}

impl PublicKey {
    /// Loads a PEM public key (SPKI; PKCS#1 also accepted for RS256) for `alg`.
    pub fn load(path: &Path, alg: Algorithm, kid: Option<String>) -> Result<PublicKey, KeyError> {
        let pem = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        PublicKey::from_pem(&pem, alg, kid, path)
    }

    /// Parses `pem` as a public key for `alg`; `path` names it in messages.
    pub fn from_pem(
        pem: &[u8],
        alg: Algorithm,
        kid: Option<String>,
        path: &Path,
    ) -> Result<PublicKey, KeyError> {
        let (key, expected) = match alg {
            Algorithm::EdDSA => (DecodingKey::from_ed_pem(pem), "Ed25519 public"),
            Algorithm::ES256 => (DecodingKey::from_ec_pem(pem), "P-256 public"),
            Algorithm::RS256 => (DecodingKey::from_rsa_pem(pem), "RSA public"),
        };
        // Name the real key type when it is another one (jsonwebtoken would only
        // say "invalid key format", or accept some mismatched kinds).
        if let Some(found) = spki_algorithm(pem) {
            if found != alg {
                return Err(KeyError::Parse {
                    path: path.to_path_buf(),
                    expected,
                    reason: format!("it is a key for {found}"),
                });
            }
        }
        let key = key.map_err(|e| KeyError::Parse {
            path: path.to_path_buf(),
            expected,
            reason: e.to_string(),
        })?;
        let mut digest = [0u8; 32];
        digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, pem).as_ref());
        let ed25519 = match alg {
            Algorithm::EdDSA => std::str::from_utf8(pem)
                .ok()
                .and_then(|pem| pem_body(pem, "PUBLIC KEY"))
                .and_then(|der| super::batch::Ed25519Key::from_spki_der(&der)),
            Algorithm::ES256 | Algorithm::RS256 => None,
        };
        Ok(PublicKey {
            kid,
            alg,
            path: path.to_path_buf(),
            key,
            digest,
            ed25519,
        })
    }
}

/// The algorithm family named by a `PUBLIC KEY` (SPKI) PEM, when recognisable.
pub fn spki_algorithm(pem: &[u8]) -> Option<Algorithm> {
    let der = pem_body(std::str::from_utf8(pem).ok()?, "PUBLIC KEY")?;
    const ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
    const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    const RSA_ENCRYPTION: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ];
    let has = |oid: &[u8]| der.windows(oid.len()).take(32).any(|w| w == oid);
    if has(ED25519) {
        Some(Algorithm::EdDSA)
    } else if has(EC_PUBLIC_KEY) {
        Some(Algorithm::ES256)
    } else if has(RSA_ENCRYPTION) {
        Some(Algorithm::RS256)
    } else {
        None
    }
}

/// The DER inside the first PEM block labelled `label`.
pub fn pem_body(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let b64: String = pem[start..stop].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// Wraps `der` in a PEM block labelled `label` (64-column lines).
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ascii"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A private key that signs licenses, with the algorithm its type implies.
pub struct SigningKey {
    pub alg: Algorithm,
    pub key: EncodingKey,
}

impl SigningKey {
    /// Loads a PKCS#8 PEM private key and detects its algorithm (Ed25519 → EdDSA,
    /// P-256 → ES256, RSA → RS256).
    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        let pem = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let parse_error = |reason: String| KeyError::Parse {
            path: path.to_path_buf(),
            expected: "PKCS#8 private",
            reason,
        };
        let text = std::str::from_utf8(&pem).map_err(|_| parse_error("not text".into()))?;
        let der = pem_body(text, "PRIVATE KEY")
            .ok_or_else(|| parse_error("no -----BEGIN PRIVATE KEY----- block".into()))?;
        let rng = ring::rand::SystemRandom::new();
        let (alg, key) = if Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).is_ok() {
            (Algorithm::EdDSA, EncodingKey::from_ed_pem(&pem))
        } else if EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng).is_ok() {
            (Algorithm::ES256, EncodingKey::from_ec_pem(&pem))
        } else if RsaKeyPair::from_pkcs8(&der).is_ok() {
            (Algorithm::RS256, EncodingKey::from_rsa_pem(&pem))
        } else {
            return Err(parse_error(
                "not an Ed25519, P-256 or RSA (2048+ bits) key".into(),
            ));
        };
        let key = key.map_err(|e| parse_error(e.to_string()))?;
        Ok(SigningKey { alg, key })
    }
}

/// A freshly generated Ed25519 key pair as PEM text.
pub struct GeneratedKeyPair {
    /// PKCS#8 private key.
    pub private_pem: String,
    /// SPKI public key.
    pub public_pem: String,
}

/// PKCS#8 v1 (RFC 8410) prefix of an Ed25519 private key: SEQUENCE { INTEGER 0,
/// SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING <32-byte seed> } }.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Generates an Ed25519 key pair. The private key is written as PKCS#8 v1 (RFC 8410,
/// what `openssl genpkey -algorithm ed25519` writes), which OpenSSL, Python's
/// `cryptography`, Node and Go read; v2 (with the public key appended) is read too.
pub fn generate_ed25519() -> GeneratedKeyPair {
    let rng = ring::rand::SystemRandom::new();
    let mut seed = [0u8; 32];
    ring::rand::SecureRandom::fill(&rng, &mut seed).expect("system randomness available");
    let pair = Ed25519KeyPair::from_seed_unchecked(&seed).expect("any 32 bytes are a seed");
    let mut pkcs8 = ED25519_PKCS8_V1_PREFIX.to_vec();
    pkcs8.extend_from_slice(&seed);
    // SPKI for Ed25519: SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING key }.
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(pair.public_key().as_ref());
    let private_pem = pem_encode("PRIVATE KEY", &pkcs8);
    seed.fill(0);
    pkcs8.fill(0);
    GeneratedKeyPair {
        private_pem,
        public_pem: pem_encode("PUBLIC KEY", &spki),
    }
}

/// Writes a new key pair into `dir` as `vendor.key.pem` (mode 0600) and
/// `vendor.pub.pem`; refuses to overwrite either. Returns (private, public) paths.
pub fn write_key_pair(dir: &Path, pair: &GeneratedKeyPair) -> Result<(PathBuf, PathBuf), KeyError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    let private = dir.join("vendor.key.pem");
    let public = dir.join("vendor.pub.pem");
    for path in [&private, &public] {
        if path.exists() {
            return Err(KeyError::Exists(path.clone()));
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| KeyError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let write = |path: &Path, mode: u32, text: &str| -> Result<(), KeyError> {
        let err = |source| KeyError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map_err(err)?;
        file.write_all(text.as_bytes()).map_err(err)?;
        file.sync_all().map_err(err)
    };
    write(&private, 0o600, &pair.private_pem)?;
    write(&public, 0o644, &pair.public_pem)?;
    Ok((private, public))
}

/// A token that could not be signed.
#[derive(Debug, thiserror::Error)]
#[error("cannot sign: {0}")]
pub struct SignError(#[from] jsonwebtoken::errors::Error);

/// Signs `claims` with `key` (`kid` put in the header when given).
pub fn sign(
    claims: &super::Claims,
    key: &SigningKey,
    kid: Option<&str>,
) -> Result<String, SignError> {
    let mut header = jsonwebtoken::Header::new(key.alg.jwt());
    header.kid = kid.map(str::to_string);
    Ok(jsonwebtoken::encode(&header, &claims.to_json(), &key.key)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_for_signing_and_verifying() {
        let pair = generate_ed25519();
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = write_key_pair(dir.path(), &pair).unwrap();
        let signing = SigningKey::load(&private).unwrap();
        assert_eq!(signing.alg, Algorithm::EdDSA);
        PublicKey::load(&public, Algorithm::EdDSA, None).unwrap();
        let mode = std::fs::metadata(&private).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        assert!(matches!(
            write_key_pair(dir.path(), &pair),
            Err(KeyError::Exists(_))
        ));
    }

    #[test]
    fn a_key_of_another_type_is_refused() {
        let pair = generate_ed25519();
        let err = PublicKey::from_pem(
            pair.public_pem.as_bytes(),
            Algorithm::ES256,
            None,
            Path::new("k.pem"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("k.pem is not a PEM P-256 public key"),
            "{err}"
        );
    }

    #[test]
    fn generated_private_keys_are_pkcs8_v1_and_v2_keys_still_load() {
        let pair = generate_ed25519();
        let der = pem_body(&pair.private_pem, "PRIVATE KEY").unwrap();
        assert_eq!(der.len(), 48);
        assert_eq!(der[..16], ED25519_PKCS8_V1_PREFIX);
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = write_key_pair(dir.path(), &pair).unwrap();
        let verifier = PublicKey::load(&public, Algorithm::EdDSA, None).unwrap();
        // The same key as v2 (ring's format: the public key appended) signs alike.
        let rng = ring::rand::SystemRandom::new();
        let v2 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let v2_path = dir.path().join("v2.pem");
        std::fs::write(&v2_path, pem_encode("PRIVATE KEY", v2.as_ref())).unwrap();
        assert_eq!(SigningKey::load(&v2_path).unwrap().alg, Algorithm::EdDSA);
        let signing = SigningKey::load(&private).unwrap();
        let claims = serde_json::json!({"exp": 4_000_000_000u64, "tenant": "t"});
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
            &claims,
            &signing.key,
        )
        .unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        validation.validate_aud = false;
        jsonwebtoken::decode::<serde_json::Value>(&token, &verifier.key, &validation).unwrap();
    }

    #[test]
    fn pem_round_trip() {
        let der = (0u8..=200).collect::<Vec<_>>();
        assert_eq!(pem_body(&pem_encode("X", &der), "X").unwrap(), der);
    }
}
