//! Header lines serialized once and written after a header's map.
//!
//! A proxy that adds the same headers to every message (or a few numbers per message)
//! pays, with `insert_header`, a hash and an insertion into two maps (values and case)
//! per header, and grows both maps. [AppendedHeaders] holds the lines already on the
//! wire format instead: HTTP/1 writes them after the map's headers as they are, and
//! every conversion to [http] parts (`as_owned_parts`, `From<..> for Parts`, which
//! HTTP/2 uses) parses them into the parts' header map, so no path loses them.
//!
//! The lines are not in the header's map: `headers.get` does not see them. Whoever
//! appends a header that may already be in the map removes it from the map first.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// A header name parsed once, with the spelling it is written in on the wire.
#[derive(Debug, Clone)]
pub struct PreparsedHeaderName {
    name: HeaderName,
    spelling: &'static str,
}

impl PreparsedHeaderName {
    /// The name `spelling`, e.g. `"X-Request-Id"`, stored as `lowercase`
    /// (`"x-request-id"`), which must be the same name in lowercase.
    ///
    /// # Panics
    /// When `lowercase` is not a valid lowercase header name, or not `spelling` in
    /// lowercase; at compile time when used in a `const` or `static`.
    pub const fn from_static(lowercase: &'static str, spelling: &'static str) -> Self {
        let (a, b) = (lowercase.as_bytes(), spelling.as_bytes());
        assert!(a.len() == b.len(), "spelling is not the same name");
        let mut i = 0;
        while i < a.len() {
            assert!(
                a[i] == b[i].to_ascii_lowercase(),
                "spelling is not the same name"
            );
            i += 1;
        }
        PreparsedHeaderName {
            name: HeaderName::from_static(lowercase),
            spelling,
        }
    }

    /// The parsed (lowercase) name.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// The name as written on the wire.
    pub fn spelling(&self) -> &[u8] {
        self.spelling.as_bytes()
    }
}

/// Complete header lines (`Name: value\r\n` each), valid by construction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendedHeaders(Bytes);

impl AppendedHeaders {
    /// No lines.
    pub const fn empty() -> Self {
        AppendedHeaders(Bytes::new())
    }

    /// Whether there are no lines.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The lines as written on the wire.
    pub fn as_wire(&self) -> &[u8] {
        &self.0
    }

    /// The (name, value) pairs, parsed from the lines.
    pub fn iter(&self) -> impl Iterator<Item = (HeaderName, HeaderValue)> + '_ {
        self.0
            .split(|&b| b == b'\n')
            .filter_map(|line| line.strip_suffix(b"\r"))
            .filter_map(|line| {
                let colon = line.iter().position(|&b| b == b':')?;
                // Both halves were checked when the line was built.
                let name = HeaderName::from_bytes(&line[..colon]).ok()?;
                let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii_start()).ok()?;
                Some((name, value))
            })
    }

    /// Appends the pairs to `headers` (what a conversion to [http] parts calls).
    pub(crate) fn append_to(&self, headers: &mut HeaderMap) {
        for (name, value) in self.iter() {
            headers.append(name, value);
        }
    }
}

/// Builds [AppendedHeaders] line by line.
#[derive(Debug, Default)]
pub struct AppendedHeadersBuilder {
    lines: BytesMut,
}

impl AppendedHeadersBuilder {
    /// A builder whose buffer holds `capacity` bytes before it grows.
    pub fn with_capacity(capacity: usize) -> Self {
        AppendedHeadersBuilder {
            lines: BytesMut::with_capacity(capacity),
        }
    }

    /// Adds `name: value` (any valid header value).
    pub fn header(&mut self, name: &PreparsedHeaderName, value: &HeaderValue) -> &mut Self {
        self.line(name, value.as_bytes())
    }

    /// Adds `name: value`, or fails, adding nothing, when `value` is not a valid
    /// header value (it holds a control character other than tab).
    pub fn value_bytes(
        &mut self,
        name: &PreparsedHeaderName,
        value: &[u8],
    ) -> Result<&mut Self, http::header::InvalidHeaderValue> {
        if !is_plain_value(value) {
            // Only a suspect value pays for `http`'s check (a copy), which also makes the
            // error: the error type has no public constructor.
            HeaderValue::from_bytes(value)?;
        }
        Ok(self.line(name, value))
    }

