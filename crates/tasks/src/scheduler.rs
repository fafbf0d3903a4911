//! The scheduler behind `tasks serve`: each enabled task started when due, with the
//! Kubernetes CronJob meanings — `concurrencyPolicy` (Allow: overlapping runs; Forbid: a
//! due run is skipped while one runs; Replace: the running one is stopped and the new one
//! starts), runs missed while the scheduler was down (the latest is made up at start when
//! its due time is within `startingDeadlineSeconds`, or always when that is unset; the
//! others are counted as missed), and jitter (a random delay up to it). Each run is made
//! ready two seconds before it is due (values filled, directory made, credentials
//! obtained), so its start waits for no identity provider.
//! Definitions are reloaded on request; a stop lets running tasks finish for a grace
//! period, then stops them (their credentials are removed either way).

use crate::definition::{Concurrency, Rendered, Task, TaskError};
use crate::run::{Outcome, PrepareError, RunOptions};
use chrono::{DateTime, Utc};
use credkeeper_core::Timestamp;
use credkeeper_refresher::source::TokenSource;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why the definitions could not be read: the caller's own error, kept whole.
pub type LoadError = Box<dyn std::error::Error + Send + Sync>;
pub type LoadFn = Box<dyn Fn() -> Result<Vec<Task>, LoadError> + Send + Sync>;
pub type RenderFn = Arc<dyn Fn(&Task) -> Result<Rendered, TaskError> + Send + Sync>;
pub type LastStartedFn = Box<dyn Fn(&str) -> Option<Timestamp> + Send + Sync>;
pub type FinishedFn = Arc<dyn Fn(&Task, &Outcome) + Send + Sync>;
pub type SkippedFn = Arc<dyn Fn(&Task, &str) + Send + Sync>;
pub type MissedFn = Box<dyn Fn(&Task, u64) + Send + Sync>;
pub type ClaimFn = Box<
    dyn Fn(&[(&str, Timestamp)]) -> Result<Vec<bool>, credkeeper_store::StoreError> + Send + Sync,
>;

/// Why the scheduler could not start.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The definitions it starts with could not be read (a reload's failure only logs).
    #[error(transparent)]
    Load(LoadError),
}

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
    /// Claims runs by (task, due time), true where this scheduler won: of several
    /// schedulers sharing a store, one starts each due run.
    pub claim: ClaimFn,
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
    // Due times after `from` and up to now that are `>= since`: how many (up to `limit`)
    // and the last one counted.
    let count = |from: DateTime<Utc>, since: DateTime<Utc>, limit: u64| {
        let (mut n, mut latest, mut after) = (0, None, from);
        while let Some(next) = task.schedule.next_after(after) {
            if next > now || n == limit {
                break;
            }
            if next >= since {
                n += 1;
                latest = Some(next);
            }
            after = next;
        }
        (n, latest)
    };
    // The deadline's window is walked from its start, not from the last run: a frequent
    // task down for long still has its latest due time found.
    let (from, since) = match task.starting_deadline_secs {
        Some(d) => {
            let since = now - chrono::Duration::seconds(d);
            (last.max(since - chrono::Duration::seconds(1)), since)
        }
        None => (last, last),
    };
    let (in_window, latest) = count(from, since, MISSED_LIMIT + 1);
    let (due, _) = count(last, last, COUNT_LIMIT);
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

/// How long before its due time a run is made ready (values filled, directory made,
/// credentials obtained), so that the start itself waits for none of that.
const PREPARE_AHEAD: chrono::Duration = chrono::Duration::seconds(2);

/// The scheduler wakes this long before a due time and claims the due runs then: the claim
/// is a write to the store, whose fsync takes several milliseconds on a busy disk (4–5 ms
/// measured here under other I/O), and a start must not wait for it.
const CLAIM_AHEAD: std::time::Duration = std::time::Duration::from_millis(25);

/// tokio's timer counts whole milliseconds and wakes up to one late: the last stretch to a
/// due time is slept precisely (the kernel's high-resolution timer).
const PRECISE: std::time::Duration = std::time::Duration::from_millis(2);

type Prepared = (Rendered, Result<crate::run::Prepared, PrepareError>);

