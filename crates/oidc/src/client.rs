//! One registered client at one issuer, and the grants it can perform.

use crate::discovery::ProviderMetadata;
use crate::token::{self, TokenResponse};
use crate::{Http, OidcError, Pkce};
use credkeeper_core::{Secret, Timestamp};
use serde::Deserialize;
use std::time::Duration;

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
const EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// How the client authenticates at the token endpoint (RFC 6749 §2.3).
#[derive(Clone, Debug)]
pub enum ClientAuth {
    /// A public client: only `client_id` in the form.
    None,
    /// `client_secret_basic`.
    Basic(Secret),
    /// `client_secret_post`.
    Post(Secret),
}

/// What a token is asked for: scopes and audience. Both optional; the issuer's defaults
/// apply to what is left out.
#[derive(Clone, Debug, Default)]
pub struct TokenRequest {
    /// Space-separated scopes.
    pub scopes: Option<String>,
    pub audience: Option<String>,
}

impl From<&credkeeper_core::TokenAsk> for TokenRequest {
    fn from(ask: &credkeeper_core::TokenAsk) -> TokenRequest {
        TokenRequest {
            scopes: ask.scope_text().map(str::to_string),
            audience: ask.audience.clone(),
        }
    }
}

impl TokenRequest {
    /// The audience goes out both as `audience` (what WLCG issuers such as INDIGO IAM
    /// read) and, when it is an absolute URI, as the RFC 8707 `resource` indicator.
    fn params(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if let Some(s) = self.scopes.as_deref().filter(|s| !s.trim().is_empty()) {
            p.push(("scope", s.trim().to_string()));
        }
        if let Some(a) = &self.audience {
            p.push(("audience", a.clone()));
            if url::Url::parse(a).is_ok() {
                p.push(("resource", a.clone()));
            }
        }
        p
    }
}

/// A device authorization response (RFC 8628 §3.2).
#[derive(Debug, Deserialize)]
pub struct DeviceAuthorization {
    pub device_code: Secret,
    pub user_code: String,
    pub verification_uri: String,
    #[serde(default)]
    pub verification_uri_complete: Option<String>,
    pub expires_in: i64,
    #[serde(default)]
    pub interval: Option<u64>,
}

/// One poll of the token endpoint during the device flow.
#[derive(Debug)]
pub enum DevicePoll {
    Pending,
    SlowDown,
    Done(TokenResponse),
}

pub struct Client {
    http: Http,
    meta: ProviderMetadata,
    client_id: String,
    auth: ClientAuth,
}

impl Client {
    pub fn new(http: Http, meta: ProviderMetadata, client_id: &str, auth: ClientAuth) -> Client {
        Client {
            http,
            meta,
            client_id: client_id.to_string(),
            auth,
        }
    }

