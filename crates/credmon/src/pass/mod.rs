//! One credmon pass over the credential directory: refresh OAuth tokens that are due,
//! sign local tokens that are due, clean up stale key files, touch `CREDMON_COMPLETE`.
//!
//! Unlike upstream, one bad credential never stops the pass: each is handled on its own,
//! with backoff after failures, and a credential whose refresh token the provider refused
//! (`invalid_grant`) is reported and left alone until its `.top` changes.
//!
//! By stage: `scan` walks the directory and decides what is due, `refresh` renews an OAuth
//! credential at its provider, `sign` makes a local token, `files` reads the directory's
//! files only when they are plain and private; this module runs the pass and keeps the
//! status.

mod commit;
pub(crate) mod files;
mod refresh;
mod scan;
mod sign;

use crate::settings::Settings;
use crate::status::{COMPLETE, CredStatus, Kind, Status};
use commit::Commits;
use credkeeper_core::Timestamp;
use credkeeper_issuer::LocalIssuer;
use credkeeper_oidc::{Http, OidcError, UrlPolicy};
use credkeeper_sink::spare::Spares;
use scan::Seen;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::OwnedSemaphorePermit;

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

impl std::ops::AddAssign for PassReport {
    fn add_assign(&mut self, other: PassReport) {
        self.users += other.users;
        self.refreshed += other.refreshed;
        self.signed += other.signed;
        self.failed += other.failed;
        self.needs_login += other.needs_login;
        self.skipped += other.skipped;
        self.idle += other.idle;
    }
}

#[derive(Clone, Debug)]
enum Work {
    Refresh {
        user: String,
        token: String,
        /// The `.use`'s ctime when the scan found it due without reading the `.meta`: the
        /// refresh leaves it alone if the `.meta` says `use_refresh_token: false`.
        unless_off: Option<scan::Ctime>,
    },
    Sign {
        user: String,
        token: String,
        provider: usize,
    },
}

pub struct Credmon {
    pub settings: Settings,
    http: Http,
    policy: UrlPolicy,
    issuers: Mutex<HashMap<String, Arc<LocalIssuer>>>,
    kept: Mutex<Kept>,
    seen: Mutex<HashMap<PathBuf, Seen>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Credmon {
    pub fn new(settings: Settings, policy: UrlPolicy) -> Result<Credmon, OidcError> {
        let status = Status::load(&settings.cred_dir);
        Ok(Credmon {
            settings,
            http: Http::new()?,
            policy,
            issuers: Mutex::new(HashMap::new()),
            kept: Mutex::new(Kept {
                status,
                unsaved: false,
            }),
            seen: Mutex::new(HashMap::new()),
        })
    }

    pub fn status(&self) -> Status {
        lock(&self.kept).status.clone()
    }

    fn dir(&self) -> &Path {
        &self.settings.cred_dir
    }

    /// One full pass. `stop` is checked between credentials, so a signal ends the pass
    /// after the file being written is complete. Credentials are handled as the scan finds
    /// them: the first refreshes wait on their provider while the scan reads on.
    pub async fn pass(self: &Arc<Self>, stop: &tokio::sync::watch::Receiver<bool>) -> PassReport {
        let me = self.clone();
        let spares = tokio::task::spawn_blocking(move || me.hold_for_spares())
            .await
            .unwrap_or_default();
        let tidy = spares.is_some();
        let (found_tx, mut found) = tokio::sync::mpsc::unbounded_channel();
        let me = self.clone();
        let scanning = tokio::task::spawn_blocking(move || me.scan(tidy, &found_tx));
        let semaphore = Arc::new(tokio::sync::Semaphore::new(self.settings.concurrency));
        let (commits, committer) = Commits::start(spares);
        let mut tasks = tokio::task::JoinSet::new();
        let mut report = PassReport::default();
        let tally =
            |done: Result<Outcome, tokio::task::JoinError>, report: &mut PassReport| match done {
                Ok(Outcome::Refreshed) => report.refreshed += 1,
                Ok(Outcome::Signed) => report.signed += 1,
                Ok(Outcome::NeedsLogin) => report.needs_login += 1,
                Ok(Outcome::Off) => report.idle += 1,
                Ok(Outcome::Failed) | Err(_) => report.failed += 1,
            };
        'found: while let Some(batch) = found.recv().await {
            for item in batch {
                if *stop.borrow() {
                    break 'found;
                }
                let me = self.clone();
                let permit = semaphore.clone().acquire_owned().await.ok();
                let commits = commits.clone();
                tasks.spawn(async move { me.handle(item, permit, &commits).await });
                // A finished task keeps its memory until joined: join as we go, so a pass
                // over 100,000 credentials holds the tasks in flight (`concurrency` of them
                // asking, the rest waiting for their files' commit), not 100,000.
                while let Some(done) = tasks.try_join_next() {
                    tally(done, &mut report);
                }
            }
        }
        // A stopped pass tells the scan to end early.
        drop(found);
        report += scanning.await.unwrap_or_default();
        while let Some(done) = tasks.join_next().await {
            tally(done, &mut report);
        }
        drop(commits);
        let _ = committer.await;
        // Serialised under the lock rather than cloned: with 100,000 credentials a copy of
        // the status is tens of megabytes. Written only when an entry changed: an idle
        // daemon would otherwise rewrite and sync those megabytes every scan. The time of
        // a pass that changed nothing is CREDMON_COMPLETE's (`Status::load`).
        let bytes = {
            let mut kept = lock(&self.kept);
            kept.status.last_pass = Some(Timestamp::now().unix());
            std::mem::take(&mut kept.unsaved).then(|| kept.status.to_bytes())
        };
        if let Some(bytes) = bytes
            && let Err(e) = Status::save_bytes(self.dir(), &bytes)
        {
            tracing::warn!("cannot save the status file: {e}");
            lock(&self.kept).unsaved = true;
        }
        touch(&self.dir().join(COMPLETE));
        report
    }

