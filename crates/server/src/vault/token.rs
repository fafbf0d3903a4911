//! Vault tokens: `auth/token/create` (a child, no longer-lived and with no more policies
//! than its parent) and `auth/token/lookup-self`.

use super::body::{json_body, requested_policies, requested_ttl};
use super::{Failure, Identity, VaultState, auth_answer};
use crate::broker::Broker;
use crate::handle::random;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use credkeeper_core::Timestamp;
use serde_json::{Value, json};
use std::sync::Arc;

/// `POST /v1/auth/token/create`: a new token for the same identity, no longer-lived
/// than the broker allows.
pub(super) async fn token_create(
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

/// `GET /v1/auth/token/lookup-self`
pub(super) async fn lookup_self(
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
