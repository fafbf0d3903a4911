//! Spare files: a batch-replaced file's previous version, kept beside it as `.NAME.spare`
//! and written over by its next replacement instead of a new file.
//!
//! Why: replacing a file by a rename creates an inode for the new version and frees the
//! old one with its blocks (and, on a file system mounted with `discard`, discards them).
//! For a pass that replaces thousands of small files that is most of its kernel time. An
//! exchange (`renameat2(RENAME_EXCHANGE)`) puts the new version in place and the old one at
//! the spare's name in one atomic step; the next replacement writes into that inode. Once
//! every file has its spare, a replacement neither creates nor frees anything.
//!
//! A spare is written over only when that cannot be seen (otherwise the replacement takes a
//! new temporary file and a rename, as [`file`](crate::file) does):
//! - no other writer: a replacement uses spares only while its writer holds [`Spares`], an
//!   exclusive `flock` on the directory it writes under, until its exchange is durable;
//! - no reader of the old version: a write lease, which the kernel grants only when no
//!   other descriptor of the file is open, is taken and let go before writing;
//! - the exchange that made it a spare is durable: a writer writes into a spare only after
//!   the sync that followed that exchange succeeded, and after a failed sync no process
//!   writes into a spare again ([`distrust`]);
//! - it is the writer's own: a regular file with one link, owned by the writer, which the
//!   writer can open for writing, for a file only its owner may read or write (its group,
//!   which a set-group-ID directory gives, grants nothing then).
//!
//! The price: each file's previous version stays beside it (one more inode and block per
//! file), with its owner and mode. [`orphan_of`] names a spare whose file is gone, for the
//! writer to remove.

use crate::file::{SinkError, Staged, explain, fill, hidden_beside};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a sync failed: an exchange may not be durable, so its spare may still be the
/// file on disk. Writing into it could tear that file after a crash.
static DISTRUSTED: AtomicBool = AtomicBool::new(false);

/// Set once the kernel refused a lease as unsupported: nothing tells then whether a reader
/// still holds a spare.
static NO_LEASES: AtomicBool = AtomicBool::new(false);

/// No spare is written into again by this process (a sync failed).
pub(crate) fn distrust() {
    DISTRUSTED.store(true, Ordering::Relaxed);
}

/// The right to write into spares under a directory: an exclusive `flock` on it, let go
/// when dropped. Another process holding it (a second credmon) keeps this one to new
/// temporary files.
pub struct Spares {
    root: PathBuf,
    _lock: std::fs::File,
}

impl Spares {
    /// Lock `root` for spares, or `None` when another process holds it.
    pub fn try_lock(root: &Path) -> std::io::Result<Option<Spares>> {
        let dir = std::fs::File::open(root)?;
        // SAFETY: `dir` is an open descriptor for the whole call; flock only reads it.
        if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => Ok(None),
                _ => Err(e),
            };
        }
        Ok(Some(Spares {
            root: root.to_path_buf(),
            _lock: dir,
        }))
    }

    /// Whether `path` is under the locked directory.
    pub(crate) fn covers(&self, path: &Path) -> bool {
        path.starts_with(&self.root)
    }
}

/// `path`'s spare: `.NAME.spare` beside it.
pub fn spare_path(path: &Path) -> PathBuf {
    hidden_beside(path, ".spare")
}

/// For a spare's file name, the name of the file it is the spare of.
pub fn spare_of(name: &str) -> Option<&str> {
    let inner = name.strip_prefix('.')?.strip_suffix(".spare")?;
    (!inner.is_empty()).then_some(inner)
}

/// For a directory's file names, each spare whose file is gone (the CredD deleted the
/// credential): a stale secret that nothing will replace.
pub fn orphan_of<'a>(names: &'a [String]) -> impl Iterator<Item = &'a str> + 'a {
    names.iter().filter_map(move |n| {
        let of = spare_of(n)?;
        (!names.iter().any(|m| m == of)).then_some(n.as_str())
    })
}

