//! The part of the Vault HTTP API that `htgettoken` 2.2 and `igwn-robot-get` 0.3.3 use,
//! so sites keep those clients while the broker replaces Vault + htvault-config.
//!
//! - `POST /v1/auth/kerberos-<issuer>_<role>/login` (Negotiate, raw Kerberos or SPNEGO)
//! - `POST /v1/auth/oidc-<issuer>/oidc/auth_url` and `.../poll`: a device-flow login at
//!   the provider behind `<issuer>`, for a user
//! - `POST /v1/auth/token/create`, `GET /v1/auth/token/lookup-self`
//! - `GET /v1/secret/oauth/{creds,sts}/<issuer>/<credkey>:<role>` with
//!   `minimum_seconds`, `scopes`, `audiences`; `POST` of the same path to "store" the
//!   refresh token the login handed out.
//!
//! Differences from Vault, on purpose: refresh tokens never leave the broker (the OIDC
//! login hands the client an opaque handle where Vault hands out the refresh token; the
//! client posts it back and the broker recognises it). Vault tokens and handles are kept in
//! the store's shared state (as digests, their sessions sealed), so they outlive a restart
//! and every broker sharing the store honours them. Robots get tokens under their own policy, as through the native
//! API: the Vault path selects the provider and the credential, not the rights.

use crate::auth::Authenticators;
use crate::broker::{Broker, TokenAsk};
use crate::caller::{Caller, Method};
use crate::device::DeviceLogins;
use crate::device::Polled;
use crate::handle::random;
use crate::refusal::{Code, Refusal, RefusedTo};
use crate::shared::Shared;
use axum::body::Bytes;
use axum::extract::FromRef;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use credkeeper_core::{Jwt, Secret, Timestamp, parse_seconds};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;

/// Sessions beyond this many: expired ones are swept first, then the oldest refused.
const SESSIONS_MAX: usize = 100_000;
/// How long the handle a login gave may be posted back.
const HANDLE_SECS: i64 = 600;
/// Prefix of the handle given where Vault gives out the refresh token.
const HANDLE_PREFIX: &str = "credkeeper-kept:";

/// The Vault API's routes, for any state that holds the broker, the Vault API's and the
/// device logins' states and the robots' authenticators.
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<Broker>: FromRef<S>,
    Arc<VaultState>: FromRef<S>,
    Arc<DeviceLogins>: FromRef<S>,
    Arc<Authenticators>: FromRef<S>,
{
    Router::new()
        .route("/v1/auth/token/create", post(token_create))
        .route("/v1/auth/token/lookup-self", get(lookup_self))
        .route("/v1/auth/{mount}/login", post(kerberos_login))
        .route("/v1/auth/{mount}/oidc/auth_url", post(auth_url))
        .route("/v1/auth/{mount}/oidc/poll", post(poll))
        .route(
            "/v1/secret/oauth/{kind}/{issuer}/{*credkey_role}",
            get(read_secret).post(store_secret),
        )
}

/// Who a Vault token speaks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Identity {
    Robot(String),
    /// A user who logged in through `auth_url`; the name is their credkey.
    User(String),
}

/// What a Vault token stands for, as kept (sealed) in the shared state.
#[derive(Serialize, Deserialize)]
struct Session {
    identity: Identity,
    policies: Vec<String>,
}

/// Shared-state kinds: a Vault token → its session; a handle → the user whose refresh
/// token it stands for.
const TOKENS: &str = "vault-token";
const HANDLES: &str = "vault-handle";

/// The Vault API's tokens and handles, in the store every broker of a fleet shares.
pub struct VaultState {
    shared: Shared,
}

fn unavailable(e: credkeeper_store::StoreError) -> Failure {
    tracing::error!("Vault API: the store: {e}");
    Failure::new(503, "the broker's store is unavailable; try again later")
}

impl VaultState {
    pub fn new(shared: Shared) -> VaultState {
        VaultState { shared }
    }

