//! keyhold-core: the pure domain of keyhold. No I/O, no async.
//!
//! # Layout
//! - [`ids`]: key ids, account ids, alias names and ARNs, parsed once at the edge.
//! - [`key`]: key specs, usages, origins, states and the legal state transitions.
//! - [`secret`]: secret byte newtypes that zeroize on drop and never print.
//! - [`context`]: encryption context and its canonical (authenticated) encoding.
//! - [`asym`]: RSA, ECC, Ed25519, ML-DSA and HMAC key material: sign, verify, OAEP, HMAC, ECDH.
//! - [`blob`]: the versioned ciphertext blob format (HKDF per-message keys, AES-256-GCM).
//! - [`import`]: unwrapping bring-your-own-key material (RSA OAEP, RSA + AES key wrap).
//! - [`grant`]: grant constraints (the encryption context a grant requires).
//! - [`policy`]: key policies: parsing and evaluation of the IAM policy language.
//! - [`ffi`]: the one unsafe module: Ed25519ph through AWS-LC directly.
//! - [`error`]: the crate's error enum.
#![deny(unsafe_code)]

pub mod asym;
pub mod blob;
pub mod context;
pub mod docs;
pub mod error;
pub mod ffi;
pub mod grant;
pub mod ids;
pub mod import;
pub mod key;
pub mod policy;
pub mod secret;

pub use error::CoreError;
