//! The verdict on one request, reached in one call: the target normalized, the
//! tenant resolved, the license gate and the feature map applied (`decide`), the
//! quotas asked (concurrency, the client's share, the rate rules), and shadow mode
//! applied to whatever refused. The glue records the verdict once
//! (`Gateway::finish`); nothing here writes to the client or counts anything.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use pingora::http::RequestHeader;
use pingora::proxy::Session;

use super::refusal::Refused;
use crate::app::{App, Rules};
use crate::policy::decide::{decide, decide_model, Decision, Mode, ModelDecision, RequestFacts};
use crate::policy::method::method_override;
use crate::policy::odoo::{self, Dialect, Endpoint};
use crate::policy::outcome::Outcome;
use crate::policy::path::{normalize, MethodOverride, Target};
use crate::quota::local::Lease;
use crate::quota::share::ShareLease;
use crate::quota::{Policy, QuotaBackend, QuotaOutcome};
use crate::seats::book::Admission as SeatAdmission;
use crate::seats::fleet::FleetAdmission;
use crate::seats::identity::Identity;
use crate::seats::SeatId;
use crate::tenants::TenantEntry;

/// What the gateway decided about one request.
#[derive(Debug)]
pub(crate) struct Verdict<'r> {
    /// What the gateway does (the `decision` of metrics and the access log).
    pub outcome: Outcome,
    /// The tenant's entry, when the tenant has a license.
    pub tenant: Option<Arc<TenantEntry>>,
    /// Why the request is refused, or, when `outcome` is `Shadowed`, would have been.
    pub refused: Option<Refused<'r>>,
    /// The feature the request needs (its model's, else its path's), when the
    /// feature map names one.
    pub feature: Option<&'r Arc<str>>,
    pub action: Action,
    /// How the gateway's answer is shaped for an Odoo RPC caller (`[odoo] enabled`).
    pub dialect: Option<Dialect>,
    /// The JSON-RPC request's `id`, when its body was read.
    pub rpc_id: Option<serde_json::Value>,
}

/// What carrying out a verdict takes.
// One per request, on the stack: boxing the forward would allocate per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Action {
    /// Send the request upstream.
    Forward(Forward),
    /// Answer with the refusal's response.
    Refuse,
    /// `OPTIONS *`: answered by the gateway (204).
    Options,
    /// A gateway page under `/_licgate/` for `path`, for the resolved tenant name.
    Reserved {
        path: String,
        tenant: Option<String>,
    },
}

/// What a forwarded request carries to the later phases.
#[derive(Debug, Default)]
pub(crate) struct Forward {
    /// The normalized request target to forward, when it differs from the received one.
    pub rewrite: Option<String>,
    /// The `Host` to forward for an absolute-form target (its authority).
    pub host: Option<String>,
    /// One of the tenant's concurrent slots, held until the request ends.
    pub lease: Option<Lease>,
    /// The client's share of those slots (`quota.per_client_share`).
    pub share_lease: Option<ShareLease>,
    /// `RateLimit-*` for a quota-governed response.
    pub rate_limit: Option<RateLimit>,
    /// The request's seat, when the tenant's seats follow a session cookie (its
    /// response may log in, rotate or log out the session) or the request holds
    /// one within the overage allowance.
    pub seat: Option<SeatHold>,
}

/// A request's identity among its tenant's seats.
#[derive(Debug)]
pub(crate) struct SeatHold {
    /// The request's identity, when it has one.
    pub id: Option<SeatId>,
    /// Admitted beyond the nominal limit (the response carries a warning).
    pub over: bool,
}

/// The `RateLimit-Limit`, `-Remaining`, `-Reset` and `-Policy` values of an allowed
/// request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateLimit {
    pub limit: u64,
    pub remaining: u64,
    pub reset_secs: u64,
    pub policy: Policy,
}

impl<'r> Verdict<'r> {
    /// An enforced refusal.
    fn refuse(refused: Refused<'r>, tenant: Option<Arc<TenantEntry>>) -> Verdict<'r> {
        Verdict {
            outcome: refused.outcome(),
            tenant,
            refused: Some(refused),
            feature: None,
            action: Action::Refuse,
            dialect: None,
            rpc_id: None,
        }
    }

    /// The verdict, its answers shaped for `dialect`.
    fn speaking(self, dialect: Option<Dialect>) -> Verdict<'r> {
        Verdict { dialect, ..self }
    }

