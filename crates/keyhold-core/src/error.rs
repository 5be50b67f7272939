//! Errors of the pure domain layer.

/// Everything that can go wrong in keyhold-core.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoreError {
    /// A ciphertext blob failed to parse or authenticate. Deliberately carries no reason:
    /// every decryption failure looks the same to a caller.
    #[error("the ciphertext is invalid")]
    InvalidCiphertext,
    /// A key id that is not a UUID.
    #[error("invalid key id {0:?}")]
    InvalidKeyId(String),
    /// A string that claims to be an ARN but is not well formed.
    #[error("invalid ARN {0:?}")]
    InvalidArn(String),
    /// An alias name that breaks the naming rules.
    #[error("{0}")]
    InvalidAliasName(String),
    /// The random number generator or a primitive failed; should never happen.
    #[error("cryptographic primitive failure: {0}")]
    Crypto(&'static str),
}
