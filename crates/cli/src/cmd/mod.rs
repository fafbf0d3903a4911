//! One module per subcommand; each turns flags into library calls.

pub mod credmon;
pub mod get;
pub mod login;
pub mod registry;
pub mod serve;
pub mod store;
pub mod tasks;
pub mod token;

use crate::config::{Resolved, Settings};
use credkeeper_oidc::{Client, TokenRequest};
use credkeeper_store::{SqliteStore, Store, StoreSettings};
use std::sync::Arc;

/// Discover the issuer (from the cache when fresh) and build its client.
pub async fn connect(r: &Resolved, settings: &Settings) -> anyhow::Result<Client> {
    // The secret first: a file others can read is refused before anything goes out.
    let auth = r.auth()?;
    let http = settings.http()?;
    let meta = credkeeper_oidc::discover_cached(&http, &r.issuer, settings.policy, &settings.cache)
        .await?;
    Ok(Client::new(http, meta, &r.client_id, auth))
}

/// How a robot proves itself to a broker: a secret file, or a Kerberos keytab.
#[derive(Default)]
pub struct RobotLogin<'a> {
    pub robot: Option<&'a str>,
    pub secret_file: Option<&'a std::path::Path>,
    pub keytab: Option<&'a std::path::Path>,
    pub principal: Option<&'a str>,
    pub ccache: Option<&'a str>,
    pub jwt_file: Option<&'a std::path::Path>,
}

impl<'a> RobotLogin<'a> {
    pub fn of(args: &'a get::Args) -> RobotLogin<'a> {
        RobotLogin {
            robot: args.robot.as_deref(),
            secret_file: args.secret_file.as_deref(),
            keytab: args.keytab.as_deref(),
            principal: args.principal.as_deref(),
            ccache: args.ccache.as_deref(),
            jwt_file: args.jwt_file.as_deref(),
        }
    }

    /// The Kerberos credential from the keytab (checked: missing or open to others is
    /// refused before anything goes out).
    pub fn initiator(&self) -> anyhow::Result<Option<credkeeper_kerberos::Initiator>> {
        let Some(keytab) = self.keytab else {
            return Ok(None);
        };
        Ok(Some(credkeeper_kerberos::Initiator::from_keytab(
            keytab,
            self.principal,
            self.ccache,
        )?))
    }
}

/// A client of a credkeeper broker's robot API: with a robot secret when one is given
/// (refused if others can read its file), else with the Kerberos keytab.
pub fn broker_client(
    server: &str,
    login: &RobotLogin<'_>,
    settings: &Settings,
) -> anyhow::Result<credkeeper_oidc::broker::BrokerClient> {
    broker_client_with(server, login, settings.http()?, settings.policy)
}

/// [`broker_client`] with its HTTP client and URL policy given (the credential helper has
/// no settings of its own).
pub fn broker_client_with(
    server: &str,
    login: &RobotLogin<'_>,
    http: credkeeper_oidc::Http,
    policy: credkeeper_oidc::UrlPolicy,
) -> anyhow::Result<credkeeper_oidc::broker::BrokerClient> {
    use credkeeper_oidc::broker::BrokerAuth;
    let auth = match (login.robot, login.secret_file, login.jwt_file) {
        (Some(robot), Some(secret_file), _) => BrokerAuth::Secret {
            robot: robot.to_string(),
            secret: credkeeper_core::Secret::new(credkeeper_sink::perm::read_private(
                secret_file,
                "robot secret file",
            )?),
        },
        (_, Some(_), _) => anyhow::bail!("--secret-file needs --robot NAME"),
        (_, None, Some(path)) => {
            // Readable now (a clear error before anything runs), read again at each request.
            credkeeper_sink::read(path)?;
            BrokerAuth::BearerFile(path.to_path_buf())
        }
        _ => match login.initiator()? {
            Some(initiator) => {
                BrokerAuth::Negotiate(Box::new(credkeeper_refresher::source::KeytabNegotiator {
                    initiator,
                    service: "HTTP",
                }))
            }
            None => anyhow::bail!(
                "--server needs the robot's credentials: -k/--keytab FILE (or KRB5_KTNAME), --jwt-file FILE, or --robot NAME with --secret-file FILE"
            ),
        },
    };
    Ok(credkeeper_oidc::broker::BrokerClient::new(
        http, server, policy, auth,
    )?)
}

/// The issuer's client (discovered, from the cache when fresh) and the local credential
/// store: what a `Refresher` works with.
pub async fn open_issuer(
    r: &Resolved,
    settings: &Settings,
) -> anyhow::Result<credkeeper_refresher::Issuer> {
    Ok(credkeeper_refresher::Issuer {
        client: connect(r, settings).await?,
        store: open_store(settings)?,
    })
}

/// The store the settings name (created when it is a new SQLite one).
pub fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    Ok(credkeeper_store::open(&settings.store)?)
}

/// The store, when there is one: a look that only reads creates no SQLite file.
pub fn existing_store(settings: &Settings) -> anyhow::Result<Option<Arc<dyn Store>>> {
    match &settings.store {
        StoreSettings::Sqlite { dir } if !SqliteStore::exists(dir) => Ok(None),
        _ => open_store(settings).map(Some),
    }
}

pub fn token_request(r: &Resolved) -> TokenRequest {
    TokenRequest::from(&r.ask())
}

/// Where a token goes: `-o` if given (`-` for standard output), else the config file's
/// `outfile`, else the WLCG discovery file.
pub fn out(
    flag: Option<std::path::PathBuf>,
    settings: &Settings,
) -> Box<dyn credkeeper_sink::Sink> {
    use credkeeper_sink::{Stdout, TokenFile};
    match flag.or_else(|| settings.file.outfile.clone()) {
        Some(p) if p.as_os_str() == "-" => Box::new(Stdout),
        Some(p) => Box::new(TokenFile(p)),
        None => Box::new(TokenFile::discovered()),
    }
}
