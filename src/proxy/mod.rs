//! The pingora glue: one [`Gateway`] implements `ProxyHttp`. For each request it
//! normalizes the target, resolves the tenant, calls the pure [`decide`], and carries
//! out the decision: forward (normalized path, clean and injected headers), answer
//! locally (denials, the gateway's pages), or report an upstream failure clearly.

pub mod activation;
pub mod enforce;
mod headers;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use http::StatusCode;
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::{ErrorSource, ErrorType};

pub use enforce::Enforcement;

use enforce::RateLimitHeaders;
pub use headers::{strip_gateway_headers, ForwardingPolicy};

use crate::config::{Config, Mode, UpstreamConfig};
use crate::license::{LicenseSnapshot, TenantSummary};
use crate::lifecycle::{Inflight, InflightGuard};
use crate::pages;
use crate::policy::decide::{decide, Decision, DenyReason, RequestFacts};
use crate::policy::path::{normalize, Target};
use crate::quota::local::Lease;
use crate::quota::{QuotaBackend, QuotaOutcome};
use crate::response::{ClientKind, LocalResponse};
use crate::throttle::LogThrottle;

/// State of one request, carried across pingora's phases.
pub struct RequestCtx {
    /// Keeps the request counted as in flight until the context is dropped.
    _inflight: InflightGuard,
    /// The normalized request target to forward, when it differs from the received one.
    rewrite: Option<String>,
    /// The `Host` to forward for an absolute-form target (its authority).
    host: Option<String>,
    /// The tenant's license summary, for the injected and warning headers.
    tenant: Option<Arc<TenantSummary>>,
    /// One of the tenant's concurrent slots, held until the request ends (however).
    _lease: Option<Lease>,
    /// `RateLimit-*` for a quota-governed response.
    rate_limit: Option<RateLimitHeaders>,
}

/// The licgate reverse proxy.
pub struct Gateway {
    mode: Mode,
    /// Pre-built upstream peer, cloned for each request.
    peer: HttpPeer,
    forwarding: ForwardingPolicy,
    inflight: Arc<Inflight>,
    /// Upstream failures are logged at most once a second (with a count of the rest).
    upstream_failure_log: LogThrottle,
    enforcement: Enforcement,
}

/// The snapshot used when licensing is not configured: every tenant unlicensed.
static NO_LICENSES: LazyLock<LicenseSnapshot> = LazyLock::new(LicenseSnapshot::default);

/// What to do with a request once decided (owns what it needs, borrows nothing).
enum Action<'p> {
    Forward {
        rewrite: Option<String>,
        host: Option<String>,
        tenant: Option<Arc<TenantSummary>>,
        shadowed: Option<(&'static str, String)>,
        lease: Option<Lease>,
        /// Rate quotas to count (the feature the path needs, if any).
        rate_check: Option<Option<&'p str>>,
        client: ClientKind,
    },
    Respond(LocalResponse),
    Reserved {
        path: String,
        tenant: Option<String>,
    },
}

impl Gateway {
    /// A gateway for `config` that sends requests to `upstream_addr` (the resolved
    /// `upstream.address`), counts requests in `inflight`, and enforces with
    /// `enforcement`.
    pub fn new(
        config: &Config,
        upstream_addr: SocketAddr,
        inflight: Arc<Inflight>,
        enforcement: Enforcement,
    ) -> Gateway {
        Gateway {
            mode: config.mode,
            peer: upstream_peer(&config.upstream, upstream_addr),
            forwarding: ForwardingPolicy {
                trusted_proxies: config.server.trusted_proxies.clone(),
                host_header: config.upstream.host_header.clone(),
            },
            inflight,
            upstream_failure_log: LogThrottle::new(Duration::from_secs(1)),
            enforcement,
        }
    }

