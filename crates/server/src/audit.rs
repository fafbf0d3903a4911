//! The audit log: one JSON line per vend and per denial — who, what, result — and never
//! a token value. A vend waits for its line to be written ([`Recorded::written`]) and is
//! refused when it could not be, as Vault's audit device refuses a request it cannot log.
//!
//! Lines are written in batches (group commit), one batch gathering per runtime thread: a
//! request serializes its line straight into its thread's pending batch, under a lock only
//! that thread's writer also takes. The first line of a batch starts a writer task on that thread, which first lets
//! every other ready task of the thread run ([`tokio::task::yield_now`]: after the ready
//! tasks and the next poll of the I/O driver), so the lines of all requests being served
//! there at that moment join the batch; then one `write` carries them, and lines that
//! arrived during that write go out in the next one, until none is left. Every line of a
//! batch gets that write's result. A request makes no system call and takes no lock for
//! its line beyond the append, and no line is handed to another thread that must be woken.
//! Batches gather per thread because a task is woken onto the thread that wakes it: one
//! batch for all threads moved every request whose line another thread's writer wrote to
//! that thread, and the memory it then freed belonged to the first thread's allocator
//! arena, whose lock both threads then fought over.

use credkeeper_core::Timestamp;
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::Notify;

/// One line: borrowed from the request it tells of, serialized at once.
#[derive(Debug, Serialize)]
pub struct Event<'a> {
    #[serde(serialize_with = "as_text")]
    pub time: Timestamp,
    pub robot: &'a str,
    pub auth: &'static str,
    pub provider: &'a str,
    pub scope: &'a str,
    pub audience: &'a str,
    /// `vended`, `denied` or `failed`.
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
}

/// A time as its RFC 3339 text, written straight into the line.
fn as_text<S: serde::Serializer>(time: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(time)
}

/// The log: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Audit {
    inner: Arc<Inner>,
}

/// Batches gathering at once: threads beyond this many share one.
const SHARDS: usize = 8;

/// The batch the calling thread's requests join.
fn shard() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local!(static SHARD: usize = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % SHARDS);
    SHARD.with(|s| *s)
}

struct Inner {
    shards: [Mutex<State>; SHARDS],
    /// Taken by a batch's writer for its write: one batch's lines are never cut by another's.
    out: Mutex<Box<dyn Write + Send>>,
}

struct State {
    /// Lines waiting for the next write.
    pending: Vec<u8>,
    /// The batch those lines belong to: its write's result, when it comes.
    batch: Arc<Batch>,
    /// A writer is scheduled or at work: it takes `pending` when it writes.
    writing: bool,
    /// The last written batch's buffer, kept for its capacity.
    spare: Vec<u8>,
}

#[derive(Default)]
struct Batch {
    written: OnceLock<bool>,
    done: Notify,
}

impl Batch {
    fn finish(&self, ok: bool) {
        let _ = self.written.set(ok);
        self.done.notify_waiters();
    }
}

/// A line handed to the log; [`Recorded::written`] tells whether it reached the log.
pub struct Recorded(Arc<Batch>);

impl Recorded {
    /// Whether the line was written (the write of its batch returned without error).
    pub async fn written(self) -> bool {
        loop {
            let done = self.0.done.notified();
            tokio::pin!(done);
            // Registered before looking, so a batch finished in between still wakes us.
            done.as_mut().enable();
            if let Some(ok) = self.0.written.get() {
                return *ok;
            }
            done.await;
        }
    }
}

impl Audit {
    /// Append to `path` (`-` for standard output), creating it with mode 0600; a file
    /// that was there already with another mode is made 0600 (and a warning says so).
    pub fn open(path: &Path) -> std::io::Result<Audit> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let out: Box<dyn Write + Send> = if path.as_os_str() == "-" {
            Box::new(std::io::stdout())
        } else {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)?;
            let meta = file.metadata()?;
            let mode = meta.permissions().mode() & 0o7777;
            // A regular file only: a pipe or a device (`/dev/stderr`) is left alone.
            if meta.is_file() && mode != 0o600 {
                file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                tracing::warn!(
                    "audit log {}: mode was {mode:04o}; set to 0600",
                    path.display()
                );
            }
            Box::new(file)
        };
        Ok(Audit::writing_to(out))
    }

    /// The log over any output (a file, standard output, a test's failing sink). Each
    /// batch is one `write_all` and one `flush`.
    pub fn writing_to(out: Box<dyn Write + Send>) -> Audit {
        Audit {
            inner: Arc::new(Inner {
                shards: std::array::from_fn(|_| {
                    Mutex::new(State {
                        pending: Vec::new(),
                        batch: Arc::default(),
                        writing: false,
                        spare: Vec::new(),
                    })
                }),
                out: Mutex::new(out),
            }),
        }
    }

    /// Hand `event` to the log; its line is written with the batch it joins (by a writer
    /// task this call starts when none is scheduled; outside a runtime, by this call).
    pub fn record(&self, event: Event<'_>) -> Recorded {
        let shard = shard();
        let (batch, lead) = {
            let mut state = self.inner.lock_state(shard);
            // Strings and integers into memory: serializing cannot fail.
            let _ = serde_json::to_writer(&mut state.pending, &event);
            state.pending.push(b'\n');
            let lead = !state.writing;
            state.writing = true;
            (state.batch.clone(), lead)
        };
        if lead {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let inner = self.inner.clone();
                    runtime.spawn(async move {
                        // Let the other requests ready now add their lines first.
                        tokio::task::yield_now().await;
                        inner.write_pending(shard);
                    });
                }
                Err(_) => self.inner.write_pending(shard),
            }
        }
        Recorded(batch)
    }
}

