//! The broker's core, independent of HTTP: who may have which token, and where it comes
//! from — the cache, the local issuer, or a provider through the stored credential.
//! `answer.rs` is what the token API reads and writes; `cache.rs` keeps the tokens handed
//! out, by the request they answered; `providers.rs` keeps each provider's client.

use crate::audit::{Audit, Event};
use crate::caller::{Caller, Method};
use crate::config::{Config, ProviderSection};
use crate::metrics::Metrics;
use crate::outcome::Source;
use crate::outcome::{Outcome, Vended};
use crate::refusal::{Code, Refusal, RefusedTo};
use crate::robots::SecretCheck;
use credkeeper_core::{Jwt, ScopeSet, Secret, Timestamp};
use credkeeper_issuer::{Grant, LocalIssuer};
use credkeeper_oidc::{Client, Http, TokenRequest, UrlPolicy};
use credkeeper_refresher::expiry;
use credkeeper_refresher::{RefreshError, Refresher};
use credkeeper_store::{CachedToken, CredentialKey, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::policy::LOCAL;

mod answer;
mod cache;
mod providers;

pub use answer::{TokenAsk, TokenGiven};
use providers::ClientSlot;

pub struct Broker {
    pub config: Config,
    pub issuer: LocalIssuer,
    /// Set when the store keeps the issuer's keys: the keeper follows their rotation.
    pub issuer_keys: Option<credkeeper_issuer::Settings>,
    pub store: Arc<dyn Store>,
    pub audit: Audit,
    pub metrics: Metrics,
    pub secrets: SecretCheck,
    /// Signs registry tokens when `[registry]` is configured.
    pub registry_signer: Option<credkeeper_issuer::X5cSigner>,
    http: Http,
    policy: UrlPolicy,
    /// One slot per provider, so a slow or unreachable provider holds up only itself.
    clients: Mutex<HashMap<String, Arc<tokio::sync::Mutex<ClientSlot>>>>,
    /// Read by every cached vend, written only when a token is obtained: readers share it.
    cache: cache::TokenCache,
    /// One refresh at a time per credential: two concurrent refreshes of a rotating
    /// refresh token would make the provider revoke the grant.
    locks: Mutex<HashMap<CredentialKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl Broker {
    pub fn new(
        config: Config,
        issuer: LocalIssuer,
        store: Arc<dyn Store>,
        audit: Audit,
        policy: UrlPolicy,
        http: Http,
    ) -> Result<Broker, credkeeper_issuer::IssuerError> {
        let registry_signer = match &config.registry {
            Some(r) => Some(credkeeper_issuer::X5cSigner::open(
                &r.key_file,
                &r.cert_file,
                r.algorithm,
            )?),
            None => None,
        };
        let metrics = Metrics::for_names(
            config.robots.iter().map(|r| r.name.as_str()),
            config.providers.iter().map(|p| p.name.as_str()),
        );
        Ok(Broker {
            config,
            issuer,
            issuer_keys: None,
            audit,
            metrics,
            secrets: SecretCheck::default(),
            store,
            registry_signer,
            http,
            policy,
            clients: Mutex::new(HashMap::new()),
            cache: cache::TokenCache::default(),
            locks: Mutex::new(HashMap::new()),
        })
    }

    /// The HTCondor credential directory the web pages write to for CredD key files.
    pub fn credd_dir(&self) -> Option<std::path::PathBuf> {
        self.config.credmon.cred_dir.clone()
    }

    pub fn credd_secret_in_meta(&self) -> bool {
        self.config.credmon.client_secret_in_meta
    }

    pub fn policy(&self) -> UrlPolicy {
        self.policy
    }

    pub fn http(&self) -> &Http {
        &self.http
    }

    /// Check a robot's secret. Unknown robots and wrong secrets get the same answer.
    pub async fn authenticate(&self, robot: &str, secret: &Secret) -> Result<(), Refusal> {
        let wrong = || Refusal::new(Code::Unauthenticated, "robot name or secret is wrong");
        let Some(r) = self.config.robot(robot) else {
            return Err(wrong());
        };
        if !r.auth.secret {
            return Err(Refusal::new(
                Code::Unauthenticated,
                format!("robot `{robot}` does not authenticate with a secret"),
            ));
        }
        match self.secrets.verify(self.store.as_ref(), robot, secret) {
            Ok(true) => Ok(()),
            Ok(false) => Err(wrong()),
            Err(e) => Err(Refusal::store_unavailable(
                &format!("robot `{robot}`: its secret"),
                &e,
            )),
        }
    }

    /// A vend as an audit line and a counter (the `record` layer of [`crate::http`]).
    pub fn record_vend(&self, o: &Outcome) -> crate::audit::Recorded {
        let told = (o.who.as_str(), Some(o.method), o.provider.as_str());
        self.record(told, (&o.scope, &o.audience), Ok((o.source, o.expires)))
    }

    /// A refusal as an audit line and a counter (the same layer).
    pub fn record_refusal(&self, r: &RefusedTo) -> crate::audit::Recorded {
        let told = (r.who.as_str(), r.method, r.provider.as_str());
        self.record(told, (&r.scope, &r.audience), Err((r.code, &r.message)))
    }

    /// The one place an outcome becomes an audit line and a counter.
    fn record(
        &self,
        (who, method, provider): (&str, Option<Method>, &str),
        (scope, audience): (&str, &str),
        result: Result<(Source, Timestamp), (Code, &str)>,
    ) -> crate::audit::Recorded {
        let mut event = Event {
            time: Timestamp::now(),
            robot: who,
            auth: method.map_or("none", Method::as_str),
            provider,
            scope,
            audience,
            result: "vended",
            source: None,
            code: None,
            reason: None,
            expires: None,
        };
        match result {
            Ok((source, expires)) => {
                event.source = Some(source.as_str());
                event.expires = Some(expires.unix());
                self.metrics.count_vend(who, provider, source);
            }
            Err((code, message)) => {
                event.result = if code.status() < 500 {
                    "denied"
                } else {
                    "failed"
                };
                event.code = Some(code.as_str());
                event.reason = Some(message);
                self.metrics.count_refusal(who, provider, code);
            }
        }
        self.audit.record(event)
    }

    /// Serve `ask` for the authenticated `caller`; the token and its refusals carry their
    /// outcome.
    pub async fn vend(
        &self,
        caller: &Caller,
        ask: &TokenAsk,
    ) -> Result<Vended<TokenGiven>, Refusal> {
        let robot = caller.robot.as_str();
        let provider = ask.provider.as_deref().unwrap_or(LOCAL);
        match self.vend_inner(robot, provider, ask).await {
            Ok((given, source, expires)) => {
                let granted = (provider, given.scope.clone(), given.audience.clone());
                let outcome = Outcome::vended(robot, caller.method, granted, source, expires);
                Ok(Vended::new(given, outcome))
            }
            Err(refusal) => {
                let asked = (
                    provider,
                    ask.scopes.as_deref().unwrap_or_default(),
                    ask.audience.as_deref().unwrap_or_default(),
                );
                Err(refusal.by(robot, Some(caller.method)).asked(asked))
            }
        }
    }

    async fn vend_inner(
        &self,
        robot: &str,
        provider: &str,
        ask: &TokenAsk,
    ) -> Result<(TokenGiven, Source, Timestamp), Refusal> {
        let minsecs = ask.minsecs.unwrap_or(60).max(0);
        let asked = (
            robot,
            provider,
            ask.scopes.as_deref(),
            ask.audience.as_deref(),
        );
        let given = |granted: cache::Granted, source| {
            let answer = TokenGiven {
                access_token: granted.token,
                token_type: "Bearer",
                expires_in: granted.expires.seconds_after(Timestamp::now()),
                scope: granted.scope,
                audience: granted.audience,
                provider: provider.into(),
            };
            (answer, source, granted.expires)
        };
        if let Some(granted) = self.cache.get(asked, minsecs) {
            return Ok(given(granted, Source::Cached));
        }
        let crate::policy::Decision {
            robot: r,
            provider: section,
            scope,
            audience,
        } = crate::policy::decide(
            &self.config,
            robot,
            provider,
            ask.scopes.as_deref(),
            ask.audience.as_deref(),
        )?;
        let (token, expires, source) = match section {
            None => {
                let lifetime = [ask.lifetime, r.max_lifetime, Some(self.issuer.lifetime())]
                    .into_iter()
                    .flatten()
                    .min()
                    .unwrap_or(self.issuer.lifetime());
                let (token, expires) = self
                    .issuer
                    .sign(&Grant {
                        subject: r.username(),
                        audience: Some(serde_json::Value::String(audience.clone())),
                        scope: &scope,
                        lifetime,
                    })
                    .map_err(|e| Refusal::new(Code::Internal, e.to_string()))?;
                (token, expires, Source::Signed)
            }
            Some(p) => {
                self.via_provider(robot, p, &scope, &audience, minsecs, true)
                    .await?
            }
        };
        let granted = cache::Granted {
            token: Arc::new(token),
            expires,
            scope: scope.into(),
            audience: audience.into(),
        };
        self.cache.put(asked, granted.clone());
        Ok(given(granted, source))
    }

    /// Forget per-credential locks nobody holds (after a refresher pass).
    pub fn sweep_locks(&self) {
        crate::sync::lock(&self.locks).retain(|_, l| Arc::strong_count(l) > 1);
    }

    pub fn lock_for(&self, key: &CredentialKey) -> Arc<tokio::sync::Mutex<()>> {
        crate::sync::lock(&self.locks)
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// A user's token from their stored credential (a login through the Vault API or the
    /// web pages): the provider decides what the user may have.
    /// Audited as the user's store identity (`user:<name>`), with `method`.
    pub async fn for_user(
        &self,
        user: &str,
        method: Method,
        p: &ProviderSection,
        scope: &str,
        audience: &str,
        minsecs: i64,
    ) -> Result<Vended<(Secret, Timestamp)>, Refusal> {
        let identity = crate::caller::Identity::User(user.to_string()).store_name();
        let asked = (p.name.as_str(), scope, audience);
        match self
            .via_provider(&identity, p, scope, audience, minsecs, false)
            .await
        {
            Ok((token, expires, source)) => {
                let granted = (asked.0, asked.1.into(), asked.2.into());
                let outcome = Outcome::vended(&identity, method, granted, source, expires);
                Ok(Vended::new((token, expires), outcome))
            }
            Err(refusal) => Err(refusal.by(&identity, Some(method)).asked(asked)),
        }
    }

    /// Keep the refresh token of a login the broker ran (a device login) for `identity`
    /// (a robot's name, or a user's store identity).
    pub fn keep_login(
        &self,
        identity: &str,
        client: &Client,
        response: &credkeeper_oidc::TokenResponse,
    ) -> Result<(), Refusal> {
        credkeeper_refresher::keep_login(self.store.as_ref(), client, identity, response, false)
            .map_err(|e| match e {
                credkeeper_refresher::RefreshError::NoRefreshToken { .. } => Refusal::new(
                    Code::ProviderError,
                    "the provider issued no refresh token (is offline_access allowed for the client?)",
                ),
                other => Refusal::internal(other.to_string()),
            })
    }

    /// A token through `p` for `robot` (a robot's name, or a user's store identity).
    /// `client_credentials` stands in for a missing login only for robots
    /// (`fallback`): a user must never get the client's own token.
    async fn via_provider(
        &self,
        robot: &str,
        p: &ProviderSection,
        scope: &str,
        audience: &str,
        minsecs: i64,
        fallback: bool,
    ) -> Result<(Secret, Timestamp, Source), Refusal> {
        let client = self.client(p).await?;
        let key = credkeeper_refresher::credential_key(&client, robot);
        let request = TokenRequest {
            scopes: Some(scope.to_string()).filter(|s| !s.is_empty()),
            audience: Some(audience.to_string()).filter(|a| !a.is_empty()),
        };
        let lock = self.lock_for(&key);
        let _held = lock.lock().await;
        let refresher = Refresher {
            client: &client,
            store: self.store.as_ref(),
            identity: robot,
            claim_secs: p.claim_secs(self.config.refresher.claim_secs),
        };
        // The refresher keeps the provider's full token fresh in the store; use it when it
        // already fits the request (a read: no claim, no write).
        if let Some(access) = self
            .store
            .get(&key)
            .map_err(|e| Refusal::new(Code::Internal, e.to_string()))?
            .and_then(|stored| stored.access)
            && fits(&access, scope, audience, minsecs)
        {
            return Ok((access.token, access.expires, Source::Cached));
        }
        // Claimed before refreshing: a broker sharing the store and refreshing the same
        // credential is waited for, and its rotated token (or fresh cached one) is used.
        let claimed = refresher
            .claim_waiting()
            .await
            .map_err(|e| Refusal::new(Code::Internal, e.to_string()))?;
        let Some(claimed) = claimed else {
            if fallback && client.is_confidential() {
                let response = client.client_credentials(&request).await.map_err(|e| {
                    Refusal::new(Code::ProviderError, format!("provider `{}`: {e}", p.name))
                })?;
                let expires = expiry(&response.access_token, response.expires_in);
                return Ok((response.access_token, expires, Source::ClientCredentials));
            }
            return Err(Refusal::new(
                Code::NeedsLogin,
                format!(
                    "no credential stored for robot `{robot}` at provider `{}`; a human must log in once for it",
                    p.name
                ),
            ));
        };
        if let Some(access) = &claimed.credential.access
            && fits(access, scope, audience, minsecs)
        {
            let cached = (access.token.clone(), access.expires, Source::Cached);
            refresher
                .release(claimed)
                .map_err(|e| Refusal::new(Code::Internal, e.to_string()))?;
            return Ok(cached);
        }
        let response = refresher.refresh_claimed(claimed, &request, false).await.map_err(|e| match e {
            RefreshError::NeedLogin { reason, .. } => Refusal::new(
                Code::NeedsLogin,
                format!("the credential of robot `{robot}` at provider `{}` needs a new login: {reason}", p.name),
            ),
            other => Refusal::new(Code::ProviderError, format!("provider `{}`: {other}", p.name)),
        })?;
        let expires = expiry(&response.access_token, response.expires_in);
        Ok((response.access_token, expires, Source::Refreshed))
    }
}

fn fits(access: &CachedToken, scope: &str, audience: &str, minsecs: i64) -> bool {
    let Ok(jwt) = Jwt::decode(access.token.expose()) else {
        return false;
    };
    let want = credkeeper_core::Requirements {
        min_secs: minsecs,
        issuer: None,
        audience: Some(audience.to_string()).filter(|a| !a.is_empty()),
        scopes: ScopeSet::parse(scope),
    };
    // Exact scopes only: a broader cached token must not leak rights the robot did not ask for.
    want.check(&jwt, Timestamp::now()).is_ok() && jwt.scopes() == ScopeSet::parse(scope)
}
