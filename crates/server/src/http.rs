//! The HTTP face of the broker: routes, the robot-authentication extractor, JSON errors.

use crate::broker::{Broker, Refusal, TokenAsk};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use credkeeper_core::Secret;
use std::sync::Arc;

pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/api/v1/token", post(token))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .merge(crate::web::router())
        .with_state(broker)
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (
            status,
            Json(serde_json::json!({"error": self.code, "message": self.message})),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"credkeeper\""),
            );
        }
        response
    }
}

/// A robot that proved who it is with HTTP Basic (`robot:secret`).
pub struct Robot(pub String);

fn basic(headers: &HeaderMap) -> Option<(String, Secret)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    Some((user.to_string(), Secret::new(pass)))
}

impl FromRequestParts<Arc<Broker>> for Robot {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, broker: &Arc<Broker>) -> Result<Robot, Refusal> {
        let Some((robot, secret)) = basic(&parts.headers) else {
            return Err(Refusal {
                code: "unauthenticated",
                message: "send the robot's name and secret with HTTP Basic authentication".into(),
            });
        };
        match broker.authenticate(&robot, &secret).await {
            Ok(()) => Ok(Robot(robot)),
            Err(refusal) => {
                broker.record_refusal(&robot, &refusal);
                Err(refusal)
            }
        }
    }
}

async fn token(
    State(broker): State<Arc<Broker>>,
    Robot(robot): Robot,
    body: Result<Json<TokenAsk>, JsonRejection>,
) -> Result<Json<crate::broker::TokenGiven>, Refusal> {
    let Json(ask) = body.map_err(|e| {
        let refusal = Refusal {
            code: "bad_request",
            message: format!("request body: {}", e.body_text()),
        };
        broker.record_refusal(&robot, &refusal);
        refusal
    })?;
    broker.vend(&robot, &ask).await.map(Json)
}

async fn discovery(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    Json(broker.issuer.discovery())
}

async fn jwks(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(serde_json::to_value(broker.issuer.jwks()).unwrap_or_default()),
    )
}

async fn ready(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    match broker.store.list() {
        Ok(_) => (StatusCode::OK, "ready\n".to_string()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {e}\n"),
        ),
    }
}

async fn metrics(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        broker.metrics.render(),
    )
}
