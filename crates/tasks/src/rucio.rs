//! Rucio credentials for a run. The real client reads no `RUCIO_CFG_*` variables (only
//! rucio-task-manager's container turns them into a config file), so credkeeper does the
//! same from the same names: a private `rucio.cfg` per run, exported as `RUCIO_CONFIG` —
//! the image's own with every `RUCIO_CFG_<SECTION>_<OPTION>` merged onto it, as the image
//! merges them — with the run's own token cache (`TMPDIR`). The password never reaches the task:
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
    /// Every other `RUCIO_CFG_<SECTION>_<OPTION>`, as the base image's
    /// `merge_rucio_configs.py --use-env` reads them: (section, option) lower-cased, the
    /// section the first word. The seed era's section-less `[client]` names
    /// (`RUCIO_CFG_REQUEST_RETRIES`, `_OIDC_SCOPE`, …) are put in `[client]`.
    pub options: BTreeMap<(String, String), String>,
}

/// `[client]` options the seed era's `rucio.cfg.j2` (and credkeeper) spelled without a
/// section, beside the ones credkeeper acts on itself.
const CLIENT_OPTIONS: &[&str] = &[
    "REQUEST_RETRIES",
    "OIDC_SCOPE",
    "OIDC_AUDIENCE",
    "CLIENT_X509_PROXY",
];

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
        // Lower-cased, as the entry point's `${RUCIO_CFG_CLIENT_AUTH_TYPE,,}` selects.
        let auth_type = take("AUTH_TYPE")?.to_lowercase();
        let mut options = BTreeMap::new();
        for name in CLIENT_OPTIONS {
            if let Some(v) = take(name) {
                options.insert(("client".into(), name.to_lowercase()), v);
            }
        }
        Some(RucioSettings {
            options,
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
        .map(|mut s| {
            let rest: Vec<String> = env
                .keys()
                .filter(|k| k.starts_with("RUCIO_CFG_"))
                .cloned()
                .collect();
            for name in rest {
                let value = env.remove(&name).unwrap_or_default();
                let lower = name["RUCIO_CFG_".len()..].to_lowercase();
                if let Some((section, option)) = lower.split_once('_')
                    && !section.is_empty()
                    && !option.is_empty()
                {
                    s.options.insert((section.into(), option.into()), value);
                }
            }
            s
        })
    }
}

impl RucioSettings {
    /// What the base file's `[client]` says where the task's variables say nothing (the
    /// hosts, account and CA a userpass login needs).
    pub fn fill_from(&mut self, base: &str) {
        let ini = Ini::parse(base);
        let get = |k: &str| ini.get("client", k).map(str::to_string);
        self.rucio_host = self.rucio_host.take().or_else(|| get("rucio_host"));
        self.auth_host = self.auth_host.take().or_else(|| get("auth_host"));
        self.account = self.account.take().or_else(|| get("account"));
        self.ca_cert = self.ca_cert.take().or_else(|| get("ca_cert"));
        self.vo = self.vo.take().or_else(|| get("vo"));
    }
}

/// The image's own `rucio.cfg`, which the Rucio client would read (`RUCIO_CONFIG`, else
/// `$RUCIO_HOME/etc/rucio.cfg`, else `/opt/rucio/etc/rucio.cfg`): the file a run's config
/// is merged onto. `env` is the task's environment, `var` credkeeper's own; a file named by
/// a variable must exist, the default one may not.
pub fn base_config(
    env: &BTreeMap<String, String>,
    var: impl Fn(&str) -> Option<String>,
) -> (std::path::PathBuf, bool) {
    let named = |k: &str| {
        env.get(k)
            .cloned()
            .or_else(|| var(k))
            .filter(|v| !v.is_empty())
    };
    if let Some(p) = named("RUCIO_CONFIG") {
        return (p.into(), true);
    }
    if let Some(home) = named("RUCIO_HOME") {
        return (Path::new(&home).join("etc/rucio.cfg"), true);
    }
    ("/opt/rucio/etc/rucio.cfg".into(), false)
}

/// A `RUCIO_CFG_*` (or `RUCIO_CFG_CLIENT_*`) value as written in a definition.
fn setting<'a>(env: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    env.get(&format!("RUCIO_CFG_{name}"))
        .or_else(|| env.get(&format!("RUCIO_CFG_CLIENT_{name}")))
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// Whether the task authenticates to Rucio with a bearer token (`auth_type = oidc`, in
/// any case, as upstream's entry point lower-cases it).
pub fn wants_bearer(env: &BTreeMap<String, String>) -> bool {
    setting(env, "AUTH_TYPE").is_some_and(|t| t.eq_ignore_ascii_case("oidc"))
}

