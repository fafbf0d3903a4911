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

pub use credkeeper_refresher::source::robot::RobotLogin;

/// A client of a credkeeper broker's robot API, with this command's HTTP settings.
pub fn broker_client(
    server: &str,
    login: &RobotLogin<'_>,
    settings: &Settings,
) -> anyhow::Result<credkeeper_oidc::broker::BrokerClient> {
    Ok(login.broker_client(server, settings.http()?, settings.policy)?)
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
