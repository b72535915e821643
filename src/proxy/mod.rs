//! The pingora glue: one [`Gateway`] implements `ProxyHttp`. For each request it asks
//! [`verdict::judge`] for the verdict, records it in one place ([`Gateway::finish`]),
//! and carries it out: forward (normalized path, clean and injected headers), answer
//! locally (refusals, the gateway's pages), or report an upstream failure clearly.

pub(crate) mod activation;
mod banner;
mod inspect;
mod offline;
pub(crate) mod refusal;
pub(crate) mod verdict;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::StatusCode;
use pingora::http::AppendedHeadersBuilder;
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::{ErrorSource, ErrorType};

use crate::app::{App, Rules};
use crate::forwarding::{
    remove_present, RATELIMIT_LIMIT, RATELIMIT_POLICY, RATELIMIT_REMAINING, RATELIMIT_RESET,
    WARNING,
};
use crate::lifecycle::InflightGuard;
use crate::metrics::{ActiveGuard, UpstreamErrorKind};
use crate::pages;
use crate::policy::odoo::Dialect;
use crate::policy::outcome::Outcome;
use crate::quota::local::Lease;
use crate::quota::share::ShareLease;
use crate::response::{ClientKind, LocalResponse};
use crate::seats::book::Admission as SeatAdmission;
use crate::seats::fleet::FleetAdmission;
use crate::seats::identity::SessionCookie;
use crate::tenants::TenantEntry;
use crate::throttle::LogThrottle;
use crate::usage::UsageEvent;
use refusal::{Audience, Refused};
use verdict::{Action, RateLimit, SeatHold, Verdict};

/// State of one request, carried across pingora's phases.
pub(crate) struct RequestCtx {
    /// Keeps the request counted as in flight until the context is dropped.
    _inflight: InflightGuard,
    /// When the request head had been read.
    started: Instant,
    /// The rules in force when the request arrived (a reload does not change them
    /// for requests already under way).
    rules: Arc<Rules>,
    /// What the gateway did (the `decision` of metrics and the access log).
    outcome: Outcome,
    /// The normalized request target to forward, when it differs from the received one.
    rewrite: Option<String>,
    /// The `Host` to forward for an absolute-form target (its authority).
    host: Option<String>,
    /// The tenant's entry, when the tenant has a license.
    tenant: Option<Arc<TenantEntry>>,
    /// One of the tenant's concurrent slots, held until the request ends (however).
    _lease: Option<Lease>,
    /// The client's share of those slots (`quota.per_client_share`).
    _share_lease: Option<ShareLease>,
    /// Counts the request in `active_connections` while it is forwarded.
    _active: Option<ActiveGuard>,
    /// `RateLimit-*` for a quota-governed response.
    rate_limit: Option<RateLimit>,
    /// How fast the request body arrives, watched while the request holds a
    /// concurrent slot.
    body_pace: Option<BodyPace>,
    /// When the request was sent upstream, and how long the response header took.
    upstream_sent: Option<Instant>,
    upstream_elapsed: Option<Duration>,
    /// The flag banner going into this response's HTML (`pages.flag_banner`).
    banner: Option<banner::Injection>,
    /// The request's seat, when its response may change it (or it is over the
    /// nominal limit).
    seat: Option<SeatHold>,
}

/// The pace of a request body that holds a concurrent slot.
struct BodyPace {
    started: Instant,
    /// Time allowed before the rate counts.
    grace: Duration,
    received: u64,
}

/// The least average rate of a request body holding a concurrent slot, after its grace.
pub(crate) const MIN_BODY_BYTES_PER_SEC: u64 = 4096;

impl BodyPace {
    /// Counts `bytes` more; false when the body is behind its minimum pace.
    fn on_time(&mut self, bytes: usize) -> bool {
        self.received += bytes as u64;
        let allowed = self.grace + Duration::from_secs(self.received / MIN_BODY_BYTES_PER_SEC);
        self.started.elapsed() <= allowed
    }
}

/// The licgate reverse proxy. Clones share everything (one per proxy service).
#[derive(Clone)]
pub(crate) struct Gateway {
    app: Arc<App>,
    /// Upstream failures are logged at most once a second (with a count of the rest).
    upstream_failure_log: Arc<LogThrottle>,
}

