//! An on-disk cache of an issuer's public documents (discovery metadata, JWKS), so short
//! commands such as a cron job's `get` do not fetch them on every run. It never holds
//! secrets; a file that cannot be read or written only costs a fetch.

use credkeeper_core::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

const TTL_SECS: i64 = 3600;

#[derive(Clone, Debug, Default)]
pub struct DiskCache {
    dir: Option<PathBuf>,
}

#[derive(Serialize, Deserialize)]
struct Entry<T> {
    fetched: i64,
    value: T,
}

impl DiskCache {
    /// A cache in `dir`; `None` caches nothing.
    pub fn new(dir: Option<PathBuf>) -> DiskCache {
        DiskCache { dir }
    }

    fn file(&self, kind: &str, key: &str) -> Option<PathBuf> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
        let name: String = digest.as_ref()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{kind}-{name}.json")))
    }

    /// The cached value for `key` if it was fetched less than an hour ago.
    pub fn get<T: DeserializeOwned>(&self, kind: &str, key: &str) -> Option<T> {
        let bytes = std::fs::read(self.file(kind, key)?).ok()?;
        let entry: Entry<T> = serde_json::from_slice(&bytes).ok()?;
        (Timestamp::now().unix() - entry.fetched < TTL_SECS).then_some(entry.value)
    }

    pub fn put<T: Serialize>(&self, kind: &str, key: &str, value: &T) {
        let (Some(file), Some(dir)) = (self.file(kind, key), &self.dir) else {
            return;
        };
        let entry = Entry {
            fetched: Timestamp::now().unix(),
            value,
        };
        let _ = std::fs::create_dir_all(dir);
        if let Ok(bytes) = serde_json::to_vec(&entry) {
            let _ = credkeeper_sink::write_atomic(&file, &bytes, 0o644);
        }
    }

    /// Drop a cached value (after it led to a failure).
    pub fn forget(&self, kind: &str, key: &str) {
        if let Some(file) = self.file(kind, key) {
            let _ = std::fs::remove_file(file);
        }
    }
}
