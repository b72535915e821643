//! Longest-prefix matching of normalized paths on segment boundaries: `/api/sales`
//! matches `/api/sales`, `/api/sales/` and `/api/sales/x`, never `/api/salesforce`.
//!
//! A trie keyed by path segment: a lookup costs one hash probe per segment of the
//! request path, whatever the number of prefixes, and allocates nothing. Segments are
//! hashed with foldhash: the table holds only configured prefixes, so a request can at
//! worst pick a segment that collides with one of them, which costs one comparison.

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Prefixes mapped to values; several values may share a prefix.
#[derive(Debug, Clone)]
pub(crate) struct PrefixTrie<T> {
    nodes: Vec<Node<T>>,
}

#[derive(Debug, Clone)]
struct Node<T> {
    children: HashMap<Box<str>, usize>,
    values: Vec<T>,
}

impl<T> Default for PrefixTrie<T> {
    fn default() -> Self {
        PrefixTrie {
            nodes: vec![Node {
                children: HashMap::default(),
                values: Vec::new(),
            }],
        }
    }
}

/// The segments of a path (`/a//b/` → `a`, `b`).
fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

impl<T> PrefixTrie<T> {
    /// Adds `value` under `prefix` (a path; trailing slash irrelevant: `/a/` = `/a`).
    pub(crate) fn insert(&mut self, prefix: &str, value: T) {
        let mut node = 0;
        for segment in segments(prefix) {
            node = match self.nodes[node].children.get(segment) {
                Some(&next) => next,
                None => {
                    self.nodes.push(Node {
                        children: HashMap::default(),
                        values: Vec::new(),
                    });
                    let next = self.nodes.len() - 1;
                    self.nodes[node].children.insert(segment.into(), next);
                    next
                }
            };
        }
        self.nodes[node].values.push(value);
    }

    /// The value under the longest prefix of `path` for which `accept` holds (values
    /// under one prefix are tried in insertion order).
    pub(crate) fn longest_match(&self, path: &str, accept: impl Fn(&T) -> bool) -> Option<&T> {
        let mut best = self.nodes[0].values.iter().find(|v| accept(v));
        let mut node = 0;
        for segment in segments(path) {
            match self.nodes[node].children.get(segment) {
                Some(&next) => node = next,
                None => break,
            }
            if let Some(v) = self.nodes[node].values.iter().find(|v| accept(v)) {
                best = Some(v);
            }
        }
        best
    }

    /// Like [`longest_match`](Self::longest_match), and a segment of `path` that no
    /// prefix names but whose part before a `.` does (`manufacturing.json`,
    /// `manufacturing.csv` for `manufacturing`) also matches that prefix, for the values
    /// `accept_suffixed` accepts; the walk ends at such a segment (an exact name always
    /// wins over a stem).
    pub(crate) fn longest_match_suffixed(
        &self,
        path: &str,
        accept: impl Fn(&T) -> bool,
        accept_suffixed: impl Fn(&T) -> bool,
    ) -> Option<&T> {
        let mut best = self.nodes[0].values.iter().find(|v| accept(v));
        let mut node = 0;
        for segment in segments(path) {
            let children = &self.nodes[node].children;
            if let Some(&next) = children.get(segment) {
                node = next;
                if let Some(v) = self.nodes[node].values.iter().find(|v| accept(v)) {
                    best = Some(v);
                }
                continue;
            }
            // The longest stem first: `v1.2.json` tries `v1.2`, then `v1`.
            let mut stem = segment;
            while let Some(dot) = stem.rfind('.') {
                stem = &stem[..dot];
                if let Some(&next) = children.get(stem) {
                    let values = &self.nodes[next].values;
                    if let Some(v) = values.iter().find(|v| accept(v) && accept_suffixed(v)) {
                        best = Some(v);
                    }
                    break;
                }
            }
            break;
        }
        best
    }

    /// Whether some prefix of `path` holds a value.
    pub(crate) fn matches(&self, path: &str) -> bool {
        self.longest_match(path, |_| true).is_some()
    }

    /// Number of distinct prefixes with values.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.nodes.iter().filter(|n| !n.values.is_empty()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_on_segment_boundaries_only() {
        let mut t = PrefixTrie::default();
        t.insert("/api/sales", "sales");
        for hit in [
            "/api/sales",
            "/api/sales/",
            "/api/sales/x",
            "/api/sales/x/y",
        ] {
            assert_eq!(t.longest_match(hit, |_| true), Some(&"sales"), "{hit}");
        }
        for miss in [
            "/api/salesforce",
            "/api/sale",
            "/api",
            "/",
            "/API/sales",
            "/x/api/sales",
        ] {
            assert_eq!(t.longest_match(miss, |_| true), None, "{miss}");
        }
    }

    #[test]
    fn the_longest_prefix_wins_and_filters_apply() {
        let mut t = PrefixTrie::default();
        t.insert("/api/", "api");
        t.insert("/api/reports/", "reports");
        t.insert("/api/reports/export", "export-post");
        assert_eq!(
            t.longest_match("/api/reports/2024", |_| true),
            Some(&"reports")
        );
        assert_eq!(
            t.longest_match("/api/reports/export/x", |_| true),
            Some(&"export-post")
        );
        assert_eq!(
            t.longest_match("/api/reports/export", |v| *v != "export-post"),
            Some(&"reports"),
            "a filtered-out longer prefix falls back to the next one"
        );
        assert_eq!(t.longest_match("/api/other", |_| true), Some(&"api"));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn a_format_suffix_on_a_segment_matches_its_stem() {
        let mut t = PrefixTrie::default();
        t.insert("/api/manufacturing/", "mfg");
        t.insert("/api/v1.2", "v12");
        t.insert("/api/raw", "raw");
        let all = |_: &&str| true;
        let suffixed = |v: &&str| *v != "raw";
        for hit in [
            "/api/manufacturing.json",
            "/api/manufacturing.json/",
            "/api/manufacturing.csv/x",
            "/api/manufacturing.tar.gz",
            "/api/manufacturing.",
        ] {
            assert_eq!(
                t.longest_match_suffixed(hit, all, suffixed),
                Some(&"mfg"),
                "{hit}"
            );
        }
        assert_eq!(
            t.longest_match_suffixed("/api/v1.2.json", all, suffixed),
            Some(&"v12")
        );
        assert_eq!(
            t.longest_match_suffixed("/api/raw.json", all, suffixed),
            None
        );
        assert_eq!(
            t.longest_match_suffixed("/api/raw/x.json", all, suffixed),
            Some(&"raw")
        );
        for miss in [
            "/api/manufacturingx.json",
            "/api.json/manufacturing",
            "/api/.json",
        ] {
            assert_eq!(
                t.longest_match_suffixed(miss, all, suffixed),
                None,
                "{miss}"
            );
        }
    }

    #[test]
    fn the_root_prefix_matches_everything() {
        let mut t = PrefixTrie::default();
        t.insert("/", "all");
        assert!(t.matches("/"));
        assert!(t.matches("/anything/at/all"));
    }
}
