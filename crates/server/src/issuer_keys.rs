//! The issuer's keys when the store keeps them (no `[issuer] key_file`): one set for every
//! broker sharing the store, sealed like every other secret, and rotated without breaking a
//! token. A rotation adds a key that every broker publishes at once and signs with only
//! from `sign_from` on (so relying parties have fetched it before they see a token it
//! signed); the keys it replaces stay published until the last token they signed expires.

use crate::shared::Shared;
use credkeeper_core::Timestamp;
use credkeeper_issuer::{Algorithm, IssuerError, KeyPem, LocalIssuer, Settings};
use credkeeper_store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

const KIND: &str = "issuer-key";

/// Shown in errors about a key that came from the store.
const ORIGIN: &str = "(the issuer key in the store)";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Issuer(#[from] IssuerError),
    #[error("the issuer's keys vanished from the store")]
    Vanished,
    #[error("the issuer's keys in the store are not readable: {0}")]
    Malformed(String),
}

/// What the store keeps under (`issuer-key`, algorithm).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct KeySet {
    keys: Vec<StoredKey>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredKey {
    pem: String,
    kid: String,
    /// Unix seconds from which it signs.
    sign_from: i64,
    /// Unix seconds after which it is no longer published; `None` while it is in use.
    retire_at: Option<i64>,
}

/// An earlier version kept the bare PEM of one key.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stored {
    Set(KeySet),
    Pem(String),
}

fn id(algorithm: Algorithm) -> String {
    format!("{algorithm:?}").to_lowercase()
}

fn forever() -> Timestamp {
    Timestamp::now().plus_secs(100 * 365 * 86_400)
}

fn load(shared: &Shared, settings: &Settings) -> Result<Option<KeySet>, KeyError> {
    let Some((stored, _)) = shared.get::<serde_json::Value>(KIND, &id(settings.algorithm))? else {
        return Ok(None);
    };
    Ok(Some(match serde_json::from_value(stored) {
        Ok(Stored::Set(set)) => set,
        Ok(Stored::Pem(pem)) => KeySet {
            keys: vec![first_key(pem, settings)?],
        },
        Err(e) => return Err(KeyError::Malformed(e.to_string())),
    }))
}

fn first_key(pem: String, settings: &Settings) -> Result<StoredKey, KeyError> {
    let kid = match &settings.key_id {
        Some(kid) => kid.clone(),
        None => credkeeper_issuer::key_id_of(&pem, settings.algorithm, Path::new(ORIGIN))?,
    };
    Ok(StoredKey {
        pem,
        kid,
        sign_from: 0,
        retire_at: None,
    })
}

/// The issuer with the store's keys; the first broker to start makes them (or takes over
/// the `issuer-<alg>.pem` an earlier version generated in the state directory).
pub fn open(store: &Arc<dyn Store>, settings: &Settings) -> Result<LocalIssuer, KeyError> {
    let shared = Shared::new(store.clone());
    if load(&shared, settings)?.is_none() {
        let pem = match std::fs::symlink_metadata(&settings.key_file) {
            Ok(_) => credkeeper_sink::perm::read_private(&settings.key_file, "issuer key file")
                .map_err(IssuerError::from)?,
            Err(_) => credkeeper_issuer::generate_pem(settings.algorithm)
                .map_err(|e| KeyError::Malformed(e.to_string()))?,
        };
        let set = KeySet {
            keys: vec![first_key(pem, settings)?],
        };
        // Brokers starting together may each make one: the first kept is everyone's.
        shared.put_new(KIND, &id(settings.algorithm), &set, forever())?;
    }
    let set = load(&shared, settings)?.ok_or(KeyError::Vanished)?;
    let (signing, _) = chosen(&set, Timestamp::now());
    let issuer = LocalIssuer::from_pem(settings, &signing.pem, Path::new(ORIGIN))?;
    apply(&issuer, &set, Timestamp::now())?;
    Ok(issuer)
}

