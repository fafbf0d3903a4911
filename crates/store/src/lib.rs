//! credkeeper-store: where credentials rest and where tokens are delivered.
//!
//! What it is for:
//! - [`CredentialStore`]: long-lived credentials (refresh tokens) per issuer, client and
//!   identity, behind one trait so the embedded SQLite backend ([`SqliteStore`]) can be
//!   joined by others (PostgreSQL) without touching callers. Secret values are sealed
//!   with an AEAD cipher ([`KeyRing`]) before they reach any backend.
//! - [`sink`]: token files as WLCG Bearer Token Discovery defines them, written
//!   atomically with mode 0600 so a reader never sees a partial token.
//! - [`perm`]: the ssh-style refusal of secret files that others can read.
//!
//! What it is not: it never talks to an issuer and never decides when to refresh.

mod backend;
pub mod perm;
mod seal;
pub mod sink;
mod sqlite;

pub use backend::{
    CachedToken, CredentialKey, CredentialStore, Health, StoreError, StoredCredential, TaskRun,
};
pub use seal::{KeyRing, SealError};
pub use sqlite::SqliteStore;
