//! The PostgreSQL backend (also for Postgres-wire distributed SQL), for several keyhold nodes
//! sharing one state.
//!
//! Statements run on a small pool of dedicated threads, each with its own connection, so the
//! blocking client is never driven from inside an async runtime; a caller waits at most
//! [`CALL_TIMEOUT`] for a connection (`Unavailable`, which the engine answers as
//! `DependencyTimeoutException`). A lost connection is re-established on the next call.
//! Migrations run under an advisory lock, so nodes starting together do not race.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyhold_core::grant::GrantConstraint;
use keyhold_core::ids::{AliasName, KeyId};
use keyhold_core::key::{KeyManager, KeySpec, KeyState, KeyUsage, Origin};
use keyhold_core::policy::default_key_policy;
use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls, Row, Transaction};

use crate::{
    AliasRecord, CustomKeyStoreRecord, GrantRecord, KeyLastUsage, KeyRecord, KeyVersionRecord,
    PrincipalRecord, Snapshot, Store, StoreError, Tag, WrappedChange,
};

/// Longest wait for a connection and a statement.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections (and threads) in the pool.
const POOL_SIZE: usize = 4;
/// Calls that may wait for a connection before further calls are refused as overload.
const QUEUE_LEN: usize = 256;
/// Advisory lock id guarding migrations.
const MIGRATION_LOCK: i64 = 0x6b_6579_686f_6c64;

/// Versioned migrations in PostgreSQL's dialect; they mirror the SQLite ones step for step.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE keys (
    key_id TEXT PRIMARY KEY, account TEXT NOT NULL, description TEXT NOT NULL,
    key_spec TEXT NOT NULL, key_usage TEXT NOT NULL, origin TEXT NOT NULL, state TEXT NOT NULL,
    created_at BIGINT NOT NULL, deletion_date BIGINT, pending_window_days BIGINT,
    current_version BIGINT NOT NULL
);
CREATE INDEX keys_by_account ON keys(account, key_id);
CREATE INDEX keys_by_deletion ON keys(deletion_date) WHERE deletion_date IS NOT NULL;
CREATE TABLE key_versions (
    key_id TEXT NOT NULL REFERENCES keys(key_id) ON DELETE CASCADE, version BIGINT NOT NULL,
    wrapped_material BYTEA NOT NULL, created_at BIGINT NOT NULL, PRIMARY KEY (key_id, version)
);
CREATE TABLE aliases (
    account TEXT NOT NULL, name TEXT NOT NULL,
    target_key_id TEXT NOT NULL REFERENCES keys(key_id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, PRIMARY KEY (account, name)
);
CREATE INDEX aliases_by_target ON aliases(target_key_id);
CREATE TABLE tags (
    key_id TEXT NOT NULL REFERENCES keys(key_id) ON DELETE CASCADE, tag_key TEXT NOT NULL,
    tag_value TEXT NOT NULL, PRIMARY KEY (key_id, tag_key)
);
CREATE TABLE principals (
    access_key_id TEXT PRIMARY KEY, arn TEXT NOT NULL UNIQUE, account TEXT NOT NULL,
    wrapped_secret BYTEA NOT NULL, created_at BIGINT NOT NULL
);
"#,
    r#"
ALTER TABLE keys ADD COLUMN policy TEXT;
ALTER TABLE keys ADD COLUMN key_manager TEXT NOT NULL DEFAULT 'CUSTOMER';
ALTER TABLE keys ADD COLUMN rotation_period_days BIGINT;
ALTER TABLE keys ADD COLUMN next_rotation_at BIGINT;
ALTER TABLE key_versions ADD COLUMN rotation_type TEXT;
CREATE INDEX keys_by_rotation ON keys(next_rotation_at) WHERE next_rotation_at IS NOT NULL;
"#,
    r#"
CREATE TABLE grants (
    grant_id TEXT PRIMARY KEY, key_id TEXT NOT NULL REFERENCES keys(key_id) ON DELETE CASCADE,
    name TEXT, grantee TEXT NOT NULL, retiring TEXT, issuing_account TEXT NOT NULL,
    operations TEXT NOT NULL, constraints TEXT, token TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
CREATE INDEX grants_by_key ON grants(key_id, grant_id);
CREATE INDEX grants_by_retiring ON grants(retiring) WHERE retiring IS NOT NULL;
"#,
    r#"
CREATE TABLE key_last_usage (
    key_id TEXT PRIMARY KEY REFERENCES keys(key_id) ON DELETE CASCADE,
    operation TEXT NOT NULL, used_at BIGINT NOT NULL, event_id TEXT NOT NULL
);
"#,
    r#"
ALTER TABLE keys ADD COLUMN expiration_model TEXT;
ALTER TABLE keys ADD COLUMN valid_to BIGINT;
ALTER TABLE keys ADD COLUMN material_digest TEXT;
CREATE INDEX keys_by_valid_to ON keys(valid_to) WHERE valid_to IS NOT NULL;
"#,
    r#"
ALTER TABLE keys ADD COLUMN custom_key_store_id TEXT;
CREATE INDEX keys_by_custom_key_store ON keys(custom_key_store_id)
    WHERE custom_key_store_id IS NOT NULL;
CREATE TABLE custom_key_stores (
    id TEXT PRIMARY KEY, account TEXT NOT NULL, name TEXT NOT NULL,
    cluster_id TEXT NOT NULL UNIQUE, trust_anchor TEXT NOT NULL, password_wrapped BYTEA NOT NULL,
    connected BOOLEAN NOT NULL, created_at BIGINT NOT NULL, UNIQUE (account, name)
);
"#,
];

type Job = Box<dyn FnOnce(&mut Option<Client>, &postgres::Config) + Send>;

/// A store in PostgreSQL.
pub struct PgStore {
    /// Work for the connection threads.
    jobs: Mutex<SyncSender<Job>>,
    /// How to connect (for the change listener).
    config: postgres::Config,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgStore")
    }
}

