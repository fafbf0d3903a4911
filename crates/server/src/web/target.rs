//! What a web session can log in to: the broker's configured providers (credentials go
//! to the store, under the session's identity), or the logins a CredD key file asks for
//! (credentials go to the HTCondor credential directory, as the credmon's web app writes
//! them).

use super::WebError;
use crate::broker::Broker;
use crate::caller::Identity;
use crate::config::ProviderSection;
use credkeeper_core::Timestamp;
use credkeeper_oidc::{Client, ClientAuth, ProviderMetadata, TokenRequest, TokenResponse};
use credkeeper_sink::condor::{KeyAd, shape_use, write_cred_file};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;

pub enum Target<'a> {
    Provider(&'a ProviderSection),
    KeyAd { ad: Box<KeyAd>, cred_dir: PathBuf },
}

/// A target's state as the page shows it.
pub struct Shown {
    pub status: String,
    pub stored: bool,
}

/// Everything a session may log in to.
pub fn targets<'a>(broker: &'a Broker, identity: &Identity) -> Result<Vec<Target<'a>>, WebError> {
    match identity {
        Identity::CredD { key, .. } => {
            let cred_dir = broker.credd_dir().ok_or(WebError::NoCredentialDirectory)?;
            let ads = super::read_key_file(&cred_dir, key)?;
            Ok(ads
                .into_iter()
                .map(|ad| Target::KeyAd {
                    ad: Box::new(ad),
                    cred_dir: cred_dir.clone(),
                })
                .collect())
        }
        _ => Ok(broker
            .config
            .providers
            .iter()
            .filter(|p| match identity {
                Identity::Robot(r) => broker
                    .config
                    .robot(r)
                    .is_some_and(|r| r.providers.contains(&p.name)),
                _ => true,
            })
            .map(Target::Provider)
            .collect()),
    }
}

