//! The embedded SQLite backend: one connection behind a mutex (SQLite serialises writers
//! anyway, and every call is a short indexed statement), WAL with `synchronous=FULL` (a commit
//! is fsynced before the call returns). Statements, schema and rows are the shared SQL layer's
//! (`crate::sql`); this file holds the connection, transactions and the error mapping.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, TransactionBehavior};

use crate::sql::{self, Backend, Conn, Dialect, Row, Tx, Value};
use crate::StoreError;

/// A store in one SQLite file.
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

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(n) => ToSqlOutput::Borrowed(ValueRef::Integer(*n)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Value::Bool(b) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(*b))),
        })
    }
}

fn value(v: ValueRef<'_>) -> Result<Value, StoreError> {
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => Value::Int(n),
        ValueRef::Text(t) => Value::Text(
            String::from_utf8(t.to_vec())
                .map_err(|_| StoreError::Backend("text column is not UTF-8".into()))?,
        ),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        ValueRef::Real(_) => return Err(StoreError::Backend("unexpected REAL column".into())),
    })
}

/// The shared layer's view of a connection.
struct SqliteConn<'a>(&'a Connection);

impl Conn for SqliteConn<'_> {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        let mut stmt = self
            .0
            .prepare_cached(&Dialect::Sqlite.statement(sql))
            .map_err(backend)?;
        let n = stmt
            .execute(rusqlite::params_from_iter(params))
            .map_err(backend)?;
        u64::try_from(n).map_err(|e| StoreError::Backend(e.to_string()))
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        let mut stmt = self
            .0
            .prepare_cached(&Dialect::Sqlite.statement(sql))
            .map_err(backend)?;
        let width = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params))
            .map_err(backend)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(backend)? {
            let cols = (0..width)
                .map(|i| value(r.get_ref(i).map_err(backend)?))
                .collect::<Result<_, _>>()?;
            out.push(Row(cols));
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        self.0.execute_batch(sql).map_err(backend)
    }
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

    fn setup(conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(Duration::from_secs(5)).map_err(backend)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(backend)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(backend)?;
        let store = Self {
            conn: Mutex::new(conn),
        };
        store.run(Tx::Write, |c| sql::migrate(c, Dialect::Sqlite))?;
        Ok(store)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection itself intact (every change is
        // a transaction), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Backend for SqliteStore {
    const DIALECT: Dialect = Dialect::Sqlite;

    fn run<T: Send + 'static>(
        &self,
        kind: Tx,
        f: impl Fn(&mut dyn Conn) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let started = std::time::Instant::now();
        let result = (|| {
            let mut conn = self.conn();
            let behavior = match kind {
                Tx::Read => return f(&mut SqliteConn(&conn)),
                // Takes the write lock at once, so two processes never deadlock upgrading.
                Tx::Write => TransactionBehavior::Immediate,
                Tx::Snapshot => TransactionBehavior::Deferred,
            };
            let tx = conn.transaction_with_behavior(behavior).map_err(backend)?;
            // Dropping the transaction on an error rolls it back.
            let out = f(&mut SqliteConn(&tx))?;
            tx.commit().map_err(backend)?;
            Ok(out)
        })();
        crate::sql::observe(kind, started, &result);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::key;
    use crate::{Store, Tag};
    use keyhold_core::ids::KeyId;
    use keyhold_core::key::KeyManager;

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
            conn.execute_batch(&sql::migration(Dialect::Sqlite, 0).unwrap())
                .unwrap();
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
        assert!(sql::migration(Dialect::Sqlite, usize::try_from(version).unwrap()).is_none());
        assert!(sql::migration(Dialect::Sqlite, usize::try_from(version - 1).unwrap()).is_some());
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

    #[test]
    fn rows_that_cannot_be_read_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.db");
        let s = SqliteStore::open(&path).unwrap();
        let (k, v) = key("111122223333");
        s.create_key(&k, Some(&v), &[], None).unwrap();
        // A version number past u32 and a state nobody knows, written behind keyhold's back.
        s.conn()
            .execute_batch(
                "UPDATE key_versions SET version = 4294967296; \
                 UPDATE keys SET current_version = -1;",
            )
            .unwrap();
        assert!(matches!(
            s.list_key_versions(&k.key_id),
            Err(StoreError::Backend(_))
        ));
        assert!(matches!(s.get_key(&k.key_id), Err(StoreError::Backend(_))));
        s.conn()
            .execute_batch("UPDATE keys SET current_version = 1, state = 'Melted';")
            .unwrap();
        assert!(matches!(s.get_key(&k.key_id), Err(StoreError::Backend(_))));
    }

    #[test]
    fn an_unreadable_grant_constraint_is_kept_and_allows_nothing() {
        use keyhold_core::grant::GrantConstraint;
        let s = SqliteStore::in_memory().unwrap();
        let (k, v) = key("111122223333");
        s.create_key(&k, Some(&v), &[], None).unwrap();
        let mut g = crate::conformance::grant(&k);
        g.constraints = Some(GrantConstraint::from_json(
            r#"{"EncryptionContextSubset":{"a":"b"}}"#,
        ));
        s.create_grant(&g).unwrap();
        s.conn()
            .execute_batch("UPDATE grants SET constraints = '{\"EncryptionContextSubset\": 7}'")
            .unwrap();
        let read = s.list_grants(&k.key_id).unwrap();
        let c = read[0].constraints.as_ref().unwrap();
        assert!(matches!(c, GrantConstraint::Unreadable(_)));
        assert!(!c.allows(None));
    }
}
