//! The store interface every backend implements.

use credkeeper_core::{Secret, Timestamp};

/// Which credential: the issuer that minted it, the client it was minted for, and whose
/// it is (the local user is `"default"`; a broker stores one per user or robot).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CredentialKey {
    pub issuer: String,
    pub client_id: String,
    pub identity: String,
}

impl CredentialKey {
    pub fn new(issuer: &str, client_id: &str, identity: &str) -> Self {
        Self {
            issuer: issuer.to_string(),
            client_id: client_id.to_string(),
            identity: identity.to_string(),
        }
    }

    /// Binds a sealed value to its row, so a ciphertext copied to another key fails to open.
    pub(crate) fn aad(&self) -> Vec<u8> {
        format!(
            "credkeeper/v1\0{}\0{}\0{}",
            self.issuer, self.client_id, self.identity
        )
        .into_bytes()
    }
}

/// A long-lived credential as the store returns it.
#[derive(Clone, Debug)]
pub struct StoredCredential {
    pub refresh_token: Secret,
    /// Scopes the issuer granted with it (space-separated), when it said.
    pub scope: Option<String>,
    pub updated: Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("credential store {path}: {message}")]
    Backend { path: String, message: String },
    #[error("credential store key: {0}")]
    Seal(#[from] crate::SealError),
    #[error(
        "the stored credential for {issuer} could not be decrypted with the store key (was the key file replaced?)"
    )]
    Undecryptable { issuer: String },
}

/// Long-lived credentials, sealed at rest. Implementations must make every write durable
/// before returning: a rotated refresh token is often the only valid one left.
pub trait CredentialStore: Send + Sync {
    fn put(
        &self,
        key: &CredentialKey,
        refresh_token: &Secret,
        scope: Option<&str>,
    ) -> Result<(), StoreError>;
    fn get(&self, key: &CredentialKey) -> Result<Option<StoredCredential>, StoreError>;
    /// Returns whether there was something to delete.
    fn delete(&self, key: &CredentialKey) -> Result<bool, StoreError>;
    fn list(&self) -> Result<Vec<CredentialKey>, StoreError>;
}
