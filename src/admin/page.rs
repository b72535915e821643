//! The usage page for the customer's administrator, on the admin listener: `/admin/`
//! (tenants with status, tier, days to expiry, flags) and `/admin/tenants/{t}`
//! (requests per hour/day/month by feature, quota use against each limit, refusals
//! by reason, advice), rendered server-side with inline SVG charts: no script, no
//! external resource (`Content-Security-Policy: default-src 'self'`).
//!
//! Reached with the admin token: as a bearer token, or through the sign-in form,
//! which sets an HttpOnly, SameSite=Strict session cookie signed with a key derived
//! from the token (12 hours; a new token ends every session).

use std::sync::{Arc, LazyLock};

use http::{Method, StatusCode};
use minijinja::value::Serde;
use minijinja::{context, Environment, Value};
use pingora::protocols::http::ServerSession;
use ring::hmac;
use serde::Serialize;

use super::charts::{bar_rows, feature_name, requests_chart};
use super::{method_not_allowed, not_found, AdminApp};
use crate::config::AdminToken;
use crate::database::Database;
use crate::license::clock::Clock as _;
use crate::license::TenantSummary;
use crate::quota::window::duration_text;
use crate::request_body::read_body;
use crate::request_parts::query_param;
use crate::response::LocalResponse;
use crate::usage::advice::{advise, Advice};
use crate::usage::ledger::DAY;
use crate::usage::series::{tenant_series, DayRange, Series, SeriesError};
use crate::usage::{Granularity, Tally};

/// The session cookie's name and lifetime.
const COOKIE: &str = "licgate_admin_session";
const SESSION_SECS: i64 = 12 * 3600;
/// Tenants listed on the overview at most (a filter finds the others).
const LISTED: usize = 200;
/// Largest sign-in form body.
const MAX_FORM: usize = 4096;

const SECURITY_HEADERS: [(&str, &str); 5] = [
    (
        "Content-Security-Policy",
        "default-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
    ("X-Frame-Options", "DENY"),
];

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = crate::pages::templates::environment();
    for (name, text) in [
        ("layout.html", include_str!("../../pages/admin/layout.html")),
        ("signin.html", include_str!("../../pages/admin/signin.html")),
        (
            "tenants.html",
            include_str!("../../pages/admin/tenants.html"),
        ),
        ("tenant.html", include_str!("../../pages/admin/tenant.html")),
    ] {
        env.add_template(name, text)
            .expect("the admin templates compile");
    }
    env
});

const STYLESHEET: &str = include_str!("../../pages/admin/admin.css");

/// A page of the usage UI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Route {
    Stylesheet,
    SignIn,
    SignOut,
    Overview,
    Tenant(String),
}

/// The page route of `path`, if it is one.
pub(super) fn route(path: &str) -> Option<Route> {
    match path {
        "/admin" | "/admin/" => Some(Route::Overview),
        "/admin/assets/admin.css" => Some(Route::Stylesheet),
        "/admin/sign-in" => Some(Route::SignIn),
        "/admin/sign-out" => Some(Route::SignOut),
        _ => {
            let name = path.strip_prefix("/admin/tenants/")?;
            (!name.is_empty() && !name.contains('/')).then(|| Route::Tenant(name.to_string()))
        }
    }
}

fn render(template: &str, ctx: minijinja::Value) -> String {
    TEMPLATES
        .get_template(template)
        .and_then(|t| t.render(ctx))
        .unwrap_or_else(|e| {
            tracing::warn!(template, error = %e, "usage page template failed");
            String::from("<!doctype html><p>The page could not be rendered.</p>")
        })
}

fn page(status: StatusCode, html: String) -> LocalResponse {
    SECURITY_HEADERS
        .iter()
        .fold(LocalResponse::html(status, html), |r, (name, value)| {
            r.with_header(name, *value)
        })
}

/// The signed value of a session cookie valid until `expires` (Unix seconds).
fn session_value(token: &AdminToken, expires: i64) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &token.session_key());
    let tag = hmac::sign(&key, expires.to_string().as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("{expires}.{hex}")
}

/// Whether `value` is a session cookie of `token` still valid at `now`.
pub(crate) fn session_valid(token: &AdminToken, value: &str, now: i64) -> bool {
    let Some((expires, hex)) = value.split_once('.') else {
        return false;
    };
    let Ok(expires_at) = expires.parse::<i64>() else {
        return false;
    };
    if expires_at <= now || expires_at > now + SESSION_SECS || hex.len() != 64 {
        return false;
    }
    let Some(tag) = (0..32)
        .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, &token.session_key());
    hmac::verify(&key, expires.as_bytes(), &tag).is_ok()
}

