//! Custom key stores: keyhold's AWS_CLOUDHSM key stores, each backed by a PKCS#11 token whose
//! label is the store's `CloudHsmClusterId` and whose user PIN is its `KeyStorePassword`.
//! This node's connections to those tokens live here; whether a store should be connected is
//! kept in the store record, so a restarted node connects again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use keyhold_hsm::{HsmError, Pkcs11Token};
use keyhold_store::CustomKeyStoreRecord;

use crate::error::{ErrorCode, KmsError};
use crate::Engine;

/// The default PKCS#11 module for custom key stores.
pub const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// One store's connection on this node.
#[derive(Clone)]
pub(crate) enum Connection {
    /// Logged in to the token.
    Connected(Arc<Pkcs11Token>),
    /// The last attempt failed, with AWS's `ConnectionErrorCode`.
    Failed(&'static str),
}

/// This node's connections, by store id.
pub(crate) struct Connections {
    /// The PKCS#11 module the tokens are found in.
    pub(crate) module: PathBuf,
    map: RwLock<HashMap<String, Connection>>,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            module: PathBuf::from(DEFAULT_MODULE),
            map: RwLock::new(HashMap::new()),
        }
    }
}

impl Connections {
    pub(crate) fn get(&self, id: &str) -> Option<Connection> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    fn ids(&self) -> Vec<String> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    fn set(&self, id: &str, c: Option<Connection>) {
        let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
        match c {
            Some(c) => m.insert(id.to_string(), c),
            None => m.remove(id),
        };
    }
}

/// AWS's `ConnectionErrorCode` for a failed connection.
fn error_code(e: &HsmError) -> &'static str {
    match e {
        HsmError::WrongPin => "INVALID_CREDENTIALS",
        HsmError::NoToken(_) => "CLUSTER_NOT_FOUND",
        HsmError::UnwrapFailed => "INTERNAL_ERROR",
        _ => "NETWORK_ERRORS",
    }
}

/// The label of a key's AES key inside its token.
pub(crate) fn hsm_label(key_id: &keyhold_core::ids::KeyId) -> String {
    format!("keyhold-{key_id}")
}

impl Engine {
    /// Finds custom key store tokens in this PKCS#11 module (default SoftHSM2's).
    pub fn with_hsm_module(mut self, module: impl Into<PathBuf>) -> Self {
        self.key_stores.module = module.into();
        self
    }

    /// Connects every custom key store marked connected (at start); returns how many failed.
    pub fn connect_key_stores(&self) -> Result<usize, KmsError> {
        let mut failed = 0;
        for rec in self.store().list_custom_key_stores(None)? {
            if rec.connected && !matches!(self.connect_key_store(&rec), Connection::Connected(_)) {
                tracing::warn!(id = %rec.id, "custom key store did not connect");
                failed += 1;
            }
        }
        Ok(failed)
    }

    /// Whether the PKCS#11 module holds a token labelled `cluster_id`.
    pub(crate) fn token_exists(&self, cluster_id: &str) -> Result<bool, KmsError> {
        Pkcs11Token::exists(&self.key_stores.module, cluster_id).map_err(|e| {
            KmsError::new(
                ErrorCode::CloudHsmClusterNotFoundException,
                format!("The HSM cannot be reached: {e}"),
            )
        })
    }

    /// Connects this node to `rec`'s token and remembers the outcome.
    pub(crate) fn connect_key_store(&self, rec: &CustomKeyStoreRecord) -> Connection {
        let conn = match self
            .root_unwrap(
                &rec.password_wrapped,
                &CustomKeyStoreRecord::wrap_label(&rec.id),
            )
            .and_then(|pin| {
                let pin = std::str::from_utf8(pin.expose_secret())
                    .map_err(|_| HsmError::UnwrapFailed)?
                    .to_owned();
                Pkcs11Token::connect(&self.key_stores.module, &rec.cluster_id, &pin)
            }) {
            Ok(token) => Connection::Connected(Arc::new(token)),
            Err(e) => {
                tracing::warn!(id = %rec.id, error = %e, "custom key store connection failed");
                Connection::Failed(error_code(&e))
            }
        };
        self.key_stores.set(&rec.id, Some(conn.clone()));
        conn
    }

    /// Brings this node's connections in line with the stores' records, for changes made
    /// through another node sharing the store: connections of stores disconnected or deleted
    /// are dropped, stores marked connected that this node has not tried are connected. Runs
    /// with the maintenance task, so another node's change is seen within its interval.
    pub fn sync_key_stores(&self) -> Result<(), KmsError> {
        let records = self.store().list_custom_key_stores(None)?;
        for id in self.key_stores.ids() {
            if !records.iter().any(|r| r.id == id && r.connected) {
                self.disconnect_key_store(&id);
            }
        }
        for r in records.iter().filter(|r| r.connected) {
            if self.key_stores.get(&r.id).is_none() {
                self.connect_key_store(r);
            }
        }
        Ok(())
    }

    /// Drops this node's connection to a store.
    pub(crate) fn disconnect_key_store(&self, id: &str) {
        self.key_stores.set(id, None);
    }

    /// This node's connection to a store marked connected (`None` when it is not).
    fn connection(&self, rec: &CustomKeyStoreRecord) -> Option<Connection> {
        if !rec.connected {
            return None;
        }
        Some(match self.key_stores.get(&rec.id) {
            Some(c) => c,
            // Connected on another node: connect here too.
            None => self.connect_key_store(rec),
        })
    }

    /// AWS's `ConnectionState` and `ConnectionErrorCode` of a store, as this node sees it.
    pub(crate) fn key_store_state(
        &self,
        rec: &CustomKeyStoreRecord,
    ) -> (&'static str, Option<&'static str>) {
        match self.connection(rec) {
            None => ("DISCONNECTED", None),
            Some(Connection::Connected(_)) => ("CONNECTED", None),
            Some(Connection::Failed(code)) => ("FAILED", Some(code)),
        }
    }

    /// The token of a store that must be CONNECTED for the operation (CreateKey,
    /// GenerateRandom): `CustomKeyStoreInvalidStateException` when it is not.
    pub(crate) fn connected_token(
        &self,
        rec: &CustomKeyStoreRecord,
        op: &str,
    ) -> Result<Arc<Pkcs11Token>, KmsError> {
        match self.connection(rec) {
            Some(Connection::Connected(t)) => Ok(t),
            other => {
                let state = if other.is_some() {
                    "FAILED"
                } else {
                    "DISCONNECTED"
                };
                Err(KmsError::new(
                    ErrorCode::CustomKeyStoreInvalidStateException,
                    format!(
                        "Custom key store {} is {state}: {op} needs a connected store.",
                        rec.id
                    ),
                ))
            }
        }
    }

    /// The token of a connected store, for a key's cryptography; a store that is not connected
    /// makes its keys unavailable (`KMSInvalidStateException`).
    pub(crate) fn key_store_token(
        &self,
        id: &str,
        key_arn: &str,
    ) -> Result<Arc<Pkcs11Token>, KmsError> {
        let conn = match self.key_stores.get(id) {
            Some(c) => Some(c),
            None => self
                .store()
                .list_custom_key_stores(None)?
                .into_iter()
                .find(|r| r.id == id && r.connected)
                .map(|r| self.connect_key_store(&r)),
        };
        match conn {
            Some(Connection::Connected(t)) => Ok(t),
            _ => Err(KmsError::new(
                ErrorCode::KMSInvalidStateException,
                format!("{key_arn} is unavailable: its custom key store {id} is not connected."),
            )),
        }
    }
}
