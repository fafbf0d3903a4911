//! The broker's configuration: one TOML file, every scalar of the single sections
//! overridable by `CREDKEEPER_<SECTION>_<KEY>` (e.g. `CREDKEEPER_SERVER_LISTEN`), validated
//! at start with errors that name the file, the key and the line.

mod validate;

use credkeeper_core::ScopeSet;
use credkeeper_store::{PostgresSettings, StoreSettings};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("config {file}{}: {key}: {message}", .line.map(|l| format!(" line {l}")).unwrap_or_default())]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub issuer: IssuerSection,
    #[serde(default, rename = "provider")]
    pub providers: Vec<ProviderSection>,
    #[serde(default, rename = "robot")]
    pub robots: Vec<RobotSection>,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub refresher: RefresherSection,
    #[serde(default)]
    pub credmon: CredmonSection,
    #[serde(default)]
    pub vault: VaultSection,
    /// The registry token server (optional).
    pub registry: Option<RegistrySection>,
}

/// The HTCondor CredD's key-file logins (`/key/<hex>`), written as the credmon's web
/// app writes them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredmonSection {
    /// `SEC_CREDENTIAL_DIRECTORY_OAUTH`.
    pub cred_dir: Option<PathBuf>,
    /// Write the client secret into `.meta`, as upstream does (needed when the credmon
    /// reading the directory has no `<PROVIDER>_CLIENT_SECRET_FILE`).
    #[serde(default = "yes")]
    pub client_secret_in_meta: bool,
}

impl Default for CredmonSection {
    fn default() -> Self {
        CredmonSection {
            cred_dir: None,
            client_secret_in_meta: true,
        }
    }
}

fn yes() -> bool {
    true
}

/// The broker as a container registry's token server (distribution's token auth).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySection {
    /// The registry's `auth.token.service`: the tokens' `aud`.
    pub service: String,
    /// The registry's `auth.token.issuer`: the tokens' `iss`. Default: the broker's URL.
    pub issuer: Option<String>,
    /// The signing key (PEM, 0600) and its certificate chain (PEM, leaf first); the
    /// registry's `rootcertbundle` must hold the leaf or its CA.
    pub key_file: PathBuf,
    pub cert_file: PathBuf,
    #[serde(default = "default_registry_alg")]
    pub algorithm: Algorithm,
    /// Token lifetime, seconds.
    #[serde(default = "default_registry_lifetime")]
    pub lifetime: i64,
}

fn default_registry_alg() -> Algorithm {
    Algorithm::RS256
}

fn default_registry_lifetime() -> i64 {
    300
}

/// The Vault-compatible API (for htgettoken and igwn-robot-get).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultSection {
    /// Lifetime of the Vault tokens handed out, in seconds (htgettoken asks for 7 days).
    #[serde(default = "default_vault_ttl")]
    pub token_ttl: i64,
    /// Vault issuer names (`-i/--issuer` of the clients) → provider names (or `local`).
    /// A name not listed is taken as a provider name; `default` is the first provider.
    #[serde(default)]
    pub issuers: std::collections::BTreeMap<String, String>,
    /// Logins through `auth_url` (which needs no authentication) in progress at once; a
    /// pool of their own, so they never crowd out robots' logins.
    #[serde(default = "default_vault_pending")]
    pub pending_logins: usize,
    /// `auth_url` logins started per minute at most (each asks the provider for a device
    /// code), with bursts of a tenth of that; from one address, a quarter of both.
    #[serde(default = "default_vault_rate")]
    pub logins_per_minute: u32,
}

impl Default for VaultSection {
    fn default() -> Self {
        VaultSection {
            token_ttl: default_vault_ttl(),
            issuers: Default::default(),
            pending_logins: default_vault_pending(),
            logins_per_minute: default_vault_rate(),
        }
    }
}

fn default_vault_pending() -> usize {
    1_000
}

fn default_vault_rate() -> u32 {
    120
}

