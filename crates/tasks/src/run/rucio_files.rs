//! What a run gives the Rucio client: a private rucio.cfg over the image's, its token cache,
//! and per auth type the session token (kept fresh), certificate or key.

use super::*;

/// Rucio session tokens for the run's userpass settings (the password stays here).
pub(super) struct RucioTokens {
    settings: crate::rucio::RucioSettings,
    http: credkeeper_oidc::Http,
}

impl TokenSource for RucioTokens {
    fn token<'a>(&'a self, _: &'a TokenAsk) -> SourceFuture<'a> {
        Box::pin(async move {
            let (token, expires) = crate::rucio::userpass_token(&self.settings, &self.http)
                .await
                .map_err(SourceError::other)?;
            Ok(Fresh {
                token,
                origin: Origin::PasswordLogin,
                expires: Some(expires),
            })
        })
    }
}

/// Write the run's rucio.cfg (and, per auth type, its session token, certificate and key)
/// into `dir`, export `RUCIO_CONFIG` and a private `TMPDIR` holding the client's token
/// cache, where the token goes. A userpass login that fails fails the run here, before the
/// command starts. `bearer` is the task's bearer token, which `oidc` hands the client.
/// Returns the refresher of a userpass session, and for `oidc` the token cache, which the
/// bearer token's refresher keeps fresh.
pub(super) async fn prepare_rucio(
    s: &crate::rucio::RucioSettings,
    bearer: Option<&Secret>,
    dir: &Path,
    env: &mut std::collections::BTreeMap<String, String>,
    secrets: &Redactions,
) -> Result<(Option<tokio::task::JoinHandle<()>>, Option<TokenFile>), PrepareError> {
    use crate::rucio::{config, private_file};
    let io = |source: std::io::Error| PrepareError::Write {
        what: "the run's Rucio files",
        source,
    };
    // The image's (or the site's) rucio.cfg, kept whole under what the task sets.
    let (path, required) = crate::rucio::base_config(env, |k| std::env::var(k).ok());
    let base = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(source) if required || source.kind() != std::io::ErrorKind::NotFound => {
            return Err(PrepareError::RucioConfig { path, source });
        }
        Err(_) => None,
    };
    let mut s = s.clone();
    if let Some(text) = &base {
        s.fill_from(text);
    }
    let s = &s;
    // Read (and checked) once: the trusted CAs of every login this run makes.
    let http = credkeeper_oidc::Http::with_ca_file(
        s.ca_cert.as_deref().map(Path::new),
        credkeeper_oidc::Roots::Only,
    )
    .map_err(PrepareError::RucioCa)?;
    let tmp = dir.join("tmp");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&tmp)
        .map_err(io)?;
    env.insert("TMPDIR".into(), tmp.display().to_string());
    // The token, where the client's cache is and where upstream's entry point puts it.
    let cache = TokenFile {
        path: crate::rucio::token_cache(&tmp, env, s.account.as_deref(), s.vo.as_deref()),
        newline: false,
    };
    let write_cache = |token: &Secret| {
        if let Some(parent) = cache.path.parent() {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(parent)?;
        }
        cache.write(token)
    };
    let mut files = std::collections::BTreeMap::new();
    let mut refresher = None;
    let mut oidc_cache = None;
    let auth_type = match s.auth_type.as_str() {
        "userpass" => {
            let (token, expires) = crate::rucio::userpass_token(s, &http)
                .await
                .map_err(PrepareError::RucioLogin)?;
            secrets.add(token.expose());
            if let Some(p) = &s.password {
                secrets.add(p.expose());
            }
            write_cache(&token).map_err(io)?;
            files.insert("auth_token_file_path", cache.path.display().to_string());
            let source: Arc<dyn TokenSource> = Arc::new(RucioTokens {
                settings: s.clone(),
                http: http.clone(),
            });
            refresher = Some(tokio::spawn(keep_fresh(
                source,
                secrets.clone(),
                TokenAsk::default(),
                vec![cache],
                expires,
            )));
            // The session token, not the password: the client sends it as a token.
            "oidc"
        }
        "oidc" => {
            let Some(token) = bearer else {
                return Err(PrepareError::RucioOidcWithoutBearer);
            };
            write_cache(token).map_err(io)?;
            files.insert("auth_token_file_path", cache.path.display().to_string());
            oidc_cache = Some(cache);
            "oidc"
        }
        "x509" => {
            let pem_file = |value: &Option<credkeeper_core::Secret>,
                            path: &Option<String>,
                            name: &'static str,
                            what: &'static str|
             -> Result<String, PrepareError> {
                match (value, path) {
                    (Some(v), _) => {
                        secrets.add(v.expose());
                        private_file(dir, name, v.expose().as_bytes()).map_err(io)
                    }
                    (None, Some(p)) => Ok(p.clone()),
                    (None, None) => Err(PrepareError::X509Missing(what)),
                }
            };
            let cert = pem_file(
                &s.client_cert_value,
                &s.client_cert,
                "client.crt",
                "CLIENT_CERT",
            )?;
            let key = pem_file(
                &s.client_key_value,
                &s.client_key,
                "client.key",
                "CLIENT_KEY",
            )?;
            files.insert("client_cert", cert);
            files.insert("client_key", key);
            "x509"
        }
        other => {
            return Err(PrepareError::RucioAuthType(other.to_string()));
        }
    };
    let cfg = private_file(
        dir,
        "rucio.cfg",
        config(s, auth_type, &files, base.as_deref()).as_bytes(),
    )
    .map_err(io)?;
    env.insert("RUCIO_CONFIG".into(), cfg);
    Ok((refresher, oidc_cache))
}
