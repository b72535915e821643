//! The HTML pages the gateway shows to browsers. The activation, activation-required
//! and denial pages are templates ([`templates`]: minijinja, every value escaped
//! unless marked safe); the error pages of upstream failures and redirects are built
//! here. Every dynamic value is escaped.

pub(crate) mod templates;

pub(crate) use templates::{Page, TemplateError, Templates};

use std::fmt::Write as _;

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;\
background:#f5f6f8;color:#1d2330;margin:0}main{max-width:34rem;margin:12vh auto;background:#fff;\
border-radius:10px;padding:2rem 2.25rem;box-shadow:0 2px 12px rgba(0,0,0,.08)}h1{font-size:1.35rem;\
margin:0 0 .75rem}p{line-height:1.5}.code{font-family:ui-monospace,monospace;color:#6b7280;font-size:.85rem}\
a.button{display:inline-block;margin-top:1rem;padding:.55rem 1rem;background:#2563eb;color:#fff;\
border-radius:6px;text-decoration:none}";

/// A complete page: `title` and `paragraphs` are plain text (escaped here);
/// `error_code` is shown small under the text when given.
pub(crate) fn page(title: &str, paragraphs: &[&str], error_code: Option<&str>) -> String {
    let mut html = String::with_capacity(1024);
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{title}</title><style>{STYLE}</style></head><body><main><h1>{title}</h1>",
        title = escape(title)
    );
    for p in paragraphs {
        let _ = write!(html, "<p>{}</p>", escape(p));
    }
    if let Some(code) = error_code {
        let _ = write!(html, "<p class=\"code\">{}</p>", escape(code));
    }
    html.push_str("</main></body></html>\n");
    html
}

/// The body of a redirect response (for clients that do not follow `Location`).
pub(crate) fn redirect(location: &str) -> String {
    let location = escape(location);
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Redirecting</title></head>\
<body><p>Continue to <a href=\"{location}\">{location}</a>.</p></body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let p = page("<t>", &["<script>"], Some("X"));
        assert!(!p.contains("<script>"));
        assert!(p.contains("&lt;t&gt;"));
    }
}
