//! `credkeeper serve` and `credkeeper robot-secret`.

use crate::config::Global;
use anyhow::Context;
use credkeeper_oidc::UrlPolicy;
use credkeeper_server::config::Config;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(
    after_help = "Configuration: --config FILE (TOML: [server], [issuer], [[provider]], \
[[robot]], [store], [refresher]; see README). With --dev no file is needed: the local issuer \
and one robot, `dev`, whose secret is written to <state-dir>/dev-robot.secret, and the \
`credkeeper get` command that fetches a token is printed on standard output.\n\n\
Stops on SIGTERM or SIGINT after finishing the requests in flight."
)]
pub struct Args {
    /// Zero-configuration development broker on 127.0.0.1
    #[arg(long)]
    pub dev: bool,
    /// Address to listen on (overrides [server] listen) [default: 127.0.0.1:8787]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}

#[derive(clap::Args)]
pub struct RobotSecretArgs {
    /// The robot (a [[robot]] of the broker's config)
    pub robot: String,
    /// Where to write the new secret (mode 0600)
    #[arg(short, long, value_name = "FILE")]
    pub outfile: PathBuf,
}

pub(crate) fn state_dir(global: &Global, config: &Config, dev: bool) -> anyhow::Result<PathBuf> {
    if let Some(d) = global
        .state_dir
        .clone()
        .or_else(|| config.server.state_dir.clone())
    {
        return Ok(d);
    }
    if dev {
        // A fresh private directory per dev run: nothing from an earlier run leaks in.
        let dir = std::env::temp_dir().join(format!("credkeeper-dev-{}", std::process::id()));
        return Ok(dir);
    }
    crate::config::default_state_dir()
        .context("no state directory: set --state-dir or [server] state_dir")
}

pub(crate) fn load(global: &Global) -> anyhow::Result<Config> {
    match &global.config {
        Some(path) => Ok(Config::load(path)?),
        None => Ok(Config::default()),
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
    tracing::warn!("shutting down: finishing requests in flight");
}

pub async fn run(args: Args, global: &Global) -> anyhow::Result<()> {
    let mut config = if args.dev && global.config.is_none() {
        credkeeper_server::dev_config(SocketAddr::from(([127, 0, 0, 1], 8787)))
    } else {
        load(global)?
    };
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    let state = state_dir(global, &config, args.dev)?;
    std::fs::create_dir_all(&state)
        .with_context(|| format!("cannot create state directory {}", state.display()))?;
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .with_context(|| format!("cannot make {} private", state.display()))?;
    let policy = UrlPolicy {
        allow_insecure_loopback: global.insecure_loopback,
    };
    let bound = credkeeper_server::start(config, &state, policy, global.cafile.as_deref()).await?;
    let url = bound.broker.issuer.url().to_string();
    eprintln!(
        "credkeeper broker listening on {}://{} (issuer {url})",
        bound.scheme, bound.addr
    );
    eprintln!("state in {}", state.display());
    if args.dev {
        let secret_file = state.join("dev-robot.secret");
        credkeeper_server::issue_robot_secret(bound.broker.store.as_ref(), "dev", &secret_file)?;
        let exe = std::env::current_exe().unwrap_or_else(|_| "credkeeper".into());
        eprintln!(
            "dev robot `dev`: secret in {} (mode 0600). Fetch a token with:",
            secret_file.display()
        );
        // The one line a newcomer copies: on standard output, alone.
        println!(
            "{} --insecure-loopback get --server {url} --robot dev --secret-file {} -o {}",
            exe.display(),
            secret_file.display(),
            state.join("token").display()
        );
    }
    bound.serve(shutdown_signal()).await?;
    Ok(())
}

pub fn robot_secret(args: RobotSecretArgs, global: &Global) -> anyhow::Result<()> {
    let config = load(global)?;
    let robot = config
        .robot(&args.robot)
        .with_context(|| format!("no [[robot]] named `{}` in the config", args.robot))?;
    if !robot.auth.secret {
        anyhow::bail!(
            "robot `{}` does not authenticate with a secret (set auth.secret = true)",
            args.robot
        );
    }
    let state = state_dir(global, &config, false)?;
    let store = credkeeper_store::open(&config.store.settings(&state))?;
    credkeeper_server::issue_robot_secret(&*store, &args.robot, &args.outfile)?;
    eprintln!(
        "New secret for robot `{}` written to {}; its hash is in the store at {} (the broker \
         reads it there). A running broker takes the new secret at once and refuses the old \
         one within a second.",
        args.robot,
        args.outfile.display(),
        store.location()
    );
    Ok(())
}
