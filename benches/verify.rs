//! Cost of verifying one license token, per algorithm (signature + claims + binding).
//!
//! `cargo bench --bench verify`. Keys are generated at start: Ed25519 by licgate,
//! P-256 by rcgen, RSA-2048 by `openssl genpkey`.

use std::path::Path;
use std::process::Command;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use licgate::license::keys::{generate_ed25519, Algorithm, PublicKey, SigningKey};
use licgate::license::sign;
use licgate::license::{Claims, Limits, Verifier};

fn claims() -> Claims {
    Claims {
        iss: Some("Vendor".into()),
        sub: Some("customer-1".into()),
        aud: vec!["bench-instance".into()],
        jti: "bench-license".into(),
        iat: Some(1_800_000_000),
        nbf: None,
        exp: 4_000_000_000,
        tenant: "acme".into(),
        tier: Some("professional".into()),
        tier_name: Some("Professional".into()),
        features: vec!["sales".into(), "hr".into(), "reports".into()],
        limits: Limits {
            requests_per_hour: Some(5000),
            ..Limits::default()
        },
        feature_limits: Default::default(),
        restrictions: Default::default(),
        flags: vec![],
        grace_days: None,
        read_only_days: None,
        license_exp: None,
    }
}

/// (private PEM path, public PEM path) for `alg` in `dir`.
fn keys(alg: Algorithm, dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let private = dir.join(format!("{alg}.key.pem"));
    let public = dir.join(format!("{alg}.pub.pem"));
    match alg {
        Algorithm::EdDSA => {
            let pair = generate_ed25519();
            std::fs::write(&private, pair.private_pem).unwrap();
            std::fs::write(&public, pair.public_pem).unwrap();
        }
        Algorithm::ES256 => {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            std::fs::write(&private, key.serialize_pem()).unwrap();
            std::fs::write(&public, key.public_key_pem()).unwrap();
        }
        Algorithm::RS256 => {
            let run = |args: &[&str]| {
                assert!(Command::new("openssl")
                    .args(args)
                    .status()
                    .unwrap()
                    .success());
            };
            let (p, q) = (private.to_str().unwrap(), public.to_str().unwrap());
            run(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                p,
            ]);
            run(&["pkey", "-pubout", "-in", p, "-out", q]);
        }
    }
    (private, public)
}

fn verify(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("verify");
    for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
        let (private, public) = keys(alg, dir.path());
        let token = sign(&claims(), &SigningKey::load(&private).unwrap(), None).unwrap();
        let verifier = Verifier::new(
            vec![PublicKey::load(&public, alg, None).unwrap()],
            Some("Vendor".into()),
            "bench-instance".into(),
            60,
        );
        verifier.verify(&token).expect("bench token verifies");
        group.bench_function(alg.name(), |b| {
            b.iter(|| verifier.verify(black_box(&token)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
