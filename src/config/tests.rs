use std::path::Path;
use std::time::Duration;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("t.toml"))
}

#[test]
fn defaults_fill_every_optional_key() {
    let c = parse("[upstream]\naddress = \"app.internal:8069\"\n").unwrap();
    assert_eq!(c.mode, Mode::Enforce);
    assert_eq!(c.server.listen, vec!["0.0.0.0:8080".parse().unwrap()]);
    assert_eq!(c.server.threads, default_threads());
    assert_eq!(c.server.shutdown_timeout, Duration::from_secs(30));
    assert!(c.server.trusted_proxies.is_empty());
    assert_eq!(c.upstream.address.to_string(), "app.internal:8069");
    assert_eq!(c.upstream.sni, "app.internal");
    assert!(!c.upstream.tls);
    assert!(c.upstream.verify_cert);
    assert_eq!(c.upstream.host_header, None);
    assert_eq!(c.upstream.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.upstream.keepalive_pool_size, 128);
    assert_eq!(c.admin.listen, "127.0.0.1:9901".parse().unwrap());
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.log.level, "info");
}

#[test]
fn example_config_matches_documented_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_CONFIG_PATH);
    let c = Config::load(&path).unwrap();
    assert_eq!(c.upstream.address.to_string(), "127.0.0.1:8000");
    assert_eq!(c.server.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(c.upstream.idle_timeout, Duration::from_secs(60));
}

#[test]
fn every_key_is_accepted_and_used() {
    let c = parse(
        r#"
mode = "shadow"
[server]
listen = ["127.0.0.1:8080", "[::1]:8080"]
threads = 3
trusted_proxies = ["10.0.0.0/8", "192.168.1.1"]
shutdown_timeout = "2s"
[upstream]
address = "[::1]:8443"
tls = true
sni = "app.example.com"
verify_cert = false
host_header = "app.example.com"
connect_timeout = "250ms"
read_timeout = "2m"
write_timeout = "3s"
idle_timeout = "4s"
keepalive_pool_size = 7
[admin]
listen = "0.0.0.0:9999"
[log]
format = "json"
level = "licgate=debug,pingora=warn"
"#,
    )
    .unwrap();
    assert_eq!(c.mode, Mode::Shadow);
    assert_eq!(c.server.listen.len(), 2);
    assert_eq!(c.server.threads, 3);
    assert_eq!(c.server.trusted_proxies.len(), 2);
    assert_eq!(c.server.shutdown_timeout, Duration::from_secs(2));
    assert_eq!(c.upstream.address.host, "::1");
    assert_eq!(c.upstream.address.to_string(), "[::1]:8443");
    assert!(c.upstream.tls);
    assert_eq!(c.upstream.sni, "app.example.com");
    assert!(!c.upstream.verify_cert);
    assert_eq!(c.upstream.host_header.as_deref(), Some("app.example.com"));
    assert_eq!(c.upstream.connect_timeout, Duration::from_millis(250));
    assert_eq!(c.upstream.read_timeout, Duration::from_secs(120));
    assert_eq!(c.upstream.write_timeout, Duration::from_secs(3));
    assert_eq!(c.upstream.idle_timeout, Duration::from_secs(4));
    assert_eq!(c.upstream.keepalive_pool_size, 7);
    assert_eq!(c.admin.listen.port(), 9999);
    assert_eq!(c.log.format, LogFormat::Json);
}

#[test]
fn errors_are_sorted_by_position_and_located() {
    let err =
        parse("[upstream]\naddress = \"x\"\n[server]\nthreads = 5000\nlisten = []\n").unwrap_err();
    let lines = err.lines();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].starts_with("t.toml:2:11: upstream.address"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("t.toml:4:11: server.threads"),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with("t.toml:5:10: server.listen is empty"),
        "{lines:?}"
    );
}

#[test]
fn duplicate_listen_addresses_are_rejected() {
    let err = parse(
        "[server]\nlisten = [\"127.0.0.1:1\", \"127.0.0.1:1\"]\n[upstream]\naddress = \"h:1\"\n",
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("t.toml:2:26: server.listen names 127.0.0.1:1 twice"),
        "{err}"
    );
}

