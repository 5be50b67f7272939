//! keyhold-sigv4: AWS Signature Version 4, verified and made, for any service.
//!
//! The service name and region a request must be scoped to are parameters, so the KMS front
//! door (`kms`), the S3 gateway (`s3`) and the load generator share one implementation.
//! Verification rebuilds the canonical request from what arrived (method, path, query, the
//! signed headers, the SHA-256 of the body actually received), derives the signing key from
//! the secret the caller's lookup returns, and compares signatures in constant time.
//!
//! # Layout
//! - [`canonical`]: the canonical request, percent-encoding, SHA-256 and the signing key.
//! - [`date`]: `X-Amz-Date` (`YYYYMMDDTHHMMSSZ`) to and from seconds since the epoch.
//! - [`verify()`]: parses the `Authorization` header ([`parse_authorization`]) and checks a
//!   request; refuses ambiguous requests (two `Authorization` headers, a repeated element) and
//!   session tokens, which keyhold never issues.
//! - [`sign`]: the [`Signer`] that keyhold's own clients (`keyhold bench`, tests) sign with.
#![forbid(unsafe_code)]

pub mod canonical;
pub mod date;
pub mod sign;
mod verify;

pub use canonical::{canonical_request, sha256_hex, signing_key, PathEncoding};
pub use date::{format_amz_date, parse_amz_date};
pub use sign::Signer;
pub use verify::{
    claimed_access_key_id, claimed_region, parse_authorization, verify, AuthHeader, SignedRequest,
};

/// The only algorithm SigV4 defines.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far a request's `x-amz-date` may be from the server's clock.
pub const MAX_SKEW_SECS: i64 = 15 * 60;

/// What a request must be scoped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope<'a> {
    /// The service name in the credential scope (`kms`, `s3`).
    pub service: &'a str,
    /// The region in the credential scope.
    pub region: &'a str,
}

/// Why a request's signature was refused. Each kind maps to one AWS error name; messages name
/// what was wrong and never a secret. `E` is the error of the caller's credential lookup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error<E> {
    /// No `Authorization` header (`MissingAuthenticationTokenException`).
    #[error("Missing Authentication Token")]
    Missing,
    /// The `Authorization` header or a header it needs is malformed or ambiguous
    /// (`IncompleteSignatureException`).
    #[error("{0}")]
    Incomplete(String),
    /// The signature, date or scope does not match (`InvalidSignatureException`).
    #[error("{0}")]
    Invalid(String),
    /// The access key id is not known, or the request carries a session token keyhold never
    /// issued (`UnrecognizedClientException`).
    #[error("{0}")]
    UnrecognizedClient(String),
    /// The credential lookup failed.
    #[error("credential lookup failed")]
    Lookup(E),
}

pub(crate) fn incomplete<E>(msg: impl Into<String>) -> Error<E> {
    Error::Incomplete(msg.into())
}

pub(crate) fn invalid<E>(msg: impl Into<String>) -> Error<E> {
    Error::Invalid(msg.into())
}
