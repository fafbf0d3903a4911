//! The scan: walk the directory, remove the CredD's stale key files, and decide which
//! credentials are due (upstream's renewal rules), remembering what each `.use` said so
//! that an idle pass costs only `stat` calls.

use super::files::{
    fingerprint, is_key_file, mtime, read_json_object_stamped, read_plain, safe_name,
};
use super::{Credmon, PassReport, Work, lock};
use crate::error::CredFileError;
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

/// A file's ctime, seconds and nanoseconds: what tells one version of a `.use` from the
/// next (the CredD and the pass replace it; a change of its contents changes its ctime).
pub(super) type Ctime = (i64, i64);

/// What was learnt about a `.use` the last time it was read, valid while its ctime stays
/// the same: an idle pass then needs only `stat` calls.
#[derive(Clone, Copy)]
pub(super) struct Seen {
    use_ctime: Ctime,
    /// The `.meta`'s mtime when it was read, which it must still have; `None` when it was
    /// not read: the `.use` was not due even by the earliest rule (what `renew_at` says
    /// holds then until that time, whatever the `.meta` says), or due by the latest.
    meta_mtime: Option<i64>,
    renew_at: Option<f64>,
}

impl Seen {
    /// Whether what was learnt still answers for a `.use` that now has `use_ctime`: the
    /// same `.use`, and the `.meta` as read (or, unread, the time learnt not yet past).
    fn holds(&self, use_ctime: Ctime, meta_path: &Path, now: f64) -> bool {
        self.use_ctime == use_ctime
            && match self.meta_mtime {
                Some(at) => mtime(meta_path).unwrap_or_default() == at,
                None => self.renew_at.is_some_and(|at| now <= at),
            }
    }
}

