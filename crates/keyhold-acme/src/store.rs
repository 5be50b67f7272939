//! The ACME server's records as JSON documents under `DATA_DIR/acme/<kind>/<id>.json`:
//! external account bindings, accounts, orders, authorizations and certificates. Each is
//! written through a temporary file, flushed and renamed.

use std::io::Write;
use std::path::{Path, PathBuf};

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

/// Records of one kind in a directory.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
}

/// True for ids this server makes (url-safe base64 and hex alphabets), so no client id is
/// used as a path before it is checked.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A new random id (22 url-safe characters).
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut b);
    crate::jws::b64(&b)
}

impl Store {
    /// Opens (and makes) the store under `dir`.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        for kind in ["eab", "accounts", "keys", "orders", "authz", "certs"] {
            std::fs::create_dir_all(dir.join(kind))?;
        }
        Ok(Self {
            root: dir.to_path_buf(),
        })
    }

    fn path(&self, kind: &str, id: &str) -> PathBuf {
        self.root.join(kind).join(format!("{id}.json"))
    }

    /// A record.
    pub fn get<T: for<'de> Deserialize<'de>>(
        &self,
        kind: &str,
        id: &str,
    ) -> std::io::Result<Option<T>> {
        if !valid_id(id) {
            return Ok(None);
        }
        match std::fs::read(self.path(kind, id)) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes a record.
    pub fn put<T: Serialize>(&self, kind: &str, id: &str, value: &T) -> std::io::Result<()> {
        if !valid_id(id) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "bad record id",
            ));
        }
        let bytes = serde_json::to_vec_pretty(value)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let path = self.path(kind, id);
        let dir = self.root.join(kind);
        let tmp = dir.join(format!(".{id}.{}", new_id()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Removes a record.
    pub fn remove(&self, kind: &str, id: &str) -> std::io::Result<()> {
        if !valid_id(id) {
            return Ok(());
        }
        match std::fs::remove_file(self.path(kind, id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every record of a kind.
    pub fn all<T: for<'de> Deserialize<'de>>(&self, kind: &str) -> std::io::Result<Vec<T>> {
        let mut ids: Vec<String> = Vec::new();
        for e in std::fs::read_dir(self.root.join(kind))? {
            let name = e?.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".json").filter(|n| !n.starts_with('.')) {
                ids.push(id.to_string());
            }
        }
        ids.sort();
        let mut out = Vec::new();
        for id in ids {
            if let Some(v) = self.get(kind, &id)? {
                out.push(v);
            }
        }
        Ok(out)
    }
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
        let s = Store::open(dir.path()).unwrap();
        let id = new_id();
        assert!(valid_id(&id));
        s.put("orders", &id, &serde_json::json!({"x": 1})).unwrap();
        let back: Option<Value> = s.get("orders", &id).unwrap();
        assert_eq!(back, Some(serde_json::json!({"x": 1})));
        let none: Option<Value> = s.get("orders", "../eab/x").unwrap();
        assert!(none.is_none());
        assert!(s.put("orders", "../x", &1).is_err());
        assert_eq!(s.all::<Value>("orders").unwrap().len(), 1);
    }
}