/// The bearer token an `oidc` task of a rucio-task-manager values file gets (that format
/// has no `credentials`): the scope and audience its Rucio client would ask for
/// (`oidc_scope`, `oidc_audience`; the client's defaults `openid profile` and `rucio`).
pub fn values_bearer(env: &BTreeMap<String, String>) -> Option<credkeeper_core::TokenAsk> {
    wants_bearer(env).then(|| credkeeper_core::TokenAsk {
        scopes: credkeeper_core::Scopes::parse(
            setting(env, "OIDC_SCOPE").unwrap_or("openid profile"),
        ),
        audience: Some(setting(env, "OIDC_AUDIENCE").unwrap_or("rucio").into()),
        ..Default::default()
    })
}

/// Why Rucio gave no session token.
#[derive(Debug, thiserror::Error)]
pub enum RucioError {
    #[error("RUCIO_CFG_AUTH_HOST (or RUCIO_CFG_RUCIO_HOST) is not set")]
    NoAuthHost,
    #[error("userpass needs RUCIO_CFG_ACCOUNT, RUCIO_CFG_USERNAME and RUCIO_CFG_PASSWORD")]
    NoUserpass,
    #[error("{url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("Rucio at {host} refused user {user} for account {account}: {why}")]
    Refused {
        host: String,
        user: String,
        account: String,
        why: String,
    },
    #[error("Rucio answered without X-Rucio-Auth-Token")]
    NoToken,
}

/// A Rucio session token from `/auth/userpass`, and when it expires.
pub async fn userpass_token(
    s: &RucioSettings,
    http: &credkeeper_oidc::Http,
) -> Result<(Secret, Timestamp), RucioError> {
    let auth_host = s
        .auth_host
        .as_deref()
        .or(s.rucio_host.as_deref())
        .ok_or(RucioError::NoAuthHost)?;
    let (Some(account), Some(username), Some(password)) = (&s.account, &s.username, &s.password)
    else {
        return Err(RucioError::NoUserpass);
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
    let response = request.send().await.map_err(|e| RucioError::Unreachable {
        url: url.clone(),
        reason: e.to_string(),
    })?;
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
        return Err(RucioError::Refused {
            host: auth_host.to_string(),
            user: username.clone(),
            account: account.clone(),
            why,
        });
    }
    let token = header("X-Rucio-Auth-Token").ok_or(RucioError::NoToken)?;
    // The session lives an hour (fixed server-side); the header gives the exact time.
    let expires = header("X-Rucio-Auth-Token-Expires")
        .and_then(|e| chrono::DateTime::parse_from_rfc2822(&e.replace(" UTC", " +0000")).ok())
        .map(|t| Timestamp::from_unix(t.timestamp()))
        .unwrap_or_else(|| Timestamp::now().plus_secs(3600));
    Ok((Secret::new(token), expires))
}

/// An INI file as sections of `key = value` lines, in order (comments dropped).
#[derive(Default)]
struct Ini(Vec<(String, Vec<(String, String)>)>);

impl Ini {
    fn parse(text: &str) -> Ini {
        let mut ini = Ini::default();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                ini.section(name.trim());
            } else if let Some(i) = line.find(['=', ':']) {
                let (k, v) = (line[..i].trim(), line[i + 1..].trim());
                match ini.0.last_mut() {
                    Some((_, entries)) => entries.push((k.to_lowercase(), v.to_string())),
                    // Before any section: not something configparser reads either.
                    None => continue,
                }
            } else if let Some((_, entries)) = ini.0.last_mut()
                && let Some((_, v)) = entries.last_mut()
            {
                // A continuation line.
                v.push('\n');
                v.push_str(line);
            }
        }
        ini
    }

    fn section(&mut self, name: &str) -> &mut Vec<(String, String)> {
        let i = match self.0.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                self.0.push((name.to_string(), Vec::new()));
                self.0.len() - 1
            }
        };
        &mut self.0[i].1
    }

    fn get(&self, section: &str, key: &str) -> Option<&str> {
        let (_, entries) = self.0.iter().find(|(n, _)| n == section)?;
        entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn set(&mut self, section: &str, key: &str, value: &str) {
        // In place when the file has it (its order kept), else appended.
        let entries = self.section(section);
        let value = value.replace('\n', "\n ");
        match entries.iter().position(|(k, _)| k == key) {
            Some(i) => {
                entries[i].1 = value;
                let mut n = 0;
                entries.retain(|(k, _)| {
                    n += 1;
                    k != key || n == i + 1
                });
            }
            None => entries.push((key.to_string(), value)),
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        for (name, entries) in &self.0 {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&format!("[{name}]\n"));
            for (k, v) in entries {
                out.push_str(&format!("{k} = {v}\n"));
            }
        }
        out
    }
}

