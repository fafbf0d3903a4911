//! Many files replaced durably for the price of a few file-system syncs.
//!
//! [`write_atomic`](crate::write_atomic) pays two fsyncs per file (the data, then the
//! directory holding the rename); a credential monitor replacing 100,000 files pays
//! 200,000. Here callers stage their files ([`Staged`]) and hand them to one
//! [`GroupCommit`]: whoever arrives while no commit runs leads one for everything queued
//! — one `syncfs` for the data, then the renames, then one `syncfs` for them — and every
//! caller returns only once its files are durable. The guarantees are those of
//! `write_atomic`: a reader, or a machine that crashed, sees each file old or new, never
//! partial, and a call that returned `Ok` survives a crash.
//!
//! A caller's files are renamed in the order given, each rank of files made durable before
//! the next is renamed (a credential's `.use` before its `.top`, as a lone write would).

use crate::file::{SinkError, Staged};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Condvar, Mutex, PoisonError};

/// One queue of staged files and the caller that commits them.
#[derive(Default)]
pub struct GroupCommit {
    state: Mutex<State>,
    finished: Condvar,
}

#[derive(Default)]
struct State {
    queue: Vec<(u64, Vec<Staged>)>,
    results: HashMap<u64, Result<(), SinkError>>,
    next_ticket: u64,
    leading: bool,
}

impl GroupCommit {
    pub fn new() -> GroupCommit {
        GroupCommit::default()
    }

    /// Put `files` in place, in order; returns once they are durable. Blocks: async
    /// callers call it on a blocking thread.
    pub fn commit(&self, files: Vec<Staged>) -> Result<(), SinkError> {
        let lock = || self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut state = lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push((ticket, files));
        loop {
            if let Some(result) = state.results.remove(&ticket) {
                return result;
            }
            if state.leading {
                state = self
                    .finished
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            state.leading = true;
            let batch = std::mem::take(&mut state.queue);
            drop(state);
            let results = run(batch);
            state = lock();
            state.results.extend(results);
            state.leading = false;
            self.finished.notify_all();
        }
    }
}

/// `syncfs` on the file system holding `path`: every dirty page and every metadata change
/// of that file system reaches the disk.
fn syncfs(path: &Path) -> std::io::Result<()> {
    let dir = std::fs::File::open(path)?;
    // SAFETY: syncfs takes a file descriptor, which `dir` keeps open for the call.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One directory per file system the batch touches (temporary files and their
/// destinations are on the same one: a rename needs that).
fn file_systems(batch: &[(u64, Vec<Staged>)]) -> Vec<std::path::PathBuf> {
    let mut seen = HashMap::new();
    for staged in batch.iter().flat_map(|(_, files)| files) {
        let dir = staged
            .dest()
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if let Ok(meta) = std::fs::metadata(dir) {
            seen.entry(meta.dev()).or_insert_with(|| dir.to_path_buf());
        }
    }
    seen.into_values().collect()
}

fn sync_all(dirs: &[std::path::PathBuf]) -> std::io::Result<()> {
    dirs.iter().try_for_each(|d| syncfs(d))
}

/// The same failure for every file of a batch (io::Error is not Clone).
fn copy(e: &std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::new(e.kind(), e.to_string()),
    }
}

fn run(batch: Vec<(u64, Vec<Staged>)>) -> Vec<(u64, Result<(), SinkError>)> {
    let dirs = file_systems(&batch);
    // The data first: no file is renamed into place before its contents are durable.
    if let Err(e) = sync_all(&dirs) {
        return batch
            .into_iter()
            .map(|(ticket, mut files)| (ticket, Err(files.remove(0).failed(copy(&e)))))
            .collect();
    }
    let mut results: Vec<(u64, Result<(), SinkError>)> = Vec::with_capacity(batch.len());
    let mut pending: Vec<(u64, std::collections::VecDeque<Staged>)> = batch
        .into_iter()
        .map(|(ticket, files)| (ticket, files.into()))
        .collect();
    while !pending.is_empty() {
        let mut placed = Vec::new();
        for (ticket, files) in pending {
            let Some(next) = files.front() else {
                results.push((ticket, Ok(())));
                continue;
            };
            match std::fs::rename(next.temp(), next.dest()) {
                Ok(()) => placed.push((ticket, files)),
                Err(e) => {
                    let mut files = files;
                    let failed = files.pop_front().map(|f| f.failed(e));
                    // The rest of this caller's files stay out (dropped: temporaries removed).
                    if let Some(err) = failed {
                        results.push((ticket, Err(err)));
                    }
                }
            }
        }
        // This rank's renames durable before the next rank's begin.
        let synced = sync_all(&dirs);
        pending = Vec::with_capacity(placed.len());
        for (ticket, mut files) in placed {
            let done = files.pop_front();
            match (&synced, done) {
                (Ok(()), Some(f)) => {
                    f.placed();
                    pending.push((ticket, files));
                }
                (Err(e), Some(f)) => {
                    // In place but maybe not durable: say so; the rest stay out.
                    let path = f.dest().to_path_buf();
                    f.placed();
                    results.push((
                        ticket,
                        Err(SinkError::Write {
                            path,
                            source: copy(e),
                        }),
                    ));
                }
                (_, None) => results.push((ticket, Ok(()))),
            }
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    #[test]
    fn every_caller_returns_with_its_files_in_place_in_order_and_no_temporary_left() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let group = Arc::new(GroupCommit::new());
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let (group, root, tmp) = (group.clone(), dir.path().to_path_buf(), tmp.clone());
                std::thread::spawn(move || {
                    let user = root.join(format!("u{i}"));
                    std::fs::create_dir(&user).unwrap();
                    std::fs::write(user.join("a.top"), "old top").unwrap();
                    for round in 0..20 {
                        let files = ["a.use", "a.top"]
                            .iter()
                            .map(|name| {
                                let body = format!("{name} {i} {round}");
                                Staged::write(Some(&tmp), &user.join(name), body.as_bytes(), 0o400)
                                    .unwrap()
                            })
                            .collect();
                        group.commit(files).unwrap();
                        for name in ["a.use", "a.top"] {
                            let path = user.join(name);
                            let text = std::fs::read_to_string(&path).unwrap();
                            assert_eq!(text, format!("{name} {i} {round}"));
                            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
                            assert_eq!(mode & 0o777, 0o400);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            std::fs::read_dir(&tmp).unwrap().count(),
            0,
            "no temporary left"
        );
    }

    #[test]
    fn a_file_that_cannot_be_placed_fails_its_caller_alone_and_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        let old = dir.path().join("old");
        std::fs::write(&old, "last good").unwrap();
        let group = GroupCommit::new();
        let staged = Staged::write(None, &old, b"new", 0o600).unwrap();
        // The destination became a non-empty directory: the rename cannot replace it.
        std::fs::remove_file(&old).unwrap();
        std::fs::create_dir(&old).unwrap();
        std::fs::write(old.join("x"), "").unwrap();
        let err = group.commit(vec![staged]).unwrap_err();
        assert!(err.to_string().contains("old"), "{err}");
        group
            .commit(vec![Staged::write(None, &good, b"fine", 0o600).unwrap()])
            .unwrap();
        assert_eq!(std::fs::read_to_string(&good).unwrap(), "fine");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }
}