    /// Adds `name: value` for a value its owner checked once, when it was made (with
    /// [HeaderValue::from_bytes] or as [Self::value_bytes] does): not checked again.
    /// A value with CR or LF would split the line; debug builds assert it has none.
    pub fn checked_value_bytes(&mut self, name: &PreparsedHeaderName, value: &[u8]) -> &mut Self {
        debug_assert!(is_plain_value(value), "an unchecked header value");
        self.line(name, value)
    }

    /// Adds `name: n` with `n` in decimal.
    pub fn number(&mut self, name: &PreparsedHeaderName, n: u64) -> &mut Self {
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(n);
        self.line(name, digits.as_bytes())
    }

    fn line(&mut self, name: &PreparsedHeaderName, value: &[u8]) -> &mut Self {
        let spelling = name.spelling();
        self.lines.reserve(spelling.len() + 2 + value.len() + 2);
        self.lines.put_slice(spelling);
        self.lines.put_slice(b": ");
        self.lines.put_slice(value);
        self.lines.put_slice(b"\r\n");
        self
    }

    /// The lines built so far.
    pub fn build(self) -> AppendedHeaders {
        AppendedHeaders(self.lines.freeze())
    }
}

/// True when `value` holds no control character other than tab (no CR, LF, NUL, DEL).
/// Branch-free over the bytes, so that the compiler checks many bytes per instruction.
fn is_plain_value(value: &[u8]) -> bool {
    value.iter().fold(true, |plain, &b| {
        plain & ((b >= 0x20) | (b == b'\t')) & (b != 0x7f)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIER: PreparsedHeaderName = PreparsedHeaderName::from_static("x-tier", "X-Tier");
    const LIMIT: PreparsedHeaderName =
        PreparsedHeaderName::from_static("ratelimit-limit", "RateLimit-Limit");

    #[test]
    fn lines_are_wire_format_and_parse_back() {
        let mut builder = AppendedHeadersBuilder::default();
        builder
            .header(&TIER, &HeaderValue::from_static("gold plan"))
            .number(&LIMIT, 0)
            .number(&LIMIT, u64::MAX);
        let lines = builder.build();
        assert_eq!(
            lines.as_wire(),
            b"X-Tier: gold plan\r\nRateLimit-Limit: 0\r\nRateLimit-Limit: 18446744073709551615\r\n"
        );
        let pairs: Vec<_> = lines.iter().collect();
        assert_eq!(pairs.len(), 3);
        assert_eq!(
            pairs[0],
            (
                HeaderName::from_static("x-tier"),
                HeaderValue::from_static("gold plan")
            )
        );
        assert_eq!(pairs[2].1, "18446744073709551615");
        assert!(AppendedHeaders::empty().is_empty());
        let mut builder = AppendedHeadersBuilder::default();
        assert!(builder.value_bytes(&TIER, b"a\r\nX-Evil: 1").is_err());
        assert!(builder.value_bytes(&TIER, b"\x7f").is_err());
        builder.value_bytes(&TIER, b"ok\tfine").unwrap();
        assert_eq!(builder.build().as_wire(), b"X-Tier: ok\tfine\r\n");
        assert_eq!(AppendedHeaders::empty().iter().count(), 0);
    }

    #[test]
    fn the_value_check_agrees_with_http_for_every_byte_anywhere() {
        for byte in 0..=255u8 {
            // Alone, and at positions around the widths a vectorized check may use.
            for at in [
                None,
                Some(0),
                Some(1),
                Some(15),
                Some(16),
                Some(31),
                Some(63),
                Some(99),
            ] {
                let mut value = vec![b'a'; if at.is_some() { 100 } else { 1 }];
                value[at.unwrap_or(0)] = byte;
                assert_eq!(
                    is_plain_value(&value),
                    HeaderValue::from_bytes(&value).is_ok(),
                    "byte {byte:#04x} at {at:?}"
                );
                let mut builder = AppendedHeadersBuilder::default();
                assert_eq!(
                    builder.value_bytes(&TIER, &value).is_ok(),
                    HeaderValue::from_bytes(&value).is_ok()
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "spelling is not the same name")]
    fn a_spelling_must_be_the_same_name() {
        PreparsedHeaderName::from_static("x-trace", "X-Tracer");
    }
}
