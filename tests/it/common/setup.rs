//! A vendor key pair, a license store and the gateway configuration that uses them.

use std::path::PathBuf;

use licgate::license::clock::{Clock, SystemClock};
use licgate::license::keys::{generate_ed25519, write_key_pair, SigningKey};
use licgate::license::sign;
use licgate::license::store::Store;

use super::{test_claims, BASE_CONFIG};

pub(crate) const DAY: i64 = 86_400;

/// A vendor key pair and a license store, and the config that uses them.
pub(crate) struct Setup {
    pub dir: tempfile::TempDir,
    pub private: PathBuf,
    pub public: PathBuf,
}

impl Setup {
    pub(crate) fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) =
            write_key_pair(&dir.path().join("keys"), &generate_ed25519()).unwrap();
        Setup {
            dir,
            private,
            public,
        }
    }

    pub(crate) fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// A license for `tenant` with `features`, expiring `days` from now (negative: past).
    pub(crate) fn token(&self, tenant: &str, features: &[&str], days: i64) -> String {
        let now = SystemClock.now();
        let mut claims = test_claims(tenant, features, now, now + days * DAY);
        claims.iss = Some("Vendor".into());
        claims.jti = format!("{tenant}-{}-{}", features.join("+"), days);
        claims.tier_name = Some("Professional".into());
        self.sign(&claims)
    }

    /// `claims` signed with the vendor key.
    pub(crate) fn sign(&self, claims: &licgate::license::Claims) -> String {
        sign(claims, &SigningKey::load(&self.private).unwrap(), None).unwrap()
    }

    /// Puts a license file in the store before the gateway starts.
    pub(crate) fn preinstall(&self, token: &str, name: &str) {
        let store = Store::open(&self.store_dir()).unwrap();
        std::fs::write(store.licenses_dir().join(name), token).unwrap();
    }

    /// The `[license]` section that uses this key pair and store.
    pub(crate) fn license_section(&self) -> String {
        format!(
            r#"
[license]
public_keys = [{{ path = "{}" }}]
issuer = "Vendor"
store_dir = "{}"
instance_id = "test-instance"
scan_interval = "100ms"
"#,
            self.public.display(),
            self.store_dir().display()
        )
    }

    /// The gateway configuration (`extra` is appended: more sections).
    pub(crate) fn config(&self, mode: &str, extra: &str) -> String {
        BASE_CONFIG.replace("mode = \"off\"", &format!("mode = \"{mode}\""))
            + &self.license_section()
            + &format!(
                r#"[public]
paths = ["/static/", "/favicon.ico"]
[[features]]
prefix = "/api/manufacturing/"
feature = "manufacturing_module"
[[features]]
prefix = "/api/reports"
feature = "reports"
[pages]
after_activation = "/accounts/login/"
{extra}"#
            )
    }
}