    fn open(&self, identity: Identity, ttl: i64, policies: Vec<String>) -> Result<String, Failure> {
        if !self
            .shared
            .below(TOKENS, SESSIONS_MAX)
            .map_err(unavailable)?
        {
            return Err(Failure::new(503, "too many Vault tokens; try again later"));
        }
        let token = format!("hvs.{}", random());
        let session = Session { identity, policies };
        let expires = Timestamp::now().plus_secs(ttl);
        self.shared
            .put(TOKENS, &token, &session, expires)
            .map_err(unavailable)?;
        Ok(token)
    }

    /// The session behind `X-Vault-Token`, if the token is known and not expired.
    fn session(&self, headers: &HeaderMap) -> Result<(Identity, Timestamp, Vec<String>), Failure> {
        let token = headers
            .get("x-vault-token")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Failure::new(403, "permission denied: no X-Vault-Token"))?;
        let (session, expires): (Session, _) = self
            .shared
            .get(TOKENS, token)
            .map_err(unavailable)?
            .ok_or_else(|| Failure::new(403, "permission denied: unknown or expired token"))?;
        Ok((session.identity, expires, session.policies))
    }

    /// Remember that `handle` stands for `user`'s refresh token, for [`HANDLE_SECS`].
    fn give_handle(&self, handle: &str, user: &str) -> Result<(), Failure> {
        let expires = Timestamp::now().plus_secs(HANDLE_SECS);
        self.shared
            .put(HANDLES, handle, &user, expires)
            .map_err(unavailable)
    }

    /// The user a handle was given for; a handle is taken once.
    fn take_handle(&self, handle: &str) -> Result<Option<String>, Failure> {
        Ok(self
            .shared
            .take(HANDLES, handle)
            .map_err(unavailable)?
            .map(|(user, _)| user))
    }
}

/// A Vault-style error: `{"errors": [...]}` with a status.
struct Failure {
    status: u16,
    message: String,
    /// Whom the refusal it came from was refused to.
    to: Option<Box<RefusedTo>>,
}

impl Failure {
    fn new(status: u16, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
            to: None,
        }
    }
}

impl From<Refusal> for Failure {
    fn from(mut r: Refusal) -> Failure {
        let status = match r.code {
            // Vault answers 403 for anything the token may not do.
            Code::Unauthenticated | Code::Forbidden => 403,
            Code::NeedsLogin | Code::BadRequest | Code::UnknownProvider => 400,
            _ => r.status(),
        };
        Failure {
            to: r.take_refused_to().map(Box::new),
            ..Failure::new(status, format!("{} ({})", r.message, r.code.as_str()))
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(json!({ "errors": [self.message] }))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            crate::refusal::retry_after(&mut response);
        }
        if let Some(to) = self.to {
            response.extensions_mut().insert(*to);
        }
        response
    }
}

/// `lease_duration` and the rest of Vault's envelope around an `auth` block.
fn auth_answer(token: &str, ttl: i64, policies: &[String], metadata: Value) -> Value {
    json!({
        "request_id": random(),
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": null,
        "wrap_info": null,
        "warnings": null,
        "auth": {
            "client_token": token,
            "accessor": "",
            "policies": policies,
            "token_policies": policies,
            "metadata": metadata,
            "lease_duration": ttl,
            "renewable": false,
            "token_type": "service",
            "orphan": true,
        }
    })
}

/// Split `kerberos-igwn_robot` into (`igwn`, `robot`): the auth mount in a login's path
/// (public for the fuzz targets).
pub fn mount_parts<'a>(mount: &'a str, method: &str) -> Option<(&'a str, &'a str)> {
    let rest = mount.strip_prefix(method)?.strip_prefix('-')?;
    match rest.split_once('_') {
        Some((issuer, role)) if !issuer.is_empty() && !role.is_empty() => Some((issuer, role)),
        _ => None,
    }
}

