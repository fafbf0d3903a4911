//! The fleet backend: one PostgreSQL database shared by every replica.
//!
//! The store's interfaces are synchronous (SQLite answers in microseconds), so this
//! backend keeps its own small tokio runtime for the connections' I/O and waits for each
//! query on the caller's thread. Every value is sealed before it gets here, exactly as for
//! SQLite: the database holds only ciphertext. Claims use the database's clock, so the
//! replicas' clocks need not agree.

mod connect;
mod pool;

pub use connect::PostgresSettings;

use crate::backend::{
    Backend, CachedToken, Claim, CredentialKey, CredentialStore, Health, RobotSecrets, SharedState,
    StoreError, StoredCredential, TaskHistory, TaskRun, TaskSecrets,
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

fn credential_row(r: &Row) -> CredentialRow {
    CredentialRow {
        key_id: r.get(0),
        sealed: r.get(1),
        scope: r.get(2),
        updated: r.get(3),
        access_key_id: r.get(4),
        access_sealed: r.get(5),
        access_expires: r.get(6),
        access_issued: r.get(7),
        access_scope: r.get(8),
        health: Health {
            needs_login: r.get(9),
            failures: u32::try_from(r.get::<_, i64>(10)).unwrap_or(u32::MAX),
            next_attempt: r.get::<_, Option<i64>>(11).map(Timestamp::from_unix),
            refresh_started: r.get::<_, Option<i64>>(12).map(Timestamp::from_unix),
        },
        refresh_until: r.get::<_, Option<i64>>(13).map(Timestamp::from_unix),
    }
}

impl CredentialStore for PostgresStore {
    fn put(
        &self,
        key: &CredentialKey,
        refresh_token: &Secret,
        scope: Option<&str>,
        access: Option<&CachedToken>,
    ) -> Result<(), StoreError> {
        let sealed = sealed::seal_refresh(&self.keys, key, refresh_token)?;
        let access = access
            .map(|a| sealed::seal_access(&self.keys, key, &a.token).map(|s| (s, a)))
            .transpose()?;
        let sql = format!(
            "INSERT INTO credential (issuer, client_id, identity, key_id, sealed, scope, updated_at,
                access_key_id, access_sealed, access_expires, access_issued, access_scope)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (issuer, client_id, identity) DO UPDATE SET {}",
            sealed::PUT_UPDATE
        );
        let params: [&(dyn ToSql + Sync); 12] = [
            &key.issuer,
            &key.client_id,
            &key.identity,
            &sealed.key_id,
            &sealed.bytes,
            &scope,
            &Timestamp::now().unix(),
            &access.as_ref().map(|(s, _)| s.key_id.as_str()),
            &access.as_ref().map(|(s, _)| s.bytes.as_slice()),
            &access.as_ref().map(|(_, a)| a.expires.unix()),
            &access.as_ref().map(|(_, a)| a.issued.unix()),
            &access.as_ref().and_then(|(_, a)| a.scope.as_deref()),
        ];
        self.pool.run(async |c| c.execute(&sql, &params).await)?;
        Ok(())
    }

    fn get(&self, key: &CredentialKey) -> Result<Option<StoredCredential>, StoreError> {
        let row = self.query_opt(
            CREDENTIAL_SELECT,
            &[&key.issuer, &key.client_id, &key.identity],
        )?;
        row.map(|r| credential_row(&r).open(&self.keys, key).map(|(c, _)| c))
            .transpose()
    }

    fn delete(&self, key: &CredentialKey) -> Result<bool, StoreError> {
        let n = self.execute(
            "DELETE FROM credential WHERE issuer = $1 AND client_id = $2 AND identity = $3",
            &[&key.issuer, &key.client_id, &key.identity],
        )?;
        Ok(n > 0)
    }

    fn list(&self) -> Result<Vec<CredentialKey>, StoreError> {
        Ok(self
            .query(
                "SELECT issuer, client_id, identity FROM credential ORDER BY 1, 2, 3",
                &[],
            )?
            .iter()
            .map(|r| CredentialKey {
                issuer: r.get(0),
                client_id: r.get(1),
                identity: r.get(2),
            })
            .collect())
    }

    fn put_access(&self, key: &CredentialKey, token: &CachedToken) -> Result<(), StoreError> {
        let sealed = sealed::seal_access(&self.keys, key, &token.token)?;
        self.execute(
            "UPDATE credential SET access_key_id = $4, access_sealed = $5, access_expires = $6,
                    access_issued = $7, access_scope = $8
             WHERE issuer = $1 AND client_id = $2 AND identity = $3",
            &[
                &key.issuer,
                &key.client_id,
                &key.identity,
                &sealed.key_id,
                &sealed.bytes,
                &token.expires.unix(),
                &token.issued.unix(),
                &token.scope,
            ],
        )?;
        Ok(())
    }

    fn set_health(&self, key: &CredentialKey, health: &Health) -> Result<(), StoreError> {
        self.execute(
            "UPDATE credential SET needs_login = $4, failures = $5, next_attempt = $6,
                    refresh_started = $7::BIGINT,
                    refresh_until = CASE WHEN $7::BIGINT IS NULL THEN NULL ELSE refresh_until END
             WHERE issuer = $1 AND client_id = $2 AND identity = $3",
            &[
                &key.issuer,
                &key.client_id,
                &key.identity,
                &health.needs_login,
                &i64::from(health.failures),
                &health.next_attempt.map(Timestamp::unix),
                &health.refresh_started.map(Timestamp::unix),
            ],
        )?;
        Ok(())
    }

    fn claim_refresh(&self, key: &CredentialKey, lease_secs: u32) -> Result<Claim, StoreError> {
        let lease = i64::from(lease_secs);
        let (issuer, client, identity) = (&key.issuer, &key.client_id, &key.identity);
        let found = self.pool.run(async |c| {
            let tx = c.transaction().await?;
            // The row lock makes the read and the mark one step for every replica.
            let row = tx
                .query_opt(CREDENTIAL_CLAIM, &[issuer, client, identity])
                .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let now: i64 = row.get(14);
            let cred = credential_row(&row);
            if let (Some(_), Some(until)) = (cred.health.refresh_started, cred.refresh_until)
                && until.unix() > now
            {
                return Ok(Some((cred, now, false)));
            }
            tx.execute(
                "UPDATE credential SET refresh_started = $4, refresh_until = $5
                     WHERE issuer = $1 AND client_id = $2 AND identity = $3",
                &[issuer, client, identity, &now, &(now + lease)],
            )
            .await?;
            tx.commit().await?;
            Ok(Some((cred, now, true)))
        })?;
        let Some((row, now, granted)) = found else {
            return Ok(Claim::Missing);
        };
        if !granted {
            let until = row.refresh_until.unwrap_or(Timestamp::from_unix(now));
            return Ok(Claim::Held { until });
        }
        let (mut credential, _) = row.open(&self.keys, key)?;
        let now = Timestamp::from_unix(now);
        let lapsed = credential.health.refresh_started.replace(now);
        Ok(Claim::Granted {
            credential,
            until: now.plus_secs(lease),
            lapsed,
        })
    }
}

