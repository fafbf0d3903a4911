//! What a caller asks a token source for: one request type, whatever the source.

use crate::{Scope, ScopeError, ScopeSet};
use serde::{Deserialize, Deserializer};
use std::fmt;

/// Requested scopes, read once where they enter (a flag, a config file, a task file): the
/// words as they will be sent, and the same words parsed for judging a token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scopes {
    text: String,
    set: ScopeSet,
}

impl Scopes {
    /// Scopes as people write them: separated by spaces, tabs, newlines or commas
    /// (htgettoken's `-S` takes commas). `None` when there is no scope in `text`.
    pub fn parse(text: &str) -> Option<Scopes> {
        let text = words(text).collect::<Vec<_>>().join(" ");
        (!text.is_empty()).then(|| Scopes {
            set: ScopeSet::parse(&text),
            text,
        })
    }

    /// Scopes asked of an issuer, which signs them as written: each word must pass
    /// [`Scope::requested`], and the first that does not is the error. Read in one pass, as
    /// a broker does for every request. `Ok(None)` when there is no scope in `text`.
    pub fn requested(text: &str) -> Result<Option<Scopes>, ScopeError> {
        let mut joined = String::with_capacity(text.len());
        let mut set = Vec::new();
        for word in words(text) {
            set.push(Scope::requested(word)?);
            if !joined.is_empty() {
                joined.push(' ');
            }
            joined.push_str(word);
        }
        Ok((!joined.is_empty()).then(|| Scopes {
            text: joined,
            set: set.into_iter().collect(),
        }))
    }

    /// Space-separated, as a request carries them (RFC 6749 §3.3).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn set(&self) -> &ScopeSet {
        &self.set
    }

    pub fn into_text(self) -> String {
        self.text
    }
}

/// The words of a scope list as people write it.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split([',', ' ', '\t', '\n']).filter(|w| !w.is_empty())
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scopes, D::Error> {
        let text = String::deserialize(d)?;
        Scopes::parse(&text).ok_or_else(|| serde::de::Error::custom("no scope given"))
    }
}

/// A token wanted from a source: the broker, an issuer, a Vault-API server, a task's route.
/// A field left `None` takes the source's own default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenAsk {
    /// A broker's provider (`local` for the broker's own issuer); only a broker has them.
    pub provider: Option<String>,
    pub scopes: Option<Scopes>,
    pub audience: Option<String>,
    /// Seconds the token must still be valid for when it is handed over.
    pub min_secs: i64,
}

impl TokenAsk {
    /// The scopes as a request carries them.
    pub fn scope_text(&self) -> Option<&str> {
        self.scopes.as_ref().map(Scopes::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_read_with_commas_or_spaces_and_sent_space_separated() {
        let s = Scopes::parse("read:/data, write:/data\topenid").unwrap();
        assert_eq!(s.as_str(), "read:/data write:/data openid");
        assert_eq!(s.set(), &ScopeSet::parse("read:/data write:/data openid"));
    }

    #[test]
    fn no_scope_at_all_is_not_a_request_for_none() {
        assert_eq!(Scopes::parse(""), None);
        assert_eq!(Scopes::parse(" ,, \n"), None);
    }

    #[test]
    fn a_task_file_s_scopes_are_parsed_as_they_are_read() {
        let s: Scopes = serde_json::from_str("\"storage.read:/ compute.create\"").unwrap();
        assert_eq!(s.to_string(), "storage.read:/ compute.create");
        assert!(serde_json::from_str::<Scopes>("\" \"").is_err());
    }
}
