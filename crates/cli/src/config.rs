//! Settings: flags, then `CREDKEEPER_*` variables (through clap's `env`), then the TOML
//! config file, then defaults.

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use credkeeper_core::Secret;
use credkeeper_oidc::{ClientAuth, UrlPolicy};
use credkeeper_store::StoreSettings;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Flags every subcommand takes.
#[derive(Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Config file (TOML)
    #[arg(long, global = true, env = "CREDKEEPER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where credentials are stored [default: $XDG_DATA_HOME/credkeeper]
    #[arg(long, global = true, env = "CREDKEEPER_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Allow plain-HTTP issuers on a loopback address (127.0.0.1, ::1, localhost): tests
    /// and same-host brokers only
    #[arg(long, global = true, env = "CREDKEEPER_INSECURE_LOOPBACK")]
    pub insecure_loopback: bool,
    /// Trust the CA certificates in this PEM file (a site or test CA): only those, as
    /// htgettoken's --cafile; for `serve`, beside the system's
    #[arg(long, global = true, env = "CREDKEEPER_CAFILE", value_name = "FILE")]
    pub cafile: Option<PathBuf>,
    /// Log format on standard error
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        env = "CREDKEEPER_LOG_FORMAT"
    )]
    pub log_format: crate::LogFormat,
    /// More output (-v: progress, -vv: debug)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// client_secret_basic (HTTP Basic)
    #[default]
    Basic,
    /// client_secret_post (in the form body)
    Post,
}

/// Which issuer and client, and what to ask for. Shared by `get`, `login` and `logout`.
#[derive(Args, Clone, Default)]
#[command(next_help_heading = "Issuer and client")]
pub struct IssuerArgs {
    /// Issuer URL (OIDC discovery is used to find its endpoints); with -a/--vaultserver,
    /// the server's issuer name
    #[arg(short = 'i', long, env = "CREDKEEPER_ISSUER", value_name = "URL")]
    pub issuer: Option<String>,
    /// OAuth2 client id registered at the issuer
    #[arg(long, env = "CREDKEEPER_CLIENT_ID", value_name = "ID")]
    pub client_id: Option<String>,
    /// File holding the client secret (mode 0600); makes the client confidential
    #[arg(long, env = "CREDKEEPER_CLIENT_SECRET_FILE", value_name = "FILE")]
    pub client_secret_file: Option<PathBuf>,
    /// How a confidential client authenticates
    #[arg(long, value_enum, env = "CREDKEEPER_CLIENT_AUTH")]
    pub client_auth: Option<AuthMethod>,
    /// Scopes to ask for, comma- or space-separated (e.g. storage.read:/data,compute.read)
    #[arg(long, env = "CREDKEEPER_SCOPES", value_name = "SCOPES")]
    pub scopes: Option<String>,
    /// Audience the token is for
    #[arg(long, env = "CREDKEEPER_AUDIENCE", value_name = "AUD")]
    pub audience: Option<String>,
}

/// The config file. Unknown keys are errors, so a typo does not silently change nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub client_auth: Option<AuthMethod>,
    pub scopes: Option<String>,
    pub audience: Option<String>,
    pub minsecs: Option<i64>,
    pub outfile: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub insecure_loopback: Option<bool>,
    /// The store, as the broker's `[store]` (a PostgreSQL store for `tasks serve`
    /// replicas); `CREDKEEPER_STORE_URL` and the like override it.
    pub store: Option<credkeeper_server::config::StoreSection>,
}

pub struct Settings {
    pub file: FileConfig,
    pub state_dir: PathBuf,
    /// The credential store: SQLite in `state_dir` unless `[store] url` names PostgreSQL.
    pub store: StoreSettings,
    /// Issuers' discovery documents and keys.
    pub cache: credkeeper_oidc::DiskCache,
    pub policy: UrlPolicy,
    pub ca_file: Option<PathBuf>,
}

/// An issuer and client, resolved from flags, environment and file.
pub struct Resolved {
    pub issuer: String,
    pub client_id: String,
    /// The client-secret file and how to send the secret; read only when the issuer is
    /// asked (a reused token needs no secret).
    pub secret: Option<(PathBuf, AuthMethod)>,
    pub scopes: Option<credkeeper_core::Scopes>,
    pub audience: Option<String>,
}

impl Resolved {
    /// What a token from this issuer is asked for when nothing else is said: the
    /// configured scopes and audience.
    pub fn ask(&self) -> credkeeper_core::TokenAsk {
        credkeeper_core::TokenAsk {
            scopes: self.scopes.clone(),
            audience: self.audience.clone(),
            ..Default::default()
        }
    }

