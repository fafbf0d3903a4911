//! Keytabs are refused when others could read or change them, the way ssh refuses a key.

use crate::KerberosError;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The file behind `keytab` (a path or `FILE:path`), after checking that it exists, is a
/// regular file, is readable, and gives no access to others and no write to the group.
/// Group read stays allowed: a Kubernetes secret volume with `fsGroup` is how a non-root
/// container reads its keytab (mode 0440).
pub fn check_keytab(keytab: &Path) -> Result<PathBuf, KerberosError> {
    let raw = keytab.to_string_lossy();
    let path = PathBuf::from(raw.strip_prefix("FILE:").unwrap_or(&raw));
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KerberosError::NoKeytab { path });
        }
        Err(e) => {
            return Err(KerberosError::KeytabUnreadable {
                path,
                reason: e.to_string(),
            });
        }
    };
    if !meta.is_file() {
        return Err(KerberosError::KeytabNotAFile { path });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o027 != 0 {
        return Err(KerberosError::KeytabTooOpen { path, mode });
    }
    // Open it now: permission problems then say so, not "key table entry not found".
    if let Err(e) = std::fs::File::open(&path) {
        return Err(KerberosError::KeytabUnreadable {
            path,
            reason: e.to_string(),
        });
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keytab_with_mode(dir: &Path, mode: u32) -> PathBuf {
        let p = dir.join(format!("k{mode:o}.keytab"));
        std::fs::write(&p, b"\x05\x02").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn a_keytab_others_may_read_or_the_group_may_write_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o604, 0o660, 0o666] {
            let p = keytab_with_mode(dir.path(), mode);
            let err = check_keytab(&p).unwrap_err().to_string();
            assert!(err.contains(&format!("chmod 600 {}", p.display())), "{err}");
        }
        for mode in [0o600, 0o400, 0o440] {
            let p = keytab_with_mode(dir.path(), mode);
            assert_eq!(check_keytab(&p).unwrap(), p);
            let file_form = PathBuf::from(format!("FILE:{}", p.display()));
            assert_eq!(check_keytab(&file_form).unwrap(), p);
        }
    }

    #[test]
    fn a_missing_keytab_says_how_to_name_one() {
        let err = check_keytab(Path::new("/nonexistent/robot.keytab")).unwrap_err();
        assert!(matches!(err, KerberosError::NoKeytab { .. }));
        assert!(
            err.to_string().contains("-k/--keytab or KRB5_KTNAME"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            check_keytab(dir.path()).unwrap_err(),
            KerberosError::KeytabNotAFile { .. }
        ));
    }
}
