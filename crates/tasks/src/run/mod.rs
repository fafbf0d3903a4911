//! One run of a task: credentials prepared in a private directory before the command
//! starts (a failed authentication fails the run, and the command never starts), the
//! bearer token kept fresh while it runs, a timeout that stops the whole process group,
//! retries with backoff, the output captured with a size cap and the secrets redacted,
//! and the directory removed when the run ends — also on timeout and on failure.

mod prepare;
mod process;
mod rucio_files;

use prepare::*;
pub use prepare::{BASE_ENVIRONMENT, PrepareError, Prepared, prepare};
use process::*;
use rucio_files::*;

use crate::definition::{Rendered, Task};
use credkeeper_core::{Secret, Timestamp, TokenAsk};
use credkeeper_refresher::Origin;
use credkeeper_refresher::source::{Fresh, SourceError, SourceFuture, TokenSource};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::AsyncReadExt;

pub struct RunOptions {
    /// Where the run's private directory goes (`$XDG_RUNTIME_DIR` or `/tmp`).
    pub base_dir: PathBuf,
    /// The captured output kept, at most (the end of it).
    pub output_cap: usize,
    /// After a timeout's SIGTERM, how long before SIGKILL.
    pub grace_secs: u64,
    /// rucio-task-manager's own token routes, for values cronjobs that name one (`None`:
    /// such a cronjob gets its token from the configured source).
    pub upstream: Option<Arc<crate::upstream::Upstream>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            base_dir: std::env::var_os("XDG_RUNTIME_DIR")
                .map(PathBuf::from)
                .filter(|p| p.is_dir())
                .unwrap_or_else(std::env::temp_dir),
            output_cap: 64 * 1024,
            grace_secs: 5,
            upstream: None,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The command's exit status; `None` when it never started or was killed.
    pub status: Option<i32>,
    pub attempts: u32,
    pub started: Timestamp,
    pub ended: Timestamp,
    /// Why it failed, when it did (authentication, timeout, a signal, the exit status).
    pub reason: Option<String>,
    /// Standard output and error, interleaved as read, capped, secrets redacted.
    pub output: String,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.status == Some(0) && self.reason.is_none()
    }

    /// The status a CronJob should see: the command's, or 1 when it never finished.
    pub fn exit_code(&self) -> i32 {
        match (self.status, &self.reason) {
            (Some(0), None) => 0,
            (Some(s), _) if s != 0 => s,
            _ => 1,
        }
    }
}

const RUN_DIR_PREFIX: &str = "credkeeper-task-";

/// The run's private directory (0700, a random name that starts with the owning process's
/// pid), removed when dropped.
fn run_dir(base: &Path, task: &str) -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("{RUN_DIR_PREFIX}{}-{task}-", std::process::id()))
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(base)
}

/// Remove the run directories a credkeeper killed outright (SIGKILL, a crash, the OOM
/// killer) left in `base`: those of this user whose owning process is gone. Returns them.
pub fn sweep_stale(base: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(RUN_DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        let ours = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == uid);
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if ours && gone && std::fs::remove_dir_all(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// Atomically, mode 0600 (exactly: the umask does not narrow it).
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    credkeeper_sink::write_private(path, contents).map_err(std::io::Error::other)
}

/// Run `task` (already rendered) until it succeeds or its retries are used up.
pub async fn run(
    task: &Task,
    rendered: &Rendered,
    tokens: Option<Arc<dyn TokenSource>>,
    options: &RunOptions,
) -> Outcome {
    run_from(task, rendered, tokens, options, None).await
}

/// [`run`], the first attempt with what [`prepare`] made ready before the due time (or why
/// it could not); later attempts prepare afresh.
pub async fn run_from(
    task: &Task,
    rendered: &Rendered,
    tokens: Option<Arc<dyn TokenSource>>,
    options: &RunOptions,
    mut first: Option<Result<Prepared, PrepareError>>,
) -> Outcome {
    let started = Timestamp::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let prepared = match first.take() {
            Some(p) => p,
            None => prepare(task, rendered, tokens.clone(), options).await,
        };
        let mut outcome = match prepared {
            Ok(p) => execute(task, rendered, p, options).await,
            Err(reason) => Outcome {
                status: None,
                attempts: 0,
                started,
                ended: Timestamp::now(),
                reason: Some(reason.to_string()),
                output: String::new(),
            },
        };
        outcome.attempts = attempt;
        outcome.started = started;
        if outcome.succeeded() || attempt > task.retries {
            outcome.ended = Timestamp::now();
            return outcome;
        }
        let wait = task.backoff_secs.saturating_mul(1 << (attempt - 1).min(10));
        tracing::warn!(
            task = task.name,
            attempt,
            "run failed ({}); trying again in {wait} s",
            outcome.reason.as_deref().unwrap_or("")
        );
        tokio::time::sleep(std::time::Duration::from_secs(wait as u64)).await;
    }
}

