//! Grant constraints: the encryption context a grant requires, as stored and held.

use std::collections::BTreeMap;

use crate::context::EncryptionContext;

/// The encryption context constraint of a grant. Parsed once, when a grant is read from the
/// store; a stored constraint that cannot be read allows nothing (it never becomes "no
/// constraint").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantConstraint {
    /// The request's context must contain these pairs (`EncryptionContextSubset`).
    Subset(BTreeMap<String, String>),
    /// The request's context must be exactly these pairs (`EncryptionContextEquals`).
    Equals(BTreeMap<String, String>),
    /// A stored constraint that could not be read, kept as stored so that a backup carries it
    /// unchanged. It allows no request.
    Unreadable(String),
}

/// The stored JSON shape: AWS's `GrantConstraints` with exactly one member.
#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
enum Stored {
    /// `{"EncryptionContextSubset": {...}}`.
    EncryptionContextSubset(BTreeMap<String, String>),
    /// `{"EncryptionContextEquals": {...}}`.
    EncryptionContextEquals(BTreeMap<String, String>),
}

impl GrantConstraint {
    /// Reads a stored constraint (`{"EncryptionContextSubset": {...}}` or
    /// `{"EncryptionContextEquals": {...}}`); anything else is [`GrantConstraint::Unreadable`].
    pub fn from_json(stored: &str) -> Self {
        match serde_json::from_str::<Stored>(stored) {
            Ok(Stored::EncryptionContextSubset(m)) => Self::Subset(m),
            Ok(Stored::EncryptionContextEquals(m)) => Self::Equals(m),
            Err(_) => Self::Unreadable(stored.to_string()),
        }
    }

    /// The stored form (an unreadable constraint as it was stored).
    pub fn to_json(&self) -> String {
        let stored = match self {
            Self::Subset(m) => Stored::EncryptionContextSubset(m.clone()),
            Self::Equals(m) => Stored::EncryptionContextEquals(m.clone()),
            Self::Unreadable(s) => return s.clone(),
        };
        serde_json::to_string(&stored).unwrap_or_default()
    }

    /// True when a request with encryption context `ctx` (none: the empty context) meets the
    /// constraint. As in AWS KMS, constraint keys compare case-insensitively and values
    /// case-sensitively.
    pub fn allows(&self, ctx: Option<&EncryptionContext>) -> bool {
        let empty = BTreeMap::new();
        let request = ctx.map(|c| c.pairs()).unwrap_or(&empty);
        match self {
            Self::Subset(sub) => contains_all(request, sub),
            Self::Equals(eq) => same_pairs(request, eq),
            Self::Unreadable(_) => false,
        }
    }

    /// True when this constraint allows no context that `parent` does not: a grant made
    /// through a grant must be equally strict or stricter than its parent.
    pub fn within(&self, parent: &GrantConstraint) -> bool {
        match (self, parent) {
            (Self::Unreadable(_), _) | (_, Self::Unreadable(_)) => false,
            // Every context the child allows holds the parent's pairs.
            (Self::Subset(c) | Self::Equals(c), Self::Subset(p)) => contains_all(c, p),
            // Only the very same pairs are as strict as an exact match.
            (Self::Equals(c), Self::Equals(p)) => same_pairs(c, p),
            (Self::Subset(_), Self::Equals(_)) => false,
        }
    }
}

/// True when `a` and `b` name the same key case-insensitively.
fn same_key(a: &str, b: &str) -> bool {
    a == b || a.to_lowercase() == b.to_lowercase()
}

/// True when every pair of `wanted` is in `have` (keys case-insensitive, values exact).
fn contains_all(have: &BTreeMap<String, String>, wanted: &BTreeMap<String, String>) -> bool {
    wanted
        .iter()
        .all(|(k, v)| have.iter().any(|(hk, hv)| hv == v && same_key(hk, k)))
}