fn pg(e: postgres::Error) -> StoreError {
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::FOREIGN_KEY_VIOLATION => {
            StoreError::AlreadyExists
        }
        Some(c) if c.code().starts_with("08") || *c == SqlState::ADMIN_SHUTDOWN => {
            StoreError::Unavailable(e.to_string())
        }
        None if e.is_closed() => StoreError::Unavailable(e.to_string()),
        None => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Backend(e.to_string()),
    }
}

fn bad(what: &str, v: &str) -> StoreError {
    StoreError::Backend(format!("bad {what} {v:?} in store"))
}

fn key_id(s: &str) -> Result<KeyId, StoreError> {
    KeyId::parse(s).map_err(|_| bad("key id", s))
}

const KEY_COLS: &str = "key_id, account, description, key_spec, key_usage, origin, state, \
    created_at, deletion_date, pending_window_days, current_version, policy, key_manager, \
    rotation_period_days, next_rotation_at, expiration_model, valid_to, material_digest, \
    custom_key_store_id";

fn key_from_row(r: &Row) -> Result<KeyRecord, StoreError> {
    let account: String = r.get(1);
    let spec: String = r.get(3);
    let usage: String = r.get(4);
    let origin: String = r.get(5);
    let state: String = r.get(6);
    let manager: String = r.get(12);
    let policy: Option<String> = r.get(11);
    Ok(KeyRecord {
        key_id: key_id(r.get(0))?,
        description: r.get(2),
        key_spec: KeySpec::parse(&spec).ok_or_else(|| bad("key spec", &spec))?,
        key_usage: KeyUsage::parse(&usage).ok_or_else(|| bad("key usage", &usage))?,
        origin: Origin::parse(&origin).ok_or_else(|| bad("origin", &origin))?,
        state: KeyState::parse(&state).ok_or_else(|| bad("key state", &state))?,
        created_at: r.get(7),
        deletion_date: r.get(8),
        pending_window_days: r.get::<_, Option<i64>>(9).map(|v| v as u32),
        current_version: r.get::<_, i64>(10) as u32,
        policy: policy.unwrap_or_else(|| default_key_policy(&account)),
        key_manager: KeyManager::parse(&manager).ok_or_else(|| bad("key manager", &manager))?,
        rotation_period_days: r.get::<_, Option<i64>>(13).map(|v| v as u32),
        next_rotation_at: r.get(14),
        expiration_model: r.get(15),
        valid_to: r.get(16),
        material_digest: r.get(17),
        custom_key_store_id: r.get(18),
        account,
    })
}

fn insert_grant(c: &mut impl postgres::GenericClient, g: &GrantRecord) -> Result<(), StoreError> {
    c.execute(
        &format!("INSERT INTO grants ({GRANT_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)"),
        &[
            &g.grant_id,
            &g.key_id.to_string(),
            &g.name,
            &g.grantee,
            &g.retiring,
            &g.issuing_account,
            &g.operations.join(","),
            &g.constraints.as_ref().map(GrantConstraint::to_json),
            &g.token,
            &g.created_at,
        ],
    )
    .map_err(pg)?;
    Ok(())
}

fn insert_principal(
    c: &mut impl postgres::GenericClient,
    p: &PrincipalRecord,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO principals (access_key_id, arn, account, wrapped_secret, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &p.access_key_id,
            &p.arn,
            &p.account,
            &p.wrapped_secret,
            &p.created_at,
        ],
    )
    .map_err(pg)?;
    Ok(())
}

const CKS_COLS: &str =
    "id, account, name, cluster_id, trust_anchor, password_wrapped, connected, created_at";

fn cks_from_row(r: &Row) -> CustomKeyStoreRecord {
    CustomKeyStoreRecord {
        id: r.get(0),
        account: r.get(1),
        name: r.get(2),
        cluster_id: r.get(3),
        trust_anchor: r.get(4),
        password_wrapped: r.get(5),
        connected: r.get(6),
        created_at: r.get(7),
    }
}

fn insert_cks(
    tx: &mut impl postgres::GenericClient,
    c: &CustomKeyStoreRecord,
) -> Result<(), StoreError> {
    tx.execute(
        &format!("INSERT INTO custom_key_stores ({CKS_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)"),
        &[
            &c.id,
            &c.account,
            &c.name,
            &c.cluster_id,
            &c.trust_anchor,
            &c.password_wrapped,
            &c.connected,
            &c.created_at,
        ],
    )
    .map_err(pg)?;
    Ok(())
}

fn version_from_row(r: &Row) -> Result<KeyVersionRecord, StoreError> {
    Ok(KeyVersionRecord {
        key_id: key_id(r.get(0))?,
        version: r.get::<_, i64>(1) as u32,
        wrapped_material: r.get(2),
        created_at: r.get(3),
        rotation_type: r.get(4),
    })
}

fn alias_from_row(r: &Row) -> Result<AliasRecord, StoreError> {
    let name: String = r.get(1);
    Ok(AliasRecord {
        account: r.get(0),
        name: AliasName::parse(&name).map_err(|_| bad("alias", &name))?,
        target: key_id(r.get(2))?,
        created_at: r.get(3),
        updated_at: r.get(4),
    })
}

