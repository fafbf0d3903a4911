//! State fleet members share through SQLite (web sessions, login links, pending logins),
//! each entry with its expiry.

use super::*;

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
