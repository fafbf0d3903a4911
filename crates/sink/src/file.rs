//! How files are replaced: a temporary file in the same directory, fsynced, given its mode
//! and renamed over the old one, so a reader sees either the old contents or the new ones,
//! never a partial or empty file. A token file holds the bare token and a newline.

use credkeeper_core::Secret;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("token file directory {0} does not exist")]
    DirMissing(PathBuf),
    #[error("{0} is not a directory")]
    NotADir(PathBuf),
    #[error("cannot write token file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make {path} durable: syncing the file system of {dir} failed: {source}")]
    Sync {
        path: PathBuf,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Read a token file, trimming the trailing newline.
pub fn read(path: &Path) -> Result<Secret, SinkError> {
    std::fs::read_to_string(path)
        .map(|s| Secret::new(s.trim()))
        .map_err(|source| SinkError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// The process that made the temporary file called `name` ([`temp_path_beside`]'s
/// `.<name>.<pid>.<n>.tmp`), or `None` when the name is not one of those. A temporary file
/// whose process is gone is what a crash left behind: it may hold a secret, and nothing
/// will ever rename it.
pub fn temp_file_owner(name: &str) -> Option<u32> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let mut parts = inner.rsplitn(3, '.');
    let counter = parts.next()?;
    let pid = parts.next()?;
    let original = parts.next()?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if original.is_empty() || !digits(counter) || !digits(pid) {
        return None;
    }
    pid.parse().ok()
}

/// A unique name for a temporary file in the same directory as `path`.
pub fn temp_path_beside(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tail = format!(
        ".{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    hidden_beside(path, &tail)
}

/// `.<name><tail>` beside `path`: a hidden file of the writer's own, named after the file.
pub(crate) fn hidden_beside(path: &Path, tail: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}{tail}"))
}

/// Write `token` and a newline to `path` atomically with mode 0600.
pub fn write_token(path: &Path, token: &Secret) -> Result<(), SinkError> {
    let mut contents = Vec::with_capacity(token.expose().len() + 1);
    contents.extend_from_slice(token.expose().as_bytes());
    contents.push(b'\n');
    let result = write_atomic(path, &contents, 0o600);
    zeroize_vec(&mut contents);
    result
}

fn zeroize_vec(v: &mut [u8]) {
    v.iter_mut().for_each(|b| *b = 0);
}

/// Replace `path` with `contents` so that readers never see anything in between.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), SinkError> {
    let (staged, file) = Staged::write(path, contents, mode)?;
    let finish = || -> std::io::Result<()> {
        file.sync_all()?;
        std::fs::rename(&staged.tmp, &staged.dest)?;
        // Make the rename itself durable.
        std::fs::File::open(parent(&staged.dest))?.sync_all()
    };
    let result = finish();
    staged.settle(result)
}

/// [`write_atomic`] with mode 0600 (exactly: the umask does not narrow it): a file only its
/// owner reads, such as what a task's run gets in its private directory.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), SinkError> {
    write_atomic(path, contents, 0o600)
}

pub(crate) fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Why `path` could not be written. A missing directory is looked for only once something
/// failed: a pass writing thousands of files does not pay a `stat` for each.
pub(crate) fn explain(path: &Path, source: std::io::Error) -> SinkError {
    if matches!(source.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) {
        let dir = parent(path);
        match std::fs::metadata(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return SinkError::DirMissing(dir);
            }
            Ok(m) if !m.is_dir() => return SinkError::NotADir(dir),
            _ => {}
        }
    }
    SinkError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// A file's new contents in a temporary file, not yet synced nor in place. Dropped
/// without being renamed, the temporary file is removed: nothing is left half-done.
pub(crate) struct Staged {
    pub(crate) tmp: PathBuf,
    pub(crate) dest: PathBuf,
    /// The device of the temporary file: the file system a batch commit syncs.
    pub(crate) dev: u64,
    /// `tmp` is `dest`'s spare, exchanged with it rather than renamed over it
    /// ([`spare`](crate::spare)).
    pub(crate) exchange: bool,
}

