//! The client of a credkeeper broker's robot API (`POST /api/v1/token`): another token
//! source, used by `credkeeper get --server`.

use crate::{AuthError, Http, OidcError, UrlPolicy};
use credkeeper_core::Secret;
use serde::Deserialize;

pub struct BrokerClient {
    http: Http,
    endpoint: String,
    host: String,
    auth: BrokerAuth,
}

/// How the client proves the robot's identity to the broker.
pub enum BrokerAuth {
    /// The robot's name and secret (HTTP Basic).
    Secret { robot: String, secret: Secret },
    /// Kerberos (HTTP Negotiate), one exchange per request.
    Negotiate(Box<dyn Negotiator>),
    /// A JWT the broker trusts for this robot (e.g. a Kubernetes service-account token),
    /// read from this file at every request: a projected service-account token is
    /// rotated by the kubelet, and a long-running process must follow it.
    BearerFile(std::path::PathBuf),
}

/// Makes Negotiate tokens for a server (the Kerberos side lives with the caller).
pub trait Negotiator: Send + Sync {
    /// Begin an exchange with the server at `host`: the `Authorization` value to send and
    /// the check of the server's reply.
    fn begin(&self, host: &str) -> Result<(String, Box<dyn ReplyCheck>), AuthError>;
}

/// Checks the server's `WWW-Authenticate: Negotiate` reply (mutual authentication).
pub trait ReplyCheck: Send {
    fn check(self: Box<Self>, www_authenticate: Option<&str>) -> Result<(), AuthError>;
}

/// What is asked of the broker.
#[derive(Clone, Debug, Default)]
pub struct BrokerAsk {
    pub provider: Option<String>,
    pub scopes: Option<String>,
    pub audience: Option<String>,
    pub minsecs: i64,
}

#[derive(Debug, Deserialize)]
pub struct BrokerToken {
    pub access_token: Secret,
    pub expires_in: i64,
    #[serde(default)]
    pub scope: Option<String>,
}

/// A device login the broker started for the robot.
#[derive(Debug, Deserialize)]
pub struct RobotLogin {
    pub state: String,
    pub user_code: String,
    pub verification_uri: String,
    #[serde(default)]
    pub verification_uri_complete: Option<String>,
    pub interval: u64,
    pub expires_in: i64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum LoginPoll {
    Pending,
    SlowDown,
    Done,
}

#[derive(Debug, Deserialize)]
pub struct LoginLink {
    pub url: String,
    pub expires_in: i64,
    pub identity: String,
}

impl BrokerClient {
    pub fn new(
        http: Http,
        server: &str,
        policy: UrlPolicy,
        auth: BrokerAuth,
    ) -> Result<BrokerClient, OidcError> {
        policy.check("broker", server)?;
        let host = url::Url::parse(server)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        Ok(BrokerClient {
            http,
            endpoint: format!("{}/api/v1/token", server.trim_end_matches('/')),
            host,
            auth,
        })
    }

    /// A one-time web login link: for this robot, or for `user` when the robot may make
    /// links for users.
    pub async fn login_link(&self, user: Option<&str>) -> Result<LoginLink, OidcError> {
        let body = match user {
            Some(u) => serde_json::json!({ "user": u }),
            None => serde_json::json!({}),
        };
        let url = self.api("login-links");
        let value = self.call(&url, &body).await?;
        serde_json::from_value(value).map_err(|e| OidcError::BadResponse {
            url,
            what: "login link response",
            reason: e.to_string(),
        })
    }

