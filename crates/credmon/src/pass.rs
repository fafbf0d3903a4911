//! One credmon pass over the credential directory: refresh OAuth tokens that are due,
//! sign local tokens that are due, clean up stale key files, touch `CREDMON_COMPLETE`.
//!
//! Unlike upstream, one bad credential never stops the pass: each is handled on its own,
//! with backoff after failures, and a credential whose refresh token the provider refused
//! (`invalid_grant`) is reported and left alone until its `.top` changes.

use crate::error::{CredFileError, PassError};
use crate::settings::{LocalProvider, Settings};
use crate::status::{CredStatus, Status};
use credkeeper_core::{Jwt, Secret, Timestamp};
use credkeeper_issuer::{Grant, LocalIssuer};
use credkeeper_oidc::{Http, OidcError, UrlPolicy};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Threads that walk user directories in a pass.
const SCAN_THREADS: usize = 8;

/// Key files older than this are the CredD's leftovers (upstream: 12 hours, by ctime).
const KEY_FILE_MAX_AGE: i64 = 12 * 3600;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    pub users: usize,
    pub refreshed: usize,
    pub signed: usize,
    pub failed: usize,
    pub needs_login: usize,
    pub skipped: usize,
    pub idle: usize,
}

#[derive(Clone, Debug)]
enum Work {
    Refresh {
        user: String,
        token: String,
    },
    Sign {
        user: String,
        token: String,
        provider: usize,
    },
}

/// What was learnt about a `.use` the last time it was read, valid while its ctime and
/// the `.meta`'s mtime stay the same: an idle pass then needs only `stat` calls.
#[derive(Clone, Copy)]
struct Seen {
    use_ctime: (i64, i64),
    meta_mtime: i64,
    renew_at: Option<f64>,
}

pub struct Credmon {
    pub settings: Settings,
    http: Http,
    policy: UrlPolicy,
    issuers: Mutex<HashMap<String, Arc<LocalIssuer>>>,
    status: Mutex<Status>,
    seen: Mutex<HashMap<PathBuf, Seen>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// HTCondor's `okay_for_oauth_filename` characters; never a leading dot.
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-+=_.".contains(c))
}

fn is_key_file(name: &str) -> bool {
    name.len() == 64
        && name
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// Read a file without following a symlink, refusing anything but a regular file.
fn read_plain(path: &Path) -> Result<Vec<u8>, CredFileError> {
    let io = |source| CredFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => CredFileError::Symlink {
                path: path.to_path_buf(),
            },
            _ => io(e),
        })?;
    let meta = f.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(CredFileError::NotRegular {
            path: path.to_path_buf(),
        });
    }
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(io)?;
    Ok(bytes)
}

