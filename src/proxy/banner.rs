//! `pages.flag_banner`: a fixed top bar injected into the app's HTML pages while the
//! tenant's license is a `trial` or `non_production` one, right after the page's
//! `<body …>` tag. Only uncompressed `text/html` responses are touched; a page whose
//! `<body` tag is not within its first [`SEARCH_LIMIT`] bytes goes out unchanged.

use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;

use crate::license::TenantSummary;

/// How far into a page the `<body` tag is looked for.
pub(crate) const SEARCH_LIMIT: usize = 64 * 1024;

const TRIAL: &str = "<div data-licgate-banner style=\"position:fixed;top:0;left:0;right:0;z-index:2147483647;margin:0;padding:4px 8px;background:#92400e;color:#fff;font:600 13px/1.6 system-ui,sans-serif;text-align:center\">Trial license — not for production use</div>";
const NON_PRODUCTION: &str = "<div data-licgate-banner style=\"position:fixed;top:0;left:0;right:0;z-index:2147483647;margin:0;padding:4px 8px;background:#1e3a8a;color:#fff;font:600 13px/1.6 system-ui,sans-serif;text-align:center\">Non-production license</div>";

/// The banner of `license`, when its flags call for one.
pub(crate) fn banner_for(license: &TenantSummary) -> Option<&'static str> {
    let has = |flag: &str| license.flags.iter().any(|f| f == flag);
    if has("trial") {
        Some(TRIAL)
    } else if has("non_production") {
        Some(NON_PRODUCTION)
    } else {
        None
    }
}

/// Whether `response` is a page the banner may go into: `text/html`, not encoded,
/// with a body.
pub(crate) fn is_plain_html(response: &ResponseHeader) -> bool {
    let html = response
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .get(..9)
                .is_some_and(|t| t.eq_ignore_ascii_case("text/html"))
        });
    let encoded = response
        .headers
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    let bodiless =
        response.status.is_informational() || matches!(response.status.as_u16(), 204 | 304);
    html && !encoded && !bodiless
}

/// A page's body on its way out, held back until its `<body …>` tag has passed.
#[derive(Debug)]
pub(crate) struct Injection {
    banner: &'static str,
    held: BytesMut,
    done: bool,
}

impl Injection {
    pub(crate) fn new(banner: &'static str) -> Injection {
        Injection {
            banner,
            held: BytesMut::new(),
            done: false,
        }
    }

    /// Takes the next piece of the body (`None`: nothing this time) and replaces it
    /// with what is to be sent now: nothing while the `<body` tag may still come,
    /// then everything held with the banner after the tag.
    pub(crate) fn pass(&mut self, body: &mut Option<Bytes>, end_of_stream: bool) {
        if self.done {
            return;
        }
        if let Some(piece) = body.take() {
            self.held.extend_from_slice(&piece);
        }
        if let Some(at) = after_body_tag(&self.held) {
            let mut out = BytesMut::with_capacity(self.held.len() + self.banner.len());
            out.extend_from_slice(&self.held[..at]);
            out.extend_from_slice(self.banner.as_bytes());
            out.extend_from_slice(&self.held[at..]);
            self.finish(body, out.freeze());
        } else if end_of_stream || self.held.len() >= SEARCH_LIMIT {
            let held = std::mem::take(&mut self.held).freeze();
            self.finish(body, held);
        }
    }

    fn finish(&mut self, body: &mut Option<Bytes>, out: Bytes) {
        self.done = true;
        self.held = BytesMut::new();
        if !out.is_empty() {
            *body = Some(out);
        }
    }
}

/// Where the first `<body …>` tag (any case) ends in `html`, when it is complete.
fn after_body_tag(html: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = memchr::memchr(b'<', &html[from..]).map(|i| i + from) {
        let rest = &html[i + 1..];
        if rest.len() < 5 {
            return None;
        }
        if rest[..4].eq_ignore_ascii_case(b"body")
            && matches!(rest[4], b'>' | b' ' | b'\t' | b'\r' | b'\n' | b'/')
        {
            return memchr::memchr(b'>', rest).map(|end| i + 1 + end + 1);
        }
        from = i + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pieces: &[&str]) -> String {
        let mut injection = Injection::new("[B]");
        let mut out = String::new();
        for (i, piece) in pieces.iter().enumerate() {
            let mut body = Some(Bytes::from(piece.to_string()));
            injection.pass(&mut body, i + 1 == pieces.len());
            if let Some(b) = body {
                out.push_str(std::str::from_utf8(&b).unwrap());
            }
        }
        out
    }

    #[test]
    fn the_banner_goes_right_after_the_body_tag_even_when_split() {
        assert_eq!(
            run(&["<html><BODY class=x>hi</body>"]),
            "<html><BODY class=x>[B]hi</body>"
        );
        assert_eq!(
            run(&["<html><bo", "dy data-a=\"1\"", ">hi", "</body></html>"]),
            "<html><body data-a=\"1\">[B]hi</body></html>"
        );
        assert_eq!(run(&["<bodyguard>", "no body"]), "<bodyguard>no body");
        assert_eq!(run(&["plain text"]), "plain text");
    }
}
