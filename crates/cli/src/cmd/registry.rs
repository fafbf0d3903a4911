//! `credkeeper registry` and the `docker-credential-credkeeper` helper.

use anyhow::Context;
use credkeeper_core::Secret;
use credkeeper_registry::keychain::{Env, Keychain, RobotIdentity};
use credkeeper_registry::{Credential, helper};
use credkeeper_store::{CredentialStore, SqliteStore};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Find the credential for an image or registry host, in the keychain's order
    Get(GetArgs),
    /// A registry access token for an image (the Bearer-token flow), printed on stdout
    Token(TokenArgs),
    /// Speak the Docker credential-helper protocol (as docker-credential-credkeeper)
    Helper {
        /// store, get, erase, list or version
        action: String,
    },
    /// A CRI proxy between kubelet and containerd that keeps each pull's credential in
    /// memory for the keychain (point kubelet's --image-service-endpoint at --listen)
    CriProxy(CriProxyArgs),
    /// Be a kubelet credential-provider plugin: CredentialProviderRequest on stdin,
    /// CredentialProviderResponse on stdout, from the same keychain
    KubeletCredentialProvider {
        /// How long the kubelet may cache the answer, per registry (seconds)
        #[arg(long, default_value_t = 300, value_name = "SECONDS")]
        cache_duration: u64,
    },
}

#[derive(clap::Args)]
#[command(
    after_help = "Every CRI call (ImageService and RuntimeService) is forwarded unchanged and \
answered with containerd's answer. A successful PullImage's credential is kept in memory \
only, keyed by registry host and repository, for --ttl seconds or until RemoveImage; the \
keychain (registry get, docker-credential-credkeeper) asks for it on the keychain socket \
named by $CREDKEEPER_CRI_KEYCHAIN."
)]
pub struct CriProxyArgs {
    /// Where kubelet connects: unix:///PATH (mode 0600)
    #[arg(long, value_name = "unix:///PATH")]
    pub listen: String,
    /// containerd's CRI socket: unix:///PATH
    #[arg(long, value_name = "unix:///PATH")]
    pub upstream: String,
    /// The keychain socket (mode 0600) [default: the listen path + .keychain]
    #[arg(long, value_name = "PATH")]
    pub keychain_socket: Option<PathBuf>,
    /// How long a pull's credential is kept, in seconds
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    pub ttl: i64,
    /// Also keep the cluster's dockerconfigjson Secrets (list + watch, all namespaces) and
    /// offer them first; `in-cluster` for the pod's service account
    #[arg(long, value_name = "FILE|in-cluster")]
    pub kubeconfig: Option<String>,
}

fn unix_path(endpoint: &str, what: &str) -> anyhow::Result<PathBuf> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    anyhow::ensure!(
        path.starts_with('/'),
        "{what} `{endpoint}` is not unix:///ABSOLUTE/PATH"
    );
    Ok(PathBuf::from(path))
}

/// `registry cri-proxy`: serve until SIGTERM or SIGINT, then remove the sockets.
pub async fn cri_proxy(args: CriProxyArgs) -> anyhow::Result<()> {
    use credkeeper_cri::{captured::Captured, keychain, proxy};
    let listen = unix_path(&args.listen, "--listen")?;
    let upstream = unix_path(&args.upstream, "--upstream")?;
    let keychain_path = args
        .keychain_socket
        .unwrap_or_else(|| PathBuf::from(format!("{}.keychain", listen.display())));
    let captured = Arc::new(Captured::new(args.ttl));
    let proxy_listener = proxy::bind(&listen)?;
    let keychain_listener = keychain::bind(&keychain_path)?;
    eprintln!(
        "credkeeper cri-proxy listening on unix://{} (upstream unix://{}, keychain {})",
        listen.display(),
        upstream.display(),
        keychain_path.display()
    );
    let served = tokio::spawn(proxy::serve(
        proxy_listener,
        Arc::new(proxy::Upstream::new(&upstream)),
        captured.clone(),
    ));
    let secrets = match args.kubeconfig.as_deref() {
        None => None,
        Some(which) => {
            let config = match which {
                "in-cluster" => credkeeper_registry::kube::Kubeconfig::in_cluster().context(
                    "no in-cluster service account (KUBERNETES_SERVICE_HOST and its token)",
                )?,
                path => credkeeper_registry::kube::Kubeconfig::load(std::path::Path::new(path))?,
            };
            let api = credkeeper_registry::kube::KubeApi::new(config)?;
            let shared = keychain::SharedSecrets::default();
            tokio::spawn(keychain::sync_secrets(api, shared.clone()));
            Some(shared)
        }
    };
    let offered = tokio::spawn(keychain::serve(keychain_listener, captured, secrets));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    served.abort();
    offered.abort();
    let _ = std::fs::remove_file(&listen);
    let _ = std::fs::remove_file(&keychain_path);
    Ok(())
}

