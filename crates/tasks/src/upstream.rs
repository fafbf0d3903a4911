//! rucio-task-manager's own routes to a bearer token, read from the variables its image's
//! entry point reads and in its order of precedence:
//!
//! 1. a token file mounted into the pod (`/tmp/access_token`);
//! 2. client credentials: `OIDC_CLIENT_ID`, `OIDC_CLIENT_SECRET` and `OIDC_TOKEN_ENDPOINT`
//!    (a token endpoint, not an issuer), asking for `RUCIO_CFG_CLIENT_OIDC_SCOPE` and
//!    `RUCIO_CFG_CLIENT_OIDC_AUDIENCE`;
//! 3. an oidc-agent account: `OIDC_AGENT_AUTH_CLIENT_CFG_VALUE` (the encrypted file
//!    `oidc-gen` writes) and `OIDC_AGENT_AUTH_CLIENT_CFG_PASSWORD`, read without an agent
//!    ([`crate::oidc_agent`]) and used for refresh-token grants at the account's issuer;
//! 4. a token given in `OIDC_ACCESS_TOKEN`.
//!
//! What credkeeper adds: the token is renewed for the whole run (the entry point got one when
//! the pod started), a mounted file is read again at each renewal, and the client secret and
//! the agent's account and password never reach the task's environment. An empty variable
//! (Helm's rendering of a null value) counts as unset.
//!
//! What it is not: credkeeper's own token sources (a broker, an issuer), which the binary
//! wires and which serve a values cronjob that names none of these.

use credkeeper_core::{Secret, Timestamp, TokenAsk};
use credkeeper_oidc::{Client, ClientAuth, Http, TokenRequest, UrlPolicy};
use credkeeper_refresher::Origin;
use credkeeper_refresher::source::{Fresh, SourceError, SourceFuture, TokenSource};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where upstream's entry point finds a volume-mounted token.
pub const MOUNTED_TOKEN: &str = "/tmp/access_token";

/// How the routes reach identity providers, and where a mounted token is looked for.
pub struct Upstream {
    pub http: Http,
    pub policy: UrlPolicy,
    pub mounted_token: PathBuf,
}

/// Why a route the task's environment names cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// An endpoint the URL policy refuses (plain HTTP beyond loopback).
    #[error(transparent)]
    Url(credkeeper_oidc::OidcError),
    #[error("reading OIDC_AGENT_AUTH_CLIENT_CFG_VALUE: {0}")]
    AgentTask(tokio::task::JoinError),
    #[error("OIDC_AGENT_AUTH_CLIENT_CFG_VALUE: {0}")]
    Agent(crate::oidc_agent::AgentConfigError),
    #[error("the oidc-agent account's issuer: {0}")]
    AgentIssuer(credkeeper_oidc::OidcError),
    #[error("the mounted token {}: {source}", path.display())]
    Mounted {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the mounted token {} is not a file that only its owner (root or uid {uid}) can write; refusing a token anyone could have put there (chmod go-w, or remove it)",
        path.display()
    )]
    MountedUnsafe { path: PathBuf, uid: u32 },
}

/// The route a task's environment names.
pub struct Route {
    /// What it is, for the log: "mounted token file", "client credentials", …
    pub name: &'static str,
    pub source: Arc<dyn TokenSource>,
}

