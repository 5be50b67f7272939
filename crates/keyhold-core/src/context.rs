//! Encryption context: a string map bound to ciphertext as authenticated data.

use std::collections::BTreeMap;

/// An encryption context. Ordered, so its canonical encoding does not depend on the order
/// in which a client sent the pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncryptionContext(BTreeMap<String, String>);

impl EncryptionContext {
    /// Builds a context from pairs.
    pub fn new(map: BTreeMap<String, String>) -> Self {
        Self(map)
    }

    /// Builds a context from string pairs (a later pair replaces an earlier one of the same
    /// key).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Self(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// The pairs, in key order.
    pub fn pairs(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// The canonical encoding fed to the AEAD: a pair count, then for each pair in key order the
    /// length-prefixed UTF-8 key and value (lengths are big-endian u32).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.0.len() * 16);
        out.extend_from_slice(&(self.0.len() as u32).to_be_bytes());
        for (k, v) in &self.0 {
            out.extend_from_slice(&(k.len() as u32).to_be_bytes());
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
        EncryptionContext::from_pairs(pairs)
    }

    #[test]
    fn order_of_pairs_does_not_change_encoding() {
        assert_eq!(
            ctx(&[("a", "1"), ("b", "2")]).canonical_bytes(),
            ctx(&[("b", "2"), ("a", "1")]).canonical_bytes()
        );
    }

    #[test]
    fn boundaries_are_unambiguous() {
        assert_ne!(
            ctx(&[("ab", "c")]).canonical_bytes(),
            ctx(&[("a", "bc")]).canonical_bytes()
        );
    }

    #[test]
    fn empty_context_encodes_as_zero_count() {
        assert_eq!(
            EncryptionContext::default().canonical_bytes(),
            vec![0, 0, 0, 0]
        );
    }
}
