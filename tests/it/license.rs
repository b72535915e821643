//! Licenses end to end with real keys generated here: the vendor CLI, every
//! algorithm, every rejection path, the store, the manager, and the clock.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use base64::Engine as _;
use licgate::cli::license::{issue_claims, IssueArgs};
use licgate::license::clock::{Clock, ManualClock, SystemClock};
use licgate::license::keys::{spki_algorithm, Algorithm, PublicKey, SigningKey};
use licgate::license::manager::{LicenseManager, LicenseSettings};
use licgate::license::sign;
use licgate::license::store::Store;
use licgate::license::{Claims, Rejection, Status, StatusPolicy, Verifier};

const DAY: i64 = 86_400;
const INSTANCE: &str = "inst-1";

/// A vendor key pair on disk.
struct Vendor {
    _dir: tempfile::TempDir,
    private: PathBuf,
    public: PathBuf,
    alg: Algorithm,
}

impl Vendor {
    fn new(alg: Algorithm) -> Vendor {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("vendor.key.pem");
        let public = dir.path().join("vendor.pub.pem");
        match alg {
            Algorithm::EdDSA => {
                let (code, _, err) =
                    run_cli(&["license", "keygen", "--out", dir.path().to_str().unwrap()]);
                assert_eq!(code, 0, "{err}");
            }
            Algorithm::ES256 => {
                let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
                std::fs::write(&private, key.serialize_pem()).unwrap();
                std::fs::write(&public, key.public_key_pem()).unwrap();
            }
            Algorithm::RS256 => {
                openssl(
                    &[
                        "genpkey",
                        "-algorithm",
                        "RSA",
                        "-pkeyopt",
                        "rsa_keygen_bits:2048",
                        "-out",
                    ],
                    &private,
                );
                let out = Command::new("openssl")
                    .args(["pkey", "-pubout", "-in"])
                    .arg(&private)
                    .arg("-out")
                    .arg(&public)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        Vendor {
            _dir: dir,
            private,
            public,
            alg,
        }
    }

    fn public_key(&self, kid: Option<&str>) -> PublicKey {
        PublicKey::load(&self.public, self.alg, kid.map(str::to_string)).unwrap()
    }

    fn signing_key(&self) -> SigningKey {
        SigningKey::load(&self.private).unwrap()
    }

    fn sign(&self, claims: &Claims, kid: Option<&str>) -> String {
        sign(claims, &self.signing_key(), kid).unwrap()
    }
}

fn openssl(args: &[&str], out: &Path) {
    let output = Command::new("openssl")
        .args(args)
        .arg(out)
        .output()
        .expect("openssl");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn issue_args(tenant: &str, days: u32) -> IssueArgs {
    IssueArgs {
        signing_key: PathBuf::new(),
        tenant: tenant.into(),
        tier: "professional".into(),
        tier_name: None,
        features: vec!["sales".into()],
        limits: vec!["requests_per_hour=100".into()],
        feature_limits: vec![],
        expires: None,
        days: Some(days),
        not_before: None,
        audiences: vec![INSTANCE.into()],
        flags: vec![],
        allowed_networks: vec![],
        denied_networks: vec![],
        allowed_countries: vec![],
        issuer: Some("Vendor".into()),
        subject: None,
        kid: None,
        jti: None,
        grace_days: None,
        read_only_days: None,
    }
}

fn claims(tenant: &str, now: i64, days: u32) -> Claims {
    issue_claims(&issue_args(tenant, days), now).unwrap()
}

fn verifier(keys: Vec<PublicKey>) -> Verifier {
    Verifier::new(keys, Some("Vendor".into()), INSTANCE.into(), 60)
}

fn now() -> i64 {
    SystemClock.now()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with the given header and claims and an arbitrary signature.
fn forged(header: serde_json::Value, claims: &serde_json::Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(signature)
    )
}

#[test]
fn round_trip_keygen_issue_inspect_install() {
    let vendor = Vendor::new(Algorithm::EdDSA);
    let key_mode = std::fs::metadata(&vendor.private).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key_mode.permissions()) & 0o777,
        0o600
    );

    let (code, token, err) = run_cli(&[
        "license",
        "issue",
        "--signing-key",
        vendor.private.to_str().unwrap(),
        "--tenant",
        "acme",
        "--tier",
        "professional",
        "--tier-name",
        "Professional",
        "--feature",
        "sales",
        "--feature",
        "hr",
        "--limit",
        "requests_per_hour=5000",
        "--limit",
        "max_concurrent_connections=20",
        "--feature-limit",
        "reports:requests_per_day=100",
        "--days",
        "365",
        "--audience",
        INSTANCE,
        "--issuer",
        "Vendor",
        "--subject",
        "cust-9",
        "--flag",
        "trial",
        "--jti",
        "L-42",
    ]);
    assert_eq!(code, 0, "{err}");
    let token = token.trim().to_string();
    assert_eq!(token.split('.').count(), 3);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acme.jwt");
    std::fs::write(&file, &token).unwrap();
    let (code, out, err) = run_cli(&[
        "license",
        "inspect",
        file.to_str().unwrap(),
        "--public-key",
        vendor.public.to_str().unwrap(),
        "--instance-id",
        INSTANCE,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("signature: valid (EdDSA, bound to this instance)"),
        "{out}"
    );
    assert!(out.contains("status now: VALID"), "{out}");
    assert!(out.contains("\"jti\": \"L-42\""), "{out}");
    assert!(out.contains("\"requests_per_hour\": 5000"), "{out}");

    let manager = manager_for(
        &vendor,
        tempfile::tempdir().unwrap().keep(),
        Arc::new(SystemClock),
    );
    let summary = manager.install(&token).unwrap();
    assert_eq!(summary.status, Status::Valid);
    assert_eq!(summary.tier.as_deref(), Some("professional"));
    assert!(
        summary.has_feature("sales")
            && summary.has_feature("hr")
            && !summary.has_feature("manufacturing")
    );
    assert_eq!(summary.limits.requests_per_hour, Some(5000));
    assert_eq!(
        summary.feature_limits["reports"].requests_per_day,
        Some(100)
    );
    assert_eq!(summary.flags, vec!["trial"]);
    assert_eq!(manager.snapshot().status("acme"), Status::Valid);
    assert_eq!(manager.snapshot().status("other"), Status::Unlicensed);
}

#[test]
fn inspect_reports_a_bad_signature_and_exits_non_zero() {
    let vendor = Vendor::new(Algorithm::EdDSA);
    let other = Vendor::new(Algorithm::EdDSA);
    let token = vendor.sign(&claims("acme", now(), 30), None);
    let (code, out, _) = run_cli(&[
        "license",
        "inspect",
        &token,
        "--public-key",
        other.public.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        out.contains("signature: REJECTED: the signature does not verify"),
        "{out}"
    );
    let (code, out, _) = run_cli(&["license", "inspect", &token]);
    assert_eq!(code, 0);
    assert!(out.contains("signature: not checked"), "{out}");
}

#[test]
fn every_algorithm_signs_and_verifies() {
    for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
        let vendor = Vendor::new(alg);
        assert_eq!(
            vendor.signing_key().alg,
            alg,
            "algorithm detected from the key"
        );
        assert_eq!(
            spki_algorithm(&std::fs::read(&vendor.public).unwrap()),
            Some(alg)
        );
        let token = vendor.sign(&claims("acme", now(), 30), None);
        let license = verifier(vec![vendor.public_key(None)])
            .verify(&token)
            .unwrap();
        assert_eq!(license.alg, alg);
        assert_eq!(license.claims.tenant, "acme");
        // Selected by kid too.
        let token = vendor.sign(&claims("acme", now(), 30), Some("k1"));
        let license = verifier(vec![vendor.public_key(Some("k1"))])
            .verify(&token)
            .unwrap();
        assert_eq!(license.kid.as_deref(), Some("k1"));
    }
}

#[test]
fn every_rejection_has_its_reason() {
    let vendor = Vendor::new(Algorithm::EdDSA);
    let es = Vendor::new(Algorithm::ES256);
    let v = verifier(vec![vendor.public_key(None), es.public_key(Some("ec-1"))]);
    let good_claims = claims("acme", now(), 30);
    let good = vendor.sign(&good_claims, None);
    let claims_json = good_claims.to_json();
    let reject = |token: &str| v.verify(token).unwrap_err();

    // alg none, with and without a signature part.
    let none = forged(
        serde_json::json!({"alg": "none", "typ": "JWT"}),
        &claims_json,
        b"",
    );
    assert_eq!(reject(&none), Rejection::AlgorithmNotAllowed("none".into()));
    // HS256 "signed" with the public key bytes (the classic confusion attack).
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims_json,
        &jsonwebtoken::EncodingKey::from_secret(&std::fs::read(&vendor.public).unwrap()),
    )
    .unwrap();
    assert_eq!(reject(&hs), Rejection::AlgorithmNotAllowed("HS256".into()));
    assert_eq!(
        reject(&hs).to_string(),
        "signed with algorithm HS256, which is never accepted (only EdDSA, ES256 and RS256 are)"
    );
    // Signed by a key that is not configured.
    let stranger = Vendor::new(Algorithm::EdDSA);
    assert_eq!(
        reject(&stranger.sign(&good_claims, None)),
        Rejection::BadSignature
    );
    // Unknown kid; a kid whose key is pinned to another algorithm.
    assert_eq!(
        reject(&vendor.sign(&good_claims, Some("nope"))),
        Rejection::UnknownKid("nope".into())
    );
    assert_eq!(
        reject(&vendor.sign(&good_claims, Some("ec-1"))).to_string(),
        "the header says EdDSA but key \"ec-1\" is pinned to ES256"
    );
    // No key for the algorithm (RS256 while only EdDSA and ES256 are configured).
    let rsa = Vendor::new(Algorithm::RS256);
    assert_eq!(
        reject(&rsa.sign(&good_claims, None)),
        Rejection::NoKeyForAlgorithm(Algorithm::RS256)
    );
    // Tampered payload: more features, same signature.
    let parts: Vec<&str> = good.split('.').collect();
    let mut richer = claims_json.clone();
    richer["features"] = serde_json::json!(["sales", "manufacturing"]);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(richer.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(reject(&tampered), Rejection::BadSignature);
    // Tampered signature.
    let mut sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[2])
        .unwrap();
    sig[0] ^= 1;
    assert_eq!(
        reject(&format!("{}.{}.{}", parts[0], parts[1], b64(&sig))),
        Rejection::BadSignature
    );
    // Truncated; not base64; not a JWT; empty; oversize.
    assert_eq!(reject(&good[..good.len() - 10]), Rejection::BadSignature);
    assert!(matches!(
        reject(&format!("{}.{}", parts[0], parts[1])),
        Rejection::Malformed(_)
    ));
    assert!(matches!(reject("!!!.@@@.###"), Rejection::Malformed(_)));
    assert!(matches!(reject("hello"), Rejection::Malformed(_)));
    assert_eq!(reject("  "), Rejection::Empty);
    assert_eq!(
        reject(&"a".repeat(70_000)),
        Rejection::TooLarge { size: 70_000 }
    );

    // Required claims, and exp of the wrong type, named.
    for missing in ["exp", "jti", "tenant"] {
        let mut c = claims_json.clone();
        c.as_object_mut().unwrap().remove(missing);
        let token = sign_raw(&serde_json::json!({"alg": "EdDSA"}), &c, &vendor);
        assert_eq!(
            reject(&token).to_string(),
            format!("claim `{missing}` is required but missing")
        );
    }
    let mut c = claims_json.clone();
    c["exp"] = serde_json::json!("2030-01-01");
    let token = sign_raw(&serde_json::json!({"alg": "EdDSA"}), &c, &vendor);
    assert_eq!(
        reject(&token).to_string(),
        "claim `exp` is invalid: expected a number of seconds since 1970, got a string"
    );

    // Wrong audience and issuer.
    let mut other_instance = good_claims.clone();
    other_instance.aud = vec!["inst-2".into()];
    assert_eq!(
        reject(&vendor.sign(&other_instance, None)).to_string(),
        "bound to instance inst-2, this is inst-1"
    );
    let mut other_issuer = good_claims.clone();
    other_issuer.iss = Some("Mallory".into());
    assert_eq!(
        reject(&vendor.sign(&other_issuer, None)).to_string(),
        "issued by \"Mallory\", but this gateway accepts licenses from \"Vendor\" only"
    );

    // Dates are judged at installation: not yet valid, and past the last day of use.
    let policy = StatusPolicy::default();
    let mut future = good_claims.clone();
    future.nbf = Some(now() + 3600);
    let err = v
        .verify_for_install(&vendor.sign(&future, None), now(), &policy)
        .unwrap_err();
    assert!(err.to_string().starts_with("not valid before 20"), "{err}");
    let mut old = good_claims.clone();
    old.exp = 1_600_000_000;
    let err = v
        .verify_for_install(&vendor.sign(&old, None), now(), &policy)
        .unwrap_err();
    assert_eq!(err.to_string(), "expired on 2020-09-13T12:26:40Z");
    // Within the clock leeway of nbf is fine.
    future.nbf = Some(now() + 30);
    v.verify_for_install(&vendor.sign(&future, None), now(), &policy)
        .unwrap();
}

#[test]
fn keys_named_in_the_token_are_never_used() {
    let vendor = Vendor::new(Algorithm::EdDSA);
    let attacker = Vendor::new(Algorithm::EdDSA);
    let v = verifier(vec![vendor.public_key(None)]);
    let c = claims("acme", now(), 30);
    let attacker_pub = std::fs::read_to_string(&attacker.public).unwrap();
    let jwk =
        serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": b64(attacker_pub.as_bytes())});
    for (name, value) in [
        ("jku", serde_json::json!("http://127.0.0.1:1/keys.json")),
        ("x5u", serde_json::json!("http://127.0.0.1:1/cert.pem")),
        ("jwk", jwk),
    ] {
        let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", name: value});
        let token = sign_raw(&header, &c.to_json(), &attacker);
        assert_eq!(
            v.verify(&token).unwrap_err(),
            Rejection::BadSignature,
            "{name}"
        );
        let token = sign_raw(&header, &c.to_json(), &vendor);
        assert!(
            v.verify(&token).is_ok(),
            "{name} is ignored, the configured key verifies"
        );
    }
    // A kid that looks like a path only selects among configured keys.
    let token = attacker.sign(&c, Some("../../attacker/vendor.pub.pem"));
    assert!(matches!(
        v.verify(&token).unwrap_err(),
        Rejection::UnknownKid(_)
    ));
}

/// Signs an arbitrary header and claims with `vendor`'s key.
fn sign_raw(header: &serde_json::Value, claims: &serde_json::Value, vendor: &Vendor) -> String {
    let key = vendor.signing_key();
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &key.key, key.alg.jwt()).unwrap();
    format!("{message}.{signature}")
}

