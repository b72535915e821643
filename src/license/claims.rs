//! The claims of a license token, parsed claim by claim so a wrong type names the claim.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Seconds since 1970-01-01T00:00:00Z.
pub type UnixTime = i64;

/// Numeric limits granted by a license; absent = unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_hour: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_day: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_month: Option<u64>,
    /// GCRA smoothing: this many requests per second (burst: `burst`, default the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<u64>,
    /// GCRA smoothing: at most this many requests at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_connections: Option<u64>,
    /// The older name of `max_active_users` (the smaller of the two applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_users: Option<u64>,
    /// Concurrent seats: identities seen within `seats.idle_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_seats: Option<u64>,
    /// Distinct identities seen within `seats.active_window`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_active_users: Option<u64>,
    /// The overage allowance on seats and active users (e.g. `1.25`: up to 125 % is
    /// served, with a warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overage: Option<Overage>,
}

/// An overage allowance: a factor from 1 to 10, kept in thousandths (exact, `Eq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Overage(u32);

impl Overage {
    /// The largest factor accepted.
    pub const MAX: f64 = 10.0;

    /// The factor `value`; `None` unless 1 ≤ `value` ≤ [`Overage::MAX`].
    pub fn new(value: f64) -> Option<Overage> {
        (value.is_finite() && (1.0..=Overage::MAX).contains(&value))
            .then(|| Overage((value * 1000.0).round() as u32))
    }

    /// The factor.
    pub fn factor(self) -> f64 {
        f64::from(self.0) / 1000.0
    }

    /// The most served under `limit` with this allowance (`limit` × factor, rounded
    /// down, never below `limit`).
    pub fn allowed(self, limit: u64) -> u64 {
        let scaled = u128::from(limit) * u128::from(self.0) / 1000;
        u64::try_from(scaled).unwrap_or(u64::MAX).max(limit)
    }
}

impl Serialize for Overage {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.factor())
    }
}

impl<'de> Deserialize<'de> for Overage {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Overage, D::Error> {
        let value = f64::deserialize(deserializer)?;
        Overage::new(value).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "overage {value} is not a factor from 1 to {}",
                Overage::MAX
            ))
        })
    }
}

/// Where a license may be used from (`restrictions`): CIDR lists on the original
/// client address, and ISO 3166 country codes (with a GeoIP database).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restrictions {
    /// Empty: any network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_networks: Vec<ipnet::IpNet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denied_networks: Vec<ipnet::IpNet>,
    /// Two-letter codes, upper case; empty: any country.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_countries: Vec<CountryCode>,
}

impl Restrictions {
    /// Whether nothing is restricted.
    pub fn is_empty(&self) -> bool {
        self.allowed_networks.is_empty()
            && self.denied_networks.is_empty()
            && self.allowed_countries.is_empty()
    }

    /// The restrictions of two licenses of one tenant in force together: a network
    /// or country either allows is allowed (an unrestricted side allows all); a
    /// network either denies is denied.
    pub fn combine(&self, other: &Restrictions) -> Restrictions {
        fn union<T: Clone + Ord>(a: &[T], b: &[T]) -> Vec<T> {
            if a.is_empty() || b.is_empty() {
                return Vec::new();
            }
            let mut all: Vec<T> = a.iter().chain(b).cloned().collect();
            all.sort();
            all.dedup();
            all
        }
        let mut denied: Vec<ipnet::IpNet> = self
            .denied_networks
            .iter()
            .chain(&other.denied_networks)
            .copied()
            .collect();
        denied.sort();
        denied.dedup();
        Restrictions {
            allowed_networks: union(&self.allowed_networks, &other.allowed_networks),
            denied_networks: denied,
            allowed_countries: union(&self.allowed_countries, &other.allowed_countries),
        }
    }
}

/// An ISO 3166-1 alpha-2 country code, upper case (`DE`, `US`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// The code of `text` (two ASCII letters, any case).
    pub fn parse(text: &str) -> Option<CountryCode> {
        match text.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => Some(CountryCode([
                a.to_ascii_uppercase(),
                b.to_ascii_uppercase(),
            ])),
            _ => None,
        }
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl Serialize for CountryCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CountryCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<CountryCode, D::Error> {
        let text = String::deserialize(deserializer)?;
        CountryCode::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is not a two-letter country code (ISO 3166-1 alpha-2)"
            ))
        })
    }
}

