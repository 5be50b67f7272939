//! keyhold-hsm: the root of trust.
//!
//! # Layout
//! - [`RootKey`]: the one trait every root-key provider implements: wrap and unwrap secrets.
//! - [`mod@file`]: the key-file provider (32 random bytes in a 0600 file).
//! - [`passphrase`]: a key derived from an operator passphrase with Argon2id.
//! - [`pkcs11`]: a non-extractable AES-256 key in an HSM token (PKCS#11).
//!
//! Every secret keyhold stores (key material, principals' secret keys) is wrapped by the root
//! key with AES-256-GCM and an associated-data label that binds it to its place, so a wrapped
//! value moved to another row does not unwrap.
#![forbid(unsafe_code)]

pub mod file;
pub mod passphrase;
pub mod pkcs11;

use keyhold_core::secret::SecretBytes;

pub use file::FileRootKey;
pub use passphrase::{PassphraseParams, PassphraseRootKey};
pub use pkcs11::{Pkcs11Config, Pkcs11RootKey, Pkcs11Token};

/// Errors of the root-of-trust layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    /// A wrapped secret did not authenticate under this root key (wrong key, or tampered).
    #[error("wrapped secret failed to authenticate under the root key")]
    UnwrapFailed,
    /// The root key file could not be read or written.
    #[error("root key file {path}: {source}")]
    Io {
        /// The file at fault.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The root key file exists but is not a valid root key.
    #[error("root key file {0} is malformed (expected 32 bytes)")]
    Malformed(String),
    /// The HSM is missing, refused, or failed.
    #[error("HSM: {0}")]
    Hsm(String),
    /// No token with this label in the PKCS#11 module.
    #[error("HSM: no HSM token labelled {0:?}")]
    NoToken(String),
    /// The token refused the PIN.
    #[error("HSM: the HSM refused the PIN")]
    WrongPin,
    /// The token holds no key with this label.
    #[error("HSM: the token has no key labelled {0:?}")]
    NoKey(String),
    /// The passphrase does not open this data dir.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// A new passphrase is too short.
    #[error("the passphrase must be at least 12 characters")]
    WeakPassphrase,
    /// A primitive failed.
    #[error("cryptographic failure: {0}")]
    Crypto(&'static str),
}

/// The root of trust: wraps and unwraps every secret that keyhold stores.
pub trait RootKey: Send + Sync {
    /// Encrypts `secret`, binding it to `label` (authenticated, not stored).
    fn wrap(&self, secret: &[u8], label: &[u8]) -> Result<Vec<u8>, HsmError>;
    /// Decrypts a value made by [`RootKey::wrap`] with the same label.
    fn unwrap(&self, wrapped: &[u8], label: &[u8]) -> Result<SecretBytes, HsmError>;
    /// A short name of the provider, for start-up messages (`file`, `passphrase`, `pkcs11`).
    fn provider(&self) -> &'static str;
}
