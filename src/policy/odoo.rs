//! The Odoo endpoints that name a model, and how each one names it (from Odoo 17–19's
//! routes: `addons/web/controllers/{dataset,export,binary,report}.py`,
//! `addons/base/controllers/rpc.py`, the JSON-2 controller):
//!
//! | endpoint | model | method |
//! |---|---|---|
//! | `/web/dataset/call_kw[/…]`, `/web/dataset/call_button[/…]` | body `params.model` (the path suffix is ignored, as Odoo ignores it) | `params.method` |
//! | `/web/dataset/resequence` | body `params.model` | `write` |
//! | `/jsonrpc` (`service = "object"`) | body `params.args[3]` | `args[4]` |
//! | `/xmlrpc/2/object`, `/xmlrpc/object` | 4th parameter | 5th parameter |
//! | `/json/2/<model>/<method>` | path | path |
//! | `/web/export/csv`, `/web/export/xlsx` | the `data` field's JSON `model` | `export_data` |
//! | `/web/content/…`, `/web/image/…` | path (`/<model>/<id>/<field>…`), else the `model` parameter, else `ir.attachment` | `read` |
//! | `/report/pdf|html|text/<report>[/…]` | the report's name (`mrp.report_mrporder`) | `report` |
//! | `/report/download` | the report named in the `data` field's URL | `report` |
//!
//! Report names are matched against the same model patterns: a report's name starts
//! with its module (`mrp.*` covers `mrp.report_mrporder`).
//!
//! Every reader here is strict: a request Odoo could read two ways (a parameter given
//! twice, in the query and in the form, a part of a form that is a file) is refused.

use super::jsonrpc;
use super::rpc::{self, Json, RpcCall, RpcRefusal};
use super::xmlrpc;

/// An endpoint that names a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/web/dataset/call_kw`, `call_button`, `resequence`: JSON-RPC, model in `params`.
    Dataset,
    /// `/jsonrpc`: JSON-RPC, model in `params.args`.
    JsonRpc,
    /// `/xmlrpc/2/object`, `/xmlrpc/object`.
    XmlRpc,
    /// `/json/2/<model>/<method>`.
    Json2,
    /// `/web/export/csv`, `/web/export/xlsx`.
    Export,
    /// `/web/content/…`, `/web/image/…`.
    Content,
    /// `/report/<converter>/<report>…`.
    Report,
    /// `/report/download`.
    ReportDownload,
}

/// How the gateway's own answers are shaped on a path, so that Odoo's clients read
/// them: the web client and `/jsonrpc` callers read JSON-RPC error objects, XML-RPC
/// callers read faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    JsonRpc,
    XmlRpc,
}

/// Whether `path` is `prefix` or under it (`prefix/…`).
fn at_or_under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The endpoint of a normalized `path`, when it names a model.
pub fn endpoint(path: &str) -> Option<Endpoint> {
    if at_or_under(path, "/web/dataset/call_kw")
        || at_or_under(path, "/web/dataset/call_button")
        || at_or_under(path, "/web/dataset/resequence")
    {
        Some(Endpoint::Dataset)
    } else if at_or_under(path, "/jsonrpc") {
        Some(Endpoint::JsonRpc)
    } else if at_or_under(path, "/xmlrpc/2/object") || at_or_under(path, "/xmlrpc/object") {
        Some(Endpoint::XmlRpc)
    } else if at_or_under(path, "/json/2") {
        Some(Endpoint::Json2)
    } else if at_or_under(path, "/web/export/csv") || at_or_under(path, "/web/export/xlsx") {
        Some(Endpoint::Export)
    } else if at_or_under(path, "/web/content") || at_or_under(path, "/web/image") {
        Some(Endpoint::Content)
    } else if at_or_under(path, "/report/download") {
        Some(Endpoint::ReportDownload)
    } else if at_or_under(path, "/report/pdf")
        || at_or_under(path, "/report/html")
        || at_or_under(path, "/report/text")
    {
        Some(Endpoint::Report)
    } else {
        None
    }
}

