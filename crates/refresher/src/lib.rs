//! credkeeper-refresher: decides when a token is fresh enough and which source renews it.
//!
//! What it is for: the one place that knows the order of sources. First [`reusable`]:
//! a token that still meets the [`Requirements`] is used as it is, before any network
//! call (not even discovery). Then [`Refresher::obtain`]: token exchange when a subject
//! token is given, else a refresh with the stored refresh token (committing a rotated one
//! before anything else), else client credentials for a confidential client, else the
//! device flow when someone is there to approve it. [`Refresher::login_device`] and [`Refresher::login_browser`] are the
//! interactive first logins whose refresh token every later call lives on.
//!
//! [`source`] puts every origin of a new token behind one trait, [`source::TokenSource`].
//!
//! What it is not: it neither prints nor writes token files; it reports what happens
//! through [`Prompt`] and returns the token to the caller's sink.

pub mod source;

use credkeeper_core::{Jwt, Requirements, Secret, Timestamp};
use credkeeper_oidc::{Client, DeviceAuthorization, OidcError, Pkce, TokenRequest, TokenResponse};
use credkeeper_store::{
    Claim, CredentialKey, CredentialStore, Health, StoreError, StoredCredential,
};

/// The identity name under which a local user's credentials are stored.
pub const LOCAL_IDENTITY: &str = "default";

/// How a token was obtained, for logs and `-v` output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Reused,
    Refreshed,
    ClientCredentials,
    Exchanged,
    DeviceLogin,
    BrowserLogin,
    /// Handed out by a credkeeper broker.
    Broker,
    /// Read from a Vault-API server (htgettoken's).
    VaultServer,
    /// Read as it was given (a mounted file, an environment variable): never renewed here.
    Given,
    /// A session token from a user name and password (Rucio's userpass).
    PasswordLogin,
}

impl Origin {
    pub fn describe(self) -> &'static str {
        match self {
            Origin::Reused => "reused the existing token",
            Origin::Refreshed => "refreshed with the stored refresh token",
            Origin::ClientCredentials => "obtained with client credentials",
            Origin::Exchanged => "obtained by token exchange",
            Origin::DeviceLogin => "obtained through a device login",
            Origin::BrowserLogin => "obtained through a browser login",
            Origin::Broker => "obtained from the broker",
            Origin::VaultServer => "obtained from the Vault-API server",
            Origin::Given => "read as it was given",
            Origin::PasswordLogin => "obtained with a password login",
        }
    }
}

/// A token ready for a sink.
#[derive(Debug)]
pub struct Obtained {
    pub token: Secret,
    pub origin: Origin,
    /// Seconds left when obtained, if known.
    pub remaining: Option<i64>,
}

/// The user-facing side of an interactive login. Implemented by the command line.
/// `Sync`, so a token can be obtained on any runtime thread (a scheduler's runs).
pub trait Prompt: Sync {
    /// Whether a human can answer (a terminal is attached).
    fn interactive(&self) -> bool;
    /// Show the device flow's code and URL; polling starts after this returns.
    fn device_code(&self, device: &DeviceAuthorization);
    /// Show (and, where possible, open) the browser login URL.
    fn browser_url(&self, url: &str);
    /// The login finished, successfully or not.
    fn login_finished(&self, ok: bool);
}

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error(
        "the stored refresh token for {issuer} was refused ({reason}); log in again with `credkeeper login --issuer {issuer}`"
    )]
    NeedLogin { issuer: String, reason: String },
    #[error(
        "no stored credential for {issuer} and no terminal to log in from; run `credkeeper login --issuer {issuer}` interactively once first"
    )]
    NotInteractive { issuer: String },
    #[error(
        "the issuer {issuer} answered without a refresh token; ask for the `offline_access` scope"
    )]
    NoRefreshToken { issuer: String },
    #[error("the issuer returned a token that is not usable: {0}")]
    Unusable(String),
    #[error(transparent)]
    Issuer(#[from] OidcError),
    #[error(
        "the refresh of the credential for {issuer} took longer than its {secs} s claim and was abandoned"
    )]
    ClaimExpired { issuer: String, secs: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How long a refresh may hold its claim by default: more than the issuer client's
/// whole budget for one call (30 s, retried on connect errors only), so a slow issuer does
/// not let a second process use the same refresh token.
pub const DEFAULT_CLAIM_SECS: u32 = 90;

/// An issuer's client and the store of its refresh tokens, owned: what a [`Refresher`]
/// borrows in a command-line process.
pub struct Issuer {
    pub client: Client,
    pub store: std::sync::Arc<dyn CredentialStore>,
}

impl Issuer {
    /// The refresher of `identity`'s credential, with the default claim.
    pub fn refresher<'a>(&'a self, identity: &'a str) -> Refresher<'a> {
        Refresher {
            client: &self.client,
            store: &*self.store,
            identity,
            claim_secs: DEFAULT_CLAIM_SECS,
        }
    }
}

/// One issuer and client, with the store that holds its refresh tokens.
pub struct Refresher<'a> {
    pub client: &'a Client,
    pub store: &'a dyn CredentialStore,
    pub identity: &'a str,
    /// How long a refresh holds its claim on the credential ([`DEFAULT_CLAIM_SECS`]).
    pub claim_secs: u32,
}