    /// An enforced refusal of a request that needs `feature`.
    fn refuse_feature(
        refused: Refused<'r>,
        tenant: Option<Arc<TenantEntry>>,
        feature: Option<&'r Arc<str>>,
    ) -> Verdict<'r> {
        Verdict {
            feature,
            ..Verdict::refuse(refused, tenant)
        }
    }
}

/// What the license gate and the feature map decided about a request to forward,
/// before its quotas are asked.
struct Admitted<'r> {
    tenant: Option<Arc<TenantEntry>>,
    /// Whether quotas apply (not for public paths).
    governed: bool,
    feature: Option<&'r Arc<str>>,
    shadowed: Option<Refused<'r>>,
    forward: Forward,
    /// The Odoo endpoint whose model the body, path or query names, when model
    /// rules exist.
    inspect: Option<Inspect>,
}

/// An Odoo request to read before quotas are asked.
struct Inspect {
    endpoint: Endpoint,
    /// The normalized path and the query.
    path: String,
    query: Option<String>,
}

/// Judges the request of `session` (from `peer`) under `rules`. Allocation-free for
/// an allowed request whose target is already normal and names no Odoo model.
pub(crate) async fn judge<'r>(
    app: &App,
    rules: &'r Rules,
    session: &mut Session,
    peer: Option<IpAddr>,
) -> Verdict<'r> {
    let (mut admitted, dialect) = match admit(app, rules, session.req_header(), peer) {
        Admission::Admitted(admitted, dialect) => (admitted, dialect),
        Admission::Answered(verdict) => return verdict,
    };
    let mut rpc_id = None;
    if let Some(inspect) = admitted.inspect.take() {
        let reached = match super::inspect::read(
            session,
            rules,
            inspect.endpoint,
            &inspect.path,
            inspect.query.as_deref(),
        )
        .await
        {
            Ok(reached) => reached,
            Err(refusal) => {
                return Verdict::refuse(Refused::Rpc(refusal), admitted.tenant).speaking(dialect)
            }
        };
        rpc_id = reached.id;
        if let Some(call) = reached.call {
            let license = admitted.tenant.as_ref().map(|t| &**t.license());
            let target = || match &inspect.query {
                Some(q) => format!("{}?{q}", inspect.path),
                None => inspect.path.clone(),
            };
            match decide_model(
                &call.model,
                &call.method,
                &rules.models,
                license,
                &session.req_header().method,
                rules.mode,
            ) {
                ModelDecision::Free => {}
                ModelDecision::Allow { feature } => {
                    admitted.feature = Some(feature);
                    admitted.governed = true;
                }
                ModelDecision::Deny {
                    feature,
                    reason,
                    shadowed,
                } => {
                    let refused = Refused::License {
                        reason,
                        feature: Some(&**feature),
                        target: target(),
                    };
                    if !shadowed {
                        let mut verdict =
                            Verdict::refuse_feature(refused, admitted.tenant, Some(feature));
                        verdict.rpc_id = rpc_id;
                        return verdict.speaking(dialect);
                    }
                    admitted.feature = Some(feature);
                    admitted.governed = true;
                    admitted.shadowed.get_or_insert(refused);
                }
            }
        }
    }
    let mut verdict = charge(app, rules, session.req_header(), peer, admitted).await;
    verdict.rpc_id = rpc_id;
    verdict.speaking(dialect)
}

