//! What PostgreSQL keeps of credentials: refresh tokens sealed, the cached access token,
//! the refresh claim (a row lock and the database's clock) that lets one replica of many
//! refresh a credential at a time, health.

use super::*;

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