/// A credential this process holds the refresh claim of ([`Refresher::claim`]).
#[derive(Debug)]
pub struct Claimed {
    /// As the store has it now.
    pub credential: StoredCredential,
    /// When an earlier refresh began that never finished (its process died).
    lapsed: Option<Timestamp>,
}

/// What [`Refresher::claim`] found.
#[derive(Debug)]
pub enum Claiming {
    Claimed(Claimed),
    /// Another process is refreshing it until `until`.
    Elsewhere {
        until: Timestamp,
    },
    Missing,
}

/// How often a waiting caller looks whether another process's refresh has ended.
const CLAIM_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// The store's key of `identity`'s credential at `client`: the one place it is made.
pub fn credential_key(client: &Client, identity: &str) -> CredentialKey {
    CredentialKey::new(&client.metadata().issuer, client.client_id(), identity)
}

/// Keep what a login returned for `identity`: its refresh token (a login that gave none
/// is an error: nothing could renew it), durably, and with `cache_access` its access token
/// as the cached one.
pub fn keep_login(
    store: &dyn CredentialStore,
    client: &Client,
    identity: &str,
    response: &TokenResponse,
    cache_access: bool,
) -> Result<(), RefreshError> {
    let rt = response
        .refresh_token
        .as_ref()
        .ok_or_else(|| RefreshError::NoRefreshToken {
            issuer: client.metadata().issuer.clone(),
        })?;
    let key = credential_key(client, identity);
    let cached = cache_access.then(|| cached(response));
    store.put(&key, rt, response.scope.as_deref(), cached.as_ref())?;
    Ok(())
}

/// The response's access token as the store caches it.
pub fn cached(response: &TokenResponse) -> credkeeper_store::CachedToken {
    credkeeper_store::CachedToken {
        expires: expiry(&response.access_token, response.expires_in),
        token: response.access_token.clone(),
        issued: Timestamp::now(),
        scope: response.scope.clone(),
    }
}

/// When `token` expires: its `exp` when it is a JWT, else `expires_in` from now.
pub fn expiry(token: &Secret, expires_in: Option<i64>) -> Timestamp {
    Jwt::decode(token.expose())
        .ok()
        .and_then(|j| j.expires())
        .unwrap_or_else(|| Timestamp::now().plus_secs(expires_in.unwrap_or(0)))
}