fn manager_for(vendor: &Vendor, store_dir: PathBuf, clock: Arc<dyn Clock>) -> LicenseManager {
    manager_with(
        vec![vendor.public_key(None)],
        store_dir,
        clock,
        StatusPolicy::default(),
    )
}

fn manager_with(
    keys: Vec<PublicKey>,
    store_dir: PathBuf,
    clock: Arc<dyn Clock>,
    policy: StatusPolicy,
) -> LicenseManager {
    LicenseManager::new(
        LicenseSettings {
            verifier: verifier(keys),
            policy,
            rollback_tolerance_secs: 600,
        },
        Store::open(&store_dir).unwrap(),
        clock,
    )
}

#[test]
fn status_follows_a_manual_clock_and_licenses_combine() {
    let vendor = Vendor::new(Algorithm::EdDSA);
    let start = 1_900_000_000;
    let clock = Arc::new(ManualClock::new(start));
    let dir = tempfile::tempdir().unwrap();
    let manager = manager_for(&vendor, dir.path().to_path_buf(), clock.clone());

    let mut a = claims("acme", start, 30);
    a.features = vec!["sales".into()];
    let mut b = claims("acme", start, 100);
    b.features = vec!["hr".into()];
    b.limits.requests_per_hour = Some(50);
    manager.install(&vendor.sign(&a, None)).unwrap();
    let summary = manager.install(&vendor.sign(&b, None)).unwrap();
    assert!(summary.has_feature("sales") && summary.has_feature("hr"));
    assert_eq!(summary.limits.requests_per_hour, Some(150));
    assert_eq!(summary.expires_at, Some(start + 100 * DAY));

    // Past a's whole life (30 days + 7 grace + 14 read-only): only b counts.
    clock.set(start + 52 * DAY);
    assert!(manager.refresh(), "a threshold passed: new snapshot");
    let snap = manager.snapshot();
    let t = snap.tenant("acme").unwrap();
    assert_eq!(t.status, Status::Valid);
    assert!(!t.has_feature("sales") && t.has_feature("hr"));
    assert_eq!(t.limits.requests_per_hour, Some(50));

    // Then b's thresholds, one by one.
    for (day, status) in [
        (87, Status::ExpiringSoon),
        (100, Status::Grace),
        (107, Status::ReadOnly),
        (121, Status::Expired),
    ] {
        clock.set(start + day * DAY);
        manager.refresh();
        assert_eq!(manager.snapshot().status("acme"), status, "day {day}");
    }
    assert!(!manager.refresh(), "nothing left to change");
}

