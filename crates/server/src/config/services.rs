//! The services beside the robot API: the HTCondor CredD's key-file logins, the registry
//! token server, and the Vault-compatible API.

use super::Algorithm;
use serde::Deserialize;
use std::path::PathBuf;

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
