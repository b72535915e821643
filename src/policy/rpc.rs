//! Reading the model of an Odoo RPC call from its body, strictly: what the gateway
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
        while let Some(key) = map.next_key::<String>()? {
            if pairs.iter().any(|(k, _)| *k == key) {
                return Err(serde::de::Error::custom(format!(
                    "the key {key:?} appears twice"
                )));
            }
            let value = map.next_value()?;
            pairs.push((key, value));
        }
        Ok(Json::Object(pairs))
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

/// The `params` object of a JSON-RPC request.
fn params(request: &Json) -> Result<&Json, RpcRefusal> {
    match request.get("params") {
        Some(p @ Json::Object(_)) => Ok(p),
        Some(_) => Err(RpcRefusal::Shape("params")),
        None => Err(RpcRefusal::Missing("params")),
    }
}

fn string<'j>(value: Option<&'j Json>, what: &'static str) -> Result<&'j str, RpcRefusal> {
    match value {
        Some(v) => v.as_str().ok_or(RpcRefusal::Shape(what)),
        None => Err(RpcRefusal::Missing(what)),
    }
}

/// The call of a `/web/dataset/call_kw`, `call_button` or `resequence` body:
/// `params.model` and `params.method` (`resequence` has no method: `write`).
pub fn dataset_call(body: &[u8]) -> Result<RpcCall, RpcRefusal> {
    dataset_call_of(&strict_object(body)?)
}

/// [`dataset_call`] of a request already read.
pub fn dataset_call_of(request: &Json) -> Result<RpcCall, RpcRefusal> {
    let params = params(request)?;
    let model = string(params.get("model"), "model")?;
    let method = match params.get("method") {
        None => "write",
        value => string(value, "method")?,
    };
    Ok(RpcCall {
        model: model.to_string(),
        method: method.to_string(),
    })
}

/// The call of a `/jsonrpc` body: for the `object` service's `execute_kw` and
/// `execute`, `args[3]` and `args[4]`; `None` for the `common` and `db` services.
pub fn jsonrpc_call(body: &[u8]) -> Result<Option<RpcCall>, RpcRefusal> {
    jsonrpc_call_of(&strict_object(body)?)
}

/// [`jsonrpc_call`] of a request already read.
pub fn jsonrpc_call_of(request: &Json) -> Result<Option<RpcCall>, RpcRefusal> {
    let params = params(request)?;
    match string(params.get("service"), "service")? {
        "common" | "db" => return Ok(None),
        "object" => {}
        _ => return Err(RpcRefusal::Shape("service")),
    }
    match string(params.get("method"), "method")? {
        "execute_kw" | "execute" => {}
        _ => return Err(RpcRefusal::Shape("method")),
    }
    let Some(Json::Array(args)) = params.get("args") else {
        return Err(RpcRefusal::Shape("args"));
    };
    let model = string(args.get(3), "model")?;
    let method = string(args.get(4), "method")?;
    Ok(Some(RpcCall {
        model: model.to_string(),
        method: method.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(model: &str, method: &str) -> RpcCall {
        RpcCall {
            model: model.into(),
            method: method.into(),
        }
    }

    #[test]
    fn the_model_comes_from_the_body_with_escapes_decoded() {
        let body = br#"{"jsonrpc":"2.0","method":"call","params":{"model":"mrp\u002eproduction","method":"search_read","args":[],"kwargs":{}},"id":1}"#;
        assert_eq!(
            dataset_call(body),
            Ok(call("mrp.production", "search_read"))
        );
        let resequence = br#"{"params":{"model":"mrp.bom","ids":[1,2]}}"#;
        assert_eq!(dataset_call(resequence), Ok(call("mrp.bom", "write")));
    }

    #[test]
    fn anything_read_two_ways_is_refused() {
        for (body, why) in [
            (&br#"{"params":{"model":"res.partner","model":"mrp.production","method":"read"}}"#[..], "duplicate"),
            (br#"{"params":{"model":"res.partner","method":"read"},"params":{"model":"mrp.production"}}"#, "duplicate params"),
            (br#"{"params":{"model":"a.b","method":"read","kwargs":{"x":1,"x":2}}}"#, "nested duplicate"),
            (br#"[{"params":{"model":"res.partner","method":"read"}}]"#, "batch"),
            (br#"{"params":[["model","mrp.production"],["method","read"]]}"#, "params as pairs"),
            (br#"{"params":{"model":["mrp.production"],"method":"read"}}"#, "model not a string"),
            (br#"{"params":{"method":"read"}}"#, "no model"),
            (br#"{"params":{"model":"a.b","method":"read"}} x"#, "trailing"),
            (br#"{"params":{"model":"a.b","method":"read","n":NaN}}"#, "NaN"),
            (b"{\"params\":{\"model\":\"a\xff.b\",\"method\":\"read\"}}", "not UTF-8"),
            (br#"{"params":{"model":"\ud800x","method":"read"}}"#, "lone surrogate"),
            (br#""params""#, "not an object"),
        ] {
            assert!(dataset_call(body).is_err(), "{why}");
        }
    }

    #[test]
    fn jsonrpc_object_calls_carry_the_model_in_args() {
        let kw = br#"{"jsonrpc":"2.0","method":"call","params":{"service":"object","method":"execute_kw","args":["db",2,"pw","mrp.production","search_read",[[]],{}]}}"#;
        assert_eq!(
            jsonrpc_call(kw),
            Ok(Some(call("mrp.production", "search_read")))
        );
        let ex = br#"{"params":{"service":"object","method":"execute","args":["db",2,"pw","res.partner","read",[1]]}}"#;
        assert_eq!(jsonrpc_call(ex), Ok(Some(call("res.partner", "read"))));
        let common =
            br#"{"params":{"service":"common","method":"login","args":["db","admin","pw"]}}"#;
        assert_eq!(jsonrpc_call(common), Ok(None));
        for bad in [
            &br#"{"params":{"service":"report","method":"render_report","args":[]}}"#[..],
            br#"{"params":{"service":"object","method":"exec_workflow","args":["db",2,"pw","a.b","x"]}}"#,
            br#"{"params":{"service":"object","method":"execute_kw","args":["db",2,"pw",7,"read"]}}"#,
            br#"{"params":{"service":"object","method":"execute_kw","args":["db",2,"pw"]}}"#,
            br#"{"params":{"service":"object","method":"execute_kw","args":{"3":"a.b"}}}"#,
        ] {
            assert!(jsonrpc_call(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
