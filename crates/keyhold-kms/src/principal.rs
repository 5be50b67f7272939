//! Principals: who signs requests, and their credentials (secret keys wrapped under the root
//! key in the store).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use keyhold_core::ids::is_account_id;
use keyhold_core::secret::SecretBytes;
use keyhold_hsm::RootKey;
use keyhold_store::{PrincipalRecord, Store, StoreError};

use crate::error::KmsError;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `arn:aws:iam::ACCOUNT:user/NAME`.
    pub arn: String,
    /// The caller's account.
    pub account: String,
    /// The access key id the request was signed with.
    pub access_key_id: String,
}

impl Principal {
    /// A service principal (`ec2.amazonaws.com`) acting in `account`: how keyhold's own
    /// services call the engine as themselves. Its `arn` is the service name, which no IAM
    /// ARN equals, so IAM statements and grants to IAM principals never match it.
    pub fn service(name: &str, account: &str) -> Self {
        Self {
            arn: name.to_string(),
            account: account.to_string(),
            access_key_id: String::new(),
        }
    }

    /// The service name, for a service principal.
    pub fn service_name(&self) -> Option<&str> {
        (!self.arn.starts_with("arn:")).then_some(self.arn.as_str())
    }

    /// The user or role name: the last path segment of the ARN.
    pub fn name(&self) -> &str {
        self.arn.rsplit('/').next().unwrap_or(&self.arn)
    }
}

/// A principal and its secret access key, as the SigV4 verifier needs them.
#[derive(Clone)]
pub struct Credential {
    /// Who this is.
    pub principal: Principal,
    /// The secret access key (unwrapped).
    pub secret: Arc<SecretBytes>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

/// What `principal create` hands out, once.
pub struct NewPrincipal {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key; shown once, stored only wrapped.
    pub secret_access_key: SecretBytes,
    /// ARN.
    pub arn: String,
}

/// Kinds of principal `principal create` can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// `arn:aws:iam::ACCOUNT:user/NAME`.
    User,
    /// `arn:aws:iam::ACCOUNT:role/NAME`.
    Role,
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

fn new_access_key_id() -> Result<String, KmsError> {
    let bytes = keyhold_core::secret::random_bytes(16).map_err(KmsError::internal)?;
    let tail: String = bytes
        .iter()
        .map(|b| BASE32[(b & 31) as usize] as char)
        .collect();
    Ok(format!("AKIA{tail}"))
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

/// Creates a principal in `account` and stores its secret wrapped under the root key.
pub fn create_principal(
    store: &dyn Store,
    root: &dyn RootKey,
    account: &str,
    name: &str,
    kind: PrincipalKind,
    now_ms: i64,
) -> Result<NewPrincipal, KmsError> {
    if !is_account_id(account) {
        return Err(KmsError::validation(format!(
            "account {account:?} must be 12 digits"
        )));
    }
    if !valid_name(name) {
        return Err(KmsError::validation(format!(
            "name {name:?} must be 1-64 characters of letters, digits and +=,.@_-"
        )));
    }
    let kind_path = match kind {
        PrincipalKind::User => "user",
        PrincipalKind::Role => "role",
    };
    let arn = format!("arn:aws:iam::{account}:{kind_path}/{name}");
    let access_key_id = new_access_key_id()?;
    let raw = SecretBytes::random(30).map_err(KmsError::internal)?;
    let secret = SecretBytes::new(
        base64::engine::general_purpose::STANDARD
            .encode(raw.expose_secret())
            .into_bytes(),
    );
    let wrapped = root
        .wrap(
            secret.expose_secret(),
            &PrincipalRecord::wrap_label(&access_key_id),
        )
        .map_err(KmsError::internal)?;
    let record = PrincipalRecord {
        access_key_id: access_key_id.clone(),
        arn: arn.clone(),
        account: account.to_string(),
        wrapped_secret: wrapped,
        created_at: now_ms,
    };
    store.create_principal(&record).map_err(|e| match e {
        StoreError::AlreadyExists => KmsError::new(
            crate::error::ErrorCode::AlreadyExistsException,
            format!("a principal {arn} already exists"),
        ),
        other => other.into(),
    })?;
    Ok(NewPrincipal {
        access_key_id,
        secret_access_key: secret,
        arn,
    })
}

/// How long a looked-up credential is reused before the store is asked again; bounds how long
/// a principal deleted by `keyhold admin principal delete` keeps working on a running server.
pub const CREDENTIAL_TTL: Duration = Duration::from_secs(2);

/// Looks up credentials by access key id, with a short-lived cache.
pub struct CredentialCache {
    /// Unwrapped credentials and when they were read.
    entries: RwLock<HashMap<String, (Credential, Instant)>>,
    /// A fixed credential of the dev server, never stored.
    dev: Option<Credential>,
}

impl CredentialCache {
    /// A cache with an optional fixed dev credential.
    pub fn new(dev: Option<Credential>) -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            dev,
        }
    }

