//! One SQL layer for both backends: the schema, every statement, row decoding and the
//! [`Store`] implementation are written once here, in PostgreSQL's `$n` placeholder style.
//! What differs between SQLite and PostgreSQL is in [`Dialect`] (column types, collation,
//! locking, change notification, placeholders) and in each backend's [`Backend`]
//! implementation (connections and transactions). Rows are decoded fallibly: a value of the
//! wrong type or out of range is a [`StoreError::Backend`], never a panic or a truncation.

use std::sync::{Arc, Mutex};

use keyhold_core::grant::GrantConstraint;
use keyhold_core::ids::{AliasName, KeyId};
use keyhold_core::key::{KeyManager, KeySpec, KeyState, KeyUsage, Origin};
use keyhold_core::policy::default_key_policy;

use crate::{
    AdminEvent, AliasRecord, AuditHead, CustomKeyStoreRecord, GrantRecord, ImportedMaterial,
    KeyLastUsage, KeyRecord, KeyVersionRecord, MultiRegion, PrincipalRecord, Record, RecordSink,
    RecordSource, Store, StoreError, Tag, WrappedChange,
};

/// The SQL dialects keyhold speaks. Every difference between them is a method here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// SQLite (`?n` placeholders, INTEGER/BLOB columns, one writer at a time).
    Sqlite,
    /// PostgreSQL (`$n` placeholders, BIGINT/BYTEA/BOOLEAN columns, LISTEN/NOTIFY).
    Postgres,
}

impl Dialect {
    /// `sql` (written with `$n` placeholders) in this dialect.
    pub(crate) fn statement(self, sql: &str) -> std::borrow::Cow<'_, str> {
        match self {
            Self::Postgres => sql.into(),
            Self::Sqlite => {
                let mut out = String::with_capacity(sql.len());
                let mut chars = sql.chars().peekable();
                while let Some(c) = chars.next() {
                    if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
                        out.push('?');
                    } else {
                        out.push(c);
                    }
                }
                out.into()
            }
        }
    }

    /// A migration template in this dialect's column types.
    fn schema(self, template: &str) -> String {
        let (int, blob, boolean, text_c) = match self {
            Self::Sqlite => ("INTEGER", "BLOB", "INTEGER", "TEXT"),
            Self::Postgres => ("BIGINT", "BYTEA", "BOOLEAN", "TEXT COLLATE \"C\""),
        };
        template
            .replace("{TEXT_C}", text_c)
            .replace("{INT}", int)
            .replace("{BLOB}", blob)
            .replace("{BOOL}", boolean)
    }

    /// Byte-order collation for an `ORDER BY` (SQLite's default already is).
    fn collate_c(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " COLLATE \"C\"",
        }
    }

    /// Locks `tables` against writers for the rest of a write transaction. SQLite's write
    /// transactions (`BEGIN IMMEDIATE`) already exclude every other writer.
    fn lock(self, c: &mut dyn Conn, tables: &[&str]) -> Result<(), StoreError> {
        match self {
            Self::Sqlite => Ok(()),
            Self::Postgres => c
                .execute(
                    &format!("LOCK TABLE {} IN EXCLUSIVE MODE", tables.join(", ")),
                    &[],
                )
                .map(|_| ()),
        }
    }

    /// Announces, at commit, that `key` changed (or with `None` that aliases changed), to
    /// the other nodes sharing a PostgreSQL store. SQLite has one process: nothing to do.
    fn notify(self, c: &mut dyn Conn, key: Option<&KeyId>) -> Result<(), StoreError> {
        match self {
            Self::Sqlite => Ok(()),
            Self::Postgres => c
                .execute(
                    "SELECT pg_notify($1, $2)",
                    &[
                        CHANNEL.into(),
                        key.map_or_else(|| "*".to_string(), KeyId::to_string).into(),
                    ],
                )
                .map(|_| ()),
        }
    }
}

/// The PostgreSQL channel on which nodes announce changes to keys.
pub(crate) const CHANNEL: &str = "keyhold_changes";

/// A parameter or column value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Value {
    /// SQL NULL.
    #[default]
    Null,
    /// An integer (BIGINT / INTEGER).
    Int(i64),
    /// Text.
    Text(String),
    /// Bytes (BYTEA / BLOB).
    Blob(Vec<u8>),
    /// A boolean (BOOLEAN; 0/1 INTEGER in SQLite).
    Bool(bool),
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::Text(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Self::Text(v.clone())
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Self::Int(i64::from(v))
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Self::Blob(v.to_vec())
    }
}

impl From<&Vec<u8>> for Value {
    fn from(v: &Vec<u8>) -> Self {
        Self::Blob(v.clone())
    }
}

impl From<&KeyId> for Value {
    fn from(v: &KeyId) -> Self {
        Self::Text(v.to_string())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::Null, Into::into)
    }
}

/// One result row, decoded fallibly by column index.
#[derive(Debug)]
pub(crate) struct Row(pub(crate) Vec<Value>);

fn bad(what: &str, v: impl std::fmt::Debug) -> StoreError {
    StoreError::Backend(format!("bad {what} {v:?} in store"))
}

impl Row {
    fn take(&mut self, i: usize) -> Result<Value, StoreError> {
        self.0
            .get_mut(i)
            .map(std::mem::take)
            .ok_or_else(|| StoreError::Backend(format!("row has no column {i}")))
    }

    pub(crate) fn opt_text(&mut self, i: usize) -> Result<Option<String>, StoreError> {
        match self.take(i)? {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s)),
            v => Err(bad("text column", v)),
        }
    }

    pub(crate) fn text(&mut self, i: usize) -> Result<String, StoreError> {
        self.opt_text(i)?
            .ok_or_else(|| bad("text column", Value::Null))
    }

    pub(crate) fn opt_i64(&mut self, i: usize) -> Result<Option<i64>, StoreError> {
        match self.take(i)? {
            Value::Null => Ok(None),
            Value::Int(n) => Ok(Some(n)),
            v => Err(bad("integer column", v)),
        }
    }

    pub(crate) fn i64(&mut self, i: usize) -> Result<i64, StoreError> {
        self.opt_i64(i)?
            .ok_or_else(|| bad("integer column", Value::Null))
    }

    pub(crate) fn opt_u32(&mut self, i: usize) -> Result<Option<u32>, StoreError> {
        self.opt_i64(i)?
            .map(|n| u32::try_from(n).map_err(|_| bad("32-bit unsigned value", n)))
            .transpose()
    }

    pub(crate) fn u32(&mut self, i: usize) -> Result<u32, StoreError> {
        self.opt_u32(i)?
            .ok_or_else(|| bad("integer column", Value::Null))
    }

    pub(crate) fn blob(&mut self, i: usize) -> Result<Vec<u8>, StoreError> {
        match self.take(i)? {
            Value::Blob(b) => Ok(b),
            v => Err(bad("byte column", v)),
        }
    }

    pub(crate) fn bool(&mut self, i: usize) -> Result<bool, StoreError> {
        match self.take(i)? {
            Value::Bool(b) => Ok(b),
            Value::Int(0) => Ok(false),
            Value::Int(1) => Ok(true),
            v => Err(bad("boolean column", v)),
        }
    }

    pub(crate) fn key_id(&mut self, i: usize) -> Result<KeyId, StoreError> {
        let s = self.text(i)?;
        KeyId::parse(&s).map_err(|_| bad("key id", s))
    }
}

