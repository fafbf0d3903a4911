//! Making a run ready before its command starts: the private directory, the bearer token
//! (obtained, written, and kept fresh while the run lasts), the environment the task is
//! allowed, the task file. A failure here means the command never starts.

use super::*;

/// How long a token lasts whose source does not say: short, so that it is renewed often
/// rather than held past its end.
pub(super) const ASSUMED_LIFE_SECS: i64 = 300;

/// Why a run could not be made ready: its command never starts.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("cannot make the run's private directory in {}: {source}", base.display())]
    RunDir {
        base: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the task needs a bearer token and names no way to get one: give credkeeper a source (--server, or --issuer), or the task rucio-task-manager's variables (OIDC_CLIENT_ID, OIDC_CLIENT_SECRET and OIDC_TOKEN_ENDPOINT; OIDC_AGENT_AUTH_CLIENT_CFG_VALUE and _PASSWORD; OIDC_ACCESS_TOKEN) or a token file mounted where --access-token-file says"
    )]
    NoTokenSource,
    #[error(transparent)]
    Upstream(#[from] crate::upstream::UpstreamError),
    /// The source knows the field; the task file is where it was written.
    #[error("authentication failed: credentials.bearer.{0}")]
    BearerField(SourceError),
    #[error("authentication failed: {0}")]
    Authentication(SourceError),
    #[error("authentication failed: {0}")]
    RucioLogin(crate::rucio::RucioError),
    #[error("cannot write {what}: {source}")]
    Write {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("cannot read the Rucio configuration {}: {source}", path.display())]
    RucioConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("RUCIO_CFG_CA_CERT: {0}")]
    RucioCa(credkeeper_oidc::OidcError),
    #[error(
        "Rucio auth_type oidc needs the task's credentials.bearer (the token the run keeps fresh)"
    )]
    RucioOidcWithoutBearer,
    #[error("x509 needs RUCIO_CFG_{0} or RUCIO_CFG_{0}_VALUE")]
    X509Missing(&'static str),
    #[error("Rucio auth type `{0}` is not served (userpass, oidc, x509)")]
    RucioAuthType(String),
}

/// A run made ready to start: its private directory with the credentials in it (kept
/// fresh from now on) and the command's environment. Dropped unused, it takes them away.
pub struct Prepared {
    pub(super) dir: tempfile::TempDir,
    pub(super) env: std::collections::BTreeMap<String, String>,
    /// Values to redact from the output: filled templates and tokens.
    pub(super) secrets: Redactions,
    pub(super) refreshers: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        for r in &self.refreshers {
            r.abort();
        }
    }
}

/// Make a run ready: the private directory, then the credentials (a failure here means
/// the command must not start), the Rucio config and the task file.
pub async fn prepare(
    task: &Task,
    rendered: &Rendered,
    tokens: Option<Arc<dyn TokenSource>>,
    options: &RunOptions,
) -> Result<Prepared, PrepareError> {
    let dir = run_dir(&options.base_dir, &task.name).map_err(|source| PrepareError::RunDir {
        base: options.base_dir.clone(),
        source,
    })?;
    let mut prepared = Prepared {
        dir,
        env: rendered.env.clone(),
        secrets: Redactions::of(&rendered.secrets),
        refreshers: Vec::new(),
    };
    // Names the task may not take from the scheduler even when it inherits them: they would
    // override what the run prepared.
    let mut withheld: Vec<&str> = Vec::new();
    // The task's RUCIO_CFG_* (taken out: the task never sees them; its rucio.cfg holds them).
    let rucio = crate::rucio::RucioSettings::take(&mut prepared.env);
    let mut bearer = None;
    if let Some(spec) = &task.credentials.bearer {
        let upstream = match (&options.upstream, spec.upstream_routes) {
            (Some(u), true) => {
                let secrets = prepared.secrets.clone();
                let request = credkeeper_oidc::TokenRequest::from(&spec.ask());
                u.route(&mut prepared.env, request, |v| secrets.add(v))
                    .await?
            }
            _ => None,
        };
        let source = match (upstream, tokens.clone()) {
            (Some(route), _) => {
                tracing::info!(
                    task = task.name,
                    "bearer token from the task's {}",
                    route.name
                );
                route.source
            }
            (None, Some(source)) => source,
            (None, None) => {
                return Err(PrepareError::NoTokenSource);
            }
        };
        let path = prepared.dir.path().join("bearer_token");
        let ask = spec.ask();
        let fresh = source.token(&ask).await.map_err(|e| match e {
            SourceError::ProviderWithoutBroker { .. } => PrepareError::BearerField(e),
            e => PrepareError::Authentication(e),
        })?;
        let expires = fresh.expires_or(ASSUMED_LIFE_SECS);
        let token = fresh.token;
        let file = TokenFile {
            path: path.clone(),
            newline: true,
        };
        file.write(&token).map_err(|source| PrepareError::Write {
            what: "the bearer token file",
            source,
        })?;
        prepared.secrets.add(token.expose());
        prepared
            .env
            .insert("BEARER_TOKEN_FILE".into(), path.display().to_string());
        if spec.env {
            prepared
                .env
                .insert("BEARER_TOKEN".into(), token.expose().to_string());
        } else {
            // Found before the file by WLCG token discovery: none but the fresh file.
            withheld.push("BEARER_TOKEN");
        }
        bearer = Some(Bearer {
            source,
            ask,
            files: vec![file],
            token,
            expires,
        });
    }
    // Rucio: a private rucio.cfg from the task's RUCIO_CFG_* (which the task never sees).
    if let Some(settings) = &rucio {
        let Prepared {
            dir,
            env,
            secrets,
            refreshers,
            ..
        } = &mut prepared;
        // A Rucio oidc task: the token also in the Rucio client's token cache, kept
        // fresh with the bearer token file.
        let token = bearer.as_ref().map(|b| &b.token);
        let (fresh, cache) = prepare_rucio(settings, token, dir.path(), env, secrets).await?;
        refreshers.extend(fresh);
        if let (Some(cache), Some(b)) = (cache, &mut bearer) {
            b.files.push(cache);
        }
        withheld.extend([
            "RUCIO_HOME",
            "RUCIO_ACCOUNT",
            "RUCIO_AUTH_TYPE",
            "X509_CERT_DIR",
            "BEARER_TOKEN",
        ]);
    }
    if let Some(b) = bearer {
        prepared.refreshers.push(tokio::spawn(keep_fresh(
            b.source,
            prepared.secrets.clone(),
            b.ask,
            b.files,
            b.expires,
        )));
    }
    // rucio-task-manager's entry point writes KUBE_CONFIG_VALUE to ~/.kube/config (for
    // tasks.probes.daemons). Here it goes in the run's directory, named by KUBECONFIG,
    // which Kubernetes clients read before ~/.kube/config: the user's own is left alone.
    if let Some(value) = rendered
        .env
        .get("KUBE_CONFIG_VALUE")
        .filter(|v| !v.is_empty())
    {
        let path = prepared.dir.path().join("kube_config");
        write_private(&path, format!("{value}\n").as_bytes()).map_err(|source| {
            PrepareError::Write {
                what: "KUBE_CONFIG_VALUE's file",
                source,
            }
        })?;
        prepared
            .env
            .insert("KUBECONFIG".into(), path.display().to_string());
    }
    if let Some(text) = &rendered.task_file {
        let path = prepared.dir.path().join("task.yml");
        write_private(&path, text.as_bytes()).map_err(|source| PrepareError::Write {
            what: "the task file",
            source,
        })?;
        prepared
            .env
            .insert("TASK_FILE_PATH".into(), path.display().to_string());
    }
    let mut env = inherited(&task.inherit, &withheld);
    env.append(&mut prepared.env);
    prepared.env = env;
    Ok(prepared)
}

