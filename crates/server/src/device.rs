//! Device-flow logins the broker runs at a provider for someone else: a robot's first
//! login completed by a human at a terminal (`credkeeper login --server … --provider`),
//! and a user's first login through the Vault API (htgettoken's `auth_url` + `poll`).
//!
//! The broker holds the device code and polls the provider itself, once per client poll,
//! so the refresh token is received — and kept — by the broker only. Logins in flight are
//! in the store's shared state, so a login started at one broker can be polled, and
//! finished, at any broker sharing the store.

use crate::broker::Broker;
use crate::handle::random;
use crate::refusal::{Code, Refusal};
use crate::shared::Shared;
use crate::sync::lock;
use credkeeper_core::{Secret, Timestamp};
use credkeeper_oidc::{Client, DeviceAuthorization, DevicePoll, TokenRequest, TokenResponse};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

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
    Refusal::store_unavailable("device logins", &e)
}

/// A token bucket: `rate` tokens a second up to `burst`.
#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            refilled: now,
        }
    }

    /// Refilled up to `now`: whether it is full again (as good as a new one).
    fn refill(&mut self, (rate, burst): (f64, f64), now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.refilled = now;
        self.tokens >= burst
    }

    fn has_one(&self) -> bool {
        self.tokens >= 1.0
    }
}

/// Where an unauthenticated login comes from: an IPv4 address or an IPv6 /64 (what one
/// host is usually given), `Unknown` when the broker cannot tell (then all such share one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Source {
    V4(u32),
    V6Prefix(u64),
    Unknown,
}

impl Source {
    fn of(ip: Option<IpAddr>) -> Source {
        match ip.map(|ip| ip.to_canonical()) {
            Some(IpAddr::V4(v4)) => Source::V4(v4.to_bits()),
            Some(IpAddr::V6(v6)) => Source::V6Prefix((v6.to_bits() >> 64) as u64),
            None => Source::Unknown,
        }
    }
}

/// Sources remembered at once; past that, buckets that are full again are forgotten (they
/// hold nothing a new one would not), and if none is, new sources share one bucket.
const MAX_SOURCES: usize = 4096;

/// Vault-API logins are started by anyone who can reach the port: their own bounded pool
/// and a token bucket, checked before the provider is asked for anything. Each source
/// also has a bucket of a quarter of that rate, so one flooding address cannot take every
/// start from the users at other addresses.
struct VaultGate {
    all: Bucket,
    sources: HashMap<Source, Bucket>,
}

impl VaultGate {
    /// Take a start for `source` if both its bucket and the common one have one.
    fn take(
        &mut self,
        source: Source,
        all: (f64, f64),
        each: (f64, f64),
        now: Instant,
    ) -> Result<(), &'static str> {
        if !self.sources.contains_key(&source) && self.sources.len() >= MAX_SOURCES {
            self.sources.retain(|_, b| !b.refill(each, now));
        }
        let source = if self.sources.contains_key(&source) || self.sources.len() < MAX_SOURCES {
            source
        } else {
            Source::Unknown
        };
        let own = self
            .sources
            .entry(source)
            .or_insert_with(|| Bucket::full(each.1, now));
        own.refill(each, now);
        if !own.has_one() {
            return Err("too many Vault-API logins started from your address just now");
        }
        self.all.refill(all, now);
        if !self.all.has_one() {
            return Err("too many Vault-API logins started just now");
        }
        own.tokens -= 1.0;
        self.all.tokens -= 1.0;
        Ok(())
    }
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
    /// `auth_url` logins per second and the burst: of all sources together, and of each.
    vault_all: (f64, f64),
    vault_each: (f64, f64),
}

impl DeviceLogins {
    pub fn new(vault: &crate::config::VaultSection, shared: Shared) -> DeviceLogins {
        let per_minute = f64::from(vault.logins_per_minute.max(1));
        let burst = (per_minute / 10.0).max(1.0);
        DeviceLogins {
            shared,
            vault_gate: Mutex::new(VaultGate {
                all: Bucket::full(burst, Instant::now()),
                sources: HashMap::new(),
            }),
            vault_max: vault.pending_logins.max(1),
            vault_all: (per_minute / 60.0, burst),
            vault_each: (per_minute / 240.0, (burst / 4.0).max(1.0)),
        }
    }

