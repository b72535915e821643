//! The decision function: pure, no I/O, over immutable inputs. The pingora glue
//! gathers [`RequestFacts`], calls [`decide`], and carries out the [`Decision`].

use std::sync::Arc;

use http::Method;

use super::model::ModelMap;
use super::prefix::PrefixTrie;
use crate::license::{LicenseSnapshot, Status, TenantSummary};

/// The gateway's reserved path prefix.
pub const RESERVED_PREFIX: &str = "/_licgate";

/// What the gateway does with requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Check every request and act on the decision.
    Enforce,
    /// Check every request, log and count would-be denials, but forward everything.
    Shadow,
    /// Plain reverse proxy: no checks at all (the baseline for benchmarks).
    Off,
}

/// One `[[features]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureRule {
    pub prefix: String,
    /// The feature's name (shared with the usage events of its requests).
    pub feature: Arc<str>,
    /// Only these methods need the feature; `None` = all.
    pub methods: Option<Vec<http::Method>>,
    /// Forward even when the feature is missing (the denial is logged and counted).
    pub shadow: bool,
    /// Whether `<last segment>.<ext>` (`/api/orders.json`) is covered too, as format
    /// suffixes of Django REST framework, Rails and Spring route it (default true).
    pub format_suffixes: bool,
}

/// The compiled request policy (from configuration; rebuilt on reload).
#[derive(Debug, Clone)]
pub struct Policy {
    pub mode: Mode,
    features: PrefixTrie<FeatureRule>,
    public: PrefixTrie<()>,
    /// Match paths lower-cased (prefixes are stored lower-cased too).
    pub case_insensitive: bool,
}

impl Policy {
    /// Compiles the feature map and the public prefixes (matched lower-cased when
    /// `case_insensitive`).
    pub fn new(
        mode: Mode,
        features: &[FeatureRule],
        public: &[String],
        case_insensitive: bool,
    ) -> Policy {
        let key = |p: &str| {
            if case_insensitive {
                p.to_ascii_lowercase()
            } else {
                p.to_string()
            }
        };
        let mut feature_trie = PrefixTrie::default();
        // Under one prefix, rules limited to some methods are tried before rules for all.
        let mut ordered: Vec<&FeatureRule> = features.iter().collect();
        ordered.sort_by_key(|rule| rule.methods.is_none());
        for rule in ordered {
            feature_trie.insert(&key(&rule.prefix), rule.clone());
        }
        let mut public_trie = PrefixTrie::default();
        for prefix in public {
            public_trie.insert(&key(prefix), ());
        }
        Policy {
            mode,
            features: feature_trie,
            public: public_trie,
            case_insensitive,
        }
    }

    /// The feature rule governing `method` on `path`: the longest prefix whose methods
    /// include `method`. Methods compare case-insensitively (`post` is POST to Django
    /// and werkzeug) and a rule naming GET also covers HEAD (frameworks answer HEAD
    /// with the GET handler). A last segment with a format suffix (`orders.json`)
    /// counts as its stem unless the rule opts out (`format_suffixes = false`).
    pub fn feature_for(&self, method: &Method, path: &str) -> Option<&FeatureRule> {
        self.features.longest_match_suffixed(
            path,
            |rule| rule_covers(rule, method),
            |rule| rule.format_suffixes,
        )
    }

    pub fn is_public(&self, path: &str) -> bool {
        self.public.matches(path)
    }
}

/// Whether `rule` applies to requests with `method`.
fn rule_covers(rule: &FeatureRule, method: &Method) -> bool {
    let Some(methods) = &rule.methods else {
        return true;
    };
    let asked = method.as_str();
    methods.iter().any(|m| {
        m.as_str().eq_ignore_ascii_case(asked)
            || (*m == Method::GET && asked.eq_ignore_ascii_case("HEAD"))
    })
}

/// Whether any rule is limited to some methods (then method overrides matter).
pub fn has_method_rules(features: &[FeatureRule]) -> bool {
    features.iter().any(|rule| rule.methods.is_some())
}