impl Upstream {
    /// The route `env` (a values cronjob's environment) names, asking for `request` (the
    /// scope and audience its Rucio client would ask for); its secret variables are taken
    /// out of `env` and handed to `redact`. `None` when it names none.
    pub async fn route(
        &self,
        env: &mut BTreeMap<String, String>,
        request: TokenRequest,
        redact: impl Fn(&str),
    ) -> Result<Option<Route>, UpstreamError> {
        let mut take = |name: &str| {
            let value = env.remove(name).filter(|v| !v.is_empty());
            if let Some(v) = &value {
                redact(v);
            }
            value
        };
        // Taken whichever route wins: none of them is the task's to read.
        let client_secret = take("OIDC_CLIENT_SECRET");
        let agent_value = take("OIDC_AGENT_AUTH_CLIENT_CFG_VALUE");
        let agent_password = take("OIDC_AGENT_AUTH_CLIENT_CFG_PASSWORD");
        let get = |name: &str| env.get(name).filter(|v| !v.is_empty()).cloned();
        if let Some(file) = MountedFile::open(&self.mounted_token)? {
            return Ok(Some(Route {
                name: "mounted token file",
                source: Arc::new(file),
            }));
        }
        if let (Some(id), Some(secret), Some(endpoint)) = (
            get("OIDC_CLIENT_ID"),
            client_secret,
            get("OIDC_TOKEN_ENDPOINT"),
        ) {
            self.policy
                .check("OIDC_TOKEN_ENDPOINT", &endpoint)
                .map_err(UpstreamError::Url)?;
            let client = Client::new(
                self.http.clone(),
                endpoint_metadata(&endpoint, &endpoint),
                &id,
                // What upstream's `curl -u id:secret` sends.
                ClientAuth::Basic(Secret::new(secret)),
            );
            return Ok(Some(Route {
                name: "client credentials",
                source: Arc::new(ClientCredentials { client, request }),
            }));
        }
        if let (Some(value), Some(password)) = (agent_value, agent_password) {
            let source = self.agent(value, password, request).await?;
            return Ok(Some(Route {
                name: "oidc-agent account",
                source: Arc::new(source),
            }));
        }
        if let Some(token) = get("OIDC_ACCESS_TOKEN") {
            // Kept in the environment: upstream's FTS tasks read it from there.
            return Ok(Some(Route {
                name: "OIDC_ACCESS_TOKEN",
                source: Arc::new(Given(Secret::new(token.trim()))),
            }));
        }
        Ok(None)
    }

    async fn agent(
        &self,
        value: String,
        password: String,
        request: TokenRequest,
    ) -> Result<AgentTokens, UpstreamError> {
        // Argon2id with 64 MiB: off the runtime's threads.
        let account = tokio::task::spawn_blocking(move || {
            crate::oidc_agent::decrypt(&value, &Secret::new(password))
        })
        .await
        .map_err(UpstreamError::AgentTask)?
        .map_err(UpstreamError::Agent)?;
        let meta = match &account.token_endpoint {
            Some(endpoint) => {
                self.policy
                    .check("the oidc-agent account's token endpoint", endpoint)
                    .map_err(UpstreamError::Url)?;
                endpoint_metadata(&account.issuer, endpoint)
            }
            // oidc-gen 4.x keeps only the issuer.
            None => credkeeper_oidc::discover(&self.http, &account.issuer, self.policy)
                .await
                .map_err(UpstreamError::AgentIssuer)?,
        };
        let auth = match account.client_secret.clone() {
            Some(s) if !s.expose().is_empty() => ClientAuth::Basic(s),
            _ => ClientAuth::None,
        };
        Ok(AgentTokens {
            client: Client::new(self.http.clone(), meta, &account.client_id, auth),
            refresh_token: Mutex::new(account.refresh_token.clone()),
            request,
        })
    }
}

/// Issuer metadata that names only a token endpoint (all a grant here needs).
fn endpoint_metadata(issuer: &str, token_endpoint: &str) -> credkeeper_oidc::ProviderMetadata {
    credkeeper_oidc::ProviderMetadata {
        issuer: issuer.to_string(),
        token_endpoint: token_endpoint.to_string(),
        authorization_endpoint: None,
        device_authorization_endpoint: None,
        jwks_uri: None,
        revocation_endpoint: None,
        grant_types_supported: None,
    }
}

/// When `token` expires, when anything says: its `expires_in`, else its JWT `exp` (the run
/// assumes a short life for an opaque token, so it is rewritten often rather than held past
/// its end).
fn expiry(token: &Secret, expires_in: Option<i64>) -> Option<Timestamp> {
    expires_in
        .map(|s| Timestamp::now().plus_secs(s))
        .or_else(|| credkeeper_core::Jwt::decode(token.expose()).ok()?.expires())
}

