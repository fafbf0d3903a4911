//! What rests and what keeps it fresh: the credential store (`[store]`) and the
//! background refresher (`[refresher]`).

use credkeeper_store::{PostgresSettings, StoreSettings};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `sqlite` (embedded, the default) or `postgres` (a fleet's shared database; the
    /// default when `url` is set).
    pub backend: Option<String>,
    /// SQLite: the directory of credentials.db and store.key. Default: `<state_dir>/`.
    pub path: Option<PathBuf>,
    /// PostgreSQL: `postgres://user@host:port/db?sslmode=verify-full`.
    pub url: Option<String>,
    /// PostgreSQL: a 0600 file holding only the password (else PGPASSWORD, PGPASSFILE or
    /// ~/.pgpass, as libpq).
    pub password_file: Option<PathBuf>,
    /// PostgreSQL: the CA certificates the server's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// PostgreSQL: connections kept open at most (default 8).
    pub pool_size: Option<usize>,
    /// PostgreSQL: the sealing key file, the same on every replica. Default:
    /// `<state_dir>/store.key`.
    pub key_file: Option<PathBuf>,
}

impl StoreSection {
    /// Whether the keys agree with each other: the key at fault and what is wrong.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        match (self.backend.as_deref(), &self.url) {
            (None | Some("sqlite"), None) | (None | Some("postgres"), Some(_)) => {}
            (Some("postgres"), None) => {
                return Err((
                    "backend",
                    "backend `postgres` needs url = \"postgres://user@host:port/db\"".into(),
                ));
            }
            (Some("sqlite"), Some(_)) => {
                return Err((
                    "url",
                    "url is for backend `postgres`; SQLite's directory is `path`".into(),
                ));
            }
            (Some(b), _) => {
                return Err((
                    "backend",
                    format!("unknown backend `{b}` (this build has: sqlite, postgres)"),
                ));
            }
        }
        if self.url.is_none()
            && let Some(key) = [
                ("password_file", self.password_file.is_some()),
                ("ca_file", self.ca_file.is_some()),
                ("pool_size", self.pool_size.is_some()),
                ("key_file", self.key_file.is_some()),
            ]
            .iter()
            .find_map(|(k, set)| set.then_some(*k))
        {
            return Err((key, format!("{key} is for a PostgreSQL store (set url)")));
        }
        if self.url.is_some() && self.path.is_some() {
            return Err((
                "path",
                "path is SQLite's directory; a PostgreSQL store has url".into(),
            ));
        }
        if self.pool_size == Some(0) {
            return Err(("pool_size", "must be at least 1".into()));
        }
        Ok(())
    }

    /// The store these settings name; `state_dir` holds the defaults.
    pub fn settings(&self, state_dir: &Path) -> StoreSettings {
        match &self.url {
            Some(url) => StoreSettings::Postgres(PostgresSettings {
                url: url.clone(),
                password_file: self.password_file.clone(),
                ca_file: self.ca_file.clone(),
                pool_size: self.pool_size.unwrap_or(8),
                key_file: self
                    .key_file
                    .clone()
                    .unwrap_or_else(|| state_dir.join("store.key")),
            }),
            None => StoreSettings::Sqlite {
                dir: self.path.clone().unwrap_or_else(|| state_dir.to_path_buf()),
            },
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefresherSection {
    /// Refresh when less than this share of a token's lifetime is left.
    #[serde(default = "default_share")]
    pub share: f64,
    /// Seconds between passes.
    #[serde(default = "default_interval")]
    pub interval: u64,
    /// Refreshes in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Seconds a refresh holds its claim on a credential, so that of several brokers
    /// sharing a store exactly one uses its refresh token; a broker killed mid-refresh
    /// loses the claim when this passes.
    #[serde(default = "default_claim_secs")]
    pub claim_secs: u32,
}

impl Default for RefresherSection {
    fn default() -> Self {
        RefresherSection {
            share: default_share(),
            interval: default_interval(),
            concurrency: default_concurrency(),
            claim_secs: default_claim_secs(),
        }
    }
}

fn default_share() -> f64 {
    0.5
}
fn default_interval() -> u64 {
    30
}
fn default_concurrency() -> usize {
    16
}
fn default_claim_secs() -> u32 {
    credkeeper_refresher::DEFAULT_CLAIM_SECS
}