/// What the glue knows about a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a Method,
    /// The normalized path used for matching (lower-cased when the policy says so).
    pub path: &'a str,
    /// The tenant the request resolved to, if any.
    pub tenant: Option<&'a str>,
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum DenyReason {
    LicenseMissing,
    LicenseExpired,
    LicenseRevoked,
    LicenseSuspended,
    LicenseInvalid,
    LicenseNotYetValid,
    LicenseReadOnly,
    FeatureNotLicensed,
}

impl DenyReason {
    /// The contract's `error_code`.
    pub fn error_code(self) -> &'static str {
        match self {
            DenyReason::LicenseMissing => "LICENSE_MISSING",
            DenyReason::LicenseExpired => "LICENSE_EXPIRED",
            DenyReason::LicenseRevoked => "LICENSE_REVOKED",
            DenyReason::LicenseSuspended => "LICENSE_SUSPENDED",
            DenyReason::LicenseInvalid => "LICENSE_INVALID",
            DenyReason::LicenseNotYetValid => "LICENSE_NOT_YET_VALID",
            DenyReason::LicenseReadOnly => "LICENSE_READ_ONLY",
            DenyReason::FeatureNotLicensed => "FEATURE_NOT_LICENSED",
        }
    }

    /// A short label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            DenyReason::LicenseMissing => "license_missing",
            DenyReason::LicenseExpired => "license_expired",
            DenyReason::LicenseRevoked => "license_revoked",
            DenyReason::LicenseSuspended => "license_suspended",
            DenyReason::LicenseInvalid => "license_invalid",
            DenyReason::LicenseNotYetValid => "license_not_yet_valid",
            DenyReason::LicenseReadOnly => "license_read_only",
            DenyReason::FeatureNotLicensed => "feature_not_licensed",
        }
    }
}

/// Where [`decide`] finds a tenant's license facts: the license snapshot itself, or
/// a table of richer per-tenant entries built from it.
pub trait Licenses {
    /// What a lookup finds (handed back in the [`Decision`]).
    type Tenant;
    /// The entry of `tenant`, if it has a license (allocation-free).
    fn find(&self, tenant: &str) -> Option<&Self::Tenant>;
    /// The license facts of an entry.
    fn license(tenant: &Self::Tenant) -> &TenantSummary;
}

impl Licenses for LicenseSnapshot {
    type Tenant = Arc<TenantSummary>;

    fn find(&self, tenant: &str) -> Option<&Arc<TenantSummary>> {
        self.tenants.get(tenant)
    }

    fn license(tenant: &Arc<TenantSummary>) -> &TenantSummary {
        tenant
    }
}

/// What to do with a request.
#[derive(Debug)]
pub enum Decision<'p, 's, T = Arc<TenantSummary>> {
    /// A gateway page under `/_licgate/`.
    Reserved,
    /// Send it to the upstream.
    Forward {
        tenant: Option<&'s T>,
        /// Whether quotas apply (not for public paths).
        governed: bool,
        /// The feature the path needs, when the feature map names one.
        feature: Option<&'p Arc<str>>,
        /// A denial that shadow mode turned into a forward (log and count it).
        shadowed: Option<DenyReason>,
    },
    /// Answer locally.
    Deny {
        reason: DenyReason,
        tenant: Option<&'s T>,
        feature: Option<&'p Arc<str>>,
    },
}

/// Methods allowed while a license is `READ_ONLY` (exact: `get` is not one of them).
fn is_read_method(method: &Method) -> bool {
    *method == Method::GET || *method == Method::HEAD || *method == Method::OPTIONS
}