impl Staged {
    /// Write `contents` with exactly `mode` to a temporary file beside `path`; the file is
    /// returned still open, for a sync of it.
    pub(crate) fn write(
        path: &Path,
        contents: &[u8],
        mode: u32,
    ) -> Result<(Staged, std::fs::File), SinkError> {
        let tmp = temp_path_beside(path);
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp);
        let mut file = opened.map_err(|source| explain(path, source))?;
        // From here on a failure removes the temporary file (Staged's drop).
        let mut staged = Staged {
            tmp,
            dest: path.to_path_buf(),
            dev: 0,
            exchange: false,
        };
        let written = file
            .metadata()
            .and_then(|meta| fill(&mut file, &meta, contents, mode).map(|()| meta.dev()));
        match written {
            Ok(dev) => {
                staged.dev = dev;
                Ok((staged, file))
            }
            Err(source) => Err(staged.failed(source)),
        }
    }

    /// The error for this file; the temporary file goes (by drop).
    pub(crate) fn failed(self, source: std::io::Error) -> SinkError {
        explain(&self.dest, source)
    }

    /// Renamed into place: nothing to clean up any more.
    fn placed(mut self) {
        self.tmp = PathBuf::new();
    }

    pub(crate) fn settle(self, result: std::io::Result<()>) -> Result<(), SinkError> {
        match result {
            Ok(()) => {
                self.placed();
                Ok(())
            }
            Err(e) => Err(self.failed(e)),
        }
    }
}

/// Make `file` (open at its start, as `meta` found it) hold exactly `contents` with exactly
/// `mode`.
pub(crate) fn fill(
    file: &mut std::fs::File,
    meta: &std::fs::Metadata,
    contents: &[u8],
    mode: u32,
) -> std::io::Result<()> {
    // The umask may have narrowed the mode; make it exactly what was asked. Looked at
    // first: a `chmod` dirties the inode once more, a cost a pass pays per file.
    if meta.permissions().mode() & 0o7777 != mode {
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    file.write_all(contents)?;
    // A file written over (a spare) may have been longer.
    if meta.len() > contents.len() as u64 {
        file.set_len(contents.len() as u64)?;
    }
    Ok(())
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_is_the_token_and_a_newline_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tok");
        std::fs::write(&path, "old\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_token(&path, &Secret::new("abc.def.ghi")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "abc.def.ghi\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn a_file_gets_exactly_the_mode_asked_whether_or_not_the_umask_narrows_it() {
        let dir = tempfile::tempdir().unwrap();
        // 0666 is narrowed by any usual umask (022, 077), 0400 by none of them.
        for mode in [0o666, 0o640, 0o400] {
            let path = dir.path().join(format!("f{mode:o}"));
            write_atomic(&path, b"x", mode).unwrap();
            let got = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
            assert_eq!(got, mode, "{mode:o}");
        }
    }

    #[test]
    fn a_temporary_name_tells_the_process_that_made_it() {
        let tmp = temp_path_beside(Path::new("/d/box.top"));
        let name = tmp.file_name().unwrap().to_str().unwrap();
        assert_eq!(temp_file_owner(name), Some(std::process::id()));
        assert_eq!(temp_file_owner(".box.top.17.3.tmp"), Some(17));
        for other in [
            "box.top",
            ".box.top",
            "..1.2.tmp",
            ".box.top.x.3.tmp",
            ".a.1..tmp",
        ] {
            assert_eq!(temp_file_owner(other), None, "{other}");
        }
    }

    #[test]
    fn a_missing_directory_is_named_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope/tok");
        let err = write_token(&path, &Secret::new("t")).unwrap_err();
        assert!(matches!(err, SinkError::DirMissing(_)), "{err}");
        assert!(err.to_string().contains("nope"));
        let file_as_dir = dir.path().join("f");
        std::fs::write(&file_as_dir, "").unwrap();
        let err = write_token(&file_as_dir.join("tok"), &Secret::new("t")).unwrap_err();
        assert!(matches!(err, SinkError::NotADir(_)), "{err}");
    }
}