/// The dialect of the gateway's answers on `path`: JSON-RPC on the web client's RPC
/// (`/web/dataset/…`, `/jsonrpc`, and any POST of JSON outside `/json/2/`, as Odoo's
/// `type="json"` routes take), XML-RPC under `/xmlrpc/`; `None`: plain HTTP answers.
pub fn dialect(path: &str, method: &http::Method, media_type: Option<&str>) -> Option<Dialect> {
    if path.starts_with("/web/dataset/") || at_or_under(path, "/jsonrpc") {
        Some(Dialect::JsonRpc)
    } else if at_or_under(path, "/xmlrpc") {
        Some(Dialect::XmlRpc)
    } else if method == http::Method::POST
        && media_type.is_some_and(is_json_media)
        && !at_or_under(path, "/json/2")
    {
        Some(Dialect::JsonRpc)
    } else {
        None
    }
}

/// The media types of Odoo's JSON-RPC dispatcher.
fn is_json_media(media: &str) -> bool {
    media.eq_ignore_ascii_case("application/json")
        || media.eq_ignore_ascii_case("application/json-rpc")
}

/// What a request on an endpoint reaches.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reached {
    /// The model (or report) and method; `None` when the request reaches no model
    /// (`/jsonrpc`'s `common` and `db` services).
    pub call: Option<RpcCall>,
    /// The JSON-RPC request's `id`, echoed in an error object.
    pub id: Option<serde_json::Value>,
}

/// The parts of a request a reader looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// The normalized path.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The `Content-Type` header, whole.
    pub content_type: Option<&'a str>,
    /// The whole body (empty when there is none).
    pub body: &'a [u8],
}

/// What a request on `endpoint` reaches, read strictly from `parts`.
pub fn reached(endpoint: Endpoint, parts: RequestParts<'_>) -> Result<Reached, RpcRefusal> {
    let call = |model: &str, method: &str| Reached {
        call: Some(RpcCall {
            model: model.to_string(),
            method: method.to_string(),
        }),
        id: None,
    };
    match endpoint {
        Endpoint::Dataset | Endpoint::JsonRpc => {
            json_media(parts.content_type)?;
            let request = jsonrpc::envelope(parts.body)?;
            let id = request.id.as_ref().map(Json::to_value);
            let call = if endpoint == Endpoint::Dataset {
                Some(jsonrpc::dataset_call_of(&request)?)
            } else {
                jsonrpc::jsonrpc_call_of(&request)?
            };
            Ok(Reached { call, id })
        }
        Endpoint::XmlRpc => Ok(Reached {
            call: Some(xmlrpc::object_call(parts.body)?),
            id: None,
        }),
        Endpoint::Json2 => {
            let rest = parts.path.strip_prefix("/json/2/").unwrap_or("");
            match segments(rest)?.as_slice() {
                [model, method] => Ok(call(model, method)),
                _ => Err(RpcRefusal::Target("JSON-2 path (/json/2/<model>/<method>)")),
            }
        }
        Endpoint::Export => {
            let data = Params::of(parts)?
                .one("data")?
                .ok_or(RpcRefusal::Missing("data"))?;
            let request = rpc::strict_object(data.as_bytes())?;
            let model = request
                .get("model")
                .ok_or(RpcRefusal::Missing("model"))?
                .as_str()
                .ok_or(RpcRefusal::Shape("model"))?;
            Ok(call(model, "export_data"))
        }
        Endpoint::Content => {
            no_body(parts)?;
            let rest = parts
                .path
                .strip_prefix("/web/content")
                .or_else(|| parts.path.strip_prefix("/web/image"))
                .unwrap_or("");
            let segments = segments(rest.trim_start_matches('/'))?;
            let in_path = match segments.as_slice() {
                [model, id, _, ..] if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => {
                    Some(*model)
                }
                _ => None,
            };
            let params = Params::of(parts)?;
            let in_query = params.one("model")?;
            let model = match (in_path, in_query.as_deref()) {
                (Some(p), Some(q)) if p != q => {
                    return Err(RpcRefusal::Target(
                        "model (named by both the path and a parameter)",
                    ))
                }
                (Some(p), _) => p,
                (None, Some(q)) => q,
                (None, None) => "ir.attachment",
            };
            Ok(call(model, "read"))
        }
        Endpoint::Report => {
            no_body(parts)?;
            let rest = parts.path.strip_prefix("/report/").unwrap_or("");
            match segments(rest)?.as_slice() {
                [_converter, report, ..] => Ok(call(report, "report")),
                _ => Err(RpcRefusal::Target("report name")),
            }
        }
        Endpoint::ReportDownload => {
            let data = Params::of(parts)?
                .one("data")?
                .ok_or(RpcRefusal::Missing("data"))?;
            let report = download_report(&data)?;
            Ok(call(&report, "report"))
        }
    }
}

