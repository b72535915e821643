//! Reading the model of an Odoo XML-RPC call (`/xmlrpc/2/object`, `/xmlrpc/object`)
//! from its body, strictly.
//!
//! Odoo reads these bodies with Python's `xmlrpc.client.loads` (expat and a lenient
//! unmarshaller: it honours a DTD's entities and any declared encoding, takes
//! `x:string` as `string`, pushes every `<value>` it meets wherever it is, keeps the
//! last `<methodName>`). The gateway accepts only the canonical shape and refuses
//! the rest, so that what it reads is what Odoo dispatches:
//!
//! `<methodCall><methodName>execute_kw|execute</methodName><params>` then one
//! `<param><value>…</value></param>` per argument `</params></methodCall>`; values
//! are bare text (a string), `<string>`, the scalar types, `<nil/>`, `<array><data>`
//! and `<struct><member><name>…</name><value>…</value></member>`.
//!
//! Refused: a DTD (so no entity, internal or external, is ever declared or
//! resolved), an encoding other than UTF-8, a byte-order mark, processing
//! instructions, attributes, prefixed (namespaced) names, unknown elements, text
//! beside a typed value, nesting deeper than [`MAX_DEPTH`]. Comments, CDATA sections,
//! character references and the five predefined entities are read as expat reads
//! them (text joined across them, line ends normalized).

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::rpc::{RpcCall, RpcRefusal};

/// The deepest nesting of arrays and structs read.
pub const MAX_DEPTH: usize = 64;

/// The scalar types of XML-RPC as Python reads them.
const SCALARS: &[&[u8]] = &[
    b"string",
    b"int",
    b"i1",
    b"i2",
    b"i4",
    b"i8",
    b"biginteger",
    b"boolean",
    b"double",
    b"float",
    b"bigdecimal",
    b"dateTime.iso8601",
    b"base64",
];

fn refuse(why: impl Into<String>) -> RpcRefusal {
    RpcRefusal::Xml(why.into())
}

/// The model and method of an `execute_kw` / `execute` call of the `object` service:
/// the 4th and 5th parameters, which must be strings.
pub fn object_call(body: &[u8]) -> Result<RpcCall, RpcRefusal> {
    let (method, params) = method_call(body)?;
    match method.as_str() {
        "execute_kw" | "execute" => {}
        _ => return Err(RpcRefusal::Shape("method")),
    }
    let string = |i: usize, what| match params.get(i) {
        Some(Some(s)) => Ok(s.clone()),
        Some(None) => Err(RpcRefusal::Shape(what)),
        None => Err(RpcRefusal::Missing(what)),
    };
    Ok(RpcCall {
        model: string(3, "model")?,
        method: string(4, "method")?,
    })
}

/// A whole `<methodCall>`: its method name and its parameters (`Some(text)` for a
/// string parameter, `None` for any other type).
pub fn method_call(body: &[u8]) -> Result<(String, Vec<Option<String>>), RpcRefusal> {
    if body.starts_with(&[0xEF, 0xBB, 0xBF]) {
        return Err(refuse("a byte-order mark is not accepted"));
    }
    let text = std::str::from_utf8(body).map_err(|_| refuse("the body is not UTF-8"))?;
    let mut xml = Xml::new(text);
    // Prolog: an optional declaration, comments and white space.
    let root = loop {
        match xml.next()? {
            Event::Decl(decl) => {
                if xml.seen_decl {
                    return Err(refuse("a second XML declaration"));
                }
                xml.seen_decl = true;
                if let Some(encoding) = decl.encoding() {
                    let encoding = encoding.map_err(|e| refuse(e.to_string()))?;
                    if !encoding.eq_ignore_ascii_case(b"utf-8") {
                        return Err(refuse("only the UTF-8 encoding is accepted"));
                    }
                }
            }
            Event::Start(start) => break start,
            Event::Text(t) if is_space(&t) => {}
            Event::Comment(_) => {}
            Event::DocType(_) => return Err(refuse("a DTD is not accepted")),
            Event::PI(_) => return Err(refuse("processing instructions are not accepted")),
            _ => return Err(refuse("the body is not a <methodCall>")),
        }
    };
    xml.plain(&root, b"methodCall")?;
    xml.expect_start(b"methodName")?;
    let method = xml.text_until(b"methodName")?;
    let mut params = Vec::new();
    match xml.next_element()? {
        Element::Start(start) => {
            xml.plain(&start, b"params")?;
            loop {
                match xml.next_element()? {
                    Element::Start(start) => {
                        xml.plain(&start, b"param")?;
                        xml.expect_start(b"value")?;
                        params.push(xml.value(0)?);
                        xml.expect_end(b"param")?;
                    }
                    Element::End(name) if name == b"params" => break,
                    _ => return Err(refuse("<params> holds only <param>")),
                }
            }
        }
        Element::Empty(start) => xml.plain(&start, b"params")?,
        Element::End(_) => return Err(RpcRefusal::Missing("params")),
    }
    xml.expect_end(b"methodCall")?;
    loop {
        match xml.next()? {
            Event::Eof => break,
            Event::Text(t) if is_space(&t) => {}
            Event::Comment(_) => {}
            _ => return Err(refuse("content after </methodCall>")),
        }
    }
    Ok((method, params))
}