/// Every summary of `before` that `after` still has as the very same one (shared).
fn shared_summaries(
    before: &licgate::license::LicenseSnapshot,
    after: &licgate::license::LicenseSnapshot,
) -> Vec<String> {
    let mut shared: Vec<String> = before
        .tenants
        .iter()
        .filter(|(name, summary)| {
            after
                .tenants
                .get(name)
                .is_some_and(|s| Arc::ptr_eq(s, summary))
        })
        .map(|(name, _)| name.to_string())
        .collect();
    shared.sort();
    shared
}

#[test]
fn a_change_rebuilds_only_the_tenants_it_touches() {
    use licgate::sharded::SHARDS;
    let vendor = Vendor::new(Algorithm::EdDSA);
    let start = 1_900_000_000;
    let clock = Arc::new(ManualClock::new(start));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // 300 tenants; t-short's license ends 10 days before the others.
    let mut names: Vec<String> = (0..300).map(|i| format!("t{i:03}")).collect();
    for name in &names {
        let c = claims(name, start, 60);
        store.install(name, &c.jti, &vendor.sign(&c, None)).unwrap();
    }
    let short = claims("t-short", start, 50);
    store
        .install("t-short", &short.jti, &vendor.sign(&short, None))
        .unwrap();
    names.push("t-short".into());
    let manager = manager_for(&vendor, dir.path().to_path_buf(), clock.clone());
    let tenants = licgate::tenants::Tenants::follow(Some(&manager));
    let loaded = manager.last_reload();
    assert_eq!(loaded.verified, 301);
    let others = |except: &[&str]| -> Vec<String> {
        let mut kept: Vec<String> = names
            .iter()
            .filter(|n| !except.contains(&n.as_str()))
            .cloned()
            .collect();
        kept.sort();
        kept
    };

    // An install: the store is not read again, one shard is copied, every other
    // tenant keeps its very summary and its very entry.
    let before = manager.snapshot_arc();
    let table_before = tenants.load_full();
    let new = claims("t-new", start, 60);
    manager.install(&vendor.sign(&new, None)).unwrap();
    assert_eq!(manager.last_reload(), loaded, "the store was not read");
    let after = manager.snapshot_arc();
    assert_eq!(after.tenants.len(), 302);
    assert_eq!(after.status("t-new"), Status::Valid);
    assert_eq!(shared_summaries(&before, &after), others(&[]));
    let copied = (0..SHARDS)
        .filter(|&i| !after.tenants.same_shard(&before.tenants, i))
        .count();
    assert_eq!(copied, 1);
    let table = tenants.load_full();
    assert_eq!(table.get("t-new").unwrap().license().status, Status::Valid);
    for name in others(&[]) {
        assert!(
            Arc::ptr_eq(table.get(&name).unwrap(), table_before.get(&name).unwrap()),
            "{name}'s entry is kept"
        );
    }

    // A revocation: only the revoked tenant changes; its counters carry over.
    let before = after;
    let jti = before.tenant("t007").unwrap().license_ids[0].clone();
    manager.revoke(&jti).unwrap();
    let after = manager.snapshot_arc();
    assert_eq!(after.status("t007"), Status::Revoked);
    let mut expected = others(&["t007"]);
    expected.push("t-new".into());
    expected.sort();
    assert_eq!(shared_summaries(&before, &after), expected);
    let entry = tenants.load_full().get("t007").map(Arc::clone).unwrap();
    assert!(Arc::ptr_eq(
        &entry.counters,
        &table.get("t007").unwrap().counters
    ));

    // A threshold that passes for one tenant rebuilds that tenant alone.
    let before = after;
    clock.set(start + 40 * DAY);
    assert!(manager.refresh());
    let after = manager.snapshot_arc();
    assert_eq!(after.status("t-short"), Status::ExpiringSoon);
    assert_eq!(after.status("t000"), Status::Valid);
    let mut expected = others(&["t-short", "t007"]);
    expected.extend(["t-new".to_string(), "t007".to_string()]);
    expected.sort();
    assert_eq!(shared_summaries(&before, &after), expected);
    assert!(!manager.refresh(), "nothing else is due");
}

