//! The scheduler behind `tasks serve`: each enabled task started when due, with the
//! Kubernetes CronJob meanings — `concurrencyPolicy` (Allow: overlapping runs; Forbid: a
//! due run is skipped while one runs; Replace: the running one is stopped and the new one
//! starts), runs missed while the scheduler was down (the latest is made up at start when
//! its due time is within `startingDeadlineSeconds`, or always when that is unset; the
//! others are counted as missed), and jitter (a random delay up to it).
//! Definitions are reloaded on request; a stop lets running tasks finish for a grace
//! period, then stops them (their credentials are removed either way).

use crate::definition::{Concurrency, Rendered, Task, TaskError};
use crate::run::{Outcome, RunOptions, TokenSource};
use chrono::{DateTime, Utc};
use credkeeper_core::Timestamp;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub type LoadFn = Box<dyn Fn() -> Result<Vec<Task>, String> + Send + Sync>;
pub type RenderFn = Arc<dyn Fn(&Task) -> Result<Rendered, TaskError> + Send + Sync>;
pub type LastStartedFn = Box<dyn Fn(&str) -> Option<Timestamp> + Send + Sync>;
pub type FinishedFn = Arc<dyn Fn(&Task, &Outcome) + Send + Sync>;
pub type SkippedFn = Arc<dyn Fn(&Task, &str) + Send + Sync>;
pub type MissedFn = Box<dyn Fn(&Task, u64) + Send + Sync>;

/// What the scheduler needs from its caller.
pub struct Hooks {
    /// The definitions, read again on every reload.
    pub load: LoadFn,
    /// A task's values for one run (secrets read when the run starts).
    pub render: RenderFn,
    /// When the task last started (the run history), for missed runs.
    pub last_started: LastStartedFn,
    /// Called with every finished run.
    pub finished: FinishedFn,
    /// Called when a due run is not started (Forbid while running).
    pub skipped: SkippedFn,
    /// Called at start with how many runs due while the scheduler was down are lost.
    pub missed: MissedFn,
    pub tokens: Option<Arc<dyn TokenSource>>,
}

/// The runs due while the scheduler was down, by the Kubernetes CronJob rules.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Missed {
    /// The latest due time, started now: it is within `startingDeadlineSeconds` (always,
    /// when that is unset) and no more than [`MISSED_LIMIT`] fell in that window.
    pub make_up: Option<DateTime<Utc>>,
    /// Due times since the last start that will never run (counted up to [`COUNT_LIMIT`]).
    pub lost: u64,
    /// More than [`MISSED_LIMIT`] due times in the window: Kubernetes starts none.
    pub too_many: bool,
}

/// Kubernetes' limit of missed start times beyond which none is started.
pub const MISSED_LIMIT: u64 = 100;
/// Counting stops here: a long outage of a frequent task is not walked slot by slot.
pub const COUNT_LIMIT: u64 = 1000;

/// What to do about the runs due after the task last started (`last`, from the history)
/// and before `now`. A task that never ran here has missed nothing.
pub fn missed(task: &Task, last: Option<Timestamp>, now: DateTime<Utc>) -> Missed {
    let Some(last) = last.and_then(|l| DateTime::from_timestamp(l.unix(), 0)) else {
        return Missed::default();
    };
    let window = task
        .starting_deadline_secs
        .map(|d| now - chrono::Duration::seconds(d));
    let (mut due, mut in_window, mut latest) = (0, 0, None);
    let mut after = last;
    while let Some(next) = task.schedule.next_after(after) {
        if next > now || due == COUNT_LIMIT {
            break;
        }
        due += 1;
        if window.is_none_or(|w| next >= w) {
            in_window += 1;
            latest = Some(next);
        }
        after = next;
    }
    let too_many = in_window > MISSED_LIMIT;
    let make_up = latest.filter(|_| !too_many);
    Missed {
        make_up,
        lost: due - u64::from(make_up.is_some()),
        too_many,
    }
}