/// Whether the request carries a valid session cookie of `token`.
pub(super) fn signed_in(session: &ServerSession, token: &AdminToken) -> bool {
    crate::request_parts::cookie(session.req_header(), COOKIE)
        .is_some_and(|value| session_valid(token, value, crate::license::clock::SystemClock.now()))
}

/// Where to go after signing in: an `/admin/` path of this listener, else `/admin/`.
pub(crate) fn safe_next(next: &str) -> &str {
    let plain = next.starts_with("/admin/")
        && !next.contains("//")
        && !next.contains('\\')
        && next.bytes().all(|b| b.is_ascii_graphic());
    if plain {
        next
    } else {
        "/admin/"
    }
}

fn sign_in_page(status: StatusCode, error: Option<&str>, next: &str) -> LocalResponse {
    page(
        status,
        render("signin.html", context! { error, next => safe_next(next) }),
    )
}

/// Answers a page request (`token`: the configured admin token).
pub(super) async fn handle(
    admin: &AdminApp,
    session: &mut ServerSession,
    method: &Method,
    route: Route,
    token: &AdminToken,
    bearer_ok: bool,
) -> LocalResponse {
    let readable = *method == Method::GET || *method == Method::HEAD;
    match route {
        Route::Stylesheet if readable => LocalResponse {
            status: StatusCode::OK,
            content_type: "text/css; charset=utf-8",
            headers: Vec::new(),
            body: STYLESHEET.into(),
        }
        .with_header("Cache-Control", "max-age=3600"),
        Route::Stylesheet => method_not_allowed("GET, HEAD"),
        Route::SignIn if *method == Method::POST => sign_in(admin, session, token).await,
        Route::SignIn if readable => sign_in_page(StatusCode::OK, None, "/admin/"),
        Route::SignIn => method_not_allowed("GET, POST"),
        Route::SignOut if *method == Method::POST => page(StatusCode::SEE_OTHER, String::new())
            .with_header("Location", "/admin/")
            .with_header(
                "Set-Cookie",
                format!("{COOKIE}=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0"),
            ),
        Route::SignOut => method_not_allowed("POST"),
        _ if !readable => method_not_allowed("GET, HEAD"),
        route if !(bearer_ok || signed_in(session, token)) => {
            let next = session
                .req_header()
                .uri
                .path_and_query()
                .map_or("/admin/", |p| p.as_str());
            let next = if matches!(route, Route::Overview) {
                "/admin/"
            } else {
                next
            };
            sign_in_page(StatusCode::UNAUTHORIZED, None, next)
        }
        Route::Overview => overview(admin, session),
        Route::Tenant(name) => tenant_page(admin, session, &name).await,
    }
}

async fn sign_in(
    admin: &AdminApp,
    session: &mut ServerSession,
    token: &AdminToken,
) -> LocalResponse {
    let Ok(body) = read_body(session, MAX_FORM).await else {
        return sign_in_page(
            StatusCode::BAD_REQUEST,
            Some("The form could not be read."),
            "/admin/",
        );
    };
    let mut presented = None;
    let mut next = String::from("/admin/");
    for (name, value) in form_urlencoded::parse(&body) {
        match &*name {
            "token" => presented = Some(value.into_owned()),
            "next" => next = value.into_owned(),
            _ => {}
        }
    }
    let ok = presented
        .as_deref()
        .is_some_and(|p| token.matches(p.trim().as_bytes()));
    if !ok {
        if let Some(left_out) = admin.auth_failure_log.permit() {
            tracing::warn!(
                client = ?session.client_addr(),
                similar_not_logged = left_out,
                "usage page: wrong admin token at sign-in"
            );
        }
        return sign_in_page(
            StatusCode::UNAUTHORIZED,
            Some("This is not the admin token."),
            &next,
        );
    }
    let expires = crate::license::clock::SystemClock.now() + SESSION_SECS;
    page(StatusCode::SEE_OTHER, String::new())
        .with_header("Location", safe_next(&next))
        .with_header(
            "Set-Cookie",
            format!(
                "{COOKIE}={}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECS}",
                session_value(token, expires)
            ),
        )
}

