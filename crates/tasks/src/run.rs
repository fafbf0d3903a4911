//! One run of a task: credentials prepared in a private directory before the command
//! starts (a failed authentication fails the run, and the command never starts), the
//! bearer token kept fresh while it runs, a timeout that stops the whole process group,
//! retries with backoff, the output captured with a size cap and the secrets redacted,
//! and the directory removed when the run ends — also on timeout and on failure.

use crate::definition::{Rendered, Task};
use credkeeper_core::{Secret, Timestamp, TokenAsk};
use credkeeper_refresher::Origin;
use credkeeper_refresher::source::{Fresh, SourceError, SourceFuture, TokenSource};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// How long a token lasts whose source does not say: short, so that it is renewed often
/// rather than held past its end.
const ASSUMED_LIFE_SECS: i64 = 300;

pub struct RunOptions {
    /// Where the run's private directory goes (`$XDG_RUNTIME_DIR` or `/tmp`).
    pub base_dir: PathBuf,
    /// The captured output kept, at most (the end of it).
    pub output_cap: usize,
    /// After a timeout's SIGTERM, how long before SIGKILL.
    pub grace_secs: u64,
    /// rucio-task-manager's own token routes, for values cronjobs that name one (`None`:
    /// such a cronjob gets its token from the configured source).
    pub upstream: Option<Arc<crate::upstream::Upstream>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            base_dir: std::env::var_os("XDG_RUNTIME_DIR")
                .map(PathBuf::from)
                .filter(|p| p.is_dir())
                .unwrap_or_else(std::env::temp_dir),
            output_cap: 64 * 1024,
            grace_secs: 5,
            upstream: None,
        }
    }
}

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

/// What a run did.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The command's exit status; `None` when it never started or was killed.
    pub status: Option<i32>,
    pub attempts: u32,
    pub started: Timestamp,
    pub ended: Timestamp,
    /// Why it failed, when it did (authentication, timeout, a signal, the exit status).
    pub reason: Option<String>,
    /// Standard output and error, interleaved as read, capped, secrets redacted.
    pub output: String,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.status == Some(0) && self.reason.is_none()
    }

    /// The status a CronJob should see: the command's, or 1 when it never finished.
    pub fn exit_code(&self) -> i32 {
        match (self.status, &self.reason) {
            (Some(0), None) => 0,
            (Some(s), _) if s != 0 => s,
            _ => 1,
        }
    }
}

const RUN_DIR_PREFIX: &str = "credkeeper-task-";

/// The run's private directory (0700, a random name that starts with the owning process's
/// pid), removed when dropped.
fn run_dir(base: &Path, task: &str) -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("{RUN_DIR_PREFIX}{}-{task}-", std::process::id()))
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(base)
}

/// Remove the run directories a credkeeper killed outright (SIGKILL, a crash, the OOM
/// killer) left in `base`: those of this user whose owning process is gone. Returns them.
pub fn sweep_stale(base: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(RUN_DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        let ours = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == uid);
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if ours && gone && std::fs::remove_dir_all(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// Atomically, mode 0600 (exactly: the umask does not narrow it).
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    credkeeper_sink::write_private(path, contents).map_err(std::io::Error::other)
}

/// Run `task` (already rendered) until it succeeds or its retries are used up.
pub async fn run(
    task: &Task,
    rendered: &Rendered,
    tokens: Option<Arc<dyn TokenSource>>,
    options: &RunOptions,
) -> Outcome {
    run_from(task, rendered, tokens, options, None).await
}

/// [`run`], the first attempt with what [`prepare`] made ready before the due time (or why
/// it could not); later attempts prepare afresh.
pub async fn run_from(
    task: &Task,
    rendered: &Rendered,
    tokens: Option<Arc<dyn TokenSource>>,
    options: &RunOptions,
    mut first: Option<Result<Prepared, PrepareError>>,
) -> Outcome {
    let started = Timestamp::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let prepared = match first.take() {
            Some(p) => p,
            None => prepare(task, rendered, tokens.clone(), options).await,
        };
        let mut outcome = match prepared {
            Ok(p) => execute(task, rendered, p, options).await,
            Err(reason) => Outcome {
                status: None,
                attempts: 0,
                started,
                ended: Timestamp::now(),
                reason: Some(reason.to_string()),
                output: String::new(),
            },
        };
        outcome.attempts = attempt;
        outcome.started = started;
        if outcome.succeeded() || attempt > task.retries {
            outcome.ended = Timestamp::now();
            return outcome;
        }
        let wait = task.backoff_secs.saturating_mul(1 << (attempt - 1).min(10));
        tracing::warn!(
            task = task.name,
            attempt,
            "run failed ({}); trying again in {wait} s",
            outcome.reason.as_deref().unwrap_or("")
        );
        tokio::time::sleep(std::time::Duration::from_secs(wait as u64)).await;
    }
}

