//! Robot secrets: generated once, stored only as salted SHA-256 hashes, checked on every
//! call.
//!
//! The secrets are 256 random bits, not passwords: guessing one is hopeless with any hash,
//! so a slow password hash (argon2) would add nothing but a way to exhaust the broker's
//! memory and CPU with wrong secrets. Stored form: `$sha256$<salt>$<digest>` (base64).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use credkeeper_core::Secret;
use credkeeper_store::{RobotSecrets, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

const SCHEME: &str = "$sha256$";

fn random(n: usize) -> Result<Vec<u8>, StoreError> {
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| StoreError::Backend {
        path: "(random)".into(),
        message: "the system random generator failed".into(),
    })?;
    Ok(bytes)
}

fn digest(salt: &[u8], secret: &str) -> aws_lc_rs::digest::Digest {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(salt);
    ctx.update(secret.as_bytes());
    ctx.finish()
}

/// The stored form of `secret`.
pub fn hash(secret: &Secret) -> Result<String, StoreError> {
    let salt = random(16)?;
    Ok(format!(
        "{SCHEME}{}${}",
        URL_SAFE_NO_PAD.encode(&salt),
        URL_SAFE_NO_PAD.encode(digest(&salt, secret.expose()))
    ))
}

/// A stored form, decoded.
struct Hashed {
    salt: Vec<u8>,
    digest: Vec<u8>,
}

impl Hashed {
    fn parse(stored: &str) -> Option<Hashed> {
        let (salt, digest) = stored.strip_prefix(SCHEME)?.split_once('$')?;
        Some(Hashed {
            salt: URL_SAFE_NO_PAD.decode(salt).ok()?,
            digest: URL_SAFE_NO_PAD.decode(digest).ok()?,
        })
    }

    /// In constant time.
    fn matches(&self, secret: &Secret) -> bool {
        let got = digest(&self.salt, secret.expose());
        aws_lc_rs::constant_time::verify_slices_are_equal(&self.digest, got.as_ref()).is_ok()
    }
}

/// Whether `secret` matches the stored form `stored`, in constant time.
pub fn matches(stored: &str, secret: &Secret) -> bool {
    Hashed::parse(stored).is_some_and(|h| h.matches(secret))
}

/// Create a new random secret for `robot`, store its hash, and return the secret (the
/// only time it exists in clear).
pub fn new_secret(store: &dyn RobotSecrets, robot: &str) -> Result<Secret, StoreError> {
    let secret = Secret::new(URL_SAFE_NO_PAD.encode(random(32)?));
    store.set_robot_secret_hash(robot, &hash(&secret)?)?;
    Ok(secret)
}

/// Stored hashes, read and decoded once per robot: the store is not asked on every
/// request, and requests only read the map (shared), so they do not wait for each other.
#[derive(Clone, Default)]
pub struct SecretCheck {
    /// Only stored forms that decode: one that does not (nothing matches it) is read again.
    hashes: Arc<RwLock<HashMap<String, Arc<Hashed>>>>,
}

impl SecretCheck {
    /// Whether `secret` is `robot`'s secret.
    pub fn verify(
        &self,
        store: &dyn RobotSecrets,
        robot: &str,
        secret: &Secret,
    ) -> Result<bool, StoreError> {
        let known = self
            .hashes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(robot)
            .cloned();
        if known.is_some_and(|h| h.matches(secret)) {
            return Ok(true);
        }
        // Not cached, or the secret was replaced since: read the store again.
        let Some(stored) = store.robot_secret_hash(robot)? else {
            return Ok(false);
        };
        let Some(hashed) = Hashed::parse(&stored) else {
            return Ok(false);
        };
        let ok = hashed.matches(secret);
        self.hashes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(robot.to_string(), Arc::new(hashed));
        Ok(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_secret_matches_its_salted_hash() {
        let secret = Secret::new("a-robot-secret");
        let stored = hash(&secret).unwrap();
        assert!(stored.starts_with("$sha256$"));
        assert!(!stored.contains("a-robot-secret"));
        assert!(matches(&stored, &secret));
        assert!(!matches(&stored, &Secret::new("a-robot-secreT")));
        assert_ne!(hash(&secret).unwrap(), stored, "salted");
        assert!(!matches("$argon2id$v=19$garbage", &secret));
        assert!(!matches("$sha256$not-base64!$x", &secret));
    }
}
