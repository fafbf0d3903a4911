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
//!
//! The rooms: `login` (Kerberos and OIDC logins), `token` (token create and lookup),
//! `secret` (the bearer-token read and write), `body` (request bodies); here, the
//! routes, the tokens' and handles' shared state, and Vault's error shape.

use crate::auth::Authenticators;
use crate::broker::Broker;
use crate::device::DeviceLogins;
use crate::handle::random;
use crate::refusal::{Code, Refusal, RefusedTo};
use crate::shared::Shared;
use axum::extract::FromRef;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use credkeeper_core::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;

mod body;
mod login;
mod secret;
mod token;

pub use body::{VaultBody, parse_body};
use login::{auth_url, kerberos_login, poll};
use secret::{read_secret, store_secret};
use token::{lookup_self, token_create};

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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header;
    use credkeeper_core::parse_seconds;

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
