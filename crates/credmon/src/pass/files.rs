//! Reading the credential directory: the names HTCondor allows, and files read only when
//! they are plain (no symlink followed) and, for secrets, private.

use crate::error::CredFileError;
use serde_json::{Map, Value};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// HTCondor's `okay_for_oauth_filename` characters; never a leading dot.
pub(super) fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-+=_.".contains(c))
}

pub(super) fn is_key_file(name: &str) -> bool {
    name.len() == 64
        && name
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// Read a file without following a symlink, refusing anything but a regular file; with
/// the metadata of the file read (its times without a `stat` of their own).
pub(super) fn read_plain(path: &Path) -> Result<(Vec<u8>, std::fs::Metadata), CredFileError> {
    read_checked(path, |_| Ok(()))
}

/// [`read_plain`] for a secret file (`.top`, `.meta`): refused unless private and owned
/// by root, this process or the owner of its user directory `dir` ([`check_secret_file`]'s
/// rule), checked on the file actually opened. With the file's modification time.
pub(super) fn read_secret_json(
    path: &Path,
    dir: &Path,
) -> Result<(Map<String, Value>, i64), CredFileError> {
    let (bytes, meta) = read_checked(path, |meta| check_secret_meta(path, meta, dir))?;
    Ok((parse_json_object(path, &bytes)?, meta.mtime()))
}

/// The file's contents and the metadata of the file read (`fstat` of the open file).
fn read_checked(
    path: &Path,
    check: impl FnOnce(&std::fs::Metadata) -> Result<(), CredFileError>,
) -> Result<(Vec<u8>, std::fs::Metadata), CredFileError> {
    let io = |source| CredFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => CredFileError::Symlink {
                path: path.to_path_buf(),
            },
            _ => io(e),
        })?;
    let meta = f.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(CredFileError::NotRegular {
            path: path.to_path_buf(),
        });
    }
    check(&meta)?;
    let bytes = read_regular(&f, meta.len() as usize).map_err(io)?;
    Ok((bytes, meta))
}

/// The contents of the regular file `f`, about `size` bytes long. Sized from metadata at
/// hand: `File::read_to_end` would ask the kernel for the size again (a statx and an
/// lseek), then read once more to see the end. A read of a regular file that comes back
/// short has reached its end, so a file that did not grow takes one `read`.
fn read_regular(mut f: &std::fs::File, size: usize) -> std::io::Result<Vec<u8>> {
    let mut bytes = vec![0; size + 1];
    let mut filled = 0;
    loop {
        match f.read(&mut bytes[filled..]) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                if filled < bytes.len() {
                    break;
                }
                // It grew since its size was read: read on until the end.
                bytes.resize(bytes.len() * 2, 0);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    bytes.truncate(filled);
    Ok(bytes)
}

/// A secret file (`.top`, `.meta`) must be owned by root, this process or the owner of
/// its user directory `dir`, and be private.
pub(super) fn check_secret_file(path: &Path, dir: &Path) -> Result<(), CredFileError> {
    let meta = std::fs::symlink_metadata(path).map_err(|source| CredFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.file_type().is_symlink() {
        return Err(CredFileError::Symlink {
            path: path.to_path_buf(),
        });
    }
    check_secret_meta(path, &meta, dir)
}

fn check_secret_meta(
    path: &Path,
    meta: &std::fs::Metadata,
    dir: &Path,
) -> Result<(), CredFileError> {
    let owner = meta.uid();
    // The CredD writes as root: the directory's owner is asked only for another owner.
    let allowed = owner == 0
        || owner == credkeeper_sink::uid()
        || std::fs::symlink_metadata(dir).is_ok_and(|d| d.uid() == owner);
    if !allowed {
        return Err(CredFileError::Owner {
            path: path.to_path_buf(),
            uid: owner,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CredFileError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// A JSON object read with [`read_plain`], and the modification time of the file read:
/// what a later [`mtime`] compares with, without a `stat` of its own.
pub(super) fn read_json_object_stamped(
    path: &Path,
) -> (Result<Map<String, Value>, CredFileError>, Option<i64>) {
    match read_plain(path) {
        Ok((bytes, meta)) => (parse_json_object(path, &bytes), Some(meta.mtime())),
        Err(e) => (Err(e), None),
    }
}

fn parse_json_object(path: &Path, bytes: &[u8]) -> Result<Map<String, Value>, CredFileError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(CredFileError::NotObject {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(CredFileError::BadJson {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

pub(crate) fn mtime(path: &Path) -> Option<i64> {
    std::fs::symlink_metadata(path).ok().map(|m| m.mtime())
}

/// Tells one version of a file from the next, even within the same second.
pub(super) fn fingerprint(path: &Path) -> Option<String> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| format!("{}:{}.{:09}", m.ino(), m.mtime(), m.mtime_nsec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_read_whole_whether_its_size_was_right_or_it_grew_or_shrank() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let contents: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &contents).unwrap();
        for size in [contents.len(), 0, 1, 4095, contents.len() + 7] {
            let f = std::fs::File::open(&path).unwrap();
            assert_eq!(read_regular(&f, size).unwrap(), contents, "size {size}");
        }
        std::fs::write(&path, b"").unwrap();
        let f = std::fs::File::open(&path).unwrap();
        assert!(read_regular(&f, 0).unwrap().is_empty());
    }
}
