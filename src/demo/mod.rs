//! `licgate demo`: the demo upstream app plus the gateway in front of it, on localhost.

pub mod app;

use std::net::SocketAddr;
use std::path::Path;

use crate::config::Config;
use crate::license::claims::FeatureLimits;
use crate::license::clock::{Clock, SystemClock};
use crate::license::keys::{self, SigningKey};
use crate::license::store::Store;
use crate::license::{Claims, Limits, UnixTime};
use crate::server::{self, ServeError};
use pingora::server::ShutdownWatch;
use pingora::services::background::{background_service, BackgroundService};

/// The demo configuration template (`@LISTEN@`, `@ADMIN@`, `@APP@`, `@KEY@`,
/// `@STORE@`, `@TOKEN@`, `@AUTHORITY@` are filled in).
pub const DEMO_CONFIG_TEMPLATE: &str = include_str!("../../config/demo.toml");

/// The demo license's plan: professional, without `manufacturing`, 100 requests/hour.
pub const DEMO_FEATURES: &[&str] = &["sales", "hr", "reports"];

/// Where the demo listens.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The gateway's client listener.
    pub listen: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The demo app's listener (port 0 picks a free port).
    pub app: SocketAddr,
}

/// The demo configuration for the given addresses, with the vendor key, store and
/// admin token in `dir`, written to `dir/licgate.toml` (so reloads and the file
/// watcher work in the demo too) and loaded from there.
pub fn demo_config(
    listen: SocketAddr,
    admin: SocketAddr,
    app: SocketAddr,
    authority: &str,
    dir: &Path,
) -> Result<Config, ServeError> {
    let text = DEMO_CONFIG_TEMPLATE
        .replace("@AUTHORITY@", authority)
        .replace("@LISTEN@", &listen.to_string())
        .replace("@ADMIN@", &admin.to_string())
        .replace("@APP@", &app.to_string())
        .replace(
            "@KEY@",
            &dir.join("keys/vendor.pub.pem").display().to_string(),
        )
        .replace("@STORE@", &dir.join("store").display().to_string())
        .replace("@TOKEN@", &dir.join("admin.token").display().to_string());
    let path = dir.join("licgate.toml");
    crate::license::store::write_atomically(&path, text.as_bytes())?;
    Ok(Config::load(&path)?)
}

