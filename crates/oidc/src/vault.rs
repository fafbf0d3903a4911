//! The client side of the Vault HTTP API subset htgettoken uses (a credkeeper broker,
//! or a Vault with htvault-config): another token source, used by `credkeeper get
//! --vaultserver` and by the binary installed as `igwn-robot-get` / `htgettoken`.
//!
//! Calls: Kerberos login, `token/create`, `token/lookup-self`, and the bearer-token read
//! under `secret/oauth/{creds,sts}/<issuer>/<credkey>:<role>`. The Negotiate token is
//! the caller's (see [`crate::broker::Negotiator`]).

use crate::broker::{Negotiator, ReplyCheck};
use crate::{Http, OidcError};
use credkeeper_core::Secret;

pub struct VaultClient {
    http: Http,
    /// `https://host:port`
    base: String,
    host: String,
}

/// What a login gave: the Vault token and how long it lives.
pub struct VaultLogin {
    pub token: Secret,
    pub lease_secs: i64,
}

/// Which bearer token to read.
pub struct SecretPath<'a> {
    pub issuer: &'a str,
    pub credkey: &'a str,
    pub role: &'a str,
    pub minsecs: i64,
    pub scopes: Option<&'a str>,
    pub audience: Option<&'a str>,
}

/// htgettoken's server form: `https://` when no scheme, `:8200` when no port.
pub fn server_url(server: &str) -> String {
    let with_scheme = if server.contains("://") {
        server.to_string()
    } else {
        format!("https://{server}")
    };
    let trimmed = with_scheme.trim_end_matches('/');
    let (scheme, rest) = trimmed.split_once("://").unwrap_or(("https", trimmed));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    // `[::1]` has colons of its own; a port follows the closing bracket.
    let host_end = authority.rfind(']').unwrap_or(0);
    if authority[host_end..].contains(':') {
        trimmed.to_string()
    } else {
        format!("{scheme}://{authority}:8200{path}")
    }
}

