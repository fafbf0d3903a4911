//! `credkeeper get`: a valid token in a file, with htgettoken/igwn-robot-get flags.

use crate::config::{IssuerArgs, Settings};
use crate::prompt::Terminal;
use anyhow::Context;
use credkeeper_core::{Requirements, ScopeSet};
use credkeeper_refresher::{LOCAL_IDENTITY, Refresher};
use credkeeper_store::sink;
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(
    after_help = "Sources, in order: the token already in the out file when it has \
--minsecs left and the asked audience and scopes (no network); the stored refresh token; \
client credentials (with --client-secret-file); with a terminal, a device-code login.\n\n\
Out file: -o, else $BEARER_TOKEN_FILE, else $XDG_RUNTIME_DIR/bt_u<uid>, else /tmp/bt_u<uid>."
)]
pub struct Args {
    /// Reuse the existing token if it has at least this many seconds left
    #[arg(short, long, env = "CREDKEEPER_MINSECS", value_name = "SECONDS")]
    pub minsecs: Option<i64>,
    /// Where to write the token (`-` for standard output)
    #[arg(short, long, visible_alias = "bearertokenfile", value_name = "FILE")]
    pub outfile: Option<PathBuf>,
    /// Exchange this access token for the requested one (RFC 8693 token exchange)
    #[arg(long, value_name = "FILE")]
    pub subject_token_file: Option<PathBuf>,
    /// Ask a credkeeper broker instead of the issuer (with --robot and --secret-file)
    #[arg(long, value_name = "URL", env = "CREDKEEPER_SERVER", requires_all = ["robot", "secret_file"])]
    pub server: Option<String>,
    /// The broker robot to authenticate as
    #[arg(long, value_name = "NAME", env = "CREDKEEPER_ROBOT")]
    pub robot: Option<String>,
    /// File holding the robot's secret (mode 0600)
    #[arg(long, value_name = "FILE", env = "CREDKEEPER_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// With --server: the broker's provider to get the token from [default: local]
    #[arg(long, value_name = "NAME", requires = "server")]
    pub provider: Option<String>,
    #[command(flatten)]
    pub issuer: IssuerArgs,
}

/// htgettoken's default.
const DEFAULT_MINSECS: i64 = 60;

pub async fn run(args: Args, settings: &Settings) -> anyhow::Result<()> {
    let out = super::Out::choose(args.outfile.clone(), settings);
    let min_secs = args
        .minsecs
        .or(settings.file.minsecs)
        .unwrap_or(DEFAULT_MINSECS);
    if let Some(server) = &args.server {
        return from_broker(&args, server, min_secs, settings, &out).await;
    }
    let resolved = settings.resolve(&args.issuer)?;
    let want = Requirements {
        min_secs,
        issuer: Some(resolved.issuer.clone()),
        audience: resolved.audience.clone(),
        scopes: ScopeSet::parse(resolved.scopes.as_deref().unwrap_or("")),
    };
    // Reuse before network: a good token in the file needs no issuer, no store, no discovery.
    if let Some(done) = credkeeper_refresher::reusable(out.existing().as_ref(), &want) {
        tracing::info!(
            "{} in {out} ({} s left)",
            done.origin.describe(),
            done.remaining.unwrap_or_default()
        );
        return Ok(());
    }

    let subject = match &args.subject_token_file {
        Some(p) => Some(sink::read(p).context("subject token")?),
        None => None,
    };
    let client = super::connect(&resolved, settings).await?;
    let store = super::open_store(settings)?;
    let refresher = Refresher {
        client: &client,
        store: &store,
        identity: LOCAL_IDENTITY,
    };
    let request = super::token_request(&resolved);
    let obtained = refresher
        .obtain(&want, &request, subject.as_ref(), &Terminal::new(true))
        .await
        .inspect_err(|_| {
            // The cached endpoints may be what failed; rediscover next time.
            settings.cache.forget("discovery", &resolved.issuer);
        })?;
    out.deliver(&obtained.token)?;
    tracing::info!(
        "{}; written to {out} ({} s left)",
        obtained.origin.describe(),
        obtained
            .remaining
            .map_or("unknown".into(), |r| r.to_string())
    );
    Ok(())
}

/// `get --server`: the same reuse-first rule and file sink, with the broker as the source.
async fn from_broker(
    args: &Args,
    server: &str,
    min_secs: i64,
    settings: &Settings,
    out: &super::Out,
) -> anyhow::Result<()> {
    let f = &settings.file;
    let scopes = args
        .issuer
        .scopes
        .clone()
        .or_else(|| f.scopes.clone())
        .map(|s| crate::config::normalise_scopes(&s));
    let audience = args.issuer.audience.clone().or_else(|| f.audience.clone());
    // The broker's providers have issuers this side does not know; the file's token is
    // judged by lifetime, audience and scopes only.
    let want = Requirements {
        min_secs,
        issuer: None,
        audience: audience.clone(),
        scopes: ScopeSet::parse(scopes.as_deref().unwrap_or("")),
    };
    if let Some(done) = credkeeper_refresher::reusable(out.existing().as_ref(), &want) {
        tracing::info!(
            "{} in {out} ({} s left)",
            done.origin.describe(),
            done.remaining.unwrap_or_default()
        );
        return Ok(());
    }
    let (Some(robot), Some(secret_file)) = (&args.robot, &args.secret_file) else {
        anyhow::bail!("--server needs --robot NAME and --secret-file FILE");
    };
    let secret = credkeeper_core::Secret::new(credkeeper_store::perm::read_private(
        secret_file,
        "robot secret file",
    )?);
    let client = credkeeper_oidc::broker::BrokerClient::new(
        credkeeper_oidc::Http::new()?,
        server,
        settings.policy,
        robot,
        secret,
    )?;
    let token = client
        .token(&credkeeper_oidc::broker::BrokerAsk {
            provider: args.provider.clone(),
            scopes,
            audience,
            minsecs: min_secs,
        })
        .await?;
    out.deliver(&token.access_token)?;
    tracing::info!(
        "obtained from the broker; written to {out} ({} s left)",
        token.expires_in
    );
    Ok(())
}