#[test]
fn bad_trusted_proxy_and_host_header_are_located() {
    let err = parse(
        "[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n[upstream]\naddress = \"h:1\"\nhost_header = \"a b\"\n",
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("t.toml:2:20: server.trusted_proxies: `10.0.0.0/33`"),
        "{text}"
    );
    assert!(
        text.contains("t.toml:5:15: upstream.host_header must be"),
        "{text}"
    );
}

#[test]
fn policy_sections_are_validated() {
    let c = parse(
        r#"
[upstream]
address = "h:1"
[tenants]
mode = "host"
host_pattern = "{tenant}.shop.example.com"
[paths]
case_insensitive = true
path_params = "strip"
[public]
paths = ["/static/", "/favicon.ico"]
[[features]]
prefix = "/api/manufacturing/"
feature = "manufacturing_module"
[[features]]
prefix = "/api/reports"
feature = "reports_write"
methods = ["post", "PUT"]
mode = "shadow"
[pages]
after_activation = "/accounts/login/"
"#,
    )
    .unwrap();
    match &c.tenants {
        TenantsConfig::Host { pattern } => {
            assert_eq!(pattern.tenant("acme.shop.example.com:8080"), Some("acme"));
            assert_eq!(pattern.tenant("ACME.Shop.Example.com."), Some("ACME"));
            assert_eq!(pattern.tenant("a.b.shop.example.com"), None);
            assert_eq!(pattern.tenant("shop.example.com"), None);
            assert_eq!(pattern.tenant("acme.shop.example.com.evil.com"), None);
            // Found by the fuzzer: non-ASCII once split a character in two (a panic).
            assert_eq!(pattern.tenant("acm\u{e9}.shop.example.com"), None);
            assert_eq!(pattern.tenant("x\u{e9}hop.example.com"), None);
        }
        other => panic!("{other:?}"),
    }
    assert!(c.paths.case_insensitive);
    assert_eq!(c.public_paths, vec!["/static/", "/favicon.ico"]);
    assert_eq!(c.features.len(), 2);
    assert_eq!(
        c.features[1].methods.as_ref().unwrap()[0],
        http::Method::POST
    );
    assert!(c.features[1].shadow);
    assert!(c.features[0].format_suffixes);
    assert_eq!(
        c.paths.method_override,
        crate::policy::path::MethodOverride::Reject,
        "methods rules make method overrides refused by default"
    );
    assert_eq!(c.pages.after_activation, "/accounts/login/");
}

#[test]
fn method_override_and_format_suffixes_can_be_set() {
    use crate::policy::path::MethodOverride;
    let base = "[upstream]\naddress = \"h:1\"\n";
    let c = parse(&format!(
        "{base}[[features]]\nprefix = \"/a\"\nfeature = \"a\"\n"
    ))
    .unwrap();
    assert_eq!(c.paths.method_override, MethodOverride::Allow);
    let c = parse(&format!(
        "{base}[paths]\nmethod_override = \"allow\"\n[[features]]\nprefix = \"/a\"\nfeature = \"a\"\nmethods = [\"POST\"]\nformat_suffixes = false\n"
    ))
    .unwrap();
    assert_eq!(c.paths.method_override, MethodOverride::Allow);
    assert!(!c.features[0].format_suffixes);
    let err = parse(&format!("{base}[paths]\nmethod_override = \"maybe\"\n")).unwrap_err();
    assert!(
        err.to_string()
            .contains("paths.method_override: unknown value `maybe`"),
        "{err}"
    );
}

