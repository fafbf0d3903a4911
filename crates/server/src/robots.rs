//! Robot secrets: generated once, stored only as argon2id hashes, checked on every call.
//!
//! argon2 is slow on purpose; a robot calling every few seconds must not pay that each
//! time, so the last secret that verified for each robot is remembered as a SHA-256
//! digest in memory and compared in constant time.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use credkeeper_core::Secret;
use credkeeper_store::{CredentialStore, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Create a new random secret for `robot`, store its hash, and return the secret (the
/// only time it exists in clear).
pub fn new_secret(store: &dyn CredentialStore, robot: &str) -> Result<Secret, StoreError> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| StoreError::Backend {
        path: "(random)".into(),
        message: "the system random generator failed".into(),
    })?;
    let secret = Secret::new(URL_SAFE_NO_PAD.encode(bytes));
    let mut salt = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut salt);
    let phc = argon2::Argon2::default()
        .hash_password_with_salt(secret.expose().as_bytes(), &salt)
        .map_err(|e| StoreError::Backend {
            path: "(argon2)".into(),
            message: e.to_string(),
        })?
        .to_string();
    store.set_robot_secret_hash(robot, &phc)?;
    Ok(secret)
}

#[derive(Clone, Default)]
pub struct SecretCheck {
    verified: Arc<Mutex<HashMap<String, [u8; 32]>>>,
}

fn digest(secret: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes());
    d.as_ref().try_into().unwrap_or([0u8; 32])
}

impl SecretCheck {
    /// Whether `secret` is `robot`'s secret.
    pub async fn verify(
        &self,
        store: &Arc<dyn CredentialStore>,
        robot: &str,
        secret: &Secret,
    ) -> Result<bool, StoreError> {
        let presented = digest(secret.expose());
        if let Some(known) = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(robot)
            && aws_lc_rs::constant_time::verify_slices_are_equal(known, &presented).is_ok()
        {
            return Ok(true);
        }
        let Some(phc) = store.robot_secret_hash(robot)? else {
            return Ok(false);
        };
        let secret = secret.clone();
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&phc)
                .map(|h| {
                    argon2::Argon2::default()
                        .verify_password(secret.expose().as_bytes(), &h)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        if ok {
            self.verified
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(robot.to_string(), presented);
        }
        Ok(ok)
    }

    /// Forget what was verified for `robot` (after its secret was replaced).
    pub fn forget(&self, robot: &str) {
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(robot);
    }
}
