//! What the credmon knows about each credential, kept in `<cred_dir>/.credkeeper-credmon.json`
//! (no secrets; mode 0640) so that `credmon status` can show it and a `--once` run from
//! cron honours the backoff and needs-login state of the previous run.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const FILE: &str = ".credkeeper-credmon.json";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CredStatus {
    pub user: String,
    pub token: String,
    /// `oauth` (refreshed at a provider) or `local` (signed here).
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Set when only a new login helps; cleared when the `.top` changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs_login: Option<String>,
    #[serde(default)]
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<i64>,
    /// Which `.top` (inode and modification time) `needs_login` was about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_stamp: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Status {
    #[serde(default)]
    pub last_pass: Option<i64>,
    #[serde(default)]
    pub credentials: BTreeMap<String, CredStatus>,
}

impl Status {
    pub fn path(cred_dir: &Path) -> PathBuf {
        cred_dir.join(FILE)
    }

    /// The saved status, or an empty one when there is none or it is unreadable.
    pub fn load(cred_dir: &Path) -> Status {
        std::fs::read(Status::path(cred_dir))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, cred_dir: &Path) -> Result<(), credkeeper_store::sink::SinkError> {
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        credkeeper_store::sink::write_atomic(&Status::path(cred_dir), &bytes, 0o640)
    }
}
