//! Fuzz targets: each takes arbitrary bytes, runs one parser that meets client or
//! operator input, and checks what must hold of its result. A panic is a finding.
//!
//! `fuzz/` runs them under libFuzzer (`make fuzz`); `tests/fuzz_corpus.rs` runs them
//! over the seed corpus in `fuzz/corpus/<target>/` on every `make test`.

use std::path::Path;
use std::sync::LazyLock;

use crate::config::{Config, FeatureRule, HostPattern, Mode};
use crate::connection::head::find_head_end;
use crate::license::keys::{generate_ed25519, Algorithm, PublicKey};
use crate::license::verify::unverified_claims;
use crate::license::{Claims, Verifier};
use crate::policy::decide::Policy;
use crate::policy::method::method_override;
use crate::policy::path::{
    normalize, MethodOverride, PathOptions, PathParams, Target as PathTarget,
};
use crate::proxy::activation::parse_submission;
use crate::usage::report::verify as verify_report;

/// `bytes` as text, when they are UTF-8.
fn utf8(bytes: Option<&[u8]>) -> Option<&str> {
    bytes.and_then(|b| std::str::from_utf8(b).ok())
}

/// A fuzz target: arbitrary bytes in, a panic when something that must hold does not.
pub type Target = fn(&[u8]);

/// Every target by name (the corpus folder's name).
pub const TARGETS: &[(&str, Target)] = &[
    ("path", path),
    ("host", host),
    ("token", token),
    ("config", config),
    ("usage_report", usage_report),
    ("admin_session", admin_session),
    ("odoo_rpc", odoo_rpc),
    ("odoo_xmlrpc", odoo_xmlrpc),
    ("odoo_request", odoo_request),
    ("activation_form", activation_form),
    ("request_head", request_head),
    ("authority_input", authority_input),
    ("authority_config", authority_config),
];

static POLICY: LazyLock<Policy> = LazyLock::new(|| {
    let rule = |prefix: &str, feature: &str, methods: Option<Vec<http::Method>>| FeatureRule {
        prefix: prefix.into(),
        feature: feature.into(),
        methods,
        shadow: false,
        format_suffixes: true,
    };
    Policy::new(
        Mode::Enforce,
        &[
            rule("/api/manufacturing/", "manufacturing_module", None),
            rule(
                "/api/orders",
                "orders_write",
                Some(vec![http::Method::POST]),
            ),
            rule("/v1.2/x", "versioned", None),
        ],
        &["/static/".to_string()],
        false,
    )
});

/// Path normalization (with absolute-form splitting), then the feature map and the
/// method-override check on what it yields. A normalized path is canonical: it
/// starts with `/`, has no empty, `.` or `..` segment and no encoded slash, no
/// segment ending in `.` or `~`, and normalizes to itself.
pub fn path(data: &[u8]) {
    for options in [
        PathOptions::default(),
        PathOptions {
            path_params: PathParams::Strip,
            case_insensitive: true,
            method_override: MethodOverride::Reject,
        },
    ] {
        let Ok(PathTarget::Path(p)) = normalize(data, &options) else {
            continue;
        };
        let path = &*p.path;
        assert!(path.starts_with('/'), "{path:?}");
        assert!(!path.contains("//"), "{path:?}");
        for segment in path.split('/').skip(1) {
            assert!(segment != "." && segment != "..", "{path:?}");
            assert!(!segment.ends_with(['.', '~']), "{path:?}");
        }
        let upper = path.to_ascii_uppercase();
        assert!(!upper.contains("%2F") && !upper.contains("%5C") && !upper.contains("%3B"));
        match normalize(path.as_bytes(), &options) {
            Ok(PathTarget::Path(again)) => assert_eq!(again.path, path, "not idempotent"),
            other => panic!("{path:?} does not normalize again: {other:?}"),
        }
        for method in [http::Method::GET, http::Method::POST] {
            let _ = POLICY.feature_for(&method, path);
        }
        let _ = method_override(&http::HeaderMap::new(), p.query);
    }
}