/// The license gate: why a request with `method` is refused under `license` (none:
/// unlicensed), or `None` when the license lets it through.
fn status_denial(license: Option<&TenantSummary>, method: &Method) -> Option<DenyReason> {
    match license.map_or(Status::Unlicensed, |t| t.status) {
        Status::Unlicensed => Some(DenyReason::LicenseMissing),
        Status::Expired => Some(DenyReason::LicenseExpired),
        Status::Revoked => Some(DenyReason::LicenseRevoked),
        Status::Suspended => Some(DenyReason::LicenseSuspended),
        Status::Invalid => Some(DenyReason::LicenseInvalid),
        Status::NotYetValid => Some(DenyReason::LicenseNotYetValid),
        Status::ReadOnly if !is_read_method(method) => Some(DenyReason::LicenseReadOnly),
        Status::Valid | Status::ExpiringSoon | Status::Grace | Status::ReadOnly => None,
    }
}

/// What the model map decides about an Odoo call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelDecision<'p> {
    /// No model rule governs the call.
    Free,
    /// The call needs `feature`, and the license has it.
    Allow { feature: &'p Arc<str> },
    /// The call is refused (or, `shadowed`, forwarded and counted as a denial).
    Deny {
        feature: &'p Arc<str>,
        reason: DenyReason,
        shadowed: bool,
    },
}

/// Decides about a call of RPC `call_method` on `model` (sent with HTTP `method`)
/// under `license`: the most specific model rule names the feature; the license
/// gate and the feature must let it through. Never allocates.
pub fn decide_model<'p>(
    model: &str,
    call_method: &str,
    map: &'p ModelMap,
    license: Option<&TenantSummary>,
    method: &Method,
    mode: Mode,
) -> ModelDecision<'p> {
    let Some(rule) = map.rule_for(model, call_method) else {
        return ModelDecision::Free;
    };
    let feature = &rule.feature;
    let reason = status_denial(license, method).or_else(|| {
        license
            .filter(|t| !t.has_feature(feature))
            .map(|_| DenyReason::FeatureNotLicensed)
    });
    match reason {
        None => ModelDecision::Allow { feature },
        Some(reason) => ModelDecision::Deny {
            feature,
            reason,
            shadowed: mode == Mode::Shadow
                || (rule.shadow && reason == DenyReason::FeatureNotLicensed),
        },
    }
}

/// Decides about one request: reserved prefix, public paths, the license status gate,
/// then the feature map. `Mode::Shadow` (global) and shadow feature entries forward
/// what they would deny. Never allocates.
pub fn decide<'p, 's, L: Licenses>(
    facts: &RequestFacts<'_>,
    policy: &'p Policy,
    licenses: &'s L,
) -> Decision<'p, 's, L::Tenant> {
    let path = facts.path;
    if path == RESERVED_PREFIX
        || (path.starts_with(RESERVED_PREFIX)
            && path.as_bytes().get(RESERVED_PREFIX.len()) == Some(&b'/'))
    {
        return Decision::Reserved;
    }
    let tenant = facts.tenant.and_then(|t| licenses.find(t));
    if policy.is_public(path) {
        return Decision::Forward {
            tenant,
            governed: false,
            feature: None,
            shadowed: None,
        };
    }
    let rule = policy.feature_for(facts.method, path);
    let feature = rule.map(|r| &r.feature);
    let license = tenant.map(L::license);
    let denial = status_denial(license, facts.method);
    let (denial, rule_shadow) = match denial {
        Some(reason) => (Some(reason), false),
        None => match (rule, license) {
            (Some(rule), Some(t)) if !t.has_feature(&rule.feature) => {
                (Some(DenyReason::FeatureNotLicensed), rule.shadow)
            }
            _ => (None, false),
        },
    };
    match denial {
        None => Decision::Forward {
            tenant,
            governed: true,
            feature,
            shadowed: None,
        },
        Some(reason) if policy.mode == Mode::Shadow || rule_shadow => Decision::Forward {
            tenant,
            governed: true,
            feature,
            shadowed: Some(reason),
        },
        Some(reason) => Decision::Deny {
            reason,
            tenant,
            feature,
        },
    }
}

#[cfg(test)]
mod tests;
