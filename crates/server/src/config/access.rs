//! Who gets what: the providers tokens come from (`[[provider]]`) and the robots that may
//! ask for them (`[[robot]]`).

use credkeeper_core::ScopeSet;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSection {
    pub name: String,
    /// Issuer URL; its discovery document is `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    pub client_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub scopes: Option<String>,
    #[serde(default)]
    pub audience: Option<String>,
    /// Extra parameters for the authorization request.
    #[serde(default)]
    pub auth_params: std::collections::BTreeMap<String, String>,
    /// Seconds for which the provider still honours a refresh token it has rotated
    /// (Auth0's reuse interval, Okta's grace period). Refresh claims on its credentials
    /// then last at most half of it, so when a broker dies between the provider's answer
    /// and storing it, another retries with the old token while it is still honoured.
    pub refresh_reuse_grace_secs: Option<u32>,
}

impl ProviderSection {
    /// How long a refresh of this provider's credentials may hold its claim.
    pub fn claim_secs(&self, configured: u32) -> u32 {
        match self.refresh_reuse_grace_secs {
            Some(grace) => configured.min(grace / 2).max(MIN_CLAIM_SECS),
            None => configured,
        }
    }
}

/// The shortest refresh claim: a refresh must have time to reach the provider.
pub(super) const MIN_CLAIM_SECS: u32 = 5;

/// How a robot proves who it is; any of these may be set, each maps to this robot only.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RobotAuth {
    /// A robot secret, hashed in the store (`credkeeper robot-secret NAME`).
    #[serde(default)]
    pub secret: bool,
    /// Kerberos principal (SPNEGO); the default realm is added when it names none.
    pub kerberos_principal: Option<String>,
    /// A signed JWT (e.g. a Kubernetes service-account token): its issuer (keys through
    /// the issuer's discovery document) and subject.
    pub jwt_issuer: Option<String>,
    pub jwt_subject: Option<String>,
    /// The audience the JWT must carry. Default: the broker's own URL.
    pub jwt_audience: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RobotSection {
    pub name: String,
    #[serde(default)]
    pub auth: RobotAuth,
    /// Replaces `{username}` in scope templates; default: the robot's name.
    pub username: Option<String>,
    /// Providers it may use; `local` is the broker's own issuer.
    #[serde(default)]
    pub providers: Vec<String>,
    /// Scopes it may ask for (a request is allowed when these cover it).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Audiences it may ask for; `*` allows any.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Longest token lifetime it may get, in seconds.
    pub max_lifetime: Option<i64>,
    /// May make web login links for users (`POST /api/v1/login-links` with a `user`),
    /// as a batch system's credential daemon does.
    #[serde(default)]
    pub login_links: bool,
    /// Registry access it may get from the token server: `repository:<name>:<actions>`,
    /// the name may end in `*`, the actions `pull`, `push`, `delete` or `*`.
    #[serde(default)]
    pub registry: Vec<String>,
    /// `scopes` with the templates filled in and parsed, on first use: every request
    /// of this robot is judged against them.
    #[serde(skip)]
    pub(crate) allowed: std::sync::OnceLock<ScopeSet>,
}

impl RobotSection {
    pub fn username(&self) -> &str {
        self.username.as_deref().unwrap_or(&self.name)
    }

    /// The scopes it may ask for, templates filled in.
    pub fn allowed_scopes(&self) -> &ScopeSet {
        self.allowed
            .get_or_init(|| ScopeSet::parse(&fill(&self.scopes.join(" "), self.username())))
    }

    pub fn may_use_audience(&self, aud: &str) -> bool {
        self.audiences.iter().any(|a| a == "*" || a == aud)
    }

    /// The Vault credkeys it may read, the one htgettoken derives first (its principal
    /// without the realm), then its own name.
    pub fn credkeys(&self) -> Vec<String> {
        let principal = self.auth.kerberos_principal.as_deref();
        principal
            .map(credkeeper_kerberos::without_realm)
            .into_iter()
            .chain([self.name.as_str()])
            .map(str::to_string)
            .collect()
    }
}

/// Replace `{username}` in a scope template.
pub fn fill(template: &str, username: &str) -> String {
    template.replace("{username}", username)
}