/// True when `a` and `b` hold the same pairs (keys case-insensitive, values exact).
fn same_pairs(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
    a.len() == b.len() && contains_all(a, b) && contains_all(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
        EncryptionContext::from_pairs(pairs)
    }

    #[test]
    fn stored_constraints_round_trip() {
        for s in [
            r#"{"EncryptionContextSubset":{"a":"b"}}"#,
            r#"{"EncryptionContextEquals":{"a":"b","c":"d"}}"#,
            r#"{"EncryptionContextSubset":{}}"#,
        ] {
            let c = GrantConstraint::from_json(s);
            assert!(!matches!(c, GrantConstraint::Unreadable(_)), "{s}");
            assert_eq!(c.to_json(), s);
        }
    }

    #[test]
    fn subset_and_equals_check_the_context() {
        let sub = GrantConstraint::from_json(r#"{"EncryptionContextSubset":{"a":"b"}}"#);
        assert!(sub.allows(Some(&ctx(&[("a", "b"), ("c", "d")]))));
        assert!(!sub.allows(Some(&ctx(&[("a", "x")]))));
        assert!(!sub.allows(None));
        let eq = GrantConstraint::from_json(r#"{"EncryptionContextEquals":{"a":"b"}}"#);
        assert!(eq.allows(Some(&ctx(&[("a", "b")]))));
        assert!(!eq.allows(Some(&ctx(&[("a", "b"), ("c", "d")]))));
    }

    #[test]
    fn keys_compare_case_insensitively_and_values_exactly() {
        let sub = GrantConstraint::Subset([("Repo".to_string(), "r-1".to_string())].into());
        assert!(sub.allows(Some(&ctx(&[("repo", "r-1")]))));
        assert!(sub.allows(Some(&ctx(&[("REPO", "r-1"), ("x", "y")]))));
        assert!(!sub.allows(Some(&ctx(&[("repo", "R-1")]))));
        let eq = GrantConstraint::Equals([("Repo".to_string(), "r-1".to_string())].into());
        assert!(eq.allows(Some(&ctx(&[("rEpO", "r-1")]))));
        assert!(!eq.allows(Some(&ctx(&[("repo", "r-1"), ("x", "y")]))));
    }

    #[test]
    fn a_child_constraint_must_be_as_strict_as_its_parent() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let parent_sub = GrantConstraint::Subset(map(&[("repo", "r-1")]));
        let parent_eq = GrantConstraint::Equals(map(&[("repo", "r-1")]));
        let cases = [
            (
                GrantConstraint::Subset(map(&[("repo", "r-1")])),
                &parent_sub,
                true,
            ),
            (
                GrantConstraint::Subset(map(&[("REPO", "r-1"), ("x", "y")])),
                &parent_sub,
                true,
            ),
            (
                GrantConstraint::Equals(map(&[("repo", "r-1"), ("x", "y")])),
                &parent_sub,
                true,
            ),
            (
                GrantConstraint::Subset(map(&[("repo", "R-1")])),
                &parent_sub,
                false,
            ),
            (
                GrantConstraint::Subset(map(&[("x", "y")])),
                &parent_sub,
                false,
            ),
            (GrantConstraint::Subset(BTreeMap::new()), &parent_sub, false),
            (
                GrantConstraint::Equals(map(&[("Repo", "r-1")])),
                &parent_eq,
                true,
            ),
            (
                GrantConstraint::Equals(map(&[("repo", "r-1"), ("x", "y")])),
                &parent_eq,
                false,
            ),
            (
                GrantConstraint::Subset(map(&[("repo", "r-1")])),
                &parent_eq,
                false,
            ),
            (GrantConstraint::Unreadable("{".into()), &parent_sub, false),
        ];
        for (child, parent, ok) in cases {
            assert_eq!(child.within(parent), ok, "{child:?} within {parent:?}");
        }
        let bad_parent = GrantConstraint::Unreadable("{".into());
        assert!(!parent_sub.within(&bad_parent));
    }

    #[test]
    fn an_unreadable_constraint_allows_nothing() {
        for s in [
            "",
            "not json",
            "{}",
            "null",
            r#"{"EncryptionContextSubset":{"a":1}}"#,
            r#"{"EncryptionContextSubset":{"a":"b"},"EncryptionContextEquals":{"a":"b"}}"#,
            r#"{"EncryptionContextSubsett":{"a":"b"}}"#,
            r#"{"EncryptionContextSubset":{"a":"b"},"Extra":1}"#,
        ] {
            let c = GrantConstraint::from_json(s);
            assert_eq!(c, GrantConstraint::Unreadable(s.to_string()), "{s}");
            assert!(!c.allows(None), "{s}");
            assert!(!c.allows(Some(&ctx(&[("a", "b")]))), "{s}");
            assert_eq!(c.to_json(), s);
        }
    }
}