    /// The credential directory, held for this pass's files to be written over their
    /// spares; `None` when another process (a second credmon) holds it.
    fn hold_for_spares(&self) -> Option<Spares> {
        match Spares::try_lock(self.dir()) {
            Ok(held) => {
                if held.is_none() {
                    tracing::info!(
                        "another process holds {} (a second credmon?): this pass writes new \
                         files rather than over their spares",
                        self.dir().display()
                    );
                }
                held
            }
            Err(e) => {
                tracing::debug!("cannot lock {} for spares: {e}", self.dir().display());
                None
            }
        }
    }

    async fn handle(
        self: Arc<Self>,
        work: Work,
        permit: Option<OwnedSemaphorePermit>,
        commits: &Commits,
    ) -> Outcome {
        match work {
            Work::Refresh {
                user,
                token,
                unless_off,
            } => {
                self.refresh(&user, &token, unless_off, permit, commits)
                    .await
            }
            Work::Sign {
                user,
                token,
                provider,
            } => self.sign(user, token, provider, permit, commits).await,
        }
    }

    fn record(&self, user: &str, token: &str, kind: Kind, f: impl FnOnce(&mut CredStatus)) {
        let mut kept = lock(&self.kept);
        kept.unsaved = true;
        let entry = kept
            .status
            .credentials
            .entry(Self::key(user, token))
            .or_insert_with(|| CredStatus {
                user: user.into(),
                token: token.into(),
                kind,
                ..Default::default()
            });
        f(entry);
    }

    fn fail(&self, user: &str, token: &str, kind: Kind, error: impl std::fmt::Display) -> Outcome {
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
}

/// What the credmon knows, and whether an entry changed since the status file was last
/// written: one lock, so no entry is changed between the two.
struct Kept {
    status: Status,
    unsaved: bool,
}

enum Outcome {
    Refreshed,
    Signed,
    NeedsLogin,
    /// Not refreshed: the `.meta` says `use_refresh_token: false`.
    Off,
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
