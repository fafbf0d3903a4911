//! The embedded backend: one SQLite file under the state directory.

use crate::backend::{
    Backend, CachedToken, Claim, CredentialKey, CredentialStore, Health, RobotSecrets, SharedState,
    StoreError, StoredCredential, TaskHistory, TaskRun, TaskSecrets,
};
use crate::dump::{Dump, TABLES, Value};
use crate::seal::KeyRing;
use crate::sealed::{self, CredentialRow};
use credkeeper_core::{Secret, Timestamp};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, params};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Schema versions, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE credential (
        issuer     TEXT NOT NULL,
        client_id  TEXT NOT NULL,
        identity   TEXT NOT NULL,
        key_id     TEXT NOT NULL,
        sealed     BLOB NOT NULL,
        scope      TEXT,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (issuer, client_id, identity)
    )",
    "ALTER TABLE credential ADD COLUMN access_key_id TEXT;
     ALTER TABLE credential ADD COLUMN access_sealed BLOB;
     ALTER TABLE credential ADD COLUMN access_expires INTEGER;
     ALTER TABLE credential ADD COLUMN access_issued INTEGER;
     ALTER TABLE credential ADD COLUMN access_scope TEXT;
     ALTER TABLE credential ADD COLUMN needs_login TEXT;
     ALTER TABLE credential ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE credential ADD COLUMN next_attempt INTEGER;
     ALTER TABLE credential ADD COLUMN refresh_started INTEGER;
     CREATE TABLE robot_secret (
        robot      TEXT PRIMARY KEY,
        phc        TEXT NOT NULL,
        updated_at INTEGER NOT NULL
     );",
    "CREATE TABLE task_run (
        id         INTEGER PRIMARY KEY,
        task       TEXT NOT NULL,
        started    INTEGER NOT NULL,
        ended      INTEGER NOT NULL,
        status     INTEGER,
        attempts   INTEGER NOT NULL,
        reason     TEXT,
        key_id     TEXT NOT NULL,
        output     BLOB NOT NULL
     );
     CREATE INDEX task_run_by_task ON task_run (task, started);",
    "CREATE TABLE task_secret (
        name       TEXT PRIMARY KEY,
        key_id     TEXT NOT NULL,
        sealed     BLOB NOT NULL,
        updated_at INTEGER NOT NULL
     );",
    "ALTER TABLE credential ADD COLUMN refresh_until INTEGER;
     CREATE TABLE task_claim (
        task       TEXT NOT NULL,
        due        INTEGER NOT NULL,
        claimed_at INTEGER NOT NULL,
        PRIMARY KEY (task, due)
     );
     CREATE INDEX task_claim_by_age ON task_claim (claimed_at);",
    "CREATE TABLE shared_state (
        kind       TEXT NOT NULL,
        id         TEXT NOT NULL,
        key_id     TEXT NOT NULL,
        sealed     BLOB NOT NULL,
        expires    INTEGER NOT NULL,
        PRIMARY KEY (kind, id)
     );
     CREATE INDEX shared_state_by_expiry ON shared_state (expires);",
];

/// Task claims older than this are forgotten: a due time that far back is never run again.
const TASK_CLAIM_KEEP_SECS: i64 = 30 * 86_400;

pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    keys: KeyRing,
}

impl SqliteStore {
    /// Whether `state_dir` holds a store (so a read-only look need not create one).
    pub fn exists(state_dir: &Path) -> bool {
        state_dir.join("credentials.db").is_file()
    }