impl Refresher<'_> {
    fn key(&self) -> CredentialKey {
        credential_key(self.client, self.identity)
    }

    fn issuer(&self) -> String {
        self.client.metadata().issuer.clone()
    }

    /// Get a new token meeting `want`, trying the network sources in order. Call
    /// [`reusable`] first.
    pub async fn obtain(
        &self,
        want: &Requirements,
        request: &TokenRequest,
        subject_token: Option<&Secret>,
        prompt: &dyn Prompt,
    ) -> Result<Obtained, RefreshError> {
        if let Some(subject) = subject_token {
            let response = self.client.exchange(subject, request).await?;
            return finish(response, Origin::Exchanged, want);
        }
        if let Some(claimed) = self.claim_waiting().await? {
            let response = self.refresh_claimed(claimed, request, false).await?;
            return finish(response, Origin::Refreshed, want);
        }
        if self.client.is_confidential() {
            let response = self.client.client_credentials(request).await?;
            return finish(response, Origin::ClientCredentials, want);
        }
        if !prompt.interactive() {
            return Err(RefreshError::NotInteractive {
                issuer: self.issuer(),
            });
        }
        let obtained = self.login_device(&login_request(request), prompt).await?;
        check_fresh(obtained, want)
    }

    /// Claim the stored credential for a refresh, without waiting: of every process
    /// sharing the store, one at a time holds a credential's claim (see
    /// [`CredentialStore::claim_refresh`]).
    pub fn claim(&self) -> Result<Claiming, RefreshError> {
        Ok(
            match self.store.claim_refresh(&self.key(), self.claim_secs)? {
                Claim::Granted {
                    credential, lapsed, ..
                } => Claiming::Claimed(Claimed { credential, lapsed }),
                Claim::Held { until } => Claiming::Elsewhere { until },
                Claim::Missing => Claiming::Missing,
            },
        )
    }

    /// Claim the stored credential, waiting while another process refreshes it (at most
    /// until its claim lapses). `None`: nothing is stored.
    pub async fn claim_waiting(&self) -> Result<Option<Claimed>, RefreshError> {
        loop {
            match self.claim()? {
                Claiming::Claimed(c) => return Ok(Some(c)),
                Claiming::Missing => return Ok(None),
                Claiming::Elsewhere { .. } => tokio::time::sleep(CLAIM_POLL).await,
            }
        }
    }

    /// Give back a claim not used (the credential turned out fresh enough).
    pub fn release(&self, claimed: Claimed) -> Result<(), RefreshError> {
        let health = Health {
            refresh_started: None,
            ..claimed.credential.health
        };
        Ok(self.store.set_health(&self.key(), &health)?)
    }

    /// Refresh a claimed credential, keeping its health: a rotated refresh token is
    /// committed (ending the claim) before the response is returned; `invalid_grant`
    /// marks the credential as needing a new login (and later calls fail at once instead
    /// of asking the issuer again); other failures count towards backoff. A refresh that
    /// outlives its claim is abandoned with its mark left in place, like one whose process
    /// died: the issuer may have rotated the token, and the next claimant says so if the
    /// issuer then refuses the old one.
    /// With `cache_access`, the new access token is cached in the same store write that
    /// ends the claim: a process that claims the credential next finds it fresh, and does
    /// not refresh it again.
    pub async fn refresh_claimed(
        &self,
        claimed: Claimed,
        request: &TokenRequest,
        cache_access: bool,
    ) -> Result<TokenResponse, RefreshError> {
        let key = self.key();
        let Claimed { credential, lapsed } = claimed;
        let mut health = credential.health;
        health.refresh_started = None;
        if let Some(reason) = &health.needs_login {
            self.store.set_health(&key, &health)?;
            return Err(RefreshError::NeedLogin {
                issuer: self.issuer(),
                reason: reason.clone(),
            });
        }
        // Leave a second for the store write that ends the claim.
        let budget = std::time::Duration::from_secs(u64::from(self.claim_secs.max(2) - 1));
        let asked = std::time::Instant::now();
        let answer = tokio::time::timeout(
            budget,
            self.client.refresh(&credential.refresh_token, request),
        )
        .await
        .map_err(|_| RefreshError::ClaimExpired {
            issuer: self.issuer(),
            secs: self.claim_secs,
        })?;
        match answer {
            Ok(response) => {
                let access = cache_access.then(|| cached(&response));
                match &response.refresh_token {
                    // One statement stores the new tokens and ends the claim.
                    Some(rotated) => {
                        let answered = asked.elapsed();
                        self.store.put(
                            &key,
                            rotated,
                            response.scope.as_deref(),
                            access.as_ref(),
                        )?;
                        // The window in which dying loses the grant: the issuer has rotated
                        // the token, and the new one is not kept yet (bench/rotation.sh).
                        let committed = asked.elapsed();
                        tracing::debug!(
                            answer_to_commit_us = (committed - answered).as_micros() as u64,
                            ask_to_commit_us = committed.as_micros() as u64,
                            "rotated refresh token committed"
                        );
                    }
                    None => {
                        // The claim ends only after the access token is kept.
                        if let Some(access) = &access {
                            self.store.put_access(&key, access)?;
                        }
                        self.store.set_health(&key, &Health::default())?;
                    }
                }
                Ok(response)
            }
            Err(e) if e.is_invalid_grant() => {
                let reason = match lapsed {
                    Some(at) => format!(
                        "{e}; a refresh started at {at} never finished, so the issuer may have rotated the refresh token then"
                    ),
                    None => e.to_string(),
                };
                health.needs_login = Some(reason.clone());
                self.store.set_health(&key, &health)?;
                Err(RefreshError::NeedLogin {
                    issuer: self.issuer(),
                    reason,
                })
            }
            Err(e) => {
                health.failures += 1;
                health.next_attempt =
                    Some(Timestamp::now().plus_secs(backoff_secs(health.failures)));
                self.store.set_health(&key, &health)?;
                Err(e.into())
            }
        }
    }

    /// The device flow (RFC 8628): show the code, wait for approval, store the refresh token.
    pub async fn login_device(
        &self,
        request: &TokenRequest,
        prompt: &dyn Prompt,
    ) -> Result<Obtained, RefreshError> {
        let device = self.client.start_device(request).await?;
        prompt.device_code(&device);
        let result = self.client.wait_for_device(&device).await;
        prompt.login_finished(result.is_ok());
        self.keep_login(result?, Origin::DeviceLogin)
    }

    /// Authorization code with PKCE on a loopback redirect (RFC 8252).
    pub async fn login_browser(
        &self,
        request: &TokenRequest,
        prompt: &dyn Prompt,
    ) -> Result<Obtained, RefreshError> {
        let redirect = credkeeper_oidc::loopback::Redirect::bind().await?;
        let pkce = Pkce::new();
        let state = credkeeper_oidc::random_state();
        let url = self
            .client
            .authorization_url(redirect.uri(), request, &pkce, &state)?;
        prompt.browser_url(&url);
        let result = async {
            let code = redirect.wait_for_code(&state).await?;
            self.client
                .exchange_code(&code, redirect.uri(), &pkce)
                .await
        }
        .await;
        prompt.login_finished(result.is_ok());
        self.keep_login(result?, Origin::BrowserLogin)
    }

    fn keep_login(
        &self,
        response: TokenResponse,
        origin: Origin,
    ) -> Result<Obtained, RefreshError> {
        keep_login(self.store, self.client, self.identity, &response, false)?;
        finish(response, origin, &Requirements::default())
    }

    /// Revoke the stored refresh token at the issuer (when it offers revocation) and
    /// delete it. Returns whether anything was stored; a failed revocation is returned as
    /// the second value and the credential is deleted all the same.
    pub async fn logout(&self) -> Result<(bool, Option<OidcError>), RefreshError> {
        let Some(stored) = self.store.get(&self.key())? else {
            return Ok((false, None));
        };
        let revoked = match self
            .client
            .revoke(&stored.refresh_token, "refresh_token")
            .await
        {
            Ok(()) | Err(OidcError::Unsupported(_)) => None,
            Err(e) => Some(e),
        };
        self.store.delete(&self.key())?;
        Ok((true, revoked))
    }
}

