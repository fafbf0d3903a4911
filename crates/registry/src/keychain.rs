//! The keychain: one order of sources, stated and configurable. The first source that
//! knows the host answers; "not found" falls through to the next; a broken source (a
//! malformed file, a failing helper) is an error, never silently skipped to an older
//! credential further down.

use crate::dockerconfig::{Answer, DockerConfig};
use crate::{Credential, host};
use credkeeper_core::Secret;
use credkeeper_store::{CredentialKey, CredentialStore};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

/// The helper-protocol message for "not here".
pub const NOT_FOUND: &str = "credentials not found in native keychain";
/// The identity under which registry credentials sit in credkeeper's store.
const STORE_IDENTITY: &str = "registry";
/// Our own helper name: a config naming it must not make us call ourselves.
pub const OWN_HELPER: &str = "credkeeper";

pub enum Source {
    /// `--user USER[:PASS]`.
    Explicit(Credential),
    /// A docker `config.json` or containers `auth.json`.
    ConfigFile { kind: &'static str, path: PathBuf },
    /// Mounted Kubernetes `dockerconfigjson` secrets, tried in path order.
    SecretVolumes(Vec<PathBuf>),
    /// `dockerconfigjson` Secrets through the Kubernetes API (listed on each lookup by a
    /// one-shot process; `cri-proxy --kubeconfig` keeps them by list + watch).
    KubeApi(crate::kube::Kubeconfig),
    /// What kubelet's pulls carried, held by `credkeeper registry cri-proxy` (its
    /// keychain socket).
    CriProxy(PathBuf),
    /// credkeeper's own store (what `docker-credential-credkeeper store` kept).
    Store(Arc<dyn CredentialStore>),
    /// A source that could not be set up; asking it is the error it had.
    Broken(String),
    /// This host's robot identity at a credkeeper broker that is the registry's token
    /// server: an identity token for the host.
    Robot(Box<dyn RobotIdentity>),
}

/// A robot identity that can get a registry identity token (an OAuth2 refresh token for
/// the registry's token server) from a credkeeper broker.
pub trait RobotIdentity: Send + Sync {
    fn describe(&self) -> String;
    /// The identity token for `host`, or `None` when the host's token server is not this
    /// broker. `trace` gets one line per step, never a secret.
    fn identity_token(
        &self,
        host: &str,
        trace: &mut Vec<String>,
    ) -> Result<Option<Secret>, KeychainError>;
}

impl Source {
    fn describe(&self) -> String {
        match self {
            Source::Explicit(_) => "--user".into(),
            Source::ConfigFile { kind, path } => format!("{kind} {}", path.display()),
            Source::SecretVolumes(dirs) => format!(
                "Kubernetes secret volumes {}",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Source::KubeApi(k) => format!("Kubernetes API secrets at {}", k.server),
            Source::CriProxy(path) => format!("the CRI proxy's pulls ({})", path.display()),
            Source::Store(_) => "credkeeper's store".into(),
            Source::Broken(why) => format!("(broken source: {why})"),
            Source::Robot(r) => r.describe(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeychainError {
    #[error(transparent)]
    Config(#[from] crate::dockerconfig::ConfigError),
    #[error("credential helper docker-credential-{helper}: {message}")]
    Helper { helper: String, message: String },
    #[error(transparent)]
    Store(#[from] credkeeper_store::StoreError),
    /// A source that is there but failed (a broker, the Kubernetes API, the CRI proxy).
    #[error("{0}")]
    Source(String),
}

/// A credential and where it came from.
#[derive(Debug)]
pub struct Found {
    pub credential: Credential,
    pub source: String,
}

pub struct Keychain {
    pub sources: Vec<Source>,
}

/// The environment a keychain is built from (so tests can give their own).
pub struct Env {
    pub home: Option<PathBuf>,
    pub docker_config: Option<PathBuf>,
    pub registry_auth_file: Option<PathBuf>,
    pub xdg_runtime_dir: Option<PathBuf>,
    pub secret_dirs: Vec<PathBuf>,
    /// `CREDKEEPER_CRI_KEYCHAIN`: the CRI proxy's keychain socket.
    pub cri_keychain: Option<PathBuf>,
    /// `CREDKEEPER_REGISTRY_KUBE_API=1`: also ask the Kubernetes API (kubeconfig from
    /// `$KUBECONFIG`, `~/.kube/config` or the in-cluster service account).
    pub kube_api: bool,
}

impl Env {
    pub fn from_process() -> Env {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Env {
            home: var("HOME"),
            docker_config: var("DOCKER_CONFIG"),
            registry_auth_file: var("REGISTRY_AUTH_FILE"),
            xdg_runtime_dir: var("XDG_RUNTIME_DIR"),
            secret_dirs: std::env::var("CREDKEEPER_REGISTRY_SECRET_DIRS")
                .map(|v| std::env::split_paths(&v).collect())
                .unwrap_or_default(),
            cri_keychain: var("CREDKEEPER_CRI_KEYCHAIN"),
            kube_api: std::env::var("CREDKEEPER_REGISTRY_KUBE_API")
                .is_ok_and(|v| v == "1" || v == "true"),
        }
    }
}

impl Keychain {
    /// The stated order: explicit; docker config (`$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`); containers auth (`$REGISTRY_AUTH_FILE`,
    /// `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.config/containers/auth.json`);
    /// Kubernetes secret volumes; the CRI proxy's captured pulls; credkeeper's store; the
    /// robot's identity at a broker.
    pub fn standard(
        env: &Env,
        explicit: Option<Credential>,
        store: Option<Arc<dyn CredentialStore>>,
        robot: Option<Box<dyn RobotIdentity>>,
    ) -> Keychain {
        let mut sources = Vec::new();
        if let Some(c) = explicit {
            sources.push(Source::Explicit(c));
        }
        let docker = env
            .docker_config
            .as_ref()
            .map(|d| d.join("config.json"))
            .or_else(|| env.home.as_ref().map(|h| h.join(".docker/config.json")));
        if let Some(path) = docker {
            sources.push(Source::ConfigFile {
                kind: "docker config",
                path,
            });
        }
        let auth_files = [
            env.registry_auth_file.clone(),
            env.xdg_runtime_dir
                .as_ref()
                .map(|d| d.join("containers/auth.json")),
            env.home
                .as_ref()
                .map(|h| h.join(".config/containers/auth.json")),
        ];
        for path in auth_files.into_iter().flatten() {
            sources.push(Source::ConfigFile {
                kind: "containers auth",
                path,
            });
        }
        if !env.secret_dirs.is_empty() {
            let mut dirs = env.secret_dirs.clone();
            dirs.sort();
            sources.push(Source::SecretVolumes(dirs));
        }
        if env.kube_api {
            match crate::kube::Kubeconfig::discover(env.home.as_deref()) {
                Ok(Some(k)) => sources.push(Source::KubeApi(k)),
                Ok(None) => {}
                // A broken kubeconfig must not be skipped silently: its lookups fail.
                Err(e) => sources.push(Source::Broken(e.to_string())),
            }
        }
        if let Some(p) = &env.cri_keychain {
            sources.push(Source::CriProxy(p.clone()));
        }
        if let Some(s) = store {
            sources.push(Source::Store(s));
        }
        if let Some(r) = robot {
            sources.push(Source::Robot(r));
        }
        Keychain { sources }
    }

    /// Find a credential for `server` (any spelling). `trace` receives one line per
    /// source consulted, for `--explain`; it never contains a secret.
    pub fn lookup(
        &self,
        server: &str,
        trace: &mut Vec<String>,
    ) -> Result<Option<Found>, KeychainError> {
        let wanted = host::normalise(server);
        for source in &self.sources {
            let name = source.describe();
            let answer = match source {
                Source::Explicit(c) => Some(c.clone()),
                Source::ConfigFile { path, .. } => match DockerConfig::read(path)? {
                    None => {
                        trace.push(format!("{name}: no such file"));
                        continue;
                    }
                    Some(config) => {
                        from_answer(config.lookup(&wanted, path)?, &wanted, &name, trace)?
                    }
                },
                Source::SecretVolumes(dirs) => {
                    let mut found = None;
                    for dir in dirs {
                        // The kubelet swaps `..data` atomically; reading through the
                        // key's path sees one version or the other.
                        let path = dir.join(".dockerconfigjson");
                        if let Some(config) = DockerConfig::read(&path)?
                            && let Answer::Credential(c) = config.lookup(&wanted, &path)?
                        {
                            trace.push(format!("{name}: {} knows {wanted}", path.display()));
                            found = Some(c);
                            break;
                        }
                    }
                    found
                }
                Source::KubeApi(config) => from_kube_api(config, server, trace)?,
                Source::CriProxy(path) => from_cri_proxy(path, server, trace)?,
                Source::Store(store) => stored(store.as_ref(), &wanted)?,
                Source::Broken(why) => return Err(KeychainError::Source(why.clone())),
                Source::Robot(robot) => {
                    robot
                        .identity_token(&wanted, trace)?
                        .map(|secret| Credential {
                            username: "<token>".into(),
                            secret,
                        })
                }
            };
            match answer {
                Some(credential) => {
                    trace.push(format!(
                        "{name}: answered for {wanted} (user {})",
                        credential.username
                    ));
                    return Ok(Some(Found {
                        credential,
                        source: name,
                    }));
                }
                None => trace.push(format!("{name}: nothing for {wanted}")),
            }
        }
        Ok(None)
    }
}

fn from_answer(
    answer: Answer,
    wanted: &str,
    name: &str,
    trace: &mut Vec<String>,
) -> Result<Option<Credential>, KeychainError> {
    match answer {
        Answer::Credential(c) => Ok(Some(c)),
        Answer::Nothing => Ok(None),
        Answer::Helper(h) if h == OWN_HELPER => {
            trace.push(format!(
                "{name}: names credkeeper itself for {wanted}; not calling ourselves"
            ));
            Ok(None)
        }
        Answer::Helper(h) => {
            trace.push(format!("{name}: asks helper docker-credential-{h}"));
            call_helper(&h, wanted)
        }
    }
}

/// List the API's secrets and pick, deterministically, the first that knows the host.
fn from_kube_api(
    config: &crate::kube::Kubeconfig,
    server: &str,
    trace: &mut Vec<String>,
) -> Result<Option<Credential>, KeychainError> {
    let fail = |e: crate::kube::KubeError| KeychainError::Source(e.to_string());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| KeychainError::Source(e.to_string()))?;
    let secrets =
        runtime.block_on(async { crate::kube::KubeApi::new(config.clone())?.list().await });
    let secrets = secrets.map_err(fail)?;
    for ((ns, name), why) in &secrets.unreadable {
        trace.push(format!("secret {ns}/{name} skipped: {why}"));
    }
    Ok(secrets.lookup(server).map(|(credential, origin)| {
        trace.push(format!("secret {origin} knows {}", host::normalise(server)));
        credential
    }))
}

/// Ask the CRI proxy's keychain socket. A proxy that is not running knows nothing; one
/// that answers garbage is an error.
fn from_cri_proxy(
    path: &std::path::Path,
    server: &str,
    trace: &mut Vec<String>,
) -> Result<Option<Credential>, KeychainError> {
    use std::io::{BufRead, BufReader};
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(path) else {
        trace.push(format!("CRI proxy socket {}: not running", path.display()));
        return Ok(None);
    };
    let fail =
        |message: String| KeychainError::Source(format!("CRI proxy {}: {message}", path.display()));
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    stream
        .write_all(format!("{}\n", server.trim()).as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    let mut line = String::new();
    BufReader::new(stream.take(64 * 1024))
        .read_line(&mut line)
        .map_err(|e| fail(e.to_string()))?;
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "Username")]
        username: Option<String>,
        #[serde(rename = "Secret")]
        secret: Option<Secret>,
    }
    let answer: Answer = serde_json::from_str(&line).map_err(|e| fail(format!("not JSON: {e}")))?;
    Ok(match (answer.username, answer.secret) {
        (Some(username), Some(secret)) => Some(Credential { username, secret }),
        _ => None,
    })
}

/// Run `docker-credential-<name> get` with the host on stdin.
pub fn call_helper(name: &str, server: &str) -> Result<Option<Credential>, KeychainError> {
    let err = |message: String| KeychainError::Helper {
        helper: name.to_string(),
        message,
    };
    let mut child = Command::new(format!("docker-credential-{name}"))
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| err(format!("cannot run it: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if stdout.trim() == NOT_FOUND {
            return Ok(None);
        }
        // Its message is its own; it is not a secret by the protocol's rules, but cut it short.
        return Err(err(format!(
            "failed: {}",
            stdout.trim().chars().take(200).collect::<String>()
        )));
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: Secret,
    }
    let a: Answer = serde_json::from_str(&stdout)
        .map_err(|e| err(format!("answered something that is not helper JSON ({e})")))?;
    // docker-credential-pass answers an unknown host with empty fields and exit 0.
    if a.username.is_empty() && a.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credential {
        username: a.username,
        secret: a.secret,
    }))
}

fn store_key(host: &str, username: &str) -> CredentialKey {
    CredentialKey::new(&format!("registry:{host}"), username, STORE_IDENTITY)
}

/// The credential credkeeper's store holds for `host`, if any.
pub fn stored(
    store: &dyn CredentialStore,
    host: &str,
) -> Result<Option<Credential>, KeychainError> {
    let issuer = format!("registry:{host}");
    let Some(key) = store
        .list()?
        .into_iter()
        .find(|k| k.issuer == issuer && k.identity == STORE_IDENTITY)
    else {
        return Ok(None);
    };
    Ok(store.get(&key)?.map(|c| Credential {
        username: key.client_id.clone(),
        secret: c.refresh_token,
    }))
}

/// Keep a credential for `host` in credkeeper's store, replacing any other user's.
pub fn keep(
    store: &dyn CredentialStore,
    host: &str,
    credential: &Credential,
) -> Result<(), KeychainError> {
    forget(store, host)?;
    store.put(
        &store_key(host, &credential.username),
        &credential.secret,
        None,
        None,
    )?;
    Ok(())
}

/// Remove what the store holds for `host`; returns whether there was anything.
pub fn forget(store: &dyn CredentialStore, host: &str) -> Result<bool, KeychainError> {
    let issuer = format!("registry:{host}");
    let mut any = false;
    for key in store
        .list()?
        .into_iter()
        .filter(|k| k.issuer == issuer && k.identity == STORE_IDENTITY)
    {
        any |= store.delete(&key)?;
    }
    Ok(any)
}

/// `{host: username}` of everything in the store.
pub fn list(store: &dyn CredentialStore) -> Result<Vec<(String, String)>, KeychainError> {
    Ok(store
        .list()?
        .into_iter()
        .filter(|k| k.identity == STORE_IDENTITY)
        .filter_map(|k| {
            k.issuer
                .strip_prefix("registry:")
                .map(|h| (h.to_string(), k.client_id.clone()))
        })
        .collect())
}
