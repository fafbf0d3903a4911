//! Refuse secret files that others can read, the way ssh refuses a private key.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A secret file that cannot be trusted. The message says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum PermError {
    #[error("{what} {path} is readable by others (mode {mode:04o}); run `chmod 600 {path}`")]
    TooOpen {
        what: &'static str,
        path: PathBuf,
        mode: u32,
    },
    #[error("{what} {path} is not a regular file")]
    NotAFile { what: &'static str, path: PathBuf },
    #[error("cannot read {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Check that `path` is a regular file that neither group nor others may access.
/// `what` names the file in the message ("client-secret file", "keytab").
pub fn check_private(path: &Path, what: &'static str) -> Result<(), PermError> {
    let meta = std::fs::metadata(path).map_err(|source| PermError::Io {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(PermError::NotAFile {
            what,
            path: path.to_path_buf(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(PermError::TooOpen {
            what,
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Read a private file after [`check_private`], trimming surrounding whitespace.
pub fn read_private(path: &Path, what: &'static str) -> Result<String, PermError> {
    check_private(path, what)?;
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| PermError::Io {
            what,
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_others_can_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        std::fs::write(&f, "s3cret\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_private(&f, "client-secret file")
            .unwrap_err()
            .to_string();
        assert!(err.contains("readable by others (mode 0644)"), "{err}");
        assert!(err.contains(&format!("chmod 600 {}", f.display())), "{err}");
        assert!(!err.contains("s3cret"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_private(&f, "client-secret file").unwrap(), "s3cret");
    }
}