#[derive(clap::Args)]
#[command(
    after_help = "Order: --user; docker config ($DOCKER_CONFIG/config.json, else \
~/.docker/config.json: auths, credHelpers, credsStore); containers auth.json \
($REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json); \
Kubernetes dockerconfigjson secret volumes ($CREDKEEPER_REGISTRY_SECRET_DIRS, in path order); \
the CRI proxy's pulls ($CREDKEEPER_CRI_KEYCHAIN); credkeeper's store; the robot's identity at \
a broker that is the registry's token server ($CREDKEEPER_SERVER with KRB5_KTNAME, \
$CREDKEEPER_JWT_FILE or $CREDKEEPER_ROBOT + $CREDKEEPER_SECRET_FILE). The first source that \
knows the host answers."
)]
pub struct GetArgs {
    /// An image reference (127.0.0.1:5000/test/hello:1) or a registry host
    pub target: String,
    /// Use this credential (USER:PASS, or USER with the password from $CREDKEEPER_REGISTRY_PASSWORD)
    #[arg(long, value_name = "USER[:PASS]")]
    pub user: Option<String>,
    /// Tell which source answered and why, on standard error (never the secret)
    #[arg(long)]
    pub explain: bool,
}

#[derive(clap::Args)]
#[command(
    after_help = "The credential comes from the keychain (as `registry get`); the registry's \
Bearer challenge names its token server. An identity token is traded there with \
grant_type=refresh_token, a user and password by GET with Basic auth. Tokens are cached \
per scope for the life of the process."
)]
pub struct TokenArgs {
    /// An image reference: HOST/REPOSITORY[:TAG]
    pub image: String,
    /// Ask for push as well as pull
    #[arg(long)]
    pub push: bool,
    /// Use this credential (USER:PASS, or USER with the password from $CREDKEEPER_REGISTRY_PASSWORD)
    #[arg(long, value_name = "USER[:PASS]")]
    pub user: Option<String>,
    /// Also prove the token opens the image's manifest (HEAD), and say so
    #[arg(long)]
    pub check: bool,
    /// Tell which source answered and why, on standard error (never the secret)
    #[arg(long)]
    pub explain: bool,
}

/// `registry token`: keychain → challenge → token server → token.
pub async fn token(
    args: TokenArgs,
    state_dir: Option<PathBuf>,
    ca_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let explicit = explicit_credential(args.user.as_deref())?;
    let keychain = Keychain::standard(
        &Env::from_process(),
        explicit,
        store(state_dir, false)?,
        broker_identity(),
    );
    let (host, repository) = credkeeper_registry::host::reference(&args.image);
    let tag = credkeeper_registry::host::manifest(&args.image);
    // The keychain's sources block (helpers, the broker's and Kubernetes' clients run
    // their own short runtimes): off this runtime's thread.
    let target = host.clone();
    let (found, trace) = tokio::task::spawn_blocking(move || {
        let mut trace = Vec::new();
        let found = keychain.lookup(&target, &mut trace);
        (found, trace)
    })
    .await?;
    if args.explain {
        for line in &trace {
            eprintln!("{line}");
        }
    }
    let credential = found?.map(|f| f.credential);
    let http =
        credkeeper_oidc::Http::with_ca_file(ca_file.as_deref(), credkeeper_oidc::Roots::Only)?;
    let Some((base, challenge)) = credkeeper_registry::bearer::probe(&http, &host).await else {
        anyhow::bail!("{host} does not answer /v2/ (neither HTTPS nor, for loopback, HTTP)");
    };
    let Some(challenge) = challenge else {
        anyhow::bail!(
            "{host} asks for no Bearer token (anonymous access, or HTTP Basic: use `registry get`)"
        );
    };
    let scope = format!(
        "repository:{repository}:{}",
        if args.push { "pull,push" } else { "pull" }
    );
    if credential.is_some() {
        // A password or identity token goes only over HTTPS (or to a loopback realm, as
        // for a loopback registry).
        credkeeper_registry::bearer::LOOPBACK_ALLOWED
            .check("the registry's token server (realm)", &challenge.realm)?;
    }
    let client = credkeeper_registry::bearer::TokenClient::new(http.client().clone());
    let token = client
        .token(&challenge, &scope, credential.as_ref())
        .await?;
    if args.check {
        let status = client.check(&base, &repository, &tag, &token).await?;
        anyhow::ensure!(
            status == 200,
            "the token does not open {repository}:{tag} (HTTP {status})"
        );
        eprintln!("{scope}: the token opens {repository}:{tag}");
    }
    println!("{}", token.expose());
    Ok(())
}

