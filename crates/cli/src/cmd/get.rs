//! `credkeeper get`: a valid token in a file, with htgettoken/igwn-robot-get flags.

use crate::config::{IssuerArgs, Settings};
use crate::prompt::Terminal;
use anyhow::Context;
use credkeeper_core::{Requirements, ScopeSet};
use credkeeper_refresher::LOCAL_IDENTITY;
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
    /// Ask a credkeeper broker instead of the issuer (as a robot: --keytab, or --robot
    /// with --secret-file)
    #[arg(long, value_name = "URL", env = "CREDKEEPER_SERVER")]
    pub server: Option<String>,
    /// The Kerberos principal to authenticate as [default: the keytab's first]; the
    /// default realm is added when it names none
    #[arg(value_name = "PRINCIPAL")]
    pub principal: Option<String>,
    /// The robot's keytab, for Kerberos authentication to the broker
    #[arg(short = 'k', long, env = "KRB5_KTNAME", value_name = "FILE")]
    pub keytab: Option<PathBuf>,
    /// Credential cache for the robot's tickets [default: a private in-memory cache]
    #[arg(short = 'c', long, value_name = "CCACHE")]
    pub ccache: Option<String>,
    /// Authenticate to the broker with the JWT in this file (re-read on every run: a
    /// Kubernetes projected service-account token)
    #[arg(long, value_name = "FILE", env = "CREDKEEPER_JWT_FILE")]
    pub jwt_file: Option<PathBuf>,
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

/// Where the token goes, what it must satisfy, and where a new one would come from.
pub struct Plan {
    out: super::Out,
    want: Requirements,
    source: Source,
}

enum Source {
    Issuer(crate::config::Resolved),
    Broker {
        server: String,
        scopes: Option<String>,
        audience: Option<String>,
    },
}

pub fn plan(args: &Args, settings: &Settings) -> anyhow::Result<Plan> {
    let out = super::Out::choose(args.outfile.clone(), settings);
    let min_secs = args
        .minsecs
        .or(settings.file.minsecs)
        .unwrap_or(DEFAULT_MINSECS);
    let (source, issuer, scopes, audience) = match &args.server {
        Some(server) => {
            let f = &settings.file;
            let scopes = args
                .issuer
                .scopes
                .clone()
                .or_else(|| f.scopes.clone())
                .map(|s| crate::config::normalise_scopes(&s));
            let audience = args.issuer.audience.clone().or_else(|| f.audience.clone());
            let source = Source::Broker {
                server: server.clone(),
                scopes: scopes.clone(),
                audience: audience.clone(),
            };
            // The broker's providers have issuers this side does not know; the file's
            // token is judged by lifetime, audience and scopes only.
            (source, None, scopes, audience)
        }
        None => {
            let resolved = settings.resolve(&args.issuer)?;
            let (issuer, scopes, audience) = (
                Some(resolved.issuer.clone()),
                resolved.scopes.clone(),
                resolved.audience.clone(),
            );
            (Source::Issuer(resolved), issuer, scopes, audience)
        }
    };
    let want = Requirements {
        min_secs,
        issuer,
        audience,
        scopes: ScopeSet::parse(scopes.as_deref().unwrap_or("")),
    };
    Ok(Plan { out, want, source })
}

impl Plan {
    /// Reuse before network: whether the token already in the out file will do. Needs no
    /// issuer, no store, no discovery — not even an async runtime.
    pub fn reused(&self) -> bool {
        match credkeeper_refresher::reusable(self.out.existing().as_ref(), &self.want) {
            Some(done) => {
                tracing::info!(
                    "{} in {} ({} s left)",
                    done.origin.describe(),
                    self.out,
                    done.remaining.unwrap_or_default()
                );
                true
            }
            None => false,
        }
    }
}

/// Get a new token from the plan's source and deliver it.
pub async fn fetch(plan: Plan, args: Args, settings: &Settings) -> anyhow::Result<()> {
    let Plan { out, want, source } = plan;
    let (token, how, remaining) = match source {
        Source::Broker {
            server,
            scopes,
            audience,
        } => {
            let client = super::broker_client(&server, &super::RobotLogin::of(&args), settings)?;
            let token = client
                .token(&credkeeper_oidc::broker::BrokerAsk {
                    provider: args.provider.clone(),
                    scopes,
                    audience,
                    minsecs: want.min_secs,
                })
                .await?;
            (
                token.access_token,
                "obtained from the broker",
                Some(token.expires_in),
            )
        }
        Source::Issuer(resolved) => {
            let subject = match &args.subject_token_file {
                Some(p) => Some(sink::read(p).context("subject token")?),
                None => None,
            };
            let issuer = super::Issuer::open(&resolved, settings).await?;
            let refresher = issuer.refresher(LOCAL_IDENTITY);
            let request = super::token_request(&resolved);
            let obtained = refresher
                .obtain(&want, &request, subject.as_ref(), &Terminal::new(true))
                .await
                .inspect_err(|_| {
                    // The cached endpoints may be what failed; rediscover next time.
                    settings.cache.forget("discovery", &resolved.issuer);
                })?;
            (
                obtained.token,
                obtained.origin.describe(),
                obtained.remaining,
            )
        }
    };
    out.deliver(&token)?;
    tracing::info!(
        "{how}; written to {out} ({} s left)",
        remaining.map_or("unknown".into(), |r| r.to_string())
    );
    Ok(())
}
