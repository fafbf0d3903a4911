//! The HTTP face of the broker: routes, the robot-authentication extractor, JSON errors.

use crate::auth::Robot;
use crate::broker::{Broker, TokenAsk};
use crate::device::DeviceLogins;
use crate::outcome::Outcome;
use crate::refusal::{Code, Refusal, RefusedTo};
use crate::state::App;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;

pub fn router(app: App) -> Router {
    let on_own_listener = app.broker.config.server.metrics_listen.is_some();
    // The routes that hand out or refuse something, behind the layer that counts and logs
    // it; the others (probes, public keys, metrics) have nothing to log and skip its cost.
    let told = Router::new()
        .route("/api/v1/token", post(token))
        .route(
            "/registry/token",
            get(crate::registry_token::get_token).post(crate::registry_token::post_token),
        )
        .route("/api/v1/logins", post(start_login))
        .route("/api/v1/logins/{state}", post(poll_login))
        .merge(crate::web::router())
        .merge(crate::vault::router())
        .layer(axum::middleware::from_fn_with_state(
            app.broker.clone(),
            record,
        ));
    let router = told
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready));
    let router = if on_own_listener {
        router
    } else {
        router.route("/metrics", get(metrics))
    };
    router
        .layer(axum::middleware::from_fn(crate::auth::negotiate_reply))
        .with_state(app)
}

/// The layer that counts and logs what each request handed out or was refused (the
/// [`Outcome`] or [`RefusedTo`] its response carries; handlers neither count nor log). Every
/// answer waits for its line, so the log never lags behind what callers were told; a vend
/// whose line could not be written is refused instead (`audit_unavailable`), as Vault's
/// audit device refuses what it cannot log. A refusal hands nothing out, so it goes out
/// whatever became of its line.
async fn record(
    State(broker): State<Arc<Broker>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    if let Some(vend) = response.extensions_mut().remove::<Outcome>() {
        if !broker.record_vend(&vend).written().await {
            return (vend.refuse)(Refusal::new(
                Code::AuditUnavailable,
                "the audit log cannot be written; no token is handed out without its line",
            ));
        }
    } else if let Some(refused) = response.extensions_mut().remove::<RefusedTo>() {
        broker.record_refusal(&refused).written().await;
    }
    response
}

async fn token(
    State(broker): State<Arc<Broker>>,
    Robot(caller): Robot,
    body: Result<Json<TokenAsk>, JsonRejection>,
) -> Result<Response, Refusal> {
    let Json(ask) = body.map_err(|e| {
        Refusal::new(Code::BadRequest, format!("request body: {}", e.body_text()))
            .by(&caller.robot, Some(caller.method))
    })?;
    let vended = broker.vend(&caller, &ask).await?;
    Ok(vended.answer(|given| {
        (
            [(header::CONTENT_TYPE, "application/json")],
            given.to_json(),
        )
            .into_response()
    }))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginAsk {
    provider: String,
}

/// `POST /api/v1/logins`: a robot's first login at a provider, as a device flow the broker
/// runs; a human completes it at the verification URL.
async fn start_login(
    State(broker): State<Arc<Broker>>,
    State(logins): State<Arc<DeviceLogins>>,
    Robot(caller): Robot,
    body: Result<Json<LoginAsk>, JsonRejection>,
) -> Result<Json<serde_json::Value>, Refusal> {
    let Json(ask) = body
        .map_err(|e| Refusal::new(Code::BadRequest, format!("request body: {}", e.body_text())))?;
    if let Err(refusal) = crate::policy::robot_for(&broker.config, &caller.robot, &ask.provider) {
        return Err(refusal.by(&caller.robot, Some(caller.method)));
    }
    let started = logins
        .start(
            &broker,
            &ask.provider,
            crate::device::Poller::Robot(caller.robot.clone()),
            None,
        )
        .await?;
    Ok(Json(serde_json::json!({
        "state": started.state,
        "user_code": started.user_code,
        "verification_uri": started.verification_uri,
        "verification_uri_complete": started.verification_uri_complete,
        "interval": started.interval,
        "expires_in": started.expires_in,
    })))
}

/// `POST /api/v1/logins/<state>`: poll once; when the human has approved, the refresh
/// token is stored for the robot (and never sent to the client).
async fn poll_login(
    State(broker): State<Arc<Broker>>,
    State(logins): State<Arc<DeviceLogins>>,
    Robot(caller): Robot,
    axum::extract::Path(state): axum::extract::Path<String>,
) -> Result<Json<serde_json::Value>, Refusal> {
    use crate::device::Polled;
    match logins
        .poll(
            &broker,
            &state,
            &crate::device::Poller::Robot(caller.robot.clone()),
        )
        .await?
    {
        Polled::Pending { slow_down } => Ok(Json(serde_json::json!({
            "status": if slow_down { "slow_down" } else { "pending" }
        }))),
        Polled::Done {
            provider,
            client,
            response,
        } => {
            broker.keep_login(&caller.robot, &client, &response)?;
            tracing::info!(robot = caller.robot, provider, "robot login stored");
            Ok(Json(
                serde_json::json!({ "status": "done", "provider": provider }),
            ))
        }
    }
}

async fn discovery(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    Json(broker.issuer.discovery())
}

async fn jwks(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(serde_json::to_value(&*broker.issuer.jwks()).unwrap_or_default()),
    )
}

async fn ready(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    match broker.store.ping() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {e}\n"),
        ),
    }
}

/// `/metrics` alone, for `[server] metrics_listen`.
pub fn metrics_router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(broker)
}

async fn metrics(State(broker): State<Arc<Broker>>, headers: HeaderMap) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if !broker.metrics.allows(authorization) {
        let mut refused =
            (StatusCode::UNAUTHORIZED, "metrics need a bearer token\n").into_response();
        refused.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"credkeeper-metrics\""),
        );
        return refused;
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        broker.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_is_503_with_a_retry_after() {
        let response = Refusal::new(Code::Busy, "too many logins in progress").into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let after = response.headers().get(header::RETRY_AFTER).unwrap();
        assert!(after.to_str().unwrap().parse::<u64>().unwrap() > 0);
    }
}
