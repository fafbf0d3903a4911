//! A JSON Web Token, decoded but not yet trusted (RFC 7519).
//!
//! Decoding needs no key: it is what `token inspect` shows and what `get` uses to decide
//! whether the token already in a file is still good. Trust comes from [`crate::verify`].

use crate::{ScopeSet, Secret, Timestamp};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// Why a text is not a usable JWT. Messages never contain the token itself.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("the token is empty")]
    Empty,
    #[error("not a JWT: expected three dot-separated parts, found {0}")]
    Parts(usize),
    #[error("not a JWT: the {0} is not base64url")]
    Base64(&'static str),
    #[error("not a JWT: the {0} is not a JSON object")]
    Json(&'static str),
    #[error("claim `{claim}` must be {expected}")]
    Claim {
        claim: &'static str,
        expected: &'static str,
    },
}

/// The audience claim: one string or a list (RFC 7519 §4.1.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audience(Vec<String>);

/// Audience values that mean "any relying party" in the WLCG and SciTokens profiles.
const ANY_AUDIENCE: &[&str] = &["https://wlcg.cern.ch/jwt/v1/any", "ANY"];

impl Audience {
    pub fn values(&self) -> &[String] {
        &self.0
    }

    /// Whether a relying party called `wanted` may accept this token.
    pub fn accepts(&self, wanted: &str) -> bool {
        self.0
            .iter()
            .any(|a| a == wanted || ANY_AUDIENCE.contains(&a.as_str()))
    }
}

/// A decoded JWT: header, claims, and the raw text kept as a [`Secret`].
#[derive(Clone, Debug)]
pub struct Jwt {
    raw: Secret,
    header: Map<String, Value>,
    claims: Map<String, Value>,
    audience: Audience,
}

impl Jwt {
    /// Decode a compact JWS. Surrounding whitespace (a file's trailing newline) is ignored.
    pub fn decode(text: &str) -> Result<Jwt, JwtError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(JwtError::Empty);
        }
        let parts: Vec<&str> = text.split('.').collect();
        if parts.len() != 3 {
            return Err(JwtError::Parts(parts.len()));
        }
        let header = decode_object(parts[0], "header")?;
        let claims = decode_object(parts[1], "payload")?;
        if URL_SAFE_NO_PAD.decode(parts[2]).is_err() {
            return Err(JwtError::Base64("signature"));
        }
        let audience = parse_audience(claims.get("aud"))?;
        let jwt = Jwt {
            raw: Secret::new(text),
            header,
            claims,
            audience,
        };
        // Fail early on claims of the wrong type, so the accessors can be total.
        for claim in ["exp", "nbf", "iat"] {
            jwt.time_claim(claim)?;
        }
        Ok(jwt)
    }

    /// The compact token, for sending it to where it is used.
    pub fn raw(&self) -> &Secret {
        &self.raw
    }

    pub fn header(&self) -> &Map<String, Value> {
        &self.header
    }

    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// `header.payload`: the bytes the signature covers.
    pub fn signing_input(&self) -> &str {
        let raw = self.raw.expose();
        &raw[..raw.rfind('.').expect("decode checked three parts")]
    }

    pub fn signature(&self) -> &str {
        let raw = self.raw.expose();
        &raw[raw.rfind('.').expect("decode checked three parts") + 1..]
    }

    pub fn alg(&self) -> Option<&str> {
        self.header.get("alg").and_then(Value::as_str)
    }

    pub fn kid(&self) -> Option<&str> {
        self.header.get("kid").and_then(Value::as_str)
    }

    pub fn str_claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    pub fn issuer(&self) -> Option<&str> {
        self.str_claim("iss")
    }

    pub fn subject(&self) -> Option<&str> {
        self.str_claim("sub")
    }

    pub fn expires(&self) -> Option<Timestamp> {
        self.time_claim("exp").ok().flatten()
    }

    pub fn not_before(&self) -> Option<Timestamp> {
        self.time_claim("nbf").ok().flatten()
    }

    pub fn issued_at(&self) -> Option<Timestamp> {
        self.time_claim("iat").ok().flatten()
    }

    /// Seconds left before `exp`; `None` for a token without `exp`.
    pub fn remaining(&self, now: Timestamp) -> Option<i64> {
        self.expires().map(|exp| exp.seconds_after(now))
    }

    /// The `aud` claim; an empty audience when the claim is absent.
    pub fn audience(&self) -> &Audience {
        &self.audience
    }

    /// The granted scopes: the `scope` string (RFC 8693 §4.2, WLCG, SciTokens 2) or the
    /// older `scp` list.
    pub fn scopes(&self) -> ScopeSet {
        match (self.claims.get("scope"), self.claims.get("scp")) {
            (Some(Value::String(s)), _) => ScopeSet::parse(s),
            (_, Some(Value::Array(items))) => {
                ScopeSet::from_list(items.iter().filter_map(Value::as_str))
            }
            (_, Some(Value::String(s))) => ScopeSet::parse(s),
            _ => ScopeSet::default(),
        }
    }

    fn time_claim(&self, name: &'static str) -> Result<Option<Timestamp>, JwtError> {
        match self.claims.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().map(|f| f as i64))
                .map(|s| Some(Timestamp::from_unix(s)))
                .ok_or(JwtError::Claim {
                    claim: name,
                    expected: "a number of seconds since 1970",
                }),
            Some(_) => Err(JwtError::Claim {
                claim: name,
                expected: "a number of seconds since 1970",
            }),
        }
    }
}

