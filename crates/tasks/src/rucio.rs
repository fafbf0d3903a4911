//! Rucio credentials for a run. The real client reads no `RUCIO_CFG_*` variables (only
//! rucio-task-manager's container turns them into a config file), so credkeeper does the
//! same from the same names: a private `rucio.cfg` per run, exported as `RUCIO_CONFIG`,
//! with the run's own token cache (`TMPDIR`). The password never reaches the task:
//! credkeeper logs in (`/auth/userpass`) and hands the task the one-hour Rucio session
//! token; `oidc` uses the run's bearer token file; `x509` gets the certificate and key
//! written 0600 in the run's directory.

use credkeeper_core::{Secret, Timestamp};
use std::collections::BTreeMap;
use std::path::Path;

/// The `RUCIO_CFG_*` settings of a task (taken out of its environment).
#[derive(Clone, Debug, Default)]
pub struct RucioSettings {
    pub rucio_host: Option<String>,
    pub auth_host: Option<String>,
    pub account: Option<String>,
    pub auth_type: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub client_cert_value: Option<Secret>,
    pub client_key_value: Option<Secret>,
    pub ca_cert: Option<String>,
    pub vo: Option<String>,
}

impl RucioSettings {
    /// Take the `RUCIO_CFG_*` variables (both rucio-task-manager's `RUCIO_CFG_ACCOUNT` and the
    /// merge tool's `RUCIO_CFG_CLIENT_ACCOUNT` spellings) out of `env`; `None` when the
    /// task names no Rucio auth type.
    pub fn take(env: &mut BTreeMap<String, String>) -> Option<RucioSettings> {
        let mut take = |name: &str| {
            let a = env.remove(&format!("RUCIO_CFG_{name}"));
            let b = env.remove(&format!("RUCIO_CFG_CLIENT_{name}"));
            a.or(b).filter(|v| !v.is_empty())
        };
        let auth_type = take("AUTH_TYPE")?;
        Some(RucioSettings {
            rucio_host: take("RUCIO_HOST"),
            auth_host: take("AUTH_HOST"),
            account: take("ACCOUNT"),
            username: take("USERNAME"),
            password: take("PASSWORD").map(Secret::new),
            client_cert: take("CLIENT_CERT"),
            client_key: take("CLIENT_KEY"),
            client_cert_value: take("CLIENT_CERT_VALUE").map(Secret::new),
            client_key_value: take("CLIENT_KEY_VALUE").map(Secret::new),
            ca_cert: take("CA_CERT"),
            vo: take("VO"),
            auth_type,
        })
    }
}

/// A `RUCIO_CFG_*` (or `RUCIO_CFG_CLIENT_*`) value as written in a definition.
fn setting<'a>(env: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    env.get(&format!("RUCIO_CFG_{name}"))
        .or_else(|| env.get(&format!("RUCIO_CFG_CLIENT_{name}")))
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// Whether the task authenticates to Rucio with a bearer token (`auth_type = oidc`).
pub fn wants_bearer(env: &BTreeMap<String, String>) -> bool {
    setting(env, "AUTH_TYPE") == Some("oidc")
}

/// The bearer token an `oidc` task of a rucio-task-manager values file gets (that format
/// has no `credentials`): the scope and audience its Rucio client would ask for
/// (`oidc_scope`, `oidc_audience`; the client's defaults `openid profile` and `rucio`).
pub fn values_bearer(env: &BTreeMap<String, String>) -> Option<crate::definition::BearerSpec> {
    wants_bearer(env).then(|| crate::definition::BearerSpec {
        provider: None,
        scopes: Some(
            setting(env, "OIDC_SCOPE")
                .unwrap_or("openid profile")
                .into(),
        ),
        audience: Some(setting(env, "OIDC_AUDIENCE").unwrap_or("rucio").into()),
    })
}

