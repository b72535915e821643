//! Locally generated responses (redirects, JSON errors, HTML pages).
//!
//! Every response the gateway makes itself is built here, so every one carries a
//! correct `Content-Type` and an exact `Content-Length` (keep-alive clients never
//! hang waiting for a body end) and `Cache-Control: no-store`.

use bytes::Bytes;
use http::StatusCode;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use serde::Serialize;

use crate::pages;

/// Media type of API error bodies (RFC 9457 problem details).
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";
/// Media type of HTML pages.
pub(crate) const HTML: &str = "text/html; charset=utf-8";
/// Media type of plain JSON bodies.
pub(crate) const JSON: &str = "application/json";

/// A complete response made by the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LocalResponse {
    pub status: StatusCode,
    pub content_type: &'static str,
    /// Extra headers (name, value); `Content-Type`/`Content-Length` are always set from the fields.
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

/// Who made a request: decides between a page/redirect and a JSON error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientKind {
    Browser,
    Api,
}

impl ClientKind {
    /// Browsers are GET/HEAD requests whose `Accept` contains `text/html`
    /// and that are not `X-Requested-With: XMLHttpRequest`; everything else is an API client.
    pub(crate) fn of(req: &pingora::http::RequestHeader) -> ClientKind {
        let method_ok = req.method == http::Method::GET || req.method == http::Method::HEAD;
        let accepts_html = req
            .headers
            .get_all(http::header::ACCEPT)
            .iter()
            .any(|v| contains_ignore_ascii_case(v.as_bytes(), b"text/html"));
        let xhr = req
            .headers
            .get("x-requested-with")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"xmlhttprequest"));
        if method_ok && accepts_html && !xhr {
            ClientKind::Browser
        } else {
            ClientKind::Api
        }
    }
}

fn contains_ignore_ascii_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// An API error in problem+json form, with licgate's stable fields.
#[derive(Debug, Serialize)]
pub(crate) struct Problem<'a> {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'a str,
    pub status: u16,
    pub detail: &'a str,
    pub success: bool,
    pub error_code: &'a str,
    pub error: &'a str,
    pub details: serde_json::Value,
}

/// The `Content-Security-Policy` of the gateway's pages.
pub(crate) const PAGE_CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

impl LocalResponse {
    /// A JSON error: `error_code` is the stable machine code, `title` a short summary,
    /// `detail` the human explanation; `details` carries structured extras.
    pub(crate) fn problem(
        status: StatusCode,
        error_code: &str,
        title: &str,
        detail: &str,
        details: serde_json::Value,
    ) -> LocalResponse {
        let problem = Problem {
            kind: format!("urn:licgate:error:{error_code}"),
            title,
            status: status.as_u16(),
            detail,
            success: false,
            error_code,
            error: detail,
            details,
        };
        let body = serde_json::to_vec(&problem).expect("problem serializes");
        LocalResponse {
            status,
            content_type: PROBLEM_JSON,
            headers: Vec::new(),
            body: Bytes::from(body),
        }
    }

    /// A JSON error titled with the status's reason phrase, without extras.
    pub(crate) fn error(status: StatusCode, error_code: &str, detail: &str) -> LocalResponse {
        LocalResponse::problem(
            status,
            error_code,
            status.canonical_reason().unwrap_or(""),
            detail,
            serde_json::json!({}),
        )
    }

    /// An HTML page with `status`.
    pub(crate) fn html(status: StatusCode, body: String) -> LocalResponse {
        LocalResponse {
            status,
            content_type: HTML,
            headers: Vec::new(),
            body: Bytes::from(body),
        }
    }

    /// A JSON body with `status`.
    pub(crate) fn json(status: StatusCode, value: &impl Serialize) -> LocalResponse {
        LocalResponse {
            status,
            content_type: JSON,
            headers: Vec::new(),
            body: Bytes::from(serde_json::to_vec(value).expect("value serializes")),
        }
    }