/// The values a run's captured output must not show (filled templates, credentials), shared
/// with the refreshers, which add each token they write.
#[derive(Clone, Default)]
struct Redactions(Arc<std::sync::Mutex<Vec<String>>>);

impl Redactions {
    fn of(values: &[String]) -> Redactions {
        let r = Redactions::default();
        for v in values {
            r.add(v);
        }
        r
    }

    fn add(&self, value: &str) {
        if !value.is_empty() {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(value.to_string());
        }
    }

    fn redact(&self, mut text: String) -> String {
        for s in self.0.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            text = text.replace(s.as_str(), "[redacted]");
        }
        text
    }
}

/// A run made ready to start: its private directory with the credentials in it (kept
/// fresh from now on) and the command's environment. Dropped unused, it takes them away.
pub struct Prepared {
    dir: tempfile::TempDir,
    env: std::collections::BTreeMap<String, String>,
    /// Values to redact from the output: filled templates and tokens.
    secrets: Redactions,
    refreshers: Vec<tokio::task::JoinHandle<()>>,
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
struct Bearer {
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
fn inherited(names: &[String], withheld: &[&str]) -> std::collections::BTreeMap<String, String> {
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

/// A pipe, both ends close-on-exec: (reading end, writing end).
fn pipe() -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills `fds` with two new descriptors, owned by nothing else.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above; each is wrapped once.
    Ok(unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

/// Start the prepared run's command and see it to its end.
async fn execute(
    task: &Task,
    rendered: &Rendered,
    prepared: Prepared,
    options: &RunOptions,
) -> Outcome {
    let now = Timestamp::now();
    let failed = |reason: String| Outcome {
        status: None,
        attempts: 0,
        started: now,
        ended: Timestamp::now(),
        reason: Some(reason),
        output: String::new(),
    };
    let (program, args): (&str, Vec<&str>) = if task.shell {
        ("/bin/sh", vec!["-c", rendered.command[0].as_str()])
    } else {
        (
            rendered.command[0].as_str(),
            rendered.command[1..].iter().map(String::as_str).collect(),
        )
    };
    // Standard output and error into one pipe, as `2>&1`: the output in the order it was
    // written, and one descriptor per running task held here instead of two (a start copies
    // every descriptor the scheduler holds into the new process, which closes them at exec:
    // 1,000 tasks due at once had up to 2,100 open).
    let (output, writer, writer2) = match pipe().and_then(|(r, w)| Ok((r, w.try_clone()?, w))) {
        Ok(p) => p,
        Err(e) => return failed(format!("cannot make a pipe for `{program}`: {e}")),
    };
    let mut command = tokio::process::Command::new(program);
    // The declared environment only (see `prepare`).
    command
        .env_clear()
        .args(&args)
        .envs(&prepared.env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(writer2))
        // Its own process group: a timeout stops everything it started.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(w) = &task.workdir {
        command.current_dir(w);
    }
    let spawned = command.spawn();
    // The command keeps the pipe's writing ends: closed now, the output ends when the
    // task's processes close theirs.
    drop(command);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return failed(format!("cannot start `{program}`: {e}")),
    };
    let pid = child.id();
    // A run dropped midway (Replace, a stop) takes its whole process group with it.
    let mut group = GroupGuard(pid);
    // The output into one buffer as it comes, keeping the last `cap` bytes.
    let cap = options.output_cap;
    let buffer = Arc::new(std::sync::Mutex::new(Vec::new()));
    let output = tokio::net::unix::pipe::Receiver::from_owned_fd(output)
        .map_err(|e| tracing::warn!(task = task.name, "the output cannot be read: {e}"))
        .ok();
    let readers: Vec<_> = output
        .into_iter()
        .map(|mut stream| {
            let buffer = buffer.clone();
            tokio::spawn(async move {
                let mut chunk = vec![0u8; 8192];
                while let Ok(n) = stream.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    let mut b = buffer.lock().unwrap_or_else(|p| p.into_inner());
                    b.extend_from_slice(&chunk[..n]);
                    if b.len() > cap * 2 {
                        let excess = b.len() - cap;
                        b.drain(..excess);
                    }
                }
            })
        })
        .collect();
    let waited = match task.timeout_secs {
        Some(t) => tokio::time::timeout(std::time::Duration::from_secs(t as u64), child.wait())
            .await
            .ok(),
        None => Some(child.wait().await),
    };
    let (status, reason) = match waited {
        Some(Ok(s)) => {
            use std::os::unix::process::ExitStatusExt;
            match (s.code(), s.signal()) {
                (Some(0), _) => (Some(0), None),
                (Some(c), _) => (Some(c), Some(format!("exit status {c}"))),
                (None, Some(sig)) => (None, Some(format!("killed by signal {sig}"))),
                _ => (None, Some("ended without a status".into())),
            }
        }
        Some(Err(e)) => (None, Some(format!("waiting for the command: {e}"))),
        None => {
            stop_group(pid, options.grace_secs, &mut child).await;
            (
                None,
                Some(format!(
                    "timed out after {} s; the process group was stopped",
                    task.timeout_secs.unwrap_or(0)
                )),
            )
        }
    };
    group.disarm();
    for r in &prepared.refreshers {
        r.abort();
    }
    for r in readers {
        let _ = r.await;
    }
    let mut bytes = std::mem::take(&mut *buffer.lock().unwrap_or_else(|p| p.into_inner()));
    if bytes.len() > cap {
        bytes.drain(..bytes.len() - cap);
    }
    let output = prepared
        .secrets
        .redact(String::from_utf8_lossy(&bytes).into_owned());
    // The run's private directory goes with it.
    drop(prepared);
    Outcome {
        status,
        attempts: 0,
        started: now,
        ended: Timestamp::now(),
        reason,
        output,
    }
}

/// Rucio session tokens for the run's userpass settings (the password stays here).
struct RucioTokens {
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
async fn prepare_rucio(
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

/// Kills the run's process group when dropped while armed.
struct GroupGuard(Option<u32>);

impl GroupGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // SAFETY: killpg on the process group created for this run's child.
            unsafe { libc::killpg(pid as i32, libc::SIGKILL) };
        }
    }
}