/// Why a background preparation gave nothing to run.
#[derive(Debug, thiserror::Error)]
enum PreparationError {
    #[error(transparent)]
    Render(#[from] TaskError),
    #[error("preparing the run: {0}")]
    Stopped(#[from] tokio::task::JoinError),
}

/// A run being made ready in the background; dropped (a Forbid skip, a reload, a stop), it
/// takes what it made with it.
struct Preparation(JoinHandle<Result<Prepared, TaskError>>);

impl Preparation {
    fn start(task: &Task, hooks: &Hooks, options: &Arc<RunOptions>) -> Preparation {
        let (task, render, tokens, options) = (
            task.clone(),
            hooks.render.clone(),
            hooks.tokens.clone(),
            options.clone(),
        );
        Preparation(tokio::spawn(async move {
            let rendered = render(&task)?;
            let prepared = crate::run::prepare(&task, &rendered, tokens, &options).await;
            Ok((rendered, prepared))
        }))
    }

    async fn finish(mut self) -> Result<Prepared, PreparationError> {
        Ok((&mut self.0).await??)
    }
}

impl Drop for Preparation {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The tasks due by `now` whose runs this scheduler claimed, in one call to the store. A
/// store that cannot answer starts nothing: a fleet must not start a run twice.
fn claim_due<'t>(
    hooks: &Hooks,
    tasks: &'t [Task],
    next: &HashMap<String, DateTime<Utc>>,
    now: DateTime<Utc>,
) -> std::collections::HashSet<&'t str> {
    let due: Vec<(&str, Timestamp)> = tasks
        .iter()
        .filter(|t| !t.disabled)
        .filter_map(|t| {
            let at = next.get(&t.name).filter(|d| **d <= now)?;
            Some((t.name.as_str(), Timestamp::from_unix(at.timestamp())))
        })
        .collect();
    if due.is_empty() {
        return Default::default();
    }
    match (hooks.claim)(&due) {
        Ok(won) => due
            .iter()
            .zip(won)
            .filter(|(_, w)| *w)
            .map(|((name, _), _)| *name)
            .collect(),
        Err(e) => {
            tracing::error!(
                runs = due.len(),
                "cannot claim the due runs, none started: {e}"
            );
            Default::default()
        }
    }
}

/// Run until `stop` turns true; reload the definitions whenever `reload` changes.
pub async fn serve(
    hooks: Hooks,
    run_options: Arc<RunOptions>,
    grace_secs: u64,
    mut reload: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), SchedulerError> {
    let mut tasks = (hooks.load)().map_err(SchedulerError::Load)?;
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
            // Due in the past, so it starts at once, claimed under its own due time: one
            // scheduler of a fleet makes it up.
            tracing::info!(task = t.name, %due, "making up a run missed while the scheduler was down");
            next.insert(t.name.clone(), due);
            continue;
        }
        if let Some(n) = t.schedule.next_after(now) {
            next.insert(t.name.clone(), n);
        }
    }
    // Runs made ready ahead of their due time: (due, the preparation).
    let mut ready: HashMap<String, (DateTime<Utc>, Preparation)> = HashMap::new();
    loop {
        // Each task's next moment: when to prepare its run, or (that passed) its due time
        // (`true`: a start, to be met precisely).
        let now = Utc::now();
        let (wake, start) = next
            .values()
            .map(|due| {
                let prepare_at = *due - PREPARE_AHEAD;
                if prepare_at > now {
                    (prepare_at, false)
                } else {
                    (*due, true)
                }
            })
            .min()
            .unwrap_or_else(|| (now + chrono::Duration::seconds(60), false));
        let wait = (wake - Utc::now()).to_std().unwrap_or_default();
        let coarse = if start {
            wait.saturating_sub(CLAIM_AHEAD)
        } else {
            wait
        };
        tokio::select! {
            _ = tokio::time::sleep(coarse) => {}
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
                            // What was prepared from the old definitions is not used.
                            ready.clear();
                            tasks = new;
                        }
                        Err(e) => tracing::error!("reload failed, keeping the definitions in effect: {e}"),
                    }
                }
                continue;
            }
            _ = stop.changed() => break,
        }
        let mut now = Utc::now();
        let won = if start && wake > now {
            // Just before a due time: claim its runs now, then sleep to it, the last
            // stretch precisely; the runs due by `wake` (the claimed ones) start.
            let won = claim_due(&hooks, &tasks, &next, wake);
            if let Ok(rest) = (wake - Utc::now()).to_std()
                && rest > PRECISE
            {
                tokio::time::sleep(rest - PRECISE).await;
            }
            if let Ok(rest) = (wake - Utc::now()).to_std() {
                std::thread::sleep(rest);
            }
            now = wake;
            won
        } else {
            claim_due(&hooks, &tasks, &next, now)
        };
        for task in tasks.iter().filter(|t| !t.disabled) {
            let Some(due) = next.get(&task.name).copied() else {
                continue;
            };
            if due > now {
                // Soon due: make it ready now, so its start waits for no login or file
                // (unless Forbid will skip it: a run is still going).
                let soon = due - PREPARE_AHEAD <= now;
                let prepared = || ready.get(&task.name).is_some_and(|(d, _)| *d == due);
                let busy = || {
                    task.concurrency == Concurrency::Forbid
                        && running
                            .get(&task.name)
                            .is_some_and(|l| l.iter().any(|h| !h.is_finished()))
                };
                if soon && !prepared() && !busy() {
                    let p = Preparation::start(task, &hooks, &run_options);
                    ready.insert(task.name.clone(), (due, p));
                }
                continue;
            }
            let following = task.schedule.next_after(now);
            if let Some(n) = following {
                next.insert(task.name.clone(), n);
            }
            let preparation = ready
                .remove(&task.name)
                .filter(|(d, _)| *d == due)
                .map(|(_, p)| p);
            if !won.contains(task.name.as_str()) {
                tracing::debug!(task = task.name, %due, "this run is another scheduler's");
                continue;
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
            let preparation =
                preparation.unwrap_or_else(|| Preparation::start(task, &hooks, &run_options));
            let definition = task;
            let (task, finished, tokens, options) = (
                task.clone(),
                hooks.finished.clone(),
                hooks.tokens.clone(),
                run_options.clone(),
            );
            list.push(tokio::spawn(async move {
                // No jitter, no timer: a zero sleep still waits for tokio's next tick.
                let delay = jitter(task.jitter_secs);
                if delay > 0 {
                    tokio::time::sleep(std::time::Duration::from_secs(delay)).await;
                }
                let outcome = match preparation.finish().await {
                    Ok((rendered, first)) => {
                        crate::run::run_from(&task, &rendered, tokens, &options, Some(first)).await
                    }
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
            // The next run due within PREPARE_AHEAD (a task more frequent than that) is made
            // ready now: no later wake-up comes before its due time to do it (unless Forbid
            // will skip it, this run still going).
            if let Some(n) = following
                && n - PREPARE_AHEAD <= now
                && definition.concurrency != Concurrency::Forbid
            {
                let p = Preparation::start(definition, &hooks, &run_options);
                ready.insert(definition.name.clone(), (n, p));
            }
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
            inherit: vec![],
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
        // A frequent task down for long: the count stops at COUNT_LIMIT, the latest due
        // time within the deadline is still found and made up.
        let frequent = task("@every 1s", Some(5));
        assert_eq!(
            missed(&frequent, last, at("2026-12-01T11:00:00Z")),
            make_up("2026-12-01T11:00:00Z", COUNT_LIMIT - 1)
        );
    }

    /// Tokens that take `delay` to come, as from a slow identity provider.
    struct SlowTokens(std::time::Duration);

    impl TokenSource for SlowTokens {
        fn token<'a>(
            &'a self,
            _: &'a credkeeper_core::TokenAsk,
        ) -> credkeeper_refresher::source::SourceFuture<'a> {
            Box::pin(async move {
                tokio::time::sleep(self.0).await;
                Ok(credkeeper_refresher::source::Fresh {
                    token: credkeeper_core::Secret::new("slow-token-value"),
                    origin: credkeeper_refresher::Origin::Broker,
                    expires: Some(Timestamp::now().plus_secs(300)),
                })
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_is_prepared_ahead_so_a_slow_login_does_not_delay_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let starts = dir.path().join("starts");
        let yaml = dir.path().join("t.yaml");
        std::fs::write(
            &yaml,
            format!(
                "tasks:\n- name: slow-login\n  schedule: '@every 4s'\n  shell: true\n  command: 'test -s \"$BEARER_TOKEN_FILE\" && date +%s.%N >> {}'\n  credentials: {{bearer: {{}}}}\n",
                starts.display()
            ),
        )
        .unwrap();
        let options = crate::definition::Options::default();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let hooks = Hooks {
            load: Box::new(move || Ok(crate::definition::load(&yaml, &options)?)),
            render: Arc::new(|t: &Task| {
                struct NoVars;
                impl crate::template::Vars for NoVars {
                    fn get(&self, _: &str) -> Option<String> {
                        None
                    }
                }
                t.render(&NoVars, &crate::definition::Options::default())
            }),
            last_started: Box::new(|_| None),
            finished: Arc::new(move |_: &Task, o: &Outcome| {
                let _ = done_tx.send(o.clone());
            }),
            skipped: Arc::new(|_, _| {}),
            missed: Box::new(|_, _| {}),
            claim: Box::new(|due| Ok(vec![true; due.len()])),
            tokens: Some(Arc::new(SlowTokens(std::time::Duration::from_millis(1500)))),
        };
        let run_options = Arc::new(RunOptions {
            base_dir: dir.path().to_path_buf(),
            output_cap: 4096,
            grace_secs: 1,
            upstream: None,
        });
        let (_reload_tx, reload_rx) = watch::channel(0u64);
        let (stop_tx, stop_rx) = watch::channel(false);
        let scheduler = tokio::spawn(serve(hooks, run_options, 1, reload_rx, stop_rx));
        // The first slot may come before there was time to prepare; the second may not.
        for _ in 0..2 {
            let outcome = tokio::time::timeout(std::time::Duration::from_secs(15), done_rx.recv())
                .await
                .expect("a run within 15 s")
                .unwrap();
            assert!(outcome.succeeded(), "{outcome:?}");
        }
        stop_tx.send(true).unwrap();
        scheduler.await.unwrap().unwrap();
        let text = std::fs::read_to_string(&starts).unwrap();
        let second: f64 = text.lines().nth(1).unwrap().parse().unwrap();
        let lag = second - (second / 4.0).floor() * 4.0;
        assert!(
            lag < 0.5,
            "started {lag:.3} s after its due time; the 1.5 s login was not done ahead"
        );
    }
}
