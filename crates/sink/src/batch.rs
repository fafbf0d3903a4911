//! Many files replaced with one durable commit. A daemon that rewrites thousands of files
//! in a pass (credmon's refreshes) then pays two file-system syncs for all of them, not an
//! fsync of each file and of its directory.
//!
//! A [`Replacement`] is one or more files that go together, in order (a credential's
//! `.use`, then its `.top`). [`commit`] places many replacements:
//! 1. each new content is already in its temporary file beside its file
//!    ([`Replacement::file`] wrote it and closed it, without a sync), or in the file's
//!    [spare](crate::spare) ([`Replacement::file_over_spare`]);
//! 2. one `syncfs` per file system makes all those contents durable;
//! 3. the renames (a spare's is an exchange), each replacement's in the order staged (a
//!    large group's replacements on a few threads). A replacement whose rename fails stops
//!    there: its later files are not placed, and their temporary files are removed;
//! 4. a second `syncfs` makes the renames durable.
//!
//! Only then does a replacement count as done. A reader sees what
//! [`write_atomic`](crate::write_atomic) gives it: the old file or the new one, never a part
//! of either. A crash leaves what `write_atomic` would leave too: each file old or new,
//! and every replacement reported done in place. The data is durable before any rename
//! (step 2), so a rename that survives a crash never names a file whose contents did not.
//!
//! [`Committer`] commits group after group with one sync each: the sync of step 4 for one
//! group is the sync of step 2 for the next.
//!
//! The price: `syncfs` writes back everything dirty on that file system, not only these
//! files. For one file, [`write_atomic`](crate::write_atomic) costs less.

use crate::file::{SinkError, Staged, explain, parent};
use crate::spare::Spares;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Files to replace together, in the order given; staged now, placed by [`commit`]. Each
/// temporary file is beside its file. Dropped without being committed, its temporary files
/// are removed.
#[derive(Default)]
pub struct Replacement {
    files: Vec<Staged>,
    /// The file system of each temporary file, once each: its device and a directory on it.
    systems: Vec<(u64, PathBuf)>,
}

impl Replacement {
    pub fn new() -> Replacement {
        Replacement::default()
    }

    /// Stage `path`'s new `contents` with exactly `mode`: written to a temporary file and
    /// closed. Nothing is in place before [`commit`].
    pub fn file(&mut self, path: &Path, contents: &[u8], mode: u32) -> Result<(), SinkError> {
        let (staged, _) = Staged::write(path, contents, mode)?;
        self.add(staged);
        Ok(())
    }

    /// [`file`](Replacement::file), written into `path`'s [spare](crate::spare) when
    /// `spares` holds its directory and the spare may be written into: the commit then
    /// exchanges it with `path`, and `path`'s old version becomes the spare.
    pub fn file_over_spare(
        &mut self,
        path: &Path,
        contents: &[u8],
        mode: u32,
        spares: &Spares,
    ) -> Result<(), SinkError> {
        if spares.covers(path)
            && let Some(staged) = crate::spare::stage(path, contents, mode)?
        {
            self.add(staged);
            return Ok(());
        }
        self.file(path, contents, mode)
    }

    fn add(&mut self, staged: Staged) {
        // Its device, read from the open file, tells the commit which file system to sync
        // without a `stat` of each directory there.
        let dev = staged.dev;
        if !self.systems.iter().any(|(d, _)| *d == dev) {
            self.systems.push((dev, parent(&staged.tmp)));
        }
        self.files.push(staged);
    }

    /// The first file this replacement places: the one its errors name.
    fn first(&self) -> PathBuf {
        self.files
            .first()
            .map(|f| f.dest.clone())
            .unwrap_or_default()
    }

