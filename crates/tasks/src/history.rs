//! The run history's writer for `tasks serve`: finished runs are kept in batches, one
//! durable transaction for all the runs that finished while the previous one was written.
//!
//! A thousand tasks due in one slot finish within a second of each other; written one
//! transaction each, their records took a thousand syncs and up to 512 blocking threads
//! queued on the store, competing with the starts still going (issue 18). Here one
//! thread writes, and a burst costs a few syncs.
//!
//! What it is not: the history itself ([`TaskHistory`], the store's), nor what a run's
//! caller waits on — `tasks run` keeps its single run directly, before it exits.

use credkeeper_store::{TaskHistory, TaskRun};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The most runs one transaction keeps; a longer queue is written in several.
const MOST_PER_BATCH: usize = 512;

/// Writes finished runs to the history on a thread of its own. [`HistoryWriter::close`]
/// (or dropping it) writes what is queued before it returns.
pub struct HistoryWriter {
    queue: Mutex<Option<Sender<TaskRun>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl HistoryWriter {
    /// Start the writer; at most `keep` runs per task are kept.
    pub fn start(history: Arc<dyn TaskHistory>, keep: usize) -> std::io::Result<HistoryWriter> {
        let (queue, runs) = channel();
        let thread = std::thread::Builder::new()
            .name("run-history".into())
            .spawn(move || write_batches(&*history, &runs, keep))?;
        Ok(HistoryWriter {
            queue: Mutex::new(Some(queue)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queue a finished run; never waits on the store. After [`close`](Self::close), the
    /// run is not kept, and that is logged.
    pub fn record(&self, run: TaskRun) {
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let refused = match queue.as_ref() {
            Some(queue) => queue.send(run).err().map(|e| e.0),
            None => Some(run),
        };
        if let Some(run) = refused {
            tracing::warn!(
                task = run.task,
                "run history: the run finished after the history was closed, not kept"
            );
        }
    }

    /// Write every queued run, then stop the writer.
    pub fn close(&self) {
        drop(self.queue.lock().unwrap_or_else(|p| p.into_inner()).take());
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("run history: the writer thread panicked");
        }
    }
}

impl Drop for HistoryWriter {
    fn drop(&mut self) {
        self.close();
    }
}

/// Until every sender is gone: wait for a run, take whatever else is queued with it, keep
/// them in one transaction.
fn write_batches(history: &dyn TaskHistory, runs: &Receiver<TaskRun>, keep: usize) {
    while let Ok(first) = runs.recv() {
        let mut batch = vec![first];
        batch.extend(runs.try_iter().take(MOST_PER_BATCH - 1));
        if let Err(e) = history.record_runs(&batch, keep) {
            tracing::warn!(runs = batch.len(), "run history: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use credkeeper_core::Timestamp;
    use credkeeper_store::{SqliteStore, StoreError};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The SQLite store, counting the transactions it is asked for.
    struct Counted {
        store: SqliteStore,
        batches: AtomicUsize,
    }

    impl TaskHistory for Counted {
        fn record_runs(&self, runs: &[TaskRun], keep: usize) -> Result<(), StoreError> {
            self.batches.fetch_add(1, Ordering::SeqCst);
            // Slow enough that the runs queued meanwhile make a batch.
            std::thread::sleep(std::time::Duration::from_millis(20));
            self.store.record_runs(runs, keep)
        }
        fn runs(&self, task: &str, limit: usize) -> Result<Vec<TaskRun>, StoreError> {
            self.store.runs(task, limit)
        }
        fn last_started(&self, task: &str) -> Result<Option<Timestamp>, StoreError> {
            self.store.last_started(task)
        }
        fn claim_runs(&self, runs: &[(&str, Timestamp)]) -> Result<Vec<bool>, StoreError> {
            self.store.claim_runs(runs)
        }
    }

    fn run(task: String, i: i64) -> TaskRun {
        TaskRun {
            task,
            started: Timestamp::from_unix(1000 + i),
            ended: Timestamp::from_unix(1001 + i),
            status: Some(0),
            attempts: 1,
            reason: None,
            output: format!("run {i}"),
        }
    }

    #[test]
    fn a_burst_of_finished_runs_is_kept_whole_in_a_few_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let history = Arc::new(Counted {
            store: SqliteStore::open(dir.path()).unwrap(),
            batches: AtomicUsize::new(0),
        });
        let writer = HistoryWriter::start(history.clone(), 100).unwrap();
        for i in 0..1000 {
            writer.record(run(format!("task-{}", i % 250), i));
        }
        writer.close();
        for t in 0..250 {
            let kept = history.runs(&format!("task-{t}"), 10).unwrap();
            assert_eq!(kept.len(), 4, "task-{t}: each of its four runs is kept");
            assert_eq!(kept[0].output, format!("run {}", 750 + t), "newest first");
        }
        let batches = history.batches.load(Ordering::SeqCst);
        assert!(
            (2..=10).contains(&batches),
            "1000 runs queued at once are written in a few batches of at most {MOST_PER_BATCH}, not one each: {batches}"
        );
    }

    #[test]
    fn a_run_finishing_after_the_close_is_refused_without_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let writer = HistoryWriter::start(store.clone(), 100).unwrap();
        writer.record(run("before".into(), 1));
        writer.close();
        writer.record(run("after".into(), 2));
        writer.close();
        assert_eq!(store.runs("before", 10).unwrap().len(), 1);
        assert!(store.runs("after", 10).unwrap().is_empty());
    }
}
