//! HTTP with the timeouts and retries every issuer call needs.
//!
//! Reads (discovery, keys) are retried with exponential backoff and jitter on connection
//! failures and 5xx answers. Token requests are retried only when the connection failed,
//! because a request the issuer did receive may already have used up a refresh token.

use crate::OidcError;
use serde::de::DeserializeOwned;
use std::time::Duration;

const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(300);

/// Whether a CA file replaces the system's trusted CAs or adds to them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Roots {
    Only,
    AlsoSystem,
}

#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
}

impl Http {
    pub fn new() -> Result<Http, OidcError> {
        Http::with_ca_file(None, Roots::AlsoSystem)
    }

    /// Trust the CA certificates in `ca_file` (PEM): only those (`Roots::Only`, what
    /// htgettoken's `--cafile` and curl's `--cacert` mean, and it spares reading the
    /// system's store), or beside the system's (`Roots::AlsoSystem`, for a broker that
    /// talks to public providers and to a cluster's private issuer).
    pub fn with_ca_file(
        ca_file: Option<&std::path::Path>,
        roots: Roots,
    ) -> Result<Http, OidcError> {
        let mut builder = reqwest::Client::builder();
        if let Some(path) = ca_file {
            let fail = |reason: String| OidcError::Unreachable {
                url: format!("(CA file {})", path.display()),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| fail(e.to_string()))?;
            if certs.is_empty() {
                return Err(fail("no certificate in it".into()));
            }
            builder = match roots {
                Roots::Only => builder.tls_certs_only(certs),
                Roots::AlsoSystem => builder.tls_certs_merge(certs),
            };
        }
        let client = builder
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("credkeeper/", env!("CARGO_PKG_VERSION")))
            // A token endpoint that redirects is misconfigured; following it could post
            // credentials somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| OidcError::Unreachable {
                url: "(HTTP client)".into(),
                reason: e.to_string(),
            })?;
        Ok(Http { client })
    }

    /// The configured client (timeouts, trusted CAs, no redirects) for a protocol this crate
    /// does not speak itself, such as Rucio's header login.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// GET a JSON document, retrying transient failures.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        url: &str,
        what: &'static str,
    ) -> Result<T, OidcError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .client
                .get(url)
                .header("accept", "application/json")
                .send()
                .await;
            let transient = match &result {
                Err(_) => true,
                Ok(r) => r.status().is_server_error(),
            };
            if transient && attempt < ATTEMPTS {
                backoff(attempt).await;
                continue;
            }
            let response = result.map_err(|e| unreachable(url, &e))?;
            let (status, value) = read_json(url, response).await?;
            if let Some(e) = crate::token::oauth_error(&value) {
                return Err(e);
            }
            if !(200..300).contains(&status) {
                return Err(OidcError::Status {
                    url: url.to_string(),
                    status,
                });
            }
            return serde_json::from_value(value).map_err(|e| OidcError::BadResponse {
                url: url.to_string(),
                what,
                reason: e.to_string(),
            });
        }
    }

    /// POST a form and return the status and JSON body; OAuth error bodies (4xx with
    /// JSON) are returned, not turned into errors, so the caller can read them.
    pub async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Result<(u16, serde_json::Value), OidcError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self
                .client
                .post(url)
                .header("accept", "application/json")
                .form(form);
            if let Some((user, pass)) = basic {
                // RFC 6749 §2.3.1: both parts are form-urlencoded before Basic encoding.
                req = req.basic_auth(form_encode(user), Some(form_encode(pass)));
            }
            match req.send().await {
                Err(e) if e.is_connect() && attempt < ATTEMPTS => backoff(attempt).await,
                Err(e) => return Err(unreachable(url, &e)),
                Ok(response) => return read_json(url, response).await,
            }
        }
    }
}

impl Http {
    /// GET without credentials: the answer with its challenges (a registry's `/v2/`).
    pub async fn probe(&self, url: &str) -> Result<Answer, OidcError> {
        self.send_json(reqwest::Method::GET, url, None, &[]).await
    }

    /// Send a request with these headers (and a JSON body when given); the answer with
    /// its `WWW-Authenticate` (a Kerberos server's reply token). Retried only when the
    /// connection failed, and only when `headers` can be sent again (a Kerberos token
    /// cannot: the server's replay cache would refuse it, so callers make a new one).
    pub async fn send_json(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> Result<Answer, OidcError> {
        let replayable = !headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("authorization") && v.starts_with("Negotiate"));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self
                .client
                .request(method.clone(), url)
                .header("accept", "application/json");
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(body) = body {
                req = req.json(body);
            }
            match req.send().await {
                Err(e) if e.is_connect() && replayable && attempt < ATTEMPTS => {
                    backoff(attempt).await
                }
                Err(e) => return Err(unreachable(url, &e)),
                Ok(response) => {
                    let challenges: Vec<String> = response
                        .headers()
                        .get_all("www-authenticate")
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .map(str::to_string)
                        .collect();
                    let www_authenticate = challenges
                        .iter()
                        .find(|v| {
                            v.len() > "Negotiate ".len() && v[..9].eq_ignore_ascii_case("negotiate")
                        })
                        .cloned();
                    let (status, body) = read_json(url, response).await?;
                    return Ok(Answer {
                        status,
                        body,
                        www_authenticate,
                        challenges,
                    });
                }
            }
        }
    }
}

/// A JSON answer and the server's Kerberos reply, if it sent one.
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
    /// A `WWW-Authenticate: Negotiate <token>` value (mutual authentication).
    pub www_authenticate: Option<String>,
    /// Every `WWW-Authenticate` value (a registry's `Bearer realm=…` challenge).
    pub challenges: Vec<String>,
}

fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn backoff(attempt: u32) {
    let base = FIRST_BACKOFF * 2u32.pow(attempt - 1);
    let jitter = Duration::from_millis(u64::from(jitter_ms()) % (base.as_millis() as u64 / 2 + 1));
    tokio::time::sleep(base + jitter).await;
}

fn jitter_ms() -> u32 {
    let mut b = [0u8; 4];
    let _ = aws_lc_rs::rand::fill(&mut b);
    u32::from_le_bytes(b)
}

fn unreachable(url: &str, e: &reqwest::Error) -> OidcError {
    // The innermost cause ("Connection refused") is what a user can act on.
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        reason = s.to_string();
        source = s.source();
    }
    if e.is_timeout() {
        reason = "timed out".into();
    }
    OidcError::Unreachable {
        url: url.to_string(),
        reason,
    }
}

/// The status and JSON body of a response; a body that is not JSON is an error that
/// names the status and content type (never the body, which might echo a secret).
async fn read_json(
    url: &str,
    response: reqwest::Response,
) -> Result<(u16, serde_json::Value), OidcError> {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("no content type")
        .to_string();
    let bytes = response.bytes().await.map_err(|e| unreachable(url, &e))?;
    if bytes.is_empty() && (200..300).contains(&status) {
        // Revocation (RFC 7009 §2.2) answers 200 with no body.
        return Ok((status, serde_json::Value::Null));
    }
    match serde_json::from_slice(&bytes) {
        Ok(value) => Ok((status, value)),
        Err(_) => Err(OidcError::NotJson {
            url: url.to_string(),
            status,
            content_type,
        }),
    }
}