/// XML white space only.
fn is_space(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

/// An element boundary met while skipping white space and comments.
enum Element<'a> {
    Start(BytesStart<'a>),
    Empty(BytesStart<'a>),
    End(Vec<u8>),
}

struct Xml<'a> {
    reader: Reader<&'a [u8]>,
    seen_decl: bool,
}

impl<'a> Xml<'a> {
    fn new(text: &'a str) -> Xml<'a> {
        let mut reader = Reader::from_str(text);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.check_comments = true;
        config.allow_dangling_amp = false;
        config.allow_unmatched_ends = false;
        config.expand_empty_elements = false;
        config.trim_text(false);
        Xml {
            reader,
            seen_decl: false,
        }
    }

    fn next(&mut self) -> Result<Event<'a>, RpcRefusal> {
        self.reader
            .read_event()
            .map_err(|e| refuse(format!("not well-formed XML: {e}")))
    }

    /// Checks that `start` is `<name>` without attributes.
    fn plain(&self, start: &BytesStart<'_>, name: &[u8]) -> Result<(), RpcRefusal> {
        if start.name().as_ref() != name {
            return Err(refuse(format!(
                "<{}> where <{}> belongs",
                String::from_utf8_lossy(start.name().as_ref()),
                String::from_utf8_lossy(name)
            )));
        }
        if !is_space(start.attributes_raw()) {
            return Err(refuse("attributes are not accepted"));
        }
        Ok(())
    }

    /// The next element boundary, skipping white space and comments.
    fn next_element(&mut self) -> Result<Element<'a>, RpcRefusal> {
        loop {
            match self.next()? {
                Event::Start(s) => return Ok(Element::Start(s)),
                Event::Empty(s) => return Ok(Element::Empty(s)),
                Event::End(e) => return Ok(Element::End(e.name().as_ref().to_vec())),
                Event::Text(t) if is_space(&t) => {}
                Event::Comment(_) => {}
                Event::Eof => return Err(refuse("the body ends early")),
                _ => return Err(refuse("text or markup where an element belongs")),
            }
        }
    }

    fn expect_start(&mut self, name: &[u8]) -> Result<(), RpcRefusal> {
        match self.next_element()? {
            Element::Start(start) => self.plain(&start, name),
            _ => Err(refuse(format!(
                "<{}> expected",
                String::from_utf8_lossy(name)
            ))),
        }
    }

    fn expect_end(&mut self, name: &[u8]) -> Result<(), RpcRefusal> {
        match self.next_element()? {
            Element::End(end) if end == name => Ok(()),
            _ => Err(refuse(format!(
                "</{}> expected",
                String::from_utf8_lossy(name)
            ))),
        }
    }

    /// The text up to `</name>`: character data, CDATA and references joined, no
    /// element inside.
    fn text_until(&mut self, name: &[u8]) -> Result<String, RpcRefusal> {
        let mut text = String::new();
        loop {
            match self.next()? {
                Event::End(end) if end.name().as_ref() == name => return Ok(text),
                event => {
                    if !self.text_piece(&event, &mut text)? {
                        return Err(refuse(format!(
                            "only text belongs in <{}>",
                            String::from_utf8_lossy(name)
                        )));
                    }
                }
            }
        }
    }

    /// Adds a text event's characters to `text`; false for an event that is not text.
    fn text_piece(&self, event: &Event<'_>, text: &mut String) -> Result<bool, RpcRefusal> {
        let piece = match event {
            Event::Text(t) => t.xml10_content().map_err(|e| refuse(e.to_string()))?,
            Event::CData(c) => c.xml10_content().map_err(|e| refuse(e.to_string()))?,
            Event::Comment(_) => return Ok(true),
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref() {
                    Ok(Some(c)) => c,
                    Ok(None) => match &**r {
                        b"lt" => '<',
                        b"gt" => '>',
                        b"amp" => '&',
                        b"apos" => '\'',
                        b"quot" => '"',
                        _ => return Err(refuse("entities are not accepted")),
                    },
                    Err(e) => return Err(refuse(e.to_string())),
                };
                if !is_xml_char(c) {
                    return Err(refuse("a character XML does not allow"));
                }
                text.push(c);
                return Ok(true);
            }
            _ => return Ok(false),
        };
        if piece.chars().any(|c| !is_xml_char(c)) {
            return Err(refuse("a character XML does not allow"));
        }
        text.push_str(&piece);
        Ok(true)
    }

    /// A `<value>` whose start was read, up to its end: `Some(text)` for a string.
    fn value(&mut self, depth: usize) -> Result<Option<String>, RpcRefusal> {
        if depth > MAX_DEPTH {
            return Err(refuse("values nest too deep"));
        }
        let mut text = String::new();
        let (start, empty) = loop {
            match self.next()? {
                Event::End(end) if end.name().as_ref() == b"value" => return Ok(Some(text)),
                Event::Start(start) => break (start, false),
                Event::Empty(start) => break (start, true),
                event => {
                    if !self.text_piece(&event, &mut text)? {
                        return Err(refuse("unexpected markup in <value>"));
                    }
                }
            }
        };
        if !is_space(text.as_bytes()) {
            return Err(refuse("text beside a typed value"));
        }
        let name = start.name().as_ref().to_vec();
        self.plain(&start, &name)?;
        let string = match (name.as_slice(), empty) {
            (b"string", true) => Some(String::new()),
            (b"nil" | b"array" | b"struct", true) => None,
            (scalar, true) if SCALARS.contains(&scalar) => None,
            (b"array", false) => {
                self.array(depth)?;
                None
            }
            (b"struct", false) => {
                self.members(depth)?;
                None
            }
            (b"nil", false) => {
                self.expect_end(b"nil")?;
                None
            }
            (scalar, false) if SCALARS.contains(&scalar) => {
                let content = self.text_until(scalar)?;
                (scalar == b"string").then_some(content)
            }
            _ => return Err(refuse("an unknown element in <value>")),
        };
        self.expect_end(b"value")?;
        Ok(string)
    }

    /// `<data>` with its values and `</array>`, after `<array>`.
    fn array(&mut self, depth: usize) -> Result<(), RpcRefusal> {
        match self.next_element()? {
            Element::Empty(start) => self.plain(&start, b"data")?,
            Element::Start(start) => {
                self.plain(&start, b"data")?;
                loop {
                    match self.next_element()? {
                        Element::Start(start) => {
                            self.plain(&start, b"value")?;
                            self.value(depth + 1)?;
                        }
                        Element::End(end) if end == b"data" => break,
                        _ => return Err(refuse("<data> holds only <value>")),
                    }
                }
            }
            Element::End(_) => return Err(refuse("<array> needs <data>")),
        }
        self.expect_end(b"array")
    }

    /// The `<member>`s and `</struct>`, after `<struct>`.
    fn members(&mut self, depth: usize) -> Result<(), RpcRefusal> {
        loop {
            match self.next_element()? {
                Element::Start(start) => {
                    self.plain(&start, b"member")?;
                    self.expect_start(b"name")?;
                    self.text_until(b"name")?;
                    self.expect_start(b"value")?;
                    self.value(depth + 1)?;
                    self.expect_end(b"member")?;
                }
                Element::End(end) if end == b"struct" => return Ok(()),
                _ => return Err(refuse("<struct> holds only <member>")),
            }
        }
    }
}

