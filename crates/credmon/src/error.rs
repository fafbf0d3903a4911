//! Why a credential could not be renewed, named so its owner can act.

use std::path::PathBuf;

/// A credential file that cannot be used as it is; each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum CredFileError {
    #[error("{} is a symlink; not followed", path.display())]
    Symlink { path: PathBuf },
    #[error("{} is not a regular file", path.display())]
    NotRegular { path: PathBuf },
    #[error(
        "{} is owned by uid {uid}, not root, this credmon or the directory's owner",
        path.display()
    )]
    Owner { path: PathBuf, uid: u32 },
    #[error(
        "{} is readable by others (mode {mode:04o}); run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("{} {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a JSON object", path.display())]
    NotObject { path: PathBuf },
    #[error("{} is not valid JSON ({reason})", path.display())]
    BadJson { path: PathBuf, reason: String },
    #[error("{} holds no refresh token", path.display())]
    NoRefreshToken { path: PathBuf },
    #[error("{} has no {field}", path.display())]
    MissingField { path: PathBuf, field: &'static str },
}

/// Why one credential failed in a pass.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    File(#[from] CredFileError),
    #[error(transparent)]
    Private(#[from] credkeeper_sink::perm::PermError),
    #[error(transparent)]
    Oidc(#[from] credkeeper_oidc::OidcError),
    #[error(transparent)]
    Issuer(#[from] credkeeper_issuer::IssuerError),
    #[error(transparent)]
    Write(#[from] credkeeper_sink::SinkError),
    #[error("the pass stopped committing files before this credential's were placed")]
    Uncommitted,
}
