//! Request policy: path normalization (and, with app, the feature map,
//! tenant resolution and the decision function); for Odoo, model patterns (`model`),
//! the endpoints that name a model (`odoo`) and the strict reading of their JSON
//! (`rpc`), JSON-RPC (`jsonrpc`), XML-RPC (`xmlrpc`) and form bodies.

pub mod decide;
pub mod jsonrpc;
pub(crate) mod method;
pub mod model;
pub mod odoo;
pub mod outcome;
pub mod path;
pub(crate) mod prefix;
pub mod rpc;
pub(crate) mod tenant;
pub mod xmlrpc;

/// Whether `target` is safe as a redirect target: a path on this origin (`/x`), never
/// a scheme-relative (`//evil`), backslash (`/\evil`) or absolute URL, and free of
/// control characters and spaces.
pub fn is_local_path(target: &str) -> bool {
    let bytes = target.as_bytes();
    bytes.first() == Some(&b'/')
        && bytes.get(1) != Some(&b'/')
        && !bytes
            .iter()
            .any(|&b| b == b'\\' || b <= b' ' || b == 0x7f || b >= 0x80)
        && target.len() <= 2048
}

#[cfg(test)]
mod tests {
    use super::is_local_path;

    #[test]
    fn only_same_origin_paths_are_local() {
        for ok in ["/", "/accounts/login/", "/a?next=/b", "/x#frag"] {
            assert!(is_local_path(ok), "{ok}");
        }
        for bad in [
            "",
            "//evil",
            "//evil.com/x",
            "/\\evil",
            "\\\\evil",
            "https://evil",
            "evil",
            "/\tx",
            "/ x",
            "/\u{e9}",
            "javascript:alert(1)",
        ] {
            assert!(!is_local_path(bad), "{bad:?}");
        }
    }
}
