//! credkeeper-store: where credentials rest.
//!
//! What it is for:
//! - one trait per kind of thing kept, so the embedded SQLite backend ([`SqliteStore`])
//!   can be joined by others (PostgreSQL) without touching callers: [`CredentialStore`]
//!   (refresh tokens per issuer, client and identity, with their cached access tokens and
//!   refresh health), [`RobotSecrets`] (hashes), [`TaskHistory`] (runs), [`TaskSecrets`];
//!   [`Store`] is all four. [`PostgresStore`] is the backend a fleet of brokers shares;
//!   [`open`] opens whichever [`StoreSettings`] names. Secret values are sealed with an AEAD cipher ([`KeyRing`])
//!   before they reach any backend.
//!
//! What it is not: it never talks to an issuer and never decides when to refresh; token
//! files are the sink crate's.

mod backend;
mod dump;
mod postgres;
mod seal;
mod sealed;
mod sqlite;

use std::path::PathBuf;
use std::sync::Arc;

pub use backend::{
    Backend, CachedToken, Claim, CredentialKey, CredentialStore, Health, RobotSecrets, SharedState,
    Store, StoreError, StoredCredential, TaskHistory, TaskRun, TaskSecrets,
};
pub use dump::{Dump, Value};
pub use postgres::{PostgresSettings, PostgresStore};
pub use seal::{KeyRing, SealError};
pub use sqlite::SqliteStore;

/// Which backend, and where.
#[derive(Clone, Debug)]
pub enum StoreSettings {
    /// `credentials.db` and its key file `store.key` in this directory.
    Sqlite { dir: PathBuf },
    /// A database every replica shares.
    Postgres(PostgresSettings),
}

/// Open the store `settings` name, whichever backend it is.
pub fn open(settings: &StoreSettings) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match settings {
        StoreSettings::Sqlite { dir } => Arc::new(SqliteStore::open(dir)?),
        StoreSettings::Postgres(pg) => Arc::new(PostgresStore::open(pg)?),
    })
}