/// The names accepted in `limits` (and by `licgate license issue --limit`).
pub const LIMIT_NAMES: &[&str] = &[
    "requests_per_minute",
    "requests_per_hour",
    "requests_per_day",
    "requests_per_month",
    "requests_per_second",
    "burst",
    "max_concurrent_connections",
    "max_users",
    "max_seats",
    "max_active_users",
    "overage",
];

impl Limits {
    /// Sets limit `name` to the text `value` (a whole number; for `overage` a factor
    /// from 1 to 10), or says why not.
    pub fn set_text(&mut self, name: &str, value: &str) -> Result<(), String> {
        if name == "overage" {
            let factor: f64 = value
                .trim()
                .parse()
                .map_err(|_| "overage must be a number such as 1.25".to_string())?;
            self.overage = Some(
                Overage::new(factor)
                    .ok_or_else(|| format!("overage must be from 1 to {}", Overage::MAX))?,
            );
            return Ok(());
        }
        let value: u64 = value
            .trim()
            .parse()
            .map_err(|_| format!("{name} must be a whole number"))?;
        if self.set(name, value) {
            Ok(())
        } else {
            Err(format!(
                "unknown limit {name:?}; use one of {}",
                LIMIT_NAMES.join(", ")
            ))
        }
    }

    /// Sets limit `name` to `value`; `false` when `name` is not a known whole-number
    /// limit.
    pub fn set(&mut self, name: &str, value: u64) -> bool {
        let slot = match name {
            "requests_per_minute" => &mut self.requests_per_minute,
            "requests_per_hour" => &mut self.requests_per_hour,
            "requests_per_day" => &mut self.requests_per_day,
            "requests_per_month" => &mut self.requests_per_month,
            "requests_per_second" => &mut self.requests_per_second,
            "burst" => &mut self.burst,
            "max_concurrent_connections" => &mut self.max_concurrent_connections,
            "max_users" => &mut self.max_users,
            "max_seats" => &mut self.max_seats,
            "max_active_users" => &mut self.max_active_users,
            _ => return false,
        };
        *slot = Some(value);
        true
    }

    /// Adds `other` to `self` limit by limit. A limit absent on either side is
    /// unlimited, and unlimited plus anything stays unlimited.
    pub fn add(&self, other: &Limits) -> Limits {
        Limits {
            requests_per_minute: sum(self.requests_per_minute, other.requests_per_minute),
            requests_per_hour: sum(self.requests_per_hour, other.requests_per_hour),
            requests_per_day: sum(self.requests_per_day, other.requests_per_day),
            requests_per_month: sum(self.requests_per_month, other.requests_per_month),
            requests_per_second: sum(self.requests_per_second, other.requests_per_second),
            burst: sum(self.burst, other.burst),
            max_concurrent_connections: sum(
                self.max_concurrent_connections,
                other.max_concurrent_connections,
            ),
            max_users: sum(self.max_users, other.max_users),
            max_seats: sum(self.max_seats, other.max_seats),
            max_active_users: sum(self.max_active_users, other.max_active_users),
            overage: self.overage.max(other.overage),
        }
    }

    /// The limit on distinct active users: the smaller of `max_active_users` and its
    /// older name `max_users`.
    pub fn active_users(&self) -> Option<u64> {
        match (self.max_active_users, self.max_users) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The sum of two limits where absent means unlimited (and unlimited absorbs).
fn sum(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    Some(a?.saturating_add(b?))
}

/// Per-feature quotas (`feature_limits.<feature>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_hour: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_day: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_month: Option<u64>,
}

/// The names accepted in `feature_limits.<feature>` (and by `--feature-limit`).
pub const FEATURE_LIMIT_NAMES: &[&str] = &[
    "requests_per_minute",
    "requests_per_hour",
    "requests_per_day",
    "requests_per_month",
];

impl FeatureLimits {
    /// Sum limit by limit (absent = unlimited, which absorbs).
    pub fn add(&self, other: &FeatureLimits) -> FeatureLimits {
        FeatureLimits {
            requests_per_minute: sum(self.requests_per_minute, other.requests_per_minute),
            requests_per_hour: sum(self.requests_per_hour, other.requests_per_hour),
            requests_per_day: sum(self.requests_per_day, other.requests_per_day),
            requests_per_month: sum(self.requests_per_month, other.requests_per_month),
        }
    }