const CREDENTIAL_SELECT: &str =
    "SELECT key_id, sealed, scope, updated_at, access_key_id, access_sealed,
            access_expires, access_issued, access_scope, needs_login, failures, next_attempt,
            refresh_started, refresh_until
     FROM credential WHERE issuer = $1 AND client_id = $2 AND identity = $3";

/// The credential, locked until the transaction ends, and the database's clock.
const CREDENTIAL_CLAIM: &str =
    "SELECT key_id, sealed, scope, updated_at, access_key_id, access_sealed,
            access_expires, access_issued, access_scope, needs_login, failures, next_attempt,
            refresh_started, refresh_until,
            floor(extract(epoch FROM clock_timestamp()))::BIGINT
     FROM credential WHERE issuer = $1 AND client_id = $2 AND identity = $3 FOR UPDATE";

impl RobotSecrets for PostgresStore {
    fn robot_secret_hash(&self, robot: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .query_opt("SELECT phc FROM robot_secret WHERE robot = $1", &[&robot])?
            .map(|r| r.get(0)))
    }

    fn set_robot_secret_hash(&self, robot: &str, phc: &str) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO robot_secret (robot, phc, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (robot) DO UPDATE SET phc = excluded.phc, updated_at = excluded.updated_at",
            &[&robot, &phc, &Timestamp::now().unix()],
        )?;
        Ok(())
    }
}

