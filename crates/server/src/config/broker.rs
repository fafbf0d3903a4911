//! The broker itself: its listener and limits (`[server]`) and its local issuer
//! (`[issuer]`).

use super::Algorithm;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
