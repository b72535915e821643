//! Writes COUNT signed licenses (tenants `t0` … `t{COUNT-1}`, each with a few
//! features and rate limits) into a license store, for the memory measurement of
//! `load/memory`.
//!
//! Usage: cargo run --release --example gen_licenses -- SIGNING_KEY STORE_DIR COUNT

mod support;

use licgate::license::keys::SigningKey;
use licgate::license::sign;
use licgate::license::store::Store;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, key, store, count] = args.as_slice() else {
        eprintln!("usage: gen_licenses SIGNING_KEY STORE_DIR COUNT");
        std::process::exit(2);
    };
    let key = SigningKey::load(std::path::Path::new(key)).expect("signing key");
    let store = Store::open(std::path::Path::new(store)).expect("store");
    let count: usize = count.parse().expect("COUNT is a number");
    let licenses = store.licenses_dir();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    for i in 0..count {
        let claims = support::tenant_claims(i, now);
        let token = sign(&claims, &key, None).expect("sign");
        // Plain writes (no fsync per file): this is test data, not an installation.
        let path = licenses.join(format!("{}--{}.jwt", claims.tenant, claims.jti));
        std::fs::write(path, token).expect("write license");
    }
}