/// The run's `rucio.cfg`: `base` (the image's or the site's file, kept whole) with every
/// `RUCIO_CFG_<SECTION>_<OPTION>` merged onto it, as upstream's image merges them, and
/// `[client]` set for the run: `files` names what the run directory holds (token file,
/// certificate, key), `auth_type` is what the client is to do with them.
pub fn config(
    s: &RucioSettings,
    auth_type: &str,
    files: &BTreeMap<&str, String>,
    base: Option<&str>,
) -> String {
    let mut ini = Ini::parse(base.unwrap_or(""));
    for ((section, option), value) in &s.options {
        ini.set(section, option, value);
    }
    let client = "client";
    if let Some(h) = &s.rucio_host {
        ini.set(client, "rucio_host", h);
    }
    let auth_host = s
        .auth_host
        .clone()
        .or_else(|| ini.get(client, "auth_host").map(str::to_string))
        .or_else(|| ini.get(client, "rucio_host").map(str::to_string))
        .unwrap_or_default();
    ini.set(client, "auth_host", &auth_host);
    if let Some(a) = &s.account {
        ini.set(client, "account", a);
    }
    ini.set(client, "auth_type", auth_type);
    if let Some(vo) = &s.vo {
        ini.set(client, "vo", vo);
    }
    for (k, v) in files {
        ini.set(client, k, v);
    }
    if let Some(ca) = &s.ca_cert
        && !files.contains_key("ca_cert")
    {
        ini.set(client, "ca_cert", ca);
    }
    if ini.get(client, "request_retries").is_none() {
        ini.set(client, "request_retries", "3");
    }
    ini.text()
}

/// The Rucio client's own token cache, as it finds it with `TMPDIR=tmp`:
/// `<tmp>/<user>/.rucio_<user>[@<vo>]/auth_token_for_account_<account>` (rucio
/// `BaseClient._get_auth_tokens` and `get_tmp_dir`), `user` as Python's `getpass.getuser()`
/// finds it in the task's environment `env`. Where upstream's entry point puts the token.
pub fn token_cache(
    tmp: &Path,
    env: &BTreeMap<String, String>,
    account: Option<&str>,
    vo: Option<&str>,
) -> std::path::PathBuf {
    let user = login_name(env);
    let mut dir = format!(".rucio_{user}");
    // The client's default VO is `def`, which it leaves out.
    if let Some(vo) = vo.filter(|v| *v != "def") {
        dir.push('@');
        dir.push_str(vo);
    }
    let file = match account {
        Some(a) => format!("auth_token_for_account_{a}"),
        None => "auth_token_for_default_account".to_string(),
    };
    tmp.join(&user).join(dir).join(file)
}

/// `getpass.getuser()`: LOGNAME, USER, LNAME, USERNAME (the task's, then credkeeper's),
/// else the password database's name for this uid, else the uid.
fn login_name(env: &BTreeMap<String, String>) -> String {
    for name in ["LOGNAME", "USER", "LNAME", "USERNAME"] {
        if let Some(v) = env
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
            .filter(|v| !v.is_empty())
        {
            return v;
        }
    }
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    // SAFETY: passwd is plain C data (pointers and integers), for which zero is valid.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes into `pw` and `buf` (its length given) and sets `found`
    // to `&pw` or null; nothing else is touched, and both outlive the call.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc == 0 && !found.is_null() && !pw.pw_name.is_null() {
        // SAFETY: pw_name points into `buf`, NUL-terminated by getpwuid_r.
        let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
        return name.to_string_lossy().into_owned();
    }
    uid.to_string()
}

