//! What SQLite keeps of credentials: refresh tokens sealed, the cached access token, the
//! refresh claim that lets one process of many refresh a credential at a time, health.

use super::*;

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