/// `X-Licgate-Warning` of a request admitted within the seats' overage allowance.
const SEAT_OVERAGE_WARNING: http::HeaderValue = http::HeaderValue::from_static(
    "seats in use exceed the license's limit (within its overage allowance)",
);

/// Room for the lines added to a request (`X-Forwarded-*`, `X-Licgate-*`) and to a
/// response (`RateLimit-*`, `X-Licgate-Warning`) before their buffer grows.
const APPENDED_REQUEST_LINES_CAPACITY: usize = 320;
const APPENDED_RESPONSE_LINES_CAPACITY: usize = 192;

impl Gateway {
    /// A gateway serving with `app`'s state and rules.
    pub(crate) fn new(app: Arc<App>) -> Gateway {
        Gateway {
            app,
            upstream_failure_log: Arc::new(LogThrottle::new(Duration::from_secs(1))),
        }
    }

    /// Records `verdict`, once: counts the request (and its refusal, enforced or
    /// shadowed), observes the decision's duration, logs a shadowed refusal, and keeps
    /// in `ctx` what the later phases need. `page` is the answer of a gateway page.
    /// Returns the response to write when the request is not forwarded.
    fn finish(
        &self,
        verdict: Verdict<'_>,
        page: Option<LocalResponse>,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Option<LocalResponse> {
        let metrics = &*self.app.metrics;
        let Verdict {
            outcome,
            tenant,
            refused,
            feature,
            action,
            dialect,
            rpc_id,
        } = verdict;
        let mut concurrency = 0;
        let enforced = refused.as_ref().filter(|_| outcome != Outcome::Shadowed);
        let refused_code = enforced.map(Refused::error_code);
        let limited = enforced.is_some_and(|r| r.quota_kind().is_some());
        let counters = tenant.as_ref().map_or(&metrics.unknown, |t| &t.counters);
        counters.request(outcome);
        if let Some(refusal) = refused.as_ref().and_then(|r| r.refusal()) {
            let enforced = outcome != Outcome::Shadowed;
            counters.refusal(refusal, enforced);
            if enforced {
                if let Some(kind) = refused.as_ref().and_then(|r| r.quota_kind()) {
                    counters.quota_rejection(kind);
                }
            } else if let Some(left_out) = self.app.shadow_log.permit() {
                tracing::info!(
                    tenant = tenant.as_ref().map_or("", |t| &*t.license().tenant),
                    path = %String::from_utf8_lossy(session.req_header().raw_path()),
                    would_deny = refusal.error_code(),
                    similar_not_logged = left_out,
                    "shadow mode: request forwarded"
                );
            }
        }
        if !matches!(action, Action::Reserved { .. }) && outcome != Outcome::Unchecked {
            metrics
                .decision_duration
                .observe(ctx.started.elapsed().as_secs_f64());
        }
        let response = match action {
            Action::Forward(forward) => {
                if outcome != Outcome::Unchecked {
                    let (active, now_active) = ActiveGuard::enter(Arc::clone(counters));
                    ctx._active = Some(active);
                    concurrency = now_active;
                }
                if forward.lease.is_some() || forward.share_lease.is_some() {
                    // A slow body must not hold a slot for long: no pause longer than
                    // the head's deadline, and a minimum average rate after it.
                    let gap = ctx.rules.body_gap;
                    session.set_read_timeout(Some(gap));
                    ctx.body_pace = Some(BodyPace {
                        started: Instant::now(),
                        grace: gap,
                        received: 0,
                    });
                }
                ctx.rewrite = forward.rewrite;
                ctx.host = forward.host;
                ctx._lease = forward.lease;
                ctx._share_lease = forward.share_lease;
                ctx.rate_limit = forward.rate_limit;
                ctx.seat = forward.seat;
                None
            }
            Action::Refuse => refused.map(|r| {
                let audience = match dialect {
                    Some(Dialect::JsonRpc) => Audience::JsonRpc(rpc_id.as_ref()),
                    Some(Dialect::XmlRpc) => Audience::XmlRpc,
                    None => Audience::Client(ClientKind::of(session.req_header())),
                };
                r.respond(
                    audience,
                    tenant.as_ref().map(|t| &**t.license()),
                    &ctx.rules.templates,
                )
            }),
            Action::Options => Some(
                LocalResponse {
                    status: StatusCode::NO_CONTENT,
                    content_type: "text/plain; charset=utf-8",
                    headers: Vec::new(),
                    body: bytes::Bytes::new(),
                }
                .with_header("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            ),
            Action::Reserved { .. } => page,
        };
        if let Some(usage) = self.app.usage.as_ref().filter(|_| outcome.is_decided()) {
            usage.record(UsageEvent {
                tenant: tenant.clone(),
                feature: feature.cloned(),
                refused: refused_code,
                limited,
                concurrency: u32::try_from(concurrency).unwrap_or(u32::MAX),
            });
        }
        ctx.outcome = outcome;
        ctx.tenant = tenant;
        response
    }

    /// Follows what the upstream's response does to the session cookie of seats
    /// (`seats.identity = "cookie:…"`): a logout releases the request's seat; a new
    /// session (a login, or a rotated one) takes a seat, the rotated session's
    /// passing to it. A login while every seat is taken is answered with the seats
    /// page instead, without its `Set-Cookie` (no half-open session is left), and
    /// the upstream's response is dropped.
    async fn seat_response(
        &self,
        session: &mut Session,
        upstream_response: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let (Some(hold), Some(rules), Some(seats)) =
            (&mut ctx.seat, &ctx.rules.seats, &self.app.seats)
        else {
            return Ok(());
        };
        let Some((tenant, limits)) = ctx
            .tenant
            .as_ref()
            .and_then(|t| Some((Arc::clone(&t.license().tenant), t.seat_limits?)))
        else {
            return Ok(());
        };
        let redis = self.app.redis.as_ref();
        let now = crate::quota::clock::now();
        let new_id = match rules.session_cookie(upstream_response, now) {
            SessionCookie::Untouched => return Ok(()),
            SessionCookie::Deleted => {
                if let Some(id) = hold.id {
                    seats.remove(redis, &tenant, id).await;
                }
                return Ok(());
            }
            SessionCookie::Set(value) => seats.id(&value),
        };
        if hold.id == Some(new_id) {
            return Ok(());
        }
        if let Some(old) = hold.id {
            seats.remove(redis, &tenant, old).await;
        }
        let client = ctx
            .rules
            .forwarding
            .original_client(session.req_header(), client_ip(session));
        let refused = match seats
            .admit(redis, &tenant, new_id, client, now, &limits, rules.times)
            .await
        {
            FleetAdmission::Decided(SeatAdmission::Seated { over }) => {
                hold.over |= over;
                return Ok(());
            }
            FleetAdmission::Decided(SeatAdmission::Full(full)) => Refused::Seats(full),
            FleetAdmission::Unavailable => Refused::QuotaUnavailable,
        };
        let counters = ctx
            .tenant
            .as_ref()
            .map_or(&self.app.metrics.unknown, |t| &t.counters);
        let enforced = ctx.rules.mode != crate::config::Mode::Shadow;
        if let Some(refusal) = refused.refusal() {
            counters.refusal(refusal, enforced);
        }
        if !enforced {
            return Ok(());
        }
        ctx.outcome = refused.outcome();
        ctx.seat = None;
        let response = refused.respond(
            Audience::Client(ClientKind::of(session.req_header())),
            ctx.tenant.as_ref().map(|t| &**t.license()),
            &ctx.rules.templates,
        );
        // The connection closes after this answer (the upstream's response is left
        // unread): `Connection: close` keeps the client from reusing it.
        session.set_keepalive(None);
        response.write_to(session).await?;
        // The upstream's response (and its session cookie) goes no further.
        Error::e_explain(
            ErrorType::ConnectionClosed,
            "login refused: every seat is taken",
        )
        .map_err(|e| e.into_down())
    }

    /// Queues the access-log line of a finished request (formatted and written by the
    /// access log's own thread).
    fn access_log(&self, session: &Session, ctx: &RequestCtx) {
        let req = session.req_header();
        let target = ctx.rewrite.as_deref().map_or(req.raw_path(), str::as_bytes);
        let path_end = target
            .iter()
            .position(|b| *b == b'?')
            .unwrap_or(target.len());
        let log = &self.app.access_log;
        let mut line = log.record();
        line.at_micros = crate::access_log::now_micros();
        line.client = ctx
            .rules
            .forwarding
            .original_client(req, client_ip(session));
        line.method = req.method.clone();
        line.path.extend_from_slice(&target[..path_end]);
        line.status = session.response_written().map_or(0, |r| r.status.as_u16());
        line.decision = ctx.outcome.label();
        line.tenant = ctx.tenant.as_ref().map(|t| Arc::clone(&t.license().tenant));
        line.duration_micros = micros(ctx.started.elapsed());
        line.upstream_micros = ctx.upstream_elapsed.map(micros);
        log.push(line);
    }
}

/// `d` in whole microseconds (saturating).
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The client's IP address, when it connected over TCP/IP.
fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// How an upstream failure is reported to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UpstreamFailure {
    pub status: StatusCode,
    pub error_code: &'static str,
    pub title: &'static str,
    pub detail: &'static str,
}

/// Classifies a proxy error: `None` when the client connection is already gone and
/// nothing can be written.
pub(crate) fn classify_failure(e: &pingora::Error) -> Option<UpstreamFailure> {
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
pub(crate) fn failure_response(failure: UpstreamFailure, client: ClientKind) -> LocalResponse {
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
    /// until its context is dropped, under the rules in force now.
    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            _inflight: self.app.inflight.enter(),
            started: Instant::now(),
            rules: self.app.rules.load_full(),
            outcome: Outcome::Unchecked,
            rewrite: None,
            host: None,
            tenant: None,
            _lease: None,
            _share_lease: None,
            body_pace: None,
            _active: None,
            rate_limit: None,
            upstream_sent: None,
            upstream_elapsed: None,
            banner: None,
            seat: None,
        }
    }

    /// The verdict, recorded and carried out: forward (`Ok(false)`) or answer here.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let rules = Arc::clone(&ctx.rules);
        let peer = client_ip(session);
        let verdict = verdict::judge(&self.app, &rules, session, peer).await;
        let page = match &verdict.action {
            Action::Reserved { path, tenant } => {
                // Attempts are counted per real client, also behind a TLS terminator.
                let client = rules.forwarding.original_client(session.req_header(), peer);
                Some(
                    activation::handle(session, &self.app, &rules, path, tenant.as_deref(), client)
                        .await,
                )
            }
            _ => None,
        };
        match self.finish(verdict, page, session, ctx) {
            None => Ok(false),
            Some(response) => {
                response.write_to(session).await?;
                Ok(true)
            }
        }
    }

