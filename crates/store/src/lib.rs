//! credkeeper-store: where credentials rest.
//!
//! What it is for:
//! - [`CredentialStore`]: long-lived credentials (refresh tokens) per issuer, client and
//!   identity, behind one trait so the embedded SQLite backend ([`SqliteStore`]) can be
//!   joined by others (PostgreSQL) without touching callers. Secret values are sealed
//!   with an AEAD cipher ([`KeyRing`]) before they reach any backend.
//!
//! What it is not: it never talks to an issuer and never decides when to refresh; token
//! files are the sink crate's.

mod backend;
mod seal;
mod sqlite;

pub use backend::{
    CachedToken, CredentialKey, CredentialStore, Health, StoreError, StoredCredential, TaskRun,
};
pub use seal::{KeyRing, SealError};
pub use sqlite::SqliteStore;