/// Host patterns (tenant from `Host`), local redirect targets, and the client behind
/// a trusted proxy's `X-Forwarded-For`.
pub fn host(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let pattern = HostPattern {
        prefix: String::new(),
        suffix: ".shop.example.com".into(),
    };
    if let Some(tenant) = pattern.tenant(text) {
        assert!(!tenant.is_empty() && tenant.len() <= 63);
        assert!(tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }
    if crate::policy::is_local_path(text) {
        assert!(text.starts_with('/') && !text.starts_with("//"));
    }
    let policy = crate::forwarding::ForwardingPolicy {
        trusted_proxies: vec!["10.0.0.0/8".parse().expect("net")],
        ..Default::default()
    };
    if let Ok(mut req) = pingora::http::RequestHeader::build("GET", b"/", None) {
        if req.append_header("X-Forwarded-For", text).is_ok() {
            let peer = Some("10.1.2.3".parse().expect("ip"));
            let _ = policy.original_client(&req, peer);
        }
    }
}

/// A vendor public key made for the fuzz run.
static VENDOR_KEY: LazyLock<PublicKey> = LazyLock::new(|| {
    let pair = generate_ed25519();
    PublicKey::from_pem(
        pair.public_pem.as_bytes(),
        Algorithm::EdDSA,
        None,
        Path::new("fuzz.pem"),
    )
    .expect("generated key")
});

static KEY: LazyLock<Verifier> =
    LazyLock::new(|| Verifier::without_audience_check(vec![VENDOR_KEY.clone()]));

/// License tokens: the unverified reading (for `license inspect`), the claims'
/// validation, and full verification (which must refuse: nothing here is signed).
pub fn token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((_, payload)) = unverified_claims(text) {
        let _ = Claims::try_from(&payload);
    }
    assert!(KEY.verify(text).is_err(), "an unsigned token verified");
}

/// The configuration loader: never a panic, and every error located `file:line:col`.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Paths in the file are read: keep the fuzzer away from endless device files.
    if ["/dev", "/proc", "/sys"].iter().any(|p| text.contains(p)) {
        return;
    }
    if let Err(e) = Config::parse(text, Path::new("/nonexistent-fuzz/licgate.toml")) {
        for line in e.lines() {
            let rest = line
                .strip_prefix("/nonexistent-fuzz/licgate.toml:")
                .unwrap_or_else(|| panic!("unlocated error: {line}"));
            let mut parts = rest.splitn(3, ':');
            let (l, c) = (parts.next(), parts.next());
            assert!(
                l.is_some_and(|l| l.parse::<usize>().is_ok_and(|n| n >= 1))
                    && c.is_some_and(|c| c.parse::<usize>().is_ok_and(|n| n >= 1)),
                "no line:col: {line}"
            );
        }
    }
}

/// The activation form and JSON body: `next` is only ever a local path outside
/// `/_licgate/`.
pub fn activation_form(data: &[u8]) {
    for json in [false, true] {
        if let Some(s) = parse_submission(data, json) {
            if let Some(next) = &s.next {
                assert!(crate::policy::is_local_path(next) && !next.starts_with("/_licgate"));
            }
        } else {
            assert!(json, "a form always parses");
        }
    }
}

/// The end of a request head is found at the same place however the bytes are
/// split into reads.
pub fn request_head(data: &[u8]) {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let whole = find_head_end(&[bytes]);
    let at = usize::from(split).min(bytes.len());
    let (a, b) = bytes.split_at(at);
    assert_eq!(find_head_end(&[a, b]), whole, "split at {at}");
    let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(find_head_end(&bytewise), whole, "byte by byte");
    if let Some(end) = whole {
        assert!(end >= 2 && end <= bytes.len());
        assert_eq!(bytes[end - 1], b'\n');
    }
}