    /// A JSON-RPC 2.0 error object answering the request `id`, with HTTP 200 as Odoo
    /// answers RPC errors (its web client then shows a dialog): `code` is the status
    /// the refusal has over plain HTTP, `data.name` `licgate.<ErrorName>`,
    /// `data.error_code` the contract's code, `data.message` and `data.arguments` the
    /// explanation (what Odoo's dialogs show), then `details`.
    pub(crate) fn jsonrpc_error(
        status: StatusCode,
        error_code: &str,
        title: &str,
        detail: &str,
        details: serde_json::Value,
        id: Option<&serde_json::Value>,
    ) -> LocalResponse {
        let mut data = serde_json::json!({
            "name": format!("licgate.{}", pascal_case(error_code)),
            "error_code": error_code,
            "message": detail,
            "arguments": [detail],
            "context": {},
            "debug": "",
        });
        if let (serde_json::Value::Object(data), serde_json::Value::Object(extra)) =
            (&mut data, details)
        {
            for (k, v) in extra {
                data.entry(k).or_insert(v);
            }
        }
        let body = serde_json::json!({
            "jsonrpc": "2.0",
            "id": id.cloned().unwrap_or(serde_json::Value::Null),
            "error": {"code": status.as_u16(), "message": title, "data": data},
        });
        LocalResponse::json(StatusCode::OK, &body)
    }

    /// An XML-RPC fault with HTTP 200, as Odoo answers: `faultCode` the status the
    /// refusal has over plain HTTP, `faultString` `<ERROR_CODE>: <explanation>`.
    pub(crate) fn xmlrpc_fault(
        status: StatusCode,
        error_code: &str,
        detail: &str,
    ) -> LocalResponse {
        let text = xml_escape(&format!("{error_code}: {detail}"));
        let body = format!(
            "<?xml version='1.0'?>\n<methodResponse>\n<fault>\n<value><struct>\n<member>\n<name>faultCode</name>\n<value><int>{}</int></value>\n</member>\n<member>\n<name>faultString</name>\n<value><string>{text}</string></value>\n</member>\n</struct></value>\n</fault>\n</methodResponse>\n",
            status.as_u16()
        );
        LocalResponse {
            status: StatusCode::OK,
            content_type: "text/xml; charset=utf-8",
            headers: Vec::new(),
            body: Bytes::from(body),
        }
    }

    /// A `303 See Other` to `location`, which must be a same-origin relative path
    /// (callers guarantee it; this is never given client-controlled absolute URLs).
    pub(crate) fn redirect(location: &str) -> LocalResponse {
        debug_assert!(location.starts_with('/') && !location.starts_with("//"));
        let body = pages::redirect(location);
        LocalResponse {
            status: StatusCode::SEE_OTHER,
            content_type: HTML,
            headers: vec![("Location", location.to_string())],
            body: Bytes::from(body),
        }
    }

    /// Adds a header.
    pub(crate) fn with_header(
        mut self,
        name: &'static str,
        value: impl Into<String>,
    ) -> LocalResponse {
        self.headers.push((name, value.into()));
        self
    }

    /// The response head with `Content-Type`, `Content-Length`, `Cache-Control` and
    /// `X-Content-Type-Options` set; pages also get a strict `Content-Security-Policy`,
    /// `X-Frame-Options: DENY` and `Referrer-Policy: no-referrer`.
    pub(crate) fn header(&self) -> pingora::Result<ResponseHeader> {
        let mut header = ResponseHeader::build(self.status, Some(8 + self.headers.len()))?;
        header.insert_header(http::header::CONTENT_TYPE, self.content_type)?;
        header.insert_header(http::header::CONTENT_LENGTH, self.body.len())?;
        header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
        header.insert_header(http::header::X_CONTENT_TYPE_OPTIONS, "nosniff")?;
        if self.content_type == HTML {
            // The gateway's pages load only their own stylesheet, post only to
            // themselves, and are never framed (clickjacking of the activation form).
            header.insert_header(http::header::CONTENT_SECURITY_POLICY, PAGE_CSP)?;
            header.insert_header(http::header::X_FRAME_OPTIONS, "DENY")?;
            header.insert_header(http::header::REFERRER_POLICY, "no-referrer")?;
        }
        for (name, value) in &self.headers {
            header.append_header(*name, value.as_str())?;
        }
        Ok(header)
    }

