//! The logins: Kerberos for robots (`auth/kerberos-<issuer>_<role>/login`), and a
//! device-flow login at the provider for users (`auth/oidc-<issuer>/oidc/auth_url`, `poll`).

use super::body::{json_body, str_field};
use super::secret::provider_for;
use super::{Failure, HANDLE_PREFIX, Identity, VaultState, auth_answer, mount_parts};
use crate::auth::Authenticators;
use crate::broker::Broker;
use crate::device::{DeviceLogins, Polled};
use crate::handle::random;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use credkeeper_core::Jwt;
use serde_json::{Value, json};
use std::sync::Arc;

/// `POST /v1/auth/kerberos-<issuer>_<role>/login`
pub(super) async fn kerberos_login(
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

/// `POST /v1/auth/oidc-<issuer>/oidc/auth_url`: start a device login at the provider.
pub(super) async fn auth_url(
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
pub(super) async fn poll(
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