fn principal_from_row(r: &Row) -> PrincipalRecord {
    PrincipalRecord {
        access_key_id: r.get(0),
        arn: r.get(1),
        account: r.get(2),
        wrapped_secret: r.get(3),
        created_at: r.get(4),
    }
}

const GRANT_COLS: &str = "grant_id, key_id, name, grantee, retiring, issuing_account, \
    operations, constraints, token, created_at";

fn grant_from_row(r: &Row) -> Result<GrantRecord, StoreError> {
    let ops: String = r.get(6);
    Ok(GrantRecord {
        grant_id: r.get(0),
        key_id: key_id(r.get(1))?,
        name: r.get(2),
        grantee: r.get(3),
        retiring: r.get(4),
        issuing_account: r.get(5),
        operations: ops
            .split(',')
            .filter(|o| !o.is_empty())
            .map(str::to_string)
            .collect(),
        constraints: r
            .get::<_, Option<String>>(7)
            .as_deref()
            .map(GrantConstraint::from_json),
        token: r.get(8),
        created_at: r.get(9),
    })
}

fn write_key(tx: &mut Transaction<'_>, k: &KeyRecord) -> Result<(), StoreError> {
    let n = tx
        .execute(
            "UPDATE keys SET description = $2, state = $3, deletion_date = $4, \
             pending_window_days = $5, current_version = $6, policy = $7, \
             rotation_period_days = $8, next_rotation_at = $9, expiration_model = $10, \
             valid_to = $11, material_digest = $12 WHERE key_id = $1",
            &[
                &k.key_id.to_string(),
                &k.description,
                &k.state.as_str(),
                &k.deletion_date,
                &k.pending_window_days.map(i64::from),
                &i64::from(k.current_version),
                &k.policy,
                &k.rotation_period_days.map(i64::from),
                &k.next_rotation_at,
                &k.expiration_model,
                &k.valid_to,
                &k.material_digest,
            ],
        )
        .map_err(pg)?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// The channel on which nodes announce changes to keys.
const CHANNEL: &str = "keyhold_changes";

/// Announces (at commit) that `key` changed, or with `None` that aliases changed.
fn notify(tx: &mut impl postgres::GenericClient, key: Option<&str>) -> Result<(), StoreError> {
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &key.unwrap_or("*")])
        .map_err(pg)?;
    Ok(())
}

fn insert_key(tx: &mut Transaction<'_>, k: &KeyRecord) -> Result<(), StoreError> {
    tx.execute(
        &format!(
            "INSERT INTO keys ({KEY_COLS}) VALUES \
             ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19)"
        ),
        &[
            &k.key_id.to_string(),
            &k.account,
            &k.description,
            &k.key_spec.as_str(),
            &k.key_usage.as_str(),
            &k.origin.as_str(),
            &k.state.as_str(),
            &k.created_at,
            &k.deletion_date,
            &k.pending_window_days.map(i64::from),
            &i64::from(k.current_version),
            &k.policy,
            &k.key_manager.as_str(),
            &k.rotation_period_days.map(i64::from),
            &k.next_rotation_at,
            &k.expiration_model,
            &k.valid_to,
            &k.material_digest,
            &k.custom_key_store_id,
        ],
    )
    .map_err(pg)?;
    Ok(())
}

fn insert_version(tx: &mut Transaction<'_>, v: &KeyVersionRecord) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO key_versions (key_id, version, wrapped_material, created_at, rotation_type) \
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &v.key_id.to_string(),
            &i64::from(v.version),
            &v.wrapped_material,
            &v.created_at,
            &v.rotation_type,
        ],
    )
    .map_err(pg)?;
    Ok(())
}

fn insert_alias(c: &mut impl postgres::GenericClient, a: &AliasRecord) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO aliases (account, name, target_key_id, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &a.account,
            &a.name.as_str(),
            &a.target.to_string(),
            &a.created_at,
            &a.updated_at,
        ],
    )
    .map_err(pg)?;
    Ok(())
}

