//! The store's interfaces, one per kind of thing kept; every backend implements each.

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
    /// The last access token obtained with it, if cached.
    pub access: Option<CachedToken>,
    pub health: Health,
}

/// An access token kept so it can be handed out again while it is fresh.
#[derive(Clone, Debug)]
pub struct CachedToken {
    pub token: Secret,
    pub expires: Timestamp,
    pub issued: Timestamp,
    pub scope: Option<String>,
}

/// How refreshing a credential has been going.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// Set when only a new interactive login can help (e.g. `invalid_grant`).
    pub needs_login: Option<String>,
    /// Consecutive failed refreshes, for backoff.
    pub failures: u32,
    pub next_attempt: Option<Timestamp>,
    /// Set while a refresh is in flight. Still set when the credential is next read
    /// means the process died mid-refresh, possibly after the issuer rotated the token.
    pub refresh_started: Option<Timestamp>,
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

/// What [`CredentialStore::claim_refresh`] found. A claim is a lease: it lapses by itself
/// at `until`, so a process killed mid-refresh does not block the credential for ever.
#[derive(Debug)]
pub enum Claim {
    /// The caller holds the refresh until `until`. `credential` is as the store has it
    /// now (another process may have rotated it since the caller last read it); `lapsed`
    /// is when an earlier claim, never finished, began (its process died or hung, perhaps
    /// after the issuer had rotated the refresh token).
    Granted {
        credential: StoredCredential,
        until: Timestamp,
        lapsed: Option<Timestamp>,
    },
    /// Someone else is refreshing it; their claim lapses at `until`.
    Held { until: Timestamp },
    /// Nothing is stored under the key.
    Missing,
}

/// One finished run of a scheduled task. Its output was capped and had the run's secrets
/// redacted by the runner; the store seals it all the same.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRun {
    pub task: String,
    pub started: Timestamp,
    pub ended: Timestamp,
    /// The command's exit status; `None` when it never started or was killed.
    pub status: Option<i32>,
    pub attempts: u32,
    pub reason: Option<String>,
    pub output: String,
}

/// The tasks a batch of runs belongs to, each once: a batch trims each task's history once.
pub(crate) fn tasks_of(runs: &[TaskRun]) -> std::collections::BTreeSet<&str> {
    runs.iter().map(|run| run.task.as_str()).collect()
}

/// Long-lived credentials, sealed at rest. Implementations must make every write durable
/// before returning: a rotated refresh token is often the only valid one left.
pub trait CredentialStore: Send + Sync {
    /// Keep a (new or rotated) refresh token, clearing the health and ending any claim;
    /// with `access`, the access token that came with it is cached in the same write.
    fn put(
        &self,
        key: &CredentialKey,
        refresh_token: &Secret,
        scope: Option<&str>,
        access: Option<&CachedToken>,
    ) -> Result<(), StoreError>;
    fn get(&self, key: &CredentialKey) -> Result<Option<StoredCredential>, StoreError>;
    /// Returns whether there was something to delete.
    fn delete(&self, key: &CredentialKey) -> Result<bool, StoreError>;
    fn list(&self) -> Result<Vec<CredentialKey>, StoreError>;

    /// Cache the access token obtained with the credential at `key`.
    fn put_access(&self, key: &CredentialKey, token: &CachedToken) -> Result<(), StoreError>;
    /// Record the refresher's view of the credential (failures, backoff, needs-login).
    /// `refresh_started: None` also ends the caller's claim.
    fn set_health(&self, key: &CredentialKey, health: &Health) -> Result<(), StoreError>;
    /// Claim the right to refresh the credential at `key` for `lease_secs`, atomically
    /// with reading it, so that of several processes sharing the store exactly one uses a
    /// (rotating) refresh token at a time. The claim ends with [`put`](Self::put) (a
    /// rotated token), [`set_health`](Self::set_health) without `refresh_started`, or when
    /// the lease lapses. The backend's clock decides, so replicas' clocks need not agree.
    fn claim_refresh(&self, key: &CredentialKey, lease_secs: u32) -> Result<Claim, StoreError>;
}

/// The broker's robots' secrets, as hashes.
pub trait RobotSecrets: Send + Sync {
    /// The PHC-format hash of a robot's secret (never the secret itself).
    fn robot_secret_hash(&self, robot: &str) -> Result<Option<String>, StoreError>;
    fn set_robot_secret_hash(&self, robot: &str, phc: &str) -> Result<(), StoreError>;
}

