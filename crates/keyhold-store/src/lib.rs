//! keyhold-store: durable state behind the [`Store`] trait.
//!
//! # Layout
//! - [`records`]: the rows the engine reads and writes (keys, key versions, aliases, tags,
//!   principals). Secrets in them are always wrapped under the root key.
//! - `sql`: the one SQL layer both backends share: the versioned schema (one template,
//!   dialect column types), every statement, fallible row decoding, and the [`Store`]
//!   implementation over a small `Backend` trait; the dialect differences in one place.
//! - [`sqlite`]: the embedded SQLite backend (WAL, `synchronous=FULL`: a commit is fsynced
//!   before the call returns): its connection, transactions and errors.
//! - [`postgres`]: the PostgreSQL backend, for several nodes sharing one state: its pool,
//!   transactions, LISTEN/NOTIFY and errors.
//! - [`Store`]: the trait every backend implements; calls are blocking and short.
//! - [`regional`]: one Region's view of a store that holds several Regions.
//! - [`catalog`]: the S3 gateway's buckets, objects and uploads ([`ObjectCatalog`], part of
//!   every [`Store`]).
//! - `conformance` (tests): one suite of checks run on both backends.
#![forbid(unsafe_code)]

pub mod catalog;
#[cfg(test)]
mod conformance;
pub mod postgres;
pub mod records;
pub mod regional;
mod sql;
pub mod sqlite;

use std::sync::{Arc, Mutex};

use keyhold_core::ids::{AliasName, KeyId};

pub use catalog::{BucketRecord, ObjectCatalog, ObjectRecord, PartRecord, UploadRecord};
pub use postgres::PgStore;
pub use records::{
    AdminEvent, AliasRecord, AuditHead, CustomKeyStoreRecord, GrantRecord, ImportedMaterial,
    KeyLastUsage, KeyRecord, KeyVersionRecord, MultiRegion, PrincipalRecord, Record, RecordSink,
    RecordSource, Snapshot, Tag,
};
pub use regional::RegionalStore;
pub use sqlite::SqliteStore;

/// One wrapped secret to replace: which row, the bytes it holds now and the new bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WrappedChange {
    /// A version of a key's material.
    KeyMaterial {
        /// The key.
        key_id: KeyId,
        /// The version.
        version: u32,
        /// What the row holds now.
        old: Vec<u8>,
        /// What it holds after.
        new: Vec<u8>,
    },
    /// A custom key store's password.
    KeyStorePassword {
        /// The store.
        id: String,
        /// What the row holds now.
        old: Vec<u8>,
        /// What it holds after.
        new: Vec<u8>,
    },
    /// A principal's secret access key.
    PrincipalSecret {
        /// The principal's access key id.
        access_key_id: String,
        /// What the row holds now.
        old: Vec<u8>,
        /// What it holds after.
        new: Vec<u8>,
    },
}

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The row to change does not exist.
    #[error("not found")]
    NotFound,
    /// A row with that unique name already exists.
    #[error("already exists")]
    AlreadyExists,
    /// The database is busy or unreachable for longer than the wait allows.
    #[error("storage is busy or unavailable: {0}")]
    Unavailable(String),
    /// Every connection to the database is busy and the wait queue is full.
    #[error("storage is overloaded: {0}")]
    Busy(String),
    /// A restore into a store that already holds keys or principals.
    #[error("the store is not empty")]
    NotEmpty,
    /// Any other backend failure, or a row the code cannot read.
    #[error("storage backend: {0}")]
    Backend(String),
}

