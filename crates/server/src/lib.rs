//! credkeeper-server: the broker behind `credkeeper serve`.
//!
//! What it is for: holding robots' and users' long-lived credentials and handing out
//! tokens under a policy. [`policy`] decides, from the configuration alone, what a robot
//! may get; [`broker`] vends it (cache, the local issuer that signs the broker's own
//! tokens, or a provider through the stored credential) and records every outcome in the
//! [`audit`] log and the [`metrics`]; [`keeper`] keeps stored credentials fresh; [`auth`]
//! proves who a robot is ([`caller`] names it); [`http`] is the route table over the
//! [`state`] the handlers share, [`web`] the login pages, [`vault`] the Vault API,
//! [`device`] the device logins the broker runs, [`registry_token`] the registry's token
//! server; [`refusal`] is every error's code and answer; [`config`] reads and validates
//! the TOML file. The modules import downwards only: `http` and `state` at the top,
//! `policy`, `refusal`, `caller` and `config` at the bottom.
//!
//! What it is not: the command line. `credkeeper serve` parses flags and calls [`start`].

pub mod access;
pub mod audit;
pub mod auth;
pub mod broker;
pub mod caller;
pub mod config;
pub mod conn;
pub mod device;
pub mod handle;
pub mod http;
pub mod issuer_keys;
pub mod keeper;
pub mod metrics;
pub mod outcome;
pub mod policy;
pub mod refusal;
pub mod registry_token;
pub mod robots;
pub mod shared;
pub mod state;
pub mod sync;
pub mod tls;
pub mod vault;
pub mod web;

use broker::Broker;
use config::{Config, RobotAuth, RobotSection};
use credkeeper_core::Secret;
use credkeeper_oidc::UrlPolicy;
use credkeeper_store::RobotSecrets;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] credkeeper_store::StoreError),
    #[error(transparent)]
    Issuer(#[from] credkeeper_issuer::IssuerError),
    #[error(transparent)]
    IssuerKeys(#[from] issuer_keys::KeyError),
    #[error("audit log {path}: {source}")]
    Audit {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Http(#[from] credkeeper_oidc::OidcError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("Kerberos: {0}")]
    Kerberos(#[from] credkeeper_kerberos::KerberosError),
    #[error("{0}")]
    MetricsToken(credkeeper_sink::perm::PermError),
}

/// A broker bound to its address, ready to serve.
pub struct Bound {
    pub broker: Arc<Broker>,
    /// Kerberos for robots, when the broker has a keytab.
    kerberos: Option<auth::KerberosAuth>,
    /// `http` or `https`.
    pub scheme: &'static str,
    pub addr: SocketAddr,
    listener: tokio::net::TcpListener,
    /// `[server] metrics_listen`: `/metrics` alone, plain HTTP.
    metrics_listener: Option<tokio::net::TcpListener>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// Bind the listener, open the store and the issuer key, and build the broker.
/// `ca_file`: CA certificates to trust beside the system's for the broker's own
/// requests (providers, JWT issuers such as a cluster's API server).
pub async fn start(
    config: Config,
    state_dir: &Path,
    policy: UrlPolicy,
    ca_file: Option<&Path>,
) -> Result<Bound, ServeError> {
    let addr = config.server.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen { addr, source })?;
    let addr = listener.local_addr()?;
    let metrics_listener = match config.server.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Listen { addr, source })?,
        ),
        None => None,
    };
    let tls = match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let store = credkeeper_store::open(&config.store.settings(state_dir))?;
    let url = config
        .issuer
        .url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{addr}"));
    let settings = config.issuer.settings(&url, state_dir);
    let issuer = match &config.issuer.key_file {
        Some(_) => credkeeper_issuer::LocalIssuer::open(&settings)?,
        None => issuer_keys::open(&store, &settings)?,
    };
    let keys_in_store = config.issuer.key_file.is_none().then_some(settings);
    let audit_path = config
        .server
        .audit_log
        .clone()
        .unwrap_or_else(|| state_dir.join("audit.log"));
    let audit = audit::Audit::open(&audit_path).map_err(|source| ServeError::Audit {
        path: audit_path.clone(),
        source,
    })?;
    let kerberos = auth::KerberosAuth::from_config(&config)?;
    let http = credkeeper_oidc::Http::with_ca_file(ca_file, credkeeper_oidc::Roots::AlsoSystem)?;
    let mut broker = Broker::new(config, issuer, store, audit, policy, http)?;
    broker.issuer_keys = keys_in_store;
    if let Some(file) = &broker.config.server.metrics_token_file {
        let token = credkeeper_sink::perm::read_private(file, "metrics token file")
            .map_err(ServeError::MetricsToken)?;
        broker
            .metrics
            .require_token(credkeeper_core::Secret::new(token));
    }
    let broker = Arc::new(broker);
    Ok(Bound {
        broker,
        kerberos,
        scheme,
        addr,
        listener,
        metrics_listener,
        tls,
    })
}

impl Bound {
    /// Serve until `shutdown` resolves, then finish the requests in flight. The refresher
    /// loop runs beside the server.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let keeper = tokio::spawn(keeper::run(self.broker.clone(), stop_rx.clone()));
        let app = http::router(state::App::new(self.broker.clone(), self.kerberos));
        let limits = self.broker.config.server.limits();
        tracing::info!(
            "at most {} connections; {} s for a request head, {} s for a body",
            limits.max_connections,
            limits.header_timeout.as_secs(),
            limits.body_timeout.as_secs()
        );
        let metrics = self.metrics_listener.map(|listener| {
            let app = http::metrics_router(self.broker.clone());
            tokio::spawn(conn::serve(listener, app, limits, stop_rx.clone()))
        });
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let result = match self.tls {
            None => conn::serve(self.listener, app, limits, stop_rx).await,
            Some(config) => {
                let listener = tls::TlsListener::new(self.listener, config)?;
                conn::serve(listener, app, limits, stop_rx).await
            }
        };
        let _ = keeper.await;
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        result.map_err(ServeError::Io)
    }
}

/// The `serve --dev` configuration: the local issuer and one robot, `dev`, that may ask
/// for any storage or compute scope and any audience, for up to an hour.
pub fn dev_config(listen: SocketAddr) -> Config {
    let mut config = Config::default();
    config.server.listen = listen;
    config.robots.push(RobotSection {
        name: "dev".into(),
        auth: RobotAuth {
            secret: true,
            ..Default::default()
        },
        username: None,
        providers: vec![policy::LOCAL.into()],
        scopes: [
            "read:/",
            "write:/",
            "storage.stage:/",
            "compute.read",
            "compute.create",
            "compute.modify",
            "compute.cancel",
        ]
        .map(String::from)
        .to_vec(),
        audiences: vec!["*".into()],
        max_lifetime: Some(3600),
        ..Default::default()
    });
    config
}

/// Give `robot` a new secret and write it to `path` (mode 0600).
pub fn issue_robot_secret(
    store: &dyn RobotSecrets,
    robot: &str,
    path: &Path,
) -> Result<Secret, ServeError> {
    let secret = robots::new_secret(store, robot)?;
    credkeeper_sink::write_token(path, &secret)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(secret)
}
