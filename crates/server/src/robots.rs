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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

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

/// How long a robot's stored hash is trusted before the store is read again: a secret
/// replaced with `credkeeper robot-secret` (on this host, or on any host sharing the
/// PostgreSQL store) is refused by a running broker at most this long afterwards, unless
/// the broker cannot reach the store then (the hash read last stays in force until it can).
pub const RECHECK: Duration = Duration::from_secs(1);

/// Stored hashes, read and decoded once per robot and read again every [`RECHECK`]; and
/// a keyed fingerprint of the secret that last matched each, so that the same secret
/// presented again is recognised without a SHA-256 (SipHash-1-3, 128 bits, under a key
/// drawn at start that never leaves this process: without the key a fingerprint cannot be
/// matched, and the secret itself is never kept). Requests only read the map (shared),
/// so they do not wait for each other.
#[derive(Clone)]
pub struct SecretCheck {
    known: Arc<RwLock<HashMap<String, Arc<Known>>>>,
    /// Drawn at the first check: a random generator that fails then fails that request.
    key: Arc<OnceLock<[u8; 16]>>,
    started: Instant,
}

impl Default for SecretCheck {
    fn default() -> SecretCheck {
        SecretCheck {
            known: Arc::default(),
            key: Arc::default(),
            started: Instant::now(),
        }
    }
}

/// One robot's stored form as last read.
struct Known {
    stored: String,
    /// `None` when the stored form does not decode: nothing matches it.
    hashed: Option<Hashed>,
    /// The fingerprint of the secret that matched `hashed`, once one has.
    matched: OnceLock<[u8; 16]>,
    /// When the store was read, in milliseconds since [`SecretCheck::started`].
    read_at: AtomicU64,
}

impl Known {
    fn matches(&self, key: &[u8; 16], secret: &Secret) -> bool {
        let print = fingerprint(key, secret);
        if let Some(m) = self.matched.get()
            && aws_lc_rs::constant_time::verify_slices_are_equal(m, &print).is_ok()
        {
            return true;
        }
        let ok = self.hashed.as_ref().is_some_and(|h| h.matches(secret));
        if ok {
            let _ = self.matched.set(print);
        }
        ok
    }
}

fn fingerprint(key: &[u8; 16], secret: &Secret) -> [u8; 16] {
    use siphasher::sip128::Hasher128;
    use std::hash::Hasher;
    let mut h = siphasher::sip128::SipHasher13::new_with_key(key);
    h.write(secret.expose().as_bytes());
    h.finish128().as_bytes()
}

