//! `credkeeper get`: a valid token in a file, with htgettoken/igwn-robot-get flags.

use crate::config::{IssuerArgs, Settings};
use crate::prompt::Terminal;
use anyhow::Context;
use credkeeper_core::{Requirements, Scopes, TokenAsk};
use credkeeper_refresher::source::vault::{VaultPlan, VaultSource};
use credkeeper_refresher::source::{BrokerSource, IssuerSource, TokenSource};
use credkeeper_sink as sink;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
#[command(
    after_help = "Sources, in order: the token already in the out file when it has \
--minsecs left and the asked audience and scopes (no network); then one of: a credkeeper \
broker (--server, as a robot: -k/--keytab, --jwt-file, or --robot with --secret-file); a \
Vault-API server (-a/--vaultserver: the saved Vault token, else a Kerberos login from the \
keytab or the credential cache); the issuer itself (the stored refresh token, client \
credentials with --client-secret-file, with a terminal a device-code login).\n\n\
Installed as `igwn-robot-get` or `htgettoken`, the binary takes that tool's options and \
defaults (igwn-robot-get: -a vault.ligo.org -i igwn -m 3600 --vaulttokenminttl 24h, role = \
the principal's first component, credkey = the principal without its realm).\n\n\
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
    #[command(flatten)]
    pub vault: VaultArgs,
}

/// The options of htgettoken and igwn-robot-get that select a Vault-API server (a
/// credkeeper broker or a Vault with htvault-config) and what to read there.
#[derive(clap::Args, Clone, Default)]
#[command(next_help_heading = "Vault API (htgettoken / igwn-robot-get options)")]
pub struct VaultArgs {
    /// Vault-API server: host[:port] (`https://` and `:8200` are added when missing).
    /// With it, -i/--issuer is the server's issuer name (e.g. igwn), not a URL
    #[arg(short = 'a', long, value_name = "HOST[:PORT]")]
    pub vaultserver: Option<String>,
    /// The role [default: `default`; as igwn-robot-get: the principal's first component]
    #[arg(short = 'r', long, value_name = "ROLE")]
    pub role: Option<String>,
    /// The key of the stored credential [default: the principal without its realm]
    #[arg(long, value_name = "KEY")]
    pub credkey: Option<String>,
    /// Where the Vault token is kept between runs [default: /tmp/vt_u<uid>]
    #[arg(long, value_name = "FILE")]
    pub vaulttokenfile: Option<PathBuf>,
    /// Use the saved Vault token only if it has this much life left (e.g. 24h)
    /// [default: 0s, as igwn-robot-get: 24h]
    #[arg(long, value_name = "DURATION")]
    pub vaulttokenminttl: Option<String>,
    /// The lifetime to ask for a new Vault token [default: 7d]
    #[arg(long, value_name = "DURATION")]
    pub vaulttokenttl: Option<String>,
    /// Accepted for htgettoken compatibility: credkeeper get never starts an OIDC login
    /// (`credkeeper login` does)
    #[arg(long)]
    pub nooidc: bool,
    /// Accepted for htgettoken compatibility: ssh-agent login is not offered
    #[arg(long)]
    pub nossh: bool,
    /// Accepted for igwn-robot-get compatibility: credkeeper does not run
    /// condor_vault_storer (its credmon keeps HTCondor's tokens fresh)
    #[arg(long)]
    pub condor: bool,
    /// Run as this tool (set when the binary is installed under its name)
    #[arg(long, value_enum, hide = true)]
    pub persona: Option<Persona>,
}

/// Whose defaults apply: the binary installed as `htgettoken` or `igwn-robot-get`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Persona {
    Htgettoken,
    IgwnRobotGet,
}

/// A Vault duration: `3600`, `3600s`, `30m`, `24h`, `7d`.
fn duration(text: &str, what: &str) -> anyhow::Result<i64> {
    credkeeper_core::parse_seconds(text).ok_or_else(|| {
        anyhow::anyhow!("{what}: `{text}` is not a duration (e.g. 3600, 30m, 24h, 7d)")
    })
}

/// htgettoken's default.
const DEFAULT_MINSECS: i64 = 60;

/// Where the token goes, what it must satisfy, and where a new one would come from.
pub struct Plan {
    out: Box<dyn credkeeper_sink::Sink>,
    want: Requirements,
    ask: TokenAsk,
    source: Source,
}

/// The source a new token would come from, not yet opened: reusing the out file's token
/// needs none.
enum Source {
    Issuer(crate::config::Resolved),
    Vault(VaultPlan),
    Broker(String),
}