/// The report `/report/download`'s `data` (`["/report/pdf/<report>/<ids>?…",
/// "qweb-pdf"]`) renders, found the way Odoo finds it: the text after the first
/// `/report/pdf/` (or `/report/text/` for `qweb-text`), up to `?`, then up to `/`.
fn download_report(data: &str) -> Result<String, RpcRefusal> {
    let value = rpc::strict_any(data.as_bytes())?;
    let Json::Array(items) = value else {
        return Err(RpcRefusal::Shape("data"));
    };
    let (Some(url), Some(kind)) = (
        items.first().and_then(Json::as_str),
        items.get(1).and_then(Json::as_str),
    ) else {
        return Err(RpcRefusal::Shape("data"));
    };
    let pattern = match kind {
        "qweb-pdf" => "/report/pdf/",
        "qweb-text" => "/report/text/",
        _ => return Err(RpcRefusal::Shape("report type")),
    };
    let start = url.find(pattern).ok_or(RpcRefusal::Shape("report URL"))? + pattern.len();
    let rest = &url[start..];
    let name = rest.split('?').next().unwrap_or("");
    let name = name.split('/').next().unwrap_or("");
    if name.is_empty() || name.contains('%') {
        return Err(RpcRefusal::Target("report name"));
    }
    Ok(name.to_string())
}

/// The `/`-separated segments of `rest`; refused when one is percent-encoded (Odoo
/// would decode it).
fn segments(rest: &str) -> Result<Vec<&str>, RpcRefusal> {
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    if segments.iter().any(|s| s.contains('%')) {
        return Err(RpcRefusal::Target("path (a percent-encoded segment)"));
    }
    Ok(segments)
}

/// Refuses a body on an endpoint whose model is in the path or the query (Odoo would
/// read a form's fields as parameters too).
fn no_body(parts: RequestParts<'_>) -> Result<(), RpcRefusal> {
    if parts.body.is_empty() {
        Ok(())
    } else {
        Err(RpcRefusal::Target(
            "body (this endpoint is inspected without one)",
        ))
    }
}

/// JSON-RPC bodies must say they are JSON (Odoo dispatches them only then), in UTF-8.
fn json_media(content_type: Option<&str>) -> Result<(), RpcRefusal> {
    const WANT: &str = "application/json";
    let Some(value) = content_type else {
        return Err(RpcRefusal::MediaType(WANT));
    };
    let mut parts = value.split(';');
    if !is_json_media(parts.next().unwrap_or("").trim()) {
        return Err(RpcRefusal::MediaType(WANT));
    }
    for param in parts {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        if name.trim().eq_ignore_ascii_case("charset")
            && !value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        {
            return Err(RpcRefusal::MediaType("application/json; charset=utf-8"));
        }
    }
    Ok(())
}

/// A request's parameters as Odoo merges them (query, then form fields), each name
/// once at most.
struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// The query's parameters and the body's form fields (`x-www-form-urlencoded` or
    /// `multipart/form-data`); a body of another type is refused.
    fn of(parts: RequestParts<'_>) -> Result<Params, RpcRefusal> {
        let mut pairs: Vec<(String, String)> = parts
            .query
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        if !parts.body.is_empty() {
            let content_type = parts.content_type.unwrap_or("");
            let media = content_type.split(';').next().unwrap_or("").trim();
            if media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
                let text = std::str::from_utf8(parts.body)
                    .map_err(|_| RpcRefusal::Form("the form is not UTF-8".into()))?;
                pairs.extend(
                    form_urlencoded::parse(text.as_bytes())
                        .map(|(k, v)| (k.into_owned(), v.into_owned())),
                );
            } else if media.eq_ignore_ascii_case("multipart/form-data") {
                pairs.extend(multipart_fields(content_type, parts.body)?);
            } else {
                return Err(RpcRefusal::MediaType(
                    "application/x-www-form-urlencoded or multipart/form-data",
                ));
            }
        }
        Ok(Params { pairs })
    }

    /// The value of `name`; refused when it is given more than once.
    fn one(&self, name: &str) -> Result<Option<String>, RpcRefusal> {
        let mut found = self.pairs.iter().filter(|(k, _)| k == name);
        let first = found.next();
        if found.next().is_some() {
            return Err(RpcRefusal::Form(format!(
                "the field {name:?} is given twice"
            )));
        }
        Ok(first.map(|(_, v)| v.clone()))
    }
}