/// `POST /v1/auth/kerberos-<issuer>_<role>/login`
async fn kerberos_login(
    State(broker): State<Arc<Broker>>,
    State(auth): State<Arc<Authenticators>>,
    State(vault): State<Arc<VaultState>>,
    Path(mount): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some((_issuer, role)) = mount_parts(&mount, "kerberos") else {
        return Failure::new(404, format!("no auth method at auth/{mount}")).into_response();
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(credkeeper_kerberos::parse_negotiate)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        let mut response =
            Failure::new(401, "Kerberos login needs Authorization: Negotiate").into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Negotiate"),
        );
        return response;
    };
    let Some(kerberos) = auth.kerberos.as_ref() else {
        return Failure::new(
            400,
            "this broker has no Kerberos keytab (server.kerberos_keytab)",
        )
        .into_response();
    };
    let (robot, reply) = match kerberos.accept(token).await {
        Ok(r) => r,
        Err(refusal) => {
            // Not authenticated as any robot: `auth` none, as on the robot API.
            return Failure::from(refusal.by("(kerberos)", None)).into_response();
        }
    };
    let ttl = broker.config.vault.token_ttl;
    let policies = vec!["default".to_string(), format!("robot-{robot}")];
    let credkey = broker
        .config
        .robot(&robot)
        .and_then(|r| r.credkeys().into_iter().next())
        .unwrap_or_else(|| robot.clone());
    let token = match vault.open(Identity::Robot(robot.clone()), ttl, policies.clone()) {
        Ok(t) => t,
        Err(f) => return f.into_response(),
    };
    tracing::info!(robot, role, "Vault API: Kerberos login");
    let mut response = Json(auth_answer(
        &token,
        ttl,
        &policies,
        json!({ "role": role, "credkey": credkey, "robot": robot }),
    ))
    .into_response();
    if let Some(reply) = reply
        && let Ok(v) = HeaderValue::from_str(&credkeeper_kerberos::negotiate_header(&reply))
    {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}

/// The JSON object in a body that may come without a content type (htgettoken sends
/// none) or be empty.
fn json_body(body: &[u8]) -> Result<serde_json::Map<String, Value>, Failure> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Default::default());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Failure::new(400, "the request body is not a JSON object")),
    }
}

fn str_field(map: &serde_json::Map<String, Value>, key: &str) -> Option<String> {
    map.get(key).and_then(Value::as_str).map(str::to_string)
}

/// `POST /v1/auth/token/create`: a new token for the same identity, no longer-lived
/// than the broker allows.
async fn token_create(
    State(broker): State<Arc<Broker>>,
    State(vault): State<Arc<VaultState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, Failure> {
    let (identity, _, policies) = vault.session(&headers)?;
    let body = json_body(&body)?;
    let ttl = requested_ttl(&body, broker.config.vault.token_ttl)?;
    // A child token has at most its parent's policies.
    let asked = requested_policies(&body);
    let policies = match asked {
        Some(asked) => policies.into_iter().filter(|p| asked.contains(p)).collect(),
        None => policies,
    };
    let token = vault.open(identity, ttl, policies.clone())?;
    Ok(Json(auth_answer(&token, ttl, &policies, json!({}))))
}

/// `token/create`'s `ttl`: seconds or a duration string, at most `max` (the default).
fn requested_ttl(body: &serde_json::Map<String, Value>, max: i64) -> Result<i64, Failure> {
    Ok(match body.get("ttl") {
        None => max,
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| Failure::new(400, "ttl: not a number of seconds"))?,
        Some(Value::String(s)) => parse_seconds(s)
            .ok_or_else(|| Failure::new(400, format!("ttl: `{s}` is not a duration")))?,
        Some(_) => return Err(Failure::new(400, "ttl: not a duration")),
    }
    .clamp(1, max))
}

/// `token/create`'s `policies`: the names in the list, if there is one.
fn requested_policies(body: &serde_json::Map<String, Value>) -> Option<Vec<String>> {
    body.get("policies").and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    })
}

/// What the Vault API's handlers take from a request body, read as they read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultBody {
    /// `token/create`'s `ttl`, in `1..=max_ttl`.
    pub ttl: i64,
    /// `token/create`'s `policies`.
    pub policies: Option<Vec<String>>,
    /// The `secret` write's `refresh_token`.
    pub refresh_token: Option<String>,
    /// `auth_url`'s and `poll`'s `client_nonce`.
    pub client_nonce: Option<String>,
    /// `poll`'s `state`.
    pub state: Option<String>,
}

