//! Provider clients: each configured provider's discovered client, made on first use, one
//! slot per provider so that a slow or unreachable provider holds up only itself.

use super::Broker;
use crate::config::ProviderSection;
use crate::refusal::{Code, Refusal};
use credkeeper_core::{Secret, Timestamp};
use credkeeper_oidc::{Client, ClientAuth};
use std::sync::Arc;

/// A provider's discovered client, or the memory of a failed discovery (for a while, so
/// every request and every credential does not wait on an unreachable provider again).
#[derive(Default)]
pub(super) struct ClientSlot {
    client: Option<Arc<Client>>,
    failed: Option<(Timestamp, String)>,
}

/// How long a failed discovery is remembered.
const DISCOVERY_RETRY_SECS: i64 = 30;

impl Broker {
    /// The client for a configured provider, discovered on first use.
    pub async fn client(&self, p: &ProviderSection) -> Result<Arc<Client>, Refusal> {
        let slot = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(p.name.clone())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(c) = &slot.client {
            return Ok(c.clone());
        }
        let now = Timestamp::now();
        if let Some((at, error)) = &slot.failed
            && now.seconds_after(*at) < DISCOVERY_RETRY_SECS
        {
            return Err(Refusal::new(Code::ProviderError, error.clone()));
        }
        let meta = match credkeeper_oidc::discover(&self.http, &p.issuer, self.policy).await {
            Ok(m) => m,
            Err(e) => {
                let error = format!("provider `{}`: {e}", p.name);
                slot.failed = Some((now, error.clone()));
                return Err(Refusal::new(Code::ProviderError, error));
            }
        };
        let auth = match &p.client_secret_file {
            None => ClientAuth::None,
            Some(f) => ClientAuth::Basic(Secret::new(
                credkeeper_sink::perm::read_private(f, "client-secret file")
                    .map_err(|e| Refusal::new(Code::Internal, e.to_string()))?,
            )),
        };
        let client = Arc::new(Client::new(self.http.clone(), meta, &p.client_id, auth));
        slot.client = Some(client.clone());
        slot.failed = None;
        Ok(client)
    }
}
