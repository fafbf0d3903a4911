//! The credmon process: the directory's `pid` and `CREDMON_COMPLETE` contract, and the
//! loop — a pass every interval, at once on SIGHUP, and a clean exit on SIGTERM, SIGINT
//! or SIGQUIT after the credential being written is complete.

use crate::pass::{Credmon, PassReport};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(
        "credential directory {0} is open to others (mode {1:04o}); run `chmod o-rwx {0}` (upstream uses 2770)"
    )]
    OpenToOthers(String, u32),
    #[error("credential directory {0}: {1}")]
    Io(String, std::io::Error),
    #[error("cannot watch signals: {0}")]
    Signals(std::io::Error),
}

/// Check (creating it 2770 if missing) the credential directory, write `pid`, and
/// remove a stale `CREDMON_COMPLETE`.
pub fn prepare(dir: &Path) -> Result<(), DaemonError> {
    let name = dir.display().to_string();
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o2770)
            .create(dir)
            .map_err(|e| DaemonError::Io(name.clone(), e))?;
    }
    let meta = std::fs::metadata(dir).map_err(|e| DaemonError::Io(name.clone(), e))?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o007 != 0 {
        return Err(DaemonError::OpenToOthers(name, mode));
    }
    // The pid is decimal without a newline: the CredD reads it with strtol.
    credkeeper_sink::write_atomic(
        &dir.join("pid"),
        std::process::id().to_string().as_bytes(),
        0o644,
    )
    .map_err(|e| DaemonError::Io(name.clone(), std::io::Error::other(e.to_string())))?;
    match std::fs::remove_file(dir.join(crate::status::COMPLETE)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DaemonError::Io(name, e)),
    }
}

fn log_report(r: &PassReport, millis: u128) {
    tracing::info!(
        "pass over {} users in {millis} ms: {} refreshed, {} signed, {} failed, {} need login, {} skipped, {} idle",
        r.users,
        r.refreshed,
        r.signed,
        r.failed,
        r.needs_login,
        r.skipped,
        r.idle
    );
}

/// Run one pass (for `--once`).
pub async fn once(credmon: Arc<Credmon>) -> PassReport {
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let started = std::time::Instant::now();
    let report = credmon.pass(&rx).await;
    log_report(&report, started.elapsed().as_millis());
    report
}

/// Run passes until a terminating signal.
pub async fn run(credmon: Arc<Credmon>) -> Result<(), DaemonError> {
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut quit = signal(SignalKind::quit()).map_err(DaemonError::Signals)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let interval = std::time::Duration::from_secs(credmon.settings.interval_secs);
    loop {
        let started = std::time::Instant::now();
        let pass = credmon.pass(&stop_rx);
        tokio::pin!(pass);
        // A signal during a pass stops it between credentials; the pass then finishes
        // the files in flight and returns.
        let report = loop {
            tokio::select! {
                r = &mut pass => break r,
                _ = term.recv() => { let _ = stop_tx.send(true); }
                _ = int.recv() => { let _ = stop_tx.send(true); }
                _ = quit.recv() => { let _ = stop_tx.send(true); }
                _ = hup.recv() => tracing::info!("SIGHUP during a pass: another pass follows"),
            }
        };
        log_report(&report, started.elapsed().as_millis());
        if *stop_rx.borrow() {
            tracing::info!("stopping");
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = hup.recv() => tracing::info!("SIGHUP: scanning now"),
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = quit.recv() => return Ok(()),
        }
    }
}
