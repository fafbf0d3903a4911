//! Task metrics in the Prometheus text format, for the node exporter's textfile collector
//! (a file rewritten atomically after every run): last success and last run per task,
//! runs by result, durations, and due runs skipped or missed.

use crate::run::Outcome;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

#[derive(Default, Clone)]
struct PerTask {
    last_success: Option<i64>,
    last_run: Option<i64>,
    succeeded: u64,
    failed: u64,
    skipped: u64,
    missed: u64,
    duration_sum: i64,
    last_duration: i64,
}

#[derive(Default)]
pub struct Metrics {
    tasks: Mutex<BTreeMap<String, PerTask>>,
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn finished(&self, task: &str, outcome: &Outcome) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let t = tasks.entry(task.to_string()).or_default();
        let took = outcome.ended.seconds_after(outcome.started);
        t.last_run = Some(outcome.ended.unix());
        t.last_duration = took;
        t.duration_sum += took;
        if outcome.succeeded() {
            t.succeeded += 1;
            t.last_success = Some(outcome.ended.unix());
        } else {
            t.failed += 1;
        }
    }

    /// The same figures from a task's kept run history (oldest first or not: any order),
    /// for `tasks run` under a CronJob, where each run is a new process.
    pub fn replay(&self, runs: &[credkeeper_store::TaskRun]) {
        let mut runs: Vec<&credkeeper_store::TaskRun> = runs.iter().collect();
        runs.sort_by_key(|r| r.started);
        for r in runs {
            self.finished(
                &r.task,
                &Outcome {
                    status: r.status,
                    attempts: r.attempts,
                    started: r.started,
                    ended: r.ended,
                    reason: r.reason.clone(),
                    output: String::new(),
                },
            );
        }
    }

    pub fn skipped(&self, task: &str) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.entry(task.to_string()).or_default().skipped += 1;
    }

    /// Runs due while the scheduler was down that will never run.
    pub fn missed(&self, task: &str, runs: u64) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.entry(task.to_string()).or_default().missed += runs;
    }

    pub fn render(&self) -> String {
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut out = String::new();
        let mut family =
            |name: &str, kind: &str, help: &str, value: &dyn Fn(&PerTask) -> Option<String>| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for (task, t) in &tasks {
                    if let Some(v) = value(t) {
                        let _ = writeln!(out, "{name}{{task=\"{}\"}} {v}", escape(task));
                    }
                }
            };
        family(
            "credkeeper_task_last_success_timestamp_seconds",
            "gauge",
            "When the task last succeeded.",
            &|t| t.last_success.map(|v| v.to_string()),
        );
        family(
            "credkeeper_task_last_run_timestamp_seconds",
            "gauge",
            "When the task's last run ended.",
            &|t| t.last_run.map(|v| v.to_string()),
        );
        family(
            "credkeeper_task_succeeded_total",
            "counter",
            "Runs that succeeded.",
            &|t| Some(t.succeeded.to_string()),
        );
        family(
            "credkeeper_task_failed_total",
            "counter",
            "Runs that failed (the command, its credentials, or a timeout).",
            &|t| Some(t.failed.to_string()),
        );
        family(
            "credkeeper_task_skipped_total",
            "counter",
            "Due runs not started (Forbid while running).",
            &|t| Some(t.skipped.to_string()),
        );
        family(
            "credkeeper_task_missed_total",
            "counter",
            "Due runs missed while the scheduler was down and not made up.",
            &|t| Some(t.missed.to_string()),
        );
        family(
            "credkeeper_task_duration_seconds_sum",
            "counter",
            "Total run time.",
            &|t| Some(t.duration_sum.to_string()),
        );
        family(
            "credkeeper_task_last_duration_seconds",
            "gauge",
            "How long the last run took.",
            &|t| Some(t.last_duration.to_string()),
        );
        out
    }

    /// Rewrite `path` atomically (readers never see half a file).
    pub fn write(&self, path: &std::path::Path) -> std::io::Result<()> {
        credkeeper_sink::write_atomic(path, self.render().as_bytes(), 0o644)
            .map_err(std::io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use credkeeper_core::Timestamp;

    #[test]
    fn runs_and_skips_are_counted_per_task() {
        let m = Metrics::default();
        let ok = Outcome {
            status: Some(0),
            attempts: 1,
            started: Timestamp::from_unix(100),
            ended: Timestamp::from_unix(103),
            reason: None,
            output: String::new(),
        };
        let bad = Outcome {
            status: Some(2),
            reason: Some("exit status 2".into()),
            ended: Timestamp::from_unix(110),
            started: Timestamp::from_unix(104),
            attempts: 1,
            output: String::new(),
        };
        m.finished("sync", &ok);
        m.finished("sync", &bad);
        m.skipped("sync");
        m.missed("sync", 2);
        m.missed("sync", 1);
        let text = m.render();
        assert!(
            text.contains("credkeeper_task_last_success_timestamp_seconds{task=\"sync\"} 103\n"),
            "{text}"
        );
        assert!(text.contains("credkeeper_task_succeeded_total{task=\"sync\"} 1\n"));
        assert!(text.contains("credkeeper_task_failed_total{task=\"sync\"} 1\n"));
        assert!(text.contains("credkeeper_task_skipped_total{task=\"sync\"} 1\n"));
        assert!(text.contains("credkeeper_task_missed_total{task=\"sync\"} 3\n"));
        assert!(text.contains("# TYPE credkeeper_task_failed_total counter\n"));
    }
}
