//! What each sealed value is bound to, and how a stored row becomes a value again: one
//! place for every backend, so a row moved between backends (or copied by
//! `store migrate`) opens the same way, and a backend only ever sees ciphertext.

use crate::backend::{CachedToken, CredentialKey, Health, StoreError, StoredCredential};
use crate::seal::{KeyRing, Sealed};
use credkeeper_core::{Secret, Timestamp};

/// Associated data of a shared-state entry: a value cannot be moved to another entry.
fn state_aad(kind: &str, id: &str) -> Vec<u8> {
    format!("state:{kind}\0{id}").into_bytes()
}

/// Associated data of a task secret: its value cannot be moved under another name.
fn task_secret_aad(name: &str) -> Vec<u8> {
    [b"task-secret:".as_slice(), name.as_bytes()].concat()
}

fn run_aad(task: &str) -> Vec<u8> {
    [b"task-run:".as_slice(), task.as_bytes()].concat()
}

/// `part` tells the refresh token (empty) from the access token, so one cannot be
/// swapped for the other.
fn credential_aad(key: &CredentialKey, part: &[u8]) -> Vec<u8> {
    [key.aad(), part.to_vec()].concat()
}

fn text(plain: Vec<u8>, what: impl FnOnce() -> StoreError) -> Result<Secret, StoreError> {
    String::from_utf8(plain)
        .map(Secret::new)
        .map_err(|_| what())
}

pub(crate) fn seal_refresh(
    keys: &KeyRing,
    key: &CredentialKey,
    token: &Secret,
) -> Result<Sealed, StoreError> {
    Ok(keys.seal(token.expose().as_bytes(), &credential_aad(key, b""))?)
}

pub(crate) fn seal_access(
    keys: &KeyRing,
    key: &CredentialKey,
    token: &Secret,
) -> Result<Sealed, StoreError> {
    Ok(keys.seal(token.expose().as_bytes(), &credential_aad(key, b"access"))?)
}

pub(crate) fn seal_state(
    keys: &KeyRing,
    kind: &str,
    id: &str,
    value: &[u8],
) -> Result<Sealed, StoreError> {
    Ok(keys.seal(value, &state_aad(kind, id))?)
}

pub(crate) fn seal_task_secret(
    keys: &KeyRing,
    name: &str,
    value: &Secret,
) -> Result<Sealed, StoreError> {
    Ok(keys.seal(value.expose().as_bytes(), &task_secret_aad(name))?)
}

pub(crate) fn seal_run_output(
    keys: &KeyRing,
    task: &str,
    output: &str,
) -> Result<Sealed, StoreError> {
    Ok(keys.seal(output.as_bytes(), &run_aad(task))?)
}

/// What a `put` changes in a stored credential's row (SQL both backends speak): the new
/// refresh token, a cleared health and claim, and the access token when one came with it
/// (else the cached one stays). One statement, so the claim never ends before the access
/// token obtained under it is kept.
pub(crate) const PUT_UPDATE: &str = "key_id = excluded.key_id, sealed = excluded.sealed,
    scope = excluded.scope, updated_at = excluded.updated_at,
    needs_login = NULL, failures = 0, next_attempt = NULL,
    refresh_started = NULL, refresh_until = NULL,
    access_key_id = CASE WHEN excluded.access_sealed IS NULL THEN credential.access_key_id ELSE excluded.access_key_id END,
    access_expires = CASE WHEN excluded.access_sealed IS NULL THEN credential.access_expires ELSE excluded.access_expires END,
    access_issued = CASE WHEN excluded.access_sealed IS NULL THEN credential.access_issued ELSE excluded.access_issued END,
    access_scope = CASE WHEN excluded.access_sealed IS NULL THEN credential.access_scope ELSE excluded.access_scope END,
    access_sealed = COALESCE(excluded.access_sealed, credential.access_sealed)";