    /// The configured enforcement mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Normalizes, resolves and decides; borrows the request only while deciding.
    fn decide_action(&self, req: &RequestHeader, peer: Option<IpAddr>) -> Action<'_> {
        let enforcement = &self.enforcement;
        let client = ClientKind::of(req);
        let target = match normalize(req.raw_path(), &enforcement.paths) {
            Ok(Target::Path(p)) => p,
            Ok(Target::Asterisk) if req.method == http::Method::OPTIONS => {
                return Action::Respond(
                    LocalResponse {
                        status: StatusCode::NO_CONTENT,
                        content_type: "text/plain; charset=utf-8",
                        headers: Vec::new(),
                        body: bytes::Bytes::new(),
                    }
                    .with_header("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
                )
            }
            Ok(Target::Asterisk) => {
                return Action::Respond(enforce::bad_path_response(
                    "the request target * is only valid with OPTIONS",
                    client,
                    &enforcement.templates,
                ))
            }
            Err(e) => {
                return Action::Respond(enforce::bad_path_response(
                    &e.to_string(),
                    client,
                    &enforcement.templates,
                ))
            }
        };
        let tenant = enforcement.tenants.resolve(req, target.authority, peer);
        let lowered;
        let match_path: &str = if enforcement.paths.case_insensitive {
            lowered = target.path.to_ascii_lowercase();
            &lowered
        } else {
            &target.path
        };
        let guard = enforcement.licenses.as_ref().map(|m| m.snapshot());
        let snapshot: &LicenseSnapshot = guard.as_deref().map_or(&NO_LICENSES, |s| s);
        let facts = RequestFacts {
            method: &req.method,
            path: match_path,
            tenant: tenant.as_deref(),
        };
        match decide(&facts, &enforcement.policy, snapshot) {
            Decision::Reserved => Action::Reserved {
                path: target.path.to_string(),
                tenant: tenant.map(|t| t.into_owned()),
            },
            Decision::Forward {
                shadowed,
                governed,
                feature,
                tenant: summary,
            } => {
                let mut shadowed = shadowed.map(DenyReason::error_code);
                let (mut lease, mut rate_check) = (None, None);
                if let (Some(summary), true) = (summary, governed && shadowed.is_none()) {
                    match enforcement.quotas.acquire(summary) {
                        Ok(l) => lease = l,
                        Err(_) if self.mode == Mode::Shadow => {
                            shadowed = Some("CONCURRENCY_LIMIT_EXCEEDED")
                        }
                        Err(limit) => {
                            return Action::Respond(enforce::concurrency_limited_response(
                                limit,
                                client,
                                &enforcement.templates,
                            ))
                        }
                    }
                    rate_check = Some(feature);
                }
                Action::Forward {
                    rewrite: target.changed().then(|| target.target()),
                    host: target.authority.map(str::to_string),
                    tenant: tenant.and_then(|t| snapshot.tenant_arc(&t)),
                    shadowed: shadowed.map(|code| (code, target.path.to_string())),
                    lease,
                    rate_check,
                    client,
                }
            }
            Decision::Deny {
                reason,
                tenant: summary,
                feature,
            } => Action::Respond(enforce::deny_response(
                reason,
                summary,
                feature,
                client,
                &target.target(),
                &enforcement.templates,
            )),
        }
    }
}

/// The client's IP address, when it connected over TCP/IP.
fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// Builds the upstream peer template from the upstream configuration.
fn upstream_peer(upstream: &UpstreamConfig, addr: SocketAddr) -> HttpPeer {
    let mut peer = HttpPeer::new(addr, upstream.tls, upstream.sni.clone());
    let options = &mut peer.options;
    options.connection_timeout = Some(upstream.connect_timeout);
    options.total_connection_timeout = Some(upstream.connect_timeout);
    options.read_timeout = Some(upstream.read_timeout);
    options.write_timeout = Some(upstream.write_timeout);
    options.idle_timeout = Some(upstream.idle_timeout);
    options.verify_cert = upstream.verify_cert;
    options.verify_hostname = upstream.verify_cert;
    peer
}

/// How an upstream failure is reported to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamFailure {
    pub status: StatusCode,
    pub error_code: &'static str,
    pub title: &'static str,
    pub detail: &'static str,
}

/// Classifies a proxy error: `None` when the client connection is already gone and
/// nothing can be written.
pub fn classify_failure(e: &pingora::Error) -> Option<UpstreamFailure> {
    use ErrorType::*;
    let failure = |status, error_code, title, detail| {
        Some(UpstreamFailure {
            status,
            error_code,
            title,
            detail,
        })
    };
    match (e.esource(), e.etype()) {
        (_, HTTPStatus(code)) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::BAD_GATEWAY);
            if status.is_client_error() {
                failure(
                    status,
                    "BAD_REQUEST",
                    "Bad Request",
                    "The request could not be processed.",
                )
            } else {
                failure(
                    status,
                    "UPSTREAM_UNAVAILABLE",
                    "Bad Gateway",
                    "The application could not be reached. Try again shortly.",
                )
            }
        }
        (
            ErrorSource::Upstream,
            ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout,
        ) => failure(
            StatusCode::GATEWAY_TIMEOUT,
            "UPSTREAM_TIMEOUT",
            "Gateway Timeout",
            "The application did not answer in time. Try again shortly.",
        ),
        (ErrorSource::Upstream, _) => failure(
            StatusCode::BAD_GATEWAY,
            "UPSTREAM_UNAVAILABLE",
            "Bad Gateway",
            "The application could not be reached. Try again shortly.",
        ),
        (ErrorSource::Downstream, ReadError | WriteError | ConnectionClosed) => None,
        (ErrorSource::Downstream, ReadTimedout | WriteTimedout) => None,
        (ErrorSource::Downstream, _) => failure(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "Bad Request",
            "The request could not be processed.",
        ),
        (ErrorSource::Internal | ErrorSource::Unset, _) => failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "Internal Error",
            "The gateway failed to process the request.",
        ),
    }
}