/// A connection (or transaction) statements run on.
pub(crate) trait Conn {
    /// Runs one statement; the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError>;
    /// Runs one query; its rows.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError>;
    /// Runs several statements without parameters (migrations).
    fn batch(&mut self, sql: &str) -> Result<(), StoreError>;
}

pub(crate) fn query_opt(
    c: &mut dyn Conn,
    sql: &str,
    params: &[Value],
) -> Result<Option<Row>, StoreError> {
    Ok(c.query(sql, params)?.into_iter().next())
}

pub(crate) fn count(c: &mut dyn Conn, sql: &str, params: &[Value]) -> Result<i64, StoreError> {
    query_opt(c, sql, params)?
        .ok_or_else(|| StoreError::Backend("a count returned no row".into()))?
        .i64(0)
}

/// What a unit of work needs from the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tx {
    /// Reads of one statement (no transaction needed).
    Read,
    /// Changes, all or nothing, excluding other writers where the work locks.
    Write,
    /// Several reads from one consistent snapshot.
    Snapshot,
}

impl Tx {
    fn label(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Snapshot => "snapshot",
        }
    }
}

/// Records how long one unit of work took (`keyhold_store_seconds{kind}`) and whether it
/// failed (`keyhold_store_errors_total{kind}`).
pub(crate) fn observe<T>(kind: Tx, started: std::time::Instant, r: &Result<T, StoreError>) {
    metrics::histogram!("keyhold_store_seconds", "kind" => kind.label())
        .record(started.elapsed().as_secs_f64());
    if r.is_err() {
        metrics::counter!("keyhold_store_errors_total", "kind" => kind.label()).increment(1);
    }
}

/// A database the shared [`Store`] implementation runs on.
pub(crate) trait Backend: Send + Sync {
    /// The backend's dialect.
    const DIALECT: Dialect;

    /// Runs `f` on a connection, inside a transaction of `kind` that is committed when `f`
    /// returns `Ok` (and rolled back otherwise). `f` may be run again on a fresh connection
    /// when the first one turns out dead before anything was committed.
    fn run<T: Send + 'static>(
        &self,
        kind: Tx,
        f: impl Fn(&mut dyn Conn) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError>;

    /// Calls `on_change` with the id of every key another node changes.
    fn watch(&self, on_change: Box<dyn Fn(Option<KeyId>) + Send + Sync>) {
        let _ = on_change;
    }
}

/// Versioned migrations, one template for both dialects (`{INT}`, `{BLOB}`, `{BOOL}`, and
/// `{TEXT_C}` for text compared in byte order, become each dialect's column types); index + 1
/// is the schema version each one produces.
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
    created_at {INT} NOT NULL,
    deletion_date {INT},
    pending_window_days {INT},
    current_version {INT} NOT NULL
);
CREATE INDEX keys_by_account ON keys(account, key_id);
CREATE INDEX keys_by_deletion ON keys(deletion_date) WHERE deletion_date IS NOT NULL;
CREATE TABLE key_versions (
    key_id TEXT NOT NULL REFERENCES keys(key_id) ON DELETE CASCADE,
    version {INT} NOT NULL,
    wrapped_material {BLOB} NOT NULL,
    created_at {INT} NOT NULL,
    PRIMARY KEY (key_id, version)
);
CREATE TABLE aliases (
    account TEXT NOT NULL,
    name TEXT NOT NULL,
    target_key_id TEXT NOT NULL REFERENCES keys(key_id) ON DELETE CASCADE,
    created_at {INT} NOT NULL,
    updated_at {INT} NOT NULL,
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
    wrapped_secret {BLOB} NOT NULL,
    created_at {INT} NOT NULL
);
"#,
    r#"
ALTER TABLE keys ADD COLUMN policy TEXT;
ALTER TABLE keys ADD COLUMN key_manager TEXT NOT NULL DEFAULT 'CUSTOMER';
ALTER TABLE keys ADD COLUMN rotation_period_days {INT};
ALTER TABLE keys ADD COLUMN next_rotation_at {INT};
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
    created_at {INT} NOT NULL
);
CREATE INDEX grants_by_key ON grants(key_id, grant_id);
CREATE INDEX grants_by_retiring ON grants(retiring) WHERE retiring IS NOT NULL;
"#,
    r#"
CREATE TABLE key_last_usage (
    key_id TEXT PRIMARY KEY REFERENCES keys(key_id) ON DELETE CASCADE,
    operation TEXT NOT NULL,
    used_at {INT} NOT NULL,
    event_id TEXT NOT NULL
);
"#,
    r#"
ALTER TABLE keys ADD COLUMN expiration_model TEXT;
ALTER TABLE keys ADD COLUMN valid_to {INT};
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
    password_wrapped {BLOB} NOT NULL,
    connected {BOOL} NOT NULL,
    created_at {INT} NOT NULL,
    UNIQUE (account, name)
);
"#,
    r#"
CREATE TABLE audit_heads (
    node TEXT PRIMARY KEY,
    digest {INT} NOT NULL,
    digest_hash TEXT NOT NULL,
    recorded_at {INT} NOT NULL
);
CREATE TABLE admin_events (
    id TEXT PRIMARY KEY,
    event_name TEXT NOT NULL,
    detail TEXT NOT NULL,
    created_at {INT} NOT NULL
);
"#,
    r#"
CREATE TABLE s3_buckets (
    name {TEXT_C} PRIMARY KEY,
    account TEXT NOT NULL,
    created_at {INT} NOT NULL,
    meta TEXT NOT NULL
);
CREATE INDEX s3_buckets_by_account ON s3_buckets(account, name);
CREATE TABLE s3_objects (
    bucket {TEXT_C} NOT NULL,
    object_key {TEXT_C} NOT NULL,
    modified_at {INT} NOT NULL,
    meta TEXT NOT NULL,
    PRIMARY KEY (bucket, object_key)
);
CREATE TABLE s3_uploads (
    upload_id TEXT PRIMARY KEY,
    bucket {TEXT_C} NOT NULL,
    object_key {TEXT_C} NOT NULL,
    created_at {INT} NOT NULL,
    meta TEXT NOT NULL
);
CREATE INDEX s3_uploads_by_key ON s3_uploads(bucket, object_key, upload_id);
CREATE INDEX s3_uploads_by_age ON s3_uploads(created_at);
CREATE TABLE s3_parts (
    upload_id TEXT NOT NULL REFERENCES s3_uploads(upload_id) ON DELETE CASCADE,
    part_number {INT} NOT NULL,
    modified_at {INT} NOT NULL,
    meta TEXT NOT NULL,
    PRIMARY KEY (upload_id, part_number)
);
"#,
    r#"
