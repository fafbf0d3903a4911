//! Tokens already handed out, by the request they answered: a request seen before finds
//! its token here, with the scope and audience the policy granted it, without the policy
//! being asked again (its decision depends only on the request and the configuration, which
//! does not change while the broker runs). The lookup borrows the request's names and the
//! entry is shared (`Arc`s), so a cached vend allocates nothing here; readers never wait for
//! each other.

use credkeeper_core::{Secret, Timestamp};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

/// The cache is an optimisation: past this many entries expired ones are swept, and if
/// that is not enough it starts over.
const CACHE_MAX: usize = 50_000;

/// What a robot asked for: robot, provider, and the scopes and audience as it sent them
/// (`None`: not sent, which the policy reads otherwise than an empty text).
pub(super) type Asked<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>);

/// An [`Asked`] owned, as the map keeps it.
struct Key(String, String, Option<String>, Option<String>);

/// What [`Key`] and a borrowed [`Asked`] have in common, so that one finds the other.
trait AsAsked {
    fn asked(&self) -> Asked<'_>;
}

impl AsAsked for Key {
    fn asked(&self) -> Asked<'_> {
        (&self.0, &self.1, self.2.as_deref(), self.3.as_deref())
    }
}

impl AsAsked for Asked<'_> {
    fn asked(&self) -> Asked<'_> {
        *self
    }
}

impl<'a> Borrow<dyn AsAsked + 'a> for Key {
    fn borrow(&self) -> &(dyn AsAsked + 'a) {
        self
    }
}

impl Hash for dyn AsAsked + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.asked().hash(state);
    }
}

impl PartialEq for dyn AsAsked + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.asked() == other.asked()
    }
}

impl Eq for dyn AsAsked + '_ {}

// The same hash and equality as its borrowed form, as `Borrow` requires.
impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self as &dyn AsAsked).hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.asked() == other.asked()
    }
}

impl Eq for Key {}

/// A token handed out, and what the policy granted with it.
#[derive(Clone)]
pub(super) struct Granted {
    pub token: Arc<Secret>,
    pub expires: Timestamp,
    pub scope: Arc<str>,
    pub audience: Arc<str>,
}

#[derive(Default)]
pub(super) struct TokenCache(RwLock<HashMap<Key, Granted>>);

impl TokenCache {
    /// What answered `asked` before, if its token still has `minsecs` (at least 1) to live.
    pub(super) fn get(&self, asked: Asked<'_>, minsecs: i64) -> Option<Granted> {
        let cache = self.0.read().unwrap_or_else(|p| p.into_inner());
        let granted = cache.get(&asked as &dyn AsAsked)?;
        (granted.expires.seconds_after(Timestamp::now()) >= minsecs.max(1)).then(|| granted.clone())
    }

    pub(super) fn put(&self, asked: Asked<'_>, granted: Granted) {
        let (robot, provider, scopes, audience) = asked;
        let key = Key(
            robot.into(),
            provider.into(),
            scopes.map(str::to_string),
            audience.map(str::to_string),
        );
        let mut cache = self.0.write().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX {
            let now = Timestamp::now();
            cache.retain(|_, granted| granted.expires > now);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, granted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_found_only_for_exactly_the_request_it_answered_and_while_it_lives() {
        let cache = TokenCache::default();
        let asked = ("ci", "local", Some("read:/data"), None);
        let granted = |token: &str, secs| Granted {
            token: Arc::new(Secret::new(token)),
            expires: Timestamp::now().plus_secs(secs),
            scope: "read:/data".into(),
            audience: "https://storage.example".into(),
        };
        let first = granted("t", 600);
        cache.put(asked, first.clone());
        let found = cache.get(asked, 60).unwrap();
        assert!(Arc::ptr_eq(&found.token, &first.token));
        assert_eq!(&*found.audience, "https://storage.example");
        assert!(cache.get(asked, 601).is_none(), "not enough left");
        for other in [
            ("cj", "local", Some("read:/data"), None),
            ("ci", "other", Some("read:/data"), None),
            ("ci", "local", Some("read:/data write:/data"), None),
            (
                "ci",
                "local",
                Some("read:/data"),
                Some("https://storage.example"),
            ),
            ("ci", "local", Some("read:/data"), Some("")),
            ("ci", "local", None, None),
            ("ci", "local", Some(""), None),
            // The same characters split otherwise are another request.
            ("cil", "ocal", Some("read:/data"), None),
        ] {
            assert!(cache.get(other, 0).is_none(), "{other:?}");
        }
        cache.put(asked, granted("u", 0));
        assert!(cache.get(asked, 0).is_none(), "expired");
    }
}
