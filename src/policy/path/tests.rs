use super::*;

fn norm(raw: &str) -> Result<String, PathError> {
    norm_with(raw, PathOptions::default())
}

fn norm_with(raw: &str, options: PathOptions) -> Result<String, PathError> {
    match normalize(raw.as_bytes(), &options)? {
        Target::Asterisk => Ok("*".into()),
        Target::Path(p) => Ok(p.target()),
    }
}

#[test]
fn normal_paths_are_borrowed_unchanged() {
    for raw in [
        "/",
        "/api/sales",
        "/api/sales/",
        "/a-b_c~d.e/f",
        "/x?y=1&z=%2F",
    ] {
        let Target::Path(p) = normalize(raw.as_bytes(), &PathOptions::default()).unwrap() else {
            panic!()
        };
        assert!(!p.changed(), "{raw}");
        assert_eq!(p.target(), raw);
    }
}

#[test]
fn dot_segments_and_slashes_are_resolved() {
    let cases = [
        ("/api/./sales", "/api/sales"),
        ("/api/x/../sales", "/api/sales"),
        ("/api//sales", "/api/sales"),
        ("//api///sales//", "/api/sales/"),
        ("/api/sales/.", "/api/sales/"),
        ("/api/sales/..", "/api/"),
        ("/api/%2e%2e/sales", "/sales"),
        ("/api/.%2E/sales", "/sales"),
        ("/api/%2e/sales", "/api/sales"),
        ("/%61pi/s%61les", "/api/sales"),
        ("/a/b/../../c", "/c"),
        ("/..", "AboveRoot"),
        ("/a/../..", "AboveRoot"),
        ("/a/%2e%2e/%2e%2e/b", "AboveRoot"),
    ];
    for (raw, expected) in cases {
        let got = match norm(raw) {
            Ok(p) => p,
            Err(e) => format!("{e:?}"),
        };
        assert_eq!(got, expected, "{raw}");
    }
}

#[test]
fn escapes_are_canonical_and_never_decoded_twice() {
    assert_eq!(norm("/a%20b").unwrap(), "/a%20b");
    assert_eq!(norm("/a%252e%252e/b").unwrap(), "/a%252e%252e/b");
    assert_eq!(norm("/%252e%252e/x").unwrap(), "/%252e%252e/x");
    assert_eq!(norm("/caf%c3%a9").unwrap(), "/caf%C3%A9");
    assert_eq!(norm("/a%23b").unwrap(), "/a%23b");
    assert_eq!(norm("/a%3Fb?x").unwrap(), "/a%3Fb?x");
}

#[test]
fn dangerous_targets_are_rejected() {
    let cases = [
        ("/api%2fsales", PathError::EncodedSlash),
        ("/api%2Fsales", PathError::EncodedSlash),
        ("/api%5csales", PathError::EncodedSlash),
        ("/api\\sales", PathError::Backslash),
        ("/api%00", PathError::ControlCharacter),
        ("/api%0a", PathError::ControlCharacter),
        ("/api%7f", PathError::ControlCharacter),
        ("/api\tx", PathError::ControlCharacter),
        ("/api%zz", PathError::InvalidPercentEncoding),
        ("/api%2", PathError::InvalidPercentEncoding),
        ("/api%", PathError::InvalidPercentEncoding),
        ("/%c0%ae%c0%ae/x", PathError::InvalidUtf8),
        ("/%e0%80%ae", PathError::InvalidUtf8),
        ("/%c3", PathError::InvalidUtf8),
        ("/%ff", PathError::InvalidUtf8),
        ("/api/manufacturing;x=1/", PathError::PathParameter),
        ("/..;/api", PathError::PathParameter),
        ("/api/manufacturing%3bx=1/plan", PathError::PathParameter),
        ("/api/manufacturing%3B/plan", PathError::PathParameter),
        ("/api/manufacturing./x", PathError::TrailingCharacter),
        ("/api/manufacturing%2e/x", PathError::TrailingCharacter),
        ("/api/manufacturing%20/x", PathError::TrailingCharacter),
        ("/api/manufacturing~", PathError::TrailingCharacter),
        ("/api/manufacturing.../x", PathError::TrailingCharacter),
        ("abcdef\u{e9}", PathError::NotAPath),
        ("httpé://x/y", PathError::UnsupportedScheme),
        ("http:/\u{e9}", PathError::NotAPath),
        ("api/sales", PathError::NotAPath),
        ("", PathError::NotAPath),
        ("ftp://h/x", PathError::UnsupportedScheme),
        ("/x?a\x01", PathError::ControlCharacter),
        ("/api#frag", PathError::Fragment),
        ("/static/x#/../../api", PathError::Fragment),
    ];
    for (raw, expected) in cases {
        assert_eq!(norm(raw), Err(expected), "{raw:?}");
    }
    assert_eq!(
        normalize(b"/caf\xc3\xa9", &PathOptions::default()),
        Err(PathError::NonAscii)
    );
}