/// A credential row as any backend reads it, still sealed.
pub(crate) struct CredentialRow {
    pub key_id: String,
    pub sealed: Vec<u8>,
    pub scope: Option<String>,
    pub updated: i64,
    pub access_key_id: Option<String>,
    pub access_sealed: Option<Vec<u8>>,
    pub access_expires: Option<i64>,
    pub access_issued: Option<i64>,
    pub access_scope: Option<String>,
    pub health: Health,
    pub refresh_until: Option<Timestamp>,
}

impl CredentialRow {
    /// The credential, opened, and the end of its refresh claim, if any.
    pub(crate) fn open(
        self,
        keys: &KeyRing,
        key: &CredentialKey,
    ) -> Result<(StoredCredential, Option<Timestamp>), StoreError> {
        let undecryptable = || StoreError::Undecryptable {
            issuer: key.issuer.clone(),
        };
        let unseal = |key_id: &str, sealed: &[u8], part: &[u8]| {
            let plain = keys
                .open(key_id, sealed, &credential_aad(key, part))
                .map_err(|_| undecryptable())?;
            text(plain, undecryptable)
        };
        let refresh_token = unseal(&self.key_id, &self.sealed, b"")?;
        let access = match (self.access_key_id, self.access_sealed, self.access_expires) {
            (Some(kid), Some(sealed), Some(expires)) => Some(CachedToken {
                token: unseal(&kid, &sealed, b"access")?,
                expires: Timestamp::from_unix(expires),
                issued: Timestamp::from_unix(self.access_issued.unwrap_or(expires)),
                scope: self.access_scope,
            }),
            _ => None,
        };
        let credential = StoredCredential {
            refresh_token,
            scope: self.scope,
            updated: Timestamp::from_unix(self.updated),
            access,
            health: self.health,
        };
        Ok((credential, self.refresh_until))
    }
}

pub(crate) fn open_state(
    keys: &KeyRing,
    kind: &str,
    id: &str,
    row: Option<(String, Vec<u8>, i64)>,
) -> Result<Option<(Vec<u8>, Timestamp)>, StoreError> {
    let Some((key_id, sealed, expires)) = row else {
        return Ok(None);
    };
    let value = keys
        .open(&key_id, &sealed, &state_aad(kind, id))
        .map_err(|_| StoreError::Undecryptable {
            issuer: format!("shared state {kind}"),
        })?;
    Ok(Some((value, Timestamp::from_unix(expires))))
}

pub(crate) fn open_task_secret(
    keys: &KeyRing,
    name: &str,
    row: Option<(String, Vec<u8>)>,
) -> Result<Option<Secret>, StoreError> {
    let Some((key_id, sealed)) = row else {
        return Ok(None);
    };
    let undecryptable = || StoreError::Undecryptable {
        issuer: format!("task secret {name}"),
    };
    let plain = keys
        .open(&key_id, &sealed, &task_secret_aad(name))
        .map_err(|_| undecryptable())?;
    text(plain, undecryptable).map(Some)
}

pub(crate) fn open_run_output(
    keys: &KeyRing,
    task: &str,
    key_id: &str,
    sealed: &[u8],
) -> Result<String, StoreError> {
    let output =
        keys.open(key_id, sealed, &run_aad(task))
            .map_err(|_| StoreError::Undecryptable {
                issuer: format!("task run output of {task}"),
            })?;
    Ok(String::from_utf8_lossy(&output).into_owned())
}

/// The value sealed into every store at its first open: a store opened with another key
/// file is refused at once, before a replica seals anything the others cannot open.
pub(crate) const KEY_CHECK: &[u8] = b"credkeeper store key check";

pub(crate) fn seal_key_check(keys: &KeyRing) -> Result<Sealed, StoreError> {
    Ok(keys.seal(KEY_CHECK, b"key-check")?)
}

pub(crate) fn key_check_opens(keys: &KeyRing, key_id: &str, sealed: &[u8]) -> bool {
    keys.open(key_id, sealed, b"key-check")
        .is_ok_and(|plain| plain == KEY_CHECK)
}