#[test]
fn revocation_is_persisted_and_applied_at_once() {
    let vendor = Vendor::new(Algorithm::EdDSA);
    let dir = tempfile::tempdir().unwrap();
    let manager = manager_for(&vendor, dir.path().to_path_buf(), Arc::new(SystemClock));
    let c = claims("acme", now(), 30);
    let token = vendor.sign(&c, None);
    manager.install(&token).unwrap();
    manager.revoke(&c.jti).unwrap();
    assert_eq!(manager.snapshot().status("acme"), Status::Revoked);
    // Re-installing a revoked license is refused; a restart keeps the revocation.
    let err = manager.install(&token).unwrap_err();
    assert_eq!(err.to_string(), format!("revoked (license id {})", c.jti));
    drop(manager);
    let again = manager_for(&vendor, dir.path().to_path_buf(), Arc::new(SystemClock));
    assert_eq!(again.snapshot().status("acme"), Status::Revoked);
    // Removing the license file leaves the tenant unlicensed.
    assert!(again.remove("acme", &c.jti).unwrap());
    assert_eq!(again.snapshot().status("acme"), Status::Unlicensed);
}

#[test]
fn bad_files_in_the_store_are_skipped_with_a_reason() {
    let vendor = Vendor::new(Algorithm::EdDSA);
    let stranger = Vendor::new(Algorithm::EdDSA);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let good = claims("acme", now(), 30);
    store
        .install("acme", &good.jti, &vendor.sign(&good, None))
        .unwrap();
    let licenses = store.licenses_dir();
    std::fs::write(licenses.join("garbage.jwt"), "this is not a token\n").unwrap();
    std::fs::write(
        licenses.join("forged.jwt"),
        stranger.sign(&claims("evil", now(), 30), None),
    )
    .unwrap();
    std::fs::write(licenses.join(".half-written.tmp"), "eyJ").unwrap();

    let manager = manager_for(&vendor, dir.path().to_path_buf(), Arc::new(SystemClock));
    let snap = manager.snapshot();
    assert_eq!(snap.status("acme"), Status::Valid);
    assert_eq!(
        snap.status("evil"),
        Status::Invalid,
        "a forged file grants nothing"
    );
    assert!(snap.tenant("evil").unwrap().features.is_empty());
    let mut reasons: Vec<(String, String)> = snap
        .problems
        .iter()
        .map(|p| {
            (
                p.path.file_name().unwrap().to_string_lossy().into_owned(),
                p.reason.clone(),
            )
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(reasons[0].0, "forged.jwt");
    assert!(
        reasons[0].1.contains("signature does not verify"),
        "{reasons:?}"
    );
    assert_eq!(reasons[1].0, "garbage.jwt");
    assert!(reasons[1].1.starts_with("not a license key"), "{reasons:?}");
}

#[test]
fn clock_rollback_does_not_revive_an_expired_license() {
    let vendor = Vendor::new(Algorithm::EdDSA);
    let start = 1_900_000_000;
    let clock = Arc::new(ManualClock::new(start));
    let dir = tempfile::tempdir().unwrap();
    let manager = manager_for(&vendor, dir.path().to_path_buf(), clock.clone());
    manager
        .install(&vendor.sign(&claims("acme", start, 10), None))
        .unwrap();
    clock.set(start + 40 * DAY);
    manager.refresh();
    assert_eq!(manager.snapshot().status("acme"), Status::Expired);
    // The clock is turned back to when the license was valid.
    clock.set(start);
    manager.refresh();
    assert_eq!(manager.snapshot().status("acme"), Status::Expired);
    assert_eq!(manager.now(), start + 40 * DAY);
    // A small step back (within the tolerance) is believed.
    clock.set(start + 40 * DAY - 60);
    assert_eq!(manager.now(), start + 40 * DAY - 60);
    // The high-water mark survives a restart.
    drop(manager);
    clock.set(start);
    let again = manager_for(&vendor, dir.path().to_path_buf(), clock.clone());
    assert_eq!(again.snapshot().status("acme"), Status::Expired);
}

#[test]
fn dropped_files_are_picked_up_and_status_changes_on_time() {
    let vendor = Vendor::new(Algorithm::EdDSA);
    let dir = tempfile::tempdir().unwrap();
    let policy = StatusPolicy {
        expiry_warning_days: 0,
        grace_days: 0,
        read_only_days: 0,
    };
    let manager = Arc::new(manager_with(
        vec![vendor.public_key(None)],
        dir.path().to_path_buf(),
        Arc::new(SystemClock),
        policy,
    ));
    let _refresher =
        licgate::background::Detached::start(&manager.refresher(Duration::from_millis(100)))
            .unwrap();

    // An operator drops a license file in.
    let dropped = claims("dropped", now(), 30);
    std::fs::write(
        manager.store().licenses_dir().join("from-operator.jwt"),
        vendor.sign(&dropped, None),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while manager.snapshot().status("dropped") != Status::Valid {
        assert!(Instant::now() < deadline, "dropped file not picked up");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A license that expires two seconds from now (no grace, no read-only).
    let mut short = claims("short", now(), 1);
    short.exp = now() + 2;
    manager.install(&vendor.sign(&short, None)).unwrap();
    assert_eq!(manager.snapshot().status("short"), Status::Valid);
    let expires = std::time::UNIX_EPOCH + Duration::from_secs(short.exp as u64);
    while std::time::SystemTime::now() < expires + Duration::from_millis(300) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(manager.snapshot().status("short"), Status::Expired);
}

#[test]
fn instance_id_is_generated_once_or_taken_from_config() {
    let vendor = Vendor::new(Algorithm::EdDSA);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("licgate.toml");
    let write = |instance: &str| {
        std::fs::write(
            &config,
            format!(
                "[upstream]\naddress = \"127.0.0.1:9\"\n[license]\npublic_keys = [{{ path = \"{}\" }}]\nstore_dir = \"store\"\n{instance}",
                vendor.public.display()
            ),
        )
        .unwrap();
    };
    write("");
    let (code, first, err) = run_cli(&["instance-id", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(first.trim().len(), 36);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("store/instance-id"))
            .unwrap()
            .trim(),
        first.trim(),
        "persisted in the store"
    );
    let (_, second, _) = run_cli(&["instance-id", "--config", config.to_str().unwrap()]);
    assert_eq!(first, second);
    write("instance_id = \"site-7\"\n");
    let (_, fixed, _) = run_cli(&["instance-id", "--config", config.to_str().unwrap()]);
    assert_eq!(fixed.trim(), "site-7");
}

#[test]
fn check_validates_license_keys() {
    let vendor = Vendor::new(Algorithm::EdDSA);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("licgate.toml");
    std::fs::write(
        &config,
        format!(
            "[upstream]\naddress = \"127.0.0.1:9\"\n[license]\npublic_keys = [\n  {{ path = \"{}\", alg = \"ES256\" }},\n  {{ path = \"missing.pem\" }},\n  {{ path = \"x.pem\", alg = \"HS256\" }},\n]\ngrace_days = -1\n",
            vendor.public.display()
        ),
    )
    .unwrap();
    let (code, _, err) = run_cli(&["check", "--config", config.to_str().unwrap()]);
    assert_ne!(code, 0);
    let path = config.display().to_string();
    for expected in [
        format!("{path}:5:12: license.public_keys[0].path: {} is not a PEM P-256 public key: it is a key for EdDSA", vendor.public.display()),
        format!("{path}:6:12: license.public_keys[1].path: cannot read {}", dir.path().join("missing.pem").display()),
        format!("{path}:7:27: license.public_keys[2].alg: `HS256` is not accepted"),
        format!("{path}:9:14: license.grace_days must be a number of days between 0 and 3650"),
    ] {
        assert!(err.contains(&expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn serve_loads_the_store_and_logs_skipped_files() {
    let vendor = Vendor::new(Algorithm::EdDSA);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let c = claims("default", now(), 30);
    store
        .install("default", &c.jti, &vendor.sign(&c, None))
        .unwrap();
    std::fs::write(store.licenses_dir().join("broken.jwt"), "xyz").unwrap();
    let config = BASE_CONFIG.to_string()
        + &format!(
            "[license]\npublic_keys = [{{ path = \"{}\" }}]\nissuer = \"Vendor\"\nstore_dir = \"{}\"\ninstance_id = \"{INSTANCE}\"\n",
            vendor.public.display(),
            dir.path().join("store").display()
        );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let gw = Gateway::start_with(&config, dead_addr()).await;
        let logs = gw.logs();
        assert!(logs.contains("license file skipped"), "{logs}");
        assert!(logs.contains("broken.jwt"), "{logs}");
        assert!(logs.contains("tenant=default status=VALID"), "{logs}");
        assert!(
            !logs.contains(&vendor.sign(&c, None)[..40]),
            "tokens are never logged"
        );
    });
}

#[test]
fn installing_twice_is_idempotent_and_a_reused_id_is_refused() {
    let vendor = Vendor::new(Algorithm::EdDSA);
    let dir = tempfile::tempdir().unwrap();
    let manager = manager_for(&vendor, dir.path().to_path_buf(), Arc::new(SystemClock));
    let mut a = claims("acme", now(), 30);
    a.jti = "L-7".into();
    let token = vendor.sign(&a, None);
    manager.install(&token).unwrap();
    manager.install(&token).unwrap();
    assert_eq!(
        manager.snapshot().tenant("acme").unwrap().license_ids,
        vec!["L-7"]
    );
    let mut b = claims("globex", now(), 30);
    b.jti = "L-7".into();
    let err = manager.install(&vendor.sign(&b, None)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "another license file already uses the license id L-7; remove it first"
    );
    assert_eq!(manager.snapshot().status("globex"), Status::Unlicensed);
}

#[test]
fn a_store_change_verifies_only_the_files_that_changed() {
    let vendor = Vendor::new(Algorithm::EdDSA);
    let stranger = Vendor::new(Algorithm::EdDSA);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let tenants = ["acme", "globex", "initech"];
    let mut tokens = Vec::new();
    for tenant in tenants {
        let c = claims(tenant, now(), 30);
        let token = vendor.sign(&c, None);
        store.install(tenant, &c.jti, &token).unwrap();
        tokens.push((c, token));
    }
    let manager = manager_for(&vendor, dir.path().to_path_buf(), Arc::new(SystemClock));
    let counts = manager.last_reload();
    assert_eq!((counts.verified, counts.unchanged), (3, 0));

    // globex's file is replaced by a token that does not verify: only it is read
    // and verified again, and it stops granting anything.
    let globex_file = store
        .licenses_dir()
        .join(licgate::license::store::license_file_name(
            "globex",
            &tokens[1].0.jti,
        ));
    std::fs::write(&globex_file, stranger.sign(&tokens[1].0, None)).unwrap();
    assert!(manager.refresh());
    let counts = manager.last_reload();
    assert_eq!(
        (counts.verified, counts.unchanged, counts.skipped),
        (0, 2, 1)
    );
    let snap = manager.snapshot();
    assert_eq!(snap.status("acme"), Status::Valid);
    assert_eq!(snap.status("globex"), Status::Invalid);
    assert_eq!(snap.status("initech"), Status::Valid);
    drop(snap);

    // Rewritten with a good token again (same length, same second): verified again.
    std::fs::write(&globex_file, &tokens[1].1).unwrap();
    assert!(manager.refresh());
    assert_eq!(manager.last_reload().verified, 1);
    assert_eq!(manager.snapshot().status("globex"), Status::Valid);

    // A copy of acme's license under another name: the first file by name wins.
    std::fs::write(store.licenses_dir().join("zz-copy.jwt"), &tokens[0].1).unwrap();
    assert!(
        !manager.refresh(),
        "the copy changes no tenant: nothing is published"
    );
    let counts = manager.last_reload();
    assert_eq!(
        (counts.verified, counts.unchanged, counts.duplicates),
        (1, 3, 1)
    );
    let snap = manager.snapshot();
    assert_eq!(
        snap.tenant("acme").unwrap().license_ids,
        vec![tokens[0].0.jti.clone()]
    );
    drop(snap);

    // A removed file takes its tenant with it, without reading the store; the next
    // refresh reads it and finds nothing else changed (the duplicate is not kept, so
    // it is verified again each time, like a bad file, but changes nothing).
    assert!(manager.remove("initech", &tokens[2].0.jti).unwrap());
    assert_eq!(manager.snapshot().status("initech"), Status::Unlicensed);
    assert_eq!(manager.snapshot().status("acme"), Status::Valid);
    assert!(!manager.refresh(), "nothing changed since the removal");
    let counts = manager.last_reload();
    assert_eq!(
        (counts.verified, counts.unchanged, counts.duplicates),
        (1, 2, 1)
    );
    assert!(
        !manager.refresh(),
        "nothing changed: the store is not read again"
    );

    // New verification settings (only the stranger's key): every file again.
    manager.reconfigure(LicenseSettings {
        verifier: verifier(vec![stranger.public_key(None)]),
        policy: StatusPolicy::default(),
        rollback_tolerance_secs: 600,
    });
    let counts = manager.last_reload();
    assert_eq!((counts.verified, counts.skipped), (0, 3));
    assert_eq!(manager.snapshot().status("acme"), Status::Invalid);
}

/// Runs `script` with the end-to-end virtualenv's Python (PyJWT, cryptography).
fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new(crate::common::apps::venv_bin("python"))
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `licgate license keygen` keys work with the tools vendors sign with: OpenSSL reads
/// the private key, PyJWT signs with it and licgate verifies, licgate signs and PyJWT
/// verifies with the public key.
#[test]
fn keygen_keys_interoperate_with_openssl_and_pyjwt() {
    let vendor = Vendor::new(Algorithm::EdDSA);
    let out = Command::new("openssl")
        .args(["pkey", "-noout", "-text", "-in"])
        .arg(&vendor.private)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "OpenSSL refuses the key: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ED25519 Private-Key"));
    let out = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&vendor.private)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(&vendor.public).unwrap(),
        "OpenSSL derives the same public key"
    );

    // PyJWT signs a license with the private key; licgate verifies it.
    let now = SystemClock.now();
    let claims = serde_json::json!({
        "iss": "Vendor", "sub": "cust-1", "aud": "*", "jti": "py-1", "iat": now,
        "exp": now + 30 * DAY, "tenant": "default", "tier": "pro", "features": ["sales"],
    });
    let token = python(
        "import jwt, sys, json\n\
         key = open(sys.argv[1]).read()\n\
         print(jwt.encode(json.loads(sys.argv[2]), key, algorithm='EdDSA'))",
        &[vendor.private.to_str().unwrap(), &claims.to_string()],
    );
    let verifier = Verifier::without_audience_check(vec![vendor.public_key(None)]);
    let license = verifier
        .verify(&token)
        .expect("licgate verifies PyJWT's token");
    assert_eq!(license.claims.jti, "py-1");
    assert_eq!(license.claims.tenant, "default");

    // licgate signs; PyJWT verifies with the public key (and refuses a tampered token).
    let ours = vendor.sign(&license.claims, None);
    let verified = python(
        "import jwt, sys\n\
         key = open(sys.argv[1]).read()\n\
         claims = jwt.decode(sys.argv[2], key, algorithms=['EdDSA'], options={'verify_aud': False})\n\
         print(claims['jti'], claims['tenant'])\n\
         try:\n    jwt.decode(sys.argv[2][:-4] + 'AAAA', key, algorithms=['EdDSA'], options={'verify_aud': False})\n    print('tampered accepted')\n\
         except jwt.InvalidSignatureError:\n    print('tampered refused')",
        &[vendor.public.to_str().unwrap(), &ours],
    );
    assert_eq!(verified, "py-1 default\ntampered refused");
}

/// One install path for the activation page and the admin API: verified once, and a
/// license for another tenant is refused with a typed error before anything is written.
#[test]
fn install_for_a_tenant_refuses_another_tenants_license_and_writes_nothing() {
    use licgate::license::manager::InstallError;
    let vendor = Vendor::new(Algorithm::EdDSA);
    let dir = tempfile::tempdir().unwrap();
    let manager = manager_for(&vendor, dir.path().to_path_buf(), Arc::new(SystemClock));
    let c = claims("acme", now(), 30);
    let token = vendor.sign(&c, None);
    match manager.install_for(&token, "globex") {
        Err(InstallError::TenantMismatch { license, expected }) => {
            assert_eq!((license.as_str(), expected.as_str()), ("acme", "globex"));
        }
        other => panic!("{other:?}"),
    }
    let files = std::fs::read_dir(manager.store().licenses_dir())
        .unwrap()
        .count();
    assert_eq!(files, 0, "nothing written");
    assert_eq!(manager.snapshot().status("globex"), Status::Unlicensed);
    let installed = manager.install_for(&token, "acme").unwrap();
    assert_eq!(installed.jti, c.jti);
    assert_eq!(installed.summary.status, Status::Valid);
}

/// Hundreds of files are verified on every core: each verified once, the bad one
/// reported, every tenant present, and a second scan verifies nothing again.
#[test]
fn many_files_are_verified_in_parallel_and_nothing_is_lost() {
    let vendor = Vendor::new(Algorithm::EdDSA);
    let dir = tempfile::tempdir().unwrap();
    let licenses = dir.path().join("licenses");
    std::fs::create_dir_all(&licenses).unwrap();
    const FILES: usize = 600;
    for i in 0..FILES {
        let token = vendor.sign(&claims(&format!("t{i:04}"), now(), 30), None);
        std::fs::write(licenses.join(format!("t{i:04}.jwt")), token).unwrap();
    }
    std::fs::write(licenses.join("t0300-bad.jwt"), "not.a.token").unwrap();
    let manager = manager_for(&vendor, dir.path().to_path_buf(), Arc::new(SystemClock));
    let snapshot = manager.snapshot();
    assert_eq!(snapshot.tenants.len(), FILES);
    for i in 0..FILES {
        assert_eq!(
            snapshot.status(&format!("t{i:04}")),
            Status::Valid,
            "t{i:04}"
        );
    }
    assert_eq!(snapshot.problems.len(), 1, "{:?}", snapshot.problems);
    let counts = manager.last_reload();
    assert_eq!((counts.verified, counts.skipped), (FILES, 1));
    // One more file: only it is verified.
    let token = vendor.sign(&claims("late", now(), 30), None);
    std::fs::write(licenses.join("late.jwt"), token).unwrap();
    assert!(manager.refresh());
    let counts = manager.last_reload();
    assert_eq!(
        (counts.verified, counts.unchanged),
        (1, FILES),
        "{counts:?}"
    );
    assert_eq!(manager.snapshot().tenants.len(), FILES + 1);
}

#[test]
fn verifying_many_tokens_at_once_gives_each_the_answer_of_verifying_it_alone() {
    let vendor = Vendor::new(Algorithm::EdDSA);
    let other = Vendor::new(Algorithm::EdDSA);
    let ec = Vendor::new(Algorithm::ES256);
    let verifier = verifier(vec![
        vendor.public_key(None),
        other.public_key(Some("k2")),
        ec.public_key(None),
    ]);
    let good = |i: usize| vendor.sign(&claims(&format!("t{i}"), now(), 30), None);
    let mut tokens: Vec<String> = (0..600).map(good).collect();
    // Among them: a wrong signature, a changed payload, a wrong issuer, another
    // vendor's key by kid, an unknown kid, ES256, garbage, an empty token, a header
    // that jsonwebtoken refuses, and a good signature over a payload that is not JSON.
    tokens[5] = {
        let t = good(5);
        let (input, _) = t.rsplit_once('.').unwrap();
        format!("{input}.{}", b64(&[7u8; 64]))
    };
    tokens[300] = {
        let t = good(300);
        let parts: Vec<&str> = t.split('.').collect();
        let mut c = claims("t300", now(), 30);
        c.tenant = "someone-else".into();
        format!(
            "{}.{}.{}",
            parts[0],
            b64(&serde_json::to_vec(&c).unwrap()),
            parts[2]
        )
    };
    tokens[301] = {
        let mut c = claims("t301", now(), 30);
        c.iss = Some("Impostor".into());
        vendor.sign(&c, None)
    };
    tokens[302] = other.sign(&claims("t302", now(), 30), Some("k2"));
    tokens[303] = other.sign(&claims("t303", now(), 30), Some("k9"));
    tokens[304] = ec.sign(&claims("t304", now(), 30), None);
    tokens[305] = "not.a.token".into();
    tokens[306] = String::new();
    tokens[307] = sign_raw(
        &serde_json::json!({"alg": "EdDSA", "typ": 7}),
        &serde_json::to_value(claims("t307", now(), 30)).unwrap(),
        &vendor,
    );
    tokens[308] = {
        let header = b64(br#"{"alg":"EdDSA","typ":"JWT"}"#);
        let payload = b64(b"{not json");
        let input = format!("{header}.{payload}");
        let key = vendor.signing_key();
        let signature =
            jsonwebtoken::crypto::sign(input.as_bytes(), &key.key, key.alg.jwt()).unwrap();
        format!("{input}.{signature}")
    };
    // Signed, but with claims of the wrong types (what jsonwebtoken's own validation
    // reads leniently): both paths give the claims' reason.
    tokens[309] = sign_raw(
        &serde_json::json!({"alg": "EdDSA", "typ": "JWT"}),
        &serde_json::json!({"tenant": "t309", "jti": "j309", "exp": "soon", "aud": 5, "iss": ["Vendor"]}),
        &vendor,
    );
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let together = verifier.verify_many(&refs);
    let alone: Vec<_> = refs.iter().map(|t| verifier.verify(t)).collect();
    assert_eq!(together, alone);
    let refused: Vec<usize> = (0..alone.len()).filter(|&i| alone[i].is_err()).collect();
    assert_eq!(refused, [5, 300, 301, 303, 305, 306, 307, 308, 309]);
    assert_eq!(alone[302].as_ref().unwrap().kid.as_deref(), Some("k2"));
    assert_eq!(alone[304].as_ref().unwrap().alg, Algorithm::ES256);
}

#[test]
fn seats_overage_and_restrictions_are_issued_and_read_back() {
    let mut args = issue_args("acme", 30);
    args.limits = vec![
        "max_seats=25".into(),
        "max_active_users=40".into(),
        "overage=1.25".into(),
    ];
    args.allowed_networks = vec!["10.0.0.0/8".into(), "2001:db8::/32".into()];
    args.denied_networks = vec!["10.66.0.0/16".into()];
    args.allowed_countries = vec!["de".into()];
    let claims = issue_claims(&args, 1_900_000_000).unwrap();
    assert_eq!(claims.limits.max_seats, Some(25));
    assert_eq!(claims.limits.active_users(), Some(40));
    let overage = claims.limits.overage.unwrap();
    assert_eq!(overage.allowed(25), 31, "125 % of 25, rounded down");
    assert_eq!(claims.restrictions.allowed_countries[0].as_str(), "DE");
    // Through the token's JSON and back, unchanged.
    let json = claims.to_json();
    assert_eq!(json["limits"]["overage"], 1.25);
    assert_eq!(json["restrictions"]["allowed_networks"][1], "2001:db8::/32");
    assert_eq!(Claims::try_from(&json).unwrap(), claims);

    for (limits, networks, countries, expected) in [
        (
            vec!["overage=0.5"],
            vec![],
            vec![],
            "overage must be from 1 to 10",
        ),
        (
            vec!["overage=lots"],
            vec![],
            vec![],
            "overage must be a number",
        ),
        (
            vec!["max_seats=2.5"],
            vec![],
            vec![],
            "max_seats must be a whole number",
        ),
        (vec!["seats=3"], vec![], vec![], "unknown limit \"seats\""),
        (
            vec![],
            vec!["10.0.0.0/33"],
            vec![],
            "--allowed-network \"10.0.0.0/33\"",
        ),
        (
            vec![],
            vec![],
            vec!["Germany"],
            "--allowed-country \"Germany\"",
        ),
    ] {
        let mut args = issue_args("acme", 30);
        args.limits = limits.into_iter().map(String::from).collect();
        args.allowed_networks = networks.into_iter().map(String::from).collect();
        args.allowed_countries = countries.into_iter().map(String::from).collect();
        let err = issue_claims(&args, 1_900_000_000).unwrap_err();
        assert!(err.contains(expected), "{err}");
    }
    // A token whose restriction is not a network names the claim.
    let mut bad = claims.to_json();
    bad["restrictions"]["denied_networks"] = serde_json::json!(["everywhere"]);
    let err = Claims::try_from(&bad).unwrap_err().to_string();
    assert!(err.starts_with("claim `restrictions` is invalid"), "{err}");
    let mut bad = claims.to_json();
    bad["limits"]["overage"] = serde_json::json!(50);
    let err = Claims::try_from(&bad).unwrap_err().to_string();
    assert!(
        err.contains("overage 50 is not a factor from 1 to 10"),
        "{err}"
    );
}