/// The values a run's captured output must not show (filled templates, credentials), shared
/// with the refreshers, which add each token they write.
#[derive(Clone, Default)]
struct Redactions(Arc<std::sync::Mutex<Vec<String>>>);

impl Redactions {
    fn of(values: &[String]) -> Redactions {
        let r = Redactions::default();
        for v in values {
            r.add(v);
        }
        r
    }

    fn add(&self, value: &str) {
        if !value.is_empty() {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(value.to_string());
        }
    }

    fn redact(&self, mut text: String) -> String {
        for s in self.0.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            text = text.replace(s.as_str(), "[redacted]");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::{Options, load};
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Tokens {
        calls: AtomicU32,
        life: i64,
        fail: bool,
    }

    impl TokenSource for Tokens {
        fn token<'a>(&'a self, _: &'a TokenAsk) -> SourceFuture<'a> {
            Box::pin(async move {
                if self.fail {
                    return Err(SourceError::other(
                        "the broker refused: robot `x` may not have scope y",
                    ));
                }
                let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
                Ok(Fresh {
                    token: Secret::new(format!("token-number-{n}")),
                    origin: Origin::Broker,
                    expires: Some(Timestamp::now().plus_secs(self.life)),
                })
            })
        }
    }

    fn task(dir: &Path, yaml: &str) -> (Task, Rendered) {
        let p = dir.join("t.yaml");
        std::fs::write(&p, yaml).unwrap();
        let t = load(&p, &Options::default()).unwrap().remove(0);
        struct NoVars;
        impl crate::template::Vars for NoVars {
            fn get(&self, _: &str) -> Option<String> {
                None
            }
        }
        let r = t.render(&NoVars, &Options::default()).unwrap();
        (t, r)
    }

    fn options(dir: &Path) -> RunOptions {
        RunOptions {
            base_dir: dir.to_path_buf(),
            output_cap: 4096,
            grace_secs: 1,
            upstream: None,
        }
    }

    #[tokio::test]
    async fn kube_config_value_is_a_private_kubeconfig_file_for_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let (t, r) = task(
            dir.path(),
            "tasks:\n- name: probe\n  schedule: '@hourly'\n  shell: true\n  command: 'stat -c %a \"$KUBECONFIG\"; cat \"$KUBECONFIG\"; echo \"$KUBECONFIG\"'\n  env: {KUBE_CONFIG_VALUE: 'apiVersion: v1'}\n",
        );
        let outcome = run(&t, &r, None, &options(dir.path())).await;
        assert!(outcome.succeeded(), "{outcome:?}");
        let lines: Vec<&str> = outcome.output.lines().collect();
        assert_eq!(lines[..2], ["600", "apiVersion: v1"], "{}", outcome.output);
        assert!(!Path::new(lines[2]).exists(), "removed with the run");
    }

    #[tokio::test]
    async fn the_token_is_in_a_private_file_kept_fresh_during_the_run_and_gone_after() {
        let dir = tempfile::tempdir().unwrap();
        let seen = dir.path().join("seen");
        let (t, r) = task(
            dir.path(),
            &format!(
                "tasks:\n- name: long\n  schedule: '@hourly'\n  shell: true\n  command: 'stat -c %a \"$BEARER_TOKEN_FILE\"; cat \"$BEARER_TOKEN_FILE\"; echo \"$BEARER_TOKEN_FILE\" > {0}.path; sleep 3; cat \"$BEARER_TOKEN_FILE\" > {0}; cat \"$BEARER_TOKEN_FILE\"'\n  credentials: {{bearer: {{scopes: read}}}}\n",
                seen.display()
            ),
        );
        let tokens: Arc<dyn TokenSource> = Arc::new(Tokens {
            calls: AtomicU32::new(0),
            life: 4,
            fail: false,
        });
        let outcome = run(&t, &r, Some(tokens), &options(dir.path())).await;
        assert!(outcome.succeeded(), "{outcome:?}");
        assert!(
            outcome.output.starts_with("600\n[redacted]"),
            "{}",
            outcome.output
        );
        // The refreshed token printed at the end is redacted too.
        assert!(
            !outcome.output.contains("token-number") && outcome.output.ends_with("[redacted]\n"),
            "{}",
            outcome.output
        );
        // A 4 s token was rewritten at about 2 s: the command read a newer one at 3 s.
        let late = std::fs::read_to_string(&seen).unwrap();
        assert!(
            late.trim() != "token-number-1" && late.starts_with("token-number-"),
            "{late}"
        );
        let path = std::fs::read_to_string(format!("{}.path", seen.display())).unwrap();
        assert!(
            !Path::new(path.trim()).exists(),
            "the run's directory is removed"
        );
    }