    /// How the client authenticates, reading (and checking) the client-secret file.
    pub fn auth(&self) -> anyhow::Result<ClientAuth> {
        let Some((path, method)) = &self.secret else {
            return Ok(ClientAuth::None);
        };
        let secret = Secret::new(credkeeper_sink::perm::read_private(
            path,
            "client-secret file",
        )?);
        if secret.is_empty() {
            bail!("client-secret file {} is empty", path.display());
        }
        Ok(match method {
            AuthMethod::Basic => ClientAuth::Basic(secret),
            AuthMethod::Post => ClientAuth::Post(secret),
        })
    }
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

fn xdg(var: &str, fallback: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(fallback)))
}

/// `$XDG_DATA_HOME/credkeeper`, else `~/.local/share/credkeeper`.
pub fn default_state_dir() -> Option<PathBuf> {
    xdg("XDG_DATA_HOME", ".local/share").map(|d| d.join("credkeeper"))
}

impl Settings {
    pub fn load(global: &Global) -> anyhow::Result<Settings> {
        let default_config =
            xdg("XDG_CONFIG_HOME", ".config").map(|d| d.join("credkeeper/config.toml"));
        let file = match (&global.config, default_config) {
            (Some(path), _) => read_config(path)?,
            (None, Some(path)) if path.exists() => read_config(&path)?,
            _ => FileConfig::default(),
        };
        let state_dir = global
            .state_dir
            .clone()
            .or_else(|| file.state_dir.clone())
            .or_else(default_state_dir)
            .context("no state directory: set --state-dir, CREDKEEPER_STATE_DIR or HOME")?;
        let store = store_settings(&file, &state_dir)?;
        let cache = credkeeper_oidc::DiskCache::new(
            xdg("XDG_CACHE_HOME", ".cache").map(|d| d.join("credkeeper")),
        );
        let policy = UrlPolicy {
            allow_insecure_loopback: global.insecure_loopback
                || file.insecure_loopback.unwrap_or(false),
        };
        Ok(Settings {
            file,
            state_dir,
            store,
            cache,
            policy,
            ca_file: global.cafile.clone(),
        })
    }

    /// The HTTP client every client command uses: with `--cafile`, trusting only the CAs
    /// in it, as htgettoken's `--cafile` and curl's `--cacert` do.
    pub fn http(&self) -> anyhow::Result<credkeeper_oidc::Http> {
        Ok(credkeeper_oidc::Http::with_ca_file(
            self.ca_file.as_deref(),
            credkeeper_oidc::Roots::Only,
        )?)
    }

    pub fn resolve(&self, args: &IssuerArgs) -> anyhow::Result<Resolved> {
        let f = &self.file;
        let Some(issuer) = args.issuer.clone().or_else(|| f.issuer.clone()) else {
            bail!(
                "no issuer: pass --issuer URL, set CREDKEEPER_ISSUER, or put `issuer` in the config file"
            );
        };
        let Some(client_id) = args.client_id.clone().or_else(|| f.client_id.clone()) else {
            bail!(
                "no client id: pass --client-id, set CREDKEEPER_CLIENT_ID, or put `client_id` in the config file"
            );
        };
        let secret = args
            .client_secret_file
            .clone()
            .or_else(|| f.client_secret_file.clone())
            .map(|path| (path, args.client_auth.or(f.client_auth).unwrap_or_default()));
        Ok(Resolved {
            issuer,
            client_id,
            secret,
            scopes: args
                .scopes
                .as_deref()
                .or(f.scopes.as_deref())
                .and_then(credkeeper_core::Scopes::parse),
            audience: args.audience.clone().or_else(|| f.audience.clone()),
        })
    }
}

/// The config file's `[store]` with `CREDKEEPER_STORE_<KEY>` over it, as the broker reads
/// its own.
fn store_settings(file: &FileConfig, state_dir: &Path) -> anyhow::Result<StoreSettings> {
    let mut store = file.store.clone().unwrap_or_default();
    let var = |name: &str| std::env::var_os(format!("CREDKEEPER_STORE_{name}"));
    if let Some(v) = var("URL") {
        store.url = Some(
            v.into_string()
                .map_err(|_| anyhow::anyhow!("CREDKEEPER_STORE_URL is not UTF-8"))?,
        );
    }
    for (name, slot) in [
        ("PASSWORD_FILE", &mut store.password_file),
        ("CA_FILE", &mut store.ca_file),
        ("KEY_FILE", &mut store.key_file),
    ] {
        if let Some(v) = var(name) {
            *slot = Some(v.into());
        }
    }
    store
        .check()
        .map_err(|(key, message)| anyhow::anyhow!("[store] {key}: {message}"))?;
    Ok(store.settings(state_dir))
}

fn read_config(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let msg = e.message();
        let location = e
            .span()
            .map(|s| {
                let line = text[..s.start].matches('\n').count() + 1;
                format!(" line {line}")
            })
            .unwrap_or_default();
        anyhow::anyhow!("config file {}{location}: {msg}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_file_line_and_problem() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "issuer = \"https://x\"\nminsecs = \"soon\"\n").unwrap();
        let err = read_config(&p).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        std::fs::write(&p, "isuer = \"https://x\"\n").unwrap();
        let err = read_config(&p).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("isuer"), "{err}");
    }
}