/// What [`admit`] found.
enum Admission<'r> {
    /// The request is answered without asking the quotas.
    Answered(Verdict<'r>),
    /// The quotas are to be asked (after the Odoo model is read), and the gateway's
    /// answers are shaped for the dialect.
    Admitted(Admitted<'r>, Option<Dialect>),
}

/// The license gate and the feature map's path side.
fn admit<'r>(
    app: &App,
    rules: &'r Rules,
    req: &RequestHeader,
    peer: Option<IpAddr>,
) -> Admission<'r> {
    if rules.mode == Mode::Off {
        return Admission::Answered(Verdict {
            outcome: Outcome::Unchecked,
            tenant: None,
            refused: None,
            feature: None,
            action: Action::Forward(Forward::default()),
            dialect: None,
            rpc_id: None,
        });
    }
    let target = match normalize(req.raw_path(), &rules.paths) {
        Ok(Target::Path(p)) => p,
        Ok(Target::Asterisk) if req.method == http::Method::OPTIONS => {
            return Admission::Answered(Verdict {
                outcome: Outcome::Gateway,
                tenant: None,
                refused: None,
                feature: None,
                action: Action::Options,
                dialect: None,
                rpc_id: None,
            })
        }
        Ok(Target::Asterisk) => {
            return Admission::Answered(Verdict::refuse(
                Refused::BadPath("the request target * is only valid with OPTIONS".into()),
                None,
            ))
        }
        Err(e) => {
            return Admission::Answered(Verdict::refuse(Refused::BadPath(e.to_string()), None))
        }
    };
    let dialect = if rules.odoo.enabled {
        odoo::dialect(&target.path, &req.method, media_type_of(req))
    } else {
        None
    };
    if rules.paths.method_override == MethodOverride::Reject {
        if let Some(name) = method_override(&req.headers, target.query) {
            return Admission::Answered(
                Verdict::refuse(Refused::MethodOverride(name.to_string()), None).speaking(dialect),
            );
        }
    }
    let tenant_name = rules.tenants.resolve(req, target.authority, peer);
    let lowered;
    let match_path: &str = if rules.paths.case_insensitive {
        lowered = target.path.to_ascii_lowercase();
        &lowered
    } else {
        &target.path
    };
    let facts = RequestFacts {
        method: &req.method,
        path: match_path,
        tenant: tenant_name.as_deref(),
    };
    let (tenant, governed, feature, shadowed) = {
        let table = app.tenants.load();
        match decide(&facts, &rules.policy, &**table) {
            Decision::Reserved => {
                return Admission::Answered(Verdict {
                    outcome: Outcome::Gateway,
                    tenant: tenant_name.as_deref().and_then(|t| table.get(t)).cloned(),
                    refused: None,
                    feature: None,
                    action: Action::Reserved {
                        path: target.path.to_string(),
                        tenant: tenant_name.map(Cow::into_owned),
                    },
                    dialect: None,
                    rpc_id: None,
                });
            }
            Decision::Deny {
                reason,
                tenant,
                feature,
            } => {
                let refused = Refused::License {
                    reason,
                    feature: feature.map(|f| &**f),
                    target: target.target(),
                };
                return Admission::Answered(
                    Verdict::refuse_feature(refused, tenant.cloned(), feature).speaking(dialect),
                );
            }
            Decision::Forward {
                tenant,
                governed,
                feature,
                shadowed,
            } => (tenant.cloned(), governed, feature, shadowed),
        }
    };
    let shadowed = shadowed.map(|reason| Refused::License {
        reason,
        feature: feature.map(|f| &**f),
        target: target.target(),
    });
    let forward = Forward {
        rewrite: target.changed().then(|| target.target()),
        host: target.authority.map(str::to_string),
        ..Forward::default()
    };
    let inspect = (rules.odoo.enabled && !rules.models.is_empty())
        .then(|| odoo::endpoint(&target.path))
        .flatten()
        .map(|endpoint| Inspect {
            endpoint,
            path: target.path.to_string(),
            query: target.query.map(str::to_string),
        });
    Admission::Admitted(
        Admitted {
            tenant,
            governed,
            feature,
            shadowed,
            forward,
            inspect,
        },
        dialect,
    )
}

