//! The web login pages: a one-time link opens a session for one identity (a user, or a
//! robot whose first login a human completes); the session logs in to providers with
//! authorization code + PKCE, and lists and revokes what is stored.
//!
//! Plain server-rendered HTML, no JavaScript. Protections: one-time links that expire;
//! an HttpOnly, SameSite=Lax session cookie (Secure when the broker's URL is https); a
//! per-session CSRF token in every form; `state`, `nonce` and PKCE on every provider
//! login, with the `state` bound to the session that started it.
//!
//! Links, sessions and pending logins live in memory: a restarted broker forgets them,
//! which fails closed (the user asks for a new link).

mod error;
mod target;

use crate::auth::Authenticators;
use crate::auth::Robot;
use crate::broker::Broker;
use crate::caller::Identity;
use crate::handle::random;
use crate::refusal::{Code, Refusal};
use crate::shared::Shared;
use axum::extract::FromRef;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use credkeeper_core::{Jwt, Secret, Timestamp};
use credkeeper_oidc::{OidcError, Pkce};
use credkeeper_sink::condor::keyfile::{self, KeyAd};
use credkeeper_store::StoreError;
use error::WebError;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use target::targets;

const LINK_SECS: i64 = 600;
const SESSION_SECS: i64 = 1800;
const PENDING_SECS: i64 = 600;
const COOKIE: &str = "ck_session";

#[derive(Serialize, Deserialize)]
struct Session {
    identity: Identity,
    csrf: String,
    flash: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Pending {
    session: String,
    provider: String,
    redirect: String,
    pkce_verifier: String,
    pkce_challenge: String,
    nonce: String,
}

/// Shared-state kinds: a link token → the identity it signs in; a session cookie → the
/// session; a login's `state` → the login in flight. In the store, so any broker sharing
/// it honours a link, a cookie or a provider's return that another one made.
const LINKS: &str = "web-link";
const SESSIONS: &str = "web-session";
const PENDING: &str = "web-login";

pub struct WebState {
    shared: Shared,
}

fn store_down(e: StoreError) -> PageError {
    tracing::error!("web pages: the store: {e}");
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "The broker's store is unavailable; try again in a moment.",
    )
}

impl WebState {
    pub fn new(shared: Shared) -> WebState {
        WebState { shared }
    }

    /// Mint a one-time link token for `identity`.
    pub fn mint(&self, identity: Identity) -> Result<String, StoreError> {
        let token = random();
        let expires = Timestamp::now().plus_secs(LINK_SECS);
        self.shared.put(LINKS, &token, &identity, expires)?;
        Ok(token)
    }

    /// Use up a link: valid once across every broker, before it expires.
    fn redeem(&self, token: &str) -> Result<Option<Identity>, StoreError> {
        Ok(self
            .shared
            .take(LINKS, token)?
            .map(|(identity, _)| identity))
    }

    fn session(&self, id: &str) -> Result<Option<(Session, Timestamp)>, StoreError> {
        self.shared.get(SESSIONS, id)
    }

    fn save_session(
        &self,
        id: &str,
        session: &Session,
        expires: Timestamp,
    ) -> Result<(), StoreError> {
        self.shared.put(SESSIONS, id, session, expires)
    }
}