/// `bytes` random bytes as lowercase hex.
fn random_hex(bytes: usize) -> String {
    use ring::rand::SecureRandom as _;
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .expect("system randomness available");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes a throwaway vendor key pair in `dir/keys`, installs a demo license for
/// tenant `default` in `dir/store` (professional: no manufacturing), and writes a
/// second, enterprise license (with manufacturing) to `dir/enterprise-license.jwt`
/// for the user to activate. Returns the installed token.
pub fn prepare_demo_license(dir: &Path, now: UnixTime) -> Result<String, ServeError> {
    let other = |e: String| ServeError::Io(std::io::Error::other(e));
    let pair = keys::generate_ed25519();
    let (private, _public) =
        keys::write_key_pair(&dir.join("keys"), &pair).map_err(|e| other(e.to_string()))?;
    let signing = SigningKey::load(&private).map_err(|e| other(e.to_string()))?;
    let mut limits = Limits::default();
    limits.set("requests_per_hour", 100);
    limits.set("max_concurrent_connections", 20);
    let mut feature_limits = std::collections::BTreeMap::new();
    feature_limits.insert(
        "reports".to_string(),
        FeatureLimits {
            requests_per_day: Some(20),
            ..FeatureLimits::default()
        },
    );
    let claims = Claims {
        iss: Some("licgate demo vendor".into()),
        sub: Some("demo-customer".into()),
        aud: vec!["demo-instance".into()],
        jti: "demo-license-1".into(),
        iat: Some(now),
        nbf: None,
        exp: now + 30 * 86_400,
        tenant: "default".into(),
        tier: Some("professional".into()),
        tier_name: Some("Professional".into()),
        features: DEMO_FEATURES.iter().map(|f| f.to_string()).collect(),
        limits,
        feature_limits,
        restrictions: Default::default(),
        flags: vec!["trial".into()],
        grace_days: None,
        read_only_days: None,
        license_exp: None,
    };
    let token = crate::license::sign(&claims, &signing, None).map_err(|e| other(e.to_string()))?;
    Store::open(&dir.join("store"))?.install(&claims.tenant, &claims.jti, &token)?;
    let enterprise = Claims {
        jti: "demo-license-2".into(),
        tier: Some("enterprise".into()),
        tier_name: Some("Enterprise".into()),
        features: DEMO_FEATURES
            .iter()
            .chain(&["manufacturing_module"])
            .map(|f| f.to_string())
            .collect(),
        flags: vec![],
        ..claims
    };
    let second =
        crate::license::sign(&enterprise, &signing, None).map_err(|e| other(e.to_string()))?;
    crate::license::store::write_atomically(
        &dir.join("enterprise-license.jwt"),
        format!("{second}\n").as_bytes(),
    )?;
    Ok(token)
}

/// The embedded license server of the demo, and what it issued.
pub struct DemoAuthority {
    pub url: String,
    /// Its admin token.
    pub token: String,
    /// The demo license key (an add-on with `manufacturing_module`).
    pub key: String,
    pub license_id: String,
}

/// Starts a license server in `dir/authority` (SQLite, signing with the demo vendor
/// key of `dir/keys`) and issues a license key for tenant `default` that adds
/// `manufacturing_module` and 100 requests/hour, heartbeats every 10 s.
pub fn start_demo_authority(dir: &Path) -> Result<DemoAuthority, ServeError> {
    let other = |e: String| ServeError::Io(std::io::Error::other(e));
    let home = dir.join("authority");
    std::fs::create_dir_all(&home)?;
    let token = random_hex(16);
    crate::license::store::write_atomically(&home.join("admin.token"), token.as_bytes())?;
    let config_path = home.join("authority.toml");
    crate::license::store::write_atomically(
        &config_path,
        b"listen = \"127.0.0.1:0\"\ndatabase = \"sqlite://authority.db\"\n[signing]\nkey = \"../keys/vendor.key.pem\"\nissuer = \"licgate demo vendor\"\n[admin]\ntoken_file = \"admin.token\"\n",
    )?;
    let config = crate::authority::config::AuthorityConfig::load(&config_path)
        .map_err(|e| other(e.lines().join("; ")))?;
    let addr = crate::authority::server::spawn(config).map_err(|e| other(e.to_string()))?;
    let url = format!("http://{addr}");
    let client = crate::authority::client::AdminClient::new(&url, &home.join("admin.token"))
        .map_err(|e| other(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let issued = runtime
        .block_on(async {
            client
                .call(
                    reqwest::Method::POST,
                    "/policies",
                    Some(&serde_json::json!({
                        "name": "demo-manufacturing",
                        "tier": "professional",
                        "tier_name": "Manufacturing add-on",
                        "features": ["manufacturing_module"],
                        "limits": {"requests_per_hour": 100},
                        "max_activations": 1,
                        "duration_days": 30,
                        "token_ttl": 3600,
                        "heartbeat_interval": 10,
                    })),
                )
                .await?;
            client
                .call(
                    reqwest::Method::POST,
                    "/licenses",
                    Some(&serde_json::json!({
                        "policy": "demo-manufacturing",
                        "tenant": "default",
                        "customer": "Demo customer",
                    })),
                )
                .await
        })
        .map_err(|e| other(format!("the demo license server: {e}")))?;
    let text = |key: &str| issued[key].as_str().unwrap_or_default().to_string();
    Ok(DemoAuthority {
        url,
        token,
        key: text("key"),
        license_id: text("id"),
    })
}

/// The demo app as a background service of the gateway's server (it stops when the
/// server's shutdown begins).
struct DemoApp(std::sync::Mutex<Option<std::net::TcpListener>>);

#[async_trait::async_trait]
impl BackgroundService for DemoApp {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(listener) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, "cannot serve the demo app");
                return;
            }
        };
        tokio::select! {
            _ = app::serve(listener) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Runs the gateway in front of the demo app (a service of the same server) until
/// SIGTERM/SIGINT.
pub fn run(options: DemoOptions) -> Result<(), ServeError> {
    let listener = std::net::TcpListener::bind(options.app).map_err(|source| ServeError::Bind {
        addr: options.app,
        what: "demo app",
        source,
    })?;
    listener.set_nonblocking(true).map_err(ServeError::Io)?;
    let app_addr = listener.local_addr().map_err(ServeError::Io)?;

    let dir = std::env::temp_dir().join(format!("licgate-demo-{}", std::process::id()));
    prepare_demo_license(&dir, SystemClock.now())?;
    let token = random_hex(16);
    crate::license::store::write_atomically(&dir.join("admin.token"), token.as_bytes())?;
    let authority = start_demo_authority(&dir)?;
    let config = demo_config(
        options.listen,
        options.admin,
        app_addr,
        &authority.url,
        &dir,
    )?;
    crate::logging::init(&config.log);
    let gateway = config.server.listen[0];
    println!("licgate demo");
    println!("  demo app (upstream):  http://{app_addr}/");
    println!("  gateway:              http://{gateway}/");
    println!(
        "  admin:                http://{}/healthz",
        config.admin.listen
    );
    println!();
    println!("Try:");
    println!("  open http://{gateway}/ in a browser (the demo app, through the gateway)");
    println!("  curl -s http://{gateway}/api/sales/orders?page=2    # JSON echo: see the X-Forwarded-* headers added");
    println!("  curl -s -H 'X-Licgate-Tenant: spoofed' http://{gateway}/api/hr/employees    # client X-Licgate-* is stripped");
    println!("  curl -s http://{gateway}/api/manufacturing/plan    # 403 FEATURE_NOT_LICENSED: the demo plan lacks manufacturing_module");
    println!("  open http://{gateway}/api/manufacturing/plan in a browser  # the page naming the feature and the plan");
    println!("  curl -s http://{gateway}/_licgate/status         # the license summary");
    println!("  open http://{gateway}/_licgate/activate          # the activation page (instance id, status, key form)");
    let admin = config.admin.listen;
    println!("  curl -s http://{admin}/readyz");
    println!("  curl -s http://{admin}/metrics | grep '^licgate_'      # Prometheus metrics");
    println!("  curl -s -H 'Authorization: Bearer {token}' http://{admin}/admin/v1/tenants/default   # admin API: license and live usage");
    println!("  open http://{admin}/admin/ in a browser, sign in with the admin token   # the usage page: requests by feature, quotas, advice");
    println!("  curl -s -H 'Authorization: Bearer {token}' http://{admin}/admin/v1/tenants/default/usage   # the usage ledger, per day");
    println!(
        "  (the admin token is in {}; edit {} and it reloads by itself)",
        dir.join("admin.token").display(),
        dir.join("licgate.toml").display()
    );
    println!();
    println!(
        "Demo license (tenant default, tier professional, features {}, 100 requests/hour,",
        DEMO_FEATURES.join(", ")
    );
    println!(
        "no manufacturing_module; 30 days; throwaway key and store in {}):",
        dir.display()
    );
    println!(
        "  licgate license inspect {} --public-key {}",
        dir.join("store/licenses/default--demo-license-1.jwt")
            .display(),
        dir.join("keys/vendor.pub.pem").display()
    );

    println!("Activate the second demo key (Enterprise, with manufacturing_module), then retry manufacturing:");
    println!(
        "  curl -s -H 'Content-Type: application/json' http://{gateway}/_licgate/activate -d \"{{\\\"license_key\\\": \\\"$(cat {})\\\"}}\"",
        dir.join("enterprise-license.jwt").display()
    );
    println!("  (or paste the file's content into the activation page)");
    println!();
    println!(
        "License server (embedded, SQLite in {}): {}",
        dir.join("authority").display(),
        authority.url
    );
    println!("Paste this license key on http://{gateway}/_licgate/activate (it adds manufacturing_module and 100 requests/hour; heartbeats every 10 s):");
    println!("  {}", authority.key);
    println!(
        "  curl -s -H 'Content-Type: application/json' http://{gateway}/_licgate/activate -d '{{\"license_key\": \"{}\"}}'",
        authority.key
    );
    println!("  curl -s http://{gateway}/api/manufacturing/plan    # now served");
    println!(
        "Revoke it at the license server and watch the gateway refuse within one heartbeat (10 s):"
    );
    println!(
        "  curl -s -X POST -H 'Authorization: Bearer {}' {}/admin/v1/licenses/{}/revoke",
        authority.token, authority.url, authority.license_id
    );
    println!(
        "  curl -s http://{gateway}/api/manufacturing/plan    # 403 FEATURE_NOT_LICENSED again"
    );
    println!(
        "  (the vendor CLI: LICGATE_AUTHORITY_URL={} LICGATE_AUTHORITY_TOKEN_FILE={} licgate authority license list)",
        authority.url,
        dir.join("authority/admin.token").display()
    );
    println!("Press Ctrl+C to stop (in-flight requests are drained).");
    let demo_app = DemoApp(std::sync::Mutex::new(Some(listener)));
    server::run_with(config, move |server| {
        server.add_service(background_service("demo app", demo_app));
    })
}
