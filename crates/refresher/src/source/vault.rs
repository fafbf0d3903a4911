//! A Vault-API server (a credkeeper broker, or a Vault with htvault-config) as a token
//! source, asked the way htgettoken and igwn-robot-get ask it.
//!
//! The order is theirs: the saved Vault token while it still has life, else a Kerberos
//! login (the robot's keytab, else the tickets already in the credential cache), then the
//! bearer-token read. The Vault token is saved (atomically, 0600) only once it has worked.

use super::negotiate::KeytabNegotiator;
use super::robot::RobotLogin;
use super::{Fresh, SourceError, SourceFuture, TokenSource};
use crate::Origin;
use credkeeper_core::{Secret, TokenAsk};
use credkeeper_kerberos::{Initiator, KerberosError};
use credkeeper_oidc::OidcError;
use credkeeper_oidc::vault::{SecretPath, VaultClient};
use credkeeper_sink::SinkError;
use std::path::PathBuf;

/// Where to ask and what to read there: htgettoken's options, defaults applied.
pub struct VaultPlan {
    /// htgettoken's `host[:port]` form (see [`credkeeper_oidc::vault::server_url`]).
    pub server: String,
    pub issuer: String,
    pub role: Option<String>,
    pub credkey: Option<String>,
    /// Where the Vault token is kept between runs.
    pub token_file: PathBuf,
    /// The saved Vault token is used only with this many seconds left (0: whatever it has).
    pub min_ttl: i64,
    /// The longest life to ask for a new Vault token.
    pub ttl: i64,
    /// igwn-robot-get's conventions: a principal without a realm is `@LIGO.ORG`, and the
    /// role is the credkey's first component.
    pub igwn: bool,
}

/// Why the Vault-API server gave no token. Messages never contain a token.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(transparent)]
    Server(#[from] OidcError),
    #[error(transparent)]
    Keytab(KerberosError),
    #[error("{0}; give the robot's keytab with -k/--keytab (or KRB5_KTNAME), or kinit first")]
    NoCredentials(KerberosError),
    #[error("saving the Vault token: {0}")]
    Save(#[from] SinkError),
}

/// A Vault-API server, as htgettoken asks it. Of the robot's login only the Kerberos part
/// is used: the keytab (with its principal and ccache), else the credential cache.
pub struct VaultSource<'a> {
    client: VaultClient,
    plan: VaultPlan,
    login: RobotLogin<'a>,
}

impl<'a> VaultSource<'a> {
    pub fn new(
        http: credkeeper_oidc::Http,
        plan: VaultPlan,
        login: RobotLogin<'a>,
    ) -> VaultSource<'a> {
        VaultSource {
            client: VaultClient::new(http, &plan.server),
            plan,
            login,
        }
    }

    /// The principal as igwn-robot-get reads it to name the credkey: LIGO.ORG when it names
    /// no realm. (The keytab login itself uses the principal as given.)
    fn principal(&self) -> Option<String> {
        self.login
            .principal
            .map(|p| match (self.plan.igwn, p.contains('@')) {
                (true, false) => format!("{p}@LIGO.ORG"),
                _ => p.to_string(),
            })
    }

    fn role(&self, credkey: &str) -> String {
        match (&self.plan.role, self.plan.igwn) {
            (Some(r), _) => r.clone(),
            (None, true) => credkey.split('/').next().unwrap_or(credkey).to_string(),
            (None, false) => "default".to_string(),
        }
    }

    fn secret_path<'p>(
        &'p self,
        ask: &'p TokenAsk,
        credkey: &'p str,
        role: &'p str,
    ) -> SecretPath<'p> {
        SecretPath {
            issuer: &self.plan.issuer,
            credkey,
            role,
            minsecs: ask.min_secs,
            scopes: ask.scope_text(),
            audience: ask.audience.as_deref(),
        }
    }

    /// The saved Vault token's read, when there is a saved token with enough life that the
    /// server still accepts; `None` sends the caller to a Kerberos login.
    async fn with_saved(&self, ask: &TokenAsk, credkey: &str) -> Option<Secret> {
        let saved = credkeeper_sink::read(&self.plan.token_file).ok()?;
        let alive = self.plan.min_ttl <= 0
            || match self.client.lookup_self(&saved).await {
                Ok(ttl) => ttl >= self.plan.min_ttl,
                Err(e) => {
                    tracing::debug!("saved Vault token: {e}");
                    false
                }
            };
        if !alive {
            return None;
        }
        let role = self.role(credkey);
        match self
            .client
            .read_token(&saved, &self.secret_path(ask, credkey, &role))
            .await
        {
            Ok(token) => Some(token),
            Err(e) => {
                tracing::info!(
                    "the saved Vault token was not accepted ({e}); logging in with Kerberos"
                );
                None
            }
        }
    }

    async fn read(&self, ask: &TokenAsk) -> Result<Secret, VaultError> {
        let credkey = self.plan.credkey.clone().or_else(|| {
            self.principal()
                .map(|p| credkeeper_kerberos::without_realm(&p).to_string())
        });
        if let Some(key) = &credkey
            && let Some(token) = self.with_saved(ask, key).await
        {
            return Ok(token);
        }
        let initiator = match self.login.initiator().map_err(VaultError::Keytab)? {
            Some(initiator) => initiator,
            None => Initiator::from_cache(self.login.ccache).map_err(VaultError::NoCredentials)?,
        };
        let credkey = credkey.unwrap_or_else(|| {
            credkeeper_kerberos::without_realm(initiator.principal()).to_string()
        });
        let role = self.role(&credkey);
        let negotiator = KeytabNegotiator {
            initiator,
            service: "host",
        };
        let mut vault = self
            .client
            .kerberos_login(&negotiator, &self.plan.issuer, &role)
            .await?;
        if vault.lease_secs > self.plan.ttl {
            vault = self
                .client
                .token_create(&vault.token, self.plan.ttl)
                .await?;
        }
        let token = self
            .client
            .read_token(&vault.token, &self.secret_path(ask, &credkey, &role))
            .await?;
        // Saved only once it has worked, as htgettoken does.
        credkeeper_sink::write_token(&self.plan.token_file, &vault.token)?;
        Ok(token)
    }
}

impl TokenSource for VaultSource<'_> {
    fn token<'a>(&'a self, ask: &'a TokenAsk) -> SourceFuture<'a> {
        Box::pin(async move {
            let token = self.read(ask).await.map_err(SourceError::Vault)?;
            Ok(Fresh {
                token,
                origin: Origin::VaultServer,
                expires: None,
            })
        })
    }
}
