//! Small HTML pages the gateway shows to browsers. Every dynamic value is escaped.

use std::fmt::Write as _;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
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
pub fn page(title: &str, paragraphs: &[&str], error_code: Option<&str>) -> String {
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
pub fn redirect(location: &str) -> String {
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

/// The gateway's pages: embedded in the binary, each replaceable by a file of the same
/// name in `pages.templates_dir`. `{{name}}` placeholders are filled with escaped text.
#[derive(Debug, Clone)]
pub struct Templates {
    pub activate: String,
    pub activation_required: String,
    pub denied: String,
    pub stylesheet: String,
}

/// Embedded defaults.
const ACTIVATE: &str = include_str!("../../pages/activate.html");
const ACTIVATION_REQUIRED: &str = include_str!("../../pages/activation-required.html");
const DENIED: &str = include_str!("../../pages/denied.html");
const STYLESHEET: &str = include_str!("../../pages/licgate.css");

impl Default for Templates {
    fn default() -> Self {
        Templates {
            activate: ACTIVATE.into(),
            activation_required: ACTIVATION_REQUIRED.into(),
            denied: DENIED.into(),
            stylesheet: STYLESHEET.into(),
        }
    }
}

impl Templates {
    /// The embedded pages, with those present in `dir` (`activate.html`,
    /// `activation-required.html`, `denied.html`, `licgate.css`) taking their place.
    pub fn load(dir: Option<&std::path::Path>) -> std::io::Result<Templates> {
        let mut templates = Templates::default();
        let Some(dir) = dir else {
            return Ok(templates);
        };
        for (name, slot) in [
            ("activate.html", &mut templates.activate),
            (
                "activation-required.html",
                &mut templates.activation_required,
            ),
            ("denied.html", &mut templates.denied),
            ("licgate.css", &mut templates.stylesheet),
        ] {
            match std::fs::read_to_string(dir.join(name)) {
                Ok(text) => *slot = text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(templates)
    }
}

/// Fills `{{key}}` placeholders of `template`: values are escaped, except keys listed
/// in `raw_html` (which callers build from escaped parts).
pub fn render(template: &str, values: &[(&str, &str)], raw_html: &[&str]) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let key = after[..end].trim();
                if let Some((_, value)) = values.iter().find(|(k, _)| *k == key) {
                    if raw_html.contains(&key) {
                        out.push_str(value);
                    } else {
                        out.push_str(&escape(value));
                    }
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod template_tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_and_escaped() {
        let html = render(
            "<p>{{a}}</p>{{b}}{{missing}}<i>{{ c }}</i>{{",
            &[("a", "<x>"), ("b", "<b>ok</b>"), ("c", "&")],
            &["b"],
        );
        assert_eq!(html, "<p>&lt;x&gt;</p><b>ok</b><i>&amp;</i>{{");
    }

    #[test]
    fn files_in_the_templates_dir_replace_embedded_pages() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("denied.html"), "custom {{title}}").unwrap();
        let t = Templates::load(Some(dir.path())).unwrap();
        assert_eq!(t.denied, "custom {{title}}");
        assert_eq!(t.activate, ACTIVATE);
    }
}