    /// Ends a request whose body, while holding a concurrent slot, falls behind
    /// [`MIN_BODY_BYTES_PER_SEC`] after `server.header_timeout` (408).
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(pace) = &mut ctx.body_pace {
            if !pace.on_time(body.as_ref().map_or(0, |b| b.len())) {
                return Error::e_explain(
                    ErrorType::HTTPStatus(408),
                    "the request body arrives too slowly for a request holding a concurrent slot",
                );
            }
        }
        Ok(())
    }

    /// Every request goes to the one configured upstream (of the rules the request
    /// started with), over a connection from its proxy service's pool (one service
    /// per thread by default, see `server::proxy_services`).
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        Ok(Box::new(ctx.rules.peer.clone()))
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
        // The headers the gateway adds go after the request's own, written as lines
        // (no insertion into the request's header maps).
        let mut lines = AppendedHeadersBuilder::with_capacity(APPENDED_REQUEST_LINES_CAPACITY);
        if let Some(host) = ctx.host.take() {
            upstream_request.insert_header(http::header::HOST, host)?;
        }
        ctx.rules
            .forwarding
            .apply(upstream_request, client_ip(session), &mut lines)?;
        if let Some(target) = &ctx.rewrite {
            upstream_request.set_raw_path(target.as_bytes())?;
        }
        if let Some(tenant) = &ctx.tenant {
            tenant.upstream_headers.write_lines(&mut lines);
        }
        upstream_request.set_appended_headers(lines.build());
        ctx.upstream_sent = Some(Instant::now());
        Ok(())
    }

    /// Records how long the upstream took to answer with its response header.
    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(sent) = ctx.upstream_sent {
            let elapsed = sent.elapsed();
            self.app
                .metrics
                .upstream_duration
                .observe(elapsed.as_secs_f64());
            ctx.upstream_elapsed = Some(elapsed);
        }
        Ok(())
    }

    /// Adds `X-Licgate-Warning` while the license is expiring, in grace or read-only,
    /// and `RateLimit-*` on quota-governed responses; readies the flag banner for an
    /// HTML page (its length changes: sent chunked, or to the connection's end).
    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if ctx.seat.is_some() {
            self.seat_response(session, upstream_response, ctx).await?;
        }
        if ctx.rules.flag_banner {
            let banner = ctx
                .tenant
                .as_ref()
                .and_then(|t| banner::banner_for(t.license()));
            if let Some(text) = banner.filter(|_| banner::is_plain_html(upstream_response)) {
                upstream_response.remove_header(&http::header::CONTENT_LENGTH);
                if session.req_header().version == http::Version::HTTP_11 {
                    upstream_response.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
                }
                ctx.banner = Some(banner::Injection::new(text));
            }
        }
        let warning = ctx
            .tenant
            .as_ref()
            .and_then(|t| t.warning_header.as_deref());
        let seat_over = ctx.seat.as_ref().is_some_and(|s| s.over);
        if warning.is_none() && ctx.rate_limit.is_none() && !seat_over {
            return Ok(());
        }
        // Written as lines after the upstream's headers; the upstream's own copies of
        // these headers, if any, are dropped (the gateway's values replace them).
        let mut lines = AppendedHeadersBuilder::with_capacity(APPENDED_RESPONSE_LINES_CAPACITY);
        if warning.is_some() || seat_over {
            remove_present(upstream_response, &[&WARNING]);
        }
        if let Some(warning) = warning {
            lines.header(&WARNING, warning);
        }
        if seat_over {
            lines.header(&WARNING, &SEAT_OVERAGE_WARNING);
        }
        if let Some(RateLimit {
            limit,
            remaining,
            reset_secs,
            policy,
        }) = &ctx.rate_limit
        {
            remove_present(
                upstream_response,
                &[
                    &RATELIMIT_LIMIT,
                    &RATELIMIT_REMAINING,
                    &RATELIMIT_RESET,
                    &RATELIMIT_POLICY,
                ],
            );
            lines
                .number(&RATELIMIT_LIMIT, *limit)
                .number(&RATELIMIT_REMAINING, *remaining)
                .number(&RATELIMIT_RESET, *reset_secs);
            let mut text = [0u8; 256];
            let n = policy.write(&mut text);
            if n > 0 {
                // Digits, `;w=` and `, ` only.
                lines.checked_value_bytes(&RATELIMIT_POLICY, &text[..n]);
            }
        }
        upstream_response.set_appended_headers(lines.build());
        Ok(())
    }

    /// Puts the flag banner into the page, when [`Self::response_filter`] readied it.
    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if let Some(injection) = &mut ctx.banner {
            injection.pass(body, end_of_stream);
        }
        Ok(None)
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
    /// has already started or the client is gone; counts upstream failures.
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
            self.app
                .metrics
                .upstream_error(if failure.status == StatusCode::GATEWAY_TIMEOUT {
                    UpstreamErrorKind::Timeout
                } else {
                    UpstreamErrorKind::Unavailable
                });
            if let Some(left_out) = self.upstream_failure_log.permit() {
                tracing::warn!(
                    error = %e,
                    status = code,
                    similar_failures_not_logged = left_out,
                    "upstream request failed"
                );
            }
        } else {
            tracing::debug!(error = %e, status = code, "request failed");
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

    /// Writes the access-log line (when `log.access` is on).
    async fn logging(
        &self,
        session: &mut Session,
        _e: Option<&pingora::Error>,
        ctx: &mut RequestCtx,
    ) {
        if ctx.rules.access_log {
            self.access_log(session, ctx);
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
