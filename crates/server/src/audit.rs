//! The audit log: one JSON line per vend and per denial — who, what, result — and never
//! a token value. Lines are written by one task, a burst in one write: a request does not
//! take a lock or make a system call of its own. A vend waits for its line to be written
//! ([`Recorded::written`]) and is refused when it could not be, as Vault's audit device
//! refuses a request it cannot log.

use serde::Serialize;
use std::io::Write;
use std::path::Path;
use tokio::sync::{mpsc, oneshot};

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
    tx: mpsc::UnboundedSender<(Event, oneshot::Sender<bool>)>,
}

/// A line handed to the writer; [`Recorded::written`] tells whether it reached the log.
pub struct Recorded(oneshot::Receiver<bool>);

impl Recorded {
    /// Whether the line was written (the write of its burst returned without error).
    pub async fn written(self) -> bool {
        self.0.await.unwrap_or(false)
    }
}

impl Audit {
    /// Append to `path` (`-` for standard output), creating it with mode 0600; a file
    /// that was there already with another mode is made 0600 (and a warning says so).
    pub fn open(path: &Path) -> std::io::Result<Audit> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let out: Box<dyn Write + Send> = if path.as_os_str() == "-" {
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
        Ok(Audit::writing_to(out))
    }

    /// The writer task over any output (a file, standard output, a test's failing sink).
    pub fn writing_to(mut out: Box<dyn Write + Send>) -> Audit {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Event, oneshot::Sender<bool>)>();
        tokio::task::spawn_blocking(move || {
            let mut line = Vec::with_capacity(64 * 1024);
            let mut waiting = Vec::new();
            while let Some(first) = rx.blocking_recv() {
                line.clear();
                // Drain what is queued: one write for a burst.
                for (event, ack) in
                    std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok()))
                {
                    let _ = serde_json::to_writer(&mut line, &event);
                    line.push(b'\n');
                    waiting.push(ack);
                }
                let ok = match out.write_all(&line).and_then(|_| out.flush()) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!("cannot write the audit log: {e}");
                        false
                    }
                };
                for ack in waiting.drain(..) {
                    let _ = ack.send(ok);
                }
            }
        });
        Audit { tx }
    }

    pub fn record(&self, event: Event) -> Recorded {
        let (ack, written) = oneshot::channel();
        let _ = self.tx.send((event, ack));
        Recorded(written)
    }
}