ALTER TABLE key_versions ADD COLUMN imported TEXT;
ALTER TABLE grants ADD COLUMN grantee_service TEXT;
ALTER TABLE grants ADD COLUMN retiring_service TEXT;
ALTER TABLE grants ADD COLUMN source_arn TEXT;
CREATE INDEX grants_by_retiring_service ON grants(retiring_service)
    WHERE retiring_service IS NOT NULL;
"#,
    r#"
ALTER TABLE keys ADD COLUMN multi_region TEXT;
"#,
];

/// Migration `i` (0-based) in `dialect` (tests build old schemas with it).
#[cfg(test)]
pub(crate) fn migration(dialect: Dialect, i: usize) -> Option<String> {
    MIGRATIONS.get(i).map(|t| dialect.schema(t))
}

/// Brings the schema up to date, inside the caller's transaction; refuses a schema newer
/// than this keyhold.
pub(crate) fn migrate(c: &mut dyn Conn, dialect: Dialect) -> Result<(), StoreError> {
    c.batch(&dialect.schema("CREATE TABLE IF NOT EXISTS schema_version (version {INT} NOT NULL)"))?;
    let current = count(
        c,
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        &[],
    )?;
    let known = MIGRATIONS.len();
    let current = usize::try_from(current).map_err(|_| bad("schema version", current))?;
    if current > known {
        return Err(StoreError::Backend(format!(
            "database schema version {current} is newer than this keyhold ({known})"
        )));
    }
    for (i, template) in MIGRATIONS.iter().enumerate().skip(current) {
        c.batch(&dialect.schema(template))?;
        let version = i64::try_from(i + 1).map_err(|_| bad("schema version", i))?;
        c.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[version.into()],
        )?;
    }
    Ok(())
}

const KEY_COLS: &str = "key_id, account, description, key_spec, key_usage, origin, state, \
    created_at, deletion_date, pending_window_days, current_version, policy, key_manager, \
    rotation_period_days, next_rotation_at, expiration_model, valid_to, material_digest, \
    custom_key_store_id, multi_region";
const VERSION_COLS: &str = "key_id, version, wrapped_material, created_at, rotation_type, imported";
const ALIAS_COLS: &str = "account, name, target_key_id, created_at, updated_at";
const GRANT_COLS: &str = "grant_id, key_id, name, grantee, retiring, issuing_account, \
    operations, constraints, token, created_at, grantee_service, retiring_service, source_arn";
const PRINCIPAL_COLS: &str = "access_key_id, arn, account, wrapped_secret, created_at";
const CKS_COLS: &str =
    "id, account, name, cluster_id, trust_anchor, password_wrapped, connected, created_at";
const USAGE_COLS: &str = "key_id, operation, used_at, event_id";

fn key_from_row(mut r: Row) -> Result<KeyRecord, StoreError> {
    let account = r.text(1)?;
    let spec = r.text(3)?;
    let usage = r.text(4)?;
    let origin = r.text(5)?;
    let state = r.text(6)?;
    let manager = r.text(12)?;
    Ok(KeyRecord {
        key_id: r.key_id(0)?,
        description: r.text(2)?,
        key_spec: KeySpec::parse(&spec).ok_or_else(|| bad("key spec", &spec))?,
        key_usage: KeyUsage::parse(&usage).ok_or_else(|| bad("key usage", &usage))?,
        origin: Origin::parse(&origin).ok_or_else(|| bad("origin", &origin))?,
        state: KeyState::parse(&state).ok_or_else(|| bad("key state", &state))?,
        created_at: r.i64(7)?,
        deletion_date: r.opt_i64(8)?,
        pending_window_days: r.opt_u32(9)?,
        current_version: r.u32(10)?,
        policy: r
            .opt_text(11)?
            .unwrap_or_else(|| default_key_policy(&account)),
        key_manager: KeyManager::parse(&manager).ok_or_else(|| bad("key manager", &manager))?,
        rotation_period_days: r.opt_u32(13)?,
        next_rotation_at: r.opt_i64(14)?,
        expiration_model: r.opt_text(15)?,
        valid_to: r.opt_i64(16)?,
        material_digest: r.opt_text(17)?,
        custom_key_store_id: r.opt_text(18)?,
        multi_region: match r.opt_text(19)? {
            Some(t) => Some(serde_json::from_str(&t).map_err(|_| bad("multi-Region record", &t))?),
            None => None,
        },
        account,
    })
}

fn key_values(k: &KeyRecord) -> Vec<Value> {
    vec![
        (&k.key_id).into(),
        (&k.account).into(),
        (&k.description).into(),
        k.key_spec.as_str().into(),
        k.key_usage.as_str().into(),
        k.origin.as_str().into(),
        k.state.as_str().into(),
        k.created_at.into(),
        k.deletion_date.into(),
        k.pending_window_days.into(),
        k.current_version.into(),
        (&k.policy).into(),
        k.key_manager.as_str().into(),
        k.rotation_period_days.into(),
        k.next_rotation_at.into(),
        k.expiration_model.as_ref().into(),
        k.valid_to.into(),
        k.material_digest.as_ref().into(),
        k.custom_key_store_id.as_ref().into(),
        k.multi_region.as_ref().map(MultiRegion::to_json).into(),
    ]
}

fn version_from_row(mut r: Row) -> Result<KeyVersionRecord, StoreError> {
    Ok(KeyVersionRecord {
        key_id: r.key_id(0)?,
        version: r.u32(1)?,
        wrapped_material: r.blob(2)?,
        created_at: r.i64(3)?,
        rotation_type: r.opt_text(4)?,
        imported: match r.opt_text(5)? {
            Some(t) => Some(serde_json::from_str(&t).map_err(|_| bad("imported material", &t))?),
            None => None,
        },
    })
}

fn alias_from_row(mut r: Row) -> Result<AliasRecord, StoreError> {
    let name = r.text(1)?;
    Ok(AliasRecord {
        account: r.text(0)?,
        name: AliasName::parse(&name).map_err(|_| bad("alias", &name))?,
        target: r.key_id(2)?,
        created_at: r.i64(3)?,
        updated_at: r.i64(4)?,
    })
}

fn grant_from_row(mut r: Row) -> Result<GrantRecord, StoreError> {
    Ok(GrantRecord {
        grant_id: r.text(0)?,
        key_id: r.key_id(1)?,
        name: r.opt_text(2)?,
        grantee: r.text(3)?,
        retiring: r.opt_text(4)?,
        issuing_account: r.text(5)?,
        operations: r
            .text(6)?
            .split(',')
            .filter(|o| !o.is_empty())
            .map(str::to_string)
            .collect(),
        constraints: r.opt_text(7)?.as_deref().map(GrantConstraint::from_json),
        token: r.text(8)?,
        created_at: r.i64(9)?,
        grantee_service: r.opt_text(10)?,
        retiring_service: r.opt_text(11)?,
        source_arn: r.opt_text(12)?,
    })
}

