//! An issuer's signing keys (its JWKS), fetched through discovery and cached.
//!
//! The cache lives in memory and, when given a directory, on disk for an hour, so
//! repeated `token verify` runs do not refetch. An unknown key id triggers one refetch
//! (the issuer may have rotated its keys) before the token is refused.

use crate::discovery::{UrlPolicy, discover_cached};
use crate::{DiskCache, Http, OidcError};
use credkeeper_core::verify::{Expectations, Verified, VerifyError, verify};
use credkeeper_core::{Jwt, Timestamp};
use jsonwebtoken::jwk::JwkSet;
use std::collections::HashMap;
use std::sync::Mutex;

const TTL_SECS: i64 = 3600;

#[derive(Clone)]
struct Entry {
    fetched: i64,
    keys: JwkSet,
}

/// Why a token could not be verified: the issuer could not be asked, or the answer
/// says the token is not to be trusted.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(transparent)]
    Issuer(#[from] OidcError),
    #[error(transparent)]
    Token(#[from] VerifyError),
}

pub struct KeyCache {
    http: Http,
    policy: UrlPolicy,
    disk: DiskCache,
    memory: Mutex<HashMap<String, Entry>>,
}

impl KeyCache {
    pub fn new(http: Http, policy: UrlPolicy, disk: DiskCache) -> KeyCache {
        KeyCache {
            http,
            policy,
            disk,
            memory: Mutex::new(HashMap::new()),
        }
    }

    /// Verify `jwt` as a token of `issuer`: keys from the issuer's discovery document,
    /// then every check in `expect` (whose `issuer` is set to `issuer`).
    pub async fn verify(
        &self,
        jwt: &Jwt,
        issuer: &str,
        expect: &Expectations,
    ) -> Result<Verified, TrustError> {
        // Refuse `none`/HS* before any network call: no key could make them acceptable.
        credkeeper_core::verify::accepted_algorithm(jwt)?;
        credkeeper_core::verify::check_issuer(jwt, issuer)?;
        let expect = Expectations {
            issuer: Some(issuer.to_string()),
            ..expect.clone()
        };
        let now = Timestamp::now();
        if let Some(keys) = self.cached(issuer, now) {
            match verify(jwt, &keys, &expect, now) {
                Err(VerifyError::UnknownKey(_)) => {}
                other => return Ok(other?),
            }
        }
        let keys = self.fetch(issuer).await?;
        match verify(jwt, &keys, &expect, now) {
            Err(VerifyError::UnknownKey(kid)) => Err(OidcError::KeyNotFound(kid).into()),
            other => Ok(other?),
        }
    }

    fn cached(&self, issuer: &str, now: Timestamp) -> Option<JwkSet> {
        let memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = memory
            .get(issuer)
            .filter(|e| now.unix() - e.fetched < TTL_SECS)
        {
            return Some(e.keys.clone());
        }
        drop(memory);
        self.disk.get("jwks", issuer)
    }

    async fn fetch(&self, issuer: &str) -> Result<JwkSet, OidcError> {
        let meta = discover_cached(&self.http, issuer, self.policy, &self.disk).await?;
        let uri = meta.jwks_uri.ok_or(OidcError::Unsupported("JWKS URI"))?;
        let keys: JwkSet = self.http.get_json(&uri, "JWK set").await?;
        self.disk.put("jwks", issuer, &keys);
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                issuer.to_string(),
                Entry {
                    fetched: Timestamp::now().unix(),
                    keys: keys.clone(),
                },
            );
        Ok(keys)
    }
}