    pub fn metadata(&self) -> &ProviderMetadata {
        &self.meta
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn is_confidential(&self) -> bool {
        !matches!(self.auth, ClientAuth::None)
    }

    /// POST to `url` with this client's authentication added.
    async fn post(
        &self,
        url: &str,
        mut form: Vec<(&'static str, String)>,
    ) -> Result<(u16, serde_json::Value), OidcError> {
        let mut basic = None;
        match &self.auth {
            ClientAuth::None => form.push(("client_id", self.client_id.clone())),
            ClientAuth::Post(secret) => {
                form.push(("client_id", self.client_id.clone()));
                form.push(("client_secret", secret.expose().to_string()));
            }
            ClientAuth::Basic(secret) => basic = Some((self.client_id.as_str(), secret.expose())),
        }
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.http.post_form(url, &pairs, basic).await
    }

    async fn token(&self, form: Vec<(&'static str, String)>) -> Result<TokenResponse, OidcError> {
        let url = &self.meta.token_endpoint;
        let (status, body) = self.post(url, form).await?;
        token::parse(url, status, body)
    }

    /// The refresh grant (RFC 6749 §6), asking for `req` (a subset of the original grant).
    pub async fn refresh(
        &self,
        refresh_token: &Secret,
        req: &TokenRequest,
    ) -> Result<TokenResponse, OidcError> {
        let mut form = vec![
            ("grant_type", "refresh_token".to_string()),
            ("refresh_token", refresh_token.expose().to_string()),
        ];
        form.extend(req.params());
        self.token(form).await
    }

    /// The client credentials grant (RFC 6749 §4.4); confidential clients only.
    pub async fn client_credentials(&self, req: &TokenRequest) -> Result<TokenResponse, OidcError> {
        let mut form = vec![("grant_type", "client_credentials".to_string())];
        form.extend(req.params());
        self.token(form).await
    }

    /// Token exchange (RFC 8693): trade `subject_token` for a token with `req`.
    pub async fn exchange(
        &self,
        subject_token: &Secret,
        req: &TokenRequest,
    ) -> Result<TokenResponse, OidcError> {
        let mut form = vec![
            ("grant_type", EXCHANGE_GRANT.to_string()),
            ("subject_token", subject_token.expose().to_string()),
            ("subject_token_type", ACCESS_TOKEN_TYPE.to_string()),
            ("requested_token_type", ACCESS_TOKEN_TYPE.to_string()),
        ];
        form.extend(req.params());
        self.token(form).await
    }

    /// Start the device flow (RFC 8628 §3.1).
    pub async fn start_device(&self, req: &TokenRequest) -> Result<DeviceAuthorization, OidcError> {
        let url = self
            .meta
            .device_authorization_endpoint
            .as_deref()
            .ok_or(OidcError::Unsupported("device authorization endpoint"))?;
        let (status, body) = self.post(url, req.params()).await?;
        let body = token::success(url, status, body)?;
        serde_json::from_value(body).map_err(|e| OidcError::BadResponse {
            url: url.to_string(),
            what: "device authorization response",
            reason: e.to_string(),
        })
    }

    /// Poll once for the device flow's outcome (RFC 8628 §3.4, §3.5).
    pub async fn poll_device(&self, device: &DeviceAuthorization) -> Result<DevicePoll, OidcError> {
        let form = vec![
            ("grant_type", DEVICE_GRANT.to_string()),
            ("device_code", device.device_code.expose().to_string()),
        ];
        match self.token(form).await {
            Ok(t) => Ok(DevicePoll::Done(t)),
            Err(e) => match e.oauth_code() {
                Some("authorization_pending") => Ok(DevicePoll::Pending),
                Some("slow_down") => Ok(DevicePoll::SlowDown),
                Some("expired_token") => Err(OidcError::DeviceExpired),
                Some("access_denied") => Err(OidcError::AccessDenied),
                _ => Err(e),
            },
        }
    }

    /// Poll until the user has approved, honouring `interval`, `slow_down` (+5 s each,
    /// §3.5) and `expires_in`.
    pub async fn wait_for_device(
        &self,
        device: &DeviceAuthorization,
    ) -> Result<TokenResponse, OidcError> {
        let mut interval = Duration::from_secs(device.interval.unwrap_or(5).max(1));
        let deadline = Timestamp::now().plus_secs(device.expires_in);
        loop {
            tokio::time::sleep(interval).await;
            if Timestamp::now() > deadline {
                return Err(OidcError::DeviceExpired);
            }
            match self.poll_device(device).await? {
                DevicePoll::Done(t) => return Ok(t),
                DevicePoll::Pending => {}
                DevicePoll::SlowDown => interval += Duration::from_secs(5),
            }
        }
    }

    /// The authorization URL for the code flow with PKCE (RFC 6749 §4.1, RFC 7636).
    /// Asking for `offline_access` also asks for consent, which OIDC Core §11 requires
    /// before an issuer hands out a refresh token.
    pub fn authorization_url(
        &self,
        redirect_uri: &str,
        req: &TokenRequest,
        pkce: &Pkce,
        state: &str,
    ) -> Result<String, OidcError> {
        let endpoint = self
            .meta
            .authorization_endpoint
            .as_deref()
            .ok_or(OidcError::Unsupported("authorization endpoint"))?;
        let mut url = url::Url::parse(endpoint).map_err(|e| OidcError::BadResponse {
            url: endpoint.to_string(),
            what: "authorization endpoint",
            reason: e.to_string(),
        })?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.client_id)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("state", state)
                .append_pair("code_challenge", &pkce.challenge)
                .append_pair("code_challenge_method", "S256");
            for (k, v) in req.params() {
                q.append_pair(k, &v);
            }
            if req
                .scopes
                .as_deref()
                .is_some_and(|s| s.split_whitespace().any(|s| s == "offline_access"))
            {
                q.append_pair("prompt", "consent");
            }
        }
        Ok(url.into())
    }

    /// Redeem an authorization code (RFC 6749 §4.1.3) with its PKCE verifier.
    pub async fn exchange_code(
        &self,
        code: &Secret,
        redirect_uri: &str,
        pkce: &Pkce,
    ) -> Result<TokenResponse, OidcError> {
        let form = vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.expose().to_string()),
            ("redirect_uri", redirect_uri.to_string()),
            ("code_verifier", pkce.verifier.expose().to_string()),
        ];
        self.token(form).await
    }

    /// Revoke a token (RFC 7009). `Unsupported` when the issuer has no revocation endpoint.
    pub async fn revoke(&self, token: &Secret, hint: &str) -> Result<(), OidcError> {
        let url = self
            .meta
            .revocation_endpoint
            .as_deref()
            .ok_or(OidcError::Unsupported("revocation endpoint"))?;
        let form = vec![
            ("token", token.expose().to_string()),
            ("token_type_hint", hint.to_string()),
        ];
        let (status, body) = self.post(url, form).await?;
        token::success(url, status, body)?;
        Ok(())
    }
}