/// The local response for `failure`: an HTML page for browsers, problem+json otherwise.
pub fn failure_response(failure: UpstreamFailure, client: ClientKind) -> LocalResponse {
    match client {
        ClientKind::Browser => LocalResponse::html(
            failure.status,
            pages::page(failure.title, &[failure.detail], Some(failure.error_code)),
        ),
        ClientKind::Api => LocalResponse::problem(
            failure.status,
            failure.error_code,
            failure.title,
            failure.detail,
            serde_json::json!({}),
        ),
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    /// Called once the request head is read: the request counts as in flight from here
    /// until its context is dropped.
    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            _inflight: self.inflight.enter(),
            rewrite: None,
            host: None,
            tenant: None,
            _lease: None,
            rate_limit: None,
        }
    }

    /// Enforcement (skipped when `mode = "off"`): decide, then answer locally or let
    /// the request through with what the upstream phase needs recorded in `ctx`.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if self.mode == Mode::Off {
            return Ok(false);
        }
        let peer = client_ip(session);
        let action = self.decide_action(session.req_header(), peer);
        match action {
            Action::Forward {
                rewrite,
                host,
                tenant,
                mut shadowed,
                lease,
                rate_check,
                client,
            } => {
                let mut rate_limit = None;
                if let (Some(feature), Some(summary)) = (rate_check, tenant.as_ref()) {
                    let enforcement = &self.enforcement;
                    let outcome = match &enforcement.redis {
                        Some(redis) => QuotaBackend::check(redis, summary, feature).await,
                        None => QuotaBackend::check(&*enforcement.quotas, summary, feature).await,
                    };
                    let refusal = match outcome {
                        QuotaOutcome::Unlimited => None,
                        QuotaOutcome::Allowed {
                            limit,
                            remaining,
                            reset_secs,
                        } => {
                            rate_limit = Some((limit, remaining, reset_secs));
                            None
                        }
                        QuotaOutcome::Limited {
                            rule,
                            retry_after_secs,
                            feature: by_feature,
                        } => Some((
                            "USAGE_LIMIT_EXCEEDED",
                            enforce::usage_limited_response(
                                rule,
                                retry_after_secs,
                                feature.filter(|_| by_feature),
                                client,
                                &enforcement.templates,
                            ),
                        )),
                        QuotaOutcome::Unavailable => Some((
                            "QUOTA_UNAVAILABLE",
                            enforce::quota_unavailable_response(client, &enforcement.templates),
                        )),
                    };
                    if let Some((code, response)) = refusal {
                        if self.mode == Mode::Shadow {
                            let path = String::from_utf8_lossy(session.req_header().raw_path())
                                .into_owned();
                            shadowed = Some((code, path));
                        } else {
                            response.write_to(session).await?;
                            return Ok(true);
                        }
                    }
                }
                if let Some((code, path)) = shadowed {
                    if let Some(left_out) = self.enforcement.shadow_log.permit() {
                        tracing::info!(
                            tenant = tenant.as_ref().map_or("", |t| t.tenant.as_str()),
                            path = %path,
                            would_deny = code,
                            similar_not_logged = left_out,
                            "shadow mode: request forwarded"
                        );
                    }
                }
                ctx.rewrite = rewrite;
                ctx.host = host;
                ctx.tenant = tenant;
                ctx._lease = lease;
                ctx.rate_limit = rate_limit;
                Ok(false)
            }
            Action::Respond(response) => {
                response.write_to(session).await?;
                Ok(true)
            }
            Action::Reserved { path, tenant } => {
                let response =
                    activation::handle(session, &self.enforcement, &path, tenant.as_deref(), peer)
                        .await;
                response.write_to(session).await?;
                Ok(true)
            }
        }
    }

    /// Every request goes to the one configured upstream.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }

    /// Removes client copies of `X-Licgate-*` (also from `Connection`), maintains
    /// `X-Forwarded-*`, forwards the normalized target, applies the `Host` override,
    /// and injects the tenant's `X-Licgate-*` headers.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(host) = ctx.host.take() {
            upstream_request.insert_header(http::header::HOST, host)?;
        }
        self.forwarding
            .apply(upstream_request, client_ip(session))?;
        if let Some(target) = ctx.rewrite.take() {
            upstream_request.set_raw_path(target.as_bytes())?;
        }
        if let Some(tenant) = &ctx.tenant {
            for (name, value) in &tenant.upstream_headers {
                upstream_request.insert_header(name.clone(), value.clone())?;
            }
        }
        Ok(())
    }

    /// Adds `X-Licgate-Warning` while the license is expiring, in grace or read-only.
    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(warning) = ctx.tenant.as_ref().and_then(|t| t.warning_header.clone()) {
            upstream_response.insert_header("X-Licgate-Warning", warning)?;
        }
        if let Some((limit, remaining, reset)) = ctx.rate_limit {
            upstream_response.insert_header("RateLimit-Limit", limit)?;
            upstream_response.insert_header("RateLimit-Remaining", remaining)?;
            upstream_response.insert_header("RateLimit-Reset", reset)?;
        }
        Ok(())
    }

    /// pingora's own per-request error line is replaced by the throttled one in
    /// `fail_to_proxy` (upstream) or dropped (client errors: the client's problem);
    /// internal errors keep it.
    fn suppress_error_log(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
        e: &pingora::Error,
    ) -> bool {
        e.esource() != &ErrorSource::Internal
    }

    /// Writes a 502/504 (or 400/500) the client can understand, unless a response
    /// has already started or the client is gone.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &pingora::Error,
        _ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let Some(failure) = classify_failure(e) else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        let code = failure.status.as_u16();
        if e.esource() == &ErrorSource::Upstream {
            if let Some(left_out) = self.upstream_failure_log.permit() {
                tracing::warn!(
                    error = %e,
                    status = code,
                    similar_failures_not_logged = left_out,
                    "upstream request failed"
                );
            }
        }
        if session.response_written().is_none() {
            let response = failure_response(failure, ClientKind::of(session.req_header()));
            if let Err(write_error) = response.write_to(session).await {
                tracing::debug!(error = %write_error, "could not write error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::Error;

    #[test]
    fn upstream_failures_map_to_502_and_504() {
        let refused = classify_failure(&Error::new_up(ErrorType::ConnectRefused)).unwrap();
        assert_eq!(refused.status, StatusCode::BAD_GATEWAY);
        assert_eq!(refused.error_code, "UPSTREAM_UNAVAILABLE");
        let slow = classify_failure(&Error::new_up(ErrorType::ReadTimedout)).unwrap();
        assert_eq!(slow.status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(slow.error_code, "UPSTREAM_TIMEOUT");
        let tls = classify_failure(&Error::new_up(ErrorType::TLSHandshakeFailure)).unwrap();
        assert_eq!(tls.status, StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn gone_clients_get_nothing_and_bad_requests_get_400() {
        assert_eq!(
            classify_failure(&Error::new_down(ErrorType::ConnectionClosed)),
            None
        );
        assert_eq!(
            classify_failure(&Error::new_down(ErrorType::WriteError)),
            None
        );
        let bad = classify_failure(&Error::new_down(ErrorType::InvalidHTTPHeader)).unwrap();
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        let internal = classify_failure(&Error::new_in(ErrorType::InternalError)).unwrap();
        assert_eq!(internal.status, StatusCode::INTERNAL_SERVER_ERROR);
        let explicit = classify_failure(&Error::new(ErrorType::HTTPStatus(413))).unwrap();
        assert_eq!(explicit.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(explicit.error_code, "BAD_REQUEST");
    }

    #[test]
    fn browsers_get_pages_and_api_clients_get_problems() {
        let failure = classify_failure(&Error::new_up(ErrorType::ConnectRefused)).unwrap();
        let page = failure_response(failure, ClientKind::Browser);
        assert_eq!(page.content_type, crate::response::HTML);
        assert_eq!(page.status, StatusCode::BAD_GATEWAY);
        let problem = failure_response(failure, ClientKind::Api);
        assert_eq!(problem.content_type, crate::response::PROBLEM_JSON);
    }
}