/// The run's bearer token as first obtained, and what keeps it fresh where it was written.
pub(super) struct Bearer {
    source: Arc<dyn TokenSource>,
    ask: TokenAsk,
    files: Vec<TokenFile>,
    token: Secret,
    expires: Timestamp,
}

/// What of the scheduler's own environment every task gets: what a process needs to find
/// its programs, home, locale and time zone (and every `LC_*`), and a Kubernetes pod's
/// in-cluster API address. Nothing else reaches a task unless its definition names it
/// (`inherit`): a secret exported to the scheduler stays with the scheduler.
pub const BASE_ENVIRONMENT: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
];

/// The scheduler's variables a task gets: [`BASE_ENVIRONMENT`], `LC_*` and `names`, less
/// `withheld`. (A value that is not UTF-8 is left out.)
pub(super) fn inherited(
    names: &[String],
    withheld: &[&str],
) -> std::collections::BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| {
            (BASE_ENVIRONMENT.contains(&k.as_str())
                || k.starts_with("LC_")
                || names.iter().any(|n| n == k))
                && !withheld.contains(&k.as_str())
        })
        .collect()
}

/// A file a token is written to: with a trailing newline (a WLCG token file) or without
/// (the Rucio client's token file, whose bytes older clients send as they are).
pub(super) struct TokenFile {
    pub(super) path: PathBuf,
    pub(super) newline: bool,
}

impl TokenFile {
    pub(super) fn write(&self, token: &Secret) -> std::io::Result<()> {
        let end = if self.newline { "\n" } else { "" };
        write_private(&self.path, format!("{}{end}", token.expose()).as_bytes())
    }
}

/// Rewrite the token files when half of the token's remaining life has passed, so a task
/// longer than a token's lifetime never holds an expired one.
pub(super) async fn keep_fresh(
    source: Arc<dyn TokenSource>,
    secrets: Redactions,
    ask: TokenAsk,
    files: Vec<TokenFile>,
    mut expires: Timestamp,
) {
    loop {
        let left = expires.seconds_after(Timestamp::now()).max(2);
        tokio::time::sleep(std::time::Duration::from_secs((left / 2) as u64)).await;
        match source.token(&ask).await {
            Ok(fresh) => {
                let e = fresh.expires_or(ASSUMED_LIFE_SECS);
                let token = fresh.token;
                // Redacted before the task can read it.
                secrets.add(token.expose());
                if files.iter().all(|f| f.write(&token).is_ok()) {
                    expires = e;
                    tracing::info!(
                        file = %files[0].path.display(),
                        "bearer token refreshed during the run"
                    );
                }
            }
            Err(e) => tracing::warn!("refreshing the bearer token: {e}"),
        }
    }
}
