//! The feature map's Odoo side: model patterns (`mrp.*`, `quality.check`) mapped to
//! features, matched on dot boundaries, the most specific pattern winning.
//!
//! `mrp.*` covers `mrp.production` and `mrp.bom.line`, never `mrpx.order` nor `mrp`
//! itself; `quality.check` covers that model alone. Of the patterns that match, an
//! exact name beats any wildcard, and a longer wildcard beats a shorter one. A rule's
//! `methods` (RPC method names: `create`, `write`, `unlink`, …) narrow it to those
//! methods; a call of another method falls to the next most specific rule.

use std::sync::Arc;

/// One model pattern: an exact model name, or `prefix.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelPattern {
    /// `quality.check`: this model only.
    Exact(String),
    /// `mrp.*`: every model whose name starts with `mrp.` (stored without the `*`).
    Prefix(String),
}

impl ModelPattern {
    /// Parses `mrp.*` or `quality.check`: dot-separated segments of letters, digits
    /// and `_`, a trailing `.*` making it a prefix. `None` for anything else.
    pub fn parse(text: &str) -> Option<ModelPattern> {
        let (name, prefix) = match text.strip_suffix(".*") {
            Some(name) => (name, true),
            None => (text, false),
        };
        let segment_ok =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if name.is_empty() || name.len() > 200 || !name.split('.').all(segment_ok) {
            return None;
        }
        Some(if prefix {
            ModelPattern::Prefix(format!("{name}."))
        } else {
            ModelPattern::Exact(name.to_string())
        })
    }

    /// Whether `model` is covered.
    pub fn matches(&self, model: &str) -> bool {
        match self {
            ModelPattern::Exact(name) => model == name,
            ModelPattern::Prefix(prefix) => {
                model.len() > prefix.len() && model.starts_with(prefix.as_str())
            }
        }
    }

    /// How specific the pattern is: exact names above every prefix, longer prefixes
    /// above shorter ones.
    fn rank(&self) -> (bool, usize) {
        match self {
            ModelPattern::Exact(name) => (true, name.len()),
            ModelPattern::Prefix(prefix) => (false, prefix.len()),
        }
    }
}

/// One `[[features]]` entry's model side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRule {
    pub pattern: ModelPattern,
    pub feature: Arc<str>,
    /// Only these RPC methods need the feature; `None` = all.
    pub methods: Option<Vec<String>>,
    /// Forward even when the feature is missing (the denial is logged and counted).
    pub shadow: bool,
}

impl ModelRule {
    fn applies(&self, model: &str, method: &str) -> bool {
        self.pattern.matches(model)
            && self
                .methods
                .as_ref()
                .is_none_or(|m| m.iter().any(|x| x == method))
    }
}

/// Every model rule, most specific first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelMap {
    rules: Vec<ModelRule>,
}

impl ModelMap {
    /// The map of `rules` (any order).
    pub fn new(mut rules: Vec<ModelRule>) -> ModelMap {
        // Stable: rules of equal rank keep the file's order.
        rules.sort_by_key(|r| std::cmp::Reverse(r.pattern.rank()));
        ModelMap { rules }
    }

    /// Whether there are model rules at all (RPC bodies are inspected only then).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule governing a call of RPC `method` on `model`: the most specific one
    /// whose pattern covers the model and whose methods include the method.
    pub fn rule_for(&self, model: &str, method: &str) -> Option<&ModelRule> {
        self.rules.iter().find(|r| r.applies(model, method))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str, feature: &str, methods: Option<&[&str]>) -> ModelRule {
        ModelRule {
            pattern: ModelPattern::parse(pattern).unwrap(),
            feature: feature.into(),
            methods: methods.map(|m| m.iter().map(|s| s.to_string()).collect()),
            shadow: false,
        }
    }

    #[test]
    fn patterns_match_on_dot_boundaries() {
        let p = ModelPattern::parse("mrp.*").unwrap();
        for yes in ["mrp.production", "mrp.bom.line"] {
            assert!(p.matches(yes), "{yes}");
        }
        for no in [
            "mrpx.order",
            "mrp",
            "mrp.",
            "xmrp.production",
            "MRP.production",
        ] {
            assert!(!p.matches(no), "{no}");
        }
        assert!(ModelPattern::parse("quality.check")
            .unwrap()
            .matches("quality.check"));
        assert!(!ModelPattern::parse("quality.check")
            .unwrap()
            .matches("quality.check.line"));
        for bad in [
            "", "*", ".*", "mrp.", "mrp..x", "mrp.*.x", "mrp*", "a b", "mrp.**",
        ] {
            assert_eq!(ModelPattern::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_most_specific_rule_wins_and_methods_narrow_it() {
        let map = ModelMap::new(vec![
            rule("mrp.*", "manufacturing", None),
            rule("mrp.bom.*", "bom", None),
            rule("mrp.bom.line", "bom_lines", Some(&["write", "create"])),
        ]);
        let feature = |model: &str, method: &str| map.rule_for(model, method).map(|r| &*r.feature);
        assert_eq!(feature("mrp.production", "read"), Some("manufacturing"));
        assert_eq!(feature("mrp.bom", "read"), Some("manufacturing"));
        assert_eq!(feature("mrp.bom.x", "read"), Some("bom"));
        assert_eq!(feature("mrp.bom.line", "write"), Some("bom_lines"));
        assert_eq!(
            feature("mrp.bom.line", "read"),
            Some("bom"),
            "falls to the next rule"
        );
        assert_eq!(feature("res.partner", "read"), None);
        assert!(!map.is_empty());
    }
}