/// Box hands out short-lived tokens and wants them used longer (upstream rule).
const BOX_FRACTION: f64 = 0.95;

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
                        unless_off: None,
                    }),
                    Due::UnlessOff { use_ctime } => work.push(Work::Refresh {
                        user: user.into(),
                        token: token.into(),
                        unless_off: Some(use_ctime),
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
        if let Some(s) = lock(&self.kept)
            .status
            .credentials
            .get(&Self::key(user, token))
        {
            if s.needs_login.is_some() && s.top_stamp == fingerprint(&top) {
                return Due::NeedsLogin;
            }
            if s.needs_login.is_none() && s.next_attempt.is_some_and(|t| t as f64 > now) {
                return Due::No;
            }
        }
        let cached = lock(&self.seen).get(&use_path).copied();
        let remembered = match cached {
            Some(s) => match stat_use(&use_path) {
                Ok(use_ctime) => Some(s).filter(|s| s.holds(use_ctime, &meta_path, now)),
                Err(gone) => return gone.oauth(),
            },
            None => None,
        };
        let seen = match remembered {
            Some(s) => s,
            None => {
                let (use_ctime, used) = match read_use(&use_path) {
                    Ok(found) => found,
                    Err(gone) => return gone.oauth(),
                };
                let expires_in = used
                    .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(&bytes).ok())
                    .and_then(|used| used.get("expires_in").and_then(Value::as_f64));
                let seen = self.oauth_renew_at(use_ctime, expires_in, &meta_path, now);
                lock(&self.seen).insert(use_path.clone(), seen);
                seen
            }
        };
        let use_ctime = seen.use_ctime;
        match (seen.renew_at, seen.meta_mtime) {
            (Some(at), _) if now <= at => Due::No,
            // Due by every rule, the `.meta` unread: only its `use_refresh_token` can
            // stop the refresh, which reads the `.meta` anyway.
            (Some(_), None) => Due::UnlessOff { use_ctime },
            (Some(_), Some(_)) => Due::Yes,
            // The `.meta` said `use_refresh_token: false` when it was read (its mtime is
            // still the one it had then).
            (None, _) => Due::No,
        }
    }

    /// What the refresh of a [`Due::UnlessOff`] credential found: its `.meta` (with
    /// `meta_mtime`) says `use_refresh_token: false`. Later scans answer "not due" while
    /// neither the `.use` nor the `.meta` changes, as if the scan had read it.
    pub(super) fn remember_off(&self, use_path: &Path, use_ctime: Ctime, meta_mtime: i64) {
        let seen = Seen {
            use_ctime,
            meta_mtime: Some(meta_mtime),
            renew_at: None,
        };
        lock(&self.seen).insert(use_path.to_path_buf(), seen);
    }

    /// When a `.use` with `use_ctime` and `expires_in` is due for renewal (upstream rule:
    /// its ctime plus the token's lifetime times the fraction); `None` when it can never be
    /// renewed (the `.meta` says not to) — and `Some(0)` (now) when the `.use` is unreadable. The `.meta` can
    /// only put renewal later (Box) or off, never earlier, so it is read only between the
    /// earliest rule and the latest: before, the `.use` is not due whatever the `.meta`
    /// says (`meta_mtime: None`, valid until `renew_at`); after, it is due unless the
    /// `.meta` turns refreshing off, which the refresh checks (`meta_mtime: None`,
    /// `renew_at` past).
    pub(super) fn oauth_renew_at(
        &self,
        use_ctime: Ctime,
        expires_in: Option<f64>,
        meta_path: &Path,
        now: f64,
    ) -> Seen {
        let ctime = use_ctime.0 as f64 + use_ctime.1 as f64 / 1e9;
        if let Some(lifetime) = expires_in {
            let fraction = self.settings.refresh_fraction;
            let earliest = ctime + lifetime * fraction.min(BOX_FRACTION);
            let latest = ctime + lifetime * fraction.max(BOX_FRACTION);
            if now <= earliest || now > latest {
                return Seen {
                    use_ctime,
                    meta_mtime: None,
                    renew_at: Some(earliest),
                };
            }
        }
        let (meta, meta_mtime) = read_json_object_stamped(meta_path);
        let meta = meta.ok();
        let meta_mtime = meta_mtime.or_else(|| mtime(meta_path)).unwrap_or_default();
        let field = |name| meta.as_ref().and_then(|m| m.get(name));
        let renew_at = if field("use_refresh_token").and_then(Value::as_bool) == Some(false) {
            None
        } else {
            let token_url = field("token_url").and_then(Value::as_str).unwrap_or("");
            let fraction = if token_url.starts_with("https://") && token_url.contains(".box.com") {
                BOX_FRACTION
            } else {
                self.settings.refresh_fraction
            };
            Some(expires_in.map_or(0.0, |lifetime| ctime + lifetime * fraction))
        };
        Seen {
            use_ctime,
            meta_mtime: Some(meta_mtime),
            renew_at,
        }
    }

    pub(super) fn local_due(&self, dir: &Path, token: &str, now: f64) -> bool {
        let use_path = dir.join(format!("{token}.use"));
        if let Some(s) = lock(&self.seen).get(&use_path).copied() {
            match stat_use(&use_path) {
                Ok(use_ctime) if s.use_ctime == use_ctime => {
                    return s.renew_at.is_none_or(|at| now > at);
                }
                Ok(_) => {}
                Err(gone) => return gone.local(),
            }
        }
        let (use_ctime, used) = match read_use(&use_path) {
            Ok(found) => found,
            Err(gone) => return gone.local(),
        };
        let ctime = use_ctime.0 as f64 + use_ctime.1 as f64 / 1e9;
        let renew_at = used.and_then(|bytes| {
            match serde_json::from_slice::<Map<String, Value>>(&bytes) {
                Ok(m) => m
                    .get("expires_in")
                    .and_then(Value::as_f64)
                    .map(|e| ctime + e * self.settings.refresh_fraction),
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
                meta_mtime: Some(0),
                renew_at,
            },
        );
        renew_at.is_none_or(|at| now > at)
    }
}

