//! What the credmon knows about each credential, kept in `<cred_dir>/.credkeeper-credmon.json`
//! (no secrets; mode 0640) so that `credmon status` can show it and a `--once` run from
//! cron honours the backoff and needs-login state of the previous run.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const FILE: &str = ".credkeeper-credmon.json";

/// Touched at the end of every pass; removed when a credmon starts (upstream reports itself
/// ready to the master once it exists).
pub const COMPLETE: &str = "CREDMON_COMPLETE";

/// What kind of credential: how the credmon renews it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Refreshed at a provider with the `.top`'s refresh token.
    #[default]
    OAuth,
    /// Signed here by a local issuer.
    Local,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::OAuth => "oauth",
            Kind::Local => "local",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CredStatus {
    pub user: String,
    pub token: String,
    pub kind: Kind,
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
    /// Prometheus text-format metrics: credentials by kind and state, seconds until the
    /// earliest expiry, the time of the last pass.
    pub fn prometheus(&self, now: i64) -> String {
        let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        let mut earliest: Option<i64> = None;
        for c in self.credentials.values() {
            let state = if c.needs_login.is_some() {
                "needs_login"
            } else if c.last_error.is_some() {
                "failing"
            } else {
                "ok"
            };
            *counts.entry((c.kind.as_str(), state)).or_default() += 1;
            if let Some(e) = c.expires_at.filter(|_| c.needs_login.is_none()) {
                earliest = Some(earliest.map_or(e, |x| x.min(e)));
            }
        }
        let mut out = String::from(
            "# HELP credkeeper_credmon_credentials Credentials in the directory by kind and state.\n\
             # TYPE credkeeper_credmon_credentials gauge\n",
        );
        for ((kind, state), n) in counts {
            out.push_str(&format!(
                "credkeeper_credmon_credentials{{kind=\"{kind}\",state=\"{state}\"}} {n}\n"
            ));
        }
        out.push_str(
            "# HELP credkeeper_credmon_earliest_expiry_seconds Seconds until the earliest token expires.\n\
             # TYPE credkeeper_credmon_earliest_expiry_seconds gauge\n",
        );
        out.push_str(&format!(
            "credkeeper_credmon_earliest_expiry_seconds {}\n",
            earliest.map_or(0, |e| e - now)
        ));
        out.push_str(
            "# HELP credkeeper_credmon_last_pass_timestamp_seconds When the last pass finished.\n\
             # TYPE credkeeper_credmon_last_pass_timestamp_seconds gauge\n",
        );
        out.push_str(&format!(
            "credkeeper_credmon_last_pass_timestamp_seconds {}\n",
            self.last_pass.unwrap_or(0)
        ));
        out
    }

    pub fn path(cred_dir: &Path) -> PathBuf {
        cred_dir.join(FILE)
    }

    /// The saved status, or an empty one when there is none or it is unreadable. The file
    /// is rewritten only by a pass that changed an entry; `last_pass` is the later of its
    /// own and `CREDMON_COMPLETE`'s modification time, which every pass touches.
    pub fn load(cred_dir: &Path) -> Status {
        let mut status: Status = std::fs::read(Status::path(cred_dir))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let completed = crate::pass::files::mtime(&cred_dir.join(COMPLETE));
        status.last_pass = status.last_pass.max(completed);
        status
    }

    /// Compact JSON: the file is for programs (`credmon status` pretty-prints it).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn save_bytes(cred_dir: &Path, bytes: &[u8]) -> Result<(), credkeeper_sink::SinkError> {
        credkeeper_sink::write_atomic(&Status::path(cred_dir), bytes, 0o640)
    }
}
