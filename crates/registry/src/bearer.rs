//! The Bearer-token flow of distribution's token auth: the challenge a registry answers
//! with (`WWW-Authenticate: Bearer realm="…",service="…",scope="…"`), found by [`probe`]
//! (`GET /v2/`, HTTPS, and plain HTTP for a loopback registry), and the client that turns a
//! keychain credential into a registry access token for a scope.

use crate::Credential;
use credkeeper_core::Secret;

/// A parsed `Bearer` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub service: Option<String>,
    pub scope: Option<String>,
    pub error: Option<String>,
}

impl Challenge {
    /// Parse one `WWW-Authenticate` value; `None` unless it is a Bearer challenge with a
    /// realm. Quoted values may hold commas and escaped quotes (RFC 7235 quoted-string).
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let mut params = std::collections::HashMap::new();
        let mut chars = rest.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
                chars.next();
            }
            let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
            if name.is_empty() {
                break;
            }
            let mut value = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(c) = chars.peek().copied() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
            params.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
        Some(Challenge {
            realm: params.remove("realm").filter(|r| !r.is_empty())?,
            service: params.remove("service"),
            scope: params.remove("scope"),
            error: params.remove("error"),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error("the token server {realm} refused ({status}): {message}")]
    Refused {
        realm: String,
        status: u16,
        message: String,
    },
}

/// Registry access tokens from a registry's token server.
pub struct TokenClient {
    http: reqwest::Client,
}

impl TokenClient {
    /// With the caller's configured client (trusted CAs, timeouts, no redirects: a
    /// redirect must not carry a password or identity token to another host).
    pub fn new(http: reqwest::Client) -> TokenClient {
        TokenClient { http }
    }

    /// Whether `token` opens the manifest of `repository:reference` at `base` (`https://host`):
    /// the HTTP status of a HEAD, 200 when it does.
    pub async fn check(
        &self,
        base: &str,
        repository: &str,
        reference: &str,
        token: &Secret,
    ) -> Result<u16, TokenError> {
        let url = format!("{base}/v2/{repository}/manifests/{reference}");
        let accept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
            application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
        self.http
            .head(&url)
            .bearer_auth(token.expose())
            .header("accept", accept)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| TokenError::Http {
                url,
                message: e.to_string(),
            })
    }

    /// A token for `scope` (`repository:<name>:pull[,push]`): an identity token is traded
    /// with `grant_type=refresh_token` (POST), a user and password go to the realm by GET
    /// with Basic auth, no credential asks anonymously.
    pub async fn token(
        &self,
        challenge: &Challenge,
        scope: &str,
        credential: Option<&Credential>,
    ) -> Result<Secret, TokenError> {
        let service = challenge.service.clone().unwrap_or_default();
        let http_err = |e: reqwest::Error| TokenError::Http {
            url: challenge.realm.clone(),
            message: e.to_string(),
        };
        let request = match credential {
            Some(c) if c.is_identity_token() => self.http.post(&challenge.realm).form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", c.secret.expose()),
                ("service", &service),
                ("scope", scope),
                ("client_id", "credkeeper"),
            ]),
            other => {
                let mut url =
                    reqwest::Url::parse(&challenge.realm).map_err(|e| TokenError::Http {
                        url: challenge.realm.clone(),
                        message: e.to_string(),
                    })?;
                url.query_pairs_mut()
                    .append_pair("service", &service)
                    .append_pair("scope", scope);
                let r = self.http.get(url);
                match other {
                    Some(c) => r.basic_auth(&c.username, Some(c.secret.expose())),
                    None => r,
                }
            }
        };
        let response = request.send().await.map_err(http_err)?;
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
        if !(200..300).contains(&status) {
            let message = body
                .get("message")
                .or_else(|| body.pointer("/errors/0/message"))
                .and_then(|m| m.as_str())
                .unwrap_or("no reason given")
                .to_string();
            return Err(TokenError::Refused {
                realm: challenge.realm.clone(),
                status,
                message,
            });
        }
        let token = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .map(Secret::new)
            .ok_or_else(|| TokenError::Refused {
                realm: challenge.realm.clone(),
                status,
                message: "the answer has no token".into(),
            })?;
        Ok(token)
    }
}

/// Plain HTTP for loopback only, as docker and skopeo treat local registries.
pub const LOOPBACK_ALLOWED: credkeeper_oidc::UrlPolicy = credkeeper_oidc::UrlPolicy {
    allow_insecure_loopback: true,
};

/// The registry's Bearer challenge from `GET /v2/`: HTTPS, and plain HTTP for a loopback
/// registry that does not speak TLS (as docker and skopeo allow for local registries).
pub async fn challenge(http: &credkeeper_oidc::Http, host: &str) -> Option<Challenge> {
    probe(http, host).await.and_then(|(_, c)| c)
}

/// The base URL that answered `/v2/` and its Bearer challenge (`None` when it asks for
/// none).
pub async fn probe(
    http: &credkeeper_oidc::Http,
    host: &str,
) -> Option<(String, Option<Challenge>)> {
    let loopback = LOOPBACK_ALLOWED
        .check("registry", &format!("http://{host}/"))
        .is_ok();
    let mut schemes = vec!["https"];
    if loopback {
        schemes.push("http");
    }
    for scheme in schemes {
        let base = format!("{scheme}://{host}");
        if let Ok(answer) = http.probe(&format!("{base}/v2/")).await {
            return Some((
                base,
                answer.challenges.iter().find_map(|c| Challenge::parse(c)),
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_as_registries_send_them() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.realm, "https://auth.example/token");
        assert_eq!(c.service.as_deref(), Some("registry.example"));
        assert_eq!(c.scope.as_deref(), Some("repository:a/b:pull,push"));
        let e =
            Challenge::parse(r#"bearer realm="r",error="insufficient_scope",service=s"#).unwrap();
        assert_eq!(e.error.as_deref(), Some("insufficient_scope"));
        assert_eq!(e.service.as_deref(), Some("s"));
        assert!(Challenge::parse(r#"Basic realm="registry""#).is_none());
        assert!(Challenge::parse(r#"Bearer service="x""#).is_none());
    }
}