fn jitter(max: i64) -> u64 {
    if max <= 0 {
        return 0;
    }
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    u64::from_le_bytes(b) % (max as u64 + 1)
}

/// Run until `stop` turns true; reload the definitions whenever `reload` changes.
pub async fn serve(
    hooks: Hooks,
    run_options: Arc<RunOptions>,
    grace_secs: u64,
    mut reload: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let mut tasks = (hooks.load)()?;
    let mut next: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut running: HashMap<String, Vec<JoinHandle<()>>> = HashMap::new();
    let now = Utc::now();
    for t in tasks.iter().filter(|t| !t.disabled) {
        let m = missed(t, (hooks.last_started)(&t.name), now);
        if m.too_many {
            tracing::error!(
                task = t.name,
                "more than {MISSED_LIMIT} runs were due while the scheduler was down: none is made up (set startingDeadlineSeconds to make up the latest)"
            );
        }
        if m.lost > 0 {
            tracing::warn!(
                task = t.name,
                runs = m.lost,
                "runs missed while the scheduler was down"
            );
            (hooks.missed)(t, m.lost);
        }
        if let Some(due) = m.make_up {
            tracing::info!(task = t.name, %due, "making up a run missed while the scheduler was down");
            next.insert(t.name.clone(), now);
            continue;
        }
        if let Some(n) = t.schedule.next_after(now) {
            next.insert(t.name.clone(), n);
        }
    }
    loop {
        let wake = next
            .values()
            .min()
            .copied()
            .unwrap_or_else(|| Utc::now() + chrono::Duration::seconds(60));
        let wait = (wake - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            changed = reload.changed() => {
                if changed.is_ok() {
                    match (hooks.load)() {
                        Ok(new) => {
                            tracing::info!(tasks = new.len(), "definitions reloaded");
                            let now = Utc::now();
                            next.retain(|name, _| new.iter().any(|t| &t.name == name && !t.disabled));
                            for t in new.iter().filter(|t| !t.disabled) {
                                let keep = tasks.iter().find(|o| o.name == t.name).is_some_and(|o| o.schedule.describe() == t.schedule.describe());
                                if !keep || !next.contains_key(&t.name) {
                                    if let Some(n) = t.schedule.next_after(now) {
                                        next.insert(t.name.clone(), n);
                                    }
                                }
                            }
                            tasks = new;
                        }
                        Err(e) => tracing::error!("reload failed, keeping the definitions in effect: {e}"),
                    }
                }
                continue;
            }
            _ = stop.changed() => break,
        }
        let now = Utc::now();
        for task in tasks.iter().filter(|t| !t.disabled) {
            let Some(due) = next.get(&task.name).copied() else {
                continue;
            };
            if due > now {
                continue;
            }
            if let Some(n) = task.schedule.next_after(now) {
                next.insert(task.name.clone(), n);
            }
            let list = running.entry(task.name.clone()).or_default();
            list.retain(|h| !h.is_finished());
            match task.concurrency {
                Concurrency::Forbid if !list.is_empty() => {
                    (hooks.skipped)(task, "Forbid: the previous run is still going");
                    continue;
                }
                Concurrency::Replace => {
                    for h in list.drain(..) {
                        h.abort();
                        tracing::info!(task = task.name, "Replace: the previous run was stopped");
                    }
                }
                _ => {}
            }
            let (task, render, finished, tokens, options) = (
                task.clone(),
                hooks.render.clone(),
                hooks.finished.clone(),
                hooks.tokens.clone(),
                run_options.clone(),
            );
            list.push(tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(jitter(task.jitter_secs))).await;
                let outcome = match render(&task) {
                    Ok(rendered) => crate::run::run(&task, &rendered, tokens, &options).await,
                    Err(e) => Outcome {
                        status: None,
                        attempts: 0,
                        started: Timestamp::now(),
                        ended: Timestamp::now(),
                        reason: Some(e.to_string()),
                        output: String::new(),
                    },
                };
                finished(&task, &outcome);
            }));
        }
    }
    // Graceful stop: let runs finish for the grace period, then stop them.
    let handles: Vec<JoinHandle<()>> = running
        .into_values()
        .flatten()
        .filter(|h| !h.is_finished())
        .collect();
    if !handles.is_empty() {
        tracing::info!(
            runs = handles.len(),
            grace_secs,
            "waiting for running tasks"
        );
        let aborts: Vec<_> = handles.iter().map(|h| h.abort_handle()).collect();
        let all = futures_join(handles);
        if tokio::time::timeout(std::time::Duration::from_secs(grace_secs), all)
            .await
            .is_err()
        {
            for a in aborts {
                a.abort();
            }
            tracing::warn!("grace period over: the remaining runs were stopped");
        }
    }
    Ok(())
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::{Credentials, Task};
    use crate::schedule::Schedule;
    use std::collections::BTreeMap;

    fn task(schedule: &str, deadline: Option<i64>) -> Task {
        Task {
            name: "t".into(),
            file: "f".into(),
            schedule: Schedule::parse(schedule, None).unwrap(),
            command: vec!["true".into()],
            shell: false,
            env: BTreeMap::new(),
            workdir: None,
            timeout_secs: None,
            retries: 0,
            backoff_secs: 1,
            concurrency: Concurrency::Allow,
            starting_deadline_secs: deadline,
            jitter_secs: 0,
            credentials: Credentials::default(),
            task_file: None,
            disabled: false,
            names: vec![],
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn runs_missed_while_down_follow_the_kubernetes_cronjob_rules() {
        let t = task("0 * * * *", Some(600));
        let last = Some(Timestamp::from_unix(at("2026-12-01T08:00:05Z").timestamp()));
        let make_up = |due: &str, lost| Missed {
            make_up: Some(at(due)),
            lost,
            too_many: false,
        };
        // Down over 09:00, back at 09:05: made up.
        assert_eq!(
            missed(&t, last, at("2026-12-01T09:05:00Z")),
            make_up("2026-12-01T09:00:00Z", 0)
        );
        // Back at 09:20: too late (600 s), one run lost.
        assert_eq!(
            missed(&t, last, at("2026-12-01T09:20:00Z")),
            Missed {
                lost: 1,
                ..Missed::default()
            }
        );
        // Down from 08:00 to 11:05: 11:00 is made up, 09:00 and 10:00 are lost.
        assert_eq!(
            missed(&t, last, at("2026-12-01T11:05:00Z")),
            make_up("2026-12-01T11:00:00Z", 2)
        );
        // Ran at 09:00 already, or never ran here: nothing missed.
        let ran = Some(Timestamp::from_unix(at("2026-12-01T09:00:01Z").timestamp()));
        assert_eq!(
            missed(&t, ran, at("2026-12-01T09:05:00Z")),
            Missed::default()
        );
        assert_eq!(
            missed(&t, None, at("2026-12-01T09:05:00Z")),
            Missed::default()
        );
        // Without startingDeadlineSeconds there is no deadline: the latest is made up.
        assert_eq!(
            missed(&task("0 * * * *", None), last, at("2026-12-02T08:30:00Z")),
            make_up("2026-12-02T08:00:00Z", 23)
        );
        // More than 100 due in the window: none is started, as Kubernetes does.
        let often = task("@every 60s", None);
        let m = missed(&often, last, at("2026-12-01T11:00:00Z"));
        assert!(m.too_many && m.make_up.is_none() && m.lost == 180, "{m:?}");
        // ...unless the deadline narrows the window.
        let narrow = task("@every 60s", Some(90));
        assert_eq!(
            missed(&narrow, last, at("2026-12-01T11:00:30Z")),
            make_up("2026-12-01T11:00:00Z", 179)
        );
    }
}