impl TaskHistory for PostgresStore {
    fn record_run(&self, run: &TaskRun, keep: usize) -> Result<(), StoreError> {
        let sealed = sealed::seal_run_output(&self.keys, &run.task, &run.output)?;
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let status = run.status.map(i64::from);
        let attempts = i64::from(run.attempts);
        let (started, ended) = (run.started.unix(), run.ended.unix());
        self.pool.run(async |c| {
                let tx = c.transaction().await?;
                tx.execute(
                    "INSERT INTO task_run (task, started, ended, status, attempts, reason, key_id, output)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        &run.task,
                        &started,
                        &ended,
                        &status,
                        &attempts,
                        &run.reason,
                        &sealed.key_id,
                        &sealed.bytes,
                    ],
                )
                .await?;
                tx.execute(
                    "DELETE FROM task_run WHERE task = $1 AND id NOT IN
                       (SELECT id FROM task_run WHERE task = $1 ORDER BY started DESC, id DESC LIMIT $2)",
                    &[&run.task, &keep],
                )
                .await?;
                tx.commit().await
        })
    }

    fn runs(&self, task: &str, limit: usize) -> Result<Vec<TaskRun>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query(
            "SELECT started, ended, status, attempts, reason, key_id, output FROM task_run
             WHERE task = $1 ORDER BY started DESC, id DESC LIMIT $2",
            &[&task, &limit],
        )?
        .iter()
        .map(|r| {
            Ok(TaskRun {
                task: task.to_string(),
                started: Timestamp::from_unix(r.get(0)),
                ended: Timestamp::from_unix(r.get(1)),
                status: r
                    .get::<_, Option<i64>>(2)
                    .map(|s| i32::try_from(s).unwrap_or(i32::MAX)),
                attempts: u32::try_from(r.get::<_, i64>(3)).unwrap_or(u32::MAX),
                reason: r.get(4),
                output: sealed::open_run_output(
                    &self.keys,
                    task,
                    r.get::<_, &str>(5),
                    r.get::<_, &[u8]>(6),
                )?,
            })
        })
        .collect()
    }

    fn last_started(&self, task: &str) -> Result<Option<Timestamp>, StoreError> {
        let row = self.query_opt(
            "SELECT MAX(started) FROM task_run WHERE task = $1",
            &[&task],
        )?;
        Ok(row
            .and_then(|r| r.get::<_, Option<i64>>(0))
            .map(Timestamp::from_unix))
    }

    fn claim_runs(&self, runs: &[(&str, Timestamp)]) -> Result<Vec<bool>, StoreError> {
        let now = Timestamp::now().unix();
        let runs: Vec<(&str, i64)> = runs.iter().map(|(t, due)| (*t, due.unix())).collect();
        self.pool.run(async |c| {
            let tx = c.transaction().await?;
            let insert = tx
                .prepare(
                    "INSERT INTO task_claim (task, due, claimed_at) VALUES ($1, $2, $3)
                         ON CONFLICT (task, due) DO NOTHING",
                )
                .await?;
            let mut claimed = Vec::with_capacity(runs.len());
            for (task, due) in &runs {
                claimed.push(tx.execute(&insert, &[task, due, &now]).await? == 1);
            }
            tx.execute(
                "DELETE FROM task_claim WHERE claimed_at < $1",
                &[&(now - TASK_CLAIM_KEEP_SECS)],
            )
            .await?;
            tx.commit().await?;
            Ok(claimed)
        })
    }
}

impl TaskSecrets for PostgresStore {
    fn put_task_secret(&self, name: &str, value: &Secret) -> Result<(), StoreError> {
        let sealed = sealed::seal_task_secret(&self.keys, name, value)?;
        self.execute(
            "INSERT INTO task_secret (name, key_id, sealed, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET key_id = excluded.key_id,
               sealed = excluded.sealed, updated_at = excluded.updated_at",
            &[
                &name,
                &sealed.key_id,
                &sealed.bytes,
                &Timestamp::now().unix(),
            ],
        )?;
        Ok(())
    }

    fn task_secret(&self, name: &str) -> Result<Option<Secret>, StoreError> {
        let row = self
            .query_opt(
                "SELECT key_id, sealed FROM task_secret WHERE name = $1",
                &[&name],
            )?
            .map(|r| (r.get(0), r.get(1)));
        sealed::open_task_secret(&self.keys, name, row)
    }