impl SecretCheck {
    fn key(&self) -> Result<&[u8; 16], StoreError> {
        if let Some(k) = self.key.get() {
            return Ok(k);
        }
        let mut key = [0u8; 16];
        key.copy_from_slice(&random(16)?);
        Ok(self.key.get_or_init(|| key))
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Whether `secret` is `robot`'s secret, as the store said at most [`RECHECK`] ago.
    pub fn verify(
        &self,
        store: &dyn RobotSecrets,
        robot: &str,
        secret: &Secret,
    ) -> Result<bool, StoreError> {
        let key = self.key()?;
        let now = self.now_ms();
        let cached = self
            .known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(robot)
            .cloned();
        let recheck = RECHECK.as_millis() as u64;
        let known = match cached {
            Some(k) => {
                let read_at = k.read_at.load(Ordering::Acquire);
                let fresh = now.saturating_sub(read_at) < recheck;
                // Once stale, one request reads the store again; the others go on with what
                // it said a moment ago. A secret that does not match is looked up again: it
                // may have replaced the one known, and a new secret works at once.
                let rereading = !fresh
                    && k.read_at
                        .compare_exchange(read_at, now, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok();
                if !rereading && k.matches(key, secret) {
                    return Ok(true);
                }
                // Checked against what is known, and not a match.
                let mismatched = !rereading;
                match self.read(store, robot, now, Some(&k)) {
                    Ok(Some(same)) if mismatched && Arc::ptr_eq(&same, &k) => return Ok(false),
                    Ok(k) => k,
                    // While the store is away, what it said last stays in force: robots go
                    // on getting the tokens the broker holds, as they do with every other
                    // part of the store missing.
                    Err(e) => {
                        tracing::warn!(
                            "robot `{robot}`: its secret's hash cannot be read again ({e}); the one read before stays in force"
                        );
                        if mismatched {
                            return Ok(false);
                        }
                        Some(k)
                    }
                }
            }
            None => self.read(store, robot, now, None)?,
        };
        Ok(known.is_some_and(|k| k.matches(key, secret)))
    }

    /// Read `robot`'s stored form; keep `before` when it is unchanged. The store is asked
    /// before the map is locked: requests checking other robots do not wait for it.
    fn read(
        &self,
        store: &dyn RobotSecrets,
        robot: &str,
        now: u64,
        before: Option<&Arc<Known>>,
    ) -> Result<Option<Arc<Known>>, StoreError> {
        let stored = store.robot_secret_hash(robot)?;
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        let Some(stored) = stored else {
            known.remove(robot);
            return Ok(None);
        };
        if let Some(k) = before.filter(|k| k.stored == stored) {
            k.read_at.store(now, Ordering::Release);
            return Ok(Some(k.clone()));
        }
        let k = Arc::new(Known {
            hashed: Hashed::parse(&stored),
            stored,
            matched: OnceLock::new(),
            read_at: AtomicU64::new(now),
        });
        known.insert(robot.to_string(), k.clone());
        Ok(Some(k))
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

    /// A store holding robot `ci`'s secret, and a check that has verified it once.
    fn verified() -> (
        tempfile::TempDir,
        credkeeper_store::SqliteStore,
        SecretCheck,
        Secret,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = credkeeper_store::SqliteStore::open(dir.path()).unwrap();
        let check = SecretCheck::default();
        let secret = new_secret(&store, "ci").unwrap();
        assert!(check.verify(&store, "ci", &secret).unwrap());
        (dir, store, check, secret)
    }

    #[test]
    fn a_secret_is_checked_against_the_store_and_a_wrong_one_never_passes_for_it() {
        let (_dir, store, check, secret) = verified();
        let wrong = Secret::new(format!("{}x", secret.expose()));
        for _ in 0..3 {
            assert!(check.verify(&store, "ci", &secret).unwrap());
            assert!(!check.verify(&store, "ci", &wrong).unwrap());
            assert!(!check.verify(&store, "ci", &Secret::new("")).unwrap());
            assert!(!check.verify(&store, "other", &secret).unwrap());
        }
    }

    #[test]
    fn a_replaced_secret_is_refused_after_the_recheck_and_its_successor_works_at_once() {
        let (_dir, store, check, old) = verified();
        let new = new_secret(&store, "ci").unwrap();
        // Nobody presents the new secret: the old one is refused all the same.
        std::thread::sleep(RECHECK + Duration::from_millis(50));
        assert!(!check.verify(&store, "ci", &old).unwrap());
        assert!(check.verify(&store, "ci", &new).unwrap());
        assert!(!check.verify(&store, "ci", &old).unwrap());
        // A secret replaced again works at once, without waiting for the recheck.
        let newer = new_secret(&store, "ci").unwrap();
        assert!(check.verify(&store, "ci", &newer).unwrap());
    }

    #[test]
    fn a_secret_whose_robot_lost_it_in_the_store_stops_after_the_recheck() {
        let (_dir, store, check, secret) = verified();
        store
            .set_robot_secret_hash("ci", "$sha256$garbage")
            .unwrap();
        std::thread::sleep(RECHECK + Duration::from_millis(50));
        assert!(!check.verify(&store, "ci", &secret).unwrap());
    }
}
