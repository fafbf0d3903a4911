//! The embedded backend: one SQLite file under the state directory.

use crate::backend::{CredentialKey, CredentialStore, StoreError, StoredCredential};
use crate::seal::KeyRing;
use credkeeper_core::{Secret, Timestamp};
use rusqlite::{Connection, OptionalExtension, params};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Schema versions, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &["CREATE TABLE credential (
        issuer     TEXT NOT NULL,
        client_id  TEXT NOT NULL,
        identity   TEXT NOT NULL,
        key_id     TEXT NOT NULL,
        sealed     BLOB NOT NULL,
        scope      TEXT,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (issuer, client_id, identity)
    )"];

pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    keys: KeyRing,
}

impl SqliteStore {
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
        let keys = KeyRing::open_or_create(&state_dir.join("store.key"))?;
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

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.conn();
        // Cron jobs may run `get` at the same moment; wait for the lock instead of failing.
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| self.err(e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| self.err(e))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| self.err(e))?;
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

impl CredentialStore for SqliteStore {
    fn put(
        &self,
        key: &CredentialKey,
        refresh_token: &Secret,
        scope: Option<&str>,
    ) -> Result<(), StoreError> {
        let sealed = self
            .keys
            .seal(refresh_token.expose().as_bytes(), &key.aad())?;
        self.conn()
            .execute(
                "INSERT INTO credential (issuer, client_id, identity, key_id, sealed, scope, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (issuer, client_id, identity) DO UPDATE SET
                   key_id = excluded.key_id, sealed = excluded.sealed,
                   scope = excluded.scope, updated_at = excluded.updated_at",
                params![
                    key.issuer,
                    key.client_id,
                    key.identity,
                    sealed.key_id,
                    sealed.bytes,
                    scope,
                    Timestamp::now().unix()
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn get(&self, key: &CredentialKey) -> Result<Option<StoredCredential>, StoreError> {
        let row = self
            .conn()
            .query_row(
                "SELECT key_id, sealed, scope, updated_at FROM credential
                 WHERE issuer = ?1 AND client_id = ?2 AND identity = ?3",
                params![key.issuer, key.client_id, key.identity],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some((key_id, sealed, scope, updated)) = row else {
            return Ok(None);
        };
        let plain = self.keys.open(&key_id, &sealed, &key.aad()).map_err(|_| {
            StoreError::Undecryptable {
                issuer: key.issuer.clone(),
            }
        })?;
        let token = String::from_utf8(plain).map_err(|_| StoreError::Undecryptable {
            issuer: key.issuer.clone(),
        })?;
        Ok(Some(StoredCredential {
            refresh_token: Secret::new(token),
            scope,
            updated: Timestamp::from_unix(updated),
        }))
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_round_trip_and_never_rest_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let key = CredentialKey::new("https://iss", "client", "default");
        {
            let store = SqliteStore::open(dir.path()).unwrap();
            assert!(store.get(&key).unwrap().is_none());
            store
                .put(&key, &Secret::new("rt-1-very-secret"), Some("read"))
                .unwrap();
            store
                .put(&key, &Secret::new("rt-2-very-secret"), Some("read"))
                .unwrap();
            assert_eq!(store.list().unwrap(), vec![key.clone()]);
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        let got = store.get(&key).unwrap().unwrap();
        assert_eq!(got.refresh_token.expose(), "rt-2-very-secret");
        assert_eq!(got.scope.as_deref(), Some("read"));
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(
                !bytes.windows(11).any(|w| w == b"very-secret"),
                "clear text on disk"
            );
        }
        assert!(store.delete(&key).unwrap());
        assert!(!store.delete(&key).unwrap());
        assert!(store.get(&key).unwrap().is_none());
    }

    #[test]
    fn a_replaced_key_file_is_reported_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let key = CredentialKey::new("https://iss", "client", "default");
        SqliteStore::open(dir.path())
            .unwrap()
            .put(&key, &Secret::new("rt"), None)
            .unwrap();
        std::fs::remove_file(dir.path().join("store.key")).unwrap();
        let err = SqliteStore::open(dir.path())
            .unwrap()
            .get(&key)
            .unwrap_err();
        assert!(matches!(err, StoreError::Undecryptable { .. }), "{err}");
    }
}
