//! Request-target normalization, done once per request. The normalized path is both
//! what the feature map matches and what is forwarded, so the gateway and the
//! application can never disagree about which path was asked for.
//!
//! Rules:
//! - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded; every
//!   other escape is kept, with upper-case hex; nothing is decoded twice (`%252e`
//!   stays `%252e`);
//! - `.` and `..` segments are resolved (also when encoded), repeated slashes merged;
//! - rejected (400 `BAD_REQUEST_PATH`): `%2F`/`%5C` (encoded slashes), raw `\`, NUL and
//!   control characters (raw or encoded), raw non-ASCII, invalid percent-encoding,
//!   invalid or overlong UTF-8 in escapes, a `..` above the root, and `;` path
//!   parameters, raw or encoded as `%3B` (or, when configured, parameters are stripped
//!   from the path);
//! - rejected too: a segment that ends with `.`, `~` or an encoded space (`%20`), other
//!   than the `.` and `..` segments. Servers on Windows trim trailing dots and spaces
//!   (and editors' backup names end in `~`): such an app would read
//!   `/api/manufacturing./x` as `/api/manufacturing/x`, a path the feature map never saw;
//! - absolute-form targets (`http://host/path`) give their path (and authority);
//!   `*` is recognised as the asterisk form; anything else is rejected.

use std::borrow::Cow;
use std::fmt::Write as _;

/// What to do with `;` path parameters (`/a;x=1/b`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathParams {
    /// Reject the request (default).
    #[default]
    Reject,
    /// Remove them from the path that is matched and forwarded.
    Strip,
}

/// What to do with method overrides (`X-HTTP-Method-Override`, `?_method=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MethodOverride {
    /// Refuse requests that carry one (400): the app could run another method than
    /// the one the feature map judged.
    Reject,
    /// Forward them.
    #[default]
    Allow,
}

/// Path rules set by configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PathOptions {
    pub path_params: PathParams,
    /// Match the feature map case-insensitively (the forwarded path keeps its case).
    pub case_insensitive: bool,
    /// Method overrides; the configuration's default is `Reject` as soon as a feature
    /// rule lists methods.
    pub method_override: MethodOverride,
}

/// Why a request target was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request target is not a path")]
    NotAPath,
    #[error("only http and https absolute-form targets are accepted")]
    UnsupportedScheme,
    #[error("the path contains an encoded slash or backslash (%2F, %5C)")]
    EncodedSlash,
    #[error("the path contains a backslash")]
    Backslash,
    #[error("the path contains a control character")]
    ControlCharacter,
    #[error("the path contains raw non-ASCII bytes")]
    NonAscii,
    #[error("the path contains invalid percent-encoding")]
    InvalidPercentEncoding,
    #[error("the path contains percent-encoded bytes that are not valid UTF-8")]
    InvalidUtf8,
    #[error("the path climbs above the root with ..")]
    AboveRoot,
    #[error("the path contains ; parameters")]
    PathParameter,
    #[error("the request target contains a fragment (#)")]
    Fragment,
    #[error("a path segment ends with a dot, a tilde or a space")]
    TrailingCharacter,
}

/// A normalized request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target<'a> {
    /// `*` (only meaningful with OPTIONS).
    Asterisk,
    Path(NormalizedPath<'a>),
}

/// The normalized path (borrowed from the request when it was already normal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath<'a> {
    /// The path to match and forward, always starting with `/`.
    pub path: Cow<'a, str>,
    /// The query, exactly as received (without `?`).
    pub query: Option<&'a str>,
    /// The authority of an absolute-form target.
    pub authority: Option<&'a str>,
}

impl NormalizedPath<'_> {
    /// Whether the forwarded request target must be rewritten.
    pub fn changed(&self) -> bool {
        matches!(self.path, Cow::Owned(_)) || self.authority.is_some()
    }

    /// `path?query` as it is forwarded.
    pub fn target(&self) -> String {
        match self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.to_string(),
        }
    }
}

/// Normalizes a raw request target (`RequestHeader::raw_path`).
pub fn normalize<'a>(raw: &'a [u8], options: &PathOptions) -> Result<Target<'a>, PathError> {
    if raw == b"*" {
        return Ok(Target::Asterisk);
    }
    let text = std::str::from_utf8(raw).map_err(|_| PathError::NonAscii)?;
    // A fragment never belongs in a request target; servers disagree on dropping it.
    if text.contains('#') {
        return Err(PathError::Fragment);
    }
    let (authority, rest) = split_absolute_form(text)?;
    let (path, query) = match rest.find('?') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    // `http://host?q` has an empty path: it means `/`.
    let path = if path.is_empty() && authority.is_some() {
        "/"
    } else {
        path
    };
    if !path.starts_with('/') {
        return Err(PathError::NotAPath);
    }
    if let Some(q) = query {
        if q.bytes().any(|b| b < 0x20 || b == 0x7f || b >= 0x80) {
            return Err(PathError::ControlCharacter);
        }
    }
    let path = if is_already_normal(path) {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(normalize_path(path, options.path_params)?)
    };
    Ok(Target::Path(NormalizedPath {
        path,
        query,
        authority,
    }))
}