/// A tenant name as a path segment (percent-encoded).
fn path_segment(tenant: &str) -> String {
    form_urlencoded::byte_serialize(tenant.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[derive(Serialize)]
struct TenantRow {
    tenant: String,
    path: String,
    status: &'static str,
    tier: String,
    days_to_expiry: String,
    active: i64,
    flags: Vec<String>,
}

fn days_to_expiry(license: &TenantSummary, now: i64) -> String {
    match license.expires_at {
        None => "perpetual".into(),
        Some(at) if at <= now => "expired".into(),
        Some(at) => ((at - now) / DAY).to_string(),
    }
}

fn overview(admin: &AdminApp, session: &ServerSession) -> LocalResponse {
    let app = &admin.app;
    let q = query_param(session.req_header(), "q").unwrap_or_default();
    let table = app.tenants.load_full();
    let mut entries: Vec<_> = table
        .entries()
        .filter(|e| e.license().tenant.starts_with(q.as_str()))
        .collect();
    entries.sort_by(|a, b| a.license().tenant.cmp(&b.license().tenant));
    let more = entries.len().saturating_sub(LISTED);
    let now = crate::license::clock::SystemClock.now();
    let rows: Vec<TenantRow> = entries
        .iter()
        .take(LISTED)
        .map(|e| {
            let license = e.license();
            let mut flags = Vec::new();
            if app.redis.is_none() {
                let near = app
                    .quotas
                    .usage(&e.quota)
                    .iter()
                    .any(|r| r.window != "burst" && r.limit > 0 && r.used * 5 >= r.limit * 4);
                if near {
                    flags.push("≥ 80 % of a limit".to_string());
                }
            }
            TenantRow {
                tenant: license.tenant.to_string(),
                path: path_segment(&license.tenant),
                status: license.status.as_str(),
                tier: license.tier.as_deref().unwrap_or_default().to_string(),
                days_to_expiry: days_to_expiry(license, now),
                active: e.counters.active(),
                flags,
            }
        })
        .collect();
    page(
        StatusCode::OK,
        render(
            "tenants.html",
            context! { signed_in => true, tenants => Value::from(Serde(&rows)), q, more },
        ),
    )
}

#[derive(Serialize)]
struct FeatureRow {
    name: String,
    allowed: u64,
    limited: u64,
    refused: u64,
    peak: u64,
}

fn feature_rows(series: &Series) -> Vec<FeatureRow> {
    let mut rows: Vec<(&String, &Tally)> = series.features.iter().collect();
    rows.sort_by(|a, b| b.1.requests().cmp(&a.1.requests()).then(a.0.cmp(b.0)));
    rows.into_iter()
        .map(|(feature, t)| FeatureRow {
            name: feature_name(feature),
            allowed: t.allowed,
            limited: t.limited,
            refused: t.refused.values().sum(),
            peak: t.peak_concurrency,
        })
        .collect()
}

/// The quota rows of the page: each rule's use in its current window, and the
/// concurrency in use.
async fn quota_rows(
    admin: &AdminApp,
    entry: &crate::tenants::TenantEntry,
) -> Vec<(String, u64, u64, String)> {
    let app = &admin.app;
    let rules = match &app.redis {
        Some(redis) => redis.usage(&entry.quota).await.unwrap_or_default(),
        None => app.quotas.usage(&entry.quota),
    };
    let mut rows: Vec<(String, u64, u64, String)> = rules
        .into_iter()
        .map(|r| {
            let what = if r.window == "burst" {
                "burst".to_string()
            } else {
                format!("requests per {}", r.window)
            };
            let label = match &r.feature {
                Some(f) => format!("{f}: {what}"),
                None => what,
            };
            let text = format!(
                "{} of {} ({} %) · resets in {}",
                r.used,
                r.limit,
                (r.used * 100).checked_div(r.limit).unwrap_or(0),
                duration_text(r.reset_secs)
            );
            (label, r.used, r.limit, text)
        })
        .collect();
    if let Some(limit) = entry.license().limits.max_concurrent_connections {
        let active = entry.counters.active().max(0).unsigned_abs();
        rows.push((
            "concurrent requests".into(),
            active,
            limit,
            format!("{active} of {limit} at once"),
        ));
    }
    rows
}

async fn tenant_page(admin: &AdminApp, session: &ServerSession, segment: &str) -> LocalResponse {
    let app = &admin.app;
    let Some(tenant) = percent_decode(segment) else {
        return not_found();
    };
    let Some(manager) = &app.licenses else {
        return not_found();
    };
    let table = app.tenants.load_full();
    let entry = table.get(&tenant).cloned();
    let today = crate::quota::clock::now().div_euclid(DAY);
    let bad = |detail: String| {
        page(
            StatusCode::BAD_REQUEST,
            format!(
                "<!doctype html><title>Bad request</title><link rel=\"stylesheet\" href=\"/admin/assets/admin.css\"><main><section><h1>Bad request</h1><p class=\"error\">{}</p><p><a href=\"/admin/tenants/{}\">Back</a></p></section></main>",
                crate::pages::escape(&detail),
                crate::pages::escape(segment)
            ),
        )
    };
    let granularity =
        match query_param(session.req_header(), "granularity").map(|g| g.parse::<Granularity>()) {
            None => Granularity::Day,
            Some(Ok(g)) => g,
            Some(Err(e)) => return bad(e),
        };
    let from = query_param(session.req_header(), "from").filter(|s| !s.is_empty());
    let to = query_param(session.req_header(), "to").filter(|s| !s.is_empty());
    let range = match DayRange::parse(from.as_deref(), to.as_deref(), today) {
        // Hours are shown for one day unless a range is asked for.
        Ok(r) if from.is_none() && granularity == Granularity::Hour => DayRange {
            from_day: r.to_day,
            ..r
        },
        Ok(r) => r,
        Err(e) => return bad(e),
    };
    let store_dir = manager.store().dir().to_path_buf();
    let license = entry.as_ref().map(|e| Arc::clone(e.license()));
    let name = tenant.clone();
    let found =
        tokio::task::spawn_blocking(move || -> Result<(Series, Vec<Advice>), SeriesError> {
            let db = Database::open_read_only(&store_dir)?;
            let series = tenant_series(&db, &name, None, range, granularity)?;
            let advice = match &license {
                Some(license) => advise(&db, license, range, today)?,
                None => Vec::new(),
            };
            Ok((series, advice))
        })
        .await;
    let (series, advice) = match found {
        Ok(Ok(found)) => found,
        Ok(Err(SeriesError::BadRange(e))) => return bad(e),
        Ok(Err(e)) => {
            return page(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "<!doctype html><p>{}</p>",
                    crate::pages::escape(&e.to_string())
                ),
            )
        }
        Err(_) => return page(StatusCode::INTERNAL_SERVER_ERROR, String::new()),
    };
    let quota = match &entry {
        Some(entry) => quota_rows(admin, entry).await,
        None => Vec::new(),
    };
    let mut refusals: Vec<(&String, &u64)> = series.totals.refused.iter().collect();
    refusals.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let most = refusals.first().map_or(0, |r| *r.1);
    let refusal_rows = refusals
        .iter()
        .map(|(code, n)| ((*code).clone(), **n, most, n.to_string()))
        .collect();
    let now = crate::license::clock::SystemClock.now();
    let (status, tier, expiry, license_ids) = match &entry {
        Some(e) => {
            let l = e.license();
            let expiry = match l.expires_at {
                None => "perpetual license".to_string(),
                Some(_) => format!("{} days to expiry", days_to_expiry(l, now)),
            };
            (
                l.status.as_str(),
                l.tier.clone().unwrap_or_default(),
                expiry,
                l.license_ids.join(", "),
            )
        }
        None => (
            "UNLICENSED",
            Arc::from(""),
            "no license".to_string(),
            String::new(),
        ),
    };
    let html = render(
        "tenant.html",
        context! {
            signed_in => true,
            tenant,
            path => segment,
            status,
            tier,
            expiry,
            license_ids,
            from => series.from.clone(),
            to => series.to.clone(),
            granularity => granularity.name(),
            advice => Value::from(Serde(&advice)),
            chart => Value::from(Serde(requests_chart(&series))),
            features => Value::from(Serde(feature_rows(&series))),
            quota => Value::from(Serde(bar_rows(quota))),
            refusals => Value::from(Serde(bar_rows(refusal_rows))),
        },
    );
    page(StatusCode::OK, html)
}

/// `segment` percent-decoded, when it is UTF-8.
pub(crate) fn percent_decode(segment: &str) -> Option<String> {
    let input = segment.as_bytes();
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            let hex = input.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_cookies_are_signed_by_the_token_and_expire() {
        let token = AdminToken::new(b"0123456789abcdef0123");
        let now = 1_800_000_000;
        let value = session_value(&token, now + 60);
        assert!(session_valid(&token, &value, now));
        assert!(!session_valid(&token, &value, now + 61), "expired");
        assert!(!session_valid(
            &AdminToken::new(b"another-token-0123456"),
            &value,
            now
        ));
        let forged = value.replace(&(now + 60).to_string(), &(now + 3600).to_string());
        assert!(!session_valid(&token, &forged, now));
        let far = session_value(&token, now + 10 * SESSION_SECS);
        assert!(!session_valid(&token, &far, now), "longer than a session");
        for junk in ["", ".", "x.y", "1.zz", "99999999999999999999.00"] {
            assert!(!session_valid(&token, junk, now), "{junk}");
        }
    }

    #[test]
    fn only_local_admin_paths_are_followed_after_sign_in() {
        assert_eq!(
            safe_next("/admin/tenants/acme?from=2026-12-01"),
            "/admin/tenants/acme?from=2026-12-01"
        );
        for bad in [
            "https://evil.example/",
            "//evil.example/admin/",
            "/admin/\\evil",
            "/other",
            "/admin/ x",
        ] {
            assert_eq!(safe_next(bad), "/admin/", "{bad}");
        }
    }

    #[test]
    fn page_routes() {
        assert_eq!(route("/admin/"), Some(Route::Overview));
        assert_eq!(
            route("/admin/tenants/acme"),
            Some(Route::Tenant("acme".into()))
        );
        assert_eq!(route("/admin/tenants/"), None);
        assert_eq!(route("/admin/v1/tenants"), None);
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%+1"), None);
    }
}