/// The characters XML 1.0 allows.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(params: &str) -> String {
        format!("<?xml version='1.0'?>\n<methodCall>\n<methodName>execute_kw</methodName>\n<params>\n{params}</params>\n</methodCall>\n")
    }

    fn p(value: &str) -> String {
        format!("<param>\n<value>{value}</value>\n</param>\n")
    }

    fn standard(model: &str) -> String {
        call(&[
            p("<string>db</string>"),
            p("<int>2</int>"),
            p("<string>pw</string>"),
            p(model),
            p("<string>search_read</string>"),
            p("<array><data><value><array><data/></array></value></data></array>"),
            p("<struct><member><name>limit</name><value><int>5</int></value></member></struct>"),
        ]
        .concat())
    }

    #[test]
    fn python_shaped_calls_are_read() {
        for (model, want) in [
            ("<string>mrp.production</string>", "mrp.production"),
            ("mrp.production", "mrp.production"),
            (
                "<string>mrp<!-- x -->.production</string>",
                "mrp.production",
            ),
            (
                "<string><![CDATA[mrp.]]>production</string>",
                "mrp.production",
            ),
            ("mrp&#46;production", "mrp.production"),
            ("mrp&#x2E;production", "mrp.production"),
            (" <string>mrp.production</string> ", "mrp.production"),
        ] {
            let got = object_call(standard(model).as_bytes()).unwrap();
            assert_eq!(got.model, want, "{model}");
            assert_eq!(got.method, "search_read");
        }
        let empty = call(&[p(""), p("<int>1</int>"), p("x"), p("<string/>"), p("read")].concat());
        assert_eq!(object_call(empty.as_bytes()).unwrap().model, "");
    }

    #[test]
    fn anything_python_could_read_otherwise_is_refused() {
        let model = "<string>res.partner</string>";
        let base = standard(model);
        for (body, why) in [
            (
                format!("<!DOCTYPE x [<!ENTITY m 'mrp.production'>]>{base}"),
                "DTD",
            ),
            (base.replace("res.partner", "&m;"), "entity"),
            (
                base.replace("<string>res.partner", "<x:string xmlns:x='u'>res.partner")
                    .replace("res.partner</string>", "res.partner</x:string>"),
                "namespace",
            ),
            (
                base.replace(
                    "<?xml version='1.0'?>",
                    "<?xml version='1.0' encoding='iso-8859-1'?>",
                ),
                "encoding",
            ),
            (format!("\u{feff}{base}"), "BOM"),
            (
                base.replace(
                    "<methodName>execute_kw</methodName>",
                    "<methodName>read</methodName><methodName>execute_kw</methodName>",
                ),
                "two method names",
            ),
            (
                base.replace(
                    "<param>\n<value><string>db",
                    "<value><string>mrp.production</string></value><param>\n<value><string>db",
                ),
                "a value outside a param",
            ),
            (
                base.replace(
                    "<value><string>db</string></value>",
                    "<value><string>db</string></value><value>x</value>",
                ),
                "two values in a param",
            ),
            (
                base.replace(
                    "<value><string>res.partner",
                    "<value>mrp.production<string>res.partner",
                ),
                "text beside a type",
            ),
            (
                base.replace("<value><int>2</int>", "<value><int a='1'>2</int>"),
                "attribute",
            ),
            (
                base.replace("<value><int>2</int>", "<value><foo>2</foo>"),
                "unknown element",
            ),
            (format!("{base}<?pi x?>"), "processing instruction"),
            (format!("{base}<methodCall/>"), "second root"),
            (base.replace("execute_kw", "exec_workflow"), "other method"),
            (
                base.replace("res.partner</string>", "res.partner</strin>"),
                "mismatched end",
            ),
            (base.replace(model, "<int>7</int>"), "model not a string"),
            (
                call(&[p("db"), p("<int>2</int>"), p("pw")].concat()),
                "too few params",
            ),
            (
                "<methodCall><methodName>execute_kw</methodName></methodCall>".into(),
                "no params",
            ),
            (
                base.replace("res.partner", "res\u{1}.partner"),
                "control character",
            ),
            (
                base.replace("res.partner", "res&#1;.partner"),
                "control character reference",
            ),
        ] {
            assert!(object_call(body.as_bytes()).is_err(), "{why}: {body}");
        }
        let deep = format!(
            "{}{}",
            "<value><array><data>".repeat(MAX_DEPTH + 2),
            "</data></array></value>".repeat(MAX_DEPTH + 2)
        );
        let deep = call(
            &[
                p("db"),
                p("1"),
                p("pw"),
                p("a.b"),
                p("read"),
                format!("<param>{deep}</param>"),
            ]
            .concat(),
        );
        assert!(object_call(deep.as_bytes()).is_err(), "too deep");
    }
}