    fn delete_task_secret(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.execute("DELETE FROM task_secret WHERE name = $1", &[&name])? > 0)
    }

    fn task_secret_names(&self) -> Result<Vec<(String, Timestamp)>, StoreError> {
        Ok(self
            .query(
                "SELECT name, updated_at FROM task_secret ORDER BY name",
                &[],
            )?
            .iter()
            .map(|r| (r.get(0), Timestamp::from_unix(r.get(1))))
            .collect())
    }
}

fn state_row(r: &Row) -> (String, Vec<u8>, i64) {
    (r.get(0), r.get(1), r.get(2))
}

impl SharedState for PostgresStore {
    fn put_state(
        &self,
        kind: &str,
        id: &str,
        value: &[u8],
        expires: Timestamp,
    ) -> Result<(), StoreError> {
        let sealed = sealed::seal_state(&self.keys, kind, id, value)?;
        self.execute(
            "INSERT INTO shared_state (kind, id, key_id, sealed, expires) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (kind, id) DO UPDATE SET key_id = excluded.key_id,
               sealed = excluded.sealed, expires = excluded.expires",
            &[&kind, &id, &sealed.key_id, &sealed.bytes, &expires.unix()],
        )?;
        Ok(())
    }

    fn put_state_new(
        &self,
        kind: &str,
        id: &str,
        value: &[u8],
        expires: Timestamp,
    ) -> Result<bool, StoreError> {
        let sealed = sealed::seal_state(&self.keys, kind, id, value)?;
        let n = self.execute(
            "INSERT INTO shared_state (kind, id, key_id, sealed, expires) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (kind, id) DO UPDATE SET key_id = excluded.key_id,
               sealed = excluded.sealed, expires = excluded.expires
             WHERE shared_state.expires <= $6",
            &[
                &kind,
                &id,
                &sealed.key_id,
                &sealed.bytes,
                &expires.unix(),
                &Timestamp::now().unix(),
            ],
        )?;
        Ok(n == 1)
    }

    fn state(&self, kind: &str, id: &str) -> Result<Option<(Vec<u8>, Timestamp)>, StoreError> {
        let row = self.query_opt(
            "SELECT key_id, sealed, expires FROM shared_state
             WHERE kind = $1 AND id = $2 AND expires > $3",
            &[&kind, &id, &Timestamp::now().unix()],
        )?;
        sealed::open_state(&self.keys, kind, id, row.as_ref().map(state_row))
    }

    fn take_state(&self, kind: &str, id: &str) -> Result<Option<(Vec<u8>, Timestamp)>, StoreError> {
        // One statement: of two takers, the second finds nothing to delete.
        let row = self.query_opt(
            "DELETE FROM shared_state WHERE kind = $1 AND id = $2 AND expires > $3
             RETURNING key_id, sealed, expires",
            &[&kind, &id, &Timestamp::now().unix()],
        )?;
        sealed::open_state(&self.keys, kind, id, row.as_ref().map(state_row))
    }

    fn delete_state(&self, kind: &str, id: &str) -> Result<bool, StoreError> {
        Ok(self.execute(
            "DELETE FROM shared_state WHERE kind = $1 AND id = $2",
            &[&kind, &id],
        )? > 0)
    }

    fn count_state(&self, kind: &str) -> Result<usize, StoreError> {
        let row = self.query_opt(
            "SELECT COUNT(*) FROM shared_state WHERE kind = $1 AND expires > $2",
            &[&kind, &Timestamp::now().unix()],
        )?;
        Ok(row.map_or(0, |r| usize::try_from(r.get::<_, i64>(0)).unwrap_or(0)))
    }

    fn trim_state(&self, kind: &str, keep: usize) -> Result<usize, StoreError> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let n = self.execute(
            "DELETE FROM shared_state WHERE kind = $1 AND id NOT IN
               (SELECT id FROM shared_state WHERE kind = $1 ORDER BY expires DESC, id LIMIT $2)",
            &[&kind, &keep],
        )?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn purge_state(&self) -> Result<usize, StoreError> {
        let n = self.execute(
            "DELETE FROM shared_state WHERE expires <= $1",
            &[&Timestamp::now().unix()],
        )?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}