/// Write `contents` with exactly `mode` into `path`'s spare, ready for an exchange; `None`
/// when the spare may not be written into (see the module's rules): the caller stages a new
/// temporary file instead.
pub(crate) fn stage(path: &Path, contents: &[u8], mode: u32) -> Result<Option<Staged>, SinkError> {
    // A mode that lets the group in would make the spare's group matter, and a
    // set-group-ID directory gives a new file another group than the writer's.
    if mode & 0o077 != 0 || DISTRUSTED.load(Ordering::Relaxed) || NO_LEASES.load(Ordering::Relaxed)
    {
        return Ok(None);
    }
    let uid = crate::uid();
    // A file without its owner's write bit opens for writing only with root's override.
    if mode & 0o200 == 0 && uid != 0 {
        return Ok(None);
    }
    let spare = spare_path(path);
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&spare);
    // Whatever keeps the spare from opening (a missing directory, another owner's spare, a
    // directory at its name) leaves the replacement to a new temporary file, which reports
    // what is really wrong.
    let mut file = match opened {
        Ok(f) => f,
        Err(e) => {
            if e.raw_os_error() == Some(libc::ELOOP) {
                // A symlink at the spare's name is nobody's spare.
                let _ = std::fs::remove_file(&spare);
            }
            return Ok(None);
        }
    };
    let meta = file.metadata().map_err(|e| explain(path, e))?;
    if !meta.is_file() || meta.nlink() != 1 || meta.uid() != uid {
        drop(file);
        let _ = std::fs::remove_file(&spare);
        return Ok(None);
    }
    if !no_reader(&file) {
        return Ok(None);
    }
    // From here on a failure removes the spare (Staged's drop): it holds no version then.
    let staged = Staged {
        tmp: spare,
        dest: path.to_path_buf(),
        dev: meta.dev(),
        exchange: true,
    };
    match fill(&mut file, &meta, contents, mode) {
        Ok(()) => Ok(Some(staged)),
        Err(source) => Err(staged.failed(source)),
    }
}

/// Whether no other descriptor of `file` is open: the kernel grants a write lease only
/// then. The lease is let go at once; a reader opening the spare by name afterwards is no
/// reader of the old version.
fn no_reader(file: &std::fs::File) -> bool {
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is open for the whole call; F_SETLEASE takes an integer argument.
    if unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_WRLCK) } != 0 {
        let e = std::io::Error::last_os_error();
        if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) {
            NO_LEASES.store(true, Ordering::Relaxed);
        }
        return false;
    }
    // SAFETY: as above.
    unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) };
    true
}

/// Put the spare `tmp` in place at `dest` and the file there at the spare's name, in one
/// step; a file not there yet is simply renamed into place.
pub(crate) fn exchange(tmp: &Path, dest: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
    };
    let (from, to) = (c(tmp)?, c(dest)?);
    // SAFETY: both are NUL-terminated strings alive for the whole call.
    let swapped = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if swapped == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        // The file is not there yet (ENOENT), or the file system cannot exchange (EINVAL):
        // a rename places it all the same. A spare gone missing fails the rename too.
        Some(libc::ENOENT | libc::EINVAL) => std::fs::rename(tmp, dest),
        _ => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spare_is_named_after_its_file_and_found_orphaned_once_the_file_is_gone() {
        assert_eq!(
            spare_path(Path::new("/d/alice/box.use")),
            Path::new("/d/alice/.box.use.spare")
        );
        assert_eq!(spare_of(".box.use.spare"), Some("box.use"));
        for other in [
            "box.use",
            ".spare",
            "..spare",
            ".box.use.1.2.tmp",
            "box.use.spare",
        ] {
            assert_eq!(spare_of(other), None, "{other}");
        }
        let names: Vec<String> = ["box.top", ".box.top.spare", ".box.use.spare", "box.meta"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(orphan_of(&names).collect::<Vec<_>>(), [".box.use.spare"]);
    }

    #[test]
    fn only_one_process_at_a_time_holds_a_directory_for_spares() {
        let dir = tempfile::tempdir().unwrap();
        let held = Spares::try_lock(dir.path())
            .unwrap()
            .expect("free at first");
        // flock locks belong to the open file description: a second open conflicts, as a
        // second process's would.
        assert!(Spares::try_lock(dir.path()).unwrap().is_none());
        drop(held);
        assert!(Spares::try_lock(dir.path()).unwrap().is_some());
    }

    #[test]
    fn a_spare_that_a_reader_still_holds_is_not_written_into() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("box.use");
        std::fs::write(spare_path(&path), "old version").unwrap();
        let reader = std::fs::File::open(spare_path(&path)).unwrap();
        assert!(stage(&path, b"new", 0o600).unwrap().is_none());
        assert_eq!(
            std::fs::read_to_string(spare_path(&path)).unwrap(),
            "old version"
        );
        drop(reader);
        if NO_LEASES.load(Ordering::Relaxed) {
            return; // this file system grants no leases: spares are never written into
        }
        let staged = stage(&path, b"new", 0o600).unwrap().expect("no reader now");
        assert_eq!(std::fs::read_to_string(&staged.tmp).unwrap(), "new");
    }
}
