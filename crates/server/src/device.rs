//! Device-flow logins the broker runs at a provider for someone else: a robot's first
//! login completed by a human at a terminal (`credkeeper login --server … --provider`),
//! and a user's first login through the Vault API (htgettoken's `auth_url` + `poll`).
//!
//! The broker holds the device code and polls the provider itself, once per client poll,
//! so the refresh token is received — and kept — by the broker only. Logins in flight are
//! in the store's shared state, so a login started at one broker can be polled, and
//! finished, at any broker sharing the store.

use crate::broker::{Broker, Code, Refusal};
use crate::shared::Shared;
use crate::web::{lock, random};
use credkeeper_core::{Secret, Timestamp};
use credkeeper_oidc::{Client, DeviceAuthorization, DevicePoll, TokenRequest, TokenResponse};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

/// How long a login may take, at most (the provider's own limit may be shorter).
const LOGIN_SECS: i64 = 600;
/// A robot's logins in progress at most: starting one more drops its oldest (a robot
/// can only hold its own slots, and a new login supersedes an abandoned one).
const PER_ROBOT: usize = 4;

/// Who may poll a login: the robot that started it, or the client nonce of a Vault login.
/// Two kinds, never equal to each other: a Vault client cannot pick a robot's name as its
/// nonce and finish that robot's login (or the other way round).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Poller {
    Robot(String),
    VaultNonce(String),
}

/// A login in flight, as kept (sealed) in the shared state under its `state`.
#[derive(Serialize, Deserialize)]
struct Pending {
    provider: String,
    poller: Poller,
    device_code: String,
    user_code: String,
    verification_uri: String,
    verification_uri_complete: Option<String>,
    expires_in: i64,
    interval: Option<u64>,
}

impl Pending {
    fn device(&self) -> DeviceAuthorization {
        DeviceAuthorization {
            device_code: Secret::new(self.device_code.clone()),
            user_code: self.user_code.clone(),
            verification_uri: self.verification_uri.clone(),
            verification_uri_complete: self.verification_uri_complete.clone(),
            expires_in: self.expires_in,
            interval: self.interval,
        }
    }
}

/// The shared-state kind of a poller's logins: each robot's own, so its logins can be
/// counted and trimmed, and one pool for the Vault API's.
fn kind_of(poller: &Poller) -> String {
    match poller {
        Poller::Robot(robot) => format!("device-robot:{robot}"),
        Poller::VaultNonce(_) => "device-vault".to_string(),
    }
}

fn unavailable(e: credkeeper_store::StoreError) -> Refusal {
    tracing::error!("device logins: the store: {e}");
    Refusal::new(
        Code::Busy,
        "the broker's store is unavailable; try again later",
    )
}

/// Vault-API logins are started by anyone who can reach the port: their own bounded pool
/// and a token bucket, checked before the provider is asked for anything.
struct VaultGate {
    tokens: f64,
    refilled: std::time::Instant,
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

pub struct DeviceLogins {
    shared: Shared,
    vault_gate: Mutex<VaultGate>,
    vault_max: usize,
    /// `auth_url` logins per second, and the burst.
    vault_rate: f64,
    vault_burst: f64,
}

impl DeviceLogins {
    pub fn new(vault: &crate::config::VaultSection, shared: Shared) -> DeviceLogins {
        let per_minute = f64::from(vault.logins_per_minute.max(1));
        let burst = (per_minute / 10.0).max(1.0);
        DeviceLogins {
            shared,
            vault_gate: Mutex::new(VaultGate {
                tokens: burst,
                refilled: std::time::Instant::now(),
            }),
            vault_max: vault.pending_logins.max(1),
            vault_rate: per_minute / 60.0,
            vault_burst: burst,
        }
    }