/// An instance key made for the fuzz run (nothing the fuzzer writes is signed by it).
static INSTANCE_KEY: LazyLock<crate::license::instance_key::InstancePublicKey> =
    LazyLock::new(|| {
        let pem = generate_ed25519().public_pem;
        crate::license::instance_key::InstancePublicKey::from_pem(&pem).expect("generated key")
    });

/// Usage reports as the vendor receives them: never a panic, and never valid (the
/// fuzzer cannot sign with the instance key), alone or after a "previous" report
/// (the input split at its first byte).
pub fn usage_report(data: &[u8]) {
    assert!(
        verify_report(data, &INSTANCE_KEY, None).is_err(),
        "an unsigned report verified"
    );
    if let Some((&split, rest)) = data.split_first() {
        let (file, previous) = rest.split_at(usize::from(split).min(rest.len()));
        assert!(verify_report(file, &INSTANCE_KEY, Some(previous)).is_err());
    }
}

/// The usage page's session cookie and its after-sign-in target: no cookie the
/// fuzzer makes is a session, and sign-in only ever goes to a local `/admin/` path.
pub fn admin_session(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let token = crate::config::AdminToken::new(b"fuzz-admin-token-0123456789");
    assert!(!crate::admin::page::session_valid(
        &token,
        text,
        1_800_000_000
    ));
    let next = crate::admin::page::safe_next(text);
    assert!(
        next.starts_with("/admin/") && !next.contains("//"),
        "{next}"
    );
    let _ = crate::admin::page::percent_decode(text);
}

/// Odoo RPC bodies: never a panic, and whatever model the strict reader finds is the
/// one a lenient reader (serde_json's `Value`, which keeps one of duplicate keys)
/// finds too: no body is read two ways.
pub fn odoo_rpc(data: &[u8]) {
    let lenient = serde_json::from_slice::<serde_json::Value>(data).ok();
    if let Ok(call) = crate::policy::jsonrpc::dataset_call(data) {
        let v = lenient.as_ref().expect("strict JSON is JSON");
        assert_eq!(v["params"]["model"].as_str(), Some(call.model.as_str()));
    }
    if let Ok(Some(call)) = crate::policy::jsonrpc::jsonrpc_call(data) {
        let v = lenient.as_ref().expect("strict JSON is JSON");
        assert_eq!(v["params"]["args"][3].as_str(), Some(call.model.as_str()));
        assert_eq!(v["params"]["args"][4].as_str(), Some(call.method.as_str()));
    }
}

/// Odoo XML-RPC bodies: never a panic (deep nesting, entities, encodings), and a call
/// read is the whole `<methodCall>` read: its 4th and 5th parameters are the strings
/// the call names.
pub fn odoo_xmlrpc(data: &[u8]) {
    if let Ok(call) = crate::policy::xmlrpc::object_call(data) {
        let (method, params) =
            crate::policy::xmlrpc::method_call(data).expect("a call read is a methodCall");
        assert!(method == "execute_kw" || method == "execute", "{method}");
        assert_eq!(params.get(3), Some(&Some(call.model.clone())));
        assert_eq!(params.get(4), Some(&Some(call.method.clone())));
    }
}

/// Any request on any Odoo endpoint: the first byte picks the endpoint; then the path,
/// query, `Content-Type` and body, separated by NUL. Never a panic; a model read from
/// a path is never percent-encoded.
pub fn odoo_request(data: &[u8]) {
    use crate::policy::odoo::{reached, Endpoint, RequestParts};
    const ENDPOINTS: [Endpoint; 8] = [
        Endpoint::Dataset,
        Endpoint::JsonRpc,
        Endpoint::XmlRpc,
        Endpoint::Json2,
        Endpoint::Export,
        Endpoint::Content,
        Endpoint::Report,
        Endpoint::ReportDownload,
    ];
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let endpoint = ENDPOINTS[usize::from(pick) % ENDPOINTS.len()];
    let mut fields = rest.splitn(4, |b| *b == 0);
    let path = utf8(fields.next()).unwrap_or("/");
    let query = utf8(fields.next()).filter(|q| !q.is_empty());
    let content_type = utf8(fields.next()).filter(|c| !c.is_empty());
    let body = fields.next().unwrap_or(b"");
    let parts = RequestParts {
        path,
        query,
        content_type,
        body,
    };
    if let Ok(found) = reached(endpoint, parts) {
        if let (Some(call), Endpoint::Json2 | Endpoint::Report) = (&found.call, endpoint) {
            assert!(!call.model.contains('%'), "{}", call.model);
            assert!(path.contains(call.model.as_str()));
        }
    }
}

