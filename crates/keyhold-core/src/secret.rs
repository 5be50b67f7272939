//! Secret bytes: zeroized on drop, never printed.

use zeroize::Zeroizing;

/// Secret bytes (key material, data keys, credentials). There is no `Debug` that shows the
/// bytes, and reading them takes an explicit [`SecretBytes::expose_secret`].
#[derive(Clone)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Wraps bytes that are secret; the vector is zeroized when this value drops.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Fresh random secret bytes from the system CSPRNG.
    pub fn random(len: usize) -> Result<Self, crate::CoreError> {
        let mut v = Zeroizing::new(vec![0u8; len]);
        aws_lc_rs::rand::fill(&mut v).map_err(|_| crate::CoreError::Crypto("rng"))?;
        Ok(Self(v))
    }

    /// The secret bytes themselves. Callers must not log or persist them unwrapped.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBytes([REDACTED; {}])", self.0.len())
    }
}

/// Fills a fresh vector with random bytes (for non-secret values such as nonces).
pub fn random_bytes(len: usize) -> Result<Vec<u8>, crate::CoreError> {
    let mut v = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut v).map_err(|_| crate::CoreError::Crypto("rng"))?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secret_bytes() {
        let s = SecretBytes::new(vec![0x41; 8]);
        let shown = format!("{s:?}");
        assert!(!shown.contains("65"), "{shown}");
        assert!(shown.contains("REDACTED"));
    }

    #[test]
    fn random_secrets_differ() {
        let a = SecretBytes::random(32).unwrap();
        let b = SecretBytes::random(32).unwrap();
        assert_ne!(a.expose_secret(), b.expose_secret());
    }
}
