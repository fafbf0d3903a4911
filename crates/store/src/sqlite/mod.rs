//! The embedded backend: one SQLite file under the state directory.

mod credentials;
mod robots;
mod shared;
mod tasks;

use crate::backend::{
    Backend, CachedToken, Claim, CredentialKey, CredentialStore, Health, RobotSecrets, SharedState,
    StoreError, StoredCredential, TaskHistory, TaskRun, TaskSecrets, tasks_of,
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