/// Parse a Vault API request body as the handlers do: a JSON object (an empty or blank
/// body is `{}`), then the fields above. `Err` is the status and message the handler
/// would answer. The handlers' own parsing, callable without a broker (for the fuzz
/// targets under fuzz/).
pub fn parse_body(body: &[u8], max_ttl: i64) -> Result<VaultBody, (u16, String)> {
    let parse = || -> Result<VaultBody, Failure> {
        let body = json_body(body)?;
        Ok(VaultBody {
            ttl: requested_ttl(&body, max_ttl)?,
            policies: requested_policies(&body),
            refresh_token: str_field(&body, "refresh_token"),
            client_nonce: str_field(&body, "client_nonce"),
            state: str_field(&body, "state"),
        })
    };
    parse().map_err(|f| (f.status, f.message))
}

/// `GET /v1/auth/token/lookup-self`
async fn lookup_self(
    State(vault): State<Arc<VaultState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, Failure> {
    let (identity, expires, policies) = vault.session(&headers)?;
    let name = match &identity {
        Identity::Robot(r) => format!("kerberos-{r}"),
        Identity::User(u) => format!("oidc-{u}"),
    };
    Ok(Json(json!({
        "request_id": random(),
        "data": {
            "display_name": name,
            "ttl": expires.seconds_after(Timestamp::now()),
            "expire_time": expires.to_string(),
            "policies": policies,
            "renewable": false,
            "type": "service",
        }
    })))
}

/// The configured provider (or `local`) behind a Vault issuer name.
fn provider_for(broker: &Broker, vault_issuer: &str, robot: Option<&str>) -> String {
    if let Some(p) = broker.config.vault.issuers.get(vault_issuer) {
        return p.clone();
    }
    if vault_issuer == "default" {
        let first = match robot {
            Some(r) => broker
                .config
                .robot(r)
                .and_then(|r| r.providers.first().cloned()),
            None => broker.config.providers.first().map(|p| p.name.clone()),
        };
        if let Some(p) = first {
            return p;
        }
    }
    vault_issuer.to_string()
}

#[derive(Deserialize)]
struct ReadQuery {
    #[serde(default)]
    minimum_seconds: Option<String>,
    #[serde(default)]
    scopes: Option<String>,
    #[serde(default)]
    audiences: Option<String>,
}

/// `GET /v1/secret/oauth/{creds,sts}/<issuer>/<credkey>:<role>`
async fn read_secret(
    State(broker): State<Arc<Broker>>,
    State(vault): State<Arc<VaultState>>,
    Path((kind, issuer, credkey_role)): Path<(String, String, String)>,
    Query(query): Query<ReadQuery>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    let (identity, _, _) = vault.session(&headers)?;
    let Some((credkey, _role)) = credkey_role.rsplit_once(':') else {
        return Err(Failure::new(404, "the path needs <credkey>:<role>"));
    };
    let (scopes, audience) = match kind.as_str() {
        "creds" => (None, None),
        // `sts`: a token reduced to these scopes and audiences.
        "sts" => (query.scopes.clone(), query.audiences.clone()),
        _ => return Err(Failure::new(404, format!("no secret engine path `{kind}`"))),
    };
    let minsecs = match query.minimum_seconds.as_deref() {
        None => 60,
        Some(s) => parse_seconds(s)
            .ok_or_else(|| Failure::new(400, "minimum_seconds: not a number of seconds"))?,
    };
    let vended = match &identity {
        Identity::Robot(robot) => {
            let section = broker
                .config
                .robot(robot)
                .ok_or_else(|| Failure::new(403, "permission denied"))?;
            let credkeys = section.credkeys();
            if !credkeys.iter().any(|k| k == credkey) {
                let refusal = Refusal::forbidden(format!(
                    "permission denied: robot `{robot}` may read only credkey {}",
                    credkeys.join(" or ")
                ));
                return Err(refusal.by(robot, Some(Method::VaultToken)).into());
            }
            let ask = TokenAsk {
                provider: Some(provider_for(&broker, &issuer, Some(robot))),
                scopes,
                audience,
                minsecs: Some(minsecs),
                lifetime: None,
            };
            let caller = Caller {
                robot: robot.clone(),
                method: Method::VaultToken,
            };
            broker
                .vend(&caller, &ask)
                .await?
                .map(|given| (Secret::new(given.access_token), given.expires_in))
        }
        Identity::User(user) => {
            if credkey != user {
                let refusal = Refusal::forbidden(format!(
                    "permission denied: you may read only credkey {user}"
                ));
                let who = crate::caller::Identity::User(user.clone()).store_name();
                return Err(refusal.by(&who, Some(Method::VaultToken)).into());
            }
            let provider = provider_for(&broker, &issuer, None);
            let p = broker
                .config
                .provider(&provider)
                .ok_or_else(|| Failure::new(400, format!("no provider for issuer `{issuer}`")))?;
            let scope = scopes.unwrap_or_else(|| p.scopes.clone().unwrap_or_default());
            let audience = audience.or_else(|| p.audience.clone()).unwrap_or_default();
            broker
                .for_user(user, Method::VaultToken, p, &scope, &audience, minsecs)
                .await?
                .map(|(token, expires)| (token, expires.seconds_after(Timestamp::now())))
        }
    };
    Ok(vended.refusing_as(refuse).answer(|(token, expires_in)| {
        Json(json!({
            "request_id": random(),
            "lease_id": "",
            "renewable": false,
            "lease_duration": 0,
            "data": {
                "access_token": token.expose(),
                "expires_in": expires_in,
            },
        }))
        .into_response()
    }))
}

/// A refusal in Vault's shape.
fn refuse(refusal: Refusal) -> Response {
    Failure::from(refusal).into_response()
}

/// `POST /v1/secret/oauth/creds/<issuer>/<credkey>:<role>` with `{"refresh_token": ...}`:
/// accepted only for the handle a login on this broker gave the same user.
async fn store_secret(
    State(vault): State<Arc<VaultState>>,
    Path((_kind, _issuer, credkey_role)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Failure> {
    let (identity, _, _) = vault.session(&headers)?;
    let body = json_body(&body)?;
    let handle = str_field(&body, "refresh_token").unwrap_or_default();
    let credkey = credkey_role
        .rsplit_once(':')
        .map_or(credkey_role.as_str(), |(c, _)| c);
    let known = vault.take_handle(&handle)?;
    match (identity, known) {
        (Identity::User(user), Some(owner)) if owner == user && credkey == user => {
            Ok(StatusCode::NO_CONTENT)
        }
        _ => Err(Failure::new(
            400,
            "the broker keeps refresh tokens itself; log in through auth/oidc-<issuer>/oidc/auth_url",
        )),
    }
}

/// `POST /v1/auth/oidc-<issuer>/oidc/auth_url`: start a device login at the provider.
async fn auth_url(
    State(broker): State<Arc<Broker>>,
    State(logins): State<Arc<DeviceLogins>>,
    Path(mount): Path<String>,
    crate::conn::Peer(from): crate::conn::Peer,
    body: Bytes,
) -> Result<Json<Value>, Failure> {
    let Some(vault_issuer) = mount.strip_prefix("oidc-") else {
        return Err(Failure::new(404, format!("no auth method at auth/{mount}")));
    };
    let body = json_body(&body)?;
    let client_nonce = str_field(&body, "client_nonce")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Failure::new(400, "client_nonce is required"))?;
    let provider = provider_for(&broker, vault_issuer, None);
    let started = logins
        .start(
            &broker,
            &provider,
            crate::device::Poller::VaultNonce(client_nonce.clone()),
            from,
        )
        .await?;
    Ok(Json(json!({
        "request_id": random(),
        "data": {
            "auth_url": started.verification_uri_complete.unwrap_or(started.verification_uri),
            "user_code": started.user_code,
            "state": started.state,
            // htgettoken busy-loops on 0; the provider's interval, at least 1 s.
            "poll_interval": started.interval.to_string(),
        }
    })))
}

/// `POST /v1/auth/oidc-<issuer>/oidc/poll`: `authorization_pending` until the user has
/// approved; then a Vault token for that user.
async fn poll(
    State(broker): State<Arc<Broker>>,
    State(auth): State<Arc<Authenticators>>,
    State(vault): State<Arc<VaultState>>,
    State(logins): State<Arc<DeviceLogins>>,
    body: Bytes,
) -> Result<Json<Value>, Failure> {
    let body = json_body(&body)?;
    let (Some(state), Some(nonce)) = (str_field(&body, "state"), str_field(&body, "client_nonce"))
    else {
        return Err(Failure::new(400, "state and client_nonce are required"));
    };
    let (provider, client, response) = match logins
        .poll(
            &broker,
            &state,
            &crate::device::Poller::VaultNonce(nonce.clone()),
        )
        .await?
    {
        Polled::Pending { slow_down } => {
            let code = if slow_down {
                "slow_down"
            } else {
                "authorization_pending"
            };
            return Err(Failure::new(400, code));
        }
        Polled::Done {
            provider,
            client,
            response,
        } => (provider, client, response),
    };
    // Who logged in: the ID token, verified against the provider's keys.
    let id_token = response
        .id_token
        .as_ref()
        .ok_or_else(|| Failure::new(502, "the provider sent no ID token"))?;
    let jwt = Jwt::decode(id_token.expose())
        .map_err(|_| Failure::new(502, "the ID token is not a JWT"))?;
    let expect = credkeeper_core::verify::Expectations {
        audience: Some(client.client_id().to_string()),
        leeway: 30,
        ..Default::default()
    };
    auth.jwt
        .keys()
        .verify(&jwt, &client.metadata().issuer, &expect)
        .await
        .map_err(|e| Failure::new(502, format!("the ID token: {e}")))?;
    let user = jwt
        .str_claim("preferred_username")
        .or_else(|| jwt.subject())
        .filter(|u| {
            !u.is_empty()
                && u.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
        })
        .ok_or_else(|| {
            Failure::new(
                502,
                "the ID token names no usable user (preferred_username or sub)",
            )
        })?
        .to_string();
    let identity = crate::caller::Identity::User(user.clone()).store_name();
    broker.keep_login(&identity, &client, &response)?;
    let handle = format!("{HANDLE_PREFIX}{}", random());
    vault.give_handle(&handle, &user)?;
    let ttl = broker.config.vault.token_ttl;
    let policies = vec!["default".to_string(), format!("user-{user}")];
    let token = vault.open(Identity::User(user.clone()), ttl, policies.clone())?;
    tracing::info!(user, provider, "Vault API: OIDC login");
    Ok(Json(auth_answer(
        &token,
        ttl,
        &policies,
        json!({ "credkey": user, "oauth2_refresh_token": handle }),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_is_503_with_a_retry_after_here_too() {
        let response = Failure::from(Refusal::new(Code::Busy, "too many logins")).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().get(header::RETRY_AFTER).is_some());
    }

    #[test]
    fn vault_durations_and_mount_names_parse_as_htgettoken_sends_them() {
        assert_eq!(parse_seconds("604800s"), Some(604800));
        assert_eq!(parse_seconds("604800"), Some(604800));
        assert_eq!(parse_seconds("24h"), Some(86400));
        assert_eq!(parse_seconds("7d"), Some(604800));
        assert_eq!(parse_seconds("3600"), Some(3600));
        assert_eq!(parse_seconds("1w"), None);
        assert_eq!(parse_seconds("-5"), None);
        assert_eq!(
            mount_parts("kerberos-igwn_robot", "kerberos"),
            Some(("igwn", "robot"))
        );
        assert_eq!(
            mount_parts("kerberos-default_default", "kerberos"),
            Some(("default", "default"))
        );
        assert_eq!(mount_parts("kerberos-igwn", "kerberos"), None);
        assert_eq!(mount_parts("oidc-igwn_x", "kerberos"), None);
    }
}