    /// The whole response as HTTP/1.1 bytes with `Connection: close`, for answers
    /// written to a connection before (or instead of) HTTP parsing.
    pub(crate) fn to_http1_closing(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
            self.status.as_str(),
            self.status.canonical_reason().unwrap_or(""),
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    /// The same response as an `http::Response` (for pingora `ServeHttp` apps).
    /// With `head_only` the body is dropped but `Content-Length` keeps its size.
    pub(crate) fn into_http(self, head_only: bool) -> http::Response<Vec<u8>> {
        let mut builder = http::Response::builder()
            .status(self.status)
            .header(http::header::CONTENT_TYPE, self.content_type)
            .header(http::header::CONTENT_LENGTH, self.body.len())
            .header(http::header::CACHE_CONTROL, "no-store");
        for (name, value) in &self.headers {
            builder = builder.header(*name, value.as_str());
        }
        let body = if head_only {
            Vec::new()
        } else {
            self.body.to_vec()
        };
        builder.body(body).unwrap_or_else(|_| {
            let mut fallback = http::Response::new(Vec::new());
            *fallback.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            fallback.headers_mut().insert(
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from_static("0"),
            );
            fallback
        })
    }

    /// Writes the whole response to the client. The body is omitted for `HEAD`
    /// requests (the `Content-Length` still states its size).
    pub(crate) async fn write_to(self, session: &mut Session) -> pingora::Result<()> {
        let header = self.header()?;
        let head_only = session.req_header().method == http::Method::HEAD;
        session
            .write_response_header(Box::new(header), head_only)
            .await?;
        if !head_only {
            session.write_response_body(Some(self.body), true).await?;
        }
        Ok(())
    }
}

/// `FEATURE_NOT_LICENSED` → `FeatureNotLicensed`.
fn pascal_case(code: &str) -> String {
    code.split('_')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => {
                    first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
                }
                None => String::new(),
            }
        })
        .collect()
}

/// `text` with `&`, `<` and `>` escaped for XML character data.
fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, accept: Option<&str>, xhr: bool) -> pingora::http::RequestHeader {
        let mut r = pingora::http::RequestHeader::build(method, b"/", None).unwrap();
        if let Some(a) = accept {
            r.insert_header("Accept", a).unwrap();
        }
        if xhr {
            r.insert_header("X-Requested-With", "XMLHttpRequest")
                .unwrap();
        }
        r
    }

    #[test]
    fn browsers_are_html_gets() {
        let html = Some("text/html,application/xhtml+xml;q=0.9,*/*;q=0.8");
        assert_eq!(
            ClientKind::of(&req("GET", html, false)),
            ClientKind::Browser
        );
        assert_eq!(
            ClientKind::of(&req("HEAD", Some("TEXT/HTML"), false)),
            ClientKind::Browser
        );
        assert_eq!(ClientKind::of(&req("POST", html, false)), ClientKind::Api);
        assert_eq!(ClientKind::of(&req("GET", html, true)), ClientKind::Api);
        assert_eq!(
            ClientKind::of(&req("GET", Some("application/json"), false)),
            ClientKind::Api
        );
        assert_eq!(ClientKind::of(&req("GET", None, false)), ClientKind::Api);
    }

    #[test]
    fn every_response_states_type_and_length() {
        let r = LocalResponse::problem(
            StatusCode::BAD_GATEWAY,
            "UPSTREAM_UNAVAILABLE",
            "Bad Gateway",
            "down",
            serde_json::json!({}),
        );
        let h = r.header().unwrap();
        assert_eq!(h.headers["content-type"], PROBLEM_JSON);
        assert_eq!(
            h.headers["content-length"],
            r.body.len().to_string().as_str()
        );
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error_code"], "UPSTREAM_UNAVAILABLE");
        assert_eq!(v["success"], false);
        assert_eq!(v["status"], 502);

        let r = LocalResponse::redirect("/_licgate/activate?next=%2F");
        let h = r.header().unwrap();
        assert_eq!(h.status, StatusCode::SEE_OTHER);
        assert_eq!(h.headers["location"], "/_licgate/activate?next=%2F");
        assert_eq!(
            h.headers["content-length"],
            r.body.len().to_string().as_str()
        );
    }
}