/// The key to sign with at `now` (the newest whose time has come) and those to publish.
fn chosen(set: &KeySet, now: Timestamp) -> (&StoredKey, Vec<&StoredKey>) {
    let signing = set
        .keys
        .iter()
        .filter(|k| k.sign_from <= now.unix())
        .max_by_key(|k| k.sign_from)
        .or_else(|| set.keys.iter().min_by_key(|k| k.sign_from))
        .expect("a key set has a key");
    let published = set
        .keys
        .iter()
        .filter(|k| k.kid != signing.kid && k.retire_at.is_none_or(|at| at > now.unix()))
        .collect();
    (signing, published)
}

fn apply(issuer: &LocalIssuer, set: &KeySet, now: Timestamp) -> Result<(), KeyError> {
    let (signing, published) = chosen(set, now);
    fn pem(k: &StoredKey) -> KeyPem<'_> {
        KeyPem {
            pem: &k.pem,
            kid: &k.kid,
        }
    }
    let also: Vec<KeyPem> = published.iter().map(|k| pem(k)).collect();
    let current: Vec<String> = issuer
        .jwks()
        .keys
        .iter()
        .filter_map(|k| k.common.key_id.clone())
        .collect();
    let wanted: Vec<String> = std::iter::once(&signing.kid)
        .chain(published.iter().map(|k| &k.kid))
        .cloned()
        .collect();
    if current != wanted {
        issuer.use_keys(pem(signing), &also, Path::new(ORIGIN))?;
        tracing::info!(
            signing = signing.kid,
            published = ?wanted,
            "issuer keys in use changed"
        );
    }
    Ok(())
}

/// Follow the store's keys (a rotation made by any broker or `store rotate-issuer-key`):
/// run by every broker on each keeper pass.
pub fn follow(
    store: &Arc<dyn Store>,
    settings: &Settings,
    issuer: &LocalIssuer,
) -> Result<(), KeyError> {
    let set = load(&Shared::new(store.clone()), settings)?.ok_or(KeyError::Vanished)?;
    apply(issuer, &set, Timestamp::now())
}

/// Add a new key that signs from `lead_secs` on; the keys signing until then stay
/// published until the longest token they may sign has expired. Returns the new `kid` and
/// when it starts signing.
pub fn rotate(
    store: &Arc<dyn Store>,
    settings: &Settings,
    lead_secs: i64,
) -> Result<(String, Timestamp), KeyError> {
    let shared = Shared::new(store.clone());
    let mut set = load(&shared, settings)?.unwrap_or_default();
    let now = Timestamp::now();
    let pem = credkeeper_issuer::generate_pem(settings.algorithm)
        .map_err(|e| KeyError::Malformed(e.to_string()))?;
    let kid = credkeeper_issuer::key_id_of(&pem, settings.algorithm, Path::new(ORIGIN))?;
    let sign_from = now.plus_secs(lead_secs.max(0));
    // A key's last token is signed just before the next key takes over.
    let retire_at = sign_from.plus_secs(settings.lifetime + 60).unix();
    for key in &mut set.keys {
        if key.retire_at.is_none() {
            key.retire_at = Some(retire_at);
        }
    }
    set.keys
        .retain(|k| k.retire_at.is_none_or(|at| at > now.unix()));
    set.keys.push(StoredKey {
        pem,
        kid: kid.clone(),
        sign_from: sign_from.unix(),
        retire_at: None,
    });
    shared.put(KIND, &id(settings.algorithm), &set, forever())?;
    Ok((kid, sign_from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str, sign_from: i64, retire_at: Option<i64>) -> StoredKey {
        StoredKey {
            pem: String::new(),
            kid: kid.into(),
            sign_from,
            retire_at,
        }
    }

    fn at(set: &KeySet, t: i64) -> (String, Vec<String>) {
        let (signing, published) = chosen(set, Timestamp::from_unix(t));
        (
            signing.kid.clone(),
            published.iter().map(|k| k.kid.clone()).collect(),
        )
    }

    #[test]
    fn a_new_key_is_published_first_signs_at_its_time_and_the_old_one_retires_later() {
        let set = KeySet {
            keys: vec![key("old", 0, Some(2000)), key("new", 1000, None)],
        };
        assert_eq!(at(&set, 500), ("old".into(), vec!["new".into()]));
        assert_eq!(at(&set, 1000), ("new".into(), vec!["old".into()]));
        assert_eq!(at(&set, 1999), ("new".into(), vec!["old".into()]));
        assert_eq!(at(&set, 2000), ("new".into(), vec![]));
    }
}