#[test]
fn path_parameters_can_be_stripped_instead() {
    let strip = PathOptions {
        path_params: PathParams::Strip,
        ..PathOptions::default()
    };
    assert_eq!(
        norm_with("/api/manufacturing;x=1/plan", strip).unwrap(),
        "/api/manufacturing/plan"
    );
    assert_eq!(
        norm_with("/..;/api", strip).unwrap_err(),
        PathError::AboveRoot
    );
    assert_eq!(norm_with("/a/..;x/b", strip).unwrap(), "/b");
    assert_eq!(norm_with("/a;jsessionid=1", strip).unwrap(), "/a");
    assert_eq!(norm_with("/a%3Bjsessionid=1/b", strip).unwrap(), "/a/b");
}

#[test]
fn non_ascii_targets_are_refused_without_panicking() {
    // Non-`/` targets whose non-ASCII bytes fall where a scheme would be checked.
    for raw in [
        &b"abcdef\xc3\xa9"[..],
        b"abcdefg\xc3\xa9",
        b"\xc3\xa9",
        b"h\xc3\xa9ttp://x",
        b"http:\xc3\xa9",
        b"https:/\xc3\xa9/x",
        b"\xff\xfe",
        b"http://acm\xc3\xa9.shop.example.com/x",
    ] {
        assert!(normalize(raw, &PathOptions::default()).is_err(), "{raw:?}");
    }
}

#[test]
fn absolute_form_and_asterisk() {
    let Target::Path(p) = normalize(
        b"http://shop.example.com/api/../x?q=1",
        &PathOptions::default(),
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(p.authority, Some("shop.example.com"));
    assert_eq!(p.target(), "/x?q=1");
    assert!(p.changed());
    assert_eq!(norm("HTTPS://h").unwrap(), "/");
    assert_eq!(norm("http://h?x").unwrap(), "/?x");
    assert_eq!(norm("http:///x"), Err(PathError::NotAPath));
    assert_eq!(
        normalize(b"*", &PathOptions::default()).unwrap(),
        Target::Asterisk
    );
}

#[test]
fn the_fast_check_agrees_with_normalization_on_every_short_path() {
    const ALPHABET: &[u8] = b"a./%;\\~";
    let mut paths = vec![b"/".to_vec()];
    let mut start = 0;
    for _ in 0..6 {
        let end = paths.len();
        for i in start..end {
            for &b in ALPHABET {
                let mut next = paths[i].clone();
                next.push(b);
                paths.push(next);
            }
        }
        start = end;
    }
    for path in &paths {
        let path = std::str::from_utf8(path).unwrap();
        let unchanged = !path.contains(['%', ';', '\\'])
            && normalize_path(path, PathParams::Reject).as_deref() == Ok(path);
        assert_eq!(is_already_normal(path), unchanged, "{path:?}");
    }
}