/// Splits `http(s)://authority/path` into (authority, path); origin-form is returned as
/// is. Works on bytes: `text` may hold non-ASCII characters anywhere.
fn split_absolute_form(text: &str) -> Result<(Option<&str>, &str), PathError> {
    if text.starts_with('/') {
        return Ok((None, text));
    }
    let bytes = text.as_bytes();
    let has_scheme = |scheme: &[u8]| {
        bytes
            .get(..scheme.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(scheme))
    };
    let scheme_len = if has_scheme(b"http://") {
        7
    } else if has_scheme(b"https://") {
        8
    } else if text.contains("://") {
        return Err(PathError::UnsupportedScheme);
    } else {
        return Err(PathError::NotAPath);
    };
    // The scheme is ASCII, so `scheme_len` is a character boundary.
    let after = text.get(scheme_len..).ok_or(PathError::NotAPath)?;
    let end = after.find(['/', '?']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    if authority.is_empty() {
        return Err(PathError::NotAPath);
    }
    // The authority names the tenant in host mode: ASCII only, as a `Host` is.
    if !authority.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(PathError::NonAscii);
    }
    Ok((Some(authority), rest))
}

/// True when `path` needs no change: no escapes, no `;`, no `\\`, no control or
/// non-ASCII bytes, no empty, `.` or `..` segments (the last may be empty: a trailing
/// slash), no segment ending in `.` or `~`. One pass over the bytes.
fn is_already_normal(path: &str) -> bool {
    // Length of the current segment so far, how many of its bytes are dots, its last byte.
    let (mut len, mut dots, mut last) = (0usize, 0usize, b'/');
    let segment_ok = |len: usize, dots: usize, last: u8| {
        let dot_segment = len > 0 && len <= 2 && dots == len;
        !dot_segment && last != b'.' && last != b'~'
    };
    for &b in path.as_bytes().get(1..).unwrap_or_default() {
        match b {
            b'/' => {
                if len == 0 || !segment_ok(len, dots, last) {
                    return false;
                }
                (len, dots) = (0, 0);
            }
            b'%' | b';' | b'\\' => return false,
            0x20..=0x7e => {
                len += 1;
                dots += usize::from(b == b'.');
            }
            _ => return false,
        }
        last = b;
    }
    len == 0 || segment_ok(len, dots, last)
}

fn normalize_path(path: &str, params: PathParams) -> Result<String, PathError> {
    let mut out = String::with_capacity(path.len());
    let mut segment = String::new();
    let raw_segments: Vec<&str> = path.get(1..).unwrap_or_default().split('/').collect();
    let count = raw_segments.len();
    let mut trailing_slash = false;
    for (i, raw) in raw_segments.into_iter().enumerate() {
        let last = i + 1 == count;
        decode_segment(raw, params, &mut segment)?;
        match segment.as_str() {
            "" => trailing_slash = last,
            "." => trailing_slash = last,
            ".." => {
                let cut = out.rfind('/').ok_or(PathError::AboveRoot)?;
                out.truncate(cut);
                trailing_slash = last;
            }
            s if s.ends_with(['.', '~']) || s.ends_with("%20") => {
                return Err(PathError::TrailingCharacter)
            }
            s => {
                out.push('/');
                out.push_str(s);
                trailing_slash = false;
            }
        }
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes one segment into `out` (cleared first), per the module rules.
fn decode_segment(raw: &str, params: PathParams, out: &mut String) -> Result<(), PathError> {
    out.clear();
    let bytes = raw.as_bytes();
    let escaped = |i: usize| -> Result<u8, PathError> {
        match (
            bytes.get(i + 1).copied().and_then(hex_value),
            bytes.get(i + 2).copied().and_then(hex_value),
        ) {
            (Some(h), Some(l)) => Ok(h << 4 | l),
            _ => Err(PathError::InvalidPercentEncoding),
        }
    };
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let value = escaped(i)?;
                if value == b'/' || value == b'\\' {
                    return Err(PathError::EncodedSlash);
                }
                // Servers that decode before splitting parameters read `%3B` as `;`.
                if value == b';' {
                    return match params {
                        PathParams::Reject => Err(PathError::PathParameter),
                        PathParams::Strip => Ok(()),
                    };
                }
                if value < 0x20 || value == 0x7f {
                    return Err(PathError::ControlCharacter);
                }
                if value >= 0x80 {
                    // A run of escaped bytes must be whole, shortest-form UTF-8.
                    let mut run = Vec::with_capacity(4);
                    while bytes.get(i) == Some(&b'%') {
                        let v = escaped(i)?;
                        if v < 0x80 {
                            break;
                        }
                        run.push(v);
                        i += 3;
                    }
                    std::str::from_utf8(&run).map_err(|_| PathError::InvalidUtf8)?;
                    for v in run {
                        let _ = write!(out, "%{v:02X}");
                    }
                    continue;
                }
                if is_unreserved(value) {
                    out.push(value as char);
                } else {
                    let _ = write!(out, "%{value:02X}");
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            b';' => match params {
                PathParams::Reject => return Err(PathError::PathParameter),
                PathParams::Strip => return Ok(()),
            },
            _ if b < 0x20 || b == 0x7f => return Err(PathError::ControlCharacter),
            _ if b >= 0x80 => return Err(PathError::NonAscii),
            _ => {
                out.push(b as char);
                i += 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