fn principal_from_row(mut r: Row) -> Result<PrincipalRecord, StoreError> {
    Ok(PrincipalRecord {
        access_key_id: r.text(0)?,
        arn: r.text(1)?,
        account: r.text(2)?,
        wrapped_secret: r.blob(3)?,
        created_at: r.i64(4)?,
    })
}

fn cks_from_row(mut r: Row) -> Result<CustomKeyStoreRecord, StoreError> {
    Ok(CustomKeyStoreRecord {
        id: r.text(0)?,
        account: r.text(1)?,
        name: r.text(2)?,
        cluster_id: r.text(3)?,
        trust_anchor: r.text(4)?,
        password_wrapped: r.blob(5)?,
        connected: r.bool(6)?,
        created_at: r.i64(7)?,
    })
}

fn usage_from_row(mut r: Row) -> Result<KeyLastUsage, StoreError> {
    Ok(KeyLastUsage {
        key_id: r.key_id(0)?,
        operation: r.text(1)?,
        used_at: r.i64(2)?,
        event_id: r.text(3)?,
    })
}

fn tag_from_row(mut r: Row) -> Result<(KeyId, Tag), StoreError> {
    Ok((
        r.key_id(0)?,
        Tag {
            key: r.text(1)?,
            value: r.text(2)?,
        },
    ))
}

/// Rows exported at once.
const EXPORT_PAGE: usize = 1000;
#[cfg(test)]
pub(crate) const EXPORT_PAGE_FOR_TESTS: usize = EXPORT_PAGE;

/// Puts every row of `sql` (an ordered query) into `sink`, a page at a time, so an export of
/// any size holds one page in memory.
fn pages(
    c: &mut dyn Conn,
    sql: &str,
    sink: &mut dyn RecordSink,
    f: impl Fn(Row) -> Result<Record, StoreError>,
) -> Result<(), StoreError> {
    let mut offset = 0;
    loop {
        let rows = c.query(&format!("{sql} LIMIT {EXPORT_PAGE} OFFSET {offset}"), &[])?;
        let n = rows.len();
        for r in rows {
            sink.put(f(r)?)?;
        }
        if n < EXPORT_PAGE {
            return Ok(());
        }
        offset += n;
    }
}

pub(crate) fn all<T>(
    rows: Vec<Row>,
    f: impl Fn(Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    rows.into_iter().map(f).collect()
}

fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn insert_key(c: &mut dyn Conn, k: &KeyRecord) -> Result<(), StoreError> {
    c.execute(
        &format!(
            "INSERT INTO keys ({KEY_COLS}) VALUES ({})",
            placeholders(20)
        ),
        &key_values(k),
    )?;
    Ok(())
}

fn insert_version(c: &mut dyn Conn, v: &KeyVersionRecord) -> Result<(), StoreError> {
    c.execute(
        &format!("INSERT INTO key_versions ({VERSION_COLS}) VALUES ($1, $2, $3, $4, $5, $6)"),
        &[
            (&v.key_id).into(),
            v.version.into(),
            (&v.wrapped_material).into(),
            v.created_at.into(),
            v.rotation_type.as_ref().into(),
            v.imported.as_ref().map(ImportedMaterial::to_json).into(),
        ],
    )?;
    Ok(())
}

fn insert_alias(c: &mut dyn Conn, a: &AliasRecord) -> Result<(), StoreError> {
    c.execute(
        &format!("INSERT INTO aliases ({ALIAS_COLS}) VALUES ($1, $2, $3, $4, $5)"),
        &[
            (&a.account).into(),
            a.name.as_str().into(),
            (&a.target).into(),
            a.created_at.into(),
            a.updated_at.into(),
        ],
    )?;
    Ok(())
}

fn put_tag(c: &mut dyn Conn, id: &KeyId, t: &Tag) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO tags (key_id, tag_key, tag_value) VALUES ($1, $2, $3) \
         ON CONFLICT (key_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value",
        &[id.into(), (&t.key).into(), (&t.value).into()],
    )?;
    Ok(())
}

fn insert_grant(c: &mut dyn Conn, g: &GrantRecord) -> Result<(), StoreError> {
    c.execute(
        &format!(
            "INSERT INTO grants ({GRANT_COLS}) VALUES ({})",
            placeholders(13)
        ),
        &[
            (&g.grant_id).into(),
            (&g.key_id).into(),
            g.name.as_ref().into(),
            (&g.grantee).into(),
            g.retiring.as_ref().into(),
            (&g.issuing_account).into(),
            g.operations.join(",").into(),
            g.constraints.as_ref().map(GrantConstraint::to_json).into(),
            (&g.token).into(),
            g.created_at.into(),
            g.grantee_service.as_ref().into(),
            g.retiring_service.as_ref().into(),
            g.source_arn.as_ref().into(),
        ],
    )?;
    Ok(())
}

fn insert_principal(c: &mut dyn Conn, p: &PrincipalRecord) -> Result<(), StoreError> {
    c.execute(
        &format!("INSERT INTO principals ({PRINCIPAL_COLS}) VALUES ($1, $2, $3, $4, $5)"),
        &[
            (&p.access_key_id).into(),
            (&p.arn).into(),
            (&p.account).into(),
            (&p.wrapped_secret).into(),
            p.created_at.into(),
        ],
    )?;
    Ok(())
}

fn insert_cks(c: &mut dyn Conn, s: &CustomKeyStoreRecord) -> Result<(), StoreError> {
    c.execute(
        &format!(
            "INSERT INTO custom_key_stores ({CKS_COLS}) VALUES ({})",
            placeholders(8)
        ),
        &[
            (&s.id).into(),
            (&s.account).into(),
            (&s.name).into(),
            (&s.cluster_id).into(),
            (&s.trust_anchor).into(),
            (&s.password_wrapped).into(),
            s.connected.into(),
            s.created_at.into(),
        ],
    )?;
    Ok(())
}

fn insert_usage(c: &mut dyn Conn, u: &KeyLastUsage) -> Result<(), StoreError> {
    c.execute(
        &format!("INSERT INTO key_last_usage ({USAGE_COLS}) VALUES ($1, $2, $3, $4)"),
        &[
            (&u.key_id).into(),
            (&u.operation).into(),
            u.used_at.into(),
            (&u.event_id).into(),
        ],
    )?;
    Ok(())
}

