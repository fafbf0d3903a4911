//! credkeeper-cri: a CRI proxy between kubelet and containerd.
//!
//! What it is for: kubelet sends each image pull's registry credential (from an image
//! pull secret) in the CRI `PullImage` call. The proxy forwards every call, of the
//! ImageService and the RuntimeService alike, byte for byte, and answers with
//! containerd's answer, status codes and messages untouched ([`proxy`]). From each
//! successful `PullImage` it keeps the credential in memory, keyed by registry host and
//! repository, with an expiry, and forgets it on `RemoveImage` ([`captured`]); it offers
//! them to credkeeper's keychain over a private socket ([`keychain`]) — so a lazily pulling
//! snapshotter or a later pull by another tool finds the credential kubelet had.
//!
//! What it is not: a CRI implementation. It decodes only the two messages it reads
//! ([`wire`]) and never writes a credential to disk or to a log.

pub mod captured;
mod client_io;
mod hpack;
pub mod keychain;
pub mod proxy;
pub mod wire;

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("{what} {path}: {source}")]
    Socket {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("upstream {path}: {reason}")]
    Upstream {
        path: std::path::PathBuf,
        reason: String,
    },
}

/// A unix socket only its owner may use (mode 0600), replacing a stale one.
pub(crate) fn bind_private(
    path: &std::path::Path,
    what: &'static str,
) -> Result<tokio::net::UnixListener, CriError> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |source| CriError::Socket {
        what,
        path: path.to_path_buf(),
        source,
    };
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path).map_err(fail)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    Ok(listener)
}
