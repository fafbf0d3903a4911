//! The captured credentials offered to credkeeper's keychain on a private unix socket
//! (mode 0600, and only peers running as the proxy's own user are answered): one line in
//! (a registry host or image reference), one JSON line out — `{"Username","Secret"}`, or
//! `{}` when nothing was captured for it.

use crate::CriError;
use crate::captured::Captured;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

/// Longest request line.
const MAX_LINE: u64 = 4096;

pub fn bind(path: &Path) -> Result<UnixListener, CriError> {
    crate::bind_private(path, "keychain socket")
}

/// The API's `dockerconfigjson` secrets, kept by [`sync_secrets`].
pub type SharedSecrets = Arc<std::sync::RwLock<credkeeper_registry::kube::Secrets>>;

/// Keep `shared` equal to the API's secrets: list, then watch; when the watch ends or
/// fails (e.g. 410 Gone), list again, after a pause that grows on repeated failures.
pub async fn sync_secrets(api: credkeeper_registry::kube::KubeApi, shared: SharedSecrets) {
    let mut pause = 1u64;
    loop {
        match api.list().await {
            Ok(listed) => {
                let from = listed.resource_version.clone();
                tracing::info!(secrets = listed.len(), "Kubernetes secrets listed");
                *shared.write().unwrap_or_else(|p| p.into_inner()) = listed;
                pause = 1;
                let watched = api
                    .watch_events(&from, |event| {
                        shared
                            .write()
                            .unwrap_or_else(|p| p.into_inner())
                            .apply(event)
                    })
                    .await;
                if let Err(e) = watched {
                    tracing::warn!("Kubernetes secrets watch: {e}");
                }
            }
            Err(e) => tracing::warn!("Kubernetes secrets list: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(pause)).await;
        pause = (pause * 2).min(60);
    }
}

pub async fn serve(
    listener: UnixListener,
    captured: Arc<Captured>,
    secrets: Option<SharedSecrets>,
) {
    // SAFETY: geteuid has no preconditions and cannot fail (POSIX).
    let own = unsafe { libc::geteuid() };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (captured, secrets) = (captured.clone(), secrets.clone());
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
            // The keychain's order: Kubernetes secrets before what pulls carried.
            let from_secrets = secrets.as_ref().and_then(|s| {
                s.read()
                    .unwrap_or_else(|p| p.into_inner())
                    .lookup(server)
                    .map(|(c, _)| c)
            });
            let answer = match from_secrets.or_else(|| captured.lookup(server)) {
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
