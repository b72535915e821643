//! Odoo's JSON-RPC bodies read in one pass: the call's model and method (and the
//! request's `id`) are taken as the reader goes; every other value is checked — valid
//! JSON, no key twice in any object, finite numbers — without being built.
//!
//! The shapes, from Odoo's `http.py`, `controllers/dataset.py` and `service/model.py`:
//! - `/web/dataset/call_kw[/…]`, `/web/dataset/call_button[/…]`,
//!   `/web/dataset/resequence`: `{"params": {"model": M, "method": F, …}}` (the path
//!   after `call_kw/` is ignored by Odoo, and so here);
//! - `/jsonrpc`: `{"params": {"service": "object", "method": "execute_kw" |
//!   "execute", "args": [db, uid, password, M, F, …]}}`; the `common` and `db`
//!   services reach no model.
//!
//! Refused: what [`super::rpc`] refuses of any JSON (invalid UTF-8 or JSON, a key
//! twice, `NaN`, trailing data, lone surrogates), a batch (a top-level array),
//! `params` that is not an object (Python's `dict()` would take a list of pairs), a
//! model or method that is not a string. Escapes are decoded before anything is
//! matched (`"mrp\u002eproduction"` is `mrp.production`).

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::rpc::{Json, RpcCall, RpcRefusal, Seen};

/// A JSON-RPC request as far as Odoo's dispatch reads it.
#[derive(Debug, Default)]
pub struct Envelope {
    params: Option<Field<Params>>,
    /// The request's `id`, echoed in an error object.
    pub id: Option<Json>,
}

/// A value the reader looks into when it has the expected type.
#[derive(Debug)]
enum Field<T> {
    Expected(T),
    Other,
}

/// The `params` keys Odoo's dispatch reads.
#[derive(Debug, Default)]
struct Params {
    model: Option<Field<String>>,
    method: Option<Field<String>>,
    service: Option<Field<String>>,
    args: Option<Field<Args>>,
}

/// `params.args[3]` and `[4]` of a `/jsonrpc` call.
#[derive(Debug, Default)]
struct Args {
    model: Option<Field<String>>,
    method: Option<Field<String>>,
}

/// `body` read as one JSON-RPC request.
pub fn envelope(body: &[u8]) -> Result<Envelope, RpcRefusal> {
    let top: Top =
        serde_json::from_slice(body).map_err(|e| RpcRefusal::Unreadable(e.to_string()))?;
    match top {
        Top::Object(envelope) => Ok(envelope),
        Top::Array => Err(RpcRefusal::Batch),
        Top::Other => Err(RpcRefusal::Shape("body")),
    }
}

fn string<'f>(field: Option<&'f Field<String>>, what: &'static str) -> Result<&'f str, RpcRefusal> {
    match field {
        Some(Field::Expected(s)) => Ok(s),
        Some(Field::Other) => Err(RpcRefusal::Shape(what)),
        None => Err(RpcRefusal::Missing(what)),
    }
}

fn params(request: &Envelope) -> Result<&Params, RpcRefusal> {
    match &request.params {
        Some(Field::Expected(p)) => Ok(p),
        Some(Field::Other) => Err(RpcRefusal::Shape("params")),
        None => Err(RpcRefusal::Missing("params")),
    }
}

/// The call of a `/web/dataset/call_kw`, `call_button` or `resequence` body:
/// `params.model` and `params.method` (`resequence` has no method: `write`).
pub fn dataset_call(body: &[u8]) -> Result<RpcCall, RpcRefusal> {
    dataset_call_of(&envelope(body)?)
}

/// [`dataset_call`] of a request already read.
pub fn dataset_call_of(request: &Envelope) -> Result<RpcCall, RpcRefusal> {
    let params = params(request)?;
    let model = string(params.model.as_ref(), "model")?;
    let method = match &params.method {
        None => "write",
        field => string(field.as_ref(), "method")?,
    };
    Ok(RpcCall {
        model: model.to_string(),
        method: method.to_string(),
    })
}

