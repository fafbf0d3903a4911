//! Typed access to the store's shared state: what a broker must not keep to itself when
//! several share a store (Vault tokens, login links, web sessions, logins in flight).
//! Values go in as JSON, sealed by the store, under the SHA-256 of the bearer secret that
//! names them (a token, a cookie, a link), never the secret itself.

use credkeeper_core::Timestamp;
use credkeeper_store::{Store, StoreError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;

#[derive(Clone)]
pub struct Shared {
    store: Arc<dyn Store>,
}

/// The shared-state id of a bearer secret: its digest in hex.
fn id_of(secret: &str) -> String {
    crate::handle::digest(secret)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn to_json<T: Serialize>(kind: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Backend {
        path: kind.to_string(),
        message: e.to_string(),
    })
}

/// An entry that does not parse (written by another version) counts as absent.
fn parsed<T: DeserializeOwned>(entry: Option<(Vec<u8>, Timestamp)>) -> Option<(T, Timestamp)> {
    let (bytes, expires) = entry?;
    Some((serde_json::from_slice(&bytes).ok()?, expires))
}

impl Shared {
    pub fn new(store: Arc<dyn Store>) -> Shared {
        Shared { store }
    }

    /// Keep `value` under `secret` until `expires`, replacing what was there.
    pub fn put<T: Serialize>(
        &self,
        kind: &str,
        secret: &str,
        value: &T,
        expires: Timestamp,
    ) -> Result<(), StoreError> {
        self.store
            .put_state(kind, &id_of(secret), &to_json(kind, value)?, expires)
    }

    /// Keep `value` under `secret` unless a live entry is there; returns whether it was kept.
    pub fn put_new<T: Serialize>(
        &self,
        kind: &str,
        secret: &str,
        value: &T,
        expires: Timestamp,
    ) -> Result<bool, StoreError> {
        self.store
            .put_state_new(kind, &id_of(secret), &to_json(kind, value)?, expires)
    }

    /// The value under `secret` and its expiry, if live.
    pub fn get<T: DeserializeOwned>(
        &self,
        kind: &str,
        secret: &str,
    ) -> Result<Option<(T, Timestamp)>, StoreError> {
        Ok(parsed(self.store.state(kind, &id_of(secret))?))
    }

    /// Remove and return it: of several brokers asking at once, one gets it.
    pub fn take<T: DeserializeOwned>(
        &self,
        kind: &str,
        secret: &str,
    ) -> Result<Option<(T, Timestamp)>, StoreError> {
        Ok(parsed(self.store.take_state(kind, &id_of(secret))?))
    }

    /// Keep only the `keep` entries of `kind` that expire last.
    pub fn trim(&self, kind: &str, keep: usize) -> Result<usize, StoreError> {
        self.store.trim_state(kind, keep)
    }

    /// Whether fewer than `limit` entries of `kind` are live (expired ones are forgotten
    /// first when it looks full).
    pub fn below(&self, kind: &str, limit: usize) -> Result<bool, StoreError> {
        if self.store.count_state(kind)? < limit {
            return Ok(true);
        }
        self.store.purge_state()?;
        Ok(self.store.count_state(kind)? < limit)
    }
}
