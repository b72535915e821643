//! Configuration errors that point at the offending place in the file.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

/// A problem found in a configuration, located by a byte span of the source text
/// (or by no span when it concerns the file as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Byte range in the source text, when known.
    pub span: Option<Range<usize>>,
    /// What is wrong and what is expected, fit to show an operator.
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic at `span`.
    pub fn at(span: Range<usize>, message: impl Into<String>) -> Self {
        Self {
            span: Some(span),
            message: message.into(),
        }
    }

    /// A diagnostic about the file as a whole (reported at line 1, column 1).
    pub fn whole_file(message: impl Into<String>) -> Self {
        Self {
            span: None,
            message: message.into(),
        }
    }
}

/// A diagnostic resolved to `file:line:col` (both 1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{path}:1:1: cannot read configuration file: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration; holds every problem found.
    #[error("{}", display_all(.0))]
    Invalid(Vec<Located>),
}

impl ConfigError {
    /// Every problem as one `file:line:col: message` line each.
    pub fn lines(&self) -> Vec<String> {
        match self {
            ConfigError::Read { .. } => vec![self.to_string()],
            ConfigError::Invalid(all) => all.iter().map(ToString::to_string).collect(),
        }
    }
}

fn display_all(all: &[Located]) -> String {
    all.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Resolves diagnostics against `source` (the text of `file`), sorted by position.
pub(crate) fn locate(file: &str, source: &str, diagnostics: Vec<Diagnostic>) -> Vec<Located> {
    let mut located: Vec<(usize, Located)> = diagnostics
        .into_iter()
        .map(|d| {
            let offset = d.span.map(|s| s.start).unwrap_or(0);
            let (line, col) = line_col(source, offset);
            (
                offset,
                Located {
                    file: file.to_string(),
                    line,
                    col,
                    message: d.message,
                },
            )
        })
        .collect();
    located.sort_by_key(|(offset, _)| *offset);
    located.into_iter().map(|(_, l)| l).collect()
}

/// 1-based line and column (in characters) of byte `offset` in `source`.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..floor_char_boundary(source, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let src = "a = 1\nbb = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        assert_eq!(line_col(src, 9), (2, 4));
        assert_eq!(line_col(src, 1000), (3, 1));
    }

    #[test]
    fn line_col_counts_characters_not_bytes() {
        let src = "é = 1";
        assert_eq!(line_col(src, 3), (1, 3));
    }
}
