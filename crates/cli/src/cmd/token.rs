//! `credkeeper token inspect` and `credkeeper token verify`.

use crate::Exit;
use crate::config::Settings;
use anyhow::Context;
use credkeeper_core::verify::{Expectations, Profile};
use credkeeper_core::{Jwt, Secret, Timestamp};
use credkeeper_oidc::KeyCache;
use credkeeper_sink as sink;
use serde_json::{Value, json};
use std::io::Read;
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Show a token's header and claims, with times as UTC dates and seconds left
    Inspect(InspectArgs),
    /// Verify a token's signature (keys from the issuer's discovery document) and claims
    Verify(VerifyArgs),
}

/// FILE, `-` for standard input, or nothing for WLCG discovery
/// ($BEARER_TOKEN, $BEARER_TOKEN_FILE, $XDG_RUNTIME_DIR/bt_u<uid>, /tmp/bt_u<uid>).
#[derive(clap::Args)]
pub struct Input {
    /// Token file, `-` for standard input [default: WLCG token discovery]
    #[arg(value_name = "FILE|-")]
    pub file: Option<PathBuf>,
}

#[derive(clap::Args)]
#[command(
    after_help = "With --minsecs, the exit status is 0 when the token has at least that \
many seconds left and 1 otherwise, so scripts can test it."
)]
pub struct InspectArgs {
    #[command(flatten)]
    pub input: Input,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
    /// Exit 1 unless the token has at least this many seconds left
    #[arg(short, long, value_name = "SECONDS")]
    pub minsecs: Option<i64>,
}

#[derive(clap::Args)]
#[command(
    after_help = "Scope checks follow SciTokens/WLCG: a granted read:/data covers \
read:/data/run1; storage.modify covers storage.create. Only RS*, PS*, ES* and EdDSA \
signatures are accepted; `none` and HS* are refused."
)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub input: Input,
    /// The issuer the token must come from [default: the token's own `iss`]
    #[arg(long, value_name = "URL")]
    pub issuer: Option<String>,
    /// An audience the token must be for
    #[arg(long, value_name = "AUD")]
    pub audience: Option<String>,
    /// Scopes the token must grant (repeat, or comma/space-separated)
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// Require a token profile
    #[arg(long, value_name = "scitokens|wlcg")]
    pub profile: Option<Profile>,
    /// Allowed clock difference for exp/nbf/iat, in seconds
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub leeway: i64,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

pub async fn run(command: Command, settings: &Settings) -> anyhow::Result<()> {
    match command {
        Command::Inspect(args) => inspect(args),
        Command::Verify(args) => verify(args, settings).await,
    }
}

/// Read and decode the token, naming where it came from in any error.
fn load(input: &Input) -> anyhow::Result<(String, Jwt)> {
    let (name, token) = match input.file.as_deref() {
        Some(p) if p.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read the token from standard input")?;
            ("standard input".to_string(), Secret::new(s))
        }
        Some(p) => (p.display().to_string(), sink::read(p)?),
        None => {
            let (location, token) = sink::discover()?;
            let name = match location {
                sink::TokenLocation::Environment => "$BEARER_TOKEN".to_string(),
                sink::TokenLocation::File(p) => p.display().to_string(),
            };
            (name, token)
        }
    };
    let jwt = Jwt::decode(token.expose()).with_context(|| format!("token in {name}"))?;
    Ok((name, jwt))
}

fn time_view(jwt: &Jwt, now: Timestamp) -> Value {
    let mut times = serde_json::Map::new();
    for (name, t) in [
        ("exp", jwt.expires()),
        ("nbf", jwt.not_before()),
        ("iat", jwt.issued_at()),
    ] {
        if let Some(t) = t {
            times.insert(
                name.into(),
                json!({"utc": t.to_string(), "seconds_from_now": t.seconds_after(now)}),
            );
        }
    }
    Value::Object(times)
}

fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let (name, jwt) = load(&args.input)?;
    let now = Timestamp::now();
    let remaining = jwt.remaining(now);
    if args.json {
        let out = json!({
            "source": name,
            "header": jwt.header(),
            "claims": jwt.claims(),
            "times": time_view(&jwt, now),
            "remaining": remaining,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("Token from {name}");
        println!("Header:");
        for (k, v) in jwt.header() {
            println!("  {k}: {}", plain(v));
        }
        println!("Claims:");
        for (k, v) in jwt.claims() {
            let when = match k.as_str() {
                "exp" | "nbf" | "iat" | "auth_time" => v.as_i64().map(|s| {
                    let t = Timestamp::from_unix(s);
                    format!("  ({t}, {})", relative(t.seconds_after(now)))
                }),
                _ => None,
            };
            println!("  {k}: {}{}", plain(v), when.unwrap_or_default());
        }
        match remaining {
            Some(r) if r > 0 => println!("Valid for {r} more seconds."),
            Some(r) => println!("Expired {} seconds ago.", -r),
            None => println!("No expiry."),
        }
    }
    if let Some(min) = args.minsecs
        && remaining.is_none_or(|r| r < min)
    {
        return Err(Exit(1).into());
    }
    Ok(())
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn relative(secs: i64) -> String {
    if secs >= 0 {
        format!("in {secs} s")
    } else {
        format!("{} s ago", -secs)
    }
}

async fn verify(args: VerifyArgs, settings: &Settings) -> anyhow::Result<()> {
    let (name, jwt) = load(&args.input)?;
    let issuer = match args.issuer.as_deref().or(jwt.issuer()) {
        Some(i) => i.to_string(),
        None => anyhow::bail!("token in {name} has no `iss` claim; pass --issuer URL"),
    };
    let expect = Expectations {
        issuer: Some(issuer.clone()),
        audience: args.audience.clone(),
        scopes: credkeeper_core::Scopes::parse(&args.scopes.join(" "))
            .map(|s| s.set().clone())
            .unwrap_or_default(),
        profile: args.profile,
        leeway: args.leeway,
    };
    let keys = KeyCache::new(settings.http()?, settings.policy, settings.cache.clone());
    let verified = keys
        .verify(&jwt, &issuer, &expect)
        .await
        .with_context(|| format!("token in {name} is not valid"))?;
    if args.json {
        let out = json!({
            "valid": true,
            "source": name,
            "issuer": issuer,
            "algorithm": verified.algorithm,
            "kid": verified.key_id,
            "profile": verified.profile.name(),
            "subject": jwt.subject(),
            "remaining": jwt.remaining(Timestamp::now()),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "Valid: signed by {issuer} ({}, key {}), profile {}, {} s left.",
            verified.algorithm,
            verified.key_id.as_deref().unwrap_or("without id"),
            verified.profile.name(),
            jwt.remaining(Timestamp::now()).unwrap_or_default()
        );
    }
    Ok(())
}