fn migrate(client: &mut Client) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .map_err(pg)?;
    let result = (|| {
        let mut tx = client.transaction().map_err(pg)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .map_err(pg)?;
        let current: i64 = tx
            .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
            .map_err(pg)?
            .get(0);
        if current > MIGRATIONS.len() as i64 {
            return Err(StoreError::Backend(format!(
                "database schema version {current} is newer than this keyhold ({})",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.batch_execute(sql).map_err(pg)?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[&(i as i64 + 1)],
            )
            .map_err(pg)?;
        }
        tx.commit().map_err(pg)
    })();
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    result
}

impl PgStore {
    /// Connects to `url` (e.g. `postgres://user@host/db`), runs pending migrations, and starts
    /// the connection pool.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let config: postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Backend(format!("store URL: {e}")))?;
        Self::open_config(config)
    }

    /// [`PgStore::open`] with a parsed configuration (tests set a schema with it).
    pub fn open_config(config: postgres::Config) -> Result<Self, StoreError> {
        Self::open_tuned(config, POOL_SIZE, QUEUE_LEN)
    }

    /// [`PgStore::open_config`] with `pool` connections and room for `queue` waiting calls.
    pub fn open_tuned(
        config: postgres::Config,
        pool: usize,
        queue: usize,
    ) -> Result<Self, StoreError> {
        let mut first = config.connect(NoTls).map_err(pg)?;
        migrate(&mut first)?;
        let (tx, rx) = mpsc::sync_channel::<Job>(queue);
        let rx: Arc<Mutex<Receiver<Job>>> = Arc::new(Mutex::new(rx));
        let mut initial = Some(first);
        for i in 0..pool.max(1) {
            let rx = rx.clone();
            let thread_config = config.clone();
            let mut client = if i == 0 { initial.take() } else { None };
            std::thread::Builder::new()
                .name(format!("keyhold-pg-{i}"))
                .spawn(move || loop {
                    let job = {
                        let guard = rx.lock().unwrap_or_else(|p| p.into_inner());
                        guard.recv()
                    };
                    let Ok(job) = job else { return };
                    if client.as_ref().is_none_or(Client::is_closed) {
                        client = thread_config.connect(NoTls).ok();
                    }
                    job(&mut client, &thread_config);
                })
                .map_err(|e| StoreError::Backend(e.to_string()))?;
        }
        Ok(Self {
            jobs: Mutex::new(tx),
            config,
        })
    }

    /// Runs `f` on a pooled connection and waits for its result.
    pub(crate) fn call<T: Send + 'static>(
        &self,
        f: impl Fn(&mut Client) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |client: &mut Option<Client>, config| {
            let mut result = match client.as_mut() {
                Some(c) => f(c),
                None => Err(StoreError::Unavailable(
                    "cannot connect to PostgreSQL".into(),
                )),
            };
            // A connection that died since its last use (a restarted server) fails before
            // anything is committed: reconnect and run the statements once more.
            if matches!(result, Err(StoreError::Unavailable(_)))
                && client.as_ref().is_some_and(Client::is_closed)
            {
                *client = config.connect(NoTls).ok();
                if let Some(c) = client.as_mut() {
                    result = f(c);
                }
            }
            let _ = tx.send(result);
        });
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_send(job)
            .map_err(|_| StoreError::Busy("every PostgreSQL connection is busy".into()))?;
        rx.recv_timeout(CALL_TIMEOUT)
            .map_err(|_| StoreError::Unavailable("PostgreSQL did not answer in time".into()))?
    }

    fn ids(&self, sql: &'static str, now_ms: i64) -> Result<Vec<KeyId>, StoreError> {
        self.call(move |c| {
            c.query(sql, &[&now_ms])
                .map_err(pg)?
                .iter()
                .map(|r| key_id(r.get(0)))
                .collect()
        })
    }
}

impl Store for PgStore {
    fn create_key(
        &self,
        key: &KeyRecord,
        version: Option<&KeyVersionRecord>,
        tags: &[Tag],
        alias: Option<&AliasRecord>,
    ) -> Result<(), StoreError> {
        let (key, version, tags, alias) =
            (key.clone(), version.cloned(), tags.to_vec(), alias.cloned());
        self.call(move |c| {
            let mut tx = c.transaction().map_err(pg)?;
            insert_key(&mut tx, &key)?;
            if let Some(v) = &version {
                insert_version(&mut tx, v)?;
            }
            if let Some(a) = &alias {
                insert_alias(&mut tx, a)?;
            }
            for t in &tags {
                tx.execute(
                    "INSERT INTO tags (key_id, tag_key, tag_value) VALUES ($1, $2, $3) \
                     ON CONFLICT (key_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value",
                    &[&key.key_id.to_string(), &t.key, &t.value],
                )
                .map_err(pg)?;
            }
            tx.commit().map_err(pg)
        })
    }

    fn create_custom_key_store(&self, c: &CustomKeyStoreRecord) -> Result<(), StoreError> {
        let c = c.clone();
        self.call(move |cl| insert_cks(cl, &c))
    }

    fn list_custom_key_stores(
        &self,
        account: Option<&str>,
    ) -> Result<Vec<CustomKeyStoreRecord>, StoreError> {
        let account = account.map(str::to_owned);
        self.call(move |c| {
            let rows = c
                .query(
                    &format!(
                        "SELECT {CKS_COLS} FROM custom_key_stores \
                         WHERE $1::TEXT IS NULL OR account = $1 ORDER BY id"
                    ),
                    &[&account],
                )
                .map_err(pg)?;
            Ok(rows.iter().map(cks_from_row).collect())
        })
    }

    fn update_custom_key_store(&self, cks: &CustomKeyStoreRecord) -> Result<(), StoreError> {
        let cks = cks.clone();
        self.call(move |c| {
            let n = c
                .execute(
                    "UPDATE custom_key_stores SET name = $2, cluster_id = $3, \
                     password_wrapped = $4, connected = $5 WHERE id = $1",
                    &[
                        &cks.id,
                        &cks.name,
                        &cks.cluster_id,
                        &cks.password_wrapped,
                        &cks.connected,
                    ],
                )
                .map_err(pg)?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
    }

    fn delete_custom_key_store(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.execute("DELETE FROM custom_key_stores WHERE id = $1", &[&id])
                .map_err(pg)?;
            Ok(())
        })
    }

    fn count_keys_in_custom_key_store(&self, id: &str) -> Result<u64, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            let n: i64 = c
                .query_one(
                    "SELECT COUNT(*) FROM keys WHERE custom_key_store_id = $1",
                    &[&id],
                )
                .map_err(pg)?
                .get(0);
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    fn create_keys(&self, keys: &[(KeyRecord, KeyVersionRecord)]) -> Result<(), StoreError> {
        let keys = keys.to_vec();
        self.call(move |c| {
            let mut tx = c.transaction().map_err(pg)?;
            for (key, version) in &keys {
                insert_key(&mut tx, key)?;
                insert_version(&mut tx, version)?;
            }
            tx.commit().map_err(pg)
        })
    }