/// The pages' routes, for any state that holds the broker, the pages' state and the
/// robots' authenticators.
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<Broker>: FromRef<S>,
    Arc<WebState>: FromRef<S>,
    Arc<Authenticators>: FromRef<S>,
{
    Router::new()
        .route("/api/v1/login-links", post(mint_link))
        .route("/login/{token}", get(open_link))
        .route("/web", get(page))
        .route("/web/login/{provider}", post(start_login))
        .route("/web/revoke/{provider}", post(revoke))
        .route("/callback", get(callback))
        .route("/return/{provider}", get(callback_for))
        .route("/key/{key}", get(open_key))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LinkAsk {
    /// A user to make the link for; absent: the robot itself.
    user: Option<String>,
}

/// `POST /api/v1/login-links`: a robot gets a link for itself, or, when its policy has
/// `login_links = true` (a batch system's credential daemon), for a user.
async fn mint_link(
    State(broker): State<Arc<Broker>>,
    State(web): State<Arc<WebState>>,
    Robot(caller): Robot,
    body: Option<Json<LinkAsk>>,
) -> Result<Json<serde_json::Value>, Refusal> {
    let robot = caller.robot.clone();
    let ask = body.map(|Json(a)| a).unwrap_or_default();
    let identity = match ask.user {
        None => Identity::Robot(robot.clone()),
        Some(user) => {
            let allowed = broker.config.robot(&robot).is_some_and(|r| r.login_links);
            if !allowed {
                let refusal = Refusal::forbidden(format!(
                    "robot `{robot}` may not make login links for users"
                ));
                return Err(refusal.by(&robot, Some(caller.method)));
            }
            if user.is_empty()
                || !user
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
            {
                return Err(Refusal::new(
                    Code::BadRequest,
                    "user names are letters, digits and - _ . @",
                ));
            }
            Identity::User(user)
        }
    };
    let token = web
        .mint(identity.clone())
        .map_err(|e| Refusal::store_unavailable("login links", &e))?;
    Ok(Json(serde_json::json!({
        "url": format!("{}/login/{token}", broker.issuer.url()),
        "expires_in": LINK_SECS,
        "identity": identity.store_name(),
    })))
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(str::to_string)
        })
}

fn page_response(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} · credkeeper</title>\
         <meta name=\"viewport\" content=\"width=device-width\"></head><body><h1>{t}</h1>{body}</body></html>",
        t = esc(title)
    );
    let mut r = (status, Html(html)).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; form-action 'self' https: http:; frame-ancestors 'none'",
        ),
    );
    r
}

/// A page that explains why the request cannot go on.
struct PageError {
    status: StatusCode,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        page_response(
            self.status,
            "Cannot continue",
            &format!("<p class=\"error\">{}</p>", esc(&self.message)),
        )
    }
}

fn error_page(status: StatusCode, message: &str) -> PageError {
    PageError {
        status,
        message: message.to_string(),
    }
}

/// HTML-escape text.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

async fn open_link(
    State(broker): State<Arc<Broker>>,
    State(web): State<Arc<WebState>>,
    Path(token): Path<String>,
) -> Response {
    let identity = match web.redeem(&token) {
        Ok(identity) => identity,
        Err(e) => return store_down(e).into_response(),
    };
    let Some(identity) = identity else {
        return error_page(
            StatusCode::FORBIDDEN,
            "This login link is not valid: it was already used, it expired, or it never existed. Ask for a new one.",
        )
        .into_response();
    };
    start_session(&broker, &web, identity)
}

/// A new session for `identity`: the cookie, and off to the credential page.
fn start_session(broker: &Broker, web: &WebState, identity: Identity) -> Response {
    let id = random();
    let session = Session {
        identity,
        csrf: random(),
        flash: None,
    };
    let expires = Timestamp::now().plus_secs(SESSION_SECS);
    if let Err(e) = web.save_session(&id, &session, expires) {
        return store_down(e).into_response();
    }
    let secure = if broker.issuer.url().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie =
        format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax; Max-Age={SESSION_SECS}{secure}");
    let mut r = Redirect::to("/web").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// The session of the request (its cookie's id and the session), if valid and not expired.
fn with_session(
    web: &WebState,
    headers: &HeaderMap,
) -> Result<(String, Session, Timestamp), PageError> {
    let id = session_id(headers).ok_or_else(no_session)?;
    let (session, expires) = web
        .session(&id)
        .map_err(store_down)?
        .ok_or_else(no_session)?;
    Ok((id, session, expires))
}

/// A CredD key file's ads. The name must be the CredD's 64 hex digits, and the file a
/// regular file (never a symlink).
pub(crate) fn read_key_file(cred_dir: &std::path::Path, key: &str) -> Result<Vec<KeyAd>, WebError> {
    if key.len() != 64 || !key.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(WebError::NotAKeyLink);
    }
    let path = cred_dir.join(key);
    let meta = std::fs::symlink_metadata(&path).map_err(|_| WebError::UnknownKeyLink)?;
    if !meta.file_type().is_file() {
        return Err(WebError::KeyLinkNotAFile);
    }
    let text = std::fs::read_to_string(&path).map_err(WebError::KeyFileUnreadable)?;
    Ok(keyfile::parse(&text)?)
}