    async fn call(
        &self,
        url: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, OidcError> {
        self.request(reqwest::Method::POST, url, Some(body)).await
    }

    /// A request authenticated as the robot; a Negotiate answer must prove the server.
    async fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, OidcError> {
        let (authorization, check) = match &self.auth {
            BrokerAuth::Secret { robot, secret } => {
                use base64::Engine;
                let pair = format!("{robot}:{}", secret.expose());
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                (format!("Basic {encoded}"), None)
            }
            BrokerAuth::BearerFile(path) => {
                let token = credkeeper_sink::read(path).map_err(AuthError::JwtFile)?;
                (format!("Bearer {}", token.expose()), None)
            }
            BrokerAuth::Negotiate(negotiator) => {
                let (authorization, check) = negotiator
                    .begin(&self.host)
                    .map_err(OidcError::Authentication)?;
                (authorization, Some(check))
            }
        };
        let answer = self
            .http
            .send_json(method, url, body, &[("authorization", &authorization)])
            .await?;
        if let Some(check) = check
            && (200..300).contains(&answer.status)
        {
            check
                .check(answer.www_authenticate.as_deref())
                .map_err(OidcError::Authentication)?;
        }
        finish(url, answer.status, answer.body)
    }

    /// `<server>/api/v1/<path>`
    fn api(&self, path: &str) -> String {
        self.endpoint
            .replace("/api/v1/token", &format!("/api/v1/{path}"))
    }

    /// An identity token for a registry whose token server (`realm`) is this broker: the
    /// robot's registry access without a registry password. `None` when the realm is not
    /// on this broker (nothing is sent there).
    pub async fn registry_identity(
        &self,
        realm: &str,
        service: &str,
    ) -> Result<Option<Secret>, OidcError> {
        let base = self.endpoint.trim_end_matches("/api/v1/token");
        if realm != format!("{base}/registry/token") {
            return Ok(None);
        }
        let mut url = url::Url::parse(realm).map_err(|e| OidcError::BadResponse {
            url: realm.to_string(),
            what: "registry realm",
            reason: e.to_string(),
        })?;
        url.query_pairs_mut()
            .append_pair("service", service)
            .append_pair("offline_token", "true")
            .append_pair("client_id", "credkeeper");
        let value = self
            .request(reqwest::Method::GET, url.as_str(), None)
            .await?;
        Ok(value
            .get("refresh_token")
            .and_then(|t| t.as_str())
            .map(Secret::new))
    }

    /// Start the robot's first login at `provider` (a device flow the broker runs).
    pub async fn start_login(&self, provider: &str) -> Result<RobotLogin, OidcError> {
        let url = self.api("logins");
        let value = self
            .call(&url, &serde_json::json!({ "provider": provider }))
            .await?;
        serde_json::from_value(value).map_err(|e| OidcError::BadResponse {
            url,
            what: "login start response",
            reason: e.to_string(),
        })
    }

    /// Poll the login once: `Ok(true)` when it is done and the broker holds the
    /// credential; `Ok(false)` while the human has not finished (`slow_down` is reported
    /// the same way; callers double their interval on it via [`RobotLogin::interval`]).
    pub async fn poll_login(&self, state: &str) -> Result<LoginPoll, OidcError> {
        let url = self.api(&format!("logins/{state}"));
        let value = self.call(&url, &serde_json::json!({})).await?;
        Ok(match value.get("status").and_then(|s| s.as_str()) {
            Some("done") => LoginPoll::Done,
            Some("slow_down") => LoginPoll::SlowDown,
            _ => LoginPoll::Pending,
        })
    }

    pub async fn token(&self, ask: &BrokerAsk) -> Result<BrokerToken, OidcError> {
        let mut body = serde_json::json!({ "minsecs": ask.minsecs });
        for (k, v) in [
            ("provider", &ask.provider),
            ("scopes", &ask.scopes),
            ("audience", &ask.audience),
        ] {
            if let Some(v) = v {
                body[k] = serde_json::Value::String(v.clone());
            }
        }
        let value = self.call(&self.endpoint, &body).await?;
        serde_json::from_value(value).map_err(|e| OidcError::BadResponse {
            url: self.endpoint.clone(),
            what: "broker token response",
            reason: e.to_string(),
        })
    }
}

/// The broker's answer: its JSON error as an error, any other non-2xx status too.
fn finish(
    url: &str,
    status: u16,
    value: serde_json::Value,
) -> Result<serde_json::Value, OidcError> {
    if let (Some(code), Some(message)) = (
        value.get("error").and_then(|v| v.as_str()),
        value.get("message").and_then(|v| v.as_str()),
    ) {
        return Err(OidcError::Refused {
            code: code.to_string(),
            message: message.to_string(),
        });
    }
    if !(200..300).contains(&status) {
        return Err(OidcError::Status {
            url: url.to_string(),
            status,
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreadable_jwt_file_fails_the_request_before_anything_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("sa-token");
        // Nothing listens on port 9 (discard): had a request been sent, the error would be
        // Unreachable, not the JWT file's.
        let client = BrokerClient::new(
            Http::new().unwrap(),
            "http://127.0.0.1:9",
            UrlPolicy {
                allow_insecure_loopback: true,
            },
            BrokerAuth::BearerFile(missing.clone()),
        )
        .unwrap();
        let err = client.token(&BrokerAsk::default()).await.unwrap_err();
        assert!(
            matches!(err, OidcError::Authentication(AuthError::JwtFile(_))),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with("authentication: JWT file: "),
            "{err}"
        );
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
    }
}
