//! State the replicas share through PostgreSQL (web sessions, login links, pending logins),
//! each entry sealed, with its expiry.

use super::*;

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
