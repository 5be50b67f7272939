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
    /// constraint.
    pub fn allows(&self, ctx: Option<&EncryptionContext>) -> bool {
        let empty = BTreeMap::new();
        let request = ctx.map(|c| c.pairs()).unwrap_or(&empty);
        match self {
            Self::Subset(sub) => sub.iter().all(|(k, v)| request.get(k) == Some(v)),
            Self::Equals(eq) => eq == request,
            Self::Unreadable(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
        EncryptionContext::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
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