pub fn plan(args: &Args, settings: &Settings) -> anyhow::Result<Plan> {
    let out = super::out(args.outfile.clone(), settings);
    let persona = args.vault.persona;
    let igwn = persona == Some(Persona::IgwnRobotGet);
    let min_secs =
        args.minsecs
            .or(settings.file.minsecs)
            .unwrap_or(if igwn { 3600 } else { DEFAULT_MINSECS });
    let v = &args.vault;
    for (given, name, why) in [
        (
            v.nooidc,
            "--nooidc",
            "credkeeper get never starts an OIDC login",
        ),
        (v.nossh, "--nossh", "ssh-agent login is not offered"),
        (
            v.condor,
            "--condor",
            "credkeeper's credmon keeps HTCondor's tokens fresh instead",
        ),
    ] {
        if given {
            tracing::info!("{name} has no effect: {why}");
        }
    }
    let vaultserver = v
        .vaultserver
        .clone()
        .or_else(|| igwn.then(|| "vault.ligo.org".to_string()));
    if persona.is_some() && vaultserver.is_none() {
        anyhow::bail!("-a/--vaultserver is required");
    }
    let (source, issuer, scopes, audience) = match (&args.server, vaultserver) {
        (None, Some(server)) => {
            let scopes = args.issuer.scopes.as_deref().and_then(Scopes::parse);
            let audience = args.issuer.audience.clone();
            let plan = VaultPlan {
                server,
                issuer: args
                    .issuer
                    .issuer
                    .clone()
                    .unwrap_or_else(|| if igwn { "igwn" } else { "default" }.into()),
                role: v.role.clone(),
                credkey: v.credkey.clone(),
                token_file: v.vaulttokenfile.clone().unwrap_or_else(|| {
                    PathBuf::from(format!("/tmp/vt_u{}", credkeeper_sink::uid()))
                }),
                min_ttl: match &v.vaulttokenminttl {
                    Some(d) => duration(d, "--vaulttokenminttl")?,
                    None if igwn => 86400,
                    None => 0,
                },
                ttl: duration(
                    v.vaulttokenttl.as_deref().unwrap_or("7d"),
                    "--vaulttokenttl",
                )?,
                igwn,
            };
            (Source::Vault(plan), None, scopes, audience)
        }
        (Some(server), _) => {
            let f = &settings.file;
            let scopes = args
                .issuer
                .scopes
                .as_deref()
                .or(f.scopes.as_deref())
                .and_then(Scopes::parse);
            let audience = args.issuer.audience.clone().or_else(|| f.audience.clone());
            // The broker's providers have issuers this side does not know; the file's
            // token is judged by lifetime, audience and scopes only.
            (Source::Broker(server.clone()), None, scopes, audience)
        }
        (None, None) => {
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
        audience: audience.clone(),
        scopes: scopes.as_ref().map(|s| s.set().clone()).unwrap_or_default(),
    };
    let ask = TokenAsk {
        provider: args.provider.clone(),
        scopes,
        audience,
        min_secs,
    };
    Ok(Plan {
        out,
        want,
        ask,
        source,
    })
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
    let Plan {
        out, ask, source, ..
    } = plan;
    let mut forget = None;
    let source: Box<dyn TokenSource + '_> = match source {
        Source::Broker(server) => Box::new(BrokerSource(super::broker_client(
            &server,
            &robot_login(&args),
            settings,
        )?)),
        Source::Vault(plan) => {
            Box::new(VaultSource::new(settings.http()?, plan, robot_login(&args)))
        }
        Source::Issuer(resolved) => {
            let subject_token = match &args.subject_token_file {
                Some(p) => Some(sink::read(p).context("subject token")?),
                None => None,
            };
            let issuer = super::open_issuer(&resolved, settings).await?;
            forget = Some(resolved.issuer);
            Box::new(IssuerSource {
                issuer,
                defaults: TokenAsk::default(),
                subject_token,
                prompt: Arc::new(Terminal::new(true)),
            })
        }
    };
    let fresh = source.token(&ask).await.inspect_err(|_| {
        // The cached endpoints may be what failed; rediscover next time.
        if let Some(issuer) = &forget {
            settings.cache.forget("discovery", issuer);
        }
    })?;
    out.deliver(&fresh.token)?;
    tracing::info!(
        "{}; written to {out} ({} s left)",
        fresh.origin.describe(),
        fresh.expires.map_or("unknown".into(), |e| e
            .seconds_after(credkeeper_core::Timestamp::now())
            .to_string())
    );
    Ok(())
}

/// The robot's credentials among `get`'s flags.
fn robot_login(args: &Args) -> super::RobotLogin<'_> {
    super::RobotLogin {
        robot: args.robot.as_deref(),
        secret_file: args.secret_file.as_deref(),
        keytab: args.keytab.as_deref(),
        principal: args.principal.as_deref(),
        ccache: args.ccache.as_deref(),
        jwt_file: args.jwt_file.as_deref(),
    }
}