/// Overwrites a key's mutable fields; `NotFound` when the key is gone.
fn write_key(c: &mut dyn Conn, k: &KeyRecord) -> Result<(), StoreError> {
    let n = c.execute(
        "UPDATE keys SET description = $2, state = $3, deletion_date = $4, \
         pending_window_days = $5, current_version = $6, policy = $7, \
         rotation_period_days = $8, next_rotation_at = $9, expiration_model = $10, \
         valid_to = $11, material_digest = $12, multi_region = $13 WHERE key_id = $1",
        &[
            (&k.key_id).into(),
            (&k.description).into(),
            k.state.as_str().into(),
            k.deletion_date.into(),
            k.pending_window_days.into(),
            k.current_version.into(),
            (&k.policy).into(),
            k.rotation_period_days.into(),
            k.next_rotation_at.into(),
            k.expiration_model.as_ref().into(),
            k.valid_to.into(),
            k.material_digest.as_ref().into(),
            k.multi_region.as_ref().map(MultiRegion::to_json).into(),
        ],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// `Ok` when a statement changed a row, `NotFound` otherwise.
fn found(n: u64) -> Result<(), StoreError> {
    if n == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

fn key_ids<B: Backend>(b: &B, sql: &'static str, now_ms: i64) -> Result<Vec<KeyId>, StoreError> {
    b.run(Tx::Read, move |c| {
        all(c.query(sql, &[now_ms.into()])?, |mut r| r.key_id(0))
    })
}

impl<B: Backend> Store for B {
    fn create_key(
        &self,
        key: &KeyRecord,
        version: Option<&KeyVersionRecord>,
        tags: &[Tag],
        alias: Option<&AliasRecord>,
    ) -> Result<(), StoreError> {
        let (key, version, tags, alias) =
            (key.clone(), version.cloned(), tags.to_vec(), alias.cloned());
        self.run(Tx::Write, move |c| {
            insert_key(c, &key)?;
            if let Some(v) = &version {
                insert_version(c, v)?;
            }
            if let Some(a) = &alias {
                insert_alias(c, a)?;
                B::DIALECT.notify(c, None)?;
            }
            for t in &tags {
                put_tag(c, &key.key_id, t)?;
            }
            Ok(())
        })
    }

    fn create_custom_key_store(&self, s: &CustomKeyStoreRecord) -> Result<(), StoreError> {
        let s = s.clone();
        self.run(Tx::Write, move |c| insert_cks(c, &s))
    }

    fn list_custom_key_stores(
        &self,
        account: Option<&str>,
    ) -> Result<Vec<CustomKeyStoreRecord>, StoreError> {
        let account = Value::from(account);
        self.run(Tx::Read, move |c| {
            let rows = c.query(
                &format!(
                    "SELECT {CKS_COLS} FROM custom_key_stores \
                     WHERE CAST($1 AS TEXT) IS NULL OR account = $1 ORDER BY id"
                ),
                std::slice::from_ref(&account),
            )?;
            all(rows, cks_from_row)
        })
    }

    fn update_custom_key_store(&self, s: &CustomKeyStoreRecord) -> Result<(), StoreError> {
        let s = s.clone();
        self.run(Tx::Write, move |c| {
            found(c.execute(
                "UPDATE custom_key_stores SET name = $2, cluster_id = $3, \
                 password_wrapped = $4, connected = $5 WHERE id = $1",
                &[
                    (&s.id).into(),
                    (&s.name).into(),
                    (&s.cluster_id).into(),
                    (&s.password_wrapped).into(),
                    s.connected.into(),
                ],
            )?)
        })
    }

    fn delete_custom_key_store(&self, id: &str) -> Result<(), StoreError> {
        let id = Value::from(id);
        self.run(Tx::Write, move |c| {
            c.execute(
                "DELETE FROM custom_key_stores WHERE id = $1",
                std::slice::from_ref(&id),
            )
            .map(|_| ())
        })
    }

    fn count_keys_in_custom_key_store(&self, id: &str) -> Result<u64, StoreError> {
        let id = Value::from(id);
        let n = self.run(Tx::Read, move |c| {
            count(
                c,
                "SELECT COUNT(*) FROM keys WHERE custom_key_store_id = $1",
                std::slice::from_ref(&id),
            )
        })?;
        u64::try_from(n).map_err(|_| bad("count", n))
    }

    fn create_keys(&self, keys: &[(KeyRecord, KeyVersionRecord)]) -> Result<(), StoreError> {
        let keys = keys.to_vec();
        self.run(Tx::Write, move |c| {
            for (key, version) in &keys {
                insert_key(c, key)?;
                insert_version(c, version)?;
            }
            Ok(())
        })
    }

    fn replace_material(
        &self,
        key: &KeyRecord,
        versions: &[KeyVersionRecord],
    ) -> Result<(), StoreError> {
        let (key, versions) = (key.clone(), versions.to_vec());
        self.run(Tx::Write, move |c| {
            c.execute(
                "DELETE FROM key_versions WHERE key_id = $1",
                &[(&key.key_id).into()],
            )?;
            for v in &versions {
                insert_version(c, v)?;
            }
            write_key(c, &key)?;
            B::DIALECT.notify(c, Some(&key.key_id))
        })
    }

    fn keys_due_for_expiry(&self, now_ms: i64) -> Result<Vec<KeyId>, StoreError> {
        key_ids(
            self,
            "SELECT key_id FROM keys WHERE valid_to IS NOT NULL AND valid_to <= $1",
            now_ms,
        )
    }

    fn get_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let id = Value::from(id);
        self.run(Tx::Read, move |c| {
            query_opt(
                c,
                &format!("SELECT {KEY_COLS} FROM keys WHERE key_id = $1"),
                std::slice::from_ref(&id),
            )?
            .map(key_from_row)
            .transpose()
        })
    }

    fn update_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        let key = key.clone();
        self.run(Tx::Write, move |c| {
            write_key(c, &key)?;
            B::DIALECT.notify(c, Some(&key.key_id))
        })
    }

    fn list_keys(
        &self,
        account: &str,
        after: Option<&KeyId>,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let params = [
            Value::from(account),
            Value::from(after.map(KeyId::to_string).unwrap_or_default()),
            Value::from(i64::try_from(limit).unwrap_or(i64::MAX)),
        ];
        self.run(Tx::Read, move |c| {
            let rows = c.query(
                &format!(
                    "SELECT {KEY_COLS} FROM keys WHERE account = $1 AND key_id > $2 \
                     ORDER BY key_id LIMIT $3"
                ),
                &params,
            )?;
            all(rows, key_from_row)
        })
    }

    fn get_key_version(
        &self,
        id: &KeyId,
        version: u32,
    ) -> Result<Option<KeyVersionRecord>, StoreError> {
        let params = [Value::from(id), Value::from(version)];
        self.run(Tx::Read, move |c| {
            query_opt(
                c,
                &format!(
                    "SELECT {VERSION_COLS} FROM key_versions WHERE key_id = $1 AND version = $2"
                ),
                &params,
            )?
            .map(version_from_row)
            .transpose()
        })
    }

    fn add_key_version(
        &self,
        key: &KeyRecord,
        version: &KeyVersionRecord,
    ) -> Result<(), StoreError> {
        let (key, version) = (key.clone(), version.clone());
        self.run(Tx::Write, move |c| {
            insert_version(c, &version)?;
            found(c.execute(
                "UPDATE keys SET current_version = $2, next_rotation_at = $3 WHERE key_id = $1",
                &[
                    (&key.key_id).into(),
                    key.current_version.into(),
                    key.next_rotation_at.into(),
                ],
            )?)?;
            B::DIALECT.notify(c, Some(&key.key_id))
        })
    }

    fn list_key_versions(&self, id: &KeyId) -> Result<Vec<KeyVersionRecord>, StoreError> {
        let id = Value::from(id);
        self.run(Tx::Read, move |c| {
            let rows = c.query(
                &format!(
                    "SELECT {VERSION_COLS} FROM key_versions WHERE key_id = $1 ORDER BY version"
                ),
                std::slice::from_ref(&id),
            )?;
            all(rows, version_from_row)
        })
    }

    fn keys_due_for_rotation(&self, now_ms: i64) -> Result<Vec<KeyId>, StoreError> {
        key_ids(
            self,
            "SELECT key_id FROM keys WHERE next_rotation_at IS NOT NULL \
             AND next_rotation_at <= $1 AND state = 'Enabled'",
            now_ms,
        )
    }

    fn keys_due_for_deletion(&self, now_ms: i64) -> Result<Vec<KeyId>, StoreError> {
        key_ids(
            self,
            "SELECT key_id FROM keys WHERE deletion_date IS NOT NULL AND deletion_date <= $1",
            now_ms,
        )
    }

    fn delete_key(&self, id: &KeyId) -> Result<(), StoreError> {
        let id = *id;
        self.run(Tx::Write, move |c| {
            let param = [Value::from(&id)];
            // Explicit deletes rather than relying on cascades alone, so the material is gone
            // even from a database opened without foreign-key enforcement.
            for sql in [
                "DELETE FROM key_versions WHERE key_id = $1",
                "DELETE FROM aliases WHERE target_key_id = $1",
                "DELETE FROM tags WHERE key_id = $1",
                "DELETE FROM grants WHERE key_id = $1",
                "DELETE FROM key_last_usage WHERE key_id = $1",
            ] {
                c.execute(sql, &param)?;
            }
            found(c.execute("DELETE FROM keys WHERE key_id = $1", &param)?)?;
            B::DIALECT.notify(c, Some(&id))
        })
    }

    fn create_alias(&self, alias: &AliasRecord) -> Result<(), StoreError> {
        let alias = alias.clone();
        self.run(Tx::Write, move |c| {
            insert_alias(c, &alias)?;
            B::DIALECT.notify(c, None)
        })
    }

    fn update_alias(
        &self,
        account: &str,
        name: &AliasName,
        target: &KeyId,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let params = [
            Value::from(account),
            Value::from(name.as_str()),
            Value::from(target),
            Value::from(now_ms),
        ];
        self.run(Tx::Write, move |c| {
            found(c.execute(
                "UPDATE aliases SET target_key_id = $3, updated_at = $4 \
                 WHERE account = $1 AND name = $2",
                &params,
            )?)?;
            B::DIALECT.notify(c, None)
        })
    }

    fn delete_alias(&self, account: &str, name: &AliasName) -> Result<(), StoreError> {
        let params = [Value::from(account), Value::from(name.as_str())];
        self.run(Tx::Write, move |c| {
            found(c.execute(
                "DELETE FROM aliases WHERE account = $1 AND name = $2",
                &params,
            )?)?;
            B::DIALECT.notify(c, None)
        })
    }

    fn get_alias(
        &self,
        account: &str,
        name: &AliasName,
    ) -> Result<Option<AliasRecord>, StoreError> {
        let params = [Value::from(account), Value::from(name.as_str())];
        self.run(Tx::Read, move |c| {
            query_opt(
                c,
                &format!("SELECT {ALIAS_COLS} FROM aliases WHERE account = $1 AND name = $2"),
                &params,
            )?
            .map(alias_from_row)
            .transpose()
        })
    }

    fn list_aliases(
        &self,
        account: &str,
        target: Option<&KeyId>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AliasRecord>, StoreError> {
        let params = [
            Value::from(account),
            Value::from(target),
            Value::from(after.unwrap_or("")),
            Value::from(i64::try_from(limit).unwrap_or(i64::MAX)),
        ];
        self.run(Tx::Read, move |c| {
            let rows = c.query(
                &format!(
                    "SELECT {ALIAS_COLS} FROM aliases WHERE account = $1 \
                     AND (CAST($2 AS TEXT) IS NULL OR target_key_id = $2) AND name > $3 \
                     ORDER BY name{} LIMIT $4",
                    B::DIALECT.collate_c()
                ),
                &params,
            )?;
            all(rows, alias_from_row)
        })
    }

    fn put_tags(&self, id: &KeyId, tags: &[Tag]) -> Result<(), StoreError> {
        let (id, tags) = (*id, tags.to_vec());
        self.run(Tx::Write, move |c| {
            for t in &tags {
                put_tag(c, &id, t)?;
            }
            Ok(())
        })
    }

    fn watch(&self, on_change: Box<dyn Fn(Option<KeyId>) + Send + Sync>) {
        Backend::watch(self, on_change);
    }

    fn remove_tags(&self, id: &KeyId, keys: &[String]) -> Result<(), StoreError> {
        let (id, keys) = (*id, keys.to_vec());
        self.run(Tx::Write, move |c| {
            for k in &keys {
                c.execute(
                    "DELETE FROM tags WHERE key_id = $1 AND tag_key = $2",
                    &[(&id).into(), k.into()],
                )?;
            }
            Ok(())
        })
    }

    fn list_tags(&self, id: &KeyId) -> Result<Vec<Tag>, StoreError> {
        let id = Value::from(id);
        self.run(Tx::Read, move |c| {
            let rows = c.query(
                &format!(
                    "SELECT key_id, tag_key, tag_value FROM tags WHERE key_id = $1 \
                     ORDER BY tag_key{}",
                    B::DIALECT.collate_c()
                ),
                std::slice::from_ref(&id),
            )?;
            all(rows, |r| tag_from_row(r).map(|(_, t)| t))
        })
    }

    fn create_grant(&self, g: &GrantRecord) -> Result<(), StoreError> {
        let g = g.clone();
        self.run(Tx::Write, move |c| {
            insert_grant(c, &g)?;
            B::DIALECT.notify(c, Some(&g.key_id))
        })
    }

    fn list_grants(&self, key: &KeyId) -> Result<Vec<GrantRecord>, StoreError> {
        let key = Value::from(key);
        self.run(Tx::Read, move |c| {
            let rows = c.query(
                &format!("SELECT {GRANT_COLS} FROM grants WHERE key_id = $1 ORDER BY grant_id"),
                std::slice::from_ref(&key),
            )?;
            all(rows, grant_from_row)
        })
    }

    fn list_retirable_grants(&self, retiring: &str) -> Result<Vec<GrantRecord>, StoreError> {
        let retiring = Value::from(retiring);
        self.run(Tx::Read, move |c| {
            let rows = c.query(
                &format!(
                    "SELECT {GRANT_COLS} FROM grants WHERE retiring = $1 OR retiring_service = $1 \
                     ORDER BY grant_id"
                ),
                std::slice::from_ref(&retiring),
            )?;
            all(rows, grant_from_row)
        })
    }

    fn find_grant(
        &self,
        grant_id: Option<&str>,
        token: Option<&str>,
    ) -> Result<Option<GrantRecord>, StoreError> {
        if grant_id.is_none() && token.is_none() {
            return Ok(None);
        }
        let params = [Value::from(grant_id), Value::from(token)];
        self.run(Tx::Read, move |c| {
            query_opt(
                c,
                &format!(
                    "SELECT {GRANT_COLS} FROM grants \
                     WHERE (CAST($1 AS TEXT) IS NULL OR grant_id = $1) \
                     AND (CAST($2 AS TEXT) IS NULL OR token = $2)"
                ),
                &params,
            )?
            .map(grant_from_row)
            .transpose()
        })
    }

    fn delete_grant(&self, grant_id: &str) -> Result<(), StoreError> {
        let grant_id = Value::from(grant_id);
        self.run(Tx::Write, move |c| {
            let Some(mut row) = query_opt(
                c,
                "DELETE FROM grants WHERE grant_id = $1 RETURNING key_id",
                std::slice::from_ref(&grant_id),
            )?
            else {
                return Err(StoreError::NotFound);
            };
            let key = row.key_id(0)?;
            B::DIALECT.notify(c, Some(&key))
        })
    }

    fn put_key_usage(&self, usage: &[KeyLastUsage]) -> Result<(), StoreError> {
        let usage = usage.to_vec();
        self.run(Tx::Write, move |c| {
            for u in &usage {
                // Keys deleted meanwhile are skipped; an older record never replaces a newer
                // one.
                c.execute(
                    &format!(
                        "INSERT INTO key_last_usage ({USAGE_COLS}) \
                         SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM keys WHERE key_id = $1) \
                         ON CONFLICT (key_id) DO UPDATE SET operation = excluded.operation, \
                         used_at = excluded.used_at, event_id = excluded.event_id \
                         WHERE excluded.used_at >= key_last_usage.used_at"
                    ),
                    &[
                        (&u.key_id).into(),
                        (&u.operation).into(),
                        u.used_at.into(),
                        (&u.event_id).into(),
                    ],
                )?;
            }
            Ok(())
        })
    }

    fn get_key_usage(&self, id: &KeyId) -> Result<Option<KeyLastUsage>, StoreError> {
        let id = Value::from(id);
        self.run(Tx::Read, move |c| {
            query_opt(
                c,
                &format!("SELECT {USAGE_COLS} FROM key_last_usage WHERE key_id = $1"),
                std::slice::from_ref(&id),
            )?
            .map(usage_from_row)
            .transpose()
        })
    }

    fn export_to(&self, sink: Arc<Mutex<dyn RecordSink>>) -> Result<(), StoreError> {
        self.run(Tx::Snapshot, move |c| {
            let mut sink = sink
                .lock()
                .map_err(|_| StoreError::Backend("export sink poisoned".into()))?;
            // A retried transaction starts the export over.
            sink.restart()?;
            let sink = &mut *sink;
            pages(
                c,
                &format!("SELECT {KEY_COLS} FROM keys ORDER BY key_id"),
                sink,
                |r| key_from_row(r).map(Record::Key),
            )?;
            pages(
                c,
                &format!("SELECT {VERSION_COLS} FROM key_versions ORDER BY key_id, version"),
                sink,
                |r| version_from_row(r).map(Record::Version),
            )?;
            pages(
                c,
                &format!("SELECT {ALIAS_COLS} FROM aliases ORDER BY account, name"),
                sink,
                |r| alias_from_row(r).map(Record::Alias),
            )?;
            pages(
                c,
                "SELECT key_id, tag_key, tag_value FROM tags ORDER BY key_id, tag_key",
                sink,
                |r| tag_from_row(r).map(|(id, t)| Record::Tag(id, t)),
            )?;
            pages(
                c,
                &format!("SELECT {GRANT_COLS} FROM grants ORDER BY grant_id"),
                sink,
                |r| grant_from_row(r).map(Record::Grant),
            )?;
            pages(
                c,
                &format!("SELECT {PRINCIPAL_COLS} FROM principals ORDER BY access_key_id"),
                sink,
                |r| principal_from_row(r).map(Record::Principal),
            )?;
            pages(
                c,
                &format!("SELECT {USAGE_COLS} FROM key_last_usage ORDER BY key_id"),
                sink,
                |r| usage_from_row(r).map(Record::Usage),
            )?;
            pages(
                c,
                &format!("SELECT {CKS_COLS} FROM custom_key_stores ORDER BY id"),
                sink,
                |r| cks_from_row(r).map(Record::CustomKeyStore),
            )
        })
    }

    fn import_from(&self, source: Arc<Mutex<dyn RecordSource>>) -> Result<(), StoreError> {
        self.run(Tx::Write, move |c| {
            B::DIALECT.lock(c, &["keys", "principals"])?;
            let existing = count(
                c,
                "SELECT (SELECT COUNT(*) FROM keys) + (SELECT COUNT(*) FROM principals)",
                &[],
            )?;
            if existing > 0 {
                return Err(StoreError::NotEmpty);
            }
            let mut source = source
                .lock()
                .map_err(|_| StoreError::Backend("import source poisoned".into()))?;
            // A retried transaction reads the records again from the first.
            source.rewind()?;
            while let Some(r) = source.next_record()? {
                match &r {
                    Record::Key(k) => insert_key(c, k)?,
                    Record::Version(v) => insert_version(c, v)?,
                    Record::Alias(a) => insert_alias(c, a)?,
                    Record::Tag(id, t) => put_tag(c, id, t)?,
                    Record::Grant(g) => insert_grant(c, g)?,
                    Record::Principal(p) => insert_principal(c, p)?,
                    Record::Usage(u) => insert_usage(c, u)?,
                    Record::CustomKeyStore(cks) => insert_cks(c, cks)?,
                }
            }
            Ok(())
        })
    }

    fn replace_wrapped(&self, changes: &[WrappedChange]) -> Result<(), StoreError> {
        let changes = changes.to_vec();
        self.run(Tx::Write, move |c| {
            // Every table that holds a wrapped secret, so none is added or changed meanwhile.
            B::DIALECT.lock(c, &["key_versions", "principals", "custom_key_stores"])?;
            for change in &changes {
                let n = match change {
                    WrappedChange::KeyMaterial {
                        key_id,
                        version,
                        old,
                        new,
                    } => c.execute(
                        "UPDATE key_versions SET wrapped_material = $3 \
                         WHERE key_id = $1 AND version = $2 AND wrapped_material = $4",
                        &[key_id.into(), (*version).into(), new.into(), old.into()],
                    )?,
                    WrappedChange::PrincipalSecret {
                        access_key_id,
                        old,
                        new,
                    } => c.execute(
                        "UPDATE principals SET wrapped_secret = $2 \
                         WHERE access_key_id = $1 AND wrapped_secret = $3",
                        &[access_key_id.into(), new.into(), old.into()],
                    )?,
                    WrappedChange::KeyStorePassword { id, old, new } => c.execute(
                        "UPDATE custom_key_stores SET password_wrapped = $2 \
                         WHERE id = $1 AND password_wrapped = $3",
                        &[id.into(), new.into(), old.into()],
                    )?,
                };
                if n != 1 {
                    // The error rolls every earlier change back.
                    return Err(StoreError::Backend(
                        "a wrapped secret changed while the root key was rotated".into(),
                    ));
                }
            }
            let rows = count(
                c,
                // Deleted imported material (nothing wrapped) has nothing to rewrap.
                "SELECT (SELECT COUNT(*) FROM key_versions WHERE length(wrapped_material) > 0) \
                 + (SELECT COUNT(*) FROM principals) + (SELECT COUNT(*) FROM custom_key_stores)",
                &[],
            )?;
            if usize::try_from(rows).ok() != Some(changes.len()) {
                return Err(StoreError::Backend(
                    "wrapped secrets were added while the root key was rotated".into(),
                ));
            }
            Ok(())
        })
    }

    fn put_audit_head(&self, head: &AuditHead) -> Result<(), StoreError> {
        let digest = i64::try_from(head.digest).map_err(|_| bad("digest number", head.digest))?;
        let params = [
            Value::from(&head.node),
            Value::from(digest),
            Value::from(&head.digest_hash),
            Value::from(head.recorded_at),
        ];
        self.run(Tx::Write, move |c| {
            c.execute(
                "INSERT INTO audit_heads (node, digest, digest_hash, recorded_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (node) DO UPDATE SET \
                 digest = excluded.digest, digest_hash = excluded.digest_hash, \
                 recorded_at = excluded.recorded_at WHERE excluded.digest > audit_heads.digest",
                &params,
            )
            .map(|_| ())
        })
    }

    fn get_audit_head(&self, node: &str) -> Result<Option<AuditHead>, StoreError> {
        let node = Value::from(node);
        self.run(Tx::Read, move |c| {
            let Some(mut r) = query_opt(
                c,
                "SELECT node, digest, digest_hash, recorded_at FROM audit_heads WHERE node = $1",
                std::slice::from_ref(&node),
            )?
            else {
                return Ok(None);
            };
            let digest = r.i64(1)?;
            Ok(Some(AuditHead {
                node: r.text(0)?,
                digest: u64::try_from(digest).map_err(|_| bad("digest number", digest))?,
                digest_hash: r.text(2)?,
                recorded_at: r.i64(3)?,
            }))
        })
    }

    fn add_admin_event(&self, e: &AdminEvent) -> Result<(), StoreError> {
        let params = [
            Value::from(&e.id),
            Value::from(&e.event_name),
            Value::from(&e.detail),
            Value::from(e.created_at),
        ];
        self.run(Tx::Write, move |c| {
            c.execute(
                "INSERT INTO admin_events (id, event_name, detail, created_at) \
                 VALUES ($1, $2, $3, $4)",
                &params,
            )
            .map(|_| ())
        })
    }

    fn list_admin_events(&self, limit: usize) -> Result<Vec<AdminEvent>, StoreError> {
        let limit = Value::from(i64::try_from(limit).unwrap_or(i64::MAX));
        self.run(Tx::Read, move |c| {
            let rows = c.query(
                "SELECT id, event_name, detail, created_at FROM admin_events \
                 ORDER BY created_at, id LIMIT $1",
                std::slice::from_ref(&limit),
            )?;
            all(rows, |mut r| {
                Ok(AdminEvent {
                    id: r.text(0)?,
                    event_name: r.text(1)?,
                    detail: r.text(2)?,
                    created_at: r.i64(3)?,
                })
            })
        })
    }

    fn delete_admin_event(&self, id: &str) -> Result<(), StoreError> {
        let id = Value::from(id);
        self.run(Tx::Write, move |c| {
            c.execute(
                "DELETE FROM admin_events WHERE id = $1",
                std::slice::from_ref(&id),
            )
            .map(|_| ())
        })
    }

    fn create_principal(&self, p: &PrincipalRecord) -> Result<(), StoreError> {
        let p = p.clone();
        self.run(Tx::Write, move |c| insert_principal(c, &p))
    }

    fn get_principal(&self, access_key_id: &str) -> Result<Option<PrincipalRecord>, StoreError> {
        let akid = Value::from(access_key_id);
        self.run(Tx::Read, move |c| {
            query_opt(
                c,
                &format!("SELECT {PRINCIPAL_COLS} FROM principals WHERE access_key_id = $1"),
                std::slice::from_ref(&akid),
            )?
            .map(principal_from_row)
            .transpose()
        })
    }

    fn list_principals(&self) -> Result<Vec<PrincipalRecord>, StoreError> {
        self.run(Tx::Read, |c| {
            let rows = c.query(
                &format!("SELECT {PRINCIPAL_COLS} FROM principals ORDER BY arn"),
                &[],
            )?;
            all(rows, principal_from_row)
        })
    }

    fn delete_principal(&self, access_key_id_or_arn: &str) -> Result<(), StoreError> {
        let id = Value::from(access_key_id_or_arn);
        self.run(Tx::Write, move |c| {
            found(c.execute(
                "DELETE FROM principals WHERE access_key_id = $1 OR arn = $1",
                std::slice::from_ref(&id),
            )?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_statements_use_numbered_question_marks() {
        assert_eq!(
            Dialect::Sqlite.statement("SELECT $1, $12 FROM t WHERE a = '$x' AND b = $2"),
            "SELECT ?1, ?12 FROM t WHERE a = '$x' AND b = ?2"
        );
        assert_eq!(Dialect::Postgres.statement("SELECT $1"), "SELECT $1");
    }

    #[test]
    fn rows_decode_fallibly() {
        let mut r = Row(vec![
            Value::Int(-1),
            Value::Int(i64::from(u32::MAX) + 1),
            Value::Text("x".into()),
            Value::Null,
            Value::Int(2),
            Value::Text("not-a-key-id".into()),
        ]);
        assert!(matches!(r.u32(0), Err(StoreError::Backend(_))));
        assert!(matches!(r.u32(1), Err(StoreError::Backend(_))));
        assert!(matches!(r.i64(2), Err(StoreError::Backend(_))));
        assert!(matches!(r.text(3), Err(StoreError::Backend(_))));
        assert!(matches!(r.bool(4), Err(StoreError::Backend(_))));
        assert!(matches!(r.key_id(5), Err(StoreError::Backend(_))));
        assert!(matches!(r.text(9), Err(StoreError::Backend(_))));
    }

    #[test]
    fn schemas_differ_only_in_column_types() {
        for i in 0..MIGRATIONS.len() {
            let (Some(lite), Some(pg)) = (
                migration(Dialect::Sqlite, i),
                migration(Dialect::Postgres, i),
            ) else {
                panic!("migration {i} missing");
            };
            let normal = |s: &str| {
                s.replace("BIGINT", "INTEGER")
                    .replace("BYTEA", "BLOB")
                    .replace("BOOLEAN", "INTEGER")
                    .replace("TEXT COLLATE \"C\"", "TEXT")
            };
            assert_eq!(normal(&lite), normal(&pg));
            assert!(!lite.contains('{') && !pg.contains('{'));
        }
    }
}
