//! The scan: walk the directory, remove the CredD's stale key files, and decide which
//! credentials are due (upstream's renewal rules), remembering what each `.use` said so
//! that an idle pass costs only `stat` calls.

use super::files::{
    fingerprint, is_key_file, mtime, read_json_object, read_json_object_stamped, read_plain,
    safe_name,
};
use super::{Credmon, PassReport, Work, lock};
use credkeeper_core::Jwt;
use serde_json::{Map, Value};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Threads that walk user directories in a pass.
pub(super) const SCAN_THREADS: usize = 8;

/// Users a scan thread reads before handing over what is due: a hand-over may wake the
/// pass's thread, so not one per user; few enough that the first refresh starts at once.
const USERS_PER_SEND: usize = 16;

/// Where the scan hands over the work it finds.
pub(super) type Found = tokio::sync::mpsc::UnboundedSender<Vec<Work>>;

/// Key files older than this are the CredD's leftovers (upstream: 12 hours, by ctime).
pub(super) const KEY_FILE_MAX_AGE: i64 = 12 * 3600;

/// What was learnt about a `.use` the last time it was read, valid while its ctime and
/// the `.meta`'s mtime stay the same: an idle pass then needs only `stat` calls.
#[derive(Clone, Copy)]
pub(super) struct Seen {
    use_ctime: (i64, i64),
    meta_mtime: i64,
    renew_at: Option<f64>,
}

