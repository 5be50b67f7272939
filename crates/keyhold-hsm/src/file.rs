//! The key-file root key: 32 random bytes in a file readable only by its owner.

use std::io::Write;
use std::path::Path;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use keyhold_core::secret::{random_bytes, SecretBytes};
use zeroize::Zeroizing;

use crate::{HsmError, RootKey};

const FORMAT: u8 = 0x01;
const TAG_LEN: usize = 16;

/// A root key read from a file. The AES key lives inside aws-lc, which clears it on drop.
pub struct FileRootKey {
    /// The AES-256-GCM key made from the file's 32 bytes.
    key: LessSafeKey,
}

impl std::fmt::Debug for FileRootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileRootKey([REDACTED])")
    }
}

impl FileRootKey {
    /// Creates a new random root key at `path` (mode 0600). Refuses to overwrite a file.
    pub fn create(path: &Path) -> Result<Self, HsmError> {
        let io = |source| HsmError::Io {
            path: path.display().to_string(),
            source,
        };
        let bytes = SecretBytes::random(32).map_err(|_| HsmError::Crypto("rng"))?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(io)?;
        f.write_all(bytes.expose_secret()).map_err(io)?;
        f.sync_all().map_err(io)?;
        Self::from_bytes(bytes.expose_secret())
    }

    /// Loads the root key at `path`.
    pub fn load(path: &Path) -> Result<Self, HsmError> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| HsmError::Io {
            path: path.display().to_string(),
            source,
        })?);
        if bytes.len() != 32 {
            return Err(HsmError::Malformed(path.display().to_string()));
        }
        Self::from_bytes(&bytes)
    }

    /// A root key from raw bytes (tests and ephemeral dev servers).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, HsmError> {
        let unbound =
            UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| HsmError::Crypto("aes key"))?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
        })
    }

    /// A fresh random root key held only in memory.
    pub fn ephemeral() -> Result<Self, HsmError> {
        let bytes = SecretBytes::random(32).map_err(|_| HsmError::Crypto("rng"))?;
        Self::from_bytes(bytes.expose_secret())
    }
}

impl RootKey for FileRootKey {
    fn wrap(&self, secret: &[u8], label: &[u8]) -> Result<Vec<u8>, HsmError> {
        let nonce_bytes = random_bytes(NONCE_LEN).map_err(|_| HsmError::Crypto("rng"))?;
        let nonce = Nonce::try_assume_unique_for_key(&nonce_bytes)
            .map_err(|_| HsmError::Crypto("nonce"))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + secret.len() + TAG_LEN);
        out.push(FORMAT);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(secret);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(label), &mut out[1 + NONCE_LEN..])
            .map_err(|_| HsmError::Crypto("seal"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    fn unwrap(&self, wrapped: &[u8], label: &[u8]) -> Result<SecretBytes, HsmError> {
        if wrapped.len() < 1 + NONCE_LEN + TAG_LEN || wrapped.first() != Some(&FORMAT) {
            return Err(HsmError::UnwrapFailed);
        }
        let nonce = Nonce::try_assume_unique_for_key(&wrapped[1..1 + NONCE_LEN])
            .map_err(|_| HsmError::UnwrapFailed)?;
        let mut buf = Zeroizing::new(wrapped[1 + NONCE_LEN..].to_vec());
        let n = self
            .key
            .open_in_place(nonce, Aad::from(label), &mut buf)
            .map_err(|_| HsmError::UnwrapFailed)?
            .len();
        buf.truncate(n);
        Ok(SecretBytes::new(std::mem::take(&mut *buf)))
    }

    fn provider(&self) -> &'static str {
        "file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_round_trips_and_binds_label() {
        let rk = FileRootKey::ephemeral().unwrap();
        let w = rk.wrap(b"secret", b"label-a").unwrap();
        assert!(!w.windows(6).any(|x| x == b"secret"));
        assert_eq!(
            rk.unwrap(&w, b"label-a").unwrap().expose_secret(),
            b"secret"
        );
        assert!(rk.unwrap(&w, b"label-b").is_err());
        let other = FileRootKey::ephemeral().unwrap();
        assert!(other.unwrap(&w, b"label-a").is_err());
        assert!(rk.unwrap(&w[..10], b"label-a").is_err());
    }

    #[test]
    fn created_file_is_private_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        let rk = FileRootKey::create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let w = rk.wrap(b"x", b"l").unwrap();
        let again = FileRootKey::load(&path).unwrap();
        assert_eq!(again.unwrap(&w, b"l").unwrap().expose_secret(), b"x");
        assert!(FileRootKey::create(&path).is_err(), "must not overwrite");
    }

    #[test]
    fn malformed_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(
            FileRootKey::load(&path),
            Err(HsmError::Malformed(_))
        ));
    }
}
