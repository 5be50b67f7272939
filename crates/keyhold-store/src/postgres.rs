//! The PostgreSQL backend (also for Postgres-wire distributed SQL), for several keyhold nodes
//! sharing one state.
//!
//! Statements run on a small pool of dedicated threads, each with its own connection, so the
//! blocking client is never driven from inside an async runtime; a caller waits at most
//! [`CALL_TIMEOUT`] for a connection (`Unavailable`, which the engine answers as
//! `DependencyTimeoutException`). A lost connection is re-established on the next call.
//! Migrations run under an advisory lock, so nodes starting together do not race. Statements,
//! schema and rows are the shared SQL layer's (`crate::sql`); this file holds the pool,
//! transactions, LISTEN/NOTIFY and the error mapping.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use keyhold_core::ids::KeyId;
use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{IsNull, ToSql, Type};
use postgres::{Client, GenericClient, NoTls};

use crate::sql::{self, Backend, Conn, Dialect, Row, Tx, Value, CHANNEL};
use crate::StoreError;

/// Longest wait for a connection and a statement.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections (and threads) in the pool.
const POOL_SIZE: usize = 4;
/// Calls that may wait for a connection before further calls are refused as overload.
const QUEUE_LEN: usize = 256;
/// Advisory lock id guarding migrations.
const MIGRATION_LOCK: i64 = 0x6b_6579_686f_6c64;

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

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(n) => n.to_sql_checked(ty, out),
            Value::Text(t) => t.to_sql_checked(ty, out),
            Value::Blob(b) => b.to_sql_checked(ty, out),
            Value::Bool(b) => b.to_sql_checked(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Each value checks its own type against the column's in `to_sql`.
        true
    }

    postgres::types::to_sql_checked!();
}

/// A driver row as the shared layer's row, column by column after its declared type.
fn row(r: &postgres::Row) -> Result<Row, StoreError> {
    let decode = |e: postgres::Error| StoreError::Backend(format!("row: {e}"));
    let mut cols = Vec::with_capacity(r.len());
    for (i, c) in r.columns().iter().enumerate() {
        let v = match *c.type_() {
            Type::INT8 => r.try_get::<_, Option<i64>>(i).map(|v| v.map(Value::Int)),
            Type::INT4 => r
                .try_get::<_, Option<i32>>(i)
                .map(|v| v.map(|n| Value::Int(i64::from(n)))),
            Type::INT2 => r
                .try_get::<_, Option<i16>>(i)
                .map(|v| v.map(|n| Value::Int(i64::from(n)))),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => r
                .try_get::<_, Option<String>>(i)
                .map(|v| v.map(Value::Text)),
            Type::BYTEA => r
                .try_get::<_, Option<Vec<u8>>>(i)
                .map(|v| v.map(Value::Blob)),
            Type::BOOL => r.try_get::<_, Option<bool>>(i).map(|v| v.map(Value::Bool)),
            Type::VOID => Ok(None),
            ref other => {
                return Err(StoreError::Backend(format!(
                    "unexpected column type {other} in store"
                )))
            }
        }
        .map_err(decode)?;
        cols.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(cols))
}

/// The shared layer's view of a client or transaction.
struct PgConn<'a, C: GenericClient>(&'a mut C);

fn params(values: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

impl<C: GenericClient> Conn for PgConn<'_, C> {
    fn execute(&mut self, sql: &str, values: &[Value]) -> Result<u64, StoreError> {
        self.0.execute(sql, &params(values)).map_err(pg)
    }

    fn query(&mut self, sql: &str, values: &[Value]) -> Result<Vec<Row>, StoreError> {
        self.0
            .query(sql, &params(values))
            .map_err(pg)?
            .iter()
            .map(row)
            .collect()
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        self.0.batch_execute(sql).map_err(pg)
    }
}

/// Brings the schema up to date under an advisory lock, so nodes starting together do not
/// race.
fn migrate(client: &mut Client) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .map_err(pg)?;
    let result = (|| {
        let mut tx = client.transaction().map_err(pg)?;
        sql::migrate(&mut PgConn(&mut tx), Dialect::Postgres)?;
        tx.commit().map_err(pg)
    })();
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .map_err(pg);
    result.and(unlocked.map(|_| ()))
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
            .map_err(|_| {
                metrics::counter!("keyhold_store_pool_refused_total").increment(1);
                StoreError::Busy("every PostgreSQL connection is busy".into())
            })?;
        // Calls waiting for or using a connection.
        let busy = metrics::gauge!("keyhold_store_pool_in_use");
        busy.increment(1.0);
        let out = rx
            .recv_timeout(CALL_TIMEOUT)
            .map_err(|_| StoreError::Unavailable("PostgreSQL did not answer in time".into()));
        busy.decrement(1.0);
        out?
    }
}

impl Backend for PgStore {
    const DIALECT: Dialect = Dialect::Postgres;

    fn run<T: Send + 'static>(
        &self,
        kind: Tx,
        f: impl Fn(&mut dyn Conn) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let started = std::time::Instant::now();
        let result = self.call(move |c| {
            let mut tx = match kind {
                // One statement needs no transaction of its own.
                Tx::Read => return f(&mut PgConn(c)),
                Tx::Write => c.transaction().map_err(pg)?,
                Tx::Snapshot => c
                    .build_transaction()
                    .isolation_level(postgres::IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .map_err(pg)?,
            };
            // Dropping the transaction on an error rolls it back.
            let out = f(&mut PgConn(&mut tx))?;
            tx.commit().map_err(pg)?;
            Ok(out)
        });
        crate::sql::observe(kind, started, &result);
        result
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
}