/// A Rucio session token from `/auth/userpass`, and when it expires.
pub async fn userpass_token(
    s: &RucioSettings,
    http: &credkeeper_oidc::Http,
) -> Result<(Secret, Timestamp), String> {
    let auth_host = s
        .auth_host
        .as_deref()
        .or(s.rucio_host.as_deref())
        .ok_or("RUCIO_CFG_AUTH_HOST (or RUCIO_CFG_RUCIO_HOST) is not set")?;
    let (Some(account), Some(username), Some(password)) = (&s.account, &s.username, &s.password)
    else {
        return Err(
            "userpass needs RUCIO_CFG_ACCOUNT, RUCIO_CFG_USERNAME and RUCIO_CFG_PASSWORD".into(),
        );
    };
    let url = format!("{}/auth/userpass", auth_host.trim_end_matches('/'));
    // The project's client: a redirect never carries the password to another host.
    let mut request = http
        .client()
        .get(&url)
        .header("X-Rucio-Account", account)
        .header("X-Rucio-Username", username)
        .header("X-Rucio-Password", password.expose())
        .header("X-Rucio-AppID", "credkeeper");
    if let Some(vo) = &s.vo {
        request = request.header("X-Rucio-VO", vo);
    }
    let response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if status != 200 {
        let why = header("ExceptionMessage").unwrap_or_else(|| format!("HTTP {status}"));
        return Err(format!(
            "Rucio at {auth_host} refused user {username} for account {account}: {why}"
        ));
    }
    let token = header("X-Rucio-Auth-Token").ok_or("Rucio answered without X-Rucio-Auth-Token")?;
    // The session lives an hour (fixed server-side); the header gives the exact time.
    let expires = header("X-Rucio-Auth-Token-Expires")
        .and_then(|e| chrono::DateTime::parse_from_rfc2822(&e.replace(" UTC", " +0000")).ok())
        .map(|t| Timestamp::from_unix(t.timestamp()))
        .unwrap_or_else(|| Timestamp::now().plus_secs(3600));
    Ok((Secret::new(token), expires))
}

/// The `[client]` section for a run: `files` names what the run directory holds (token
/// file, certificate, key).
pub fn config(s: &RucioSettings, auth_type: &str, files: &BTreeMap<&str, String>) -> String {
    let mut out = String::from("[client]\n");
    let mut line = |k: &str, v: &str| out.push_str(&format!("{k} = {v}\n"));
    if let Some(h) = &s.rucio_host {
        line("rucio_host", h);
    }
    line(
        "auth_host",
        s.auth_host
            .as_deref()
            .or(s.rucio_host.as_deref())
            .unwrap_or(""),
    );
    if let Some(a) = &s.account {
        line("account", a);
    }
    line("auth_type", auth_type);
    if let Some(vo) = &s.vo {
        line("vo", vo);
    }
    for (k, v) in files {
        line(k, v);
    }
    if let Some(ca) = &s.ca_cert
        && !files.contains_key("ca_cert")
    {
        line("ca_cert", ca);
    }
    line("request_retries", "3");
    out
}

/// Write `contents` to `dir/name` with mode 0600; the path.
pub fn private_file(dir: &Path, name: &str, contents: &[u8]) -> std::io::Result<String> {
    let path = dir.join(name);
    crate::run::write_private(&path, contents)?;
    Ok(path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rucio_cfg_variables_leave_the_environment_and_make_a_client_section() {
        let mut env: BTreeMap<String, String> = [
            ("RUCIO_CFG_AUTH_TYPE", "userpass"),
            ("RUCIO_CFG_ACCOUNT", "robot"),
            ("RUCIO_CFG_CLIENT_RUCIO_HOST", "http://127.0.0.1:8080"),
            ("RUCIO_CFG_USERNAME", "robot"),
            ("RUCIO_CFG_PASSWORD", "robot-pass"),
            ("OTHER", "kept"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let s = RucioSettings::take(&mut env).unwrap();
        assert_eq!(
            env.keys().collect::<Vec<_>>(),
            vec!["OTHER"],
            "no RUCIO_CFG_* left for the task"
        );
        assert_eq!(s.password.as_ref().unwrap().expose(), "robot-pass");
        let files = BTreeMap::from([("auth_token_file_path", "/run/x/rucio_token".to_string())]);
        let cfg = config(&s, "oidc", &files);
        assert!(cfg.starts_with("[client]\nrucio_host = http://127.0.0.1:8080\nauth_host = http://127.0.0.1:8080\naccount = robot\nauth_type = oidc\n"), "{cfg}");
        assert!(cfg.contains("auth_token_file_path = /run/x/rucio_token"));
        assert!(
            !cfg.contains("robot-pass"),
            "the password is not in the task's config"
        );
        assert!(RucioSettings::take(&mut BTreeMap::new()).is_none());
    }
}