/// The fields of a `multipart/form-data` body, read strictly: CRLF line ends, each
/// part with one `Content-Disposition: form-data; name="…"` and at most a
/// `Content-Type`; a file part (`filename`), an extended parameter (`name*`), an
/// escaped quote or a `Content-Transfer-Encoding` is refused.
fn multipart_fields(content_type: &str, body: &[u8]) -> Result<Vec<(String, String)>, RpcRefusal> {
    let form = |why: &str| RpcRefusal::Form(why.to_string());
    let boundary = content_type
        .split(';')
        .skip(1)
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| {
            let v = v.trim();
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v)
        })
        .filter(|b| {
            !b.is_empty()
                && b.len() <= 70
                && b.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&c))
        })
        .ok_or_else(|| form("multipart/form-data without a usable boundary"))?;
    let delimiter = format!("--{boundary}");
    let text = std::str::from_utf8(body).map_err(|_| form("the form is not UTF-8"))?;
    let mut rest = text
        .strip_prefix(delimiter.as_str())
        .ok_or_else(|| form("the form does not start with its boundary"))?;
    let separator = format!("\r\n{delimiter}");
    let mut fields = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix("--") {
            if !(after.is_empty() || after == "\r\n") {
                return Err(form("content after the form's last boundary"));
            }
            return Ok(fields);
        }
        rest = rest
            .strip_prefix("\r\n")
            .ok_or_else(|| form("a boundary not followed by CRLF"))?;
        let end = rest
            .find(separator.as_str())
            .ok_or_else(|| form("a part without a closing boundary"))?;
        let part = &rest[..end];
        rest = &rest[end + separator.len()..];
        let (head, value) = part
            .split_once("\r\n\r\n")
            .ok_or_else(|| form("a part without headers"))?;
        let mut name = None;
        for line in head.split("\r\n") {
            let (header, value) = line
                .split_once(':')
                .ok_or_else(|| form("a malformed part header"))?;
            let header = header.trim();
            if header.eq_ignore_ascii_case("content-disposition") {
                if name.is_some() {
                    return Err(form("a part with two Content-Disposition headers"));
                }
                name = Some(disposition_name(value)?);
            } else if !header.eq_ignore_ascii_case("content-type") {
                return Err(form(
                    "a part header other than Content-Disposition and Content-Type",
                ));
            }
        }
        let name = name.ok_or_else(|| form("a part without Content-Disposition"))?;
        fields.push((name, value.to_string()));
    }
}

/// The `name` of a `form-data` Content-Disposition without `filename`.
fn disposition_name(value: &str) -> Result<String, RpcRefusal> {
    let form = |why: &str| RpcRefusal::Form(why.to_string());
    if value.contains('\\') || value.contains('*') {
        return Err(form("an escaped or extended Content-Disposition parameter"));
    }
    let mut params = value.split(';');
    if !params
        .next()
        .unwrap_or("")
        .trim()
        .eq_ignore_ascii_case("form-data")
    {
        return Err(form("a part that is not form-data"));
    }
    let mut name = None;
    for param in params {
        let (key, v) = param
            .split_once('=')
            .ok_or_else(|| form("a malformed parameter"))?;
        let key = key.trim().to_ascii_lowercase();
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        match key.as_str() {
            "name" if name.is_none() => name = Some(v.to_string()),
            "filename" => return Err(form("a file part")),
            _ => return Err(form("an unknown or repeated Content-Disposition parameter")),
        }
    }
    name.ok_or_else(|| form("a part without a name"))
}

#[cfg(test)]
mod tests;
