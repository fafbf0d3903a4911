//! What `POST /api/v1/token` speaks: the request a robot sends and the answer it gets, whose
//! JSON is written without looking at the token byte by byte.

use credkeeper_core::Secret;
use serde::{Deserialize, Serialize, Serializer};
use std::sync::Arc;

/// A token request (`POST /api/v1/token`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenAsk {
    /// A configured provider, or `local` (the default) for the broker's own issuer.
    #[serde(default)]
    pub provider: Option<String>,
    /// Space- or comma-separated.
    #[serde(default)]
    pub scopes: Option<String>,
    #[serde(default)]
    pub audience: Option<String>,
    /// Return a cached token only if it has at least this many seconds left.
    #[serde(default)]
    pub minsecs: Option<i64>,
    /// Ask for a shorter lifetime than the policy's longest.
    #[serde(default)]
    pub lifetime: Option<i64>,
}

/// No derived `Debug`: it holds the token; its `Debug` leaves the token out.
#[derive(Serialize)]
pub struct TokenGiven {
    /// Shared with the token cache: a cached vend copies it only into its answer.
    #[serde(serialize_with = "exposed")]
    pub access_token: Arc<Secret>,
    pub token_type: &'static str,
    pub expires_in: i64,
    /// Shared with the token cache, as the token is.
    #[serde(serialize_with = "text")]
    pub scope: Arc<str>,
    #[serde(serialize_with = "text")]
    pub audience: Arc<str>,
    pub provider: String,
}

impl std::fmt::Debug for TokenGiven {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenGiven")
            .field("access_token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .field("audience", &self.audience)
            .field("provider", &self.provider)
            .finish()
    }
}

/// The one place the answer's token is shown: in the answer.
fn exposed<S: Serializer>(token: &Arc<Secret>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(token.expose())
}

fn text<S: Serializer>(text: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(text)
}

/// [`TokenGiven`] without its token, serialized after it.
#[derive(Serialize)]
struct GivenRest<'a> {
    token_type: &'static str,
    expires_in: i64,
    scope: &'a str,
    audience: &'a str,
    provider: &'a str,
}

impl TokenGiven {
    /// The answer's JSON, as serde writes it. A JWT (base64url and dots) needs no escaping,
    /// so it is copied as it is rather than looked at byte by byte: most of a vend's
    /// serialization was that look.
    pub fn to_json(&self) -> Vec<u8> {
        let token = self.access_token.expose().as_bytes();
        let plain = token.iter().fold(true, |ok, b| {
            ok & (b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_' || *b == b'.')
        });
        let mut out = Vec::with_capacity(token.len() + 256);
        let rest = GivenRest {
            token_type: self.token_type,
            expires_in: self.expires_in,
            scope: &self.scope,
            audience: &self.audience,
            provider: &self.provider,
        };
        if plain {
            out.extend_from_slice(b"{\"access_token\":\"");
            out.extend_from_slice(token);
            out.extend_from_slice(b"\",");
            // `{"token_type":...}` without its opening brace.
            let at = out.len();
            let written = serde_json::to_writer(&mut out, &rest);
            if written.is_ok() && out.get(at) == Some(&b'{') {
                out.remove(at);
                return out;
            }
            out.clear();
        }
        // Serializing strings and integers into memory cannot fail.
        let _ = serde_json::to_writer(&mut out, self);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_answer_is_what_serde_writes() {
        for token in [
            "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_",
            "opaque \"quoted\"\n\\",
        ] {
            let given = TokenGiven {
                access_token: Arc::new(Secret::new(token)),
                token_type: "Bearer",
                expires_in: 599,
                scope: "read:/data \"x\"".into(),
                audience: "https://storage.example".into(),
                provider: "local".into(),
            };
            assert_eq!(
                String::from_utf8(given.to_json()).unwrap(),
                serde_json::to_string(&given).unwrap()
            );
        }
    }

    #[test]
    fn a_token_answer_never_shows_its_token_in_debug_output() {
        let given = TokenGiven {
            access_token: Arc::new(Secret::new("eyJhbGciOiJFUzI1NiJ9.c2VjcmV0.c2ln")),
            token_type: "Bearer",
            expires_in: 599,
            scope: "read:/data".into(),
            audience: "https://storage.example".into(),
            provider: "local".into(),
        };
        let shown = format!("{given:?} {:?}", Ok::<_, ()>(&given));
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        assert!(
            shown.contains("<redacted>") && shown.contains("read:/data"),
            "{shown}"
        );
    }
}
