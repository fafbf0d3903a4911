//! Where a token is, as WLCG Bearer Token Discovery defines it.

use crate::SinkError;
use crate::file::read;
use credkeeper_core::Secret;
use std::path::{Path, PathBuf};

/// Where a token was found when reading by discovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenLocation {
    /// The `BEARER_TOKEN` environment variable itself.
    Environment,
    File(PathBuf),
}

/// The effective user id, for the `bt_u<uid>` file names and ownership checks. Asked
/// once: credkeeper never changes its own (a task runs as another user only in its
/// child), and a credmon pass asks for every file it reads or stages.
pub fn uid() -> u32 {
    static UID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    // SAFETY: geteuid has no preconditions and cannot fail (POSIX).
    *UID.get_or_init(|| unsafe { libc::geteuid() })
}

/// The file a token is written to: `$BEARER_TOKEN_FILE`, else `$XDG_RUNTIME_DIR/bt_u<uid>`,
/// else `/tmp/bt_u<uid>`.
pub fn default_path() -> PathBuf {
    default_path_from(&|k| std::env::var_os(k))
}

fn default_path_from(env: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    if let Some(p) = env("BEARER_TOKEN_FILE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let name = format!("bt_u{}", uid());
    match env("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        Some(dir) => Path::new(&dir).join(name),
        None => Path::new("/tmp").join(name),
    }
}

/// Find a token to read, in WLCG discovery order: `$BEARER_TOKEN`, `$BEARER_TOKEN_FILE`,
/// `$XDG_RUNTIME_DIR/bt_u<uid>` if it exists, `/tmp/bt_u<uid>`.
pub fn discover() -> Result<(TokenLocation, Secret), SinkError> {
    if let Ok(token) = std::env::var("BEARER_TOKEN")
        && !token.trim().is_empty()
    {
        return Ok((TokenLocation::Environment, Secret::new(token.trim())));
    }
    let mut path = default_path();
    if std::env::var_os("BEARER_TOKEN_FILE").is_none_or(|p| p.is_empty()) && !path.exists() {
        path = Path::new("/tmp").join(format!("bt_u{}", uid()));
    }
    let token = read(&path)?;
    Ok((TokenLocation::File(path), token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn the_write_location_follows_wlcg_discovery() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let u = uid();
        assert_eq!(
            default_path_from(&env(&[
                ("BEARER_TOKEN_FILE", "/x/tok"),
                ("XDG_RUNTIME_DIR", "/run/u")
            ])),
            PathBuf::from("/x/tok")
        );
        assert_eq!(
            default_path_from(&env(&[("XDG_RUNTIME_DIR", "/run/u")])),
            PathBuf::from(format!("/run/u/bt_u{u}"))
        );
        assert_eq!(
            default_path_from(&env(&[])),
            PathBuf::from(format!("/tmp/bt_u{u}"))
        );
    }
}