/// What scheduled tasks did: their finished runs, output sealed.
pub trait TaskHistory: Send + Sync {
    /// Keep finished task runs, all in one durable step (a burst of short runs costs one
    /// sync, not one each); at most `keep` runs per task are kept (the oldest go).
    fn record_runs(&self, runs: &[TaskRun], keep: usize) -> Result<(), StoreError>;
    /// The task's runs, newest first.
    fn runs(&self, task: &str, limit: usize) -> Result<Vec<TaskRun>, StoreError>;
    /// When the task's newest kept run started (no output is opened).
    fn last_started(&self, task: &str) -> Result<Option<Timestamp>, StoreError>;
    /// Claim the runs of tasks due at the given times, in one durable step: for each,
    /// true for exactly one caller however many schedulers share the store, so each due
    /// run starts once across a fleet.
    fn claim_runs(&self, runs: &[(&str, Timestamp)]) -> Result<Vec<bool>, StoreError>;
}

/// Named secrets for tasks' `{{ NAME }}` templates, sealed.
pub trait TaskSecrets: Send + Sync {
    /// Keep a named secret (replacing one of that name).
    fn put_task_secret(&self, name: &str, value: &Secret) -> Result<(), StoreError>;
    fn task_secret(&self, name: &str) -> Result<Option<Secret>, StoreError>;
    /// Returns whether there was something to delete.
    fn delete_task_secret(&self, name: &str) -> Result<bool, StoreError>;
    /// The names, and when each was set; never a value.
    fn task_secret_names(&self) -> Result<Vec<(String, Timestamp)>, StoreError>;
}

/// Short-lived state that every broker sharing the store must see alike (Vault tokens,
/// logins in flight, one-time links): entries of a `kind`, under an `id` that is never a
/// secret itself (a digest of one, or a random handle), with a sealed value and an expiry.
/// An expired entry is never returned.
pub trait SharedState: Send + Sync {
    /// Keep `value` under (`kind`, `id`) until `expires`, replacing what was there.
    fn put_state(
        &self,
        kind: &str,
        id: &str,
        value: &[u8],
        expires: Timestamp,
    ) -> Result<(), StoreError>;
    /// Keep `value` under (`kind`, `id`) unless a live entry is there already; returns
    /// whether it was kept (of several callers at once, exactly one wins).
    fn put_state_new(
        &self,
        kind: &str,
        id: &str,
        value: &[u8],
        expires: Timestamp,
    ) -> Result<bool, StoreError>;
    /// The value and its expiry.
    fn state(&self, kind: &str, id: &str) -> Result<Option<(Vec<u8>, Timestamp)>, StoreError>;
    /// Remove and return the entry: of several callers at once, exactly one gets it
    /// (single-use links and handles).
    fn take_state(&self, kind: &str, id: &str) -> Result<Option<(Vec<u8>, Timestamp)>, StoreError>;
    /// Returns whether there was something to delete.
    fn delete_state(&self, kind: &str, id: &str) -> Result<bool, StoreError>;
    /// How many live entries of `kind` there are (for limits).
    fn count_state(&self, kind: &str) -> Result<usize, StoreError>;
    /// Keep only the `keep` entries of `kind` that expire last; returns how many went.
    fn trim_state(&self, kind: &str, keep: usize) -> Result<usize, StoreError>;
    /// Forget every expired entry; returns how many went.
    fn purge_state(&self) -> Result<usize, StoreError>;
}

/// The backend itself: where it is and whether it answers.
pub trait Backend: Send + Sync {
    /// Where the store is, for messages (a directory, or a URL without its password).
    fn location(&self) -> String;
    /// Whether the store answers now (a broker's readiness).
    fn ping(&self) -> Result<(), StoreError>;
}

/// Everything a backend keeps, for the code that wires one up and hands out the parts:
/// an `Arc<dyn Store>` coerces to any one of them.
pub trait Store:
    Backend + CredentialStore + RobotSecrets + TaskHistory + TaskSecrets + SharedState
{
}

impl<T: Backend + CredentialStore + RobotSecrets + TaskHistory + TaskSecrets + SharedState> Store
    for T
{
}