/// `GET /key/<hex>`: the CredD's login URL; the key file names the local user and the
/// providers to log in to.
async fn open_key(
    State(broker): State<Arc<Broker>>,
    State(web): State<Arc<WebState>>,
    Path(key): Path<String>,
) -> Response {
    let Some(cred_dir) = broker.credd_dir() else {
        return error_page(
            StatusCode::NOT_FOUND,
            "This broker serves no HTCondor credential directory.",
        )
        .into_response();
    };
    match read_key_file(&cred_dir, &key) {
        Ok(ads) => {
            let user = ads.last().map(|a| a.local_user.clone()).unwrap_or_default();
            start_session(&broker, &web, Identity::CredD { user, key })
        }
        Err(e) => error_page(StatusCode::NOT_FOUND, &e.to_string()).into_response(),
    }
}

fn no_session() -> PageError {
    error_page(
        StatusCode::UNAUTHORIZED,
        "You are not signed in, or your session expired. Open a new login link.",
    )
}

async fn page(
    State(broker): State<Arc<Broker>>,
    State(web): State<Arc<WebState>>,
    headers: HeaderMap,
) -> Response {
    let (id, mut session, expires) = match with_session(&web, &headers) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let flash = session.flash.take();
    if flash.is_some()
        && let Err(e) = web.save_session(&id, &session, expires)
    {
        return store_down(e).into_response();
    }
    let Session { identity, csrf, .. } = session;
    let mut body = format!("<p id=\"who\">Signed in as {}</p>", esc(&identity.label()));
    if let Some(f) = flash {
        body.push_str(&format!("<p class=\"flash\">{}</p>", esc(&f)));
    }
    let list = match targets(&broker, &identity) {
        Ok(t) => t,
        // The CredD's key file is removed once every login in it is done.
        Err(_) if matches!(identity, Identity::CredD { .. }) => {
            body.push_str(
                "<p class=\"done\">Every login the batch system asked for is done. You can close this window.</p>",
            );
            return page_response(StatusCode::OK, "credkeeper", &body);
        }
        Err(e) => return error_page(StatusCode::NOT_FOUND, &e.to_string()).into_response(),
    };
    for t in list {
        let shown = t.shown(&broker, &identity).await;
        let name = esc(&t.name());
        body.push_str(&format!(
            "<section class=\"provider\" data-provider=\"{name}\"><h2>{name}</h2>\
             <p><span class=\"status\">{}</span></p>\
             <form method=\"post\" action=\"/web/login/{name}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <button type=\"submit\">Log in to {name}</button></form>",
            esc(&shown.status)
        ));
        if shown.stored && t.revocable() {
            body.push_str(&format!(
                "<form method=\"post\" action=\"/web/revoke/{name}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <button type=\"submit\">Revoke</button></form>"
            ));
        }
        body.push_str("</section>");
    }
    page_response(StatusCode::OK, "credkeeper", &body)
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

/// The session's identity if the form's CSRF token matches it.
fn checked(
    web: &WebState,
    headers: &HeaderMap,
    form: &CsrfForm,
) -> Result<(String, Identity), PageError> {
    let (id, s, _) = with_session(web, headers)?;
    aws_lc_rs::constant_time::verify_slices_are_equal(s.csrf.as_bytes(), form.csrf.as_bytes())
        .map(|_| (id, s.identity))
        .map_err(|_| {
            error_page(
                StatusCode::FORBIDDEN,
                "The form is stale or was not sent by this page; go back and try again.",
            )
        })
}

fn target_of<'a>(
    broker: &'a Broker,
    identity: &Identity,
    name: &str,
) -> Result<target::Target<'a>, PageError> {
    targets(broker, identity)
        .map_err(|e| error_page(StatusCode::NOT_FOUND, &e.to_string()))?
        .into_iter()
        .find(|t| t.name() == name)
        .ok_or_else(|| {
            error_page(
                StatusCode::NOT_FOUND,
                &format!("No provider `{name}` here."),
            )
        })
}