fn default_vault_ttl() -> i64 {
    7 * 86400
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    pub state_dir: Option<PathBuf>,
    /// JSON-lines audit log; `-` for standard output. Default: `<state_dir>/audit.log`.
    pub audit_log: Option<PathBuf>,
    /// Serve HTTPS with this PEM certificate chain and PEM private key (0600).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Accept Kerberos (HTTP Negotiate) with the service keys in this keytab: `HTTP/<host>`
    /// for curl and browsers, `host/<host>` for htgettoken. Mode 0600 (or 0440).
    pub kerberos_keytab: Option<PathBuf>,
    /// Connections open at once [default: three quarters of the descriptor limit, at most
    /// 10,000]. At the cap the longest-idle connection is closed to make room.
    pub max_connections: Option<usize>,
    /// Seconds a client has to send a request head, and a kept-alive connection to start
    /// its next request.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_secs: u64,
    /// Seconds a client has to send a request body.
    #[serde(default = "default_body_timeout")]
    pub body_timeout_secs: u64,
    /// Serve `/metrics` on this address only, not on `listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// Scrapers must send `Authorization: Bearer <the token in this file>` (mode 0600).
    pub metrics_token_file: Option<PathBuf>,
}

fn default_header_timeout() -> u64 {
    10
}

fn default_body_timeout() -> u64 {
    30
}

impl ServerSection {
    /// What one peer may hold, from this section.
    pub fn limits(&self) -> crate::conn::Limits {
        crate::conn::Limits {
            max_connections: self
                .max_connections
                .unwrap_or_else(crate::conn::Limits::default_max_connections),
            header_timeout: std::time::Duration::from_secs(self.header_timeout_secs.max(1)),
            body_timeout: std::time::Duration::from_secs(self.body_timeout_secs.max(1)),
        }
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: default_listen(),
            state_dir: None,
            audit_log: None,
            tls_cert: None,
            tls_key: None,
            kerberos_keytab: None,
            max_connections: None,
            header_timeout_secs: default_header_timeout(),
            body_timeout_secs: default_body_timeout(),
            metrics_listen: None,
            metrics_token_file: None,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8787))
}