    /// Whether `poller` may start a login now, before anything is asked of the provider.
    /// A robot always may (its oldest login goes when it holds too many); a Vault nonce
    /// only within the pool and the rates (of all, and of its address `from`).
    fn admit(&self, poller: &Poller, from: Option<IpAddr>) -> Result<(), Refusal> {
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
                lock(&self.vault_gate)
                    .take(
                        Source::of(from),
                        self.vault_all,
                        self.vault_each,
                        Instant::now(),
                    )
                    .map_err(busy)
            }
        }
    }

    /// Start a device login at `provider`; only `poller` may poll it.
    pub async fn start(
        &self,
        broker: &Broker,
        provider: &str,
        poller: Poller,
        from: Option<IpAddr>,
    ) -> Result<Started, Refusal> {
        let p = broker.config.provider(provider).ok_or_else(|| {
            Refusal::new(
                Code::UnknownProvider,
                format!("no provider named `{provider}`"),
            )
        })?;
        self.admit(&poller, from)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const ALL: (f64, f64) = (1.0, 12.0);
    const EACH: (f64, f64) = (0.25, 3.0);

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    fn gate(now: Instant) -> VaultGate {
        VaultGate {
            all: Bucket::full(ALL.1, now),
            sources: HashMap::new(),
        }
    }

    #[test]
    fn one_flooding_address_takes_its_share_and_others_still_start_logins() {
        let now = Instant::now();
        let mut g = gate(now);
        let flood = (0..100)
            .filter(|_| g.take(Source::of(ip("192.0.2.7")), ALL, EACH, now).is_ok())
            .count();
        assert_eq!(flood, 3);
        assert_eq!(
            g.take(Source::of(ip("192.0.2.7")), ALL, EACH, now),
            Err("too many Vault-API logins started from your address just now")
        );
        for user in ["192.0.2.8", "198.51.100.1", "2001:db8:1::1"] {
            assert_eq!(g.take(Source::of(ip(user)), ALL, EACH, now), Ok(()));
        }
        // Its own bucket refills at its rate: one more start four seconds later.
        let later = now + Duration::from_secs(4);
        assert_eq!(
            g.take(Source::of(ip("192.0.2.7")), ALL, EACH, later),
            Ok(())
        );
    }

    #[test]
    fn the_common_bucket_still_bounds_many_addresses_together() {
        let now = Instant::now();
        let mut g = gate(now);
        let started = (0..50u32)
            .filter(|i| {
                let a = std::net::Ipv4Addr::from_bits(0xc000_0200 + i);
                g.take(Source::of(Some(a.into())), ALL, EACH, now).is_ok()
            })
            .count();
        assert_eq!(started, 12);
        assert_eq!(
            g.take(Source::of(ip("203.0.113.1")), ALL, EACH, now),
            Err("too many Vault-API logins started just now")
        );
    }

    #[test]
    fn an_ipv6_host_is_one_source_whatever_its_interface_ids_and_v4_mapped_is_v4() {
        assert_eq!(
            Source::of(ip("2001:db8:5::1")),
            Source::of(ip("2001:db8:5::ffff:1234"))
        );
        assert_ne!(
            Source::of(ip("2001:db8:5::1")),
            Source::of(ip("2001:db8:6::1"))
        );
        assert_eq!(
            Source::of(ip("::ffff:192.0.2.7")),
            Source::of(ip("192.0.2.7"))
        );
    }

    #[test]
    fn remembered_sources_stay_bounded() {
        let now = Instant::now();
        let all = (1e9, 1e9);
        let mut g = VaultGate {
            all: Bucket::full(all.1, now),
            sources: HashMap::new(),
        };
        for i in 0..(MAX_SOURCES as u32 + 100) {
            let a = std::net::Ipv4Addr::from_bits(0x0a00_0000 + i);
            let _ = g.take(Source::of(Some(a.into())), all, EACH, now);
        }
        // Every address took a start: the first MAX_SOURCES are remembered, the rest share one.
        assert_eq!(g.sources.len(), MAX_SOURCES + 1);
        // Once their buckets are full again they are forgotten to make room.
        let later = now + Duration::from_secs(60);
        assert_eq!(
            g.take(Source::of(ip("192.0.2.1")), all, EACH, later),
            Ok(())
        );
        assert_eq!(g.sources.len(), 1);
    }
}
