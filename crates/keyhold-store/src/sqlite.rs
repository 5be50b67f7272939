//! The embedded SQLite backend.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use keyhold_core::grant::GrantConstraint;
use keyhold_core::ids::{AliasName, KeyId};
use keyhold_core::key::{KeyManager, KeySpec, KeyState, KeyUsage, Origin};
use keyhold_core::policy::default_key_policy;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::{
    AliasRecord, CustomKeyStoreRecord, GrantRecord, KeyLastUsage, KeyRecord, KeyVersionRecord,
    PrincipalRecord, Snapshot, Store, StoreError, Tag, WrappedChange,
};

/// Versioned migrations; index + 1 is the schema version each one produces.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE keys (
    key_id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    description TEXT NOT NULL,
    key_spec TEXT NOT NULL,
    key_usage TEXT NOT NULL,
    origin TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    deletion_date INTEGER,
    pending_window_days INTEGER,
    current_version INTEGER NOT NULL
);
CREATE INDEX keys_by_account ON keys(account, key_id);
CREATE INDEX keys_by_deletion ON keys(deletion_date) WHERE deletion_date IS NOT NULL;
CREATE TABLE key_versions (
    key_id TEXT NOT NULL REFERENCES keys(key_id) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    wrapped_material BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (key_id, version)
);
CREATE TABLE aliases (
    account TEXT NOT NULL,
    name TEXT NOT NULL,
    target_key_id TEXT NOT NULL REFERENCES keys(key_id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (account, name)
);
CREATE INDEX aliases_by_target ON aliases(target_key_id);
CREATE TABLE tags (
    key_id TEXT NOT NULL REFERENCES keys(key_id) ON DELETE CASCADE,
    tag_key TEXT NOT NULL,
    tag_value TEXT NOT NULL,
    PRIMARY KEY (key_id, tag_key)
);
CREATE TABLE principals (
    access_key_id TEXT PRIMARY KEY,
    arn TEXT NOT NULL UNIQUE,
    account TEXT NOT NULL,
    wrapped_secret BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
"#,
    r#"
ALTER TABLE keys ADD COLUMN policy TEXT;
ALTER TABLE keys ADD COLUMN key_manager TEXT NOT NULL DEFAULT 'CUSTOMER';
ALTER TABLE keys ADD COLUMN rotation_period_days INTEGER;
ALTER TABLE keys ADD COLUMN next_rotation_at INTEGER;
ALTER TABLE key_versions ADD COLUMN rotation_type TEXT;
CREATE INDEX keys_by_rotation ON keys(next_rotation_at) WHERE next_rotation_at IS NOT NULL;
"#,
    r#"
CREATE TABLE grants (
    grant_id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL REFERENCES keys(key_id) ON DELETE CASCADE,
    name TEXT,
    grantee TEXT NOT NULL,
    retiring TEXT,
    issuing_account TEXT NOT NULL,
    operations TEXT NOT NULL,
    constraints TEXT,
    token TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
CREATE INDEX grants_by_key ON grants(key_id, grant_id);
CREATE INDEX grants_by_retiring ON grants(retiring) WHERE retiring IS NOT NULL;
"#,
    r#"
CREATE TABLE key_last_usage (
    key_id TEXT PRIMARY KEY REFERENCES keys(key_id) ON DELETE CASCADE,
    operation TEXT NOT NULL,
    used_at INTEGER NOT NULL,
    event_id TEXT NOT NULL
);
"#,
    r#"
ALTER TABLE keys ADD COLUMN expiration_model TEXT;
ALTER TABLE keys ADD COLUMN valid_to INTEGER;
ALTER TABLE keys ADD COLUMN material_digest TEXT;
CREATE INDEX keys_by_valid_to ON keys(valid_to) WHERE valid_to IS NOT NULL;
"#,
    r#"
ALTER TABLE keys ADD COLUMN custom_key_store_id TEXT;
CREATE INDEX keys_by_custom_key_store ON keys(custom_key_store_id)
    WHERE custom_key_store_id IS NOT NULL;
CREATE TABLE custom_key_stores (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    name TEXT NOT NULL,
    cluster_id TEXT NOT NULL UNIQUE,
    trust_anchor TEXT NOT NULL,
    password_wrapped BLOB NOT NULL,
    connected INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (account, name)
);
"#,
];

/// A store in one SQLite file. One connection behind a mutex: SQLite serialises writers
/// anyway, and every call here is a short indexed statement.
pub struct SqliteStore {
    /// The connection, opened in WAL mode with `synchronous=FULL`.
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

fn backend(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(ref f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        rusqlite::Error::SqliteFailure(ref f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::AlreadyExists
        }
        other => StoreError::Backend(other.to_string()),
    }
}

fn bad_row(what: &str, value: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("bad {what} {value:?} in store").into(),
    )
}

fn key_id_col(row: &Row<'_>, idx: usize) -> rusqlite::Result<KeyId> {
    let s: String = row.get(idx)?;
    KeyId::parse(&s).map_err(|_| bad_row("key id", &s))
}

fn key_from_row(row: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    let spec: String = row.get(3)?;
    let usage: String = row.get(4)?;
    let origin: String = row.get(5)?;
    let state: String = row.get(6)?;
    let account: String = row.get(1)?;
    let policy: Option<String> = row.get(11)?;
    let manager: String = row.get(12)?;
    Ok(KeyRecord {
        key_id: key_id_col(row, 0)?,
        policy: policy.unwrap_or_else(|| default_key_policy(&account)),
        account,
        description: row.get(2)?,
        key_spec: KeySpec::parse(&spec).ok_or_else(|| bad_row("key spec", &spec))?,
        key_usage: KeyUsage::parse(&usage).ok_or_else(|| bad_row("key usage", &usage))?,
        origin: Origin::parse(&origin).ok_or_else(|| bad_row("origin", &origin))?,
        state: KeyState::parse(&state).ok_or_else(|| bad_row("key state", &state))?,
        created_at: row.get(7)?,
        deletion_date: row.get(8)?,
        pending_window_days: row.get(9)?,
        current_version: row.get(10)?,
        key_manager: KeyManager::parse(&manager).ok_or_else(|| bad_row("key manager", &manager))?,
        rotation_period_days: row.get(13)?,
        next_rotation_at: row.get(14)?,
        expiration_model: row.get(15)?,
        valid_to: row.get(16)?,
        material_digest: row.get(17)?,
        custom_key_store_id: row.get(18)?,
    })
}

const CKS_COLS: &str =
    "id, account, name, cluster_id, trust_anchor, password_wrapped, connected, created_at";

fn cks_from_row(row: &Row<'_>) -> rusqlite::Result<CustomKeyStoreRecord> {
    Ok(CustomKeyStoreRecord {
        id: row.get(0)?,
        account: row.get(1)?,
        name: row.get(2)?,
        cluster_id: row.get(3)?,
        trust_anchor: row.get(4)?,
        password_wrapped: row.get(5)?,
        connected: row.get(6)?,
        created_at: row.get(7)?,
    })
}

fn insert_grant(conn: &Connection, g: &GrantRecord) -> Result<(), StoreError> {
    conn.execute(
        &format!("INSERT INTO grants ({GRANT_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)"),
        params![
            g.grant_id,
            g.key_id.to_string(),
            g.name,
            g.grantee,
            g.retiring,
            g.issuing_account,
            g.operations.join(","),
            g.constraints.as_ref().map(GrantConstraint::to_json),
            g.token,
            g.created_at
        ],
    )
    .map_err(backend)?;
    Ok(())
}

fn insert_principal(conn: &Connection, p: &PrincipalRecord) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO principals (access_key_id, arn, account, wrapped_secret, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            p.access_key_id,
            p.arn,
            p.account,
            p.wrapped_secret,
            p.created_at
        ],
    )
    .map_err(backend)?;
    Ok(())
}

