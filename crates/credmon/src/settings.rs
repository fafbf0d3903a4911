//! What the credmon does, from the HTCondor knob names (see the research notes for the
//! upstream defaults) and the command line.

use crate::condor_config::CondorConfig;
use credkeeper_issuer::{Algorithm, VersionClaim};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "no credential directory: pass -c DIR or set SEC_CREDENTIAL_DIRECTORY_OAUTH (in CONDOR_CONFIG or as _CONDOR_SEC_CREDENTIAL_DIRECTORY_OAUTH)"
    )]
    NoDirectory,
    #[error("{name} = {value:?}: {problem}")]
    Bad {
        name: String,
        value: String,
        problem: &'static str,
    },
}

/// A local-issuer provider (`LOCAL_CREDMON_PROVIDER_NAMES`).
#[derive(Clone, Debug)]
pub struct LocalProvider {
    pub name: String,
    pub issuer: credkeeper_issuer::Settings,
    /// `{username}` is replaced by the user's name.
    pub authz_template: String,
    /// `aud` as a JSON list, when configured.
    pub audience: Vec<String>,
    /// `.use` as `{"access_token", "expires_in"}` JSON (default) or the bare token.
    pub use_json: bool,
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub cred_dir: PathBuf,
    /// Renew when this share of a token's lifetime has passed (upstream: 0.5; Box 0.95).
    pub refresh_fraction: f64,
    pub interval_secs: u64,
    pub concurrency: usize,
    pub local: Vec<LocalProvider>,
    /// For `<PROVIDER>_CLIENT_SECRET_FILE`, used when a `.meta` has no secret.
    pub config: CondorConfig,
}

impl Settings {
    pub fn from_config(
        config: CondorConfig,
        cred_dir: Option<PathBuf>,
    ) -> Result<Settings, SettingsError> {
        let cred_dir = cred_dir
            .or_else(|| {
                config
                    .get("SEC_CREDENTIAL_DIRECTORY_OAUTH")
                    .map(PathBuf::from)
            })
            .or_else(|| config.get("SEC_CREDENTIAL_DIRECTORY").map(PathBuf::from))
            .ok_or(SettingsError::NoDirectory)?;
        let fraction = config.get_or("CREDMON_OAUTH_REFRESH_FRACTION", "0.5");
        let refresh_fraction = fraction
            .parse::<f64>()
            .ok()
            .filter(|f| *f > 0.0 && *f < 1.0)
            .ok_or(SettingsError::Bad {
                name: "CREDMON_OAUTH_REFRESH_FRACTION".into(),
                value: fraction.clone(),
                problem: "must be a number between 0 and 1",
            })?;
        let names = config
            .get("LOCAL_CREDMON_PROVIDER_NAMES")
            .or_else(|| config.get("LOCAL_CREDMON_PROVIDER_NAME"))
            .unwrap_or_else(|| "scitokens".into());
        let mut local = Vec::new();
        for name in names.split([',', ' ']).filter(|n| !n.is_empty()) {
            local.push(local_provider(&config, name)?);
        }
        Ok(Settings {
            cred_dir,
            refresh_fraction,
            interval_secs: config
                .get_i64("CREDMON_OAUTH_SCAN_INTERVAL")
                .unwrap_or(60)
                .max(1) as u64,
            concurrency: config
                .get_i64("CREDMON_OAUTH_CONCURRENCY")
                .unwrap_or(16)
                .max(1) as usize,
            local,
            config,
        })
    }
}

/// `LOCAL_CREDMON_<PROVIDER>_<X>`, else `LOCAL_CREDMON_<X>`, else the default.
fn knob(config: &CondorConfig, provider: &str, x: &str, default: &str) -> String {
    config
        .get(&format!(
            "LOCAL_CREDMON_{}_{x}",
            provider.to_ascii_uppercase()
        ))
        .or_else(|| config.get(&format!("LOCAL_CREDMON_{x}")))
        .unwrap_or_else(|| default.to_string())
}

fn local_provider(config: &CondorConfig, name: &str) -> Result<LocalProvider, SettingsError> {
    let k = |x: &str, d: &str| knob(config, name, x, d);
    let lifetime_text = k("TOKEN_LIFETIME", "1200");
    let lifetime =
        lifetime_text
            .parse::<i64>()
            .ok()
            .filter(|l| *l > 0)
            .ok_or(SettingsError::Bad {
                name: "LOCAL_CREDMON_TOKEN_LIFETIME".into(),
                value: lifetime_text.clone(),
                problem: "must be a positive number of seconds",
            })?;
    let algorithm = match k("PRIVATE_KEY_ALGORITHM", "ES256").as_str() {
        "ES256" => Algorithm::ES256,
        "RS256" => Algorithm::RS256,
        other => {
            return Err(SettingsError::Bad {
                name: "LOCAL_CREDMON_PRIVATE_KEY_ALGORITHM".into(),
                value: other.into(),
                problem: "must be ES256 or RS256",
            });
        }
    };
    // Upstream 0.8 sets no version claim; the newer knob adds one.
    let version = match k("TOKEN_VERSION", "").as_str() {
        "" => None,
        "wlcg" | "wlcg:1.0" => Some(VersionClaim::Wlcg("1.0".into())),
        v => Some(VersionClaim::Ver(v.to_string())),
    };
    let host = config.get("FULL_HOSTNAME").unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into())
    });
    Ok(LocalProvider {
        name: name.to_string(),
        issuer: credkeeper_issuer::Settings {
            url: k("ISSUER", &format!("https://{host}")),
            algorithm,
            key_file: PathBuf::from(k("PRIVATE_KEY", "/etc/condor/scitokens-private.pem")),
            generate: true,
            public_key_file: Some(PathBuf::from(k("PUBLIC_KEY", "/etc/condor/scitokens.pem"))),
            key_id: Some(k("KEY_ID", "local")),
            lifetime,
            version,
        },
        authz_template: k(
            "AUTHZ_TEMPLATE",
            "read:/user/{username} write:/user/{username}",
        ),
        audience: k("TOKEN_AUDIENCE", "")
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        use_json: config.get_bool(
            &format!("LOCAL_CREDMON_{}_TOKEN_USE_JSON", name.to_ascii_uppercase()),
            config.get_bool("LOCAL_CREDMON_TOKEN_USE_JSON", true),
        ),
    })
}
