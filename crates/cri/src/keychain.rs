//! The captured credentials offered to credkeeper's keychain on a private unix socket
//! (mode 0600, and only peers running as the proxy's own user are answered): one line in
//! (a registry host or image reference), one JSON line out — `{"Username","Secret"}`, or
//! `{}` when nothing was captured for it.

use crate::CriError;
use crate::captured::Captured;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

/// Longest request line.
const MAX_LINE: u64 = 4096;

pub fn bind(path: &Path) -> Result<UnixListener, CriError> {
    let fail = |source| CriError::Socket {
        what: "keychain socket",
        path: path.to_path_buf(),
        source,
    };
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(fail)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    Ok(listener)
}

pub async fn serve(listener: UnixListener, captured: Arc<Captured>) {
    // SAFETY: geteuid has no preconditions and cannot fail (POSIX).
    let own = unsafe { libc::geteuid() };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let captured = captured.clone();
        tokio::spawn(async move {
            let peer = stream.peer_cred().ok().map(|c| c.uid());
            if peer != Some(own) && peer != Some(0) {
                tracing::warn!(?peer, "keychain socket: a peer of another user was refused");
                return;
            }
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(read).take(MAX_LINE);
            if reader.read_line(&mut line).await.is_err() {
                return;
            }
            let server = line.trim();
            let answer = match captured.lookup(server) {
                Some(c) => serde_json::json!({
                    "ServerURL": credkeeper_registry::host::normalise(server),
                    "Username": c.username,
                    "Secret": c.secret.expose(),
                }),
                None => serde_json::json!({}),
            };
            let _ = write.write_all(format!("{answer}\n").as_bytes()).await;
        });
    }
}