/// Durable state. Every method that changes state has made the change durable when it returns.
pub trait Store: ObjectCatalog + Send + Sync {
    /// Inserts a new key with its first version (none for a key awaiting imported material), tags and (for managed keys) its alias,
    /// atomically; `AlreadyExists` if the alias is taken.
    fn create_key(
        &self,
        key: &KeyRecord,
        version: Option<&KeyVersionRecord>,
        tags: &[Tag],
        alias: Option<&AliasRecord>,
    ) -> Result<(), StoreError>;
    /// Inserts a custom key store; `AlreadyExists` when its name (in the account) or its
    /// cluster id is taken.
    fn create_custom_key_store(&self, s: &CustomKeyStoreRecord) -> Result<(), StoreError>;
    /// Custom key stores of `account` (of every account when `None`), by id.
    fn list_custom_key_stores(
        &self,
        account: Option<&str>,
    ) -> Result<Vec<CustomKeyStoreRecord>, StoreError>;
    /// Overwrites a custom key store's name, cluster id, password and connection flag;
    /// `NotFound` if it is gone, `AlreadyExists` if the new name or cluster id is taken.
    fn update_custom_key_store(&self, s: &CustomKeyStoreRecord) -> Result<(), StoreError>;
    /// Deletes a custom key store.
    fn delete_custom_key_store(&self, id: &str) -> Result<(), StoreError>;
    /// How many keys live in a custom key store.
    fn count_keys_in_custom_key_store(&self, id: &str) -> Result<u64, StoreError>;
    /// Inserts many new keys, each with its first version, in one transaction (bulk seeding
    /// for scale tests); nothing is inserted if any key fails.
    fn create_keys(&self, keys: &[(KeyRecord, KeyVersionRecord)]) -> Result<(), StoreError>;
    /// Replaces all of a key's versions with `versions` and writes the key's fields,
    /// atomically (import, deletion of imported material, expiry, rotation of imported
    /// material).
    fn replace_material(
        &self,
        key: &KeyRecord,
        versions: &[KeyVersionRecord],
    ) -> Result<(), StoreError>;
    /// Keys whose imported material expires at or before `now_ms`.
    fn keys_due_for_expiry(&self, now_ms: i64) -> Result<Vec<KeyId>, StoreError>;
    /// A key by id.
    fn get_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError>;
    /// Overwrites a key's mutable fields (description, state, deletion schedule, versions).
    fn update_key(&self, key: &KeyRecord) -> Result<(), StoreError>;
    /// Keys of an account in key-id order, strictly after `after`, at most `limit`.
    fn list_keys(
        &self,
        account: &str,
        after: Option<&KeyId>,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, StoreError>;
    /// One version of a key's material.
    fn get_key_version(
        &self,
        id: &KeyId,
        version: u32,
    ) -> Result<Option<KeyVersionRecord>, StoreError>;
    /// Adds a new version of a key's material and makes `key.current_version` (with
    /// `key.next_rotation_at`) current, atomically.
    fn add_key_version(
        &self,
        key: &KeyRecord,
        version: &KeyVersionRecord,
    ) -> Result<(), StoreError>;
    /// Every version of a key, oldest first.
    fn list_key_versions(&self, id: &KeyId) -> Result<Vec<KeyVersionRecord>, StoreError>;
    /// Enabled keys whose automatic rotation is due at `now_ms`.
    fn keys_due_for_rotation(&self, now_ms: i64) -> Result<Vec<KeyId>, StoreError>;
    /// Keys whose deletion date is at or before `now_ms`.
    fn keys_due_for_deletion(&self, now_ms: i64) -> Result<Vec<KeyId>, StoreError>;
    /// Destroys a key: its row, every version of its material, its aliases and its tags.
    fn delete_key(&self, id: &KeyId) -> Result<(), StoreError>;

    /// Creates an alias; `AlreadyExists` if the name is taken in the account.
    fn create_alias(&self, alias: &AliasRecord) -> Result<(), StoreError>;
    /// Points an existing alias at another key; `NotFound` if there is no such alias.
    fn update_alias(
        &self,
        account: &str,
        name: &AliasName,
        target: &KeyId,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    /// Deletes an alias; `NotFound` if there is none.
    fn delete_alias(&self, account: &str, name: &AliasName) -> Result<(), StoreError>;
    /// An alias by name.
    fn get_alias(&self, account: &str, name: &AliasName)
        -> Result<Option<AliasRecord>, StoreError>;
    /// Aliases of an account (optionally only those of one key) in name order, after `after`.
    fn list_aliases(
        &self,
        account: &str,
        target: Option<&KeyId>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AliasRecord>, StoreError>;

    /// Adds or overwrites tags on a key.
    fn put_tags(&self, id: &KeyId, tags: &[Tag]) -> Result<(), StoreError>;
    /// Calls `on_change` with the id of every key another node changes (PostgreSQL
    /// LISTEN/NOTIFY); backends that only one process uses never call it.
    fn watch(&self, on_change: Box<dyn Fn(Option<KeyId>) + Send + Sync>) {
        let _ = on_change;
    }

    /// Removes tags by key; absent keys are ignored.
    fn remove_tags(&self, id: &KeyId, keys: &[String]) -> Result<(), StoreError>;
    /// All tags of a key in tag-key order.
    fn list_tags(&self, id: &KeyId) -> Result<Vec<Tag>, StoreError>;

    /// Creates a grant.
    fn create_grant(&self, grant: &GrantRecord) -> Result<(), StoreError>;
    /// Every grant on a key, by grant id.
    fn list_grants(&self, key: &KeyId) -> Result<Vec<GrantRecord>, StoreError>;
    /// Every grant whose retiring principal (or retiring service principal) is `retiring`, on
    /// any key.
    fn list_retirable_grants(&self, retiring: &str) -> Result<Vec<GrantRecord>, StoreError>;
    /// A grant by id and/or token (at least one given).
    fn find_grant(
        &self,
        grant_id: Option<&str>,
        token: Option<&str>,
    ) -> Result<Option<GrantRecord>, StoreError>;
    /// Deletes a grant; `NotFound` if there is none.
    fn delete_grant(&self, grant_id: &str) -> Result<(), StoreError>;

    /// Records when keys were last used (a batch; older records never replace newer ones;
    /// keys that no longer exist are skipped).
    fn put_key_usage(&self, usage: &[KeyLastUsage]) -> Result<(), StoreError>;
    /// When a key was last used, if it was.
    fn get_key_usage(&self, id: &KeyId) -> Result<Option<KeyLastUsage>, StoreError>;

    /// Every row, read consistently (one snapshot of the database), put into `sink` one at a
    /// time, a page of rows in memory at once; keys come before the rows that name them.
    fn export_to(&self, sink: Arc<Mutex<dyn RecordSink>>) -> Result<(), StoreError>;
    /// Writes every record `source` yields into this store, atomically (an error from the
    /// source undoes everything); refused unless the store holds no key and no principal.
    fn import_from(&self, source: Arc<Mutex<dyn RecordSource>>) -> Result<(), StoreError>;
    /// Every row, read consistently, in memory.
    fn export(&self) -> Result<Snapshot, StoreError> {
        let sink = Arc::new(Mutex::new(Snapshot::default()));
        self.export_to(sink.clone())?;
        let mut guard = sink
            .lock()
            .map_err(|_| StoreError::Backend("export sink poisoned".into()))?;
        Ok(std::mem::take(&mut *guard))
    }
    /// Writes every row of `snapshot` into this store, atomically; refused unless the store
    /// holds no key and no principal.
    fn import(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        struct Records(Vec<Record>, usize);
        impl RecordSource for Records {
            fn rewind(&mut self) -> Result<(), StoreError> {
                self.1 = 0;
                Ok(())
            }
            fn next_record(&mut self) -> Result<Option<Record>, StoreError> {
                self.1 += 1;
                Ok(self.0.get(self.1 - 1).cloned())
            }
        }
        let records = snapshot.clone().records().collect();
        self.import_from(Arc::new(Mutex::new(Records(records, 0))))
    }
    /// Replaces every wrapped secret (root-key rotation), atomically: every row changes or
    /// none does. Each change names the bytes it expects to replace; a row that holds other
    /// bytes (changed since it was read), or a wrapped row no change names (added since),
    /// aborts the whole change with `Backend`.
    fn replace_wrapped(&self, changes: &[WrappedChange]) -> Result<(), StoreError>;

    /// Records the newest digest of a node's audit chain; a head never moves back to an
    /// older digest.
    fn put_audit_head(&self, head: &AuditHead) -> Result<(), StoreError>;
    /// The newest digest recorded for `node`'s audit chain.
    fn get_audit_head(&self, node: &str) -> Result<Option<AuditHead>, StoreError>;

    /// Keeps an administrative action for a server to audit.
    fn add_admin_event(&self, event: &AdminEvent) -> Result<(), StoreError>;
    /// The oldest administrative actions not yet audited, at most `limit`.
    fn list_admin_events(&self, limit: usize) -> Result<Vec<AdminEvent>, StoreError>;
    /// Forgets an administrative action once it is audited (absent ids are ignored).
    fn delete_admin_event(&self, id: &str) -> Result<(), StoreError>;

    /// Creates a principal; `AlreadyExists` for a taken access key id or ARN.
    fn create_principal(&self, p: &PrincipalRecord) -> Result<(), StoreError>;
    /// A principal by access key id.
    fn get_principal(&self, access_key_id: &str) -> Result<Option<PrincipalRecord>, StoreError>;
    /// Every principal, by ARN.
    fn list_principals(&self) -> Result<Vec<PrincipalRecord>, StoreError>;
    /// Deletes a principal by access key id or ARN; `NotFound` if none matched.
    fn delete_principal(&self, access_key_id_or_arn: &str) -> Result<(), StoreError>;
}
