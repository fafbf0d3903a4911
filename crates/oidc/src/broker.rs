//! The client of a credkeeper broker's robot API (`POST /api/v1/token`): another token
//! source, used by `credkeeper get --server`.

use crate::{Http, OidcError, UrlPolicy};
use credkeeper_core::Secret;
use serde::Deserialize;

pub struct BrokerClient {
    http: Http,
    endpoint: String,
    robot: String,
    secret: Secret,
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
        robot: &str,
        secret: Secret,
    ) -> Result<BrokerClient, OidcError> {
        policy.check("broker", server)?;
        Ok(BrokerClient {
            http,
            endpoint: format!("{}/api/v1/token", server.trim_end_matches('/')),
            robot: robot.to_string(),
            secret,
        })
    }

    /// A one-time web login link: for this robot, or for `user` when the robot may make
    /// links for users.
    pub async fn login_link(&self, user: Option<&str>) -> Result<LoginLink, OidcError> {
        let body = match user {
            Some(u) => serde_json::json!({ "user": u }),
            None => serde_json::json!({}),
        };
        let url = self
            .endpoint
            .replace("/api/v1/token", "/api/v1/login-links");
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
        let (status, value) = self
            .http
            .post_json(url, body, (&self.robot, self.secret.expose()))
            .await?;
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
