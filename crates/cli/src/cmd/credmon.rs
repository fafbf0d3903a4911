//! `credkeeper credmon`: the HTCondor credential monitor.

use crate::config::Global;
use anyhow::Context;
use credkeeper_credmon::condor_config::CondorConfig;
use credkeeper_credmon::{Credmon, Settings, daemon};
use credkeeper_oidc::UrlPolicy;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Configuration comes from HTCondor's knobs, read from $CONDOR_CONFIG and \
_CONDOR_<NAME> variables (no HTCondor installation needed): SEC_CREDENTIAL_DIRECTORY_OAUTH, \
LOCAL_CREDMON_* (PROVIDER_NAMES, PRIVATE_KEY, PUBLIC_KEY, KEY_ID, ISSUER, AUTHZ_TEMPLATE, \
TOKEN_LIFETIME, TOKEN_AUDIENCE, TOKEN_VERSION, TOKEN_USE_JSON, PRIVATE_KEY_ALGORITHM, per \
provider as LOCAL_CREDMON_<PROVIDER>_<X>), <PROVIDER>_CLIENT_SECRET_FILE, and credkeeper's \
CREDMON_OAUTH_REFRESH_FRACTION (0.5), CREDMON_OAUTH_SCAN_INTERVAL (60), \
CREDMON_OAUTH_CONCURRENCY (16). Flags override.\n\n\
Signals: SIGHUP scans now; SIGTERM, SIGINT and SIGQUIT exit after the file being written."
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Sub>,
    /// The credential directory [default: SEC_CREDENTIAL_DIRECTORY_OAUTH]
    #[arg(short = 'c', long = "cred-dir", value_name = "DIR", global = true)]
    pub cred_dir: Option<PathBuf>,
    /// Run one pass and exit (for cron and tests): 1 when a credential failed
    #[arg(long)]
    pub once: bool,
    /// Log file (appended) [default: SEC_CREDENTIAL_MONITOR_OAUTH_LOG, else standard error;
    /// `-` for standard error]
    #[arg(short = 'l', long = "log", value_name = "FILE")]
    pub log: Option<PathBuf>,
}

/// The log file the daemon writes to, opened for appending.
pub fn log_file(args: &Args) -> anyhow::Result<Option<std::fs::File>> {
    if args.command.is_some() {
        return Ok(None);
    }
    let configured = || {
        let config = CondorConfig::from_environment().ok()?;
        config
            .get("SEC_CREDENTIAL_MONITOR_OAUTH_LOG")
            .or_else(|| config.get("SEC_CREDENTIAL_MONITOR_LOG"))
            .map(PathBuf::from)
    };
    match args.log.clone().or_else(configured) {
        Some(p) if p.as_os_str() != "-" => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .with_context(|| format!("cannot open the log file {}", p.display()))?;
            Ok(Some(f))
        }
        _ => Ok(None),
    }
}

#[derive(clap::Subcommand)]
pub enum Sub {
    /// Show every credential's expiry, last refresh and last error
    Status {
        /// Print JSON
        #[arg(long, conflicts_with = "prometheus")]
        json: bool,
        /// Print Prometheus text-format metrics (for node_exporter's textfile collector)
        #[arg(long)]
        prometheus: bool,
    },
    /// The SEC_CREDENTIAL_PRODUCER for local mode: print the local provider's name
    Producer,
}

fn settings(args: &Args) -> anyhow::Result<Settings> {
    let config = CondorConfig::from_environment()?;
    Ok(Settings::from_config(config, args.cred_dir.clone())?)
}

pub async fn run(args: Args, global: &Global) -> anyhow::Result<()> {
    let settings = settings(&args)?;
    match args.command {
        Some(Sub::Status { json, prometheus }) => return status(&settings, json, prometheus),
        Some(Sub::Producer) => {
            let name = settings
                .local
                .first()
                .map(|p| p.name.clone())
                .unwrap_or_else(|| "scitokens".into());
            println!("{name}");
            return Ok(());
        }
        None => {}
    }
    let dir = settings.cred_dir.clone();
    daemon::prepare(&dir)?;
    let policy = UrlPolicy {
        allow_insecure_loopback: global.insecure_loopback,
    };
    let credmon = Arc::new(Credmon::new(settings, policy)?);
    if args.once {
        let report = daemon::once(credmon).await;
        if report.failed > 0 {
            eprintln!(
                "credkeeper credmon: {} credential(s) failed this pass; see `credkeeper credmon status`",
                report.failed
            );
            return Err(crate::Exit(1).into());
        }
        return Ok(());
    }
    tracing::info!("credmon watching {}", dir.display());
    daemon::run(credmon).await.context("credmon")?;
    Ok(())
}

fn status(settings: &Settings, json: bool, prometheus: bool) -> anyhow::Result<()> {
    let status = credkeeper_credmon::status::Status::load(&settings.cred_dir);
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    if prometheus {
        print!(
            "{}",
            status.prometheus(credkeeper_core::Timestamp::now().unix())
        );
        return Ok(());
    }
    let now = credkeeper_core::Timestamp::now();
    match status.last_pass {
        Some(t) => println!("last pass: {}", credkeeper_core::Timestamp::from_unix(t)),
        None => println!("no pass recorded in {}", settings.cred_dir.display()),
    }
    for c in status.credentials.values() {
        let expiry = c
            .expires_at
            .map(|e| {
                let t = credkeeper_core::Timestamp::from_unix(e);
                format!("expires {t} ({} s)", t.seconds_after(now))
            })
            .unwrap_or_else(|| "no token".into());
        let state = match (&c.needs_login, &c.last_error) {
            (Some(r), _) => format!("NEEDS LOGIN: {r}"),
            (None, Some(e)) => format!("failing ({} times): {e}", c.failures),
            _ => "ok".into(),
        };
        println!("{}/{} [{}] {expiry}; {state}", c.user, c.token, c.kind);
    }
    Ok(())
}