    #[tokio::test]
    async fn an_authentication_failure_fails_the_run_before_the_command_starts() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let (t, r) = task(
            dir.path(),
            &format!(
                "tasks:\n- name: a\n  schedule: '@hourly'\n  command: [touch, '{}']\n  credentials: {{bearer: {{}}}}\n",
                marker.display()
            ),
        );
        let tokens: Arc<dyn TokenSource> = Arc::new(Tokens {
            calls: AtomicU32::new(0),
            life: 60,
            fail: true,
        });
        let outcome = run(&t, &r, Some(tokens), &options(dir.path())).await;
        assert_eq!(outcome.exit_code(), 1);
        assert!(
            outcome
                .reason
                .unwrap()
                .starts_with("authentication failed: the broker refused")
        );
        assert!(!marker.exists(), "the command must not start");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "nothing left but the definition"
        );
    }

    #[tokio::test]
    async fn a_hanging_task_is_stopped_with_everything_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("sleep.pid");
        let (t, r) = task(
            dir.path(),
            &format!(
                "tasks:\n- name: hang\n  schedule: '@hourly'\n  shell: true\n  command: 'sleep 300 & echo $! > {}; echo started; wait'\n  timeout: 1s\n",
                pid_file.display()
            ),
        );
        let begun = std::time::Instant::now();
        let outcome = run(&t, &r, None, &options(dir.path())).await;
        assert!(begun.elapsed() < std::time::Duration::from_secs(10));
        assert!(
            outcome
                .reason
                .as_deref()
                .unwrap()
                .starts_with("timed out after 1 s"),
            "{outcome:?}"
        );
        assert_eq!(outcome.exit_code(), 1);
        assert_eq!(outcome.output, "started\n");
        // This run's own sleep (not any other `sleep 300` on the machine): gone, or a
        // zombie waiting for its reaper (an empty command line).
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid.trim())).unwrap_or_default();
        assert!(cmdline.is_empty(), "the background sleep was stopped too");
    }

    #[tokio::test]
    async fn a_failing_task_is_retried_and_its_status_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let counter = dir.path().join("count");
        let (t, r) = task(
            dir.path(),
            &format!(
                "tasks:\n- name: flaky\n  schedule: '@hourly'\n  shell: true\n  command: 'echo x >> {0}; [ $(wc -l < {0}) -ge 2 ]'\n  retries: 3\n  backoff: 1s\n",
                counter.display()
            ),
        );
        let outcome = run(&t, &r, None, &options(dir.path())).await;
        assert!(outcome.succeeded(), "{outcome:?}");
        assert_eq!(outcome.attempts, 2);
        let (t, r) = task(
            dir.path(),
            "tasks:\n- name: fails\n  schedule: '@hourly'\n  command: [sh, -c, 'exit 7']\n",
        );
        let outcome = run(&t, &r, None, &options(dir.path())).await;
        assert_eq!((outcome.exit_code(), outcome.attempts), (7, 1));
    }

    #[test]
    fn run_directories_of_a_killed_credkeeper_are_swept_and_live_ones_kept() {
        let base = tempfile::tempdir().unwrap();
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        dead.wait().unwrap();
        let stale = base
            .path()
            .join(format!("{RUN_DIR_PREFIX}{dead_pid}-sync-Ab12"));
        std::fs::create_dir(&stale).unwrap();
        std::fs::write(stale.join("bearer_token"), "left-behind").unwrap();
        let live = run_dir(base.path(), "sync").unwrap();
        let other = base.path().join("credkeeper-task-notapid");
        std::fs::create_dir(&other).unwrap();
        assert_eq!(sweep_stale(base.path()), vec![stale.clone()]);
        assert!(!stale.exists());
        assert!(live.path().exists() && other.exists());
    }
}
