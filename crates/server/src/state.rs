//! The state the routes share, split so that each handler takes only what it uses (axum's
//! `FromRef`): the [`Broker`] (configuration, issuer, store, audit, metrics, vending) and,
//! beside it rather than inside it, how robots authenticate and the logins in progress of
//! the web pages, the Vault API and the device flow.

use crate::auth::{Authenticators, JwtAuth, KerberosAuth};
use crate::broker::Broker;
use crate::device::DeviceLogins;
use crate::shared::Shared;
use crate::vault::VaultState;
use crate::web::WebState;
use axum::extract::FromRef;
use std::sync::Arc;

/// Cloned for every request (axum hands each handler its own copy): one reference count,
/// not one per part.
#[derive(Clone)]
pub struct App(Arc<Parts>);

pub struct Parts {
    pub broker: Arc<Broker>,
    pub auth: Arc<Authenticators>,
    pub web: Arc<WebState>,
    pub vault: Arc<VaultState>,
    pub logins: Arc<DeviceLogins>,
}

impl App {
    /// The states beside `broker`, kept in its store where fleet members must share them.
    pub fn new(broker: Arc<Broker>, kerberos: Option<KerberosAuth>) -> App {
        let jwt = JwtAuth::new(
            credkeeper_oidc::KeyCache::new(
                broker.http().clone(),
                broker.policy(),
                credkeeper_oidc::DiskCache::new(None),
            ),
            broker.issuer.url().to_string(),
        );
        let shared = || Shared::new(broker.store.clone());
        App(Arc::new(Parts {
            auth: Arc::new(Authenticators { kerberos, jwt }),
            web: Arc::new(WebState::new(shared())),
            vault: Arc::new(VaultState::new(shared())),
            logins: Arc::new(DeviceLogins::new(&broker.config.vault, shared())),
            broker,
        }))
    }
}

impl std::ops::Deref for App {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

impl FromRef<App> for Arc<Broker> {
    fn from_ref(app: &App) -> Self {
        app.broker.clone()
    }
}

impl FromRef<App> for Arc<Authenticators> {
    fn from_ref(app: &App) -> Self {
        app.auth.clone()
    }
}

impl FromRef<App> for Arc<WebState> {
    fn from_ref(app: &App) -> Self {
        app.web.clone()
    }
}

impl FromRef<App> for Arc<VaultState> {
    fn from_ref(app: &App) -> Self {
        app.vault.clone()
    }
}

impl FromRef<App> for Arc<DeviceLogins> {
    fn from_ref(app: &App) -> Self {
        app.logins.clone()
    }
}
