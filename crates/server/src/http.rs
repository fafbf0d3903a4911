//! The HTTP face of the broker: routes, the robot-authentication extractor, JSON errors.

use crate::auth::Robot;
use crate::broker::{Broker, TokenAsk};
use crate::device::DeviceLogins;
use crate::outcome::Outcome;
use crate::refusal::{Code, Refusal, RefusedTo};
use crate::state::App;
use axum::extract::{FromRequest, State};
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

/// A JSON request body, as `axum::Json` takes one (a JSON content type, axum's body
/// limit) but parsed straight from its bytes: no MIME parse and no path tracking on every
/// request of the robot API. Its rejection says what is wrong.
struct JsonBody<T>(T);

/// Why a body is not the JSON a handler takes.
struct BodyRejection(String);

impl BodyRejection {
    fn refusal(self) -> Refusal {
        Refusal::new(Code::BadRequest, format!("request body: {}", self.0))
    }
}

impl IntoResponse for BodyRejection {
    fn into_response(self) -> Response {
        self.refusal().into_response()
    }
}

/// `application/json` or `application/<something>+json`, in any case, parameters allowed.
fn is_json(content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let ends_with = |text: &[u8], end: &[u8]| {
        text.len() >= end.len() && text[text.len() - end.len()..].eq_ignore_ascii_case(end)
    };
    let Some(sub) = essence
        .get(..12)
        .filter(|t| t.eq_ignore_ascii_case(b"application/"))
        .map(|_| &essence[12..])
    else {
        return false;
    };
    sub.eq_ignore_ascii_case(b"json") || (sub.len() > 5 && ends_with(sub, b"+json"))
}

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = BodyRejection;

    async fn from_request(
        request: axum::extract::Request,
        state: &S,
    ) -> Result<Self, BodyRejection> {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| is_json(v.as_bytes()));
        if !json {
            return Err(BodyRejection(
                "send it with Content-Type: application/json".into(),
            ));
        }
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|e| BodyRejection(e.body_text()))?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            BodyRejection(match e.classify() {
                serde_json::error::Category::Data => format!("not what this request takes: {e}"),
                _ => format!("not JSON: {e}"),
            })
        })
    }
}

async fn token(
    State(broker): State<Arc<Broker>>,
    Robot(caller): Robot,
    body: Result<JsonBody<TokenAsk>, BodyRejection>,
) -> Result<Response, Refusal> {
    let JsonBody(ask) = body.map_err(|e| e.refusal().by(&caller.robot, Some(caller.method)))?;
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
    body: Result<JsonBody<LoginAsk>, BodyRejection>,
) -> Result<Json<serde_json::Value>, Refusal> {
    let JsonBody(ask) = body.map_err(BodyRejection::refusal)?;
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

    async fn take(content_type: Option<&str>, body: &str) -> Result<TokenAsk, String> {
        let mut request = axum::extract::Request::new(axum::body::Body::from(body.to_string()));
        if let Some(t) = content_type {
            request
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_str(t).unwrap());
        }
        JsonBody::<TokenAsk>::from_request(request, &())
            .await
            .map(|JsonBody(ask)| ask)
            .map_err(|BodyRejection(why)| why)
    }

    #[tokio::test]
    async fn a_json_body_is_taken_with_a_json_content_type_only_and_says_what_is_wrong() {
        let body = r#"{"scopes":"read:/data","minsecs":60}"#;
        for t in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.credkeeper+json",
        ] {
            let ask = take(Some(t), body).await.unwrap();
            assert_eq!(ask.scopes.as_deref(), Some("read:/data"), "{t}");
            assert_eq!(ask.minsecs, Some(60));
        }
        for t in [
            None,
            Some("text/plain"),
            Some("application/+json"),
            Some("application/jsonx"),
        ] {
            let why = take(t, body).await.unwrap_err();
            assert!(
                why.contains("Content-Type: application/json"),
                "{t:?}: {why}"
            );
        }
        let why = take(Some("application/json"), "{not json")
            .await
            .unwrap_err();
        assert!(why.starts_with("not JSON"), "{why}");
        let why = take(Some("application/json"), r#"{"colour":"blue"}"#)
            .await
            .unwrap_err();
        assert!(why.contains("unknown field `colour`"), "{why}");
        let why = take(Some("application/json"), r#"{"minsecs":"soon"}"#)
            .await
            .unwrap_err();
        assert!(why.contains("invalid type"), "{why}");
    }

    #[test]
    fn busy_is_503_with_a_retry_after() {
        let response = Refusal::new(Code::Busy, "too many logins in progress").into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let after = response.headers().get(header::RETRY_AFTER).unwrap();
        assert!(after.to_str().unwrap().parse::<u64>().unwrap() > 0);
    }
}