async fn start_login(
    State(broker): State<Arc<Broker>>,
    State(web): State<Arc<WebState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    let (session, identity) = checked(&web, &headers, &form)?;
    let t = target_of(&broker, &identity, &name)?;
    let client = t
        .client(&broker)
        .await
        .map_err(|e| error_page(StatusCode::BAD_GATEWAY, &e.to_string()))?;
    let request = t.request();
    let pkce = Pkce::new();
    let state = random();
    let nonce = random();
    let redirect = t.redirect_uri(&broker);
    let bad_gateway =
        |e: &dyn std::fmt::Display| error_page(StatusCode::BAD_GATEWAY, &e.to_string());
    let url = client
        .authorization_url(&redirect, &request, &pkce, &state)
        .map_err(|e| bad_gateway(&e))?;
    let mut url = url::Url::parse(&url).map_err(|e| bad_gateway(&e))?;
    url.query_pairs_mut()
        .append_pair("nonce", &nonce)
        .extend_pairs(t.extra_params());
    let pending = Pending {
        session,
        provider: t.name(),
        redirect,
        pkce_verifier: pkce.verifier.expose().to_string(),
        pkce_challenge: pkce.challenge,
        nonce,
    };
    let expires = Timestamp::now().plus_secs(PENDING_SECS);
    web.shared
        .put(PENDING, &state, &pending, expires)
        .map_err(store_down)?;
    Ok(Redirect::to(url.as_str()).into_response())
}

#[derive(Deserialize)]
struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn set_flash(web: &WebState, id: &str, text: String) {
    let saved = web.session(id).and_then(|found| match found {
        Some((mut session, expires)) => {
            session.flash = Some(text);
            web.save_session(id, &session, expires)
        }
        None => Ok(()),
    });
    if let Err(e) = saved {
        tracing::error!("web pages: the store: {e}");
    }
}

/// The credmon web app's return path (`<prefix>/return/<provider>`): the provider comes
/// from the pending login, as upstream takes it from the session.
async fn callback_for(
    broker: State<Arc<Broker>>,
    web: State<Arc<WebState>>,
    Path(_provider): Path<String>,
    headers: HeaderMap,
    query: Query<CallbackQuery>,
) -> Result<Response, PageError> {
    callback(broker, web, headers, query).await
}

