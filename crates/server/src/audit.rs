//! The audit log: one JSON line per vend and per denial — who, what, result — and never
//! a token value. Lines are written by one task so requests never wait on the disk.

use serde::Serialize;
use std::io::Write;
use std::path::Path;
use tokio::sync::mpsc;

#[derive(Debug, Serialize)]
pub struct Event {
    pub time: String,
    pub robot: String,
    pub auth: &'static str,
    pub provider: String,
    pub scope: String,
    pub audience: String,
    /// `vended`, `denied` or `failed`.
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
}

#[derive(Clone)]
pub struct Audit {
    tx: mpsc::UnboundedSender<Event>,
}

impl Audit {
    /// Append to `path` (`-` for standard output), creating it with mode 0600; a file
    /// that was there already with another mode is made 0600 (and a warning says so).
    pub fn open(path: &Path) -> std::io::Result<Audit> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mut out: Box<dyn Write + Send> = if path.as_os_str() == "-" {
            Box::new(std::io::stdout())
        } else {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)?;
            let meta = file.metadata()?;
            let mode = meta.permissions().mode() & 0o7777;
            // A regular file only: a pipe or a device (`/dev/stderr`) is left alone.
            if meta.is_file() && mode != 0o600 {
                file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                tracing::warn!(
                    "audit log {}: mode was {mode:04o}; set to 0600",
                    path.display()
                );
            }
            Box::new(file)
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        tokio::task::spawn_blocking(move || {
            while let Some(event) = rx.blocking_recv() {
                let mut line = serde_json::to_vec(&event).unwrap_or_default();
                line.push(b'\n');
                // Drain what is queued before flushing: one write for a burst.
                while let Ok(more) = rx.try_recv() {
                    line.extend(serde_json::to_vec(&more).unwrap_or_default());
                    line.push(b'\n');
                }
                if let Err(e) = out.write_all(&line).and_then(|_| out.flush()) {
                    tracing::error!("cannot write the audit log: {e}");
                }
            }
        });
        Ok(Audit { tx })
    }

    pub fn record(&self, event: Event) {
        let _ = self.tx.send(event);
    }
}
