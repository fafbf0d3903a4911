//! credkeeper-store: where credentials rest.
//!
//! What it is for:
//! - one trait per kind of thing kept, so the embedded SQLite backend ([`SqliteStore`])
//!   can be joined by others (PostgreSQL) without touching callers: [`CredentialStore`]
//!   (refresh tokens per issuer, client and identity, with their cached access tokens and
//!   refresh health), [`RobotSecrets`] (hashes), [`TaskHistory`] (runs), [`TaskSecrets`];
//!   [`Store`] is all four. Secret values are sealed with an AEAD cipher ([`KeyRing`])
//!   before they reach any backend.
//!
//! What it is not: it never talks to an issuer and never decides when to refresh; token
//! files are the sink crate's.

mod backend;
mod seal;
mod sqlite;

pub use backend::{
    CachedToken, Claim, CredentialKey, CredentialStore, Health, RobotSecrets, SharedState, Store,
    StoreError, StoredCredential, TaskHistory, TaskRun, TaskSecrets,
};
pub use seal::{KeyRing, SealError};
pub use sqlite::SqliteStore;