/// A grant's access token and when it expires.
fn issued(r: credkeeper_oidc::TokenResponse, origin: Origin) -> Fresh {
    Fresh {
        expires: expiry(&r.access_token, r.expires_in),
        token: r.access_token,
        origin,
    }
}

/// A given token, as it is.
fn given(token: Secret) -> Fresh {
    Fresh {
        expires: expiry(&token, None),
        token,
        origin: Origin::Given,
    }
}

/// A token file mounted by the site: read at the start and at every renewal (the volume's
/// owner replaces it), and only if nobody else could have written it.
struct MountedFile(PathBuf);

impl MountedFile {
    fn open(path: &Path) -> Result<Option<MountedFile>, UpstreamError> {
        use std::os::unix::fs::MetadataExt;
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(UpstreamError::Mounted {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        if !meta.is_file() || (meta.uid() != uid && meta.uid() != 0) || meta.mode() & 0o022 != 0 {
            return Err(UpstreamError::MountedUnsafe {
                path: path.to_path_buf(),
                uid,
            });
        }
        Ok(Some(MountedFile(path.to_path_buf())))
    }
}

impl TokenSource for MountedFile {
    fn token<'a>(&'a self, _: &'a TokenAsk) -> SourceFuture<'a> {
        Box::pin(async move {
            let text = std::fs::read_to_string(&self.0).map_err(|e| {
                SourceError::other(format!("the mounted token {}: {e}", self.0.display()))
            })?;
            let token = Secret::new(text.trim());
            if token.expose().is_empty() {
                return Err(SourceError::other(format!(
                    "the mounted token {} is empty",
                    self.0.display()
                )));
            }
            Ok(given(token))
        })
    }
}

struct ClientCredentials {
    client: Client,
    request: TokenRequest,
}

impl TokenSource for ClientCredentials {
    fn token<'a>(&'a self, _: &'a TokenAsk) -> SourceFuture<'a> {
        Box::pin(async move {
            let r = self
                .client
                .client_credentials(&self.request)
                .await
                .map_err(|e| SourceError::other(format!("OIDC_TOKEN_ENDPOINT: {e}")))?;
            Ok(issued(r, Origin::ClientCredentials))
        })
    }
}

/// Refresh-token grants for an oidc-agent account; a rotated refresh token is kept for the
/// next grant of the run.
struct AgentTokens {
    client: Client,
    refresh_token: Mutex<Secret>,
    request: TokenRequest,
}

impl TokenSource for AgentTokens {
    fn token<'a>(&'a self, _: &'a TokenAsk) -> SourceFuture<'a> {
        Box::pin(async move {
            let current = self
                .refresh_token
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let r = self
                .client
                .refresh(&current, &self.request)
                .await
                .map_err(|e| {
                    SourceError::other(format!("the oidc-agent account's refresh token: {e}"))
                })?;
            if let Some(rotated) = r.refresh_token.clone() {
                *self.refresh_token.lock().unwrap_or_else(|p| p.into_inner()) = rotated;
            }
            Ok(issued(r, Origin::Refreshed))
        })
    }
}

/// A token given as it is (`OIDC_ACCESS_TOKEN`): what upstream did, never renewed.
struct Given(Secret);

impl TokenSource for Given {
    fn token<'a>(&'a self, _: &'a TokenAsk) -> SourceFuture<'a> {
        Box::pin(async move { Ok(given(self.0.clone())) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn upstream(mounted: &Path) -> Upstream {
        Upstream {
            http: Http::new().unwrap(),
            policy: UrlPolicy::default(),
            mounted_token: mounted.to_path_buf(),
        }
    }

    async fn route(
        u: &Upstream,
        e: &mut BTreeMap<String, String>,
    ) -> (Option<&'static str>, Vec<String>) {
        let redacted = Mutex::new(Vec::new());
        let r = u
            .route(e, TokenRequest::default(), |v| {
                redacted.lock().unwrap().push(v.to_string())
            })
            .await
            .unwrap();
        (r.map(|r| r.name), redacted.into_inner().unwrap())
    }

    #[tokio::test]
    async fn routes_are_taken_in_upstreams_order_and_their_secrets_leave_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let mounted = dir.path().join("access_token");
        let u = upstream(&mounted);
        let all = [
            ("OIDC_CLIENT_ID", "robot-client"),
            ("OIDC_CLIENT_SECRET", "robot-secret"),
            ("OIDC_TOKEN_ENDPOINT", "https://iam.example/token"),
            ("OIDC_AGENT_AUTH_CLIENT_CFG_VALUE", "7 lines"),
            ("OIDC_AGENT_AUTH_CLIENT_CFG_PASSWORD", "agent-password"),
            ("OIDC_ACCESS_TOKEN", "given-token"),
            ("TASK", "kept"),
        ];
        // Client credentials come before the agent and the given token.
        let mut e = env(&all);
        let (name, redacted) = route(&u, &mut e).await;
        assert_eq!(name, Some("client credentials"));
        assert_eq!(redacted, ["robot-secret", "7 lines", "agent-password"]);
        assert_eq!(
            e.keys().collect::<Vec<_>>(),
            [
                "OIDC_ACCESS_TOKEN",
                "OIDC_CLIENT_ID",
                "OIDC_TOKEN_ENDPOINT",
                "TASK"
            ],
            "the secrets are gone; the given token stays (FTS tasks read it)"
        );
        // A null endpoint (Helm renders it empty) is no endpoint: the given token is next.
        let mut e = env(&[
            ("OIDC_CLIENT_ID", "robot-client"),
            ("OIDC_CLIENT_SECRET", "robot-secret"),
            ("OIDC_TOKEN_ENDPOINT", ""),
            ("OIDC_ACCESS_TOKEN", "given-token\n"),
        ]);
        let r = u
            .route(&mut e, TokenRequest::default(), |_| {})
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.name, "OIDC_ACCESS_TOKEN");
        let fresh = r.source.token(&TokenAsk::default()).await.unwrap();
        assert_eq!(fresh.token.expose(), "given-token");
        // A mounted file wins over everything, and is read again at each renewal.
        std::fs::write(&mounted, "mounted-1\n").unwrap();
        std::fs::set_permissions(&mounted, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut e = env(&all);
        let r = u
            .route(&mut e, TokenRequest::default(), |_| {})
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.name, "mounted token file");
        assert_eq!(
            r.source
                .token(&TokenAsk::default())
                .await
                .unwrap()
                .token
                .expose(),
            "mounted-1"
        );
        std::fs::write(&mounted, "mounted-2").unwrap();
        assert_eq!(
            r.source
                .token(&TokenAsk::default())
                .await
                .unwrap()
                .token
                .expose(),
            "mounted-2"
        );
        // Nothing named: no route.
        std::fs::remove_file(&mounted).unwrap();
        assert_eq!(route(&u, &mut env(&[("TASK", "x")])).await.0, None);
    }

    #[tokio::test]
    async fn a_mounted_token_others_could_write_is_refused_and_an_http_endpoint_too() {
        let dir = tempfile::tempdir().unwrap();
        let mounted = dir.path().join("access_token");
        std::fs::write(&mounted, "planted").unwrap();
        std::fs::set_permissions(&mounted, std::fs::Permissions::from_mode(0o666)).unwrap();
        let u = upstream(&mounted);
        let err = u
            .route(&mut env(&[]), TokenRequest::default(), |_| {})
            .await
            .err()
            .unwrap();
        assert!(matches!(err, UpstreamError::MountedUnsafe { .. }), "{err}");
        assert!(err.to_string().contains("chmod go-w"), "{err}");
        std::fs::remove_file(&mounted).unwrap();
        let err = u
            .route(
                &mut env(&[
                    ("OIDC_CLIENT_ID", "c"),
                    ("OIDC_CLIENT_SECRET", "s"),
                    ("OIDC_TOKEN_ENDPOINT", "http://iam.example/token"),
                ]),
                TokenRequest::default(),
                |_| {},
            )
            .await
            .err()
            .unwrap();
        assert!(matches!(err, UpstreamError::Url(_)), "{err}");
        assert!(err.to_string().contains("OIDC_TOKEN_ENDPOINT"), "{err}");
    }
}
