//! The ACME server's records as JSON documents under `DATA_DIR/acme/<kind>/<id>.json`
//! (`keyhold_core::docs`): external account bindings, accounts, orders, authorizations and
//! certificates.

use std::path::Path;

use keyhold_core::docs::Docs;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An external account binding: the HMAC key (wrapped under the root key) that lets one ACME
/// account be made, and the names its certificates may carry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Eab {
    /// The key id clients send (`--eab-kid`).
    pub kid: String,
    /// The HMAC key, wrapped (base64).
    pub hmac_wrapped: String,
    /// The keyhold account (AWS account id) it belongs to, for the audit log.
    pub account: String,
    /// Name patterns: `name.example` exactly, `*.example` for any name under it, `*` for any.
    pub allow: Vec<String>,
    /// When it was made, ms since the epoch.
    pub created_ms: i64,
}

/// An ACME account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    /// Its id (the last segment of its URL).
    pub id: String,
    /// Its public key (JWK).
    pub jwk: Value,
    /// `valid` or `deactivated`.
    pub status: String,
    /// Contact URLs.
    #[serde(default)]
    pub contact: Vec<String>,
    /// The external account binding it was made with.
    pub eab_kid: String,
    /// When it was made.
    pub created_ms: i64,
}

/// A challenge of an authorization.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Challenge {
    /// `http-01` or `tls-alpn-01`.
    pub kind: String,
    /// The token.
    pub token: String,
    /// `pending`, `processing`, `valid` or `invalid`.
    pub status: String,
    /// When it was validated.
    #[serde(default)]
    pub validated_ms: Option<i64>,
    /// Why it failed (a problem document).
    #[serde(default)]
    pub error: Option<Value>,
}

/// An authorization for one DNS name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Authz {
    /// Its id.
    pub id: String,
    /// The account it belongs to.
    pub account: String,
    /// The DNS name.
    pub name: String,
    /// `pending`, `valid`, `invalid`, `deactivated`.
    pub status: String,
    /// When it expires.
    pub expires_ms: i64,
    /// Its challenges.
    pub challenges: Vec<Challenge>,
}

/// An order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    /// Its id.
    pub id: String,
    /// The account it belongs to.
    pub account: String,
    /// `pending`, `ready`, `processing`, `valid`, `invalid`.
    pub status: String,
    /// The DNS names, in the order given.
    pub names: Vec<String>,
    /// Authorization ids, one per name.
    pub authorizations: Vec<String>,
    /// When it expires.
    pub expires_ms: i64,
    /// The certificate's serial (hex), once issued.
    #[serde(default)]
    pub certificate: Option<String>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<Value>,
}

/// An issued certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cert {
    /// Serial number, lowercase hex (its id).
    pub serial: String,
    /// The account that ordered it.
    pub account: String,
    /// Its DNS names.
    pub names: Vec<String>,
    /// The chain: the certificate, then the CA's (PEM).
    pub chain_pem: String,
    /// Validity, ms since the epoch.
    pub not_before_ms: i64,
    /// End of validity.
    pub not_after_ms: i64,
    /// Revocation time and reason code.
    #[serde(default)]
    pub revoked: Option<(i64, u8)>,
}

/// The records, one directory per kind (`keyhold_core::docs`).
pub type Store = Docs;

/// The kinds of records.
pub const KINDS: &[&str] = &["eab", "accounts", "keys", "orders", "authz", "certs"];

/// Opens (and makes) the store under `dir`.
pub fn open(dir: &Path) -> std::io::Result<Store> {
    Docs::open(dir, KINDS)
}

/// A new random id (22 url-safe characters).
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut b);
    crate::jws::b64(&b)
}

/// Whether `name` is allowed by one of `patterns`.
pub fn allowed(name: &str, patterns: &[String]) -> bool {
    let name = name.to_ascii_lowercase();
    patterns.iter().any(|p| {
        let p = p.to_ascii_lowercase();
        if p == "*" {
            return true;
        }
        match p.strip_prefix("*.") {
            Some(suffix) => name
                .strip_suffix(suffix)
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            None => name == p,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_allow_exact_names_and_names_under_a_wildcard() {
        let p = vec!["*.internal.example".to_string(), "api.example".to_string()];
        assert!(allowed("svc.internal.example", &p));
        assert!(allowed("a.b.internal.example", &p));
        assert!(allowed("API.example", &p));
        assert!(!allowed("internal.example", &p));
        assert!(!allowed("evilinternal.example", &p));
        assert!(!allowed("www.example", &p));
        assert!(allowed("anything", &["*".to_string()]));
    }

    #[test]
    fn records_round_trip_and_bad_ids_name_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).unwrap();
        let id = new_id();
        assert!(keyhold_core::docs::valid_id(&id));
        s.put("orders", &id, &serde_json::json!({"x": 1})).unwrap();
        let back: Option<Value> = s.get("orders", &id).unwrap();
        assert_eq!(back, Some(serde_json::json!({"x": 1})));
        let none: Option<Value> = s.get("orders", "../eab/x").unwrap();
        assert!(none.is_none());
        assert!(s.put("orders", "../x", &1).is_err());
        assert_eq!(s.all::<Value>("orders").unwrap().len(), 1);
    }
}