/// The call of a `/jsonrpc` body: for the `object` service's `execute_kw` and
/// `execute`, `args[3]` and `args[4]`; `None` for the `common` and `db` services.
pub fn jsonrpc_call(body: &[u8]) -> Result<Option<RpcCall>, RpcRefusal> {
    jsonrpc_call_of(&envelope(body)?)
}

/// [`jsonrpc_call`] of a request already read.
pub fn jsonrpc_call_of(request: &Envelope) -> Result<Option<RpcCall>, RpcRefusal> {
    let params = params(request)?;
    match string(params.service.as_ref(), "service")? {
        "common" | "db" => return Ok(None),
        "object" => {}
        _ => return Err(RpcRefusal::Shape("service")),
    }
    match string(params.method.as_ref(), "method")? {
        "execute_kw" | "execute" => {}
        _ => return Err(RpcRefusal::Shape("method")),
    }
    let Some(Field::Expected(args)) = &params.args else {
        return Err(RpcRefusal::Shape("args"));
    };
    Ok(Some(RpcCall {
        model: string(args.model.as_ref(), "model")?.to_string(),
        method: string(args.method.as_ref(), "method")?.to_string(),
    }))
}

/// A key, borrowed from the body when it has no escape.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Any value, checked and dropped.
struct Skim;

impl<'de> Deserialize<'de> for Skim {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SkimVisitor)
    }
}

struct SkimVisitor;

