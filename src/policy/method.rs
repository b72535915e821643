//! Method overrides: ways a request asks the application to run another method than
//! its request line's. Rails (`Rack::MethodOverride`), Laravel, Symfony and Express's
//! `method-override` read `_method`; many frameworks read `X-HTTP-Method-Override`,
//! `X-HTTP-Method` or `X-Method-Override`. A feature rule limited to some methods is
//! judged on the request line's method, so with `paths.method_override = "reject"`
//! the gateway refuses requests that carry an override instead of guessing.

use http::HeaderMap;

/// Override header names, lower-case with `-` (an `_` spelling matches too).
const OVERRIDE_HEADERS: [&[u8]; 3] = [
    b"x-http-method-override",
    b"x-http-method",
    b"x-method-override",
];

/// The override a request carries, if any: the header name or `_method` (query).
/// Does not allocate unless the query mentions `method`.
pub(crate) fn method_override<'a>(headers: &'a HeaderMap, query: Option<&str>) -> Option<&'a str> {
    for name in headers.keys() {
        let bytes = name.as_str().as_bytes();
        let is_override = OVERRIDE_HEADERS.iter().any(|wanted| {
            wanted.len() == bytes.len()
                && wanted
                    .iter()
                    .zip(bytes)
                    .all(|(w, b)| w == b || (*w == b'-' && *b == b'_'))
        });
        if is_override {
            return Some(name.as_str());
        }
    }
    let query = query?;
    let mentions = query
        .as_bytes()
        .windows(6)
        .any(|w| w.eq_ignore_ascii_case(b"method"));
    if mentions
        && form_urlencoded::parse(query.as_bytes())
            .any(|(key, _)| key.trim().eq_ignore_ascii_case("_method"))
    {
        return Some("_method");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(names: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for name in names {
            map.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_static("DELETE"),
            );
        }
        map
    }

    #[test]
    fn override_headers_in_any_spelling_and_the_method_parameter_are_found() {
        for name in [
            "X-HTTP-Method-Override",
            "x-http-method",
            "X-Method-Override",
            "X_HTTP_Method_Override",
            "x_http-method",
        ] {
            assert!(method_override(&headers(&[name]), None).is_some(), "{name}");
        }
        let none = headers(&["x-http-methods", "accept", "x-method"]);
        assert_eq!(method_override(&none, None), None);
        for query in [
            "_method=DELETE",
            "a=1&_METHOD=put",
            "%5Fmethod=patch",
            "x&_method",
        ] {
            assert_eq!(
                method_override(&none, Some(query)),
                Some("_method"),
                "{query}"
            );
        }
        for query in ["method=x", "a_method=1", "payment_method=card", ""] {
            assert_eq!(method_override(&none, Some(query)), None, "{query}");
        }
    }
}