/// Why a `.use` has no ctime to go by.
enum Gone {
    /// Not there: the credential is due.
    Missing,
    /// A symlink, never followed: the credential is skipped.
    Symlink,
}

impl Gone {
    fn oauth(self) -> Due {
        match self {
            Gone::Missing => Due::Yes,
            Gone::Symlink => Due::Skip,
        }
    }

    /// Whether a local token is due.
    fn local(self) -> bool {
        matches!(self, Gone::Missing)
    }
}

fn symlink_skipped(use_path: &Path) -> Gone {
    tracing::warn!("skipping {}: a symlink; not followed", use_path.display());
    Gone::Symlink
}

/// A remembered `.use`'s ctime, to tell whether what was learnt from it still holds.
fn stat_use(use_path: &Path) -> Result<Ctime, Gone> {
    match std::fs::symlink_metadata(use_path) {
        Ok(m) if m.file_type().is_symlink() => Err(symlink_skipped(use_path)),
        Ok(m) => Ok((m.ctime(), m.ctime_nsec())),
        Err(_) => Err(Gone::Missing),
    }
}

/// A `.use` read afresh: its ctime, from the read's own `fstat` (a new process's scan
/// pays no `stat` before it), and its contents when it is a readable regular file.
fn read_use(use_path: &Path) -> Result<(Ctime, Option<Vec<u8>>), Gone> {
    match read_plain(use_path) {
        Ok((bytes, m)) => Ok(((m.ctime(), m.ctime_nsec()), Some(bytes))),
        Err(CredFileError::Symlink { .. }) => Err(symlink_skipped(use_path)),
        // There but unreadable: due by its ctime, as an unparsable one is.
        Err(_) => stat_use(use_path).map(|ctime| (ctime, None)),
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
    /// Due by every renewal rule; the `.meta` was not read. The refresh reads it and
    /// leaves the credential alone if it says `use_refresh_token: false` (the `.use` had
    /// `use_ctime` when the scan saw it).
    UnlessOff {
        use_ctime: Ctime,
    },
    No,
    NeedsLogin,
    Skip,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::condor_config::CondorConfig;
    use crate::settings::Settings;
    use credkeeper_oidc::UrlPolicy;

    fn credmon(dir: &Path) -> Credmon {
        let mut config = CondorConfig::default();
        config.set("SEC_CREDENTIAL_DIRECTORY_OAUTH", &dir.to_string_lossy());
        let settings = Settings::from_config(config, None).unwrap();
        Credmon::new(settings, UrlPolicy::default()).unwrap()
    }

    /// A `.use` that lives 100 s and a `.meta` with `token_url`, written now; the `.use`'s
    /// ctime, from which its renewal is counted.
    fn credential(user_dir: &Path, token_url: &str, use_refresh_token: bool) -> f64 {
        std::fs::create_dir_all(user_dir).unwrap();
        let meta = serde_json::json!({
            "token_url": token_url,
            "client_id": "c",
            "use_refresh_token": use_refresh_token,
        });
        std::fs::write(user_dir.join("tok.meta"), meta.to_string()).unwrap();
        let used = user_dir.join("tok.use");
        std::fs::write(&used, r#"{"access_token": "a", "expires_in": 100}"#).unwrap();
        let m = std::fs::symlink_metadata(&used).unwrap();
        m.ctime() as f64 + m.ctime_nsec() as f64 / 1e9
    }

    /// A credmon over a new directory with one credential, `u/tok` (see [`credential`]):
    /// the directory (removed when dropped), the credmon, `u`, and the `.use`'s ctime.
    fn one_credential(
        use_refresh_token: bool,
    ) -> (tempfile::TempDir, Credmon, std::path::PathBuf, f64) {
        let root = tempfile::tempdir().unwrap();
        let c = credmon(root.path());
        let dir = root.path().join("u");
        let t = credential(&dir, "https://op.example/token", use_refresh_token);
        (root, c, dir, t)
    }

    /// Due, or due unless the refresh finds the `.meta` turning refreshing off.
    fn due(c: &Credmon, user_dir: &Path, now: f64) -> bool {
        matches!(
            c.oauth_due(user_dir, "u", "tok", now),
            Due::Yes | Due::UnlessOff { .. }
        )
    }

    /// A newer modification time for `path`, two seconds on (mtimes are compared in
    /// seconds): the CredD's new version of it.
    fn rewrite_later(path: &Path, contents: &str) {
        std::fs::write(path, contents).unwrap();
        let later = std::fs::metadata(path).unwrap().modified().unwrap()
            + std::time::Duration::from_secs(2);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(later)
            .unwrap();
    }

    #[test]
    fn a_use_is_due_after_half_its_life_a_box_tokens_after_95_percent_and_never_when_the_meta_says_so()
     {
        let root = tempfile::tempdir().unwrap();
        let c = credmon(root.path());
        let plain = root.path().join("plain");
        let t = credential(&plain, "https://op.example/token", true);
        // Asked twice at each time: the second answer comes from what the first remembered.
        for _ in 0..2 {
            assert!(!due(&c, &plain, t + 40.0));
            assert!(due(&c, &plain, t + 60.0));
        }

        let boxed = root.path().join("boxed");
        let t = credential(&boxed, "https://api.box.com/oauth2/token", true);
        for _ in 0..2 {
            assert!(!due(&c, &boxed, t + 40.0), "before the earliest rule");
            assert!(!due(&c, &boxed, t + 60.0), "the .meta says Box: 95 %");
            assert!(due(&c, &boxed, t + 96.0));
        }

        let never = root.path().join("never");
        let t = credential(&never, "https://op.example/token", false);
        for _ in 0..2 {
            assert!(!due(&c, &never, t + 40.0));
            assert!(!due(&c, &never, t + 60.0), "use_refresh_token is false");
        }
    }

    #[test]
    fn past_every_rule_the_meta_is_left_to_the_refresh_whose_off_is_remembered_until_it_changes() {
        let (_root, c, dir, t) = one_credential(false);
        let use_path = dir.join("tok.use");
        let meta = dir.join("tok.meta");
        // Past 95 % of its life no `.meta` can make the `.use` not due, but for
        // `use_refresh_token: false`: the refresh reads the `.meta` anyway.
        std::fs::remove_file(&meta).unwrap();
        let Due::UnlessOff { use_ctime } = c.oauth_due(&dir, "u", "tok", t + 96.0) else {
            panic!("handed over without its .meta");
        };
        let off = r#"{"token_url": "https://op.example/token", "use_refresh_token": false}"#;
        std::fs::write(&meta, off).unwrap();
        let meta_mtime = std::fs::metadata(&meta).unwrap().mtime();
        c.remember_off(&use_path, use_ctime, meta_mtime);
        for _ in 0..2 {
            assert!(!due(&c, &dir, t + 1000.0), "the refresh found it off");
        }
        rewrite_later(&meta, r#"{"token_url": "https://op.example/token"}"#);
        assert!(
            matches!(
                c.oauth_due(&dir, "u", "tok", t + 1000.0),
                Due::UnlessOff { .. }
            ),
            "a new .meta is the refresh's to read again"
        );
    }

    #[test]
    fn a_meta_changed_after_it_was_read_is_read_again() {
        let (_root, c, dir, t) = one_credential(true);
        assert!(
            due(&c, &dir, t + 60.0),
            "read in full, remembered with its mtime"
        );
        let off = serde_json::json!({"token_url": "https://op.example/token", "use_refresh_token": false});
        rewrite_later(&dir.join("tok.meta"), &off.to_string());
        assert!(!due(&c, &dir, t + 60.0), "the new .meta says never");
    }
}
