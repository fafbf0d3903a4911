//! The secret engine: reading a bearer token under
//! `secret/oauth/{creds,sts}/<issuer>/<credkey>:<role>`, and the write that "stores" the
//! refresh token a login handed out (the broker keeps it; only the handle comes back).

use super::body::{json_body, str_field};
use super::{Failure, Identity, VaultState};
use crate::broker::{Broker, TokenAsk};
use crate::caller::{Caller, Method};
use crate::handle::random;
use crate::refusal::Refusal;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use credkeeper_core::{Secret, Timestamp, parse_seconds};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// The configured provider (or `local`) behind a Vault issuer name.
pub(super) fn provider_for(broker: &Broker, vault_issuer: &str, robot: Option<&str>) -> String {
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
pub(super) struct ReadQuery {
    #[serde(default)]
    minimum_seconds: Option<String>,
    #[serde(default)]
    scopes: Option<String>,
    #[serde(default)]
    audiences: Option<String>,
}

/// `GET /v1/secret/oauth/{creds,sts}/<issuer>/<credkey>:<role>`
pub(super) async fn read_secret(
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
                .map(|given| (Secret::new(given.access_token.expose()), given.expires_in))
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
pub(super) fn refuse(refusal: Refusal) -> Response {
    Failure::from(refusal).into_response()
}

/// `POST /v1/secret/oauth/creds/<issuer>/<credkey>:<role>` with `{"refresh_token": ...}`:
/// accepted only for the handle a login on this broker gave the same user.
pub(super) async fn store_secret(
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
