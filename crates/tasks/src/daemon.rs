//! The tasks as a process: `tasks serve` (the [`scheduler`](crate::scheduler) with its
//! definitions read again on SIGHUP or when a file changes, every run kept in the store's
//! history and counted in the metrics file, SIGTERM/SIGINT a stop with a grace period) and
//! `tasks run` (one task in the foreground, stopped by SIGTERM/SIGINT with its credentials
//! removed).
//!
//! What it is not: flags and messages (the binary reads the one and prints the other), where
//! tokens come from (a [`TokenSource`] is given), when a task is due (the scheduler).

use crate::definition::{self, Options, Rendered, Task, TaskError};
use crate::history::HistoryWriter;
use crate::metrics::Metrics;
use crate::run::{Outcome, RunOptions};
use crate::scheduler::{self, Hooks};
use crate::template::Sources;
use credkeeper_refresher::source::TokenSource;
use credkeeper_store::{TaskHistory, TaskRun, TaskSecrets};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::signal::unix::{SignalKind, signal};

/// Runs kept per task in the history.
pub const KEEP_RUNS: usize = 100;

/// How often the definition files are looked at for a change.
const WATCH_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Definition(#[from] TaskError),
    #[error("task `{0}` is defined twice")]
    Duplicate(String),
    #[error("no task `{task}` in {files}")]
    NoSuchTask { task: String, files: String },
    #[error("cannot handle signals: {0}")]
    Signals(#[from] std::io::Error),
    #[error("cannot start the run history's writer: {0}")]
    HistoryWriter(#[source] std::io::Error),
    #[error(transparent)]
    Scheduler(#[from] scheduler::SchedulerError),
}

/// Definition files and how to read them.
#[derive(Clone, Debug)]
pub struct Definitions {
    pub files: Vec<PathBuf>,
    pub options: Options,
}

impl Definitions {
    /// Every task of every file; a name defined twice is refused.
    pub fn load(&self) -> Result<Vec<Task>, DaemonError> {
        let mut tasks = Vec::new();
        for f in &self.files {
            tasks.extend(definition::load(f, &self.options)?);
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(twice) = tasks.iter().find(|t| !seen.insert(t.name.as_str())) {
            return Err(DaemonError::Duplicate(twice.name.clone()));
        }
        Ok(tasks)
    }

    /// Where `{{ NAME }}` values come from: the environment, the secret directories, and
    /// the store when there is one.
    pub fn vars(&self, store: Option<Arc<dyn TaskSecrets>>) -> Sources {
        Sources {
            env: true,
            dirs: self.options.secret_dirs.clone(),
            store,
        }
    }

    /// The tasks, each checked as a run would fill it.
    pub fn validated(&self, store: Option<Arc<dyn TaskSecrets>>) -> Result<Vec<Task>, DaemonError> {
        let tasks = self.load()?;
        definition::validate(&tasks, &self.vars(store), &self.options)?;
        Ok(tasks)
    }

    /// `task`'s values for a run, read now.
    pub fn render(&self, task: &Task, store: &TaskStore) -> Result<Rendered, DaemonError> {
        Ok(task.render(&self.vars(Some(store.secrets.clone())), &self.options)?)
    }

    /// The task named `name`.
    pub fn find(&self, tasks: Vec<Task>, name: &str) -> Result<Task, DaemonError> {
        tasks
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| DaemonError::NoSuchTask {
                task: name.to_string(),
                files: self
                    .files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// Where runs are kept and task secrets read.
#[derive(Clone)]
pub struct TaskStore {
    pub history: Arc<dyn TaskHistory>,
    pub secrets: Arc<dyn TaskSecrets>,
}

impl TaskStore {
    /// Keep the run in the history now (a failure is logged; the run's status stands).
    pub fn record(&self, task: &Task, outcome: &Outcome) {
        if let Err(e) = self
            .history
            .record_runs(&[history_entry(task, outcome)], KEEP_RUNS)
        {
            tracing::warn!("run history: {e}");
        }
    }
}

/// A finished run as the history keeps it.
fn history_entry(task: &Task, outcome: &Outcome) -> TaskRun {
    TaskRun {
        task: task.name.clone(),
        started: outcome.started,
        ended: outcome.ended,
        status: outcome.status,
        attempts: outcome.attempts,
        reason: outcome.reason.clone(),
        output: outcome.output.clone(),
    }
}

/// Remove what runs of a killed credkeeper left behind (their credentials), saying so.
pub fn sweep(options: &RunOptions) {
    for dir in crate::run::sweep_stale(&options.base_dir) {
        tracing::warn!(
            "removed {}: a run's credentials left behind when its credkeeper was killed",
            dir.display()
        );
    }
}

/// How a foreground run ended.
#[derive(Debug)]
pub enum Ended {
    Finished(Outcome),
    /// Stopped by SIGTERM (a CronJob's deadline, `kubectl delete`).
    Terminated,
    /// Stopped by SIGINT.
    Interrupted,
}

/// `tasks run`: one task now. A signal drops the run, which stops its command and removes
/// its private directory before this returns. A finished run is kept in the history and,
/// with `metrics_file`, the task's metrics are written from that history.
pub async fn run_one(
    task: &Task,
    rendered: &Rendered,
    store: &TaskStore,
    tokens: Option<Arc<dyn TokenSource>>,
    options: &RunOptions,
    metrics_file: Option<&std::path::Path>,
) -> Result<Ended, DaemonError> {
    let mut term = signal(SignalKind::terminate())?;
    sweep(options);
    let outcome = tokio::select! {
        o = crate::run::run(task, rendered, tokens, options) => o,
        _ = term.recv() => return Ok(Ended::Terminated),
        _ = tokio::signal::ctrl_c() => return Ok(Ended::Interrupted),
    };
    store.record(task, &outcome);
    if let Some(path) = metrics_file {
        let metrics = Metrics::default();
        match store.history.runs(&task.name, KEEP_RUNS) {
            Ok(runs) => metrics.replay(&runs),
            Err(e) => tracing::warn!("metrics from the run history: {e}"),
        }
        if let Err(e) = metrics.write(path) {
            tracing::warn!("metrics file {}: {e}", path.display());
        }
    }
    Ok(Ended::Finished(outcome))
}

/// `tasks serve`: what the scheduler runs with, until SIGTERM or SIGINT.
pub struct Daemon {
    pub definitions: Definitions,
    pub store: TaskStore,
    pub tokens: Option<Arc<dyn TokenSource>>,
    pub run_options: RunOptions,
    /// Seconds running tasks get to finish on stop.
    pub grace_secs: u64,
    pub metrics_file: Option<PathBuf>,
}

impl Daemon {
    pub async fn serve(self) -> Result<(), DaemonError> {
        let Daemon {
            definitions,
            store,
            tokens,
            run_options,
            grace_secs,
            metrics_file,
        } = self;
        let definitions = Arc::new(definitions);
        let metrics = Arc::new(Metrics::default());
        // Finished runs are kept off the scheduler's threads, a burst in a few transactions.
        let history = Arc::new(
            HistoryWriter::start(store.history.clone(), KEEP_RUNS)
                .map_err(DaemonError::HistoryWriter)?,
        );
        let publish = {
            let metrics = metrics.clone();
            Arc::new(move || {
                if let Some(path) = &metrics_file
                    && let Err(e) = metrics.write(path)
                {
                    tracing::warn!("metrics file {}: {e}", path.display());
                }
            })
        };
        let hooks = Hooks {
            load: {
                let (definitions, secrets) = (definitions.clone(), store.secrets.clone());
                // A reload is checked as the start was: an undefined name or a secret on a
                // command line keeps the definitions in effect instead of failing runs later.
                Box::new(move || {
                    let loaded = definitions
                        .validated(Some(secrets.clone()))
                        .map_err(scheduler::LoadError::from);
                    trim_heap();
                    loaded
                })
            },
            render: {
                let (definitions, secrets) = (definitions.clone(), store.secrets.clone());
                Arc::new(move |task: &Task| {
                    task.render(
                        &definitions.vars(Some(secrets.clone())),
                        &definitions.options,
                    )
                })
            },
            last_started: {
                let history = store.history.clone();
                Box::new(move |name: &str| history.last_started(name).ok()?)
            },
            finished: {
                let (metrics, publish, history) =
                    (metrics.clone(), publish.clone(), history.clone());
                Arc::new(move |task: &Task, outcome: &Outcome| {
                    match &outcome.reason {
                        None => tracing::info!(
                            task = task.name,
                            attempts = outcome.attempts,
                            "run succeeded"
                        ),
                        Some(r) => tracing::warn!(
                            task = task.name,
                            attempts = outcome.attempts,
                            "run failed: {r}"
                        ),
                    }
                    metrics.finished(&task.name, outcome);
                    history.record(history_entry(task, outcome));
                    publish();
                })
            },
            skipped: {
                let (metrics, publish) = (metrics.clone(), publish.clone());
                Arc::new(move |task: &Task, why: &str| {
                    tracing::warn!(task = task.name, "due run skipped: {why}");
                    metrics.skipped(&task.name);
                    publish();
                })
            },
            missed: {
                let (metrics, publish) = (metrics.clone(), publish.clone());
                Box::new(move |task: &Task, runs: u64| {
                    metrics.missed(&task.name, runs);
                    publish();
                })
            },
            claim: {
                let history = store.history.clone();
                Box::new(move |due: &[(&str, credkeeper_core::Timestamp)]| history.claim_runs(due))
            },
            tokens,
        };
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let (reload_tx, reload_rx) = tokio::sync::watch::channel(0u64);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // SIGHUP, or a definition file changed: reload.
        let watched = definitions.files.clone();
        tokio::spawn(async move {
            let stamp = |paths: &[PathBuf]| -> Vec<Option<SystemTime>> {
                paths
                    .iter()
                    .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
                    .collect()
            };
            let mut seen = stamp(&watched);
            let mut n = 0u64;
            loop {
                tokio::select! {
                    _ = hup.recv() => {}
                    _ = tokio::time::sleep(WATCH_EVERY) => {
                        let now = stamp(&watched);
                        if now == seen { continue; }
                        seen = now;
                    }
                }
                n += 1;
                let _ = reload_tx.send(n);
            }
        });
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("stopping: no new runs");
            let _ = stop_tx.send(true);
        });
        sweep(&run_options);
        let served = scheduler::serve(hooks, Arc::new(run_options), grace_secs, reload_rx, stop_rx)
            .await
            .map_err(DaemonError::from);
        // The runs that finished last are written before the process ends.
        if let Err(e) = tokio::task::spawn_blocking(move || history.close()).await {
            tracing::error!("run history: closing the writer: {e}");
        }
        served
    }
}

/// Give the freed memory of a definitions parse back to the system: a YAML file of
/// thousands of tasks leaves tens of MB the allocator would otherwise keep.
fn trim_heap() {
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it has no
    // preconditions and touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}