/// Write `contents` to `dir/name` with mode 0600; the path.
pub fn private_file(dir: &Path, name: &str, contents: &[u8]) -> std::io::Result<String> {
    let path = dir.join(name);
    credkeeper_sink::write_private(&path, contents).map_err(std::io::Error::other)?;
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
        let cfg = config(&s, "oidc", &files, None);
        assert!(cfg.starts_with("[client]\nrucio_host = http://127.0.0.1:8080\nauth_host = http://127.0.0.1:8080\naccount = robot\nauth_type = oidc\n"), "{cfg}");
        assert!(cfg.contains("auth_token_file_path = /run/x/rucio_token"));
        assert!(
            !cfg.contains("robot-pass"),
            "the password is not in the task's config"
        );
        assert!(RucioSettings::take(&mut BTreeMap::new()).is_none());
    }

    #[test]
    fn every_rucio_cfg_variable_is_merged_onto_the_images_rucio_cfg() {
        // What rucio/containers' clients image bakes in (rucio.default.cfg) and a site adds.
        let base = "[common]\n# a comment\nloglevel = INFO\n\n[client]\nrucio_host = https://rucio.example\nauth_host = https://auth.example\nca_cert = /etc/pki/tls/certs/ca-bundle.crt\nrequest_retries = 5\naccount = image-account\n\n[policy]\npermission = generic\nschema = generic\n";
        let mut env: BTreeMap<String, String> = [
            ("RUCIO_CFG_CLIENT_AUTH_TYPE", "OIDC"),
            ("RUCIO_CFG_CLIENT_ACCOUNT", "robot"),
            ("RUCIO_CFG_CLIENT_OIDC_AUDIENCE", "https://rucio.example"),
            ("RUCIO_CFG_POLICY_SCHEMA", "ska"),
            ("RUCIO_CFG_POLICY_LFN2PFN_ALGORITHM_DEFAULT", "hash"),
            ("RUCIO_CFG_COMMON_MULTI_VO", "False"),
            ("RUCIO_CFG_REQUEST_RETRIES", "7"),
            ("RUCIO_CFG_CLIENT_PASSWORD", ""),
            ("TASK", "kept"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        // `OIDC` selects oidc, as the entry point's `${…,,}` does.
        assert!(wants_bearer(&env));
        let mut s = RucioSettings::take(&mut env).unwrap();
        assert_eq!(s.auth_type, "oidc");
        assert_eq!(env.keys().collect::<Vec<_>>(), vec!["TASK"]);
        s.fill_from(base);
        assert_eq!(s.rucio_host.as_deref(), Some("https://rucio.example"));
        assert_eq!(
            s.ca_cert.as_deref(),
            Some("/etc/pki/tls/certs/ca-bundle.crt")
        );
        let files = BTreeMap::from([("auth_token_file_path", "/run/x/token".to_string())]);
        let cfg = config(&s, "oidc", &files, Some(base));
        assert_eq!(
            cfg,
            "[common]\nloglevel = INFO\nmulti_vo = False\n\n[client]\nrucio_host = https://rucio.example\nauth_host = https://auth.example\nca_cert = /etc/pki/tls/certs/ca-bundle.crt\nrequest_retries = 7\naccount = robot\noidc_audience = https://rucio.example\nauth_type = oidc\nauth_token_file_path = /run/x/token\n\n[policy]\npermission = generic\nschema = ska\nlfn2pfn_algorithm_default = hash\n"
        );
        // Which file is the base: the task's RUCIO_CONFIG, credkeeper's, RUCIO_HOME's, the
        // image's default (which may be missing).
        let none = |_: &str| None;
        let task = BTreeMap::from([("RUCIO_CONFIG".to_string(), "/site/rucio.cfg".to_string())]);
        assert_eq!(base_config(&task, none), ("/site/rucio.cfg".into(), true));
        assert_eq!(
            base_config(&BTreeMap::new(), |k| (k == "RUCIO_HOME")
                .then(|| "/opt/r".into())),
            ("/opt/r/etc/rucio.cfg".into(), true)
        );
        assert_eq!(
            base_config(&BTreeMap::new(), none),
            ("/opt/rucio/etc/rucio.cfg".into(), false)
        );
    }

    #[test]
    fn the_token_cache_is_where_the_rucio_client_looks() {
        let tmp = Path::new("/run/x/tmp");
        let env = BTreeMap::from([("LOGNAME".to_string(), "user".to_string())]);
        assert_eq!(
            token_cache(tmp, &env, Some("robot"), None),
            Path::new("/run/x/tmp/user/.rucio_user/auth_token_for_account_robot")
        );
        // The default VO is left out; another is added to the directory, as the client does.
        assert_eq!(
            token_cache(tmp, &env, Some("robot"), Some("def")),
            token_cache(tmp, &env, Some("robot"), None)
        );
        assert_eq!(
            token_cache(tmp, &env, None, Some("ska")),
            Path::new("/run/x/tmp/user/.rucio_user@ska/auth_token_for_default_account")
        );
    }
}
