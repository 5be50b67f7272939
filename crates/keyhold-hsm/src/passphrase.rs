//! The passphrase root key: an AES-256 key derived from an operator passphrase with Argon2id.
//! Nothing secret is stored: the data dir keeps only the salt, the Argon2 costs and a check
//! value (a known string wrapped under the derived key) that tells a wrong passphrase apart
//! before anything is served.

use argon2::{Algorithm, Argon2, Params, Version};
use keyhold_core::secret::SecretBytes;
use zeroize::Zeroizing;

use crate::file::FileRootKey;
use crate::{HsmError, RootKey};

const CHECK_LABEL: &[u8] = b"keyhold:passphrase-check";
const CHECK_VALUE: &[u8] = b"keyhold root key check";

/// What the data dir keeps about a passphrase root key (no secret).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct PassphraseParams {
    /// Argon2 salt, hex.
    pub salt: String,
    /// Argon2 memory cost in KiB.
    pub m_cost: u32,
    /// Argon2 iterations.
    pub t_cost: u32,
    /// Argon2 parallelism.
    pub p_cost: u32,
    /// The check value, wrapped under the derived key, hex.
    pub check: String,
}

/// A root key derived from a passphrase.
pub struct PassphraseRootKey {
    /// The derived key, used as a key-file root key.
    inner: FileRootKey,
}

impl std::fmt::Debug for PassphraseRootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PassphraseRootKey([REDACTED])")
    }
}

fn derive(passphrase: &[u8], salt: &[u8], m: u32, t: u32, p: u32) -> Result<FileRootKey, HsmError> {
    let params = Params::new(m, t, p, Some(32)).map_err(|_| HsmError::Crypto("argon2 params"))?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, salt, &mut key[..])
        .map_err(|_| HsmError::Crypto("argon2"))?;
    FileRootKey::from_bytes(&key[..])
}

impl PassphraseRootKey {
    /// Derives a new root key from `passphrase` with a fresh salt.
    pub fn create(passphrase: &[u8]) -> Result<(Self, PassphraseParams), HsmError> {
        if passphrase.len() < 12 {
            return Err(HsmError::WeakPassphrase);
        }
        let salt = SecretBytes::random(16).map_err(|_| HsmError::Crypto("rng"))?;
        let (m, t, p) = (19_456, 2, 1);
        let inner = derive(passphrase, salt.expose_secret(), m, t, p)?;
        let check = inner.wrap(CHECK_VALUE, CHECK_LABEL)?;
        Ok((
            Self { inner },
            PassphraseParams {
                salt: hex::encode(salt.expose_secret()),
                m_cost: m,
                t_cost: t,
                p_cost: p,
                check: hex::encode(check),
            },
        ))
    }

    /// Derives the root key again; a wrong passphrase is refused.
    pub fn open(passphrase: &[u8], params: &PassphraseParams) -> Result<Self, HsmError> {
        let salt = hex::decode(&params.salt).map_err(|_| HsmError::Malformed("salt".into()))?;
        let check = hex::decode(&params.check).map_err(|_| HsmError::Malformed("check".into()))?;
        let inner = derive(
            passphrase,
            &salt,
            params.m_cost,
            params.t_cost,
            params.p_cost,
        )?;
        match inner.unwrap(&check, CHECK_LABEL) {
            Ok(v) if v.expose_secret() == CHECK_VALUE => Ok(Self { inner }),
            _ => Err(HsmError::WrongPassphrase),
        }
    }
}

impl RootKey for PassphraseRootKey {
    fn wrap(&self, secret: &[u8], label: &[u8]) -> Result<Vec<u8>, HsmError> {
        self.inner.wrap(secret, label)
    }

    fn unwrap(&self, wrapped: &[u8], label: &[u8]) -> Result<SecretBytes, HsmError> {
        self.inner.unwrap(wrapped, label)
    }

    fn provider(&self) -> &'static str {
        "passphrase"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_right_passphrase_reopens_and_a_wrong_one_is_refused() {
        let (rk, params) = PassphraseRootKey::create(b"correct horse battery").unwrap();
        let w = rk.wrap(b"secret", b"l").unwrap();
        let again = PassphraseRootKey::open(b"correct horse battery", &params).unwrap();
        assert_eq!(again.unwrap(&w, b"l").unwrap().expose_secret(), b"secret");
        assert!(matches!(
            PassphraseRootKey::open(b"wrong horse battery", &params),
            Err(HsmError::WrongPassphrase)
        ));
        assert!(matches!(
            PassphraseRootKey::create(b"short"),
            Err(HsmError::WeakPassphrase)
        ));
        let shown = format!("{params:?}");
        assert!(!shown.contains("correct"));
    }
}