/// `--user USER[:PASS]`, the password from the environment when not given.
fn explicit_credential(user: Option<&str>) -> anyhow::Result<Option<Credential>> {
    let Some(u) = user else { return Ok(None) };
    let (user, pass) = match u.split_once(':') {
        Some((user, pass)) => {
            // Accepted for skopeo's `--creds` habit, but argv is readable by others.
            tracing::warn!(
                "a password on the command line is visible to other users (ps); prefer --user USER with $CREDKEEPER_REGISTRY_PASSWORD"
            );
            (user.to_string(), pass.to_string())
        }
        None => (
            u.to_string(),
            std::env::var("CREDKEEPER_REGISTRY_PASSWORD")
                .context("--user USER without :PASS needs $CREDKEEPER_REGISTRY_PASSWORD")?,
        ),
    };
    Ok(Some(Credential {
        username: user,
        secret: Secret::new(pass),
    }))
}

/// The store, when there is one: a `get` must not create state as a side effect.
fn store(
    state_dir: Option<PathBuf>,
    create: bool,
) -> anyhow::Result<Option<Arc<dyn CredentialStore>>> {
    let Some(dir) = state_dir.or_else(crate::config::default_state_dir) else {
        return Ok(None);
    };
    if !create && !dir.join("credentials.db").exists() {
        return Ok(None);
    }
    Ok(Some(Arc::new(SqliteStore::open(&dir)?)))
}

pub fn run(command: Command, state_dir: Option<PathBuf>) -> anyhow::Result<()> {
    match command {
        Command::Get(args) => get(args, state_dir),
        Command::CriProxy(_) | Command::Token(_) => {
            anyhow::bail!("this subcommand runs on a runtime (main dispatches it)")
        }
        Command::KubeletCredentialProvider { cache_duration } => {
            let store = store(state_dir, false)?;
            let keychain = Keychain::standard(&Env::from_process(), None, store, broker_identity());
            let response = credkeeper_registry::kubelet::answer(
                &mut std::io::stdin(),
                &keychain,
                cache_duration,
            )?;
            println!("{response}");
            Ok(())
        }
        Command::Helper { action } => {
            let code = helper_main(&action, state_dir);
            if code == 0 {
                Ok(())
            } else {
                Err(crate::Exit(code as u8).into())
            }
        }
    }
}

fn get(args: GetArgs, state_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let explicit = explicit_credential(args.user.as_deref())?;
    let keychain = Keychain::standard(
        &Env::from_process(),
        explicit,
        store(state_dir, false)?,
        broker_identity(),
    );
    let mut trace = Vec::new();
    let found = keychain.lookup(&args.target, &mut trace);
    if args.explain {
        for line in &trace {
            eprintln!("{line}");
        }
    }
    match found? {
        Some(found) => {
            println!(
                "{}",
                serde_json::json!({
                    "ServerURL": credkeeper_registry::host::normalise(&args.target),
                    "Username": found.credential.username,
                    "Secret": found.credential.secret.expose(),
                })
            );
            Ok(())
        }
        None => anyhow::bail!(
            "no credential for {} in any source",
            credkeeper_registry::host::normalise(&args.target)
        ),
    }
}

/// The helper protocol on stdin/stdout; returns the exit status.
pub fn helper_main(action: &str, state_dir: Option<PathBuf>) -> i32 {
    let store = match store(state_dir, action == "store") {
        Ok(s) => s,
        Err(e) => {
            println!("{e:#}");
            return 1;
        }
    };
    // `get` walks the whole keychain, credkeeper's store last; `store`, `erase` and
    // `list` work on the store.
    let keychain = Keychain::standard(&Env::from_process(), None, store.clone(), broker_identity());
    let reply = helper::run(action, &mut std::io::stdin(), &keychain, store.as_deref());
    if !reply.stdout.is_empty() {
        println!("{}", reply.stdout);
    }
    reply.code
}

/// This host's robot at a credkeeper broker, from the environment.
fn broker_identity() -> Option<Box<dyn RobotIdentity>> {
    let id = credkeeper_registry::robot::BrokerIdentity::from_env(|k| std::env::var(k).ok())?;
    Some(Box::new(id))
}