fn parse_audience(value: Option<&Value>) -> Result<Audience, JwtError> {
    let bad = JwtError::Claim {
        claim: "aud",
        expected: "a string or a list of strings",
    };
    match value {
        None | Some(Value::Null) => Ok(Audience(Vec::new())),
        Some(Value::String(s)) => Ok(Audience(vec![s.clone()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or(bad.clone()))
            .collect::<Result<_, _>>()
            .map(Audience),
        Some(_) => Err(bad),
    }
}

fn decode_object(part: &str, name: &'static str) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| JwtError::Base64(name))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(JwtError::Json(name)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn unsigned(header: Value, claims: Value) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    #[test]
    fn decodes_header_claims_and_times() {
        let t = unsigned(
            serde_json::json!({"alg": "ES256", "kid": "k1"}),
            serde_json::json!({"iss": "https://i", "exp": 2000, "iat": 1000.5, "aud": ["a", "b"], "scope": "read:/d"}),
        );
        let jwt = Jwt::decode(&format!("{t}\n")).unwrap();
        assert_eq!(jwt.alg(), Some("ES256"));
        assert_eq!(jwt.kid(), Some("k1"));
        assert_eq!(jwt.issuer(), Some("https://i"));
        assert_eq!(jwt.expires(), Some(Timestamp::from_unix(2000)));
        assert_eq!(jwt.issued_at(), Some(Timestamp::from_unix(1000)));
        assert_eq!(jwt.remaining(Timestamp::from_unix(1500)), Some(500));
        assert!(jwt.audience().accepts("b"));
        assert!(!jwt.audience().accepts("c"));
        assert_eq!(jwt.scopes().to_string(), "read:/d");
        assert_eq!(jwt.signature(), "c2ln");
    }

    #[test]
    fn malformed_tokens_get_a_reason_without_the_token() {
        assert_eq!(Jwt::decode("  \n").unwrap_err(), JwtError::Empty);
        assert_eq!(Jwt::decode("abc.def").unwrap_err(), JwtError::Parts(2));
        assert_eq!(
            Jwt::decode("a!b.c.d").unwrap_err(),
            JwtError::Base64("header")
        );
        let not_json = format!("{}.e30.", URL_SAFE_NO_PAD.encode("[1]"));
        assert_eq!(
            Jwt::decode(&not_json).unwrap_err(),
            JwtError::Json("header")
        );
        let bad_exp = unsigned(serde_json::json!({}), serde_json::json!({"exp": "soon"}));
        let err = Jwt::decode(&bad_exp).unwrap_err();
        assert!(err.to_string().contains("`exp`"), "{err}");
        let bad_aud = unsigned(serde_json::json!({}), serde_json::json!({"aud": 7}));
        assert!(Jwt::decode(&bad_aud).is_err());
    }

    #[test]
    fn any_audience_is_accepted_by_everyone() {
        let t = unsigned(
            serde_json::json!({}),
            serde_json::json!({"aud": "https://wlcg.cern.ch/jwt/v1/any"}),
        );
        assert!(Jwt::decode(&t).unwrap().audience().accepts("x"));
    }

    #[test]
    fn debug_output_never_holds_the_token() {
        let t = unsigned(serde_json::json!({}), serde_json::json!({}));
        let jwt = Jwt::decode(&t).unwrap();
        assert!(!format!("{jwt:?}").contains(&t));
    }
}
