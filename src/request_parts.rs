//! Small readings of a request head that several handlers need: a query parameter,
//! a cookie.

use pingora::http::RequestHeader;

/// The first value of query parameter `name` (form-decoded).
pub(crate) fn query_param(req: &RequestHeader, name: &str) -> Option<String> {
    let query = req.uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'r>(req: &'r RequestHeader, name: &str) -> Option<&'r str> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_and_cookies_are_read() {
        let mut req = RequestHeader::build("GET", b"/x?a=1&b=%20two&a=3", None).unwrap();
        req.append_header("Cookie", "x=1; session=abc").unwrap();
        req.append_header("Cookie", "y=2").unwrap();
        assert_eq!(query_param(&req, "a").as_deref(), Some("1"));
        assert_eq!(query_param(&req, "b").as_deref(), Some(" two"));
        assert_eq!(query_param(&req, "c"), None);
        assert_eq!(cookie(&req, "session"), Some("abc"));
        assert_eq!(cookie(&req, "y"), Some("2"));
        assert_eq!(cookie(&req, "z"), None);
    }
}