    /// Sets limit `name` to `value`; `false` when `name` is not a feature limit.
    pub fn set(&mut self, name: &str, value: u64) -> bool {
        let slot = match name {
            "requests_per_minute" => &mut self.requests_per_minute,
            "requests_per_hour" => &mut self.requests_per_hour,
            "requests_per_day" => &mut self.requests_per_day,
            "requests_per_month" => &mut self.requests_per_month,
            _ => return false,
        };
        *slot = Some(value);
        true
    }
}

/// The typed claims of a license token. Unknown claims are ignored.
///
/// Tokens are read with `TryFrom<&Value>`, which validates every claim and names the
/// one at fault. `Deserialize` only reads back what `Serialize` wrote (the license
/// manager's compact copy of claims it has verified).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Claims {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Instance ids this license is bound to; `["*"]` = any. Empty = claim absent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aud: Vec<String>,
    pub jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<UnixTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<UnixTime>,
    pub exp: UnixTime,
    pub tenant: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier_name: Option<String>,
    pub features: Vec<String>,
    pub limits: Limits,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub feature_limits: BTreeMap<String, FeatureLimits>,
    #[serde(skip_serializing_if = "Restrictions::is_empty")]
    pub restrictions: Restrictions,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only_days: Option<u32>,
    /// On a token the license server renews with heartbeats: when the license itself
    /// ends (`exp` is only the token's end, the offline grace). `EXPIRING_SOON`
    /// follows this date, not `exp`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_exp: Option<UnixTime>,
}

/// Why the claims of a token are not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("the payload is not a JSON object")]
    NotAnObject,
    #[error("claim `{0}` is required but missing")]
    Missing(&'static str),
    #[error("claim `{claim}` is invalid: {problem}")]
    Invalid {
        claim: &'static str,
        problem: String,
    },
}

impl TryFrom<&Value> for Claims {
    type Error = ClaimError;

    /// Reads every known claim, naming the claim in any error.
    fn try_from(payload: &Value) -> Result<Claims, ClaimError> {
        let map = payload.as_object().ok_or(ClaimError::NotAnObject)?;
        let jti: String = required(map, "jti")?;
        let tenant: String = required(map, "tenant")?;
        if jti.trim().is_empty() {
            return Err(invalid("jti", "must not be empty"));
        }
        if tenant.trim().is_empty() {
            return Err(invalid("tenant", "must not be empty"));
        }
        Ok(Claims {
            iss: optional(map, "iss")?,
            sub: optional(map, "sub")?,
            aud: match map.get("aud") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::String(one)) => vec![one.clone()],
                Some(v @ Value::Array(_)) => serde_json::from_value(v.clone())
                    .map_err(|_| invalid("aud", "expected a string or a list of strings"))?,
                Some(other) => {
                    return Err(invalid(
                        "aud",
                        format!(
                            "expected a string or a list of strings, got {}",
                            kind(other)
                        ),
                    ))
                }
            },
            jti,
            iat: optional_date(map, "iat")?,
            nbf: optional_date(map, "nbf")?,
            exp: optional_date(map, "exp")?.ok_or(ClaimError::Missing("exp"))?,
            tenant,
            tier: optional(map, "tier")?,
            tier_name: optional(map, "tier_name")?,
            features: optional(map, "features")?.unwrap_or_default(),
            limits: optional(map, "limits")?.unwrap_or_default(),
            feature_limits: optional(map, "feature_limits")?.unwrap_or_default(),
            restrictions: optional(map, "restrictions")?.unwrap_or_default(),
            flags: optional(map, "flags")?.unwrap_or_default(),
            grace_days: optional(map, "grace_days")?,
            read_only_days: optional(map, "read_only_days")?,
            license_exp: optional_date(map, "license_exp")?,
        })
    }
}

impl AsRef<Claims> for Claims {
    fn as_ref(&self) -> &Claims {
        self
    }
}

impl Claims {
    /// The claims as a JSON object (for signing and display).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("claims serialize")
    }

    /// Whether the license may be used on the instance `instance_id`.
    pub fn binds_to(&self, instance_id: &str) -> bool {
        self.aud.iter().any(|a| a == "*" || a == instance_id)
    }
}

fn invalid(claim: &'static str, problem: impl Into<String>) -> ClaimError {
    ClaimError::Invalid {
        claim,
        problem: problem.into(),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn optional<T: DeserializeOwned>(
    map: &Map<String, Value>,
    claim: &'static str,
) -> Result<Option<T>, ClaimError> {
    match map.get(claim) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| invalid(claim, e.to_string())),
    }
}

fn required<T: DeserializeOwned>(
    map: &Map<String, Value>,
    claim: &'static str,
) -> Result<T, ClaimError> {
    optional(map, claim)?.ok_or(ClaimError::Missing(claim))
}