/// SIGTERM to the group, then SIGKILL after the grace period.
async fn stop_group(pid: Option<u32>, grace: u64, child: &mut tokio::process::Child) {
    let Some(pid) = pid else { return };
    // SAFETY: killpg on the process group we created for this child (process_group(0)).
    unsafe { libc::killpg(pid as i32, libc::SIGTERM) };
    if tokio::time::timeout(std::time::Duration::from_secs(grace), child.wait())
        .await
        .is_err()
    {
        // SAFETY: as above.
        unsafe { libc::killpg(pid as i32, libc::SIGKILL) };
        let _ = child.wait().await;
    }
}

/// A file a token is written to: with a trailing newline (a WLCG token file) or without
/// (the Rucio client's token file, whose bytes older clients send as they are).
struct TokenFile {
    path: PathBuf,
    newline: bool,
}

impl TokenFile {
    fn write(&self, token: &Secret) -> std::io::Result<()> {
        let end = if self.newline { "\n" } else { "" };
        write_private(&self.path, format!("{}{end}", token.expose()).as_bytes())
    }
}

/// Rewrite the token files when half of the token's remaining life has passed, so a task
/// longer than a token's lifetime never holds an expired one.
async fn keep_fresh(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::{Options, load};
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Tokens {
        calls: AtomicU32,
        life: i64,
        fail: bool,
    }

    impl TokenSource for Tokens {
        fn token<'a>(&'a self, _: &'a TokenAsk) -> SourceFuture<'a> {
            Box::pin(async move {
                if self.fail {
                    return Err(SourceError::other(
                        "the broker refused: robot `x` may not have scope y",
                    ));
                }
                let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
                Ok(Fresh {
                    token: Secret::new(format!("token-number-{n}")),
                    origin: Origin::Broker,
                    expires: Some(Timestamp::now().plus_secs(self.life)),
                })
            })
        }
    }

    fn task(dir: &Path, yaml: &str) -> (Task, Rendered) {
        let p = dir.join("t.yaml");
        std::fs::write(&p, yaml).unwrap();
        let t = load(&p, &Options::default()).unwrap().remove(0);
        struct NoVars;
        impl crate::template::Vars for NoVars {
            fn get(&self, _: &str) -> Option<String> {
                None
            }
        }
        let r = t.render(&NoVars, &Options::default()).unwrap();
        (t, r)
    }

    fn options(dir: &Path) -> RunOptions {
        RunOptions {
            base_dir: dir.to_path_buf(),
            output_cap: 4096,
            grace_secs: 1,
            upstream: None,
        }
    }

    #[tokio::test]
    async fn kube_config_value_is_a_private_kubeconfig_file_for_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let (t, r) = task(
            dir.path(),
            "tasks:\n- name: probe\n  schedule: '@hourly'\n  shell: true\n  command: 'stat -c %a \"$KUBECONFIG\"; cat \"$KUBECONFIG\"; echo \"$KUBECONFIG\"'\n  env: {KUBE_CONFIG_VALUE: 'apiVersion: v1'}\n",
        );
        let outcome = run(&t, &r, None, &options(dir.path())).await;
        assert!(outcome.succeeded(), "{outcome:?}");
        let lines: Vec<&str> = outcome.output.lines().collect();
        assert_eq!(lines[..2], ["600", "apiVersion: v1"], "{}", outcome.output);
        assert!(!Path::new(lines[2]).exists(), "removed with the run");
    }

    #[tokio::test]
    async fn the_token_is_in_a_private_file_kept_fresh_during_the_run_and_gone_after() {
        let dir = tempfile::tempdir().unwrap();
        let seen = dir.path().join("seen");
        let (t, r) = task(
            dir.path(),
            &format!(
                "tasks:\n- name: long\n  schedule: '@hourly'\n  shell: true\n  command: 'stat -c %a \"$BEARER_TOKEN_FILE\"; cat \"$BEARER_TOKEN_FILE\"; echo \"$BEARER_TOKEN_FILE\" > {0}.path; sleep 3; cat \"$BEARER_TOKEN_FILE\" > {0}; cat \"$BEARER_TOKEN_FILE\"'\n  credentials: {{bearer: {{scopes: read}}}}\n",
                seen.display()
            ),
        );
        let tokens: Arc<dyn TokenSource> = Arc::new(Tokens {
            calls: AtomicU32::new(0),
            life: 4,
            fail: false,
        });
        let outcome = run(&t, &r, Some(tokens), &options(dir.path())).await;
        assert!(outcome.succeeded(), "{outcome:?}");
        assert!(
            outcome.output.starts_with("600\n[redacted]"),
            "{}",
            outcome.output
        );
        // The refreshed token printed at the end is redacted too.
        assert!(
            !outcome.output.contains("token-number") && outcome.output.ends_with("[redacted]\n"),
            "{}",
            outcome.output
        );
        // A 4 s token was rewritten at about 2 s: the command read a newer one at 3 s.
        let late = std::fs::read_to_string(&seen).unwrap();
        assert!(
            late.trim() != "token-number-1" && late.starts_with("token-number-"),
            "{late}"
        );
        let path = std::fs::read_to_string(format!("{}.path", seen.display())).unwrap();
        assert!(
            !Path::new(path.trim()).exists(),
            "the run's directory is removed"
        );
    }

    #[tokio::test]
    async fn an_authentication_failure_fails_the_run_before_the_command_starts() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let (t, r) = task(
            dir.path(),
            &format!(
                "tasks:\n- name: a\n  schedule: '@hourly'\n  command: [touch, '{}']\n  credentials: {{bearer: {{}}}}\n",
                marker.display()
            ),
        );
        let tokens: Arc<dyn TokenSource> = Arc::new(Tokens {
            calls: AtomicU32::new(0),
            life: 60,
            fail: true,
        });
        let outcome = run(&t, &r, Some(tokens), &options(dir.path())).await;
        assert_eq!(outcome.exit_code(), 1);
        assert!(
            outcome
                .reason
                .unwrap()
                .starts_with("authentication failed: the broker refused")
        );
        assert!(!marker.exists(), "the command must not start");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "nothing left but the definition"
        );
    }

    #[tokio::test]
    async fn a_hanging_task_is_stopped_with_everything_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("sleep.pid");
        let (t, r) = task(
            dir.path(),
            &format!(
                "tasks:\n- name: hang\n  schedule: '@hourly'\n  shell: true\n  command: 'sleep 300 & echo $! > {}; echo started; wait'\n  timeout: 1s\n",
                pid_file.display()
            ),
        );
        let begun = std::time::Instant::now();
        let outcome = run(&t, &r, None, &options(dir.path())).await;
        assert!(begun.elapsed() < std::time::Duration::from_secs(10));
        assert!(
            outcome
                .reason
                .as_deref()
                .unwrap()
                .starts_with("timed out after 1 s"),
            "{outcome:?}"
        );
        assert_eq!(outcome.exit_code(), 1);
        assert_eq!(outcome.output, "started\n");
        // This run's own sleep (not any other `sleep 300` on the machine): gone, or a
        // zombie waiting for its reaper (an empty command line).
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid.trim())).unwrap_or_default();
        assert!(cmdline.is_empty(), "the background sleep was stopped too");
    }

    #[tokio::test]
    async fn a_failing_task_is_retried_and_its_status_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let counter = dir.path().join("count");
        let (t, r) = task(
            dir.path(),
            &format!(
                "tasks:\n- name: flaky\n  schedule: '@hourly'\n  shell: true\n  command: 'echo x >> {0}; [ $(wc -l < {0}) -ge 2 ]'\n  retries: 3\n  backoff: 1s\n",
                counter.display()
            ),
        );
        let outcome = run(&t, &r, None, &options(dir.path())).await;
        assert!(outcome.succeeded(), "{outcome:?}");
        assert_eq!(outcome.attempts, 2);
        let (t, r) = task(
            dir.path(),
            "tasks:\n- name: fails\n  schedule: '@hourly'\n  command: [sh, -c, 'exit 7']\n",
        );
        let outcome = run(&t, &r, None, &options(dir.path())).await;
        assert_eq!((outcome.exit_code(), outcome.attempts), (7, 1));
    }

    #[test]
    fn run_directories_of_a_killed_credkeeper_are_swept_and_live_ones_kept() {
        let base = tempfile::tempdir().unwrap();
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        dead.wait().unwrap();
        let stale = base
            .path()
            .join(format!("{RUN_DIR_PREFIX}{dead_pid}-sync-Ab12"));
        std::fs::create_dir(&stale).unwrap();
        std::fs::write(stale.join("bearer_token"), "left-behind").unwrap();
        let live = run_dir(base.path(), "sync").unwrap();
        let other = base.path().join("credkeeper-task-notapid");
        std::fs::create_dir(&other).unwrap();
        assert_eq!(sweep_stale(base.path()), vec![stale.clone()]);
        assert!(!stale.exists());
        assert!(live.path().exists() && other.exists());
    }
}
