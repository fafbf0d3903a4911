//! The fleet backend: one PostgreSQL database shared by every replica.
//!
//! The store's interfaces are synchronous (SQLite answers in microseconds), so this
//! backend keeps its own small tokio runtime for the connections' I/O and waits for each
//! query on the caller's thread. Every value is sealed before it gets here, exactly as for
//! SQLite: the database holds only ciphertext. Claims use the database's clock, so the
//! replicas' clocks need not agree.

mod connect;
mod credentials;
mod pool;
mod robots;
mod shared;
mod tasks;

pub use connect::PostgresSettings;

use crate::backend::{
    Backend, CachedToken, Claim, CredentialKey, CredentialStore, Health, RobotSecrets, SharedState,
    StoreError, StoredCredential, TaskHistory, TaskRun, TaskSecrets, tasks_of,
};
use crate::dump::{Dump, TABLES, Value};
use crate::seal::KeyRing;
use crate::sealed::{self, CredentialRow};
use credkeeper_core::{Secret, Timestamp};
use pool::Pool;
use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};

/// Schema versions, applied in order under an advisory lock; `schema_version` records how
/// many ran. The columns match SQLite's, so `store migrate` copies rows as they are.
const MIGRATIONS: &[&str] = &["CREATE TABLE credential (
        issuer          TEXT NOT NULL,
        client_id       TEXT NOT NULL,
        identity        TEXT NOT NULL,
        key_id          TEXT NOT NULL,
        sealed          BYTEA NOT NULL,
        scope           TEXT,
        updated_at      BIGINT NOT NULL,
        access_key_id   TEXT,
        access_sealed   BYTEA,
        access_expires  BIGINT,
        access_issued   BIGINT,
        access_scope    TEXT,
        needs_login     TEXT,
        failures        BIGINT NOT NULL DEFAULT 0,
        next_attempt    BIGINT,
        refresh_started BIGINT,
        refresh_until   BIGINT,
        PRIMARY KEY (issuer, client_id, identity)
     );
     CREATE TABLE robot_secret (
        robot      TEXT PRIMARY KEY,
        phc        TEXT NOT NULL,
        updated_at BIGINT NOT NULL
     );
     CREATE TABLE task_run (
        id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        task       TEXT NOT NULL,
        started    BIGINT NOT NULL,
        ended      BIGINT NOT NULL,
        status     BIGINT,
        attempts   BIGINT NOT NULL,
        reason     TEXT,
        key_id     TEXT NOT NULL,
        output     BYTEA NOT NULL
     );
     CREATE INDEX task_run_by_task ON task_run (task, started);
     CREATE TABLE task_secret (
        name       TEXT PRIMARY KEY,
        key_id     TEXT NOT NULL,
        sealed     BYTEA NOT NULL,
        updated_at BIGINT NOT NULL
     );
     CREATE TABLE task_claim (
        task       TEXT NOT NULL,
        due        BIGINT NOT NULL,
        claimed_at BIGINT NOT NULL,
        PRIMARY KEY (task, due)
     );
     CREATE INDEX task_claim_by_age ON task_claim (claimed_at);
     CREATE TABLE shared_state (
        kind       TEXT NOT NULL,
        id         TEXT NOT NULL,
        key_id     TEXT NOT NULL,
        sealed     BYTEA NOT NULL,
        expires    BIGINT NOT NULL,
        PRIMARY KEY (kind, id)
     );
     CREATE INDEX shared_state_by_expiry ON shared_state (expires);
     CREATE TABLE key_check (
        one        BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
        key_id     TEXT NOT NULL,
        sealed     BYTEA NOT NULL
     );"];

/// Any number unlikely to be another application's advisory lock on the same database.
const MIGRATION_LOCK: i64 = 0x6372_6564_6b65_6570; // "credkeep"

/// Task claims older than this are forgotten: a due time that far back is never run again.
const TASK_CLAIM_KEEP_SECS: i64 = 30 * 86_400;

pub struct PostgresStore {
    pool: Pool,
    keys: KeyRing,
}

impl PostgresStore {
    /// Connect, bring the schema up to date (once, whichever replica gets there first), and
    /// check that the key file opens what the other replicas sealed.
    pub fn open(settings: &PostgresSettings) -> Result<PostgresStore, StoreError> {
        let target = connect::target(settings)?;
        let keys = KeyRing::open_or_create(&settings.key_file)?;
        let pool = Pool::new(target, settings.pool_size.max(1))?;
        let store = PostgresStore { pool, keys };
        store.migrate()?;
        store.check_key()?;
        Ok(store)
    }