impl<'de> Visitor<'de> for SkimVisitor {
    type Value = Skim;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Skim, E> {
        Ok(Skim)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Skim, E> {
        Ok(Skim)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Skim, E> {
        Ok(Skim)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Skim, E> {
        Ok(Skim)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Skim, E> {
        if v.is_finite() {
            Ok(Skim)
        } else {
            Err(E::custom("a number that is not finite"))
        }
    }
    fn visit_str<E>(self, _: &str) -> Result<Skim, E> {
        Ok(Skim)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skim, A::Error> {
        while seq.next_element::<Skim>()?.is_some() {}
        Ok(Skim)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skim, A::Error> {
        let mut seen = Seen::default();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            seen.insert(key)?;
            map.next_value::<Skim>()?;
        }
        Ok(Skim)
    }
}

/// A string, or any other value (checked and dropped).
impl<'de> Deserialize<'de> for Field<String> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Field<String>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_str<E>(self, v: &str) -> Result<Field<String>, E> {
                Ok(Field::Expected(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<Field<String>, E> {
                Ok(Field::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Field<String>, E> {
                Ok(Field::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Field<String>, E> {
                Ok(Field::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Field<String>, E> {
                Ok(Field::Other)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Field<String>, E> {
                SkimVisitor.visit_f64(v).map(|_| Field::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Field<String>, A::Error> {
                SkimVisitor.visit_seq(seq).map(|_| Field::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field<String>, A::Error> {
                SkimVisitor.visit_map(map).map(|_| Field::Other)
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Implements `Field<T>` for a `T` read from an object (`Params`) or an array
/// (`Args`): any other value is checked and dropped.
macro_rules! field_of {
    ($t:ty, $expected:literal, |$access:ident: $kind:ident| $read:block) => {
        impl<'de> Deserialize<'de> for Field<$t> {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = Field<$t>;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expected)
                    }
                    fn visit_unit<E>(self) -> Result<Field<$t>, E> {
                        Ok(Field::Other)
                    }
                    fn visit_bool<E>(self, _: bool) -> Result<Field<$t>, E> {
                        Ok(Field::Other)
                    }
                    fn visit_i64<E>(self, _: i64) -> Result<Field<$t>, E> {
                        Ok(Field::Other)
                    }
                    fn visit_u64<E>(self, _: u64) -> Result<Field<$t>, E> {
                        Ok(Field::Other)
                    }
                    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Field<$t>, E> {
                        SkimVisitor.visit_f64(v).map(|_| Field::Other)
                    }
                    fn visit_str<E>(self, _: &str) -> Result<Field<$t>, E> {
                        Ok(Field::Other)
                    }
                    field_of!(@read $kind, $t, $access, $read);
                }
                deserializer.deserialize_any(V)
            }
        }
    };
    (@read map, $t:ty, $access:ident, $read:block) => {
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Field<$t>, A::Error> {
            SkimVisitor.visit_seq(seq).map(|_| Field::Other)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut $access: A) -> Result<Field<$t>, A::Error> {
            $read
        }
    };
    (@read seq, $t:ty, $access:ident, $read:block) => {
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field<$t>, A::Error> {
            SkimVisitor.visit_map(map).map(|_| Field::Other)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut $access: A) -> Result<Field<$t>, A::Error> {
            $read
        }
    };
}

field_of!(Params, "the params object", |map: map| {
    let mut params = Params::default();
    let mut seen = Seen::default();
    while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
        let slot = match &*key {
            "model" => Some(&mut params.model),
            "method" => Some(&mut params.method),
            "service" => Some(&mut params.service),
            _ => None,
        };
        match (slot, &*key) {
            (Some(slot), _) => *slot = Some(map.next_value()?),
            (None, "args") => params.args = Some(map.next_value()?),
            _ => {
                map.next_value::<Skim>()?;
            }
        }
        seen.insert(key)?;
    }
    Ok(Field::Expected(params))
});

field_of!(Args, "the args array", |seq: seq| {
    let mut args = Args::default();
    let mut index = 0usize;
    loop {
        let more = match index {
            3 => seq
                .next_element()
                .map(|v| v.map(|v| args.model = Some(v)))?,
            4 => seq
                .next_element()
                .map(|v| v.map(|v| args.method = Some(v)))?,
            _ => seq.next_element::<Skim>()?.map(|_| ()),
        };
        if more.is_none() {
            return Ok(Field::Expected(args));
        }
        index += 1;
    }
});

/// The top level of a body: an object (the request), an array (a batch) or another
/// value.
enum Top {
    Object(Envelope),
    Array,
    Other,
}

impl<'de> Deserialize<'de> for Top {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Top;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON-RPC request")
            }
            fn visit_unit<E>(self) -> Result<Top, E> {
                Ok(Top::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Top, E> {
                Ok(Top::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Top, E> {
                Ok(Top::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Top, E> {
                Ok(Top::Other)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Top, E> {
                SkimVisitor.visit_f64(v).map(|_| Top::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<Top, E> {
                Ok(Top::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Top, A::Error> {
                SkimVisitor.visit_seq(seq).map(|_| Top::Array)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top, A::Error> {
                let mut envelope = Envelope::default();
                let mut seen = Seen::default();
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    match &*key {
                        "params" => envelope.params = Some(map.next_value()?),
                        "id" => envelope.id = Some(map.next_value()?),
                        _ => {
                            map.next_value::<Skim>()?;
                        }
                    }
                    seen.insert(key)?;
                }
                Ok(Top::Object(envelope))
            }
        }
        deserializer.deserialize_any(V)
    }
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
    fn many_keys_are_checked_in_linear_time() {
        let keys: Vec<String> = (0..50_000).map(|i| format!("\"k{i}\":{i}")).collect();
        let body = format!(
            r#"{{"params":{{"model":"a.b","method":"read","kwargs":{{{}}}}}}}"#,
            keys.join(",")
        );
        let started = std::time::Instant::now();
        assert_eq!(dataset_call(body.as_bytes()), Ok(call("a.b", "read")));
        let twice = body.replace("\"k49999\"", "\"k7\"");
        assert!(dataset_call(twice.as_bytes()).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let strict = body.replacen("\"k1\"", "\"k0\"", 1);
        assert!(crate::policy::rpc::strict_object(strict.as_bytes()).is_err());
    }

    #[test]
    fn the_id_is_kept_for_the_answer() {
        let request = envelope(
            br#"{"jsonrpc":"2.0","id":{"n":[1,"x"]},"params":{"model":"a.b","method":"read"}}"#,
        )
        .unwrap();
        assert_eq!(
            request.id.unwrap().to_value(),
            serde_json::json!({"n": [1, "x"]})
        );
        assert!(envelope(br#"{"id":{"n":1,"n":2},"params":{}}"#).is_err());
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