/// What a first login asks for: the caller's request plus `offline_access` (without
/// which no refresh token is issued) and `openid` (which `offline_access` belongs to).
pub fn login_request(request: &TokenRequest) -> TokenRequest {
    let mut scopes: Vec<&str> = request
        .scopes
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    for needed in ["offline_access", "openid"] {
        if !scopes.contains(&needed) {
            scopes.insert(0, needed);
        }
    }
    TokenRequest {
        scopes: Some(scopes.join(" ")),
        audience: request.audience.clone(),
    }
}

/// The token already at the sink, if it still meets `want`. No network.
pub fn reusable(existing: Option<&Secret>, want: &Requirements) -> Option<Obtained> {
    let jwt = Jwt::decode(existing?.expose()).ok()?;
    let now = Timestamp::now();
    match want.check(&jwt, now) {
        Ok(()) => Some(Obtained {
            token: jwt.raw().clone(),
            origin: Origin::Reused,
            remaining: jwt.remaining(now),
        }),
        Err(shortfall) => {
            tracing::debug!("not reusing the existing token: {shortfall}");
            None
        }
    }
}

fn finish(
    response: TokenResponse,
    origin: Origin,
    want: &Requirements,
) -> Result<Obtained, RefreshError> {
    let now = Timestamp::now();
    let remaining = match Jwt::decode(response.access_token.expose()) {
        Ok(jwt) => jwt.remaining(now),
        // Opaque tokens are legal; their lifetime is what the response says.
        Err(_) => response.expires_at(now).map(|e| e.seconds_after(now)),
    };
    check_fresh(
        Obtained {
            token: response.access_token,
            origin,
            remaining,
        },
        want,
    )
}

/// A brand-new token that cannot meet `--minsecs` is worth knowing about, but it is still
/// the best there is: the issuer decides lifetimes. Warn rather than fail.
fn check_fresh(obtained: Obtained, want: &Requirements) -> Result<Obtained, RefreshError> {
    if let Some(r) = obtained.remaining {
        if r <= 0 {
            return Err(RefreshError::Unusable("it has already expired".into()));
        }
        if r < want.min_secs {
            tracing::warn!(
                "the issuer's token lives {r} s, less than the {} s asked for",
                want.min_secs
            );
        }
    }
    Ok(obtained)
}

/// Exponential backoff with jitter: about 2^failures seconds, at most five minutes,
/// scaled by a random factor in [0.5, 1.5) so failing credentials spread out.
pub fn backoff_secs(failures: u32) -> i64 {
    use std::hash::{BuildHasher, Hasher};
    let base = 2f64.powi(failures.min(9) as i32).min(300.0);
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let factor = 0.5 + (random % 1000) as f64 / 1000.0;
    (base * factor).ceil() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_five_minutes_with_jitter() {
        for failures in 1..20 {
            let b = backoff_secs(failures);
            let base = 2f64.powi(failures.min(9) as i32).min(300.0);
            assert!(
                (base * 0.5).floor() as i64 <= b && b <= (base * 1.5).ceil() as i64,
                "{failures}: {b}"
            );
        }
        assert!(backoff_secs(30) <= 450);
    }
}