    fn replace_material(
        &self,
        key: &KeyRecord,
        version: Option<&KeyVersionRecord>,
    ) -> Result<(), StoreError> {
        let (key, version) = (key.clone(), version.cloned());
        self.call(move |c| {
            let mut tx = c.transaction().map_err(pg)?;
            tx.execute(
                "DELETE FROM key_versions WHERE key_id = $1",
                &[&key.key_id.to_string()],
            )
            .map_err(pg)?;
            if let Some(v) = &version {
                insert_version(&mut tx, v)?;
            }
            write_key(&mut tx, &key)?;
            tx.commit().map_err(pg)
        })
    }

    fn keys_due_for_expiry(&self, now_ms: i64) -> Result<Vec<KeyId>, StoreError> {
        self.ids(
            "SELECT key_id FROM keys WHERE valid_to IS NOT NULL AND valid_to <= $1",
            now_ms,
        )
    }

    fn get_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let id = id.to_string();
        self.call(move |c| {
            c.query_opt(
                &format!("SELECT {KEY_COLS} FROM keys WHERE key_id = $1"),
                &[&id],
            )
            .map_err(pg)?
            .map(|r| key_from_row(&r))
            .transpose()
        })
    }

    fn update_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        let key = key.clone();
        self.call(move |c| {
            let mut tx = c.transaction().map_err(pg)?;
            write_key(&mut tx, &key)?;
            tx.commit().map_err(pg)
        })
    }

    fn list_keys(
        &self,
        account: &str,
        after: Option<&KeyId>,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let account = account.to_string();
        let after = after.map(|k| k.to_string()).unwrap_or_default();
        self.call(move |c| {
            c.query(
                &format!(
                    "SELECT {KEY_COLS} FROM keys WHERE account = $1 AND key_id > $2 \
                     ORDER BY key_id LIMIT $3"
                ),
                &[&account, &after, &(limit as i64)],
            )
            .map_err(pg)?
            .iter()
            .map(key_from_row)
            .collect()
        })
    }

    fn get_key_version(
        &self,
        id: &KeyId,
        version: u32,
    ) -> Result<Option<KeyVersionRecord>, StoreError> {
        let id = id.to_string();
        self.call(move |c| {
            c.query_opt(
                "SELECT key_id, version, wrapped_material, created_at, rotation_type \
                 FROM key_versions WHERE key_id = $1 AND version = $2",
                &[&id, &i64::from(version)],
            )
            .map_err(pg)?
            .map(|r| version_from_row(&r))
            .transpose()
        })
    }

    fn add_key_version(
        &self,
        key: &KeyRecord,
        version: &KeyVersionRecord,
    ) -> Result<(), StoreError> {
        let (key, version) = (key.clone(), version.clone());
        self.call(move |c| {
            let mut tx = c.transaction().map_err(pg)?;
            insert_version(&mut tx, &version)?;
            let n = tx
                .execute(
                    "UPDATE keys SET current_version = $2, next_rotation_at = $3 \
                     WHERE key_id = $1",
                    &[
                        &key.key_id.to_string(),
                        &i64::from(key.current_version),
                        &key.next_rotation_at,
                    ],
                )
                .map_err(pg)?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            notify(&mut tx, Some(&key.key_id.to_string()))?;
            tx.commit().map_err(pg)
        })
    }

    fn list_key_versions(&self, id: &KeyId) -> Result<Vec<KeyVersionRecord>, StoreError> {
        let id = id.to_string();
        self.call(move |c| {
            c.query(
                "SELECT key_id, version, wrapped_material, created_at, rotation_type \
                 FROM key_versions WHERE key_id = $1 ORDER BY version",
                &[&id],
            )
            .map_err(pg)?
            .iter()
            .map(version_from_row)
            .collect()
        })
    }

    fn keys_due_for_rotation(&self, now_ms: i64) -> Result<Vec<KeyId>, StoreError> {
        self.ids(
            "SELECT key_id FROM keys WHERE next_rotation_at IS NOT NULL \
             AND next_rotation_at <= $1 AND state = 'Enabled'",
            now_ms,
        )
    }

    fn keys_due_for_deletion(&self, now_ms: i64) -> Result<Vec<KeyId>, StoreError> {
        self.ids(
            "SELECT key_id FROM keys WHERE deletion_date IS NOT NULL AND deletion_date <= $1",
            now_ms,
        )
    }

    fn delete_key(&self, id: &KeyId) -> Result<(), StoreError> {
        let id = id.to_string();
        self.call(move |c| {
            let mut tx = c.transaction().map_err(pg)?;
            for sql in [
                "DELETE FROM key_versions WHERE key_id = $1",
                "DELETE FROM aliases WHERE target_key_id = $1",
                "DELETE FROM tags WHERE key_id = $1",
                "DELETE FROM grants WHERE key_id = $1",
                "DELETE FROM key_last_usage WHERE key_id = $1",
            ] {
                tx.execute(sql, &[&id]).map_err(pg)?;
            }
            let n = tx
                .execute("DELETE FROM keys WHERE key_id = $1", &[&id])
                .map_err(pg)?;
            notify(&mut tx, Some(&id))?;
            tx.commit().map_err(pg)?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
    }

    fn create_alias(&self, alias: &AliasRecord) -> Result<(), StoreError> {
        let alias = alias.clone();
        self.call(move |c| {
            let mut tx = c.transaction().map_err(pg)?;
            insert_alias(&mut tx, &alias)?;
            notify(&mut tx, None)?;
            tx.commit().map_err(pg)
        })
    }

    fn update_alias(
        &self,
        account: &str,
        name: &AliasName,
        target: &KeyId,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let (account, name, target) = (account.to_string(), name.to_string(), target.to_string());
        self.call(move |c| {
            let n = c
                .execute(
                    "UPDATE aliases SET target_key_id = $3, updated_at = $4 \
                     WHERE account = $1 AND name = $2",
                    &[&account, &name, &target, &now_ms],
                )
                .map_err(pg)?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            notify(c, None)
        })
    }

    fn delete_alias(&self, account: &str, name: &AliasName) -> Result<(), StoreError> {
        let (account, name) = (account.to_string(), name.to_string());
        self.call(move |c| {
            let n = c
                .execute(
                    "DELETE FROM aliases WHERE account = $1 AND name = $2",
                    &[&account, &name],
                )
                .map_err(pg)?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            notify(c, None)
        })
    }

    fn get_alias(
        &self,
        account: &str,
        name: &AliasName,
    ) -> Result<Option<AliasRecord>, StoreError> {
        let (account, name) = (account.to_string(), name.to_string());
        self.call(move |c| {
            c.query_opt(
                "SELECT account, name, target_key_id, created_at, updated_at FROM aliases \
                 WHERE account = $1 AND name = $2",
                &[&account, &name],
            )
            .map_err(pg)?
            .map(|r| alias_from_row(&r))
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
        let account = account.to_string();
        let target = target.map(|t| t.to_string());
        let after = after.unwrap_or("").to_string();
        self.call(move |c| {
            c.query(
                "SELECT account, name, target_key_id, created_at, updated_at FROM aliases \
                 WHERE account = $1 AND ($2::TEXT IS NULL OR target_key_id = $2) AND name > $3 \
                 ORDER BY name COLLATE \"C\" LIMIT $4",
                &[&account, &target, &after, &(limit as i64)],
            )
            .map_err(pg)?
            .iter()
            .map(alias_from_row)
            .collect()
        })
    }

    fn put_tags(&self, id: &KeyId, tags: &[Tag]) -> Result<(), StoreError> {
        let (id, tags) = (id.to_string(), tags.to_vec());
        self.call(move |c| {
            let mut tx = c.transaction().map_err(pg)?;
            for t in &tags {
                tx.execute(
                    "INSERT INTO tags (key_id, tag_key, tag_value) VALUES ($1, $2, $3) \
                     ON CONFLICT (key_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value",
                    &[&id, &t.key, &t.value],
                )
                .map_err(pg)?;
            }
            tx.commit().map_err(pg)
        })
    }

    fn remove_tags(&self, id: &KeyId, keys: &[String]) -> Result<(), StoreError> {
        let (id, keys) = (id.to_string(), keys.to_vec());
        self.call(move |c| {
            c.execute(
                "DELETE FROM tags WHERE key_id = $1 AND tag_key = ANY($2)",
                &[&id, &keys],
            )
            .map_err(pg)?;
            Ok(())
        })
    }

    fn list_tags(&self, id: &KeyId) -> Result<Vec<Tag>, StoreError> {
        let id = id.to_string();
        self.call(move |c| {
            Ok(c.query(
                "SELECT tag_key, tag_value FROM tags WHERE key_id = $1 \
                     ORDER BY tag_key COLLATE \"C\"",
                &[&id],
            )
            .map_err(pg)?
            .iter()
            .map(|r| Tag {
                key: r.get(0),
                value: r.get(1),
            })
            .collect())
        })
    }

    fn create_grant(&self, g: &GrantRecord) -> Result<(), StoreError> {
        let g = g.clone();
        self.call(move |c| {
            insert_grant(c, &g)?;
            notify(c, Some(&g.key_id.to_string()))
        })
    }

    fn list_grants(&self, key: &KeyId) -> Result<Vec<GrantRecord>, StoreError> {
        let key = key.to_string();
        self.call(move |c| {
            c.query(
                &format!("SELECT {GRANT_COLS} FROM grants WHERE key_id = $1 ORDER BY grant_id"),
                &[&key],
            )
            .map_err(pg)?
            .iter()
            .map(grant_from_row)
            .collect()
        })
    }

    fn list_retirable_grants(&self, retiring: &str) -> Result<Vec<GrantRecord>, StoreError> {
        let retiring = retiring.to_string();
        self.call(move |c| {
            c.query(
                &format!("SELECT {GRANT_COLS} FROM grants WHERE retiring = $1 ORDER BY grant_id"),
                &[&retiring],
            )
            .map_err(pg)?
            .iter()
            .map(grant_from_row)
            .collect()
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
        let (grant_id, token) = (grant_id.map(str::to_string), token.map(str::to_string));
        self.call(move |c| {
            c.query_opt(
                &format!(
                    "SELECT {GRANT_COLS} FROM grants WHERE ($1::TEXT IS NULL OR grant_id = $1) \
                     AND ($2::TEXT IS NULL OR token = $2)"
                ),
                &[&grant_id, &token],
            )
            .map_err(pg)?
            .map(|r| grant_from_row(&r))
            .transpose()
        })
    }

    fn delete_grant(&self, grant_id: &str) -> Result<(), StoreError> {
        let grant_id = grant_id.to_string();
        self.call(move |c| {
            let key: Option<String> = c
                .query_opt(
                    "DELETE FROM grants WHERE grant_id = $1 RETURNING key_id",
                    &[&grant_id],
                )
                .map_err(pg)?
                .map(|r| r.get(0));
            match key {
                Some(k) => notify(c, Some(&k)),
                None => Err(StoreError::NotFound),
            }
        })
    }

    fn put_key_usage(&self, usage: &[KeyLastUsage]) -> Result<(), StoreError> {
        let usage = usage.to_vec();
        self.call(move |c| {
            let mut tx = c.transaction().map_err(pg)?;
            for u in &usage {
                tx.execute(
                    "INSERT INTO key_last_usage (key_id, operation, used_at, event_id) \
                     SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM keys WHERE key_id = $1) \
                     ON CONFLICT (key_id) DO UPDATE SET operation = excluded.operation, \
                     used_at = excluded.used_at, event_id = excluded.event_id \
                     WHERE excluded.used_at >= key_last_usage.used_at",
                    &[&u.key_id.to_string(), &u.operation, &u.used_at, &u.event_id],
                )
                .map_err(pg)?;
            }
            tx.commit().map_err(pg)
        })
    }

    fn get_key_usage(&self, id: &KeyId) -> Result<Option<KeyLastUsage>, StoreError> {
        let key = *id;
        self.call(move |c| {
            Ok(c.query_opt(
                "SELECT operation, used_at, event_id FROM key_last_usage WHERE key_id = $1",
                &[&key.to_string()],
            )
            .map_err(pg)?
            .map(|r| KeyLastUsage {
                key_id: key,
                operation: r.get(0),
                used_at: r.get(1),
                event_id: r.get(2),
            }))
        })
    }

    fn watch(&self, on_change: Box<dyn Fn(Option<KeyId>) + Send + Sync>) {
        let config = self.config.clone();
        let spawned = std::thread::Builder::new()
            .name("keyhold-pg-listen".into())
            .spawn(move || loop {
                let mut client = match config.connect(NoTls) {
                    Ok(c) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                };
                if client.batch_execute(&format!("LISTEN {CHANNEL}")).is_err() {
                    continue;
                }
                // After (re)connecting, changes may have been missed: forget all cached state.
                on_change(None);
                loop {
                    let mut n = client.notifications();
                    let mut it = n.timeout_iter(Duration::from_secs(5));
                    match it.next() {
                        Ok(Some(note)) => on_change(KeyId::parse(note.payload()).ok()),
                        Ok(None) => {
                            drop(it);
                            drop(n);
                            if client.is_closed() || client.simple_query("SELECT 1").is_err() {
                                break;
                            }
                        }
                        Err(_) => break,
                    }
                }
            });
        if let Err(e) = spawned {
            eprintln!("keyhold: cannot watch PostgreSQL for changes: {e}");
        }
    }

    fn export(&self) -> Result<Snapshot, StoreError> {
        self.call(|c| {
            let mut tx = c
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(pg)?;
            let rows = |tx: &mut Transaction<'_>, sql: &str| tx.query(sql, &[]).map_err(pg);
            let snapshot = Snapshot {
                keys: rows(
                    &mut tx,
                    &format!("SELECT {KEY_COLS} FROM keys ORDER BY key_id"),
                )?
                .iter()
                .map(key_from_row)
                .collect::<Result<_, _>>()?,
                versions: rows(
                    &mut tx,
                    "SELECT key_id, version, wrapped_material, created_at, rotation_type \
                     FROM key_versions ORDER BY key_id, version",
                )?
                .iter()
                .map(version_from_row)
                .collect::<Result<_, _>>()?,
                aliases: rows(
                    &mut tx,
                    "SELECT account, name, target_key_id, created_at, updated_at FROM aliases \
                     ORDER BY account, name",
                )?
                .iter()
                .map(alias_from_row)
                .collect::<Result<_, _>>()?,
                tags: rows(
                    &mut tx,
                    "SELECT key_id, tag_key, tag_value FROM tags ORDER BY key_id, tag_key",
                )?
                .iter()
                .map(|r| {
                    Ok((
                        key_id(r.get(0))?,
                        Tag {
                            key: r.get(1),
                            value: r.get(2),
                        },
                    ))
                })
                .collect::<Result<_, StoreError>>()?,
                grants: rows(
                    &mut tx,
                    &format!("SELECT {GRANT_COLS} FROM grants ORDER BY grant_id"),
                )?
                .iter()
                .map(grant_from_row)
                .collect::<Result<_, _>>()?,
                principals: rows(
                    &mut tx,
                    "SELECT access_key_id, arn, account, wrapped_secret, created_at \
                     FROM principals ORDER BY access_key_id",
                )?
                .iter()
                .map(principal_from_row)
                .collect(),
                usage: rows(
                    &mut tx,
                    "SELECT key_id, operation, used_at, event_id FROM key_last_usage \
                     ORDER BY key_id",
                )?
                .iter()
                .map(|r| {
                    Ok(KeyLastUsage {
                        key_id: key_id(r.get(0))?,
                        operation: r.get(1),
                        used_at: r.get(2),
                        event_id: r.get(3),
                    })
                })
                .collect::<Result<_, StoreError>>()?,
                custom_key_stores: rows(
                    &mut tx,
                    &format!("SELECT {CKS_COLS} FROM custom_key_stores ORDER BY id"),
                )?
                .iter()
                .map(cks_from_row)
                .collect(),
            };
            tx.commit().map_err(pg)?;
            Ok(snapshot)
        })
    }

    fn import(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let s = snapshot.clone();
        self.call(move |c| {
            let mut tx = c.transaction().map_err(pg)?;
            tx.execute("LOCK TABLE keys, principals IN EXCLUSIVE MODE", &[])
                .map_err(pg)?;
            let existing: i64 = tx
                .query_one(
                    "SELECT (SELECT COUNT(*) FROM keys) + (SELECT COUNT(*) FROM principals)",
                    &[],
                )
                .map_err(pg)?
                .get(0);
            if existing > 0 {
                return Err(StoreError::NotEmpty);
            }
            for k in &s.keys {
                insert_key(&mut tx, k)?;
            }
            for v in &s.versions {
                insert_version(&mut tx, v)?;
            }
            for a in &s.aliases {
                insert_alias(&mut tx, a)?;
            }
            for (id, t) in &s.tags {
                tx.execute(
                    "INSERT INTO tags (key_id, tag_key, tag_value) VALUES ($1, $2, $3)",
                    &[&id.to_string(), &t.key, &t.value],
                )
                .map_err(pg)?;
            }
            for g in &s.grants {
                insert_grant(&mut tx, g)?;
            }
            for p in &s.principals {
                insert_principal(&mut tx, p)?;
            }
            for u in &s.usage {
                tx.execute(
                    "INSERT INTO key_last_usage (key_id, operation, used_at, event_id) \
                     VALUES ($1, $2, $3, $4)",
                    &[&u.key_id.to_string(), &u.operation, &u.used_at, &u.event_id],
                )
                .map_err(pg)?;
            }
            for cks in &s.custom_key_stores {
                insert_cks(&mut tx, cks)?;
            }
            tx.commit().map_err(pg)
        })
    }

    fn create_principal(&self, p: &PrincipalRecord) -> Result<(), StoreError> {
        let p = p.clone();
        self.call(move |c| insert_principal(c, &p))
    }

    fn get_principal(&self, access_key_id: &str) -> Result<Option<PrincipalRecord>, StoreError> {
        let akid = access_key_id.to_string();
        self.call(move |c| {
            Ok(c.query_opt(
                "SELECT access_key_id, arn, account, wrapped_secret, created_at \
                     FROM principals WHERE access_key_id = $1",
                &[&akid],
            )
            .map_err(pg)?
            .map(|r| principal_from_row(&r)))
        })
    }

    fn replace_wrapped(&self, changes: &[WrappedChange]) -> Result<(), StoreError> {
        let changes = changes.to_vec();
        self.call(move |c| {
            let mut tx = c.transaction().map_err(pg)?;
            tx.execute(
                "LOCK TABLE key_versions, principals IN EXCLUSIVE MODE",
                &[],
            )
            .map_err(pg)?;
            for change in &changes {
                let n = match change {
                    WrappedChange::KeyMaterial {
                        key_id,
                        version,
                        old,
                        new,
                    } => tx.execute(
                        "UPDATE key_versions SET wrapped_material = $3 \
                         WHERE key_id = $1 AND version = $2 AND wrapped_material = $4",
                        &[&key_id.to_string(), &i64::from(*version), new, old],
                    ),
                    WrappedChange::PrincipalSecret {
                        access_key_id,
                        old,
                        new,
                    } => tx.execute(
                        "UPDATE principals SET wrapped_secret = $2 \
                         WHERE access_key_id = $1 AND wrapped_secret = $3",
                        &[access_key_id, new, old],
                    ),
                    WrappedChange::KeyStorePassword { id, old, new } => tx.execute(
                        "UPDATE custom_key_stores SET password_wrapped = $2 \
                         WHERE id = $1 AND password_wrapped = $3",
                        &[id, new, old],
                    ),
                }
                .map_err(pg)?;
                if n != 1 {
                    // Dropping the transaction rolls every earlier change back.
                    return Err(StoreError::Backend(
                        "a wrapped secret changed while the root key was rotated".into(),
                    ));
                }
            }
            let rows: i64 = tx
                .query_one(
                    "SELECT (SELECT COUNT(*) FROM key_versions) + (SELECT COUNT(*) FROM principals) \
                     + (SELECT COUNT(*) FROM custom_key_stores)",
                    &[],
                )
                .map_err(pg)?
                .get(0);
            if usize::try_from(rows).ok() != Some(changes.len()) {
                return Err(StoreError::Backend(
                    "wrapped secrets were added while the root key was rotated".into(),
                ));
            }
            tx.commit().map_err(pg)
        })
    }

    fn list_principals(&self) -> Result<Vec<PrincipalRecord>, StoreError> {
        self.call(|c| {
            Ok(c.query(
                "SELECT access_key_id, arn, account, wrapped_secret, created_at \
                     FROM principals ORDER BY arn",
                &[],
            )
            .map_err(pg)?
            .iter()
            .map(principal_from_row)
            .collect())
        })
    }

    fn delete_principal(&self, access_key_id_or_arn: &str) -> Result<(), StoreError> {
        let id = access_key_id_or_arn.to_string();
        self.call(move |c| {
            let n = c
                .execute(
                    "DELETE FROM principals WHERE access_key_id = $1 OR arn = $1",
                    &[&id],
                )
                .map_err(pg)?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
    }
}

/// The first migration (tests build an old schema with it).
#[cfg(test)]
pub(crate) fn first_migration() -> &'static str {
    MIGRATIONS[0]
}

/// Maps a driver error in tests.
#[cfg(test)]
pub(crate) fn test_err(e: postgres::Error) -> StoreError {
    pg(e)
}