    /// Whether `poller` may start a login now, before anything is asked of the provider.
    /// A robot always may (its oldest login goes when it holds too many); a Vault nonce
    /// only within the pool and the rate.
    fn admit(&self, poller: &Poller) -> Result<(), Refusal> {
        let busy = |why: &str| Refusal::new(Code::Busy, format!("{why}; try again later"));
        let kind = kind_of(poller);
        match poller {
            Poller::Robot(_) => {
                self.shared
                    .trim(&kind, PER_ROBOT - 1)
                    .map_err(unavailable)?;
                Ok(())
            }
            Poller::VaultNonce(_) => {
                if !self
                    .shared
                    .below(&kind, self.vault_max)
                    .map_err(unavailable)?
                {
                    return Err(busy("too many Vault-API logins in progress"));
                }
                let mut gate = lock(&self.vault_gate);
                let elapsed = gate.refilled.elapsed().as_secs_f64();
                gate.tokens = (gate.tokens + elapsed * self.vault_rate).min(self.vault_burst);
                gate.refilled = std::time::Instant::now();
                if gate.tokens < 1.0 {
                    return Err(busy("too many Vault-API logins started just now"));
                }
                gate.tokens -= 1.0;
                Ok(())
            }
        }
    }

    /// Start a device login at `provider`; only `poller` may poll it.
    pub async fn start(
        &self,
        broker: &Broker,
        provider: &str,
        poller: Poller,
    ) -> Result<Started, Refusal> {
        let p = broker.config.provider(provider).ok_or_else(|| {
            Refusal::new(
                Code::UnknownProvider,
                format!("no provider named `{provider}`"),
            )
        })?;
        self.admit(&poller)?;
        let client = broker.client(p).await?;
        let request = credkeeper_refresher::login_request(&TokenRequest {
            scopes: p.scopes.clone(),
            audience: p.audience.clone(),
        });
        let device = client.start_device(&request).await.map_err(|e| {
            Refusal::new(Code::ProviderError, format!("provider `{provider}`: {e}"))
        })?;
        let state = random();
        let started = Started {
            state: state.clone(),
            user_code: device.user_code.clone(),
            verification_uri: device.verification_uri.clone(),
            verification_uri_complete: device.verification_uri_complete.clone(),
            interval: device.interval.unwrap_or(5).max(1),
            expires_in: device.expires_in.min(LOGIN_SECS),
        };
        let pending = Pending {
            provider: provider.to_string(),
            device_code: device.device_code.expose().to_string(),
            user_code: device.user_code,
            verification_uri: device.verification_uri,
            verification_uri_complete: device.verification_uri_complete,
            expires_in: device.expires_in,
            interval: device.interval,
            poller,
        };
        let expires = Timestamp::now().plus_secs(started.expires_in);
        self.shared
            .put(&kind_of(&pending.poller), &state, &pending, expires)
            .map_err(unavailable)?;
        Ok(started)
    }

    /// Poll the provider once for the login `state`, if `poller` started it.
    pub async fn poll(
        &self,
        broker: &Broker,
        state: &str,
        poller: &Poller,
    ) -> Result<Polled, Refusal> {
        let kind = kind_of(poller);
        let no_login = || {
            Refusal::new(
                Code::BadRequest,
                "no login in progress with this state (expired, or started by someone else?)",
            )
        };
        let (found, _): (Pending, Timestamp) = self
            .shared
            .get(&kind, state)
            .map_err(unavailable)?
            .ok_or_else(no_login)?;
        // Not the starter's: it stays, untouched, for them.
        if &found.poller != poller {
            return Err(Refusal::forbidden("this login was started by someone else"));
        }
        // Taken while the provider is asked: of two polls at once (at any broker), one asks.
        let (login, expires): (Pending, Timestamp) = self
            .shared
            .take(&kind, state)
            .map_err(unavailable)?
            .ok_or_else(no_login)?;
        let p = broker
            .config
            .provider(&login.provider)
            .ok_or_else(|| Refusal::new(Code::UnknownProvider, "the login's provider is gone"))?;
        let client = broker.client(p).await?;
        match client.poll_device(&login.device()).await {
            Ok(DevicePoll::Done(response)) => Ok(Polled::Done {
                provider: login.provider,
                client,
                response,
            }),
            Ok(pending) => {
                let slow_down = matches!(pending, DevicePoll::SlowDown);
                self.shared
                    .put(&kind, state, &login, expires)
                    .map_err(unavailable)?;
                Ok(Polled::Pending { slow_down })
            }
            Err(e) => Err(Refusal::new(
                Code::ProviderError,
                format!("provider `{}`: {e}", login.provider),
            )),
        }
    }
}