impl Inner {
    fn lock_state(&self, shard: usize) -> std::sync::MutexGuard<'_, State> {
        crate::sync::lock(&self.shards[shard])
    }

    /// As the writer of `shard`: write its pending batch, then the one that gathered
    /// meanwhile, until none is left.
    fn write_pending(&self, shard: usize) {
        // Should a write panic, the batch in hand and the one gathering fail (no vend waits
        // for ever, none goes out unlogged) and the next caller writes.
        struct Leave<'a>(&'a Inner, usize, Option<Arc<Batch>>);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                if let Some(batch) = self.2.take() {
                    let gathering = {
                        let mut state = self.0.lock_state(self.1);
                        state.writing = false;
                        state.pending.clear();
                        std::mem::take(&mut state.batch)
                    };
                    batch.finish(false);
                    gathering.finish(false);
                }
            }
        }
        let mut leave = Leave(self, shard, None);
        loop {
            let (mut lines, batch) = {
                let mut state = self.lock_state(shard);
                if state.pending.is_empty() {
                    state.writing = false;
                    return;
                }
                let spare = std::mem::take(&mut state.spare);
                let lines = std::mem::replace(&mut state.pending, spare);
                (lines, std::mem::take(&mut state.batch))
            };
            leave.2 = Some(batch.clone());
            let mut out = crate::sync::lock(&self.out);
            let ok = match out.write_all(&lines).and_then(|_| out.flush()) {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!("cannot write the audit log: {e}");
                    false
                }
            };
            drop(out);
            leave.2 = None;
            batch.finish(ok);
            lines.clear();
            let mut state = self.lock_state(shard);
            if state.spare.capacity() < lines.capacity() {
                state.spare = lines;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn event(n: usize) -> Event<'static> {
        let robot: &'static str = Box::leak(format!("robot-{n}").into_boxed_str());
        Event {
            time: Timestamp::from_unix(1_796_515_200),
            robot,
            auth: "secret",
            provider: "local",
            scope: "read:/data",
            audience: "https://storage.example",
            result: "vended",
            source: Some("cached"),
            code: None,
            reason: None,
            expires: Some(1),
        }
    }

    /// Keeps what is written; each write takes `delay` and is counted.
    #[derive(Clone, Default)]
    struct Sink {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<AtomicUsize>,
        delay: std::time::Duration,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(self.delay);
            self.bytes.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Fails every write, as a full disk does.
    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("no space left on device"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn every_line_of_concurrent_requests_is_written_once_whole_and_in_batches() {
        let sink = Sink {
            delay: std::time::Duration::from_millis(2),
            ..Sink::default()
        };
        let audit = Audit::writing_to(Box::new(sink.clone()));
        let n = 400;
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let audit = audit.clone();
                tokio::spawn(async move { audit.record(event(i)).written().await })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap());
        }
        let text = String::from_utf8(sink.bytes.lock().unwrap().clone()).unwrap();
        let mut robots: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["robot"].as_str().unwrap().to_string()
            })
            .collect();
        robots.sort();
        let mut want: Vec<String> = (0..n).map(|i| format!("robot-{i}")).collect();
        want.sort();
        assert_eq!(robots, want);
        // Lines that came while a (2 ms) write was under way went out together.
        let writes = sink.writes.load(Ordering::SeqCst);
        assert!(writes < n / 2, "{writes} writes for {n} lines");
    }

    #[tokio::test]
    async fn a_line_alone_is_written_and_said_so() {
        let sink = Sink::default();
        let audit = Audit::writing_to(Box::new(sink.clone()));
        assert!(audit.record(event(1)).written().await);
        assert_eq!(sink.writes.load(Ordering::SeqCst), 1);
        assert!(sink.bytes.lock().unwrap().ends_with(b"\n"));
        // Outside a runtime the caller writes it.
        let audit = Audit::writing_to(Box::new(sink.clone()));
        std::thread::spawn(move || drop(audit.record(event(2))))
            .join()
            .unwrap();
        assert_eq!(sink.writes.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn lines_of_requests_ready_together_go_out_in_one_write() {
        let sink = Sink::default();
        let audit = Audit::writing_to(Box::new(sink.clone()));
        // One thread, ten requests ready at once: the writer runs after all of them.
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let audit = audit.clone();
                tokio::spawn(async move { audit.record(event(i)).written().await })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap());
        }
        assert_eq!(sink.writes.load(Ordering::SeqCst), 1);
        let bytes = sink.bytes.lock().unwrap().clone();
        assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), 10);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_fails_every_line_of_its_batch_and_the_log_goes_on() {
        let audit = Audit::writing_to(Box::new(Full));
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let audit = audit.clone();
                tokio::spawn(async move { audit.record(event(i)).written().await })
            })
            .collect();
        for t in tasks {
            assert!(!t.await.unwrap());
        }
        // Still answering (no writer left stuck), still failing.
        assert!(!audit.record(event(0)).written().await);
    }
}