    /// Open (creating if needed) the store in `state_dir`: `credentials.db` and its key
    /// file `store.key`. The directory is made 0700 when created.
    pub fn open(state_dir: &Path) -> Result<SqliteStore, StoreError> {
        let backend = |message: String| StoreError::Backend {
            path: state_dir.display().to_string(),
            message,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|e| backend(format!("cannot create the state directory: {e}")))?;
        let keys = KeyRing::open_or_create(&Self::key_file(state_dir))?;
        let path = state_dir.join("credentials.db");
        let conn = Connection::open(&path).map_err(|e| backend(e.to_string()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| backend(e.to_string()))?;
        let store = SqliteStore {
            path,
            conn: Mutex::new(conn),
            keys,
        };
        store.migrate()?;
        Ok(store)
    }

    /// Every row of every table as it is (still sealed), for `store migrate`.
    pub fn export(&self) -> Result<Dump, StoreError> {
        let conn = self.conn();
        let mut dump = Dump::default();
        for (table, columns) in TABLES {
            let mut stmt = conn
                .prepare(&format!("SELECT {} FROM {table}", columns.join(", ")))
                .map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map([], |r| {
                    (0..columns.len())
                        .map(|i| {
                            Ok(match r.get_ref(i)? {
                                ValueRef::Null => Value::Null,
                                ValueRef::Integer(n) => Value::Int(n),
                                ValueRef::Real(f) => Value::Text(f.to_string()),
                                ValueRef::Text(t) => {
                                    Value::Text(String::from_utf8_lossy(t).into_owned())
                                }
                                ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
                            })
                        })
                        .collect::<Result<Vec<Value>, rusqlite::Error>>()
                })
                .map_err(|e| self.err(e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| self.err(e))?;
            dump.rows.push(rows);
        }
        Ok(dump)
    }

    /// The key file this store seals with, for a copy that must keep opening its rows.
    pub fn key_file(state_dir: &Path) -> PathBuf {
        state_dir.join("store.key")
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        StoreError::Backend {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written: every change
        // is one statement or one transaction.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The credential at `key` and the end of its refresh claim, if any.
    fn read(
        &self,
        conn: &Connection,
        key: &CredentialKey,
    ) -> Result<Option<(StoredCredential, Option<Timestamp>)>, StoreError> {
        let row = conn
            .query_row(
                "SELECT key_id, sealed, scope, updated_at, access_key_id, access_sealed,
                        access_expires, access_issued, access_scope, needs_login, failures,
                        next_attempt, refresh_started, refresh_until
                 FROM credential WHERE issuer = ?1 AND client_id = ?2 AND identity = ?3",
                params![key.issuer, key.client_id, key.identity],
                |r| {
                    Ok(CredentialRow {
                        key_id: r.get(0)?,
                        sealed: r.get(1)?,
                        scope: r.get(2)?,
                        updated: r.get(3)?,
                        access_key_id: r.get(4)?,
                        access_sealed: r.get(5)?,
                        access_expires: r.get(6)?,
                        access_issued: r.get(7)?,
                        access_scope: r.get(8)?,
                        health: Health {
                            needs_login: r.get(9)?,
                            failures: r.get(10)?,
                            next_attempt: r.get::<_, Option<i64>>(11)?.map(Timestamp::from_unix),
                            refresh_started: r.get::<_, Option<i64>>(12)?.map(Timestamp::from_unix),
                        },
                        refresh_until: r.get::<_, Option<i64>>(13)?.map(Timestamp::from_unix),
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        row.open(&self.keys, key).map(Some)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.conn();
        // Cron jobs may run `get` at the same moment; wait for the lock instead of failing.
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| self.err(e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| self.err(e))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| self.err(e))?;
        // Up to date (the usual case): nothing to write, so a `get` that only reads does
        // not pay a transaction and its fsyncs.
        let current: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if current == MIGRATIONS.len() as i64 {
            return Ok(());
        }
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let done: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.err(e))?;
        let done = usize::try_from(done).unwrap_or(usize::MAX);
        if done > MIGRATIONS.len() {
            return Err(StoreError::Backend {
                path: self.path.display().to_string(),
                message: format!(
                    "schema version {done} is newer than this credkeeper knows ({}); upgrade credkeeper",
                    MIGRATIONS.len()
                ),
            });
        }
        for sql in &MIGRATIONS[done..] {
            tx.execute_batch(sql).map_err(|e| self.err(e))?;
        }
        tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }
}

impl Backend for SqliteStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.conn()
            .query_row("SELECT 1", [], |_| Ok(()))
            .map_err(|e| self.err(e))
    }
}

impl CredentialStore for SqliteStore {
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
        self.conn()
            .execute(
                &format!(
                    "INSERT INTO credential (issuer, client_id, identity, key_id, sealed, scope, updated_at,
                        access_key_id, access_sealed, access_expires, access_issued, access_scope)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                     ON CONFLICT (issuer, client_id, identity) DO UPDATE SET {}",
                    sealed::PUT_UPDATE
                ),
                params![
                    key.issuer,
                    key.client_id,
                    key.identity,
                    sealed.key_id,
                    sealed.bytes,
                    scope,
                    Timestamp::now().unix(),
                    access.as_ref().map(|(s, _)| &s.key_id),
                    access.as_ref().map(|(s, _)| &s.bytes),
                    access.as_ref().map(|(_, a)| a.expires.unix()),
                    access.as_ref().map(|(_, a)| a.issued.unix()),
                    access.as_ref().and_then(|(_, a)| a.scope.as_deref()),
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn get(&self, key: &CredentialKey) -> Result<Option<StoredCredential>, StoreError> {
        Ok(self
            .read(&self.conn(), key)?
            .map(|(credential, _)| credential))
    }

    fn claim_refresh(&self, key: &CredentialKey, lease_secs: u32) -> Result<Claim, StoreError> {
        let mut conn = self.conn();
        // IMMEDIATE: the read and the mark are one step for every process on this file.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let Some((mut credential, held_until)) = self.read(&tx, key)? else {
            return Ok(Claim::Missing);
        };
        let now = Timestamp::now();
        if let (Some(_), Some(until)) = (credential.health.refresh_started, held_until)
            && until > now
        {
            return Ok(Claim::Held { until });
        }
        let until = now.plus_secs(i64::from(lease_secs));
        tx.execute(
            "UPDATE credential SET refresh_started = ?4, refresh_until = ?5
             WHERE issuer = ?1 AND client_id = ?2 AND identity = ?3",
            params![
                key.issuer,
                key.client_id,
                key.identity,
                now.unix(),
                until.unix()
            ],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        let lapsed = credential.health.refresh_started.replace(now);
        Ok(Claim::Granted {
            credential,
            until,
            lapsed,
        })
    }

    fn delete(&self, key: &CredentialKey) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute(
                "DELETE FROM credential WHERE issuer = ?1 AND client_id = ?2 AND identity = ?3",
                params![key.issuer, key.client_id, key.identity],
            )
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    fn list(&self) -> Result<Vec<CredentialKey>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT issuer, client_id, identity FROM credential ORDER BY 1, 2, 3")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(CredentialKey {
                    issuer: r.get(0)?,
                    client_id: r.get(1)?,
                    identity: r.get(2)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    fn put_access(&self, key: &CredentialKey, token: &CachedToken) -> Result<(), StoreError> {
        let sealed = sealed::seal_access(&self.keys, key, &token.token)?;
        self.conn()
            .execute(
                "UPDATE credential SET access_key_id = ?4, access_sealed = ?5, access_expires = ?6,
                        access_issued = ?7, access_scope = ?8
                 WHERE issuer = ?1 AND client_id = ?2 AND identity = ?3",
                params![
                    key.issuer,
                    key.client_id,
                    key.identity,
                    sealed.key_id,
                    sealed.bytes,
                    token.expires.unix(),
                    token.issued.unix(),
                    token.scope
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn set_health(&self, key: &CredentialKey, health: &Health) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE credential SET needs_login = ?4, failures = ?5, next_attempt = ?6,
                        refresh_started = ?7,
                        refresh_until = CASE WHEN ?7 IS NULL THEN NULL ELSE refresh_until END
                 WHERE issuer = ?1 AND client_id = ?2 AND identity = ?3",
                params![
                    key.issuer,
                    key.client_id,
                    key.identity,
                    health.needs_login,
                    health.failures,
                    health.next_attempt.map(Timestamp::unix),
                    health.refresh_started.map(Timestamp::unix)
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

impl RobotSecrets for SqliteStore {
    fn robot_secret_hash(&self, robot: &str) -> Result<Option<String>, StoreError> {
        self.conn()
            .query_row(
                "SELECT phc FROM robot_secret WHERE robot = ?1",
                params![robot],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    fn set_robot_secret_hash(&self, robot: &str, phc: &str) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO robot_secret (robot, phc, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (robot) DO UPDATE SET phc = excluded.phc, updated_at = excluded.updated_at",
                params![robot, phc, Timestamp::now().unix()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

impl TaskHistory for SqliteStore {
    fn record_run(&self, run: &TaskRun, keep: usize) -> Result<(), StoreError> {
        let sealed = sealed::seal_run_output(&self.keys, &run.task, &run.output)?;
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        tx.execute(
            "INSERT INTO task_run (task, started, ended, status, attempts, reason, key_id, output)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                run.task,
                run.started.unix(),
                run.ended.unix(),
                run.status,
                run.attempts,
                run.reason,
                sealed.key_id,
                sealed.bytes
            ],
        )
        .map_err(|e| self.err(e))?;
        tx.execute(
            "DELETE FROM task_run WHERE task = ?1 AND id NOT IN
               (SELECT id FROM task_run WHERE task = ?1 ORDER BY started DESC, id DESC LIMIT ?2)",
            params![run.task, keep as i64],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    fn runs(&self, task: &str, limit: usize) -> Result<Vec<TaskRun>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT started, ended, status, attempts, reason, key_id, output FROM task_run
                 WHERE task = ?1 ORDER BY started DESC, id DESC LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows: Vec<(TaskRun, String, Vec<u8>)> = stmt
            .query_map(params![task, limit as i64], |r| {
                let run = TaskRun {
                    task: task.to_string(),
                    started: Timestamp::from_unix(r.get(0)?),
                    ended: Timestamp::from_unix(r.get(1)?),
                    status: r.get(2)?,
                    attempts: r.get(3)?,
                    reason: r.get(4)?,
                    output: String::new(),
                };
                Ok((run, r.get(5)?, r.get(6)?))
            })
            .map_err(|e| self.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        rows.into_iter()
            .map(|(mut run, key_id, sealed)| {
                run.output = sealed::open_run_output(&self.keys, task, &key_id, &sealed)?;
                Ok(run)
            })
            .collect()
    }

    fn last_started(&self, task: &str) -> Result<Option<Timestamp>, StoreError> {
        let started: Option<i64> = self
            .conn()
            .query_row(
                "SELECT MAX(started) FROM task_run WHERE task = ?1",
                params![task],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        Ok(started.map(Timestamp::from_unix))
    }

    fn claim_runs(&self, runs: &[(&str, Timestamp)]) -> Result<Vec<bool>, StoreError> {
        let now = Timestamp::now().unix();
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let claimed = {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO task_claim (task, due, claimed_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (task, due) DO NOTHING",
                )
                .map_err(|e| self.err(e))?;
            runs.iter()
                .map(|(task, due)| {
                    insert
                        .execute(params![task, due.unix(), now])
                        .map(|n| n == 1)
                        .map_err(|e| self.err(e))
                })
                .collect::<Result<Vec<bool>, StoreError>>()?
        };
        tx.execute(
            "DELETE FROM task_claim WHERE claimed_at < ?1",
            params![now - TASK_CLAIM_KEEP_SECS],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(claimed)
    }
}

impl TaskSecrets for SqliteStore {
    fn put_task_secret(&self, name: &str, value: &Secret) -> Result<(), StoreError> {
        let sealed = sealed::seal_task_secret(&self.keys, name, value)?;
        self.conn()
            .execute(
                "INSERT INTO task_secret (name, key_id, sealed, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET key_id = excluded.key_id,
                   sealed = excluded.sealed, updated_at = excluded.updated_at",
                params![name, sealed.key_id, sealed.bytes, Timestamp::now().unix()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn task_secret(&self, name: &str) -> Result<Option<Secret>, StoreError> {
        let row: Option<(String, Vec<u8>)> = self
            .conn()
            .query_row(
                "SELECT key_id, sealed FROM task_secret WHERE name = ?1",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        sealed::open_task_secret(&self.keys, name, row)
    }

    fn delete_task_secret(&self, name: &str) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute("DELETE FROM task_secret WHERE name = ?1", params![name])
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    fn task_secret_names(&self) -> Result<Vec<(String, Timestamp)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT name, updated_at FROM task_secret ORDER BY name")
            .map_err(|e| self.err(e))?;
        stmt.query_map([], |r| Ok((r.get(0)?, Timestamp::from_unix(r.get(1)?))))
            .map_err(|e| self.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))
    }
}

impl SharedState for SqliteStore {
    fn put_state(
        &self,
        kind: &str,
        id: &str,
        value: &[u8],
        expires: Timestamp,
    ) -> Result<(), StoreError> {
        let sealed = sealed::seal_state(&self.keys, kind, id, value)?;
        self.conn()
            .execute(
                "INSERT INTO shared_state (kind, id, key_id, sealed, expires) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (kind, id) DO UPDATE SET key_id = excluded.key_id,
                   sealed = excluded.sealed, expires = excluded.expires",
                params![kind, id, sealed.key_id, sealed.bytes, expires.unix()],
            )
            .map_err(|e| self.err(e))?;
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
        let n = self
            .conn()
            .execute(
                "INSERT INTO shared_state (kind, id, key_id, sealed, expires) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (kind, id) DO UPDATE SET key_id = excluded.key_id,
                   sealed = excluded.sealed, expires = excluded.expires
                 WHERE shared_state.expires <= ?6",
                params![kind, id, sealed.key_id, sealed.bytes, expires.unix(), Timestamp::now().unix()],
            )
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    fn state(&self, kind: &str, id: &str) -> Result<Option<(Vec<u8>, Timestamp)>, StoreError> {
        let row = self
            .conn()
            .prepare_cached(
                "SELECT key_id, sealed, expires FROM shared_state
                 WHERE kind = ?1 AND id = ?2 AND expires > ?3",
            )
            .and_then(|mut q| {
                q.query_row(params![kind, id, Timestamp::now().unix()], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()
            })
            .map_err(|e| self.err(e))?;
        sealed::open_state(&self.keys, kind, id, row)
    }

    fn take_state(&self, kind: &str, id: &str) -> Result<Option<(Vec<u8>, Timestamp)>, StoreError> {
        // One statement: of two takers, the second finds nothing to delete.
        let row = self
            .conn()
            .query_row(
                "DELETE FROM shared_state WHERE kind = ?1 AND id = ?2 AND expires > ?3
                 RETURNING key_id, sealed, expires",
                params![kind, id, Timestamp::now().unix()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        sealed::open_state(&self.keys, kind, id, row)
    }

    fn delete_state(&self, kind: &str, id: &str) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute(
                "DELETE FROM shared_state WHERE kind = ?1 AND id = ?2",
                params![kind, id],
            )
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    fn count_state(&self, kind: &str) -> Result<usize, StoreError> {
        let n: i64 = self
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM shared_state WHERE kind = ?1 AND expires > ?2",
                params![kind, Timestamp::now().unix()],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    fn trim_state(&self, kind: &str, keep: usize) -> Result<usize, StoreError> {
        self.conn()
            .execute(
                "DELETE FROM shared_state WHERE kind = ?1 AND id NOT IN
                   (SELECT id FROM shared_state WHERE kind = ?1 ORDER BY expires DESC, id LIMIT ?2)",
                params![kind, i64::try_from(keep).unwrap_or(i64::MAX)],
            )
            .map_err(|e| self.err(e))
    }

    fn purge_state(&self) -> Result<usize, StoreError> {
        self.conn()
            .execute(
                "DELETE FROM shared_state WHERE expires <= ?1",
                params![Timestamp::now().unix()],
            )
            .map_err(|e| self.err(e))
    }
}

/// What only SQLite shows; the behaviour every backend shares is in tests/spec.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_moved_under_another_name_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store
            .put_task_secret("DB_PASSWORD", &Secret::new("v1"))
            .unwrap();
        store.put_task_secret("API_KEY", &Secret::new("k")).unwrap();
        store
            .conn()
            .execute(
                "UPDATE task_secret SET sealed = (SELECT sealed FROM task_secret WHERE name = 'DB_PASSWORD') WHERE name = 'API_KEY'",
                [],
            )
            .unwrap();
        assert!(matches!(
            store.task_secret("API_KEY"),
            Err(StoreError::Undecryptable { .. })
        ));
        assert_eq!(
            store.task_secret("DB_PASSWORD").unwrap().unwrap().expose(),
            "v1"
        );
    }

    #[test]
    fn a_replaced_key_file_is_reported_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let key = CredentialKey::new("https://iss", "client", "default");
        SqliteStore::open(dir.path())
            .unwrap()
            .put(&key, &Secret::new("rt"), None, None)
            .unwrap();
        std::fs::remove_file(dir.path().join("store.key")).unwrap();
        let err = SqliteStore::open(dir.path())
            .unwrap()
            .get(&key)
            .unwrap_err();
        assert!(matches!(err, StoreError::Undecryptable { .. }), "{err}");
    }

    #[test]
    fn an_export_carries_every_row_still_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let key = CredentialKey::new("https://iss", "client", "default");
        store
            .put(&key, &Secret::new("exported-refresh-token"), None, None)
            .unwrap();
        store.set_robot_secret_hash("ci", "$argon2id$x").unwrap();
        let dump = store.export().unwrap();
        let counts: Vec<u64> = dump.counts().into_iter().map(|(_, n)| n).collect();
        assert_eq!(counts, [1, 1, 0, 0, 0, 0]);
        assert!(!format!("{dump:?}").contains("exported-refresh-token"));
    }
}
