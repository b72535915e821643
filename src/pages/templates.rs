//! The gateway's page templates: embedded in the binary, each replaceable by a file of
//! the same name in `pages.templates_dir`. Rendered by minijinja with HTML
//! autoescape: a value is escaped unless the caller marks it safe
//! ([`minijinja::Value::from_safe_string`]). A template that does not compile is
//! refused when the templates are loaded (with its file, line and reason), so a
//! reload with a broken template keeps the pages in force.

use std::path::Path;

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

/// One page of the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Page {
    /// `/_licgate/activate`: the license key form.
    Activate,
    /// `/_licgate/activation-required`: the license no longer allows access.
    ActivationRequired,
    /// A refusal (403, 429, 503, 400) for browsers.
    Denied,
}

impl Page {
    const ALL: [Page; 3] = [Page::Activate, Page::ActivationRequired, Page::Denied];

    /// The template's file name (also its name in `pages.templates_dir`).
    pub(crate) fn file_name(self) -> &'static str {
        match self {
            Page::Activate => "activate.html",
            Page::ActivationRequired => "activation-required.html",
            Page::Denied => "denied.html",
        }
    }

    /// The embedded template.
    fn embedded(self) -> &'static str {
        match self {
            Page::Activate => include_str!("../../pages/activate.html"),
            Page::ActivationRequired => include_str!("../../pages/activation-required.html"),
            Page::Denied => include_str!("../../pages/denied.html"),
        }
    }
}

/// The embedded stylesheet (`/_licgate/assets/licgate.css`).
const STYLESHEET: &str = include_str!("../../pages/licgate.css");

/// Why the templates could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{file}:{line}: {reason}")]
    Syntax {
        file: String,
        line: usize,
        reason: String,
    },
}

/// The compiled pages and the stylesheet.
#[derive(Debug)]
pub(crate) struct Templates {
    env: Environment<'static>,
    /// The embedded pages, the fallback when an operator's page fails to render.
    embedded: Option<Box<Templates>>,
    stylesheet: String,
}

impl Default for Templates {
    fn default() -> Templates {
        let sources = Page::ALL.map(|page| (page, page.embedded().to_string()));
        Templates::compile(sources, STYLESHEET.to_string(), None)
            .expect("the embedded templates compile")
    }
}

/// A template environment as the gateway's pages use it: HTML autoescape of every
/// template, strings escaped as the rest of the gateway escapes them (`&<>"'`; a `/`
/// in a link stays a `/`), undefined values empty.
pub(crate) fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.set_formatter(|out, state, value| match value.as_str() {
        Some(text) if !value.is_safe() && *state.auto_escape() != AutoEscape::None => out
            .write_str(&super::escape(text))
            .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string())),
        _ => minijinja::escape_formatter(out, state, value),
    });
    env
}

impl Templates {
    /// The embedded pages, with those present in `dir` (`activate.html`,
    /// `activation-required.html`, `denied.html`, `licgate.css`) taking their place.
    pub(crate) fn load(dir: Option<&Path>) -> Result<Templates, TemplateError> {
        let Some(dir) = dir else {
            return Ok(Templates::default());
        };
        let read = |name: &str| -> Result<Option<String>, TemplateError> {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(Some(text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(TemplateError::Read { path, source }),
            }
        };
        let mut sources = Page::ALL.map(|page| (page, page.embedded().to_string()));
        for (page, text) in &mut sources {
            if let Some(own) = read(page.file_name())? {
                *text = own;
            }
        }
        let stylesheet = read("licgate.css")?.unwrap_or_else(|| STYLESHEET.to_string());
        Templates::compile(sources, stylesheet, Some(Box::default()))
    }

    fn compile(
        sources: [(Page, String); 3],
        stylesheet: String,
        embedded: Option<Box<Templates>>,
    ) -> Result<Templates, TemplateError> {
        let mut env = environment();
        for (page, text) in sources {
            env.add_template_owned(page.file_name(), text)
                .map_err(|e| TemplateError::Syntax {
                    file: page.file_name().to_string(),
                    line: e.line().unwrap_or(0),
                    reason: e.detail().unwrap_or("invalid template").to_string(),
                })?;
        }
        Ok(Templates {
            env,
            embedded,
            stylesheet,
        })
    }

    /// `page` filled with `context` (a map of values; plain strings are escaped). An
    /// operator's page that fails to render falls back to the embedded one.
    pub(crate) fn render(&self, page: Page, context: Value) -> String {
        let rendered = self
            .env
            .get_template(page.file_name())
            .and_then(|t| t.render(&context));
        match rendered {
            Ok(html) => html,
            Err(e) => {
                tracing::warn!(page = page.file_name(), error = %e, "page template failed; the embedded page is shown");
                match &self.embedded {
                    Some(embedded) => embedded.render(page, context),
                    None => String::new(),
                }
            }
        }
    }

    /// The stylesheet the pages load.
    pub(crate) fn stylesheet(&self) -> &str {
        &self.stylesheet
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_unless_marked_safe() {
        let t = Templates::default();
        let html = t.render(
            Page::Denied,
            minijinja::context! { title => "<x>", message => "a & b", error_code => "E" },
        );
        assert!(html.contains("<h1>&lt;x&gt;</h1>"), "{html}");
        assert!(html.contains("a &amp; b"), "{html}");
        let form = t.render(
            Page::Activate,
            minijinja::context! {
                error => Value::from_safe_string("<p class=\"error\">no</p>".into()),
                next => "\"><script>",
            },
        );
        assert!(form.contains("<p class=\"error\">no</p>"), "{form}");
        assert!(!form.contains("<script>"), "{form}");
    }

    #[test]
    fn files_in_the_templates_dir_replace_embedded_pages() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("denied.html"),
            "custom {{title}} {{ missing }}.",
        )
        .unwrap();
        let t = Templates::load(Some(dir.path())).unwrap();
        let html = t.render(Page::Denied, minijinja::context! { title => "<T>" });
        assert_eq!(html, "custom &lt;T&gt; .");
        assert!(t.render(Page::Activate, Value::UNDEFINED).contains("<form"));
        assert!(t.stylesheet().contains("body"));
    }

    #[test]
    fn a_broken_template_is_refused_with_its_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("activate.html"), "<p>\n{% if %}</p>").unwrap();
        let e = Templates::load(Some(dir.path())).unwrap_err().to_string();
        assert!(e.starts_with("activate.html:2: "), "{e}");
    }
}
