//! The credentials kubelet's pulls carried, in memory only: keyed by registry host and
//! repository, each with an expiry, forgotten on `RemoveImage`. Never written anywhere.

use crate::wire::AuthConfig;
use base64::Engine;
use credkeeper_core::{Secret, Timestamp};
use credkeeper_registry::{Credential, host};
use std::collections::HashMap;
use std::sync::Mutex;

/// More entries than this: expired ones are swept, then the oldest forgotten.
const MAX: usize = 10_000;

struct Entry {
    credential: Credential,
    stored: Timestamp,
    expires: Timestamp,
}

pub struct Captured {
    ttl_secs: i64,
    entries: Mutex<HashMap<(String, String), Entry>>,
}

/// The credential an AuthConfig carries, as the keychain speaks it (`<token>` for an
/// identity token). A registry (access) token has no helper-protocol form: not kept.
pub fn credential(auth: &AuthConfig) -> Option<Credential> {
    if let Some(token) = &auth.identity_token {
        return Some(Credential {
            username: "<token>".into(),
            secret: token.clone(),
        });
    }
    if let Some(password) = &auth.password
        && !auth.username.is_empty()
    {
        return Some(Credential {
            username: auth.username.clone(),
            secret: password.clone(),
        });
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.auth.as_ref()?.expose())
        .ok()?;
    let (user, pass) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some(Credential {
        username: user.to_string(),
        secret: Secret::new(pass),
    })
}

impl Captured {
    pub fn new(ttl_secs: i64) -> Captured {
        Captured {
            ttl_secs,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keep what a successful pull of `image` used.
    pub fn keep(&self, image: &str, credential: Credential) {
        let now = Timestamp::now();
        let mut entries = self.lock();
        if entries.len() >= MAX {
            entries.retain(|_, e| e.expires > now);
            if entries.len() >= MAX
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, e)| e.stored)
                    .map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(
            host::reference(image),
            Entry {
                credential,
                stored: now,
                expires: now.plus_secs(self.ttl_secs),
            },
        );
    }

    /// Forget the credential of `image`'s repository (after `RemoveImage`).
    pub fn forget(&self, image: &str) -> bool {
        self.lock().remove(&host::reference(image)).is_some()
    }

    /// The credential for `server` (a host, or host/repository): that repository's, else
    /// the most recent pull's from that host. Expired entries are not answered.
    pub fn lookup(&self, server: &str) -> Option<Credential> {
        let now = Timestamp::now();
        let host = host::normalise(server);
        let entries = self.lock();
        if server.contains('/') {
            let key = host::reference(server);
            if let Some(e) = entries.get(&key).filter(|e| e.expires > now) {
                return Some(e.credential.clone());
            }
        }
        entries
            .iter()
            .filter(|((h, _), e)| *h == host && e.expires > now)
            .max_by_key(|((_, repo), e)| (e.stored, repo.clone()))
            .map(|(_, e)| e.credential.clone())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(user: &str) -> Credential {
        Credential {
            username: user.into(),
            secret: Secret::new("pw"),
        }
    }

    #[test]
    fn a_pulls_credential_is_kept_until_removed_or_expired() {
        let c = Captured::new(3600);
        c.keep("127.0.0.1:5000/test/hello:1", cred("a"));
        c.keep("127.0.0.1:5000/test/other:1", cred("b"));
        assert_eq!(c.lookup("127.0.0.1:5000/test/hello").unwrap().username, "a");
        // By host alone: the most recent pull's.
        assert_eq!(c.lookup("127.0.0.1:5000").unwrap().username, "b");
        assert!(c.lookup("elsewhere.example").is_none());
        assert!(c.forget("127.0.0.1:5000/test/other:2"));
        assert_eq!(c.lookup("127.0.0.1:5000").unwrap().username, "a");
        let expired = Captured::new(-1);
        expired.keep("127.0.0.1:5000/test/hello:1", cred("a"));
        assert!(expired.lookup("127.0.0.1:5000").is_none());
    }

    #[test]
    fn every_auth_form_becomes_a_keychain_credential() {
        let mut a = AuthConfig {
            username: "u".into(),
            password: Some(Secret::new("p")),
            ..Default::default()
        };
        assert_eq!(credential(&a).unwrap().username, "u");
        a.password = None;
        a.auth = Some(Secret::new(
            base64::engine::general_purpose::STANDARD.encode("v:q"),
        ));
        let c = credential(&a).unwrap();
        assert_eq!((c.username.as_str(), c.secret.expose()), ("v", "q"));
        a.identity_token = Some(Secret::new("idt"));
        assert_eq!(credential(&a).unwrap().username, "<token>");
        let only_registry_token = AuthConfig {
            registry_token: Some(Secret::new("rt")),
            ..Default::default()
        };
        assert!(credential(&only_registry_token).is_none());
    }
}