fn insert_cks(conn: &Connection, c: &CustomKeyStoreRecord) -> Result<(), StoreError> {
    conn.execute(
        &format!("INSERT INTO custom_key_stores ({CKS_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8)"),
        params![
            c.id,
            c.account,
            c.name,
            c.cluster_id,
            c.trust_anchor,
            c.password_wrapped,
            c.connected,
            c.created_at
        ],
    )
    .map_err(backend)?;
    Ok(())
}

const KEY_COLS: &str = "key_id, account, description, key_spec, key_usage, origin, state, \
                        created_at, deletion_date, pending_window_days, current_version, \
                        policy, key_manager, rotation_period_days, next_rotation_at, \
                        expiration_model, valid_to, material_digest, custom_key_store_id";

fn alias_from_row(row: &Row<'_>) -> rusqlite::Result<AliasRecord> {
    let name: String = row.get(1)?;
    Ok(AliasRecord {
        account: row.get(0)?,
        name: AliasName::parse(&name).map_err(|_| bad_row("alias", &name))?,
        target: key_id_col(row, 2)?,
        created_at: row.get(3)?,
        updated_at: row.get(4)?,
    })
}

fn principal_from_row(row: &Row<'_>) -> rusqlite::Result<PrincipalRecord> {
    Ok(PrincipalRecord {
        access_key_id: row.get(0)?,
        arn: row.get(1)?,
        account: row.get(2)?,
        wrapped_secret: row.get(3)?,
        created_at: row.get(4)?,
    })
}

