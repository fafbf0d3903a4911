//! What a caller asks of a token before it will use it without asking the issuer again.

use crate::{Jwt, ScopeSet, Timestamp};

/// Minimum lifetime, audience and scopes a token must have.
#[derive(Clone, Debug, Default)]
pub struct Requirements {
    pub min_secs: i64,
    /// The issuer the token must name (`iss`); `None` accepts any.
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub scopes: ScopeSet,
}

/// Why a token does not meet [`Requirements`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Shortfall {
    #[error("the token has no expiry (`exp`)")]
    NoExpiry,
    #[error("the token expired {} seconds ago", -.remaining)]
    Expired { remaining: i64 },
    #[error("the token has {remaining} seconds left, {wanted} wanted")]
    TooShort { remaining: i64, wanted: i64 },
    #[error("the token is not for audience {wanted}")]
    Audience { wanted: String },
    #[error("the token is from issuer {found}, not {wanted}")]
    Issuer { found: String, wanted: String },
    #[error("the token lacks scope {missing}")]
    Scopes { missing: String },
}

impl Requirements {
    pub fn check(&self, jwt: &Jwt, now: Timestamp) -> Result<(), Shortfall> {
        let remaining = jwt.remaining(now).ok_or(Shortfall::NoExpiry)?;
        if remaining <= 0 {
            return Err(Shortfall::Expired { remaining });
        }
        if remaining < self.min_secs {
            return Err(Shortfall::TooShort {
                remaining,
                wanted: self.min_secs,
            });
        }
        if let Some(wanted) = &self.issuer
            && jwt.issuer().map(|i| i.trim_end_matches('/')) != Some(wanted.trim_end_matches('/'))
        {
            return Err(Shortfall::Issuer {
                found: jwt.issuer().unwrap_or("nowhere").to_string(),
                wanted: wanted.clone(),
            });
        }
        if let Some(wanted) = &self.audience
            && !jwt.audience().accepts(wanted)
        {
            return Err(Shortfall::Audience {
                wanted: wanted.clone(),
            });
        }
        let missing = jwt.scopes().missing(&self.scopes);
        if !missing.is_empty() {
            let missing: Vec<String> = missing.iter().map(|s| s.to_string()).collect();
            return Err(Shortfall::Scopes {
                missing: missing.join(" "),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::tests::unsigned;
    use serde_json::json;

    fn token(claims: serde_json::Value) -> Jwt {
        Jwt::decode(&unsigned(json!({"alg": "RS256"}), claims)).unwrap()
    }

    #[test]
    fn a_fresh_token_with_the_right_audience_and_scopes_is_reused() {
        let jwt = token(json!({"exp": 5000, "aud": "https://s", "scope": "read:/d write:/d"}));
        let req = Requirements {
            min_secs: 3600,
            issuer: None,
            audience: Some("https://s".into()),
            scopes: ScopeSet::parse("read:/d/x"),
        };
        assert_eq!(req.check(&jwt, Timestamp::from_unix(1000)), Ok(()));
    }

    #[test]
    fn each_shortfall_is_named() {
        let now = Timestamp::from_unix(1000);
        let jwt = token(json!({"exp": 1500, "aud": "https://s", "scope": "read:/d"}));
        let mut req = Requirements {
            min_secs: 600,
            ..Default::default()
        };
        assert_eq!(
            req.check(&jwt, now),
            Err(Shortfall::TooShort {
                remaining: 500,
                wanted: 600
            })
        );
        req.min_secs = 0;
        req.audience = Some("https://other".into());
        assert!(matches!(
            req.check(&jwt, now),
            Err(Shortfall::Audience { .. })
        ));
        req.audience = None;
        req.issuer = Some("https://other-issuer".into());
        assert!(matches!(
            req.check(&jwt, now),
            Err(Shortfall::Issuer { .. })
        ));
        req.issuer = None;
        req.scopes = ScopeSet::parse("write:/d");
        assert_eq!(
            req.check(&jwt, now),
            Err(Shortfall::Scopes {
                missing: "write:/d".into()
            })
        );
        assert_eq!(
            req.check(&jwt, Timestamp::from_unix(1600)),
            Err(Shortfall::Expired { remaining: -100 })
        );
        assert_eq!(req.check(&token(json!({})), now), Err(Shortfall::NoExpiry));
    }
}