/// A secret file (`.top`, `.meta`) must be owned by root, this process or the user
/// directory's owner, and be private.
fn check_secret_file(path: &Path, dir_owner: u32) -> Result<(), CredFileError> {
    let path_buf = || path.to_path_buf();
    let meta = std::fs::symlink_metadata(path).map_err(|source| CredFileError::Io {
        path: path_buf(),
        source,
    })?;
    if meta.file_type().is_symlink() {
        return Err(CredFileError::Symlink { path: path_buf() });
    }
    let euid = credkeeper_sink::uid();
    if ![0, euid, dir_owner].contains(&meta.uid()) {
        return Err(CredFileError::Owner {
            path: path_buf(),
            uid: meta.uid(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CredFileError::TooOpen {
            path: path_buf(),
            mode,
        });
    }
    Ok(())
}

/// [`check_secret_file`] for each of `paths` in the user directory `dir`.
fn check_secret_files(dir: &Path, paths: &[&Path]) -> Result<(), CredFileError> {
    let dir_owner = std::fs::symlink_metadata(dir).map(|m| m.uid()).unwrap_or(0);
    paths
        .iter()
        .try_for_each(|p| check_secret_file(p, dir_owner))
}

fn read_json_object(path: &Path) -> Result<Map<String, Value>, CredFileError> {
    let bytes = read_plain(path)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(CredFileError::NotObject {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(CredFileError::BadJson {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

fn mtime(path: &Path) -> Option<i64> {
    std::fs::symlink_metadata(path).ok().map(|m| m.mtime())
}

/// Tells one version of a file from the next, even within the same second.
fn fingerprint(path: &Path) -> Option<String> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| format!("{}:{}.{:09}", m.ino(), m.mtime(), m.mtime_nsec()))
}

impl Credmon {
    pub fn new(settings: Settings, policy: UrlPolicy) -> Result<Credmon, OidcError> {
        let status = Status::load(&settings.cred_dir);
        Ok(Credmon {
            settings,
            http: Http::new()?,
            policy,
            issuers: Mutex::new(HashMap::new()),
            status: Mutex::new(status),
            seen: Mutex::new(HashMap::new()),
        })
    }

    pub fn status(&self) -> Status {
        lock(&self.status).clone()
    }

    fn dir(&self) -> &Path {
        &self.settings.cred_dir
    }

    /// One full pass. `stop` is checked between credentials, so a signal ends the pass
    /// after the file being written is complete.
    pub async fn pass(self: &Arc<Self>, stop: &tokio::sync::watch::Receiver<bool>) -> PassReport {
        let me = self.clone();
        let scanned = tokio::task::spawn_blocking(move || me.scan()).await;
        let (work, mut report) = scanned.unwrap_or_default();
        let semaphore = Arc::new(tokio::sync::Semaphore::new(self.settings.concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        let tally =
            |done: Result<Outcome, tokio::task::JoinError>, report: &mut PassReport| match done {
                Ok(Outcome::Refreshed) => report.refreshed += 1,
                Ok(Outcome::Signed) => report.signed += 1,
                Ok(Outcome::NeedsLogin) => report.needs_login += 1,
                Ok(Outcome::Failed) | Err(_) => report.failed += 1,
            };
        for item in work {
            if *stop.borrow() {
                break;
            }
            let me = self.clone();
            let permit = semaphore.clone().acquire_owned().await;
            tasks.spawn(async move {
                let _permit = permit;
                me.handle(item).await
            });
            // A finished task keeps its memory until joined: join as we go, so a pass over
            // 100,000 credentials holds `concurrency` tasks, not 100,000.
            while let Some(done) = tasks.try_join_next() {
                tally(done, &mut report);
            }
        }
        while let Some(done) = tasks.join_next().await {
            tally(done, &mut report);
        }
        // Serialised under the lock rather than cloned: with 100,000 credentials a copy of
        // the status is tens of megabytes.
        let bytes = {
            let mut s = lock(&self.status);
            s.last_pass = Some(Timestamp::now().unix());
            s.to_bytes()
        };
        if let Err(e) = Status::save_bytes(self.dir(), &bytes) {
            tracing::warn!("cannot save the status file: {e}");
        }
        touch(&self.dir().join("CREDMON_COMPLETE"));
        report
    }

    /// Walk the directory and decide what is due. Blocking file I/O only.
    fn scan(&self) -> (Vec<Work>, PassReport) {
        let mut work = Vec::new();
        let mut report = PassReport::default();
        let dir = self.dir().to_path_buf();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(
                    "cannot read the credential directory {}: {e}",
                    dir.display()
                );
                return (work, report);
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
                        let mut work = Vec::new();
                        let mut report = PassReport::default();
                        for (path, name) in part {
                            self.scan_user(path, name, now, &mut work, &mut report);
                        }
                        (work, report)
                    })
                })
                .collect();
            for h in handles {
                if let Ok((w, r)) = h.join() {
                    work.extend(w);
                    report.refreshed += r.refreshed;
                    report.failed += r.failed;
                    report.needs_login += r.needs_login;
                    report.skipped += r.skipped;
                    report.idle += r.idle;
                }
            }
        });
        (work, report)
    }

    fn maybe_remove_key_file(&self, path: &Path, now: f64) {
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

    fn scan_user(
        &self,
        dir: &Path,
        user: &str,
        now: f64,
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
        for name in &names {
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
                if names.iter().any(|n| n == &format!("{token}.meta")) || !safe_name(token) {
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

    fn key(user: &str, token: &str) -> String {
        format!("{user}/{token}")
    }

    fn oauth_due(&self, dir: &Path, user: &str, token: &str, now: f64) -> Due {
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
        let meta_mtime = mtime(&meta_path).unwrap_or_default();
        let cached = lock(&self.seen).get(&use_path).copied();
        let renew_at = match cached {
            Some(s) if s.use_ctime == use_ctime && s.meta_mtime == meta_mtime => s.renew_at,
            _ => {
                let ctime = use_ctime.0 as f64 + use_ctime.1 as f64 / 1e9;
                let renew_at = self.oauth_renew_at(&use_path, &meta_path, ctime);
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

    fn use_refreshes(&self, meta: &Path) -> bool {
        read_json_object(meta)
            .ok()
            .and_then(|m| m.get("use_refresh_token").and_then(Value::as_bool))
            .unwrap_or(true)
    }

    /// When the `.use` is due for renewal (upstream rule: its ctime plus the token's
    /// lifetime times the fraction); `None` when it can never be renewed (the `.meta`
    /// says not to) — and `Some(0)` (now) when the `.use` is unreadable.
    fn oauth_renew_at(&self, use_path: &Path, meta_path: &Path, ctime: f64) -> Option<f64> {
        let meta = read_json_object(meta_path).ok();
        if meta
            .as_ref()
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
            .as_ref()
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

    fn local_due(&self, dir: &Path, token: &str, now: f64) -> bool {
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

    async fn handle(self: Arc<Self>, work: Work) -> Outcome {
        match work {
            Work::Refresh { user, token } => self.refresh(&user, &token).await,
            Work::Sign {
                user,
                token,
                provider,
            } => {
                let me = self.clone();
                tokio::task::spawn_blocking(move || me.sign(&user, &token, provider))
                    .await
                    .unwrap_or(Outcome::Failed)
            }
        }
    }

    fn record(&self, user: &str, token: &str, kind: &str, f: impl FnOnce(&mut CredStatus)) {
        let mut status = lock(&self.status);
        let entry = status
            .credentials
            .entry(Self::key(user, token))
            .or_insert_with(|| CredStatus {
                user: user.into(),
                token: token.into(),
                kind: kind.into(),
                ..Default::default()
            });
        f(entry);
    }

    fn fail(&self, user: &str, token: &str, kind: &str, error: impl std::fmt::Display) -> Outcome {
        let error = error.to_string();
        tracing::warn!("{user}/{token}: {error}");
        let now = Timestamp::now().unix();
        self.record(user, token, kind, |s| {
            s.failures += 1;
            s.next_attempt = Some(now + credkeeper_refresher::backoff_secs(s.failures));
            s.last_error = Some(error);
        });
        Outcome::Failed
    }

    /// Refresh `<user>/<token>` exactly as upstream does: a form POST to the `.meta`'s
    /// token URL with client id, client secret and refresh token, no scope.
    async fn refresh(&self, user: &str, token: &str) -> Outcome {
        let dir = self.dir().join(user);
        let top_path = dir.join(format!("{token}.top"));
        let meta_path = dir.join(format!("{token}.meta"));
        let prepared = (|| -> Result<_, PassError> {
            check_secret_files(&dir, &[&top_path, &meta_path])?;
            let top = read_json_object(&top_path)?;
            let meta = read_json_object(&meta_path)?;
            let rt = top
                .get("refresh_token")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| CredFileError::NoRefreshToken {
                    path: top_path.clone(),
                })?
                .to_string();
            let field = |k: &str| meta.get(k).and_then(Value::as_str).map(str::to_string);
            let missing = |field| CredFileError::MissingField {
                path: meta_path.clone(),
                field,
            };
            let token_url = field("token_url").ok_or_else(|| missing("token_url"))?;
            let client_id = field("client_id").ok_or_else(|| missing("client_id"))?;
            let provider = token
                .split('_')
                .next()
                .unwrap_or(token)
                .to_ascii_uppercase();
            // The secret need not sit in `.meta` when the provider is configured here.
            let secret = match field("client_secret") {
                Some(s) => s,
                None => match self
                    .settings
                    .config
                    .get(&format!("{provider}_CLIENT_SECRET_FILE"))
                {
                    Some(f) => {
                        credkeeper_sink::perm::read_private(Path::new(&f), "client-secret file")?
                    }
                    None => String::new(),
                },
            };
            self.policy.check("token URL", &token_url)?;
            Ok((
                top,
                Secret::new(rt),
                token_url,
                client_id,
                Secret::new(secret),
            ))
        })();
        let (mut top, rt, token_url, client_id, secret) = match prepared {
            Ok(x) => x,
            Err(e) => return self.fail(user, token, "oauth", e),
        };
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", client_id.as_str()),
            ("client_secret", secret.expose()),
            ("refresh_token", rt.expose()),
        ];
        let response =
            self.http
                .post_form(&token_url, &form, None)
                .await
                .and_then(|(status, body)| {
                    credkeeper_oidc::parse_token_response_whole(&token_url, status, body)
                });
        let response = match response {
            Ok(r) => r,
            Err(e) if e.is_invalid_grant() => {
                tracing::warn!("{user}/{token}: needs a new login: {e}");
                let top_stamp = fingerprint(&top_path);
                self.record(user, token, "oauth", |s| {
                    s.needs_login = Some(e.to_string());
                    s.top_stamp = top_stamp;
                    s.last_error = Some(e.to_string());
                });
                return Outcome::NeedsLogin;
            }
            Err(e) => return self.fail(user, token, "oauth", e.to_string()),
        };
        let now = Timestamp::now().unix();
        let (response, new_rt, expires_at) = credkeeper_sink::condor::shape_use(response, now);
        // Without a new refresh token the old one stays, as upstream's oauthlib does.
        if let Some(rt) = new_rt {
            top.insert("refresh_token".into(), json!(rt));
        }
        // `.use` before `.top`, as upstream: a job never sees a token older than its `.top`.
        // Each write is fsynced; off the async thread, so the refreshes in flight share the
        // file system's commits instead of waiting for each other's.
        let cred_dir = self.dir().to_path_buf();
        let use_path = dir.join(format!("{token}.use"));
        let written = tokio::task::spawn_blocking(move || {
            credkeeper_sink::condor::write_cred_file(
                &cred_dir,
                &use_path,
                &Value::Object(response).to_string(),
            )?;
            credkeeper_sink::condor::write_cred_file(
                &cred_dir,
                &top_path,
                &Value::Object(top).to_string(),
            )
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return self.fail(user, token, "oauth", e),
            Err(e) => return self.fail(user, token, "oauth", e),
        }
        tracing::info!("refreshed {user}/{token}");
        self.record(user, token, "oauth", |s| {
            *s = CredStatus {
                user: user.into(),
                token: token.into(),
                kind: "oauth".into(),
                expires_at,
                last_refresh: Some(now),
                ..Default::default()
            };
        });
        Outcome::Refreshed
    }

    fn issuer(&self, provider: &LocalProvider) -> Result<Arc<LocalIssuer>, PassError> {
        let mut issuers = lock(&self.issuers);
        if let Some(i) = issuers.get(&provider.name) {
            return Ok(i.clone());
        }
        let issuer = Arc::new(LocalIssuer::open(&provider.issuer)?);
        issuers.insert(provider.name.clone(), issuer.clone());
        Ok(issuer)
    }

    /// Sign a local token for `user` with the claims upstream's local mode uses.
    fn sign(&self, user: &str, token: &str, index: usize) -> Outcome {
        // The `.top` is the user's credential as the CredD stored it: signed for only while
        // it is private, as an OAuth `.top` is refreshed only then.
        let dir = self.dir().join(user);
        if let Err(e) = check_secret_files(&dir, &[&dir.join(format!("{token}.top"))]) {
            return self.fail(user, token, "local", e);
        }
        let provider = &self.settings.local[index];
        let issuer = match self.issuer(provider) {
            Ok(i) => i,
            Err(e) => return self.fail(user, token, "local", e),
        };
        let scope = provider.authz_template.replace("{username}", user);
        let audience = (!provider.audience.is_empty()).then(|| json!(provider.audience));
        let grant = Grant {
            subject: user,
            scope: &scope,
            audience,
            lifetime: provider.issuer.lifetime,
        };
        let (jwt, expires) = match issuer.sign(&grant) {
            Ok(x) => x,
            Err(e) => return self.fail(user, token, "local", e.to_string()),
        };
        let contents = if provider.use_json {
            json!({"access_token": jwt.expose(), "expires_in": provider.issuer.lifetime})
                .to_string()
        } else {
            format!("{}\n", jwt.expose())
        };
        if let Err(e) = self.write(&dir.join(format!("{token}.use")), &contents) {
            return self.fail(user, token, "local", e);
        }
        tracing::info!("signed a local token for {user}/{token}");
        let now = Timestamp::now().unix();
        self.record(user, token, "local", |s| {
            *s = CredStatus {
                user: user.into(),
                token: token.into(),
                kind: "local".into(),
                expires_at: Some(expires.unix()),
                last_refresh: Some(now),
                ..Default::default()
            };
        });
        Outcome::Signed
    }

    fn write(&self, path: &Path, contents: &str) -> Result<(), PassError> {
        Ok(credkeeper_sink::condor::write_cred_file(
            self.dir(),
            path,
            contents,
        )?)
    }
}

enum Due {
    Yes,
    No,
    NeedsLogin,
    Skip,
}

enum Outcome {
    Refreshed,
    Signed,
    NeedsLogin,
    Failed,
}

/// Create `path` if needed and set its modification time to now.
pub fn touch(path: &Path) {
    let result = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
    if let Err(e) = result {
        tracing::warn!("cannot touch {}: {e}", path.display());
    }
}