fn refused(url: &str, status: u16, body: &serde_json::Value) -> OidcError {
    let errors: Vec<&str> = body
        .get("errors")
        .and_then(|e| e.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    if errors.is_empty() {
        OidcError::Status {
            url: url.to_string(),
            status,
        }
    } else {
        OidcError::Refused {
            code: format!("HTTP {status}"),
            message: errors.join("; "),
        }
    }
}

impl VaultClient {
    pub fn new(http: Http, server: &str) -> VaultClient {
        let base = server_url(server);
        let host = url::Url::parse(&base)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        VaultClient { http, base, host }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&Secret>,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, OidcError> {
        let url = format!("{}/v1/{path}", self.base);
        let header;
        let headers: &[(&str, &str)] = match token {
            Some(t) => {
                header = t.expose().to_string();
                &[("x-vault-token", &header)]
            }
            None => &[],
        };
        let answer = self.http.send_json(method, &url, body, headers).await?;
        if !(200..300).contains(&answer.status) {
            return Err(refused(&url, answer.status, &answer.body));
        }
        Ok(answer.body)
    }

    /// `POST auth/kerberos-<issuer>_<role>/login` with a Negotiate token for
    /// `host@<server>` (what Vault's Kerberos method expects). The server's reply token is
    /// checked when it sends one (a Vault may not; a credkeeper broker does).
    pub async fn kerberos_login(
        &self,
        negotiator: &dyn Negotiator,
        issuer: &str,
        role: &str,
    ) -> Result<VaultLogin, OidcError> {
        let (authorization, check) = negotiator
            .begin(&self.host)
            .map_err(OidcError::Authentication)?;
        let url = format!("{}/v1/auth/kerberos-{issuer}_{role}/login", self.base);
        let answer = self
            .http
            .send_json(
                reqwest::Method::POST,
                &url,
                None,
                &[
                    ("authorization", &authorization),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
            )
            .await?;
        if !(200..300).contains(&answer.status) {
            return Err(refused(&url, answer.status, &answer.body));
        }
        if answer.www_authenticate.is_some() {
            check_reply(check, answer.www_authenticate.as_deref())?;
        }
        login_of(&url, &answer.body)
    }

    /// `POST auth/token/create`: a token with at most `ttl_secs` of life.
    pub async fn token_create(
        &self,
        token: &Secret,
        ttl_secs: i64,
    ) -> Result<VaultLogin, OidcError> {
        let body = serde_json::json!({ "ttl": format!("{ttl_secs}s"), "renewable": "false" });
        let value = self
            .call(
                reqwest::Method::POST,
                "auth/token/create",
                Some(token),
                Some(&body),
            )
            .await?;
        login_of("auth/token/create", &value)
    }

    /// `GET auth/token/lookup-self`: the token's remaining seconds.
    pub async fn lookup_self(&self, token: &Secret) -> Result<i64, OidcError> {
        let value = self
            .call(
                reqwest::Method::GET,
                "auth/token/lookup-self",
                Some(token),
                None,
            )
            .await?;
        value
            .pointer("/data/ttl")
            .and_then(|t| t.as_i64())
            .ok_or_else(|| OidcError::BadResponse {
                url: format!("{}/v1/auth/token/lookup-self", self.base),
                what: "token lookup",
                reason: "no data.ttl".into(),
            })
    }

    /// Read the bearer token: `creds` for the stored credential's own scopes, `sts` when
    /// scopes or an audience are asked.
    pub async fn read_token(
        &self,
        token: &Secret,
        path: &SecretPath<'_>,
    ) -> Result<Secret, OidcError> {
        let kind = if path.scopes.is_some() || path.audience.is_some() {
            "sts"
        } else {
            "creds"
        };
        // The serializer ends here: it is not Send, and the future must be.
        let query = {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            query.append_pair("minimum_seconds", &path.minsecs.to_string());
            if let Some(s) = path.scopes {
                query.append_pair("scopes", s);
            }
            if let Some(a) = path.audience {
                query.append_pair("audiences", a);
            }
            query.finish()
        };
        let rel = format!(
            "secret/oauth/{kind}/{}/{}:{}?{query}",
            path.issuer, path.credkey, path.role,
        );
        let value = self
            .call(reqwest::Method::GET, &rel, Some(token), None)
            .await?;
        value
            .pointer("/data/access_token")
            .and_then(|t| t.as_str())
            .map(Secret::new)
            .ok_or_else(|| OidcError::BadResponse {
                url: format!("{}/v1/secret/oauth/{kind}/{}/…", self.base, path.issuer),
                what: "bearer token response",
                reason: "no data.access_token".into(),
            })
    }
}

fn check_reply(check: Box<dyn ReplyCheck>, www: Option<&str>) -> Result<(), OidcError> {
    check.check(www).map_err(OidcError::Authentication)
}

fn login_of(url: &str, body: &serde_json::Value) -> Result<VaultLogin, OidcError> {
    let bad = |reason: &str| OidcError::BadResponse {
        url: url.to_string(),
        what: "Vault login response",
        reason: reason.to_string(),
    };
    let auth = body
        .get("auth")
        .filter(|a| !a.is_null())
        .ok_or_else(|| bad("auth is null"))?;
    let token = auth
        .get("client_token")
        .and_then(|t| t.as_str())
        .ok_or_else(|| bad("no auth.client_token"))?;
    Ok(VaultLogin {
        token: Secret::new(token),
        lease_secs: auth
            .get("lease_duration")
            .and_then(|l| l.as_i64())
            .unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_are_completed_as_htgettoken_does() {
        assert_eq!(server_url("vault.ligo.org"), "https://vault.ligo.org:8200");
        assert_eq!(server_url("localhost:8443"), "https://localhost:8443");
        assert_eq!(server_url("https://v.example"), "https://v.example:8200");
        assert_eq!(
            server_url("https://v.example:443/"),
            "https://v.example:443"
        );
    }
}