    /// Step 3 for this replacement: rename its files in order, stopping at a failure.
    fn place(self) -> Result<(), SinkError> {
        // On a failure the files not yet renamed are dropped: their temporaries go.
        for staged in self.files {
            let placed = if staged.exchange {
                crate::spare::exchange(&staged.tmp, &staged.dest)
            } else {
                std::fs::rename(&staged.tmp, &staged.dest)
            };
            staged.settle(placed)?;
        }
        Ok(())
    }
}

/// The error of a replacement whose first file is `path` when syncing the file system of
/// `dir` failed.
fn unsynced(path: PathBuf, dir: &Path, error: &std::io::Error) -> SinkError {
    SinkError::Sync {
        path,
        dir: dir.to_path_buf(),
        source: copy_io(error),
    }
}

/// Place every replacement durably (steps 2 to 4 above). The results are in the order of
/// `replacements`; one replacement's failure never stops another's.
pub fn commit(replacements: Vec<Replacement>) -> Vec<Result<(), SinkError>> {
    let mut committer = Committer::default();
    let first = committer.commit(replacements.into_iter().enumerate().collect());
    debug_assert!(first.is_empty());
    let mut results = committer.finish();
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Groups of replacements committed one after another, each `syncfs` serving two groups:
/// it makes the renames of the group before it durable (that group's step 4) and the
/// contents of the group after it (that group's step 2). A pass that commits group after
/// group so pays one sync per group, not two.
///
/// Each replacement carries a tag `T` (whom to answer); its result comes back from the
/// [`commit`](Committer::commit) after the one that renamed it, or from
/// [`finish`](Committer::finish).
pub struct Committer<T> {
    systems: FileSystems,
    /// Renamed, not yet known to be durable: the tag, and the first file (named should
    /// the next sync fail) or why the replacement failed.
    renamed: Vec<(T, Result<PathBuf, SinkError>)>,
}

impl<T> Default for Committer<T> {
    fn default() -> Self {
        Committer {
            systems: FileSystems::default(),
            renamed: Vec::new(),
        }
    }
}

impl<T: Send> Committer<T> {
    /// Whether a group is renamed and waits for [`finish`](Committer::finish) (or the next
    /// commit) to be durable.
    pub fn pending(&self) -> bool {
        !self.renamed.is_empty()
    }

    /// Sync, which completes the group renamed before (returned) and makes `group`'s
    /// contents durable; then rename `group`.
    pub fn commit(&mut self, group: Vec<(T, Replacement)>) -> Vec<(T, Result<(), SinkError>)> {
        // A replacement whose directory cannot be opened cannot be synced: never renamed.
        let ready: Vec<(T, Result<Replacement, SinkError>)> = group
            .into_iter()
            .map(|(tag, r)| {
                let added = r
                    .systems
                    .iter()
                    .try_for_each(|(dev, dir)| self.systems.add(*dev, dir));
                match added {
                    Ok(()) => (tag, Ok(r)),
                    Err(e) => (tag, Err(explain(&r.first(), e))),
                }
            })
            .collect();
        let synced = self.systems.sync();
        let done = self.settle(&synced);
        match synced {
            Ok(()) => {
                self.renamed = place_all(ready);
            }
            // Nothing of `group` is renamed: each file keeps its old version; the
            // temporaries go.
            Err((dir, e)) => {
                self.renamed = ready
                    .into_iter()
                    .map(|(tag, r)| match r {
                        Ok(r) => (tag, Err(unsynced(r.first(), &dir, &e))),
                        Err(failed) => (tag, Err(failed)),
                    })
                    .collect();
            }
        }
        done
    }

    /// Sync once more: the results of the group renamed last.
    pub fn finish(&mut self) -> Vec<(T, Result<(), SinkError>)> {
        if self.renamed.is_empty() {
            return Vec::new();
        }
        let synced = self.systems.sync();
        self.settle(&synced)
    }

    /// The renamed group's results after `synced`: a rename not known to be durable is
    /// reported as a failure.
    fn settle(
        &mut self,
        synced: &Result<(), (PathBuf, std::io::Error)>,
    ) -> Vec<(T, Result<(), SinkError>)> {
        std::mem::take(&mut self.renamed)
            .into_iter()
            .map(|(tag, renamed)| match (synced, renamed) {
                (Err((dir, e)), Ok(first)) => (tag, Err(unsynced(first, dir, e))),
                (_, renamed) => (tag, renamed.map(drop)),
            })
            .collect()
    }
}

/// Threads that rename at once. Staged beside their files, replacements in different
/// directories share no lock, and a rename that frees the old file's blocks may wait for
/// the device (ext4 without a journal discards them at once).
const RENAME_THREADS: usize = 4;

/// Fewer replacements than this per thread are renamed on the calling thread.
const RENAMES_PER_THREAD: usize = 64;

/// Step 3 for a group: each replacement's files in order, replacements on up to
/// [`RENAME_THREADS`] threads; the results in the group's order.
fn place_all<T: Send>(
    ready: Vec<(T, Result<Replacement, SinkError>)>,
) -> Vec<(T, Result<PathBuf, SinkError>)> {
    let place = |(tag, r): (T, Result<Replacement, SinkError>)| {
        let placed = r.and_then(|r| {
            let first = r.first();
            r.place().map(|()| first)
        });
        (tag, placed)
    };
    let threads = RENAME_THREADS.min(ready.len() / RENAMES_PER_THREAD);
    if threads <= 1 {
        return ready.into_iter().map(place).collect();
    }
    let per_thread = ready.len().div_ceil(threads);
    let mut parts = Vec::with_capacity(threads);
    let mut rest = ready;
    while rest.len() > per_thread {
        let tail = rest.split_off(per_thread);
        parts.push(rest);
        rest = tail;
    }
    parts.push(rest);
    std::thread::scope(|scope| {
        let running: Vec<_> = parts
            .into_iter()
            .map(|part| scope.spawn(move || part.into_iter().map(place).collect::<Vec<_>>()))
            .collect();
        running
            .into_iter()
            .flat_map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// One open directory on each file system that a commit writes to.
#[derive(Default)]
struct FileSystems {
    open: Vec<(u64, PathBuf, std::fs::File)>,
}

impl FileSystems {
    /// Note the file system of device `dev`, opening `dir` on it the first time it is seen.
    fn add(&mut self, dev: u64, dir: &Path) -> std::io::Result<()> {
        if self.open.iter().any(|(d, ..)| *d == dev) {
            return Ok(());
        }
        let file = std::fs::File::open(dir)?;
        self.open.push((dev, dir.to_path_buf(), file));
        Ok(())
    }

    fn sync(&self) -> Result<(), (PathBuf, std::io::Error)> {
        for (_, dir, file) in &self.open {
            // SAFETY: `file` is an open descriptor for the whole call; syncfs only reads it.
            if unsafe { libc::syncfs(file.as_raw_fd()) } != 0 {
                let e = std::io::Error::last_os_error();
                // An exchange may not be durable now: its spare may still be on disk as
                // the file itself.
                crate::spare::distrust();
                return Err((dir.clone(), e));
            }
        }
        Ok(())
    }
}

/// The same error again, for each replacement that reports it.
fn copy_io(e: &std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::new(e.kind(), e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn staged_files_change_nothing_until_the_commit_places_them_all() {
        let root = tempfile::tempdir().unwrap();
        let mut batch = Vec::new();
        for user in ["alice", "bob"] {
            let dir = root.path().join(user);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("box.use"), "old use").unwrap();
            std::fs::write(dir.join("box.top"), "old top").unwrap();
            let mut r = Replacement::new();
            r.file(
                &dir.join("box.use"),
                format!("{user} use").as_bytes(),
                0o400,
            )
            .unwrap();
            r.file(
                &dir.join("box.top"),
                format!("{user} top").as_bytes(),
                0o400,
            )
            .unwrap();
            batch.push(r);
        }
        // Staged: the old files are untouched, their temporaries beside them.
        let alice = root.path().join("alice");
        assert_eq!(
            std::fs::read_to_string(alice.join("box.top")).unwrap(),
            "old top"
        );
        assert_eq!(names(&alice).len(), 4);

        let results = commit(batch);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        for user in ["alice", "bob"] {
            let dir = root.path().join(user);
            assert_eq!(
                std::fs::read_to_string(dir.join("box.use")).unwrap(),
                format!("{user} use")
            );
            assert_eq!(
                std::fs::read_to_string(dir.join("box.top")).unwrap(),
                format!("{user} top")
            );
            assert_eq!(mode(&dir.join("box.top")), 0o400);
            assert_eq!(
                names(&dir),
                ["box.top", "box.use"],
                "no temporary file is left"
            );
        }
    }

    #[test]
    fn a_failed_rename_stops_its_own_replacement_and_no_other() {
        let root = tempfile::tempdir().unwrap();
        let good = root.path().join("good");
        let bad = root.path().join("bad");
        for d in [&good, &bad] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("a.use"), "old").unwrap();
            std::fs::write(d.join("a.top"), "old").unwrap();
        }
        let mut first = Replacement::new();
        first.file(&bad.join("a.use"), b"new", 0o600).unwrap();
        first.file(&bad.join("a.top"), b"new", 0o600).unwrap();
        let mut second = Replacement::new();
        second.file(&good.join("a.use"), b"new", 0o600).unwrap();
        second.file(&good.join("a.top"), b"new", 0o600).unwrap();
        // `bad/a.use` becomes a non-empty directory: a file cannot be renamed over it.
        std::fs::remove_file(bad.join("a.use")).unwrap();
        std::fs::create_dir_all(bad.join("a.use/x")).unwrap();

        let results = commit(vec![first, second]);
        let err = results[0].as_ref().unwrap_err();
        assert!(matches!(err, SinkError::Write { .. }), "{err}");
        assert!(err.to_string().contains("a.use"), "{err}");
        // The file after the failed one keeps its old contents: a `.top` never runs ahead
        // of its `.use`.
        assert_eq!(std::fs::read_to_string(bad.join("a.top")).unwrap(), "old");
        assert_eq!(names(&bad), ["a.top", "a.use"], "temporary files removed");
        assert!(results[1].is_ok());
        assert_eq!(std::fs::read_to_string(good.join("a.top")).unwrap(), "new");
        assert_eq!(names(&good), ["a.top", "a.use"]);
    }

    #[test]
    fn a_large_commit_answers_each_replacement_in_the_order_given() {
        let root = tempfile::tempdir().unwrap();
        let count = RENAME_THREADS * RENAMES_PER_THREAD + 7;
        let mut batch = Vec::new();
        for i in 0..count {
            let dir = root.path().join(format!("u{i}"));
            std::fs::create_dir(&dir).unwrap();
            let mut r = Replacement::new();
            r.file(&dir.join("f"), format!("{i}").as_bytes(), 0o600)
                .unwrap();
            batch.push(r);
        }
        // Every 50th directory is gone by the commit: only those report an error.
        for i in (0..count).step_by(50) {
            let dir = root.path().join(format!("u{i}"));
            std::fs::remove_dir_all(&dir).unwrap();
        }
        let results = commit(batch);
        assert_eq!(results.len(), count);
        for (i, result) in results.iter().enumerate() {
            let dir = root.path().join(format!("u{i}"));
            if i % 50 == 0 {
                assert!(
                    matches!(result, Err(SinkError::DirMissing(d)) if d == &dir),
                    "{i}"
                );
            } else {
                assert!(result.is_ok(), "{i}: {result:?}");
                assert_eq!(
                    std::fs::read_to_string(dir.join("f")).unwrap(),
                    i.to_string()
                );
            }
        }
    }

    #[test]
    fn a_committer_answers_each_group_after_the_sync_that_follows_its_renames() {
        let root = tempfile::tempdir().unwrap();
        let stage = |name: &str| {
            let mut r = Replacement::new();
            r.file(&root.path().join(name), name.as_bytes(), 0o600)
                .unwrap();
            r
        };
        let mut committer = Committer::default();
        assert!(!committer.pending());
        let before = committer.commit(vec![("a", stage("a")), ("b", stage("b"))]);
        assert!(before.is_empty(), "nothing was renamed before");
        // Renamed, so readers see the new files, but not yet answered.
        assert_eq!(std::fs::read_to_string(root.path().join("a")).unwrap(), "a");
        assert!(committer.pending());
        let done = committer.commit(vec![("c", stage("c"))]);
        let tags: Vec<_> = done.iter().map(|(t, r)| (*t, r.is_ok())).collect();
        assert_eq!(tags, [("a", true), ("b", true)]);
        let done = committer.finish();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].0, "c");
        assert!(!committer.pending());
        assert!(committer.finish().is_empty());
        assert_eq!(names(root.path()), ["a", "b", "c"]);
    }

    #[test]
    fn a_replacement_dropped_uncommitted_leaves_nothing_behind() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("f"), "old").unwrap();
        let mut r = Replacement::new();
        r.file(&root.path().join("f"), b"new", 0o600).unwrap();
        assert_eq!(names(root.path()).len(), 2);
        drop(r);
        assert_eq!(names(root.path()), ["f"]);
        assert_eq!(
            std::fs::read_to_string(root.path().join("f")).unwrap(),
            "old"
        );
    }

    /// Replace `path` with `contents` over its spare, committed at once.
    fn place_over_spare(path: &Path, contents: &str, spares: &Spares) {
        let mut r = Replacement::new();
        r.file_over_spare(path, contents.as_bytes(), 0o600, spares)
            .unwrap();
        let results = commit(vec![r]);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(std::fs::read_to_string(path).unwrap(), contents);
        assert_eq!(mode(path), 0o600);
    }

    fn inode(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().ino()
    }

    /// Spares are written into only where the kernel grants leases (every local Linux file
    /// system); elsewhere the replacement falls back to new files, which other tests cover.
    fn leases_granted(dir: &Path) -> bool {
        let f = std::fs::File::create(dir.join("lease-probe")).unwrap();
        // Not `spare::no_reader`: a refusal there turns spares off for the whole test
        // process, which other tests here need on.
        // SAFETY: `f` is open for the whole call; F_SETLEASE takes an integer argument.
        let granted = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLEASE, libc::F_WRLCK) } == 0;
        drop(f);
        std::fs::remove_file(dir.join("lease-probe")).unwrap();
        if !granted {
            eprintln!("no leases on {}: spares are not tested here", dir.display());
        }
        granted
    }

    #[test]
    fn over_spares_a_file_and_its_previous_version_trade_places_and_no_file_is_made_after_the_first()
     {
        let root = tempfile::tempdir().unwrap();
        if !leases_granted(root.path()) {
            return;
        }
        let spares = Spares::try_lock(root.path()).unwrap().unwrap();
        let path = root.path().join("box.use");
        let spare = crate::spare::spare_path(&path);
        std::fs::write(&path, "v1").unwrap();
        let first = inode(&path);

        place_over_spare(&path, "a much longer second version", &spares);
        assert_eq!(std::fs::read_to_string(&spare).unwrap(), "v1");
        assert_eq!(inode(&spare), first, "the old version became the spare");
        let second = inode(&path);

        // Written into the first file's inode, cut to its new length, traded back.
        place_over_spare(&path, "v3", &spares);
        assert_eq!(
            std::fs::read_to_string(&spare).unwrap(),
            "a much longer second version"
        );
        assert_eq!((inode(&path), inode(&spare)), (first, second));
        place_over_spare(&path, "v4", &spares);
        assert_eq!((inode(&path), inode(&spare)), (second, first));
        assert_eq!(names(root.path()), [".box.use.spare", "box.use"]);
    }

    #[test]
    fn a_reader_still_holding_an_old_version_keeps_it_whole() {
        let root = tempfile::tempdir().unwrap();
        if !leases_granted(root.path()) {
            return;
        }
        let spares = Spares::try_lock(root.path()).unwrap().unwrap();
        let path = root.path().join("box.use");
        std::fs::write(&path, "v1").unwrap();
        let mut reader = std::fs::File::open(&path).unwrap();
        place_over_spare(&path, "v2", &spares);
        // v1 is the spare now, and still open: v3 goes to a new file instead.
        place_over_spare(&path, "v3", &spares);
        let mut held = String::new();
        std::io::Read::read_to_string(&mut reader, &mut held).unwrap();
        assert_eq!(held, "v1");
        let spare = crate::spare::spare_path(&path);
        assert_eq!(std::fs::read_to_string(&spare).unwrap(), "v1");
        // Once the reader is gone, its inode is written over again.
        let v1 = inode(&spare);
        drop(reader);
        place_over_spare(&path, "v4", &spares);
        assert_eq!(inode(&path), v1);
    }

    #[test]
    fn a_file_not_there_yet_or_outside_the_held_directory_is_placed_without_a_spare() {
        let held = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let spares = Spares::try_lock(held.path()).unwrap().unwrap();
        let new = held.path().join("box.use");
        place_over_spare(&new, "first", &spares);
        assert_eq!(names(held.path()), ["box.use"]);
        let outside = other.path().join("box.use");
        std::fs::write(&outside, "old").unwrap();
        place_over_spare(&outside, "new", &spares);
        assert_eq!(names(other.path()), ["box.use"]);
    }

    #[test]
    fn a_spares_name_taken_by_a_directory_or_a_symlink_falls_back_to_a_new_file() {
        let root = tempfile::tempdir().unwrap();
        let spares = Spares::try_lock(root.path()).unwrap().unwrap();
        let (a, b) = (root.path().join("a.use"), root.path().join("b.use"));
        std::fs::write(&a, "old").unwrap();
        std::fs::write(&b, "old").unwrap();
        std::fs::create_dir(crate::spare::spare_path(&a)).unwrap();
        let target = root.path().join("elsewhere");
        std::fs::write(&target, "not a spare").unwrap();
        std::os::unix::fs::symlink(&target, crate::spare::spare_path(&b)).unwrap();
        place_over_spare(&a, "new a", &spares);
        place_over_spare(&b, "new b", &spares);
        // The directory is left for whoever made it; the symlink goes, never followed.
        assert!(crate::spare::spare_path(&a).is_dir());
        assert!(!crate::spare::spare_path(&b).exists());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "not a spare");
    }

    #[test]
    fn staging_into_a_missing_directory_is_refused_at_once() {
        let root = tempfile::tempdir().unwrap();
        let mut r = Replacement::new();
        let err = r
            .file(&root.path().join("nope/f"), b"x", 0o600)
            .unwrap_err();
        assert!(matches!(err, SinkError::DirMissing(_)), "{err}");
        assert!(
            commit(vec![r]).iter().all(Result::is_ok),
            "an empty replacement is done"
        );
    }

    #[test]
    fn a_directory_removed_before_the_commit_is_named_and_its_temporary_goes() {
        let root = tempfile::tempdir().unwrap();
        let user = root.path().join("alice");
        std::fs::create_dir(&user).unwrap();
        let mut r = Replacement::new();
        r.file(&user.join("box.use"), b"new", 0o400).unwrap();
        std::fs::remove_dir_all(&user).unwrap();
        let results = commit(vec![r]);
        let err = results[0].as_ref().unwrap_err();
        assert!(
            matches!(err, SinkError::DirMissing(d) if d == &user),
            "{err}"
        );
        assert!(names(root.path()).is_empty(), "nothing made again");
    }
}