#[test]
fn policy_section_errors_are_located() {
    let err = parse(
        r#"[upstream]
address = "h:1"
[tenants]
mode = "host"
[public]
paths = ["/a/../b", "/_licgate/x"]
[[features]]
prefix = "api/x"
feature = "bad name"
methods = ["G ET"]
[pages]
after_activation = "//evil.example"
"#,
    )
    .unwrap_err();
    let text = err.to_string();
    for expected in [
        "t.toml:4:8: tenants.mode = \"host\" needs tenants.host_pattern",
        "t.toml:6:10: public.paths: `/a/../b` must be a normalized path",
        "t.toml:6:21: public.paths: `/_licgate/x` is reserved",
        "t.toml:8:10: features[0].prefix: `api/x` must be a normalized path",
        "t.toml:9:11: features[0].feature must be a name",
        "t.toml:10:12: features[0].methods: `G ET` is not an HTTP method",
        "t.toml:12:20: pages.after_activation must be a path on this site",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn odoo_models_and_their_errors_are_located() {
    let c = parse(
        r#"[upstream]
address = "h:1"
[odoo]
enabled = true
max_rpc_body = 4096
[[features]]
models = ["mrp.*", "quality.check"]
feature = "manufacturing"
methods = ["write"]
[[features]]
prefix = "/shop/"
models = ["website.*"]
feature = "shop"
mode = "shadow"
"#,
    )
    .unwrap();
    assert!(c.odoo.enabled);
    assert_eq!(c.odoo.max_rpc_body, 4096);
    assert_eq!(c.model_rules.len(), 3);
    assert_eq!(
        c.model_rules[0].methods.as_deref(),
        Some(&["write".to_string()][..])
    );
    assert!(c.model_rules[2].shadow);
    assert_eq!(c.features.len(), 1, "the path side of the second entry");
    assert_eq!(&*c.features[0].feature, "shop");
    assert_eq!(
        parse("[upstream]\naddress = \"h:1\"\n")
            .unwrap()
            .odoo
            .max_rpc_body,
        1 << 20
    );

    let err = parse(
        r#"[upstream]
address = "h:1"
[odoo]
max_rpc_body = 10
[[features]]
models = ["mrp.*", "mrp*"]
feature = "m"
[[features]]
prefix = "/a/"
models = ["a.b"]
methods = ["POST"]
feature = "a"
[[features]]
feature = "nothing"
[[features]]
models = ["x.y"]
methods = ["wr ite"]
feature = "x"
"#,
    )
    .unwrap_err();
    let text = err.to_string();
    for expected in [
        "t.toml:4:16: odoo.max_rpc_body must be between 1024 and 134217728, got 10",
        "t.toml:6:11: features[0].models: model rules need the RPC inspection: set [odoo] enabled = true",
        "t.toml:6:20: features[0].models: `mrp*` is not a model pattern",
        "t.toml:11:12: features[1].methods is ambiguous with both prefix and models",
        "features[2] needs a prefix (a path) or models (Odoo models), or both",
        "t.toml:17:12: features[3].methods: `wr ite` is not an RPC method name",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn quota_section_is_validated() {
    let c = parse("[upstream]\naddress = \"h:1\"\n[quota]\nbackend = \"redis\"\n[quota.redis]\nurl = \"redis://10.0.0.5:6379/2\"\non_error = \"deny\"\nfleet_size = 4\n").unwrap();
    match c.quota {
        QuotaConfig::Redis(r) => {
            assert_eq!(r.url, "redis://10.0.0.5:6379/2");
            assert_eq!(r.on_error, OnRedisError::Deny);
            assert_eq!(r.fleet_size, 4);
            assert_eq!(r.timeout, Duration::from_millis(25));
            assert_eq!(r.key_prefix, "licgate:");
            assert_eq!(r.mode, RedisMode::Slice, "slices by default");
        }
        other => panic!("{other:?}"),
    }
    let exact = parse("[upstream]\naddress = \"h:1\"\n[quota]\nbackend = \"redis\"\n[quota.redis]\nmode = \"exact\"\n").unwrap();
    assert!(matches!(exact.quota, QuotaConfig::Redis(r) if r.mode == RedisMode::Exact));
    let err = parse("[upstream]\naddress = \"h:1\"\n[quota]\nbackend = \"memcached\"\n[quota.redis]\nurl = \"http://x\"\non_error = \"panic\"\nfleet_size = 0\nmode = \"fast\"\n").unwrap_err();
    let text = err.to_string();
    for expected in [
        "t.toml:4:11: quota.backend: unknown backend `memcached`",
        "t.toml:6:7: quota.redis.url must be a redis://",
        "t.toml:7:12: quota.redis.on_error: unknown value `panic`",
        "t.toml:8:14: quota.redis.fleet_size must be between 1 and 10000",
        "t.toml:9:8: quota.redis.mode: unknown value `fast`, expected `slice` or `exact`",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn admin_token_file_is_read_checked_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.token");
    std::fs::write(&good, "  0123456789abcdef0123\n").unwrap();
    std::fs::write(dir.path().join("short.token"), "abc\n").unwrap();
    std::fs::write(dir.path().join("spaced.token"), "0123456789 abcdef0123\n").unwrap();
    let config = |file: &str| {
        format!("[upstream]\naddress = \"127.0.0.1:1\"\n[admin]\ntoken_file = \"{file}\"\n")
    };
    let path = dir.path().join("licgate.toml");
    let c = Config::parse(&config("good.token"), &path).unwrap();
    let token = c.admin.token.clone().expect("token configured");
    assert!(token.matches(b"0123456789abcdef0123"));
    assert!(!token.matches(b"0123456789abcdef012"));
    assert!(
        !format!("{c:?}").contains("0123456789abcdef"),
        "token shown in Debug"
    );
    assert!(c.log.access);
    assert!(c.reload.watch);
    for (file, expected) in [
        ("missing.token", "cannot read the token"),
        ("short.token", "the token has 3 characters; use at least 16"),
        ("spaced.token", "visible ASCII characters without spaces"),
    ] {
        let err = Config::parse(&config(file), &path).unwrap_err().to_string();
        assert!(err.contains("licgate.toml:4:14: admin.token_file"), "{err}");
        assert!(err.contains(expected), "{err}");
    }
    let none = parse("[upstream]\naddress = \"127.0.0.1:1\"\n").unwrap();
    assert_eq!(none.admin.token, None);
}

#[test]
fn log_access_and_reload_watch_can_be_switched_off() {
    let c = parse(
        "[upstream]\naddress = \"127.0.0.1:1\"\n[log]\naccess = false\n[reload]\nwatch = false\n",
    )
    .unwrap();
    assert!(!c.log.access);
    assert!(!c.reload.watch);
    let err = parse("[upstream]\naddress = \"127.0.0.1:1\"\n[reload]\nwach = true\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("t.toml:4:1") && err.contains("wach"), "{err}");
}

#[test]
fn the_authority_section_is_checked_and_located() {
    let err = parse(
        "[upstream]\naddress = \"a:1\"\n[authority]\nurl = \"ftp://licenses.test\"\ntimeout = \"soon\"\n",
    )
    .unwrap_err();
    let lines = err.lines();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("[authority] needs a [license] section")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(
            "t.toml:4:7: authority.url: `ftp://licenses.test`: the scheme must be http or https"
        )),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("t.toml:5:11: authority.timeout")),
        "{lines:?}"
    );
    for (url, says) in [
        ("https://vendor:secret@licenses.test", "carries credentials"),
        ("https://licenses.test/?x=1", "query or a fragment"),
        ("licenses.test", "is not a URL"),
        ("http://", "is not a URL"),
    ] {
        let err = parse(&format!(
            "[upstream]\naddress = \"a:1\"\n[authority]\nurl = \"{url}\"\n"
        ))
        .unwrap_err();
        assert!(
            err.lines().iter().any(|l| l.contains(says)),
            "{url}: {:?}",
            err.lines()
        );
    }
    let err = parse("[upstream]\naddress = \"a:1\"\n[authority]\ntimeout = \"5s\"\n").unwrap_err();
    assert!(err
        .lines()
        .iter()
        .any(|l| l.contains("authority.url is required")));
}

#[test]
fn the_authority_section_with_a_license_store() {
    let dir = tempfile::tempdir().unwrap();
    let pair = crate::license::keys::generate_ed25519();
    crate::license::keys::write_key_pair(dir.path(), &pair).unwrap();
    let text = format!(
        "[upstream]\naddress = \"a:1\"\n[license]\npublic_keys = [{{ path = \"{}\" }}]\nstore_dir = \"{}\"\n[authority]\nurl = \"https://licenses.test/licgate\"\n",
        dir.path().join("vendor.pub.pem").display(),
        dir.path().join("store").display()
    );
    let c = parse(&text).unwrap();
    let a = c.authority.unwrap();
    assert_eq!(a.url.as_str(), "https://licenses.test/licgate");
    assert_eq!(a.timeout, Duration::from_secs(10));
    assert_eq!(a.grace_warning, Duration::from_secs(7 * 86_400));
    assert_eq!(a.ca_file, None);
    assert_eq!(
        &text[a.url_span.clone()],
        "\"https://licenses.test/licgate\""
    );
}
