//! Device-flow logins the broker runs at a provider for someone else: a robot's first
//! login completed by a human at a terminal (`credkeeper login --server … --provider`),
//! and a user's first login through the Vault API (htgettoken's `auth_url` + `poll`).
//!
//! The broker holds the device code and polls the provider itself, once per client poll,
//! so the refresh token is received — and kept — by the broker only.

use crate::broker::{Broker, Refusal};
use crate::web::{lock, random};
use credkeeper_core::Timestamp;
use credkeeper_oidc::{Client, DeviceAuthorization, DevicePoll, TokenRequest, TokenResponse};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How long a login may take, at most (the provider's own limit may be shorter).
const LOGIN_SECS: i64 = 600;
/// Logins in progress beyond this many: expired ones are swept, then new ones refused.
const PENDING_MAX: usize = 10_000;

/// Who may poll a login: the robot that started it, or the client nonce of a Vault login.
/// Two kinds, never equal to each other: a Vault client cannot pick a robot's name as its
/// nonce and finish that robot's login (or the other way round).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Poller {
    Robot(String),
    VaultNonce(String),
}

struct Pending {
    provider: String,
    poller: Poller,
    device: DeviceAuthorization,
    expires: Timestamp,
}

/// What a client shows the human.
pub struct Started {
    pub state: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub interval: u64,
    pub expires_in: i64,
}

pub enum Polled {
    Pending {
        slow_down: bool,
    },
    Done {
        provider: String,
        client: Arc<Client>,
        response: TokenResponse,
    },
}

#[derive(Default)]
pub struct DeviceLogins {
    pending: Mutex<HashMap<String, Pending>>,
}

impl DeviceLogins {
    /// Start a device login at `provider`; only `poller` may poll it.
    pub async fn start(
        &self,
        broker: &Broker,
        provider: &str,
        poller: Poller,
    ) -> Result<Started, Refusal> {
        let p = broker.config.provider(provider).ok_or_else(|| {
            Refusal::new(
                "unknown_provider",
                format!("no provider named `{provider}`"),
            )
        })?;
        let client = broker.client(p).await?;
        let request = credkeeper_refresher::login_request(&TokenRequest {
            scopes: p.scopes.clone(),
            audience: p.audience.clone(),
        });
        let device = client
            .start_device(&request)
            .await
            .map_err(|e| Refusal::new("provider_error", format!("provider `{provider}`: {e}")))?;
        let state = random();
        let now = Timestamp::now();
        let started = Started {
            state: state.clone(),
            user_code: device.user_code.clone(),
            verification_uri: device.verification_uri.clone(),
            verification_uri_complete: device.verification_uri_complete.clone(),
            interval: device.interval.unwrap_or(5).max(1),
            expires_in: device.expires_in.min(LOGIN_SECS),
        };
        let mut pending = lock(&self.pending);
        if pending.len() >= PENDING_MAX {
            pending.retain(|_, l| l.expires > now);
            if pending.len() >= PENDING_MAX {
                return Err(Refusal::new(
                    "busy",
                    "too many logins in progress; try again later",
                ));
            }
        }
        pending.insert(
            state,
            Pending {
                provider: provider.to_string(),
                poller,
                expires: now.plus_secs(started.expires_in),
                device,
            },
        );
        Ok(started)
    }

    /// Poll the provider once for the login `state`, if `poller` started it.
    pub async fn poll(
        &self,
        broker: &Broker,
        state: &str,
        poller: &Poller,
    ) -> Result<Polled, Refusal> {
        let login = {
            let mut pending = lock(&self.pending);
            match pending.get(state) {
                Some(l) if l.expires <= Timestamp::now() => None,
                // Not the starter's: it stays, untouched, for them.
                Some(l) if &l.poller != poller => {
                    return Err(Refusal::forbidden("this login was started by someone else"));
                }
                Some(_) => pending.remove(state),
                None => None,
            }
        };
        let Some(login) = login else {
            return Err(Refusal::new(
                "bad_request",
                "no login in progress with this state (expired?)",
            ));
        };
        let p = broker
            .config
            .provider(&login.provider)
            .ok_or_else(|| Refusal::new("unknown_provider", "the login's provider is gone"))?;
        let client = broker.client(p).await?;
        match client.poll_device(&login.device).await {
            Ok(DevicePoll::Done(response)) => Ok(Polled::Done {
                provider: login.provider,
                client,
                response,
            }),
            Ok(pending) => {
                let slow_down = matches!(pending, DevicePoll::SlowDown);
                lock(&self.pending).insert(state.to_string(), login);
                Ok(Polled::Pending { slow_down })
            }
            Err(e) => Err(Refusal::new(
                "provider_error",
                format!("provider `{}`: {e}", login.provider),
            )),
        }
    }
}
