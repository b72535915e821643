//! JSON read strictly, and what Odoo's RPC readers share: the call a request reaches
//! ([`RpcCall`]) and why a request is refused ([`RpcRefusal`]). What the gateway
//! decides about must be what Odoo will dispatch, so anything that two JSON readers
//! could read differently is refused, not guessed.
//!
//! Refused: invalid UTF-8 or JSON (NaN, trailing data, lone surrogates…), a key twice
//! in any object (Python's `json` keeps the last one, other readers the first), a batch
//! (a top-level array), `params` that is not an object (Python's `dict()` would take a
//! list of pairs), a model or method that is not a string. Escapes are decoded before
//! anything is matched (`"mrp\u002eproduction"` is `mrp.production`).
//!
//! The shapes, from Odoo's `http.py`, `controllers/dataset.py` and `service/model.py`:
//! - `/web/dataset/call_kw[/…]`, `/web/dataset/call_button[/…]`,
//!   `/web/dataset/resequence`: `{"params": {"model": M, "method": F, …}}` (the path
//!   after `call_kw/` is ignored by Odoo, and so here);
//! - `/jsonrpc`: `{"params": {"service": "object", "method": "execute_kw" |
//!   "execute", "args": [db, uid, password, M, F, …]}}`; the `common` and `db`
//!   services reach no model.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value read strictly (objects keep their keys in order; no key twice).
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The value of `key`, when this is an object that has it.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(pairs) => pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value as `serde_json` holds it (keys in order, none twice).
    pub fn to_value(&self) -> serde_json::Value {
        match self {
            Json::Null => serde_json::Value::Null,
            Json::Bool(b) => serde_json::Value::Bool(*b),
            Json::Number(n) => serde_json::Value::Number(n.clone()),
            Json::String(s) => serde_json::Value::String(s.clone()),
            Json::Array(items) => items.iter().map(Json::to_value).collect(),
            Json::Object(pairs) => serde_json::Value::Object(
                pairs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_value()))
                    .collect(),
            ),
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut pairs: Vec<(String, Json)> = Vec::new();
        let mut seen = Seen::default();
        while let Some(key) = map.next_key::<String>()? {
            seen.insert(Cow::Owned(key.clone()))?;
            let value = map.next_value()?;
            pairs.push((key, value));
        }
        Ok(Json::Object(pairs))
    }
}

/// The keys of one JSON object so far: a key twice is an error. A list while the
/// object is small, a hash set beyond (a body of many keys stays linear).
#[derive(Default)]
pub(crate) struct Seen<'de> {
    few: Vec<Cow<'de, str>>,
    many: HashSet<Cow<'de, str>>,
}

/// Keys kept in a list before the set takes over.
const FEW_KEYS: usize = 16;

impl<'de> Seen<'de> {
    /// Records `key`; an error when it was seen already.
    pub(crate) fn insert<E: serde::de::Error>(&mut self, key: Cow<'de, str>) -> Result<(), E> {
        let twice = if self.many.is_empty() && self.few.len() < FEW_KEYS {
            let twice = self.few.contains(&key);
            if !twice {
                self.few.push(key.clone());
            }
            twice
        } else {
            if self.many.is_empty() {
                self.many.extend(self.few.drain(..));
            }
            !self.many.insert(key.clone())
        };
        if twice {
            return Err(E::custom(format!("the key {key:?} appears twice")));
        }
        Ok(())
    }
}

/// Why an RPC request on an inspected endpoint is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcRefusal {
    /// The body is larger than `odoo.max_rpc_body` (413).
    #[error("the request body is larger than the {0} bytes the gateway inspects")]
    TooLarge(usize),
    /// The body is encoded (`Content-Encoding`) (415).
    #[error("an encoded request body (Content-Encoding) cannot be inspected; send it unencoded")]
    Encoded,
    /// The body is not of the media type the endpoint reads (415).
    #[error("this endpoint is read as {0}; send the body with that Content-Type")]
    MediaType(&'static str),
    /// The body could not be received whole.
    #[error("the request body could not be read")]
    Unreceived,
    #[error("the XML-RPC body cannot be read with certainty: {0}")]
    Xml(String),
    #[error("the form cannot be read with certainty: {0}")]
    Form(String),
    #[error("the request's {0} cannot be read with certainty")]
    Target(&'static str),
    #[error("the JSON-RPC body cannot be read with certainty: {0}")]
    Unreadable(String),
    #[error("a JSON-RPC batch (an array) is not accepted")]
    Batch,
    #[error("the JSON-RPC call has no {0}")]
    Missing(&'static str),
    #[error("the JSON-RPC call's {0} is not what Odoo expects")]
    Shape(&'static str),
}

/// The model and method an RPC call reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcCall {
    pub model: String,
    pub method: String,
}

/// `body` read strictly as one JSON value.
pub fn strict_any(body: &[u8]) -> Result<Json, RpcRefusal> {
    serde_json::from_slice(body).map_err(|e| RpcRefusal::Unreadable(e.to_string()))
}

/// `body` read strictly as one JSON object.
pub fn strict_object(body: &[u8]) -> Result<Json, RpcRefusal> {
    match strict_any(body)? {
        value @ Json::Object(_) => Ok(value),
        Json::Array(_) => Err(RpcRefusal::Batch),
        _ => Err(RpcRefusal::Shape("body")),
    }
}