    /// The credential for an access key id, if there is one.
    pub fn lookup(
        &self,
        store: &dyn Store,
        root: &dyn RootKey,
        access_key_id: &str,
    ) -> Result<Option<Credential>, KmsError> {
        if let Some(dev) = &self.dev {
            if dev.principal.access_key_id == access_key_id {
                return Ok(Some(dev.clone()));
            }
        }
        if let Some((c, at)) = self
            .entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(access_key_id)
        {
            if at.elapsed() < CREDENTIAL_TTL {
                return Ok(Some(c.clone()));
            }
        }
        let Some(rec) = store.get_principal(access_key_id)? else {
            self.entries
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(access_key_id);
            return Ok(None);
        };
        let secret = root
            .unwrap(
                &rec.wrapped_secret,
                &PrincipalRecord::wrap_label(access_key_id),
            )
            .map_err(KmsError::internal)?;
        let cred = Credential {
            principal: Principal {
                arn: rec.arn,
                account: rec.account,
                access_key_id: rec.access_key_id,
            },
            secret: Arc::new(secret),
        };
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.len() > 10_000 {
            entries.clear();
        }
        entries.insert(access_key_id.to_string(), (cred.clone(), Instant::now()));
        Ok(Some(cred))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhold_hsm::FileRootKey;
    use keyhold_store::SqliteStore;

    #[test]
    fn created_principal_is_found_with_its_secret() {
        let store = SqliteStore::in_memory().unwrap();
        let root = FileRootKey::ephemeral().unwrap();
        let p = create_principal(
            &store,
            &root,
            "111122223333",
            "alice",
            PrincipalKind::User,
            0,
        )
        .unwrap();
        assert!(p.access_key_id.starts_with("AKIA") && p.access_key_id.len() == 20);
        assert_eq!(p.secret_access_key.len(), 40);
        assert_eq!(p.arn, "arn:aws:iam::111122223333:user/alice");
        let stored = store.get_principal(&p.access_key_id).unwrap().unwrap();
        assert!(!stored
            .wrapped_secret
            .windows(40)
            .any(|w| w == p.secret_access_key.expose_secret()));
        let cache = CredentialCache::new(None);
        let c = cache
            .lookup(&store, &root, &p.access_key_id)
            .unwrap()
            .unwrap();
        assert_eq!(
            c.secret.expose_secret(),
            p.secret_access_key.expose_secret()
        );
        assert!(cache.lookup(&store, &root, "AKIANOPE").unwrap().is_none());
    }

    #[test]
    fn bad_account_or_name_is_refused() {
        let store = SqliteStore::in_memory().unwrap();
        let root = FileRootKey::ephemeral().unwrap();
        for (acct, name) in [
            ("1234", "a"),
            ("111122223333", "bad name"),
            ("111122223333", ""),
        ] {
            assert!(
                create_principal(&store, &root, acct, name, PrincipalKind::User, 0).is_err(),
                "{acct} {name}"
            );
        }
    }
}