/// Asks the quotas about an admitted request (concurrency, the client's share, the
/// rate rules) and applies shadow mode to whatever refuses.
async fn charge<'r>(
    app: &App,
    rules: &'r Rules,
    req: &RequestHeader,
    peer: Option<IpAddr>,
    admitted: Admitted<'r>,
) -> Verdict<'r> {
    let Admitted {
        tenant,
        governed,
        feature: feature_name,
        mut shadowed,
        mut forward,
        inspect: _,
    } = admitted;
    let feature = feature_name.map(|f| &**f);
    let shadow_mode = rules.mode == Mode::Shadow;
    // In shadow mode a quota's refusal is remembered and the request goes on.
    macro_rules! refuse_or_shadow {
        ($refused:expr) => {{
            let refused = $refused;
            if shadow_mode {
                shadowed = Some(refused);
            } else {
                return Verdict::refuse_feature(refused, tenant, feature_name);
            }
        }};
    }
    if let (Some(entry), true) = (&tenant, governed && shadowed.is_none()) {
        if let Some(restrictions) = &entry.license().restrictions {
            let client = rules.forwarding.original_client(req, peer);
            if let Err(refusal) =
                crate::restrictions::permits(restrictions, client, rules.geoip.as_deref())
            {
                refuse_or_shadow!(Refused::Network(refusal));
            }
        }
    }
    if let (Some(entry), Some(seat_rules), Some(seats)) = (&tenant, &rules.seats, &app.seats) {
        if let Some(limits) = entry.seat_limits {
            let id = match seat_rules.identity(req, peer) {
                Identity::Anonymous => None,
                Identity::Known(value) => Some(seats.id(&value)),
                Identity::Ambiguous(what) if governed => {
                    return Verdict::refuse_feature(
                        Refused::AmbiguousIdentity(what),
                        tenant,
                        feature_name,
                    )
                }
                Identity::Ambiguous(_) => None,
            };
            let mut over = false;
            if let (Some(id), true) = (id, governed && shadowed.is_none()) {
                let client = rules.forwarding.original_client(req, peer);
                let now = crate::quota::clock::now();
                let tenant_name = &entry.license().tenant;
                let admission = seats
                    .admit(
                        app.redis.as_ref(),
                        tenant_name,
                        id,
                        client,
                        now,
                        &limits,
                        seat_rules.times,
                    )
                    .await;
                match admission {
                    FleetAdmission::Decided(SeatAdmission::Seated { over: o }) => over = o,
                    FleetAdmission::Decided(SeatAdmission::Full(full)) => {
                        refuse_or_shadow!(Refused::Seats(full))
                    }
                    FleetAdmission::Unavailable => refuse_or_shadow!(Refused::QuotaUnavailable),
                }
            }
            if over || (seat_rules.cookie_name().is_some() && shadowed.is_none()) {
                forward.seat = Some(SeatHold { id, over });
            }
        }
    }
    if let (Some(entry), true) = (&tenant, governed && shadowed.is_none()) {
        let quota = &entry.quota;
        match app.quotas.acquire(quota) {
            Ok(lease) => forward.lease = lease,
            Err(limit) => refuse_or_shadow!(Refused::Concurrency { limit }),
        }
        let client = app
            .shares
            .as_ref()
            .and_then(|_| rules.forwarding.original_client(req, peer));
        let shares = app.shares.as_ref().zip(client);
        if let Some(((shares, client), limit)) =
            shares.zip(quota.max_concurrent().filter(|_| shadowed.is_none()))
        {
            match shares.acquire(quota, client, limit) {
                Ok(lease) => forward.share_lease = lease,
                Err(refusal) => refuse_or_shadow!(Refused::ClientShare(refusal)),
            }
        }
        // The client's share first: a client over it is refused alone, without
        // spending the tenant's quota.
        let mut ticket = None;
        if let Some((shares, client)) = shares {
            match shares.check(quota, feature, client, crate::quota::clock::now()) {
                Ok(t) => ticket = Some(t),
                Err(refusal) => refuse_or_shadow!(Refused::ClientShare(refusal)),
            }
        }
        let counted = match &app.redis {
            Some(redis) => QuotaBackend::check(redis, quota, feature).await,
            None => app.quotas.check(quota, feature),
        };
        let refused = match counted {
            QuotaOutcome::Unlimited => None,
            QuotaOutcome::Allowed {
                limit,
                remaining,
                reset_secs,
                policy,
            } => {
                forward.rate_limit = Some(RateLimit {
                    limit,
                    remaining,
                    reset_secs,
                    policy,
                });
                None
            }
            QuotaOutcome::Limited {
                rule,
                retry_after_secs,
                resets_at,
                feature: by_feature,
                policy,
            } => Some(Refused::Usage {
                rule,
                retry_after_secs,
                resets_at,
                feature: feature.filter(|_| by_feature),
                policy,
            }),
            QuotaOutcome::Unavailable => Some(Refused::QuotaUnavailable),
        };
        if let Some(refused) = refused {
            if let (Some(ticket), Some((shares, _))) = (ticket, shares) {
                shares.refund(ticket, quota, feature);
            }
            refuse_or_shadow!(refused);
        }
    }
    let outcome = match (&shadowed, governed) {
        (Some(_), _) => Outcome::Shadowed,
        (None, true) => Outcome::Allowed,
        (None, false) => Outcome::Public,
    };
    Verdict {
        outcome,
        tenant,
        refused: shadowed,
        feature: feature_name,
        action: Action::Forward(forward),
        dialect: None,
        rpc_id: None,
    }
}

/// The request's media type (`Content-Type` before its parameters), borrowed.
fn media_type_of(req: &RequestHeader) -> Option<&str> {
    let value = req.headers.get(http::header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next().unwrap_or("").trim())
}