impl Target<'_> {
    pub fn name(&self) -> String {
        match self {
            Target::Provider(p) => p.name.clone(),
            Target::KeyAd { ad, .. } => ad.token_name(),
        }
    }

    pub fn revocable(&self) -> bool {
        matches!(self, Target::Provider(_))
    }

    /// The client to log in with: a configured provider's (through discovery), or one made
    /// of the key file's endpoints and client.
    pub async fn client(&self, broker: &Broker) -> Result<Arc<Client>, WebError> {
        match self {
            Target::Provider(p) => Ok(broker.client(p).await?),
            Target::KeyAd { ad, .. } => {
                for (what, url) in [
                    ("authorization URL", &ad.authorization_url),
                    ("token URL", &ad.token_url),
                ] {
                    broker.policy().check(what, url)?;
                }
                let meta = ProviderMetadata {
                    issuer: String::new(),
                    token_endpoint: ad.token_url.clone(),
                    authorization_endpoint: Some(ad.authorization_url.clone()),
                    device_authorization_endpoint: None,
                    jwks_uri: None,
                    revocation_endpoint: None,
                    grant_types_supported: None,
                };
                // As upstream's web app: the secret goes in the form body.
                let auth = match ad.client_secret.is_empty() {
                    true => ClientAuth::None,
                    false => ClientAuth::Post(ad.client_secret.clone()),
                };
                Ok(Arc::new(Client::new(
                    broker.http().clone(),
                    meta,
                    &ad.client_id,
                    auth,
                )))
            }
        }
    }

    /// What the authorization request asks for.
    pub fn request(&self) -> TokenRequest {
        match self {
            Target::Provider(p) => credkeeper_refresher::login_request(&TokenRequest {
                scopes: p.scopes.clone(),
                audience: p.audience.clone(),
            }),
            // Exactly what the CredD asked for, as upstream sends it.
            Target::KeyAd { ad, .. } => TokenRequest {
                scopes: Some(ad.scopes.join(" ")).filter(|s| !s.is_empty()),
                audience: Some(ad.audience.clone()).filter(|a| !a.is_empty()),
            },
        }
    }

    pub fn redirect_uri(&self, broker: &Broker) -> String {
        match self {
            Target::Provider(_) => format!("{}/callback", broker.issuer.url()),
            Target::KeyAd { ad, .. } => ad.return_url.clone(),
        }
    }

    pub fn extra_params(&self) -> Vec<(String, String)> {
        match self {
            Target::Provider(p) => p.auth_params.clone().into_iter().collect(),
            Target::KeyAd { .. } => Vec::new(),
        }
    }

    pub async fn shown(&self, broker: &Broker, identity: &Identity) -> Shown {
        let now = Timestamp::now();
        match self {
            Target::Provider(p) => {
                let stored = match broker.client(p).await {
                    Ok(client) => {
                        let key =
                            credkeeper_refresher::credential_key(&client, &identity.store_name());
                        broker.store.get(&key).ok().flatten()
                    }
                    Err(_) => None,
                };
                let status = match &stored {
                    None => "no credential stored".to_string(),
                    Some(s) => match (&s.health.needs_login, &s.access) {
                        (Some(reason), _) => format!("needs a new login: {reason}"),
                        (None, Some(a)) if a.expires > now => format!(
                            "stored; current token valid until {} ({} s)",
                            a.expires,
                            a.expires.seconds_after(now)
                        ),
                        _ => format!("stored (refresh token saved {})", s.updated),
                    },
                };
                Shown {
                    status,
                    stored: stored.is_some(),
                }
            }
            Target::KeyAd { ad, cred_dir } => {
                let dir = cred_dir.join(&ad.local_user);
                let name = ad.token_name();
                let stored = dir.join(format!("{name}.top")).exists();
                let expires = std::fs::read(dir.join(format!("{name}.use")))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                    .and_then(|v| v.get("expires_at").and_then(Value::as_i64));
                let status = match (stored, expires) {
                    (false, _) => "not logged in yet".to_string(),
                    (true, Some(e)) => format!(
                        "stored; current token valid until {}",
                        Timestamp::from_unix(e)
                    ),
                    (true, None) => "stored".to_string(),
                };
                Shown { status, stored }
            }
        }
    }

    /// Keep what a successful login returned.
    pub fn keep(
        &self,
        broker: &Broker,
        client: &Client,
        identity: &Identity,
        response: TokenResponse,
    ) -> Result<(), WebError> {
        let rt = response
            .refresh_token
            .clone()
            .ok_or(WebError::NoRefreshToken)?;
        match self {
            Target::Provider(p) => {
                credkeeper_refresher::keep_login(
                    broker.store.as_ref(),
                    client,
                    &identity.store_name(),
                    &response,
                    true,
                )?;
                tracing::info!(
                    "web login: {} stored a credential at {}",
                    identity.store_name(),
                    p.name
                );
            }
            Target::KeyAd { ad, cred_dir } => {
                let user_dir = cred_dir.join(&ad.local_user);
                if !user_dir.exists() {
                    std::fs::create_dir(&user_dir).map_err(|source| WebError::CreateDir {
                        path: user_dir.clone(),
                        source,
                    })?;
                }
                let mut fields = serde_json::Map::new();
                fields.insert("access_token".into(), json!(response.access_token.expose()));
                if let Some(t) = &response.token_type {
                    fields.insert("token_type".into(), json!(t));
                }
                if let Some(e) = response.expires_in {
                    fields.insert("expires_in".into(), json!(e));
                }
                if let Some(s) = &response.scope {
                    fields.insert("scope".into(), json!(s));
                }
                let (used, _, _) = shape_use(fields, Timestamp::now().unix());
                let mut top = serde_json::Map::new();
                top.insert("refresh_token".into(), json!(rt.expose()));
                if !ad.scopes.is_empty() {
                    top.insert("scopes".into(), json!(ad.scopes.join(",")));
                }
                if !ad.audience.is_empty() {
                    top.insert("audience".into(), json!(ad.audience));
                }
                let mut meta = serde_json::Map::new();
                meta.insert("client_id".into(), json!(ad.client_id));
                if broker.credd_secret_in_meta() {
                    meta.insert("client_secret".into(), json!(ad.client_secret.expose()));
                }
                meta.insert("token_url".into(), json!(ad.token_url));
                meta.insert("use_refresh_token".into(), json!(true));
                let name = ad.token_name();
                // `.use`, `.top`, `.meta`, in upstream's order.
                for (ext, value) in [("use", used), ("top", top), ("meta", meta)] {
                    write_cred_file(
                        &user_dir.join(format!("{name}.{ext}")),
                        &Value::Object(value).to_string(),
                    )?;
                }
                tracing::info!("web login: stored {}/{name} for the CredD", ad.local_user);
            }
        }
        Ok(())
    }
}