/// A NumericDate: seconds since the epoch, integer or fractional (truncated).
fn optional_date(
    map: &Map<String, Value>,
    claim: &'static str,
) -> Result<Option<UnixTime>, ClaimError> {
    match map.get(claim) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && f.abs() < 1e15)
                    .map(|f| f as i64)
            })
            .map(Some)
            .ok_or_else(|| invalid(claim, "the number is out of range")),
        Some(other) => Err(invalid(
            claim,
            format!(
                "expected a number of seconds since 1970, got {}",
                kind(other)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"jti": "L-1", "tenant": "acme", "exp": 2_000_000_000})
    }

    #[test]
    fn minimal_claims_parse_with_defaults() {
        let c = Claims::try_from(&base()).unwrap();
        assert_eq!(c.jti, "L-1");
        assert_eq!(c.exp, 2_000_000_000);
        assert!(c.features.is_empty());
        assert_eq!(c.limits, Limits::default());
        assert!(c.aud.is_empty());
    }

    #[test]
    fn unknown_claims_are_ignored_and_aud_may_be_a_list() {
        let mut v = base();
        v["whatever"] = json!({"x": 1});
        v["aud"] = json!(["a", "b"]);
        v["features"] = json!(["sales"]);
        v["limits"] = json!({"requests_per_hour": 5000});
        v["feature_limits"] = json!({"reports": {"requests_per_day": 100}});
        let c = Claims::try_from(&v).unwrap();
        assert_eq!(c.aud, vec!["a", "b"]);
        assert_eq!(c.limits.requests_per_hour, Some(5000));
        assert_eq!(c.feature_limits["reports"].requests_per_day, Some(100));
        assert!(c.binds_to("b") && !c.binds_to("c"));
    }

    #[test]
    fn required_claims_are_named_when_missing() {
        for claim in ["jti", "tenant", "exp"] {
            let mut v = base();
            v.as_object_mut().unwrap().remove(claim);
            let err = Claims::try_from(&v).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("claim `{claim}` is required but missing")
            );
        }
    }

    #[test]
    fn wrong_types_name_the_claim() {
        let cases = [
            (
                "exp",
                json!("2030-01-01"),
                "claim `exp` is invalid: expected a number of seconds since 1970, got a string",
            ),
            ("features", json!("sales"), "claim `features` is invalid"),
            (
                "limits",
                json!({"requests_per_hour": -1}),
                "claim `limits` is invalid",
            ),
            (
                "limits",
                json!({"rpm": 1}),
                "claim `limits` is invalid: unknown field `rpm`",
            ),
            ("tenant", json!(7), "claim `tenant` is invalid"),
            (
                "aud",
                json!(5),
                "claim `aud` is invalid: expected a string or a list of strings, got a number",
            ),
            ("grace_days", json!(-3), "claim `grace_days` is invalid"),
        ];
        for (claim, value, expected) in cases {
            let mut v = base();
            v[claim] = value;
            let err = Claims::try_from(&v).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{claim}: {err}");
        }
    }

    #[test]
    fn limits_add_with_absent_meaning_unlimited() {
        let a = Limits {
            requests_per_hour: Some(100),
            requests_per_day: Some(1),
            ..Limits::default()
        };
        let b = Limits {
            requests_per_hour: Some(50),
            ..Limits::default()
        };
        let sum = a.add(&b);
        assert_eq!(sum.requests_per_hour, Some(150));
        assert_eq!(
            sum.requests_per_day, None,
            "unlimited on one side stays unlimited"
        );
    }

    #[test]
    fn seats_add_and_the_larger_overage_applies() {
        let a = Limits {
            max_seats: Some(25),
            max_users: Some(10),
            max_active_users: Some(30),
            overage: Overage::new(1.1),
            ..Limits::default()
        };
        let b = Limits {
            max_seats: Some(5),
            max_active_users: Some(5),
            overage: Overage::new(1.5),
            ..Limits::default()
        };
        let both = a.add(&b);
        assert_eq!(both.max_seats, Some(30));
        assert_eq!(both.overage, Overage::new(1.5));
        assert_eq!(a.active_users(), Some(10), "the smaller of the two names");
        assert_eq!(Overage::new(1.5).unwrap().allowed(2), 3);
        assert_eq!(Overage::new(1.0).unwrap().allowed(7), 7);
        assert!(Overage::new(0.99).is_none() && Overage::new(f64::NAN).is_none());
        assert!(Overage::new(10.5).is_none());
    }
}