pub use credkeeper_issuer::Algorithm;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenProfile {
    /// `ver: scitoken:2.0`
    #[default]
    Scitokens,
    /// `wlcg.ver: "1.0"`
    Wlcg,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSection {
    /// The `iss` of the tokens it signs; default `https://<listen>` when the broker
    /// serves TLS (`[server] tls_cert`), else `http://<listen>`.
    pub url: Option<String>,
    #[serde(default)]
    pub algorithm: Algorithm,
    /// PKCS#8 PEM private key (0600). Default: generated at `<state_dir>/issuer-<alg>.pem`.
    pub key_file: Option<PathBuf>,
    /// Default: the RFC 7638 thumbprint of the public key.
    pub key_id: Option<String>,
    /// Seconds.
    #[serde(default = "default_lifetime")]
    pub lifetime: i64,
    /// Scopes a token carries when the caller asks for none, with `{username}`
    /// replaced (the credmon's LOCAL_CREDMON_AUTHZ_TEMPLATE).
    #[serde(default = "default_template")]
    pub authz_template: String,
    #[serde(default)]
    pub profile: TokenProfile,
    /// Audience when the caller asks for none.
    #[serde(default = "default_audience")]
    pub audience: String,
}

impl IssuerSection {
    /// The issuer's settings: `url` is the tokens' `iss`, the key defaults to a file
    /// generated in `state_dir`.
    pub fn settings(&self, url: &str, state_dir: &Path) -> credkeeper_issuer::Settings {
        let generated = state_dir.join(format!("issuer-{:?}.pem", self.algorithm).to_lowercase());
        credkeeper_issuer::Settings {
            url: url.to_string(),
            algorithm: self.algorithm,
            key_file: self.key_file.clone().unwrap_or(generated),
            generate: self.key_file.is_none(),
            public_key_file: None,
            key_id: self.key_id.clone(),
            lifetime: self.lifetime,
            version: Some(match self.profile {
                TokenProfile::Scitokens => {
                    credkeeper_issuer::VersionClaim::Ver("scitoken:2.0".into())
                }
                TokenProfile::Wlcg => credkeeper_issuer::VersionClaim::Wlcg("1.0".into()),
            }),
        }
    }
}

impl Default for IssuerSection {
    fn default() -> Self {
        IssuerSection {
            url: None,
            algorithm: Algorithm::default(),
            key_file: None,
            key_id: None,
            lifetime: default_lifetime(),
            authz_template: default_template(),
            profile: TokenProfile::default(),
            audience: default_audience(),
        }
    }
}

fn default_lifetime() -> i64 {
    1200
}
fn default_template() -> String {
    "read:/user/{username} write:/user/{username}".into()
}
fn default_audience() -> String {
    "https://wlcg.cern.ch/jwt/v1/any".into()
}

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
const MIN_CLAIM_SECS: u32 = 5;

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

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `sqlite` (embedded, the default) or `postgres` (a fleet's shared database; the
    /// default when `url` is set).
    pub backend: Option<String>,
    /// SQLite: the directory of credentials.db and store.key. Default: `<state_dir>/`.
    pub path: Option<PathBuf>,
    /// PostgreSQL: `postgres://user@host:port/db?sslmode=verify-full`.
    pub url: Option<String>,
    /// PostgreSQL: a 0600 file holding only the password (else PGPASSWORD, PGPASSFILE or
    /// ~/.pgpass, as libpq).
    pub password_file: Option<PathBuf>,
    /// PostgreSQL: the CA certificates the server's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// PostgreSQL: connections kept open at most (default 8).
    pub pool_size: Option<usize>,
    /// PostgreSQL: the sealing key file, the same on every replica. Default:
    /// `<state_dir>/store.key`.
    pub key_file: Option<PathBuf>,
}

impl StoreSection {
    /// Whether the keys agree with each other: the key at fault and what is wrong.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        match (self.backend.as_deref(), &self.url) {
            (None | Some("sqlite"), None) | (None | Some("postgres"), Some(_)) => {}
            (Some("postgres"), None) => {
                return Err((
                    "backend",
                    "backend `postgres` needs url = \"postgres://user@host:port/db\"".into(),
                ));
            }
            (Some("sqlite"), Some(_)) => {
                return Err((
                    "url",
                    "url is for backend `postgres`; SQLite's directory is `path`".into(),
                ));
            }
            (Some(b), _) => {
                return Err((
                    "backend",
                    format!("unknown backend `{b}` (this build has: sqlite, postgres)"),
                ));
            }
        }
        if self.url.is_none()
            && let Some(key) = [
                ("password_file", self.password_file.is_some()),
                ("ca_file", self.ca_file.is_some()),
                ("pool_size", self.pool_size.is_some()),
                ("key_file", self.key_file.is_some()),
            ]
            .iter()
            .find_map(|(k, set)| set.then_some(*k))
        {
            return Err((key, format!("{key} is for a PostgreSQL store (set url)")));
        }
        if self.url.is_some() && self.path.is_some() {
            return Err((
                "path",
                "path is SQLite's directory; a PostgreSQL store has url".into(),
            ));
        }
        if self.pool_size == Some(0) {
            return Err(("pool_size", "must be at least 1".into()));
        }
        Ok(())
    }

    /// The store these settings name; `state_dir` holds the defaults.
    pub fn settings(&self, state_dir: &Path) -> StoreSettings {
        match &self.url {
            Some(url) => StoreSettings::Postgres(PostgresSettings {
                url: url.clone(),
                password_file: self.password_file.clone(),
                ca_file: self.ca_file.clone(),
                pool_size: self.pool_size.unwrap_or(8),
                key_file: self
                    .key_file
                    .clone()
                    .unwrap_or_else(|| state_dir.join("store.key")),
            }),
            None => StoreSettings::Sqlite {
                dir: self.path.clone().unwrap_or_else(|| state_dir.to_path_buf()),
            },
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefresherSection {
    /// Refresh when less than this share of a token's lifetime is left.
    #[serde(default = "default_share")]
    pub share: f64,
    /// Seconds between passes.
    #[serde(default = "default_interval")]
    pub interval: u64,
    /// Refreshes in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Seconds a refresh holds its claim on a credential, so that of several brokers
    /// sharing a store exactly one uses its refresh token; a broker killed mid-refresh
    /// loses the claim when this passes.
    #[serde(default = "default_claim_secs")]
    pub claim_secs: u32,
}

impl Default for RefresherSection {
    fn default() -> Self {
        RefresherSection {
            share: default_share(),
            interval: default_interval(),
            concurrency: default_concurrency(),
            claim_secs: default_claim_secs(),
        }
    }
}

fn default_share() -> f64 {
    0.5
}
fn default_interval() -> u64 {
    30
}
fn default_concurrency() -> usize {
    16
}
fn default_claim_secs() -> u32 {
    credkeeper_refresher::DEFAULT_CLAIM_SECS
}

/// Sections whose scalars `CREDKEEPER_<SECTION>_<KEY>` may override.
const OVERRIDABLE: &[&str] = &["server", "issuer", "store", "refresher", "credmon", "vault"];

impl Config {
    /// Read, apply environment overrides, and validate.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: None,
            key: "(file)".into(),
            message: e.to_string(),
        })?;
        Config::parse(&file, &text, std::env::vars())
    }

    pub fn parse(
        file: &str,
        text: &str,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let err = |e: toml::de::Error| {
            let line = e.span().map(|s| line_at(text, s.start));
            // The key is what stands before `=` on the offending line.
            let key = line
                .and_then(|l| text.lines().nth(l - 1))
                .and_then(|l| l.split_once('='))
                .map(|(k, _)| k.trim().to_string())
                .unwrap_or_else(|| "(syntax)".into());
            ConfigError {
                file: file.to_string(),
                line,
                key,
                message: e.message().to_string(),
            }
        };
        // Parse the file as written first, so errors point at its lines.
        let mut table: toml::Table = toml::from_str(text).map_err(err)?;
        toml::from_str::<Config>(text).map_err(err)?;
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("CREDKEEPER_") else {
                continue;
            };
            let rest = rest.to_ascii_lowercase();
            let Some((section, key)) = OVERRIDABLE
                .iter()
                .find_map(|s| rest.strip_prefix(&format!("{s}_")).map(|k| (*s, k)))
            else {
                continue;
            };
            let value = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(value));
            if let toml::Value::Table(t) = table
                .entry(section)
                .or_insert_with(|| toml::Value::Table(Default::default()))
            {
                t.insert(key.to_string(), value);
            }
        }
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError {
                    file: file.to_string(),
                    line: None,
                    key: "(environment override)".into(),
                    message: e.message().to_string(),
                })?;
        config.validate(file, text)?;
        Ok(config)
    }

    pub fn robot(&self, name: &str) -> Option<&RobotSection> {
        self.robots.iter().find(|r| r.name == name)
    }

    pub fn provider(&self, name: &str) -> Option<&ProviderSection> {
        self.providers.iter().find(|p| p.name == name)
    }
}

fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn q(value: &str) -> String {
    format!("\"{value}\"")
}

/// The line where `needle` first appears, for errors about values found after parsing.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.find(needle).map(|i| line_at(text, i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse("c.toml", text, std::iter::empty()).map_err(|e| e.to_string())
    }

    /// The README's example config, as printed there (and again with its commented-out
    /// PostgreSQL store in place of the SQLite one).
    #[test]
    fn the_readme_example_is_a_valid_config() {
        let readme = include_str!("../../../../README.md");
        let start = readme
            .find("## Broker configuration")
            .and_then(|at| readme[at..].find("```toml").map(|i| at + i + 7))
            .expect("README has a broker config example");
        // Its client-secret file, made here as the README says it must be (0600).
        let dir = tempfile::tempdir().unwrap();
        let mut example = readme[start..start + readme[start..].find("```").unwrap()].to_string();
        let secret = dir.path().join("iam.secret");
        std::fs::write(&secret, "s").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        example = example.replace("/etc/credkeeper/iam.secret", secret.to_str().unwrap());
        let config = parse(&example).unwrap_or_else(|e| panic!("README example: {e}"));
        assert!(matches!(
            config.store.settings(Path::new("/s")),
            StoreSettings::Sqlite { .. }
        ));
        // The PostgreSQL lines instead of SQLite's.
        let postgres: String = example
            .lines()
            .filter(|l| !l.starts_with("backend = \"sqlite\"") && !l.starts_with("path = "))
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|r| {
                        ["url", "password_file", "ca_file", "pool_size", "key_file"]
                            .iter()
                            .any(|k| r.starts_with(&format!("{k} = ")))
                    })
                    .unwrap_or(l)
            })
            .collect::<Vec<_>>()
            .join("\n");
        let config = parse(&postgres).unwrap_or_else(|e| panic!("README example, PostgreSQL: {e}"));
        let StoreSettings::Postgres(pg) = config.store.settings(Path::new("/s")) else {
            panic!("the url selects PostgreSQL");
        };
        assert_eq!(pg.pool_size, 8);
        assert_eq!(pg.key_file, Path::new("/etc/credkeeper/store.key"));
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8787");
        assert_eq!(c.issuer.algorithm, Algorithm::ES256);
        assert_eq!(c.issuer.profile, TokenProfile::Scitokens);
    }

    #[test]
    fn each_config_error_names_the_key_and_line() {
        let cases = [
            ("[server]\nlisten = 5\n", "line 2", "listen"),
            ("[server]\nlisen = \"x\"\n", "line 2", "lisen"),
            ("[issuer]\nalgorithm = \"HS256\"\n", "line 2", "HS256"),
            (
                "[[robot]]\nname = \"ci\"\nproviders = [\"iam\"]\n",
                "line 3",
                "no provider named `iam`",
            ),
            (
                "[[provider]]\nname = \"local\"\nissuer = \"https://x\"\nclient_id = \"c\"\n",
                "line 2",
                "provider[0].name",
            ),
            (
                "[[provider]]\nname = \"a\"\nissuer = \"not a url\"\nclient_id = \"c\"\n",
                "line 3",
                "provider[0].issuer",
            ),
            (
                "[[robot]]\nname = \"a\"\n[[robot]]\nname = \"a\"\n",
                "robot[1].name",
                "defined twice",
            ),
            (
                "[[robot]]\nname = \"ci\"\nscopes = [\"read:/../etc\"]\n",
                "line 3",
                "climbs above",
            ),
            (
                "[[robot]]\nname = \"ci\"\nscopes = [\"read:/data/%2e%2e/etc\"]\n",
                "line 3",
                "`%2e` in its path",
            ),
            ("[refresher]\nshare = 1.5\n", "line 2", "refresher.share"),
            ("[issuer]\nlifetime = -1\n", "line 2", "issuer.lifetime"),
            ("[store]\nbackend = \"postgres\"\n", "line 2", "needs url"),
            (
                "[store]\nbackend = \"mysql\"\n",
                "line 2",
                "unknown backend",
            ),
            (
                "[store]\npath = \"/x\"\nurl = \"postgres://db/x\"\n",
                "line 2",
                "store.path",
            ),
            (
                "[store]\nkey_file = \"/k\"\n",
                "line 2",
                "is for a PostgreSQL store",
            ),
            (
                "[store]\nurl = \"postgres://db/x\"\npool_size = 0\n",
                "line 3",
                "store.pool_size",
            ),
        ];
        for (text, where_, what) in cases {
            let err = parse(text).unwrap_err();
            assert!(
                err.contains(where_) && err.contains(what),
                "{text:?} -> {err}"
            );
            assert!(err.starts_with("config c.toml"), "{err}");
        }
    }

    #[test]
    fn a_client_secret_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = format!(
            "[[provider]]\nname = \"a\"\nissuer = \"https://x\"\nclient_id = \"c\"\nclient_secret_file = \"{}\"\n",
            f.display()
        );
        let err = parse(&text).unwrap_err();
        assert!(err.contains("line 5") && err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn environment_variables_override_single_sections() {
        let env = [
            (
                "CREDKEEPER_SERVER_LISTEN".to_string(),
                "127.0.0.1:9999".to_string(),
            ),
            ("CREDKEEPER_ISSUER_LIFETIME".to_string(), "60".to_string()),
            (
                "CREDKEEPER_ISSUER_URL".to_string(),
                "https://broker.example".to_string(),
            ),
        ];
        let c = Config::parse("c.toml", "[issuer]\nlifetime = 600\n", env.into_iter()).unwrap();
        assert_eq!(c.server.listen.port(), 9999);
        assert_eq!(c.issuer.lifetime, 60);
        assert_eq!(c.issuer.url.as_deref(), Some("https://broker.example"));
    }

    #[test]
    fn templates_fill_in_the_username() {
        let c = parse("[[robot]]\nname = \"ci\"\nusername = \"ligo-ci\"\nscopes = [\"read:/user/{username}\"]\n").unwrap();
        assert!(
            c.robots[0]
                .allowed_scopes()
                .covers(&ScopeSet::parse("read:/user/ligo-ci/x"))
        );
    }
}