async fn callback(
    State(broker): State<Arc<Broker>>,
    State(web): State<Arc<WebState>>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Result<Response, PageError> {
    let state = q
        .state
        .ok_or_else(|| error_page(StatusCode::BAD_REQUEST, "The provider sent no state."))?;
    let too_long = || {
        error_page(
            StatusCode::BAD_REQUEST,
            "This login was not started here, or it took too long. Start it again.",
        )
    };
    let (entry, _): (Pending, _) = web
        .shared
        .get(PENDING, &state)
        .map_err(store_down)?
        .ok_or_else(too_long)?;
    // The login must finish in the browser session that started it; another browser
    // presenting the state neither finishes nor cancels it.
    if session_id(&headers).as_deref() != Some(entry.session.as_str()) {
        return Err(error_page(
            StatusCode::FORBIDDEN,
            "This login was started in another browser session.",
        ));
    }
    // Taken once: a provider's return replayed (at this broker or another) finds nothing.
    let (pending, _): (Pending, _) = web
        .shared
        .take(PENDING, &state)
        .map_err(store_down)?
        .ok_or_else(too_long)?;
    let (_, session, _) = with_session(&web, &headers)?;
    let identity = session.identity;
    let outcome = finish_login(
        &broker,
        &identity,
        &pending,
        q.code,
        q.error,
        q.error_description,
    )
    .await;
    let text = match outcome {
        Ok(()) => format!(
            "Logged in to {}: the refresh token is stored.",
            pending.provider
        ),
        Err(e) => format!("Login to {} failed: {e}", pending.provider),
    };
    set_flash(&web, &pending.session, text);
    Ok(Redirect::to("/web").into_response())
}

async fn finish_login(
    broker: &Broker,
    identity: &Identity,
    pending: &Pending,
    code: Option<String>,
    error: Option<String>,
    description: Option<String>,
) -> Result<(), WebError> {
    if let Some(code) = error {
        return Err(OidcError::OAuth { code, description }.into());
    }
    let code = Secret::new(code.ok_or(WebError::NoCode)?);
    let t =
        target_of(broker, identity, &pending.provider).map_err(|e| WebError::Broker(e.message))?;
    let client = t.client(broker).await?;
    let response = client
        .exchange_code(
            &code,
            &pending.redirect,
            &Pkce {
                verifier: Secret::new(pending.pkce_verifier.clone()),
                challenge: pending.pkce_challenge.clone(),
            },
        )
        .await?;
    // Received straight from the token endpoint, so its signature need not be checked
    // (OIDC Core §3.1.3.7); its nonce must still be ours.
    if let Some(id_token) = &response.id_token {
        let nonce = Jwt::decode(id_token.expose())
            .ok()
            .and_then(|j| j.str_claim("nonce").map(str::to_string));
        if nonce.as_deref() != Some(pending.nonce.as_str()) {
            return Err(WebError::NonceMismatch);
        }
    }
    t.keep(broker, &client, identity, response)?;
    // The CredD's key file goes once every login it asked for is done.
    if let Identity::CredD { key, .. } = identity
        && let (Ok(all), Some(dir)) = (targets(broker, identity), broker.credd_dir())
    {
        let mut done = true;
        for t in &all {
            done &= t.shown(broker, identity).await.stored;
        }
        if done {
            let _ = std::fs::remove_file(dir.join(key));
            tracing::info!("all logins of key file {key} done; removed it");
        }
    }
    Ok(())
}

async fn revoke(
    State(broker): State<Arc<Broker>>,
    State(web): State<Arc<WebState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    let (session, identity) = checked(&web, &headers, &form)?;
    let t = target_of(&broker, &identity, &name)?;
    if !t.revocable() {
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            "This credential is managed by the CredD.",
        ));
    }
    let client = t
        .client(&broker)
        .await
        .map_err(|e| error_page(StatusCode::BAD_GATEWAY, &e.to_string()))?;
    let refresher = credkeeper_refresher::Refresher {
        client: &client,
        store: broker.store.as_ref(),
        identity: &identity.store_name(),
        claim_secs: broker.config.refresher.claim_secs,
    };
    let text = match refresher.logout().await {
        Ok((true, None)) => format!("Revoked and deleted the credential for {name}."),
        Ok((true, Some(e))) => format!(
            "Deleted the credential for {name}; the provider did not confirm revocation ({e})."
        ),
        Ok((false, _)) => format!("Nothing was stored for {name}."),
        Err(e) => format!("Could not revoke: {e}"),
    };
    set_flash(&web, &session, text);
    Ok(Redirect::to("/web").into_response())
}