impl Credmon {
    /// Walk the directory and send what is due to `found`, a few users' worth at a time,
    /// as it is found. Blocking file I/O only. With `tidy` (the pass holds the directory
    /// for spares) a spare whose file is gone is removed. Ends early once `found` is closed.
    pub(super) fn scan(&self, tidy: bool, found: &Found) -> PassReport {
        let mut report = PassReport::default();
        let dir = self.dir().to_path_buf();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(
                    "cannot read the credential directory {}: {e}",
                    dir.display()
                );
                return report;
            }
        };
        // Sub-second precision, as upstream compares float times: a `.use` written a
        // moment ago with `expires_in: 0` is due at once.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let mut users = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_file() && is_key_file(&name) {
                self.maybe_remove_key_file(&entry.path(), now);
                continue;
            }
            if ft.is_file() {
                if let Some(pid) = credkeeper_sink::file::temp_file_owner(&name) {
                    remove_if_left_by_a_crash(&entry.path(), pid);
                }
                continue;
            }
            if !ft.is_dir() {
                if ft.is_symlink() {
                    tracing::warn!(
                        "skipping {}: a symlink in the credential directory is never followed",
                        entry.path().display()
                    );
                }
                continue;
            }
            if !safe_name(&name) {
                tracing::warn!("skipping directory {name:?}: not a valid user name");
                report.skipped += 1;
                continue;
            }
            users.push((entry.path(), name));
        }
        report.users = users.len();
        // Users are independent: several threads keep several file-system requests in
        // flight, which is what a pass over a cold directory waits on.
        let threads = SCAN_THREADS.min(users.len().div_ceil(256)).max(1);
        let chunk = users.len().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            let handles: Vec<_> = users
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        let mut report = PassReport::default();
                        for users in part.chunks(USERS_PER_SEND) {
                            let mut work = Vec::new();
                            for (path, name) in users {
                                self.scan_user(path, name, now, tidy, &mut work, &mut report);
                            }
                            if !work.is_empty() && found.send(work).is_err() {
                                break;
                            }
                        }
                        report
                    })
                })
                .collect();
            for h in handles {
                if let Ok(r) = h.join() {
                    report += r;
                }
            }
        });
        report
    }

    pub(super) fn maybe_remove_key_file(&self, path: &Path, now: f64) {
        if let Ok(meta) = std::fs::symlink_metadata(path)
            && now as i64 - meta.ctime() > KEY_FILE_MAX_AGE
        {
            match std::fs::remove_file(path) {
                Ok(()) => {
                    tracing::info!("removed key file {} (older than 12 hours)", path.display())
                }
                Err(e) => tracing::warn!("cannot remove stale key file {}: {e}", path.display()),
            }
        }
    }

    pub(super) fn scan_user(
        &self,
        dir: &Path,
        user: &str,
        now: f64,
        tidy: bool,
        work: &mut Vec<Work>,
        report: &mut PassReport,
    ) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            tracing::warn!("cannot read {}", dir.display());
            report.skipped += 1;
            return;
        };
        let mut names = Vec::new();
        for e in entries.flatten() {
            names.push(e.file_name().to_string_lossy().into_owned());
        }
        if tidy {
            for orphan in credkeeper_sink::spare::orphan_of(&names) {
                remove_orphan(&dir.join(orphan));
            }
        }
        for name in &names {
            if let Some(pid) = credkeeper_sink::file::temp_file_owner(name) {
                remove_if_left_by_a_crash(&dir.join(name), pid);
                continue;
            }
            if let Some(token) = name.strip_suffix(".meta") {
                if !safe_name(token) {
                    tracing::warn!("skipping {}/{name}: not a valid token name", dir.display());
                    report.skipped += 1;
                    continue;
                }
                match self.oauth_due(dir, user, token, now) {
                    Due::Yes => work.push(Work::Refresh {
                        user: user.into(),
                        token: token.into(),
                    }),
                    Due::No => report.idle += 1,
                    Due::NeedsLogin => report.needs_login += 1,
                    Due::Skip => report.skipped += 1,
                }
            } else if let Some(token) = name.strip_suffix(".top") {
                // Local tokens: `<provider>.top` or `<provider>_<handle>.top` without a `.meta`.
                if names.iter().any(|n| n.strip_suffix(".meta") == Some(token)) || !safe_name(token)
                {
                    continue;
                }
                let provider = token.split('_').next().unwrap_or(token);
                let Some(index) = self.settings.local.iter().position(|p| p.name == provider)
                else {
                    continue;
                };
                if self.local_due(dir, token, now) {
                    work.push(Work::Sign {
                        user: user.into(),
                        token: token.into(),
                        provider: index,
                    });
                } else {
                    report.idle += 1;
                }
            }
        }
    }

    pub(super) fn key(user: &str, token: &str) -> String {
        format!("{user}/{token}")
    }

    pub(super) fn oauth_due(&self, dir: &Path, user: &str, token: &str, now: f64) -> Due {
        let top = dir.join(format!("{token}.top"));
        let meta_path = dir.join(format!("{token}.meta"));
        let use_path = dir.join(format!("{token}.use"));
        if let Some(s) = lock(&self.status).credentials.get(&Self::key(user, token)) {
            if s.needs_login.is_some() && s.top_stamp == fingerprint(&top) {
                return Due::NeedsLogin;
            }
            if s.needs_login.is_none() && s.next_attempt.is_some_and(|t| t as f64 > now) {
                return Due::No;
            }
        }
        let Ok(use_meta) = std::fs::symlink_metadata(&use_path) else {
            return Due::Yes;
        };
        if use_meta.file_type().is_symlink() {
            tracing::warn!("skipping {}: a symlink; not followed", use_path.display());
            return Due::Skip;
        }
        let use_ctime = (use_meta.ctime(), use_meta.ctime_nsec());
        let cached = lock(&self.seen).get(&use_path).copied();
        // Nothing remembered (a new process): the `.meta` is read anyway, and its time
        // comes with it.
        let still = cached.filter(|s| {
            s.use_ctime == use_ctime && s.meta_mtime == mtime(&meta_path).unwrap_or_default()
        });
        let renew_at = match still {
            Some(s) => s.renew_at,
            None => {
                let (meta, meta_mtime) = read_json_object_stamped(&meta_path);
                let meta_mtime = meta_mtime.or_else(|| mtime(&meta_path)).unwrap_or_default();
                let ctime = use_ctime.0 as f64 + use_ctime.1 as f64 / 1e9;
                let renew_at = self.oauth_renew_at(&use_path, meta.ok().as_ref(), ctime);
                lock(&self.seen).insert(
                    use_path.clone(),
                    Seen {
                        use_ctime,
                        meta_mtime,
                        renew_at,
                    },
                );
                renew_at
            }
        };
        match renew_at {
            Some(at) if now <= at => Due::No,
            None if !self.use_refreshes(&meta_path) => Due::No,
            _ => Due::Yes,
        }
    }

    pub(super) fn use_refreshes(&self, meta: &Path) -> bool {
        read_json_object(meta)
            .ok()
            .and_then(|m| m.get("use_refresh_token").and_then(Value::as_bool))
            .unwrap_or(true)
    }

    /// When the `.use` is due for renewal (upstream rule: its ctime plus the token's
    /// lifetime times the fraction); `None` when it can never be renewed (the `.meta`
    /// says not to) — and `Some(0)` (now) when the `.use` is unreadable.
    pub(super) fn oauth_renew_at(
        &self,
        use_path: &Path,
        meta: Option<&Map<String, Value>>,
        ctime: f64,
    ) -> Option<f64> {
        if meta
            .and_then(|m| m.get("use_refresh_token"))
            .and_then(Value::as_bool)
            == Some(false)
        {
            return None;
        }
        let Ok(used) = read_json_object(use_path) else {
            return Some(0.0);
        };
        let Some(expires_in) = used.get("expires_in").and_then(Value::as_f64) else {
            return Some(0.0);
        };
        let token_url = meta
            .and_then(|m| m.get("token_url"))
            .and_then(Value::as_str)
            .unwrap_or("");
        // Box hands out short-lived tokens and wants them used longer (upstream rule).
        let fraction = if token_url.starts_with("https://") && token_url.contains(".box.com") {
            0.95
        } else {
            self.settings.refresh_fraction
        };
        Some(ctime + expires_in * fraction)
    }

    pub(super) fn local_due(&self, dir: &Path, token: &str, now: f64) -> bool {
        let use_path = dir.join(format!("{token}.use"));
        let Ok(meta) = std::fs::symlink_metadata(&use_path) else {
            return true;
        };
        if meta.file_type().is_symlink() {
            tracing::warn!("skipping {}: a symlink; not followed", use_path.display());
            return false;
        }
        let use_ctime = (meta.ctime(), meta.ctime_nsec());
        if let Some(s) = lock(&self.seen).get(&use_path).copied()
            && s.use_ctime == use_ctime
        {
            return s.renew_at.is_none_or(|at| now > at);
        }
        let renew_at = read_plain(&use_path).ok().and_then(|bytes| {
            match serde_json::from_slice::<Map<String, Value>>(&bytes) {
                Ok(m) => m.get("expires_in").and_then(Value::as_f64).map(|e| {
                    meta.ctime() as f64
                        + meta.ctime_nsec() as f64 / 1e9
                        + e * self.settings.refresh_fraction
                }),
                // A bare token (TOKEN_USE_JSON = false): half of its own lifetime.
                Err(_) => Jwt::decode(&String::from_utf8_lossy(&bytes))
                    .ok()
                    .and_then(|j| {
                        let (iat, exp) = (j.issued_at()?.unix(), j.expires()?.unix());
                        Some(iat as f64 + (exp - iat) as f64 * self.settings.refresh_fraction)
                    }),
            }
        });
        lock(&self.seen).insert(
            use_path,
            Seen {
                use_ctime,
                meta_mtime: 0,
                renew_at,
            },
        );
        renew_at.is_none_or(|at| now > at)
    }
}

/// Credential files are staged beside themselves, in the user's directory (a temporary
/// file in the root is an older credkeeper's); one whose process is gone was left by a
/// crash before its rename, and may hold a refresh token that nothing will ever place.
fn remove_if_left_by_a_crash(path: &Path, pid: u32) {
    if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
        return;
    }
    remove_stale(
        path,
        format_args!("left by process {pid} before its rename"),
    );
}

/// A spare whose file is gone holds the last version of a credential the CredD deleted.
fn remove_orphan(path: &Path) {
    remove_stale(
        path,
        format_args!("the spare of a credential file that is gone"),
    );
}

fn remove_stale(path: &Path, why: std::fmt::Arguments<'_>) {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!("removed {}, {why}", path.display()),
        Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
    }
}

pub(super) enum Due {
    Yes,
    No,
    NeedsLogin,
    Skip,
}
