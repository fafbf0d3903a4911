//! `credkeeper login` and `credkeeper logout`.

use crate::config::{IssuerArgs, Settings};
use crate::prompt::Terminal;
use credkeeper_refresher::{LOCAL_IDENTITY, login_request};
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(
    after_help = "The device flow shows a code, a link and a QR code to approve on any \
device. --browser instead opens a browser on this machine (authorization code with PKCE, \
redirected to a loopback port). The refresh token is stored encrypted in the state directory; \
the access token is written like `credkeeper get` writes it."
)]
pub struct LoginArgs {
    /// Log in through a browser on this machine instead of the device flow
    #[arg(long)]
    pub browser: bool,
    /// With --browser: print the login URL but do not start a browser
    #[arg(long, requires = "browser")]
    pub no_open: bool,
    /// Where to write the access token (`-` for standard output)
    #[arg(short, long, visible_alias = "bearertokenfile", value_name = "FILE")]
    pub outfile: Option<PathBuf>,
    /// Store the refresh token for this broker robot instead of yourself. Without
    /// --server: directly in the store of --state-dir (on the broker's host); with
    /// --server: the robot that asks the broker for a web login link
    #[arg(long, value_name = "NAME")]
    pub robot: Option<String>,
    /// Get a one-time web login link from this credkeeper broker and show it instead of
    /// logging in here; the robot proves itself with --keytab, or --robot and --secret-file
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// With --server: the robot's secret file (0600)
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// With --server: the robot's keytab (Kerberos), e.g. the one mounted in its container
    #[arg(short = 'k', long, value_name = "FILE", env = "KRB5_KTNAME")]
    pub keytab: Option<PathBuf>,
    /// With --server: log the robot in at this broker provider here, with the device flow
    /// the broker runs (code, QR code, spinner), instead of printing a web link
    #[arg(
        long,
        value_name = "NAME",
        requires = "server",
        conflicts_with = "user"
    )]
    pub provider: Option<String>,
    /// With --server: make the link for this user (the robot needs `login_links = true`)
    #[arg(long, value_name = "NAME", requires = "server")]
    pub user: Option<String>,
    #[command(flatten)]
    pub issuer: IssuerArgs,
}

#[derive(clap::Args)]
pub struct LogoutArgs {
    #[command(flatten)]
    pub issuer: IssuerArgs,
}

pub async fn login(args: LoginArgs, settings: &Settings) -> anyhow::Result<()> {
    if let Some(server) = &args.server {
        return link(&args, server, settings).await;
    }
    let resolved = settings.resolve(&args.issuer)?;
    let issuer = super::open_issuer(&resolved, settings).await?;
    let refresher = issuer.refresher(args.robot.as_deref().unwrap_or(LOCAL_IDENTITY));
    let request = login_request(&super::token_request(&resolved));
    let prompt = Terminal::new(!args.no_open);
    let obtained = if args.browser {
        refresher.login_browser(&request, &prompt).await?
    } else {
        refresher.login_device(&request, &prompt).await?
    };
    let out = super::out(args.outfile, settings);
    out.deliver(&obtained.token)?;
    eprintln!(
        "Refresh token stored for {}{}; access token written to {out}.",
        resolved.issuer,
        args.robot
            .map(|r| format!(" (robot `{r}`)"))
            .unwrap_or_default()
    );
    Ok(())
}

pub async fn logout(args: LogoutArgs, settings: &Settings) -> anyhow::Result<()> {
    let resolved = settings.resolve(&args.issuer)?;
    let issuer = super::open_issuer(&resolved, settings).await?;
    let refresher = issuer.refresher(LOCAL_IDENTITY);
    match refresher.logout().await? {
        (false, _) => eprintln!("No stored credential for {}.", resolved.issuer),
        (true, None) => eprintln!(
            "Logged out of {}: refresh token revoked and deleted.",
            resolved.issuer
        ),
        (true, Some(e)) => eprintln!(
            "Logged out of {}: refresh token deleted; the issuer did not confirm revocation ({e}).",
            resolved.issuer
        ),
    }
    Ok(())
}

/// `login --server`: the broker makes a one-time link; a human opens it in a browser.
async fn link(args: &LoginArgs, server: &str, settings: &Settings) -> anyhow::Result<()> {
    let login = super::RobotLogin {
        robot: args.robot.as_deref(),
        secret_file: args.secret_file.as_deref(),
        keytab: args.keytab.as_deref(),
        ..Default::default()
    };
    let client = super::broker_client(server, &login, settings)?;
    if let Some(provider) = &args.provider {
        return robot_device_login(&client, provider).await;
    }
    let link = client.login_link(args.user.as_deref()).await?;
    eprintln!(
        "Open this link in a browser within {} minutes to log in for {} (it works once):",
        link.expires_in / 60,
        link.identity
    );
    crate::prompt::show_link(&link.url);
    // The link on standard output alone, for scripts.
    println!("{}", link.url);
    Ok(())
}

/// `login --server … --provider P`: the broker starts a device login at `P` for the
/// robot; a human approves it; the broker keeps the refresh token (it never comes here).
async fn robot_device_login(
    client: &credkeeper_oidc::broker::BrokerClient,
    provider: &str,
) -> anyhow::Result<()> {
    use credkeeper_oidc::broker::LoginPoll;
    use credkeeper_refresher::Prompt;
    let login = client.start_login(provider).await?;
    let prompt = Terminal::new(false);
    prompt.device_code(&credkeeper_oidc::DeviceAuthorization {
        device_code: credkeeper_core::Secret::new(""),
        user_code: login.user_code.clone(),
        verification_uri: login.verification_uri.clone(),
        verification_uri_complete: login.verification_uri_complete.clone(),
        expires_in: login.expires_in,
        interval: Some(login.interval),
    });
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_secs(login.expires_in.max(1) as u64);
    let mut interval = login.interval.max(1);
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(interval)).await;
        match client.poll_login(&login.state).await {
            Ok(LoginPoll::Done) => {
                prompt.login_finished(true);
                eprintln!("The broker now holds the robot's credential at provider `{provider}`.");
                return Ok(());
            }
            // RFC 8628 §3.5: five seconds more on every slow_down.
            Ok(LoginPoll::SlowDown) => interval += 5,
            Ok(LoginPoll::Pending) => {}
            Err(e) => {
                prompt.login_finished(false);
                return Err(e.into());
            }
        }
        if std::time::Instant::now() > deadline {
            prompt.login_finished(false);
            anyhow::bail!("the code expired before the login was approved; run the login again");
        }
    }
}