    /// Where the store is, for messages (no password).
    pub fn location(&self) -> &str {
        self.pool.shown()
    }

    /// Whether the database answers now.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.pool
            .run(async |c| c.simple_query("SELECT 1").await.map(drop))
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let count = MIGRATIONS.len() as i64;
        let message = |done: i64| {
            format!(
                "schema version {done} is newer than this credkeeper knows ({count}); upgrade credkeeper"
            )
        };
        let done = self.pool.run(async |c| {
            let tx = c.transaction().await?;
            // Replicas starting together: one migrates, the others wait here and then
            // find nothing left to do.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
                .await?;
            let done: i64 = tx
                .query_opt("SELECT version FROM schema_version", &[])
                .await?
                .map_or(0, |r| r.get(0));
            if done > count {
                return Ok(done);
            }
            for sql in &MIGRATIONS[usize::try_from(done).unwrap_or(0)..] {
                tx.batch_execute(sql).await?;
            }
            tx.execute("DELETE FROM schema_version", &[]).await?;
            tx.execute("INSERT INTO schema_version VALUES ($1)", &[&count])
                .await?;
            tx.commit().await?;
            Ok(done)
        })?;
        if done > count {
            return Err(self.pool.error(message(done)));
        }
        Ok(())
    }

    fn check_key(&self) -> Result<(), StoreError> {
        let check = sealed::seal_key_check(&self.keys)?;
        let (key_id, bytes) = (check.key_id, check.bytes);
        let (kid, sealed): (String, Vec<u8>) = self.pool.run(async |c| {
            c.execute(
                "INSERT INTO key_check (key_id, sealed) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&key_id, &bytes],
            )
            .await?;
            let row = c
                .query_one("SELECT key_id, sealed FROM key_check", &[])
                .await?;
            Ok((row.get(0), row.get(1)))
        })?;
        if sealed::key_check_opens(&self.keys, &kid, &sealed) {
            Ok(())
        } else {
            Err(self.pool.error(
                "this database was sealed with another key file: give every replica the same [store] key_file"
                    .into(),
            ))
        }
    }

    fn execute(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        self.pool.run(async |c| c.execute(sql, params).await)
    }

    fn query(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        self.pool.run(async |c| c.query(sql, params).await)
    }

    fn query_opt(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        self.pool.run(async |c| c.query_opt(sql, params).await)
    }

    /// Add every row of `dump` (still sealed) in one transaction; rows already here are
    /// kept as they are. For `store migrate`.
    pub fn import(&self, dump: &Dump) -> Result<(), StoreError> {
        self.pool.run(async |c| {
            let tx = c.transaction().await?;
            for (table, columns, rows) in dump.tables() {
                let placeholders: Vec<String> =
                    (1..=columns.len()).map(|i| format!("${i}")).collect();
                let sql = format!(
                    "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT DO NOTHING",
                    columns.join(", "),
                    placeholders.join(", ")
                );
                let stmt = tx.prepare(&sql).await?;
                for row in rows {
                    let params: Vec<Box<dyn ToSql + Sync>> = row
                        .iter()
                        .zip(stmt.params())
                        .map(|(value, ty)| param(value, ty))
                        .collect();
                    let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p).collect();
                    tx.execute(&stmt, &params).await?;
                }
            }
            tx.commit().await
        })
    }

    /// How many rows each table holds, to check a copy.
    pub fn counts(&self) -> Result<Vec<(&'static str, u64)>, StoreError> {
        TABLES
            .iter()
            .map(|(table, _)| {
                let sql = format!("SELECT COUNT(*) FROM {table}");
                let n: i64 = self
                    .pool
                    .run(async |c| c.query_one(&sql, &[]).await)?
                    .get(0);
                Ok((*table, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }
}

/// A cell as the column's type takes it (a NULL is typed too).
fn param(value: &Value, ty: &Type) -> Box<dyn ToSql + Sync> {
    match value {
        Value::Int(i) => Box::new(*i),
        Value::Text(t) => Box::new(t.clone()),
        Value::Bytes(b) => Box::new(b.clone()),
        Value::Null if *ty == Type::INT8 => Box::new(None::<i64>),
        Value::Null if *ty == Type::BYTEA => Box::new(None::<Vec<u8>>),
        Value::Null => Box::new(None::<String>),
    }
}

impl Backend for PostgresStore {
    fn location(&self) -> String {
        self.pool.shown().to_string()
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.pool
            .run(async |c| c.simple_query("SELECT 1").await.map(drop))
    }
}
