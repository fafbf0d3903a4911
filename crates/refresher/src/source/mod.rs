//! Where a new token comes from, behind one trait.
//!
//! Every command that needs a token it cannot reuse asks a [`TokenSource`] with a
//! [`TokenAsk`]: `credkeeper get`, a task's run and its renewals, whatever the source is —
//! a credkeeper broker ([`BrokerSource`]), an issuer with the stored refresh token or the
//! client's credentials ([`IssuerSource`]), or a source of the caller's own (the Vault-API
//! server, rucio-task-manager's routes). The caller then hands the [`Fresh`] token to a sink.
//!
//! Here too: a Vault-API server as htgettoken asks it ([`vault::VaultSource`]), a robot's
//! login at a broker ([`robot::RobotLogin`]), and the robot's keytab as the Kerberos
//! (Negotiate) login of both ([`KeytabNegotiator`]).

mod negotiate;
pub mod robot;
pub mod vault;

pub use negotiate::KeytabNegotiator;

use crate::{Issuer, LOCAL_IDENTITY, Obtained, Origin, Prompt, RefreshError};
use credkeeper_core::{Requirements, Secret, Timestamp, TokenAsk};
use credkeeper_oidc::broker::{BrokerAsk, BrokerClient};
use credkeeper_oidc::{DeviceAuthorization, OidcError, TokenRequest};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A token a source has just given.
#[derive(Debug)]
pub struct Fresh {
    pub token: Secret,
    pub origin: Origin,
    /// When it expires, when the source or the token says so.
    pub expires: Option<Timestamp>,
}

impl Fresh {
    /// When it expires; a token that does not say is taken to last `assumed_secs`, so that
    /// it is renewed early rather than held past its end.
    pub fn expires_or(&self, assumed_secs: i64) -> Timestamp {
        self.expires
            .unwrap_or_else(|| Timestamp::now().plus_secs(assumed_secs))
    }
}

/// Why a source gave no token. Messages never contain a token or a secret.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Oidc(#[from] OidcError),
    #[error(transparent)]
    Refresh(#[from] RefreshError),
    #[error(
        "provider `{provider}` names a broker's provider, but tokens come from the issuer {issuer} (no broker is given: --server)"
    )]
    ProviderWithoutBroker { provider: String, issuer: String },
    #[error(transparent)]
    Vault(#[from] vault::VaultError),
    /// A source outside this crate (a task's own routes).
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl SourceError {
    /// A source's own error, kept whole.
    pub fn other(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> SourceError {
        SourceError::Other(e.into())
    }
}

pub type SourceFuture<'a> = Pin<Box<dyn Future<Output = Result<Fresh, SourceError>> + Send + 'a>>;

/// Where new tokens come from.
pub trait TokenSource: Send + Sync {
    /// A new token for `ask`; its `None` fields take the source's defaults.
    fn token<'a>(&'a self, ask: &'a TokenAsk) -> SourceFuture<'a>;
}

/// A credkeeper broker, asked as a robot.
pub struct BrokerSource(pub BrokerClient);

impl TokenSource for BrokerSource {
    fn token<'a>(&'a self, ask: &'a TokenAsk) -> SourceFuture<'a> {
        Box::pin(async move {
            let given = self
                .0
                .token(&BrokerAsk {
                    provider: ask.provider.clone(),
                    scopes: ask.scope_text().map(str::to_string),
                    audience: ask.audience.clone(),
                    minsecs: ask.min_secs,
                })
                .await?;
            Ok(Fresh {
                token: given.access_token,
                origin: Origin::Broker,
                expires: Some(Timestamp::now().plus_secs(given.expires_in)),
            })
        })
    }
}

/// An issuer, through the [`Refresher`](crate::Refresher): token exchange when a subject token is given,
/// else the stored refresh token, else client credentials, else a device login when the
/// prompt has someone to answer it.
pub struct IssuerSource {
    pub issuer: Issuer,
    /// The scopes and audience for an ask that names none.
    pub defaults: TokenAsk,
    pub subject_token: Option<Secret>,
    pub prompt: Arc<dyn Prompt + Send>,
}

impl IssuerSource {
    /// A source for runs nobody watches: it never starts a login.
    pub fn unattended(issuer: Issuer, defaults: TokenAsk) -> IssuerSource {
        IssuerSource {
            issuer,
            defaults,
            subject_token: None,
            prompt: Arc::new(Unattended),
        }
    }

    /// What a token from this source for `ask` must meet: the issuer itself, and the asked
    /// (else default) audience and scopes.
    pub fn requirements(&self, ask: &TokenAsk) -> Requirements {
        let scopes = ask.scopes.as_ref().or(self.defaults.scopes.as_ref());
        Requirements {
            min_secs: ask.min_secs,
            issuer: Some(self.issuer.client.metadata().issuer.clone()),
            audience: ask
                .audience
                .clone()
                .or_else(|| self.defaults.audience.clone()),
            scopes: scopes.map(|s| s.set().clone()).unwrap_or_default(),
        }
    }
}

impl TokenSource for IssuerSource {
    fn token<'a>(&'a self, ask: &'a TokenAsk) -> SourceFuture<'a> {
        Box::pin(async move {
            if let Some(provider) = &ask.provider {
                return Err(SourceError::ProviderWithoutBroker {
                    provider: provider.clone(),
                    issuer: self.issuer.client.metadata().issuer.clone(),
                });
            }
            let want = self.requirements(ask);
            let request = TokenRequest {
                scopes: ask
                    .scope_text()
                    .or(self.defaults.scope_text())
                    .map(str::to_string),
                audience: want.audience.clone(),
            };
            let Obtained {
                token,
                origin,
                remaining,
            } = self
                .issuer
                .refresher(LOCAL_IDENTITY)
                .obtain(&want, &request, self.subject_token.as_ref(), &*self.prompt)
                .await?;
            Ok(Fresh {
                token,
                origin,
                expires: remaining.map(|r| Timestamp::now().plus_secs(r)),
            })
        })
    }
}

/// The prompt of a process nobody watches (a scheduler, a daemon): never interactive.
pub struct Unattended;

impl Prompt for Unattended {
    fn interactive(&self) -> bool {
        false
    }
    fn device_code(&self, _: &DeviceAuthorization) {}
    fn browser_url(&self, _: &str) {}
    fn login_finished(&self, _: bool) {}
}