const GRANT_COLS: &str = "grant_id, key_id, name, grantee, retiring, issuing_account, \
                          operations, constraints, token, created_at";

fn grant_from_row(row: &Row<'_>) -> rusqlite::Result<GrantRecord> {
    let ops: String = row.get(6)?;
    Ok(GrantRecord {
        grant_id: row.get(0)?,
        key_id: key_id_col(row, 1)?,
        name: row.get(2)?,
        grantee: row.get(3)?,
        retiring: row.get(4)?,
        issuing_account: row.get(5)?,
        operations: ops
            .split(',')
            .filter(|o| !o.is_empty())
            .map(str::to_string)
            .collect(),
        constraints: row
            .get::<_, Option<String>>(7)?
            .as_deref()
            .map(GrantConstraint::from_json),
        token: row.get(8)?,
        created_at: row.get(9)?,
    })
}

fn version_from_row(row: &Row<'_>) -> rusqlite::Result<KeyVersionRecord> {
    Ok(KeyVersionRecord {
        key_id: key_id_col(row, 0)?,
        version: row.get(1)?,
        wrapped_material: row.get(2)?,
        created_at: row.get(3)?,
        rotation_type: row.get(4)?,
    })
}

fn insert_key(conn: &Connection, k: &KeyRecord) -> Result<(), StoreError> {
    conn.prepare_cached(&format!(
        "INSERT INTO keys ({KEY_COLS}) VALUES \
         (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19)"
    ))
    .map_err(backend)?
    .execute(params![
        k.key_id.to_string(),
        k.account,
        k.description,
        k.key_spec.as_str(),
        k.key_usage.as_str(),
        k.origin.as_str(),
        k.state.as_str(),
        k.created_at,
        k.deletion_date,
        k.pending_window_days,
        k.current_version,
        k.policy,
        k.key_manager.as_str(),
        k.rotation_period_days,
        k.next_rotation_at,
        k.expiration_model,
        k.valid_to,
        k.material_digest,
        k.custom_key_store_id,
    ])
    .map_err(backend)?;
    Ok(())
}

fn insert_version(conn: &Connection, v: &KeyVersionRecord) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO key_versions (key_id, version, wrapped_material, created_at, rotation_type) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .map_err(backend)?
    .execute(params![
        v.key_id.to_string(),
        v.version,
        v.wrapped_material,
        v.created_at,
        v.rotation_type
    ])
    .map_err(backend)?;
    Ok(())
}