/// What the authority reads from installations: license keys (a parsed key prints as
/// a key that parses to itself), offline request and response files and signed
/// requests (none of which the fuzzer can sign), heartbeat bodies. Never a panic.
pub fn authority_input(data: &[u8]) {
    use crate::authority::{key::LicenseKey, offline, protocol};
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(key) = LicenseKey::parse(text) {
            let printed = key.to_string();
            assert_eq!(
                LicenseKey::parse(&printed).ok().map(|k| k.hash()),
                Some(key.hash())
            );
        }
        let (date, signature) = text.split_once('\n').unwrap_or((text, ""));
        assert!(protocol::verify_request(
            &INSTANCE_KEY,
            "POST",
            "/v1/activations/act_x/heartbeat",
            Some(date),
            Some(signature),
            data,
            1_800_000_000,
        )
        .is_err());
    }
    // A request names its own key: the fuzzer may well sign one; it must not panic.
    let _ = offline::read_request(data, 1_800_000_000);
    assert!(
        offline::read_response(data, &VENDOR_KEY).is_err(),
        "an unsigned response was read"
    );
    let _ = serde_json::from_slice::<protocol::HeartbeatRequest<'_>>(data);
    let _ = serde_json::from_slice::<protocol::ActivationRequest>(data);
    // The gateway's side: an answer is acted on only when the vendor key signed it.
    let (status, rest) = data
        .split_first()
        .map_or((200, data), |(s, r)| (u16::from(*s) + 100, r));
    let (signature, body) = match std::str::from_utf8(rest)
        .ok()
        .and_then(|t| t.split_once('\n'))
    {
        Some((header, body)) => (Some(header), body.as_bytes()),
        None => (None, rest),
    };
    let answer = crate::link::client::Answer {
        status,
        signature,
        body,
    };
    let checked = crate::link::client::check_answer::<protocol::HeartbeatAnswer>(
        &answer,
        std::slice::from_ref(&*VENDOR_KEY),
        "0123456789abcdef0123456789abcdef",
        Some("act_x"),
    );
    match checked {
        Ok(_) => panic!("an answer the vendor key did not sign was accepted"),
        Err(crate::link::client::CallError::Refused(r)) => {
            assert!(
                !r.signed,
                "a refusal the vendor key did not sign counted as signed"
            )
        }
        Err(_) => {}
    }
}

/// The authority's configuration: never a panic, every error located `file:line:col`.
pub fn authority_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if ["/dev", "/proc", "/sys"].iter().any(|p| text.contains(p)) {
        return;
    }
    let path = Path::new("/nonexistent-fuzz/authority.toml");
    if let Err(e) = crate::authority::config::AuthorityConfig::parse(text, path) {
        for line in e.lines() {
            let rest = line
                .strip_prefix("/nonexistent-fuzz/authority.toml:")
                .unwrap_or_else(|| panic!("unlocated error: {line}"));
            let mut parts = rest.splitn(3, ':');
            assert!(
                parts
                    .next()
                    .is_some_and(|l| l.parse::<usize>().is_ok_and(|n| n >= 1))
                    && parts
                        .next()
                        .is_some_and(|c| c.parse::<usize>().is_ok_and(|n| n >= 1)),
                "no line:col: {line}"
            );
        }
    }
}