fn write_key(conn: &Connection, key: &KeyRecord) -> Result<(), StoreError> {
    let n = conn
        .execute(
            "UPDATE keys SET description = ?2, state = ?3, deletion_date = ?4, \
             pending_window_days = ?5, current_version = ?6, policy = ?7, \
             rotation_period_days = ?8, next_rotation_at = ?9, expiration_model = ?10, \
             valid_to = ?11, material_digest = ?12 WHERE key_id = ?1",
            params![
                key.key_id.to_string(),
                key.description,
                key.state.as_str(),
                key.deletion_date,
                key.pending_window_days,
                key.current_version,
                key.policy,
                key.rotation_period_days,
                key.next_rotation_at,
                key.expiration_model,
                key.valid_to,
                key.material_digest,
            ],
        )
        .map_err(backend)?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

fn insert_alias(conn: &Connection, alias: &AliasRecord) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO aliases (account, name, target_key_id, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            alias.account,
            alias.name.as_str(),
            alias.target.to_string(),
            alias.created_at,
            alias.updated_at
        ],
    )
    .map_err(backend)?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and runs pending migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(backend)?;
        Self::setup(conn)
    }

    /// An in-memory database, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::setup(Connection::open_in_memory().map_err(backend)?)
    }

    fn setup(mut conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(Duration::from_secs(5)).map_err(backend)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(backend)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(backend)?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(backend)?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            .map_err(backend)?;
        let current: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_version",
                [],
                |r| r.get(0),
            )
            .map_err(backend)?;
        if current > MIGRATIONS.len() as i64 {
            return Err(StoreError::Backend(format!(
                "database schema version {current} is newer than this keyhold ({})",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.execute_batch(sql).map_err(backend)?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [i as i64 + 1],
            )
            .map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection itself intact (every change is
        // a transaction), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store for SqliteStore {
    fn create_key(
        &self,
        key: &KeyRecord,
        version: Option<&KeyVersionRecord>,
        tags: &[Tag],
        alias: Option<&AliasRecord>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(backend)?;
        insert_key(&tx, key)?;
        if let Some(version) = version {
            insert_version(&tx, version)?;
        }
        if let Some(a) = alias {
            insert_alias(&tx, a)?;
        }
        for t in tags {
            tx.execute(
                "INSERT OR REPLACE INTO tags (key_id, tag_key, tag_value) VALUES (?1, ?2, ?3)",
                params![key.key_id.to_string(), t.key, t.value],
            )
            .map_err(backend)?;
        }
        tx.commit().map_err(backend)
    }

    fn create_custom_key_store(&self, c: &CustomKeyStoreRecord) -> Result<(), StoreError> {
        insert_cks(&self.conn(), c)
    }

    fn list_custom_key_stores(
        &self,
        account: Option<&str>,
    ) -> Result<Vec<CustomKeyStoreRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {CKS_COLS} FROM custom_key_stores \
                 WHERE ?1 IS NULL OR account = ?1 ORDER BY id"
            ))
            .map_err(backend)?;
        let rows = stmt.query_map([account], cks_from_row).map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn update_custom_key_store(&self, c: &CustomKeyStoreRecord) -> Result<(), StoreError> {
        let n = self
            .conn()
            .execute(
                "UPDATE custom_key_stores SET name = ?2, cluster_id = ?3, \
                 password_wrapped = ?4, connected = ?5 WHERE id = ?1",
                params![c.id, c.name, c.cluster_id, c.password_wrapped, c.connected],
            )
            .map_err(backend)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    fn delete_custom_key_store(&self, id: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM custom_key_stores WHERE id = ?1", [id])
            .map_err(backend)?;
        Ok(())
    }

    fn count_keys_in_custom_key_store(&self, id: &str) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM keys WHERE custom_key_store_id = ?1",
                [id],
                |r| r.get(0),
            )
            .map_err(backend)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn create_keys(&self, keys: &[(KeyRecord, KeyVersionRecord)]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(backend)?;
        for (key, version) in keys {
            insert_key(&tx, key)?;
            insert_version(&tx, version)?;
        }
        tx.commit().map_err(backend)
    }

    fn get_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.conn()
            .query_row(
                &format!("SELECT {KEY_COLS} FROM keys WHERE key_id = ?1"),
                [id.to_string()],
                key_from_row,
            )
            .optional()
            .map_err(backend)
    }

    fn update_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        write_key(&self.conn(), key)
    }

    fn replace_material(
        &self,
        key: &KeyRecord,
        version: Option<&KeyVersionRecord>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(backend)?;
        tx.execute(
            "DELETE FROM key_versions WHERE key_id = ?1",
            [key.key_id.to_string()],
        )
        .map_err(backend)?;
        if let Some(v) = version {
            insert_version(&tx, v)?;
        }
        write_key(&tx, key)?;
        tx.commit().map_err(backend)
    }

    fn keys_due_for_expiry(&self, now_ms: i64) -> Result<Vec<KeyId>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT key_id FROM keys WHERE valid_to IS NOT NULL AND valid_to <= ?1")
            .map_err(backend)?;
        let rows = stmt
            .query_map([now_ms], |r| key_id_col(r, 0))
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn list_keys(
        &self,
        account: &str,
        after: Option<&KeyId>,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {KEY_COLS} FROM keys WHERE account = ?1 AND key_id > ?2 \
                 ORDER BY key_id LIMIT ?3"
            ))
            .map_err(backend)?;
        let after = after.map(|k| k.to_string()).unwrap_or_default();
        let rows = stmt
            .query_map(params![account, after, limit as i64], key_from_row)
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn get_key_version(
        &self,
        id: &KeyId,
        version: u32,
    ) -> Result<Option<KeyVersionRecord>, StoreError> {
        self.conn()
            .query_row(
                "SELECT key_id, version, wrapped_material, created_at, rotation_type \
                 FROM key_versions WHERE key_id = ?1 AND version = ?2",
                params![id.to_string(), version],
                version_from_row,
            )
            .optional()
            .map_err(backend)
    }

    fn keys_due_for_deletion(&self, now_ms: i64) -> Result<Vec<KeyId>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT key_id FROM keys WHERE deletion_date IS NOT NULL AND deletion_date <= ?1",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map([now_ms], |r| key_id_col(r, 0))
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn delete_key(&self, id: &KeyId) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(backend)?;
        let id = id.to_string();
        // Explicit deletes rather than relying on cascades alone, so the material is gone even
        // from a database opened without foreign-key enforcement.
        tx.execute("DELETE FROM key_versions WHERE key_id = ?1", [&id])
            .map_err(backend)?;
        tx.execute("DELETE FROM aliases WHERE target_key_id = ?1", [&id])
            .map_err(backend)?;
        tx.execute("DELETE FROM tags WHERE key_id = ?1", [&id])
            .map_err(backend)?;
        tx.execute("DELETE FROM grants WHERE key_id = ?1", [&id])
            .map_err(backend)?;
        tx.execute("DELETE FROM key_last_usage WHERE key_id = ?1", [&id])
            .map_err(backend)?;
        let n = tx
            .execute("DELETE FROM keys WHERE key_id = ?1", [&id])
            .map_err(backend)?;
        tx.commit().map_err(backend)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    fn create_alias(&self, alias: &AliasRecord) -> Result<(), StoreError> {
        insert_alias(&self.conn(), alias)
    }

    fn add_key_version(
        &self,
        key: &KeyRecord,
        version: &KeyVersionRecord,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(backend)?;
        insert_version(&tx, version)?;
        let n = tx
            .execute(
                "UPDATE keys SET current_version = ?2, next_rotation_at = ?3 WHERE key_id = ?1",
                params![
                    key.key_id.to_string(),
                    key.current_version,
                    key.next_rotation_at
                ],
            )
            .map_err(backend)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().map_err(backend)
    }

    fn list_key_versions(&self, id: &KeyId) -> Result<Vec<KeyVersionRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT key_id, version, wrapped_material, created_at, rotation_type \
                 FROM key_versions WHERE key_id = ?1 ORDER BY version",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map([id.to_string()], version_from_row)
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn keys_due_for_rotation(&self, now_ms: i64) -> Result<Vec<KeyId>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT key_id FROM keys WHERE next_rotation_at IS NOT NULL \
                 AND next_rotation_at <= ?1 AND state = 'Enabled'",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map([now_ms], |r| key_id_col(r, 0))
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn update_alias(
        &self,
        account: &str,
        name: &AliasName,
        target: &KeyId,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let n = self
            .conn()
            .execute(
                "UPDATE aliases SET target_key_id = ?3, updated_at = ?4 \
                 WHERE account = ?1 AND name = ?2",
                params![account, name.as_str(), target.to_string(), now_ms],
            )
            .map_err(backend)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    fn delete_alias(&self, account: &str, name: &AliasName) -> Result<(), StoreError> {
        let n = self
            .conn()
            .execute(
                "DELETE FROM aliases WHERE account = ?1 AND name = ?2",
                params![account, name.as_str()],
            )
            .map_err(backend)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    fn get_alias(
        &self,
        account: &str,
        name: &AliasName,
    ) -> Result<Option<AliasRecord>, StoreError> {
        self.conn()
            .query_row(
                "SELECT account, name, target_key_id, created_at, updated_at FROM aliases \
                 WHERE account = ?1 AND name = ?2",
                params![account, name.as_str()],
                alias_from_row,
            )
            .optional()
            .map_err(backend)
    }

    fn list_aliases(
        &self,
        account: &str,
        target: Option<&KeyId>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AliasRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT account, name, target_key_id, created_at, updated_at FROM aliases \
                 WHERE account = ?1 AND (?2 IS NULL OR target_key_id = ?2) AND name > ?3 \
                 ORDER BY name LIMIT ?4",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map(
                params![
                    account,
                    target.map(|t| t.to_string()),
                    after.unwrap_or(""),
                    limit as i64
                ],
                alias_from_row,
            )
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn put_tags(&self, id: &KeyId, tags: &[Tag]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(backend)?;
        for t in tags {
            tx.execute(
                "INSERT OR REPLACE INTO tags (key_id, tag_key, tag_value) VALUES (?1, ?2, ?3)",
                params![id.to_string(), t.key, t.value],
            )
            .map_err(backend)?;
        }
        tx.commit().map_err(backend)
    }

    fn remove_tags(&self, id: &KeyId, keys: &[String]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(backend)?;
        for k in keys {
            tx.execute(
                "DELETE FROM tags WHERE key_id = ?1 AND tag_key = ?2",
                params![id.to_string(), k],
            )
            .map_err(backend)?;
        }
        tx.commit().map_err(backend)
    }

    fn list_tags(&self, id: &KeyId) -> Result<Vec<Tag>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT tag_key, tag_value FROM tags WHERE key_id = ?1 ORDER BY tag_key",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map([id.to_string()], |r| {
                Ok(Tag {
                    key: r.get(0)?,
                    value: r.get(1)?,
                })
            })
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn create_grant(&self, g: &GrantRecord) -> Result<(), StoreError> {
        insert_grant(&self.conn(), g)
    }

    fn list_grants(&self, key: &KeyId) -> Result<Vec<GrantRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {GRANT_COLS} FROM grants WHERE key_id = ?1 ORDER BY grant_id"
            ))
            .map_err(backend)?;
        let rows = stmt
            .query_map([key.to_string()], grant_from_row)
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn list_retirable_grants(&self, retiring: &str) -> Result<Vec<GrantRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {GRANT_COLS} FROM grants WHERE retiring = ?1 ORDER BY grant_id"
            ))
            .map_err(backend)?;
        let rows = stmt
            .query_map([retiring], grant_from_row)
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn find_grant(
        &self,
        grant_id: Option<&str>,
        token: Option<&str>,
    ) -> Result<Option<GrantRecord>, StoreError> {
        self.conn()
            .query_row(
                &format!(
                    "SELECT {GRANT_COLS} FROM grants WHERE (?1 IS NULL OR grant_id = ?1) \
                     AND (?2 IS NULL OR token = ?2) AND (?1 IS NOT NULL OR ?2 IS NOT NULL)"
                ),
                params![grant_id, token],
                grant_from_row,
            )
            .optional()
            .map_err(backend)
    }

    fn delete_grant(&self, grant_id: &str) -> Result<(), StoreError> {
        let n = self
            .conn()
            .execute("DELETE FROM grants WHERE grant_id = ?1", [grant_id])
            .map_err(backend)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    fn put_key_usage(&self, usage: &[KeyLastUsage]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(backend)?;
        for u in usage {
            // Keys deleted meanwhile are skipped; an older record never replaces a newer one.
            tx.execute(
                "INSERT INTO key_last_usage (key_id, operation, used_at, event_id) \
                 SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM keys WHERE key_id = ?1) \
                 ON CONFLICT(key_id) DO UPDATE SET operation = excluded.operation, \
                 used_at = excluded.used_at, event_id = excluded.event_id \
                 WHERE excluded.used_at >= key_last_usage.used_at",
                params![u.key_id.to_string(), u.operation, u.used_at, u.event_id],
            )
            .map_err(backend)?;
        }
        tx.commit().map_err(backend)
    }

    fn get_key_usage(&self, id: &KeyId) -> Result<Option<KeyLastUsage>, StoreError> {
        self.conn()
            .query_row(
                "SELECT operation, used_at, event_id FROM key_last_usage WHERE key_id = ?1",
                [id.to_string()],
                |r| {
                    Ok(KeyLastUsage {
                        key_id: *id,
                        operation: r.get(0)?,
                        used_at: r.get(1)?,
                        event_id: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(backend)
    }

    fn export(&self) -> Result<Snapshot, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(backend)?;
        fn all<T>(
            tx: &rusqlite::Transaction<'_>,
            sql: &str,
            f: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
        ) -> Result<Vec<T>, StoreError> {
            let mut stmt = tx.prepare(sql).map_err(backend)?;
            let rows = stmt.query_map([], f).map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        }
        let snapshot = Snapshot {
            keys: all(
                &tx,
                &format!("SELECT {KEY_COLS} FROM keys ORDER BY key_id"),
                key_from_row,
            )?,
            versions: all(
                &tx,
                "SELECT key_id, version, wrapped_material, created_at, rotation_type \
                 FROM key_versions ORDER BY key_id, version",
                version_from_row,
            )?,
            aliases: all(
                &tx,
                "SELECT account, name, target_key_id, created_at, updated_at FROM aliases \
                 ORDER BY account, name",
                alias_from_row,
            )?,
            tags: all(
                &tx,
                "SELECT key_id, tag_key, tag_value FROM tags ORDER BY key_id, tag_key",
                |r| {
                    Ok((
                        key_id_col(r, 0)?,
                        Tag {
                            key: r.get(1)?,
                            value: r.get(2)?,
                        },
                    ))
                },
            )?,
            grants: all(
                &tx,
                &format!("SELECT {GRANT_COLS} FROM grants ORDER BY grant_id"),
                grant_from_row,
            )?,
            principals: all(
                &tx,
                "SELECT access_key_id, arn, account, wrapped_secret, created_at FROM principals \
                 ORDER BY access_key_id",
                principal_from_row,
            )?,
            usage: all(
                &tx,
                "SELECT key_id, operation, used_at, event_id FROM key_last_usage ORDER BY key_id",
                |r| {
                    Ok(KeyLastUsage {
                        key_id: key_id_col(r, 0)?,
                        operation: r.get(1)?,
                        used_at: r.get(2)?,
                        event_id: r.get(3)?,
                    })
                },
            )?,
            custom_key_stores: all(
                &tx,
                &format!("SELECT {CKS_COLS} FROM custom_key_stores ORDER BY id"),
                cks_from_row,
            )?,
        };
        tx.commit().map_err(backend)?;
        Ok(snapshot)
    }

    fn import(&self, s: &Snapshot) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(backend)?;
        let existing: i64 = tx
            .query_row(
                "SELECT (SELECT COUNT(*) FROM keys) + (SELECT COUNT(*) FROM principals)",
                [],
                |r| r.get(0),
            )
            .map_err(backend)?;
        if existing > 0 {
            return Err(StoreError::NotEmpty);
        }
        for k in &s.keys {
            insert_key(&tx, k)?;
        }
        for v in &s.versions {
            insert_version(&tx, v)?;
        }
        for a in &s.aliases {
            insert_alias(&tx, a)?;
        }
        for (id, t) in &s.tags {
            tx.execute(
                "INSERT INTO tags (key_id, tag_key, tag_value) VALUES (?1, ?2, ?3)",
                params![id.to_string(), t.key, t.value],
            )
            .map_err(backend)?;
        }
        for g in &s.grants {
            insert_grant(&tx, g)?;
        }
        for p in &s.principals {
            insert_principal(&tx, p)?;
        }
        for u in &s.usage {
            tx.execute(
                "INSERT INTO key_last_usage (key_id, operation, used_at, event_id) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![u.key_id.to_string(), u.operation, u.used_at, u.event_id],
            )
            .map_err(backend)?;
        }
        for c in &s.custom_key_stores {
            insert_cks(&tx, c)?;
        }
        tx.commit().map_err(backend)
    }

    fn create_principal(&self, p: &PrincipalRecord) -> Result<(), StoreError> {
        insert_principal(&self.conn(), p)
    }

    fn get_principal(&self, access_key_id: &str) -> Result<Option<PrincipalRecord>, StoreError> {
        self.conn()
            .query_row(
                "SELECT access_key_id, arn, account, wrapped_secret, created_at FROM principals \
                 WHERE access_key_id = ?1",
                [access_key_id],
                principal_from_row,
            )
            .optional()
            .map_err(backend)
    }

    fn replace_wrapped(&self, changes: &[WrappedChange]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(backend)?;
        for change in changes {
            let n = match change {
                WrappedChange::KeyMaterial {
                    key_id,
                    version,
                    old,
                    new,
                } => tx.execute(
                    "UPDATE key_versions SET wrapped_material = ?3 \
                     WHERE key_id = ?1 AND version = ?2 AND wrapped_material = ?4",
                    params![key_id.to_string(), version, new, old],
                ),
                WrappedChange::PrincipalSecret {
                    access_key_id,
                    old,
                    new,
                } => tx.execute(
                    "UPDATE principals SET wrapped_secret = ?2 \
                     WHERE access_key_id = ?1 AND wrapped_secret = ?3",
                    params![access_key_id, new, old],
                ),
                WrappedChange::KeyStorePassword { id, old, new } => tx.execute(
                    "UPDATE custom_key_stores SET password_wrapped = ?2 \
                     WHERE id = ?1 AND password_wrapped = ?3",
                    params![id, new, old],
                ),
            }
            .map_err(backend)?;
            if n != 1 {
                // Dropping the transaction rolls every earlier change back.
                return Err(StoreError::Backend(
                    "a wrapped secret changed while the root key was rotated".into(),
                ));
            }
        }
        let rows: i64 = tx
            .query_row(
                "SELECT (SELECT COUNT(*) FROM key_versions) + (SELECT COUNT(*) FROM principals) \
                 + (SELECT COUNT(*) FROM custom_key_stores)",
                [],
                |r| r.get(0),
            )
            .map_err(backend)?;
        if usize::try_from(rows).ok() != Some(changes.len()) {
            return Err(StoreError::Backend(
                "wrapped secrets were added while the root key was rotated".into(),
            ));
        }
        tx.commit().map_err(backend)
    }

    fn list_principals(&self) -> Result<Vec<PrincipalRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT access_key_id, arn, account, wrapped_secret, created_at FROM principals \
                 ORDER BY arn",
            )
            .map_err(backend)?;
        let rows = stmt.query_map([], principal_from_row).map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn delete_principal(&self, access_key_id_or_arn: &str) -> Result<(), StoreError> {
        let n = self
            .conn()
            .execute(
                "DELETE FROM principals WHERE access_key_id = ?1 OR arn = ?1",
                [access_key_id_or_arn],
            )
            .map_err(backend)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::key;

    #[test]
    fn key_round_trips_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        let (k, v) = key("111122223333");
        {
            let s = SqliteStore::open(&path).unwrap();
            let tags = [Tag {
                key: "a".into(),
                value: "b".into(),
            }];
            s.create_key(&k, Some(&v), &tags, None).unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.get_key(&k.key_id).unwrap(), Some(k.clone()));
        assert_eq!(s.get_key_version(&k.key_id, 1).unwrap(), Some(v));
        assert_eq!(s.list_tags(&k.key_id).unwrap().len(), 1);
    }

    #[test]
    fn a_first_version_database_migrates_and_keeps_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_version (version INTEGER NOT NULL); \
                 INSERT INTO schema_version VALUES (1); \
                 INSERT INTO keys VALUES ('1234abcd-12ab-34cd-56ef-1234567890ab', \
                 '111122223333', 'old', 'SYMMETRIC_DEFAULT', 'ENCRYPT_DECRYPT', 'AWS_KMS', \
                 'Enabled', 5, NULL, NULL, 1); \
                 INSERT INTO key_versions VALUES ('1234abcd-12ab-34cd-56ef-1234567890ab', 1, \
                 x'0102', 5);",
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        let id = KeyId::parse("1234abcd-12ab-34cd-56ef-1234567890ab").unwrap();
        let k = s.get_key(&id).unwrap().unwrap();
        assert_eq!(k.description, "old");
        assert_eq!(k.key_manager, KeyManager::Customer);
        assert!(k.policy.contains("arn:aws:iam::111122223333:root"));
        let v = s.get_key_version(&id, 1).unwrap().unwrap();
        assert_eq!(v.wrapped_material, vec![1, 2]);
        assert_eq!(v.rotation_type, None);
        let version: i64 = s
            .conn()
            .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_version (version INTEGER NOT NULL); \
                 INSERT INTO schema_version VALUES (999);",
            )
            .unwrap();
        }
        assert!(SqliteStore::open(&path).is_err());
    }
}
