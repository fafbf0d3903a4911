//! Verifying a JWT: signature against a JWK set, then time, issuer, audience, scope
//! and token profile.
//!
//! The order matters: nothing about the claims is believed before the signature holds.
//! Only asymmetric algorithms are accepted: `none` and HMAC (`HS*`) are refused outright,
//! which closes the "HS256 signed with the issuer's public key" confusion attack.

use crate::{Jwt, ScopeSet, Timestamp};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use std::str::FromStr;

/// The token profile a token claims through `ver` / `wlcg.ver`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// SciTokens 2.0 (`ver: scitoken:2.0`).
    SciTokens2,
    /// WLCG Common JWT Profile 1.0 (`wlcg.ver: "1.0"`).
    Wlcg1,
    /// Neither version claim present.
    Unspecified,
}

impl Profile {
    pub fn of(jwt: &Jwt) -> Profile {
        if jwt.str_claim("wlcg.ver") == Some("1.0") {
            Profile::Wlcg1
        } else if matches!(jwt.str_claim("ver"), Some("scitoken:2.0" | "scitokens:2.0")) {
            Profile::SciTokens2
        } else {
            Profile::Unspecified
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Profile::SciTokens2 => "scitokens:2.0",
            Profile::Wlcg1 => "wlcg:1.0",
            Profile::Unspecified => "unspecified",
        }
    }
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "scitokens" | "scitoken:2.0" | "scitokens:2.0" => Ok(Profile::SciTokens2),
            "wlcg" | "wlcg:1.0" | "1.0" => Ok(Profile::Wlcg1),
            _ => Err(format!("unknown profile `{s}` (use `scitokens` or `wlcg`)")),
        }
    }
}

/// What to check beyond the signature.
#[derive(Clone, Debug, Default)]
pub struct Expectations {
    /// `iss` must equal this exactly.
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub scopes: ScopeSet,
    pub profile: Option<Profile>,
    /// Allowed clock difference for `exp`, `nbf` and `iat`, in seconds.
    pub leeway: i64,
}

/// Why a token is not to be trusted. One line each; none contains the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("the token is unsigned (alg `none`)")]
    Unsigned,
    #[error("the token has no `alg` in its header")]
    NoAlgorithm,
    #[error(
        "algorithm {0} uses a shared secret; tokens from an issuer must be signed with a public-key algorithm (RS256, ES256, EdDSA)"
    )]
    Symmetric(String),
    #[error("algorithm `{0}` is not supported")]
    UnsupportedAlgorithm(String),
    #[error("no key with id `{0}` in the issuer's key set")]
    UnknownKey(String),
    #[error("the token names no key id and the issuer's key set has {0} keys for its algorithm")]
    AmbiguousKey(usize),
    #[error("key `{kid}` cannot be used with {alg}: {why}")]
    KeyMismatch {
        kid: String,
        alg: String,
        why: &'static str,
    },
    #[error("the signature does not match the issuer's key")]
    BadSignature,
    #[error("the token has no expiry (`exp`)")]
    NoExpiry,
    #[error("the token expired at {at} ({ago} seconds ago)")]
    Expired { at: Timestamp, ago: i64 },
    #[error("the token is not valid before {0}")]
    NotYetValid(Timestamp),
    #[error("the token was issued in the future ({0})")]
    IssuedInFuture(Timestamp),
    #[error("issuer is {}, expected {expected}", .found.as_deref().unwrap_or("missing"))]
    Issuer {
        found: Option<String>,
        expected: String,
    },
    #[error("audience {found:?} does not include {wanted}")]
    Audience { found: Vec<String>, wanted: String },
    #[error("scope {0} is not granted")]
    Scope(String),
    #[error("profile is {found}, expected {expected}")]
    Profile {
        found: &'static str,
        expected: &'static str,
    },
    #[error("the {profile} profile requires claim `{claim}`")]
    ProfileClaim {
        profile: &'static str,
        claim: &'static str,
    },
}

/// What a successful verification found out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub algorithm: String,
    pub key_id: Option<String>,
    pub profile: Profile,
}

/// The signing algorithm a token declares, if it is one we accept.
pub fn accepted_algorithm(jwt: &Jwt) -> Result<Algorithm, VerifyError> {
    let name = jwt.alg().ok_or(VerifyError::NoAlgorithm)?;
    if name.eq_ignore_ascii_case("none") {
        return Err(VerifyError::Unsigned);
    }
    let alg = Algorithm::from_str(name)
        .map_err(|_| VerifyError::UnsupportedAlgorithm(name.to_string()))?;
    if alg.family() == AlgorithmFamily::Hmac {
        return Err(VerifyError::Symmetric(name.to_string()));
    }
    Ok(alg)
}

/// Verify the signature of `jwt` with a key from `keys`, then check `expect`.
pub fn verify(
    jwt: &Jwt,
    keys: &JwkSet,
    expect: &Expectations,
    now: Timestamp,
) -> Result<Verified, VerifyError> {
    let alg = accepted_algorithm(jwt)?;
    let jwk = select_key(jwt, keys, alg)?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| VerifyError::KeyMismatch {
        kid: kid_of(jwk),
        alg: format!("{alg:?}"),
        why: "the key's parameters are malformed",
    })?;
    let ok =
        jsonwebtoken::crypto::verify(jwt.signature(), jwt.signing_input().as_bytes(), &key, alg)
            .unwrap_or(false);
    if !ok {
        return Err(VerifyError::BadSignature);
    }
    check_claims(jwt, expect, now)?;
    Ok(Verified {
        algorithm: format!("{alg:?}"),
        key_id: jwk.common.key_id.clone(),
        profile: Profile::of(jwt),
    })
}

fn kid_of(jwk: &Jwk) -> String {
    jwk.common
        .key_id
        .clone()
        .unwrap_or_else(|| "(no kid)".into())
}

fn select_key<'k>(jwt: &Jwt, keys: &'k JwkSet, alg: Algorithm) -> Result<&'k Jwk, VerifyError> {
    let jwk = match jwt.kid() {
        Some(kid) => keys
            .find(kid)
            .ok_or_else(|| VerifyError::UnknownKey(kid.to_string()))?,
        None => {
            let fitting: Vec<&Jwk> = keys
                .keys
                .iter()
                .filter(|k| key_fits(k, alg).is_ok())
                .collect();
            match fitting[..] {
                [one] => one,
                _ => return Err(VerifyError::AmbiguousKey(fitting.len())),
            }
        }
    };
    key_fits(jwk, alg).map_err(|why| VerifyError::KeyMismatch {
        kid: kid_of(jwk),
        alg: format!("{alg:?}"),
        why,
    })?;
    Ok(jwk)
}

/// A key fits an algorithm when its type, curve, declared `alg` and `use` all agree.
fn key_fits(jwk: &Jwk, alg: Algorithm) -> Result<(), &'static str> {
    if let Some(declared) = jwk.common.key_algorithm
        && !key_algorithm_is(declared, alg)
    {
        return Err("the key is declared for another algorithm");
    }
    if let Some(usage) = &jwk.common.public_key_use
        && *usage != jsonwebtoken::jwk::PublicKeyUse::Signature
    {
        return Err("the key is not for signatures");
    }
    let fits = match (&jwk.algorithm, alg.family()) {
        (AlgorithmParameters::RSA(_), AlgorithmFamily::Rsa) => true,
        (AlgorithmParameters::EllipticCurve(p), AlgorithmFamily::Ec) => matches!(
            (&p.curve, alg),
            (EllipticCurve::P256, Algorithm::ES256) | (EllipticCurve::P384, Algorithm::ES384)
        ),
        (AlgorithmParameters::OctetKeyPair(p), AlgorithmFamily::Ed) => {
            p.curve == EllipticCurve::Ed25519
        }
        _ => false,
    };
    if fits {
        Ok(())
    } else {
        Err("the key type or curve does not match")
    }
}

fn key_algorithm_is(declared: KeyAlgorithm, alg: Algorithm) -> bool {
    format!("{declared:?}") == format!("{alg:?}")
}

/// The token must name `expected` as its issuer. Checked before any key is fetched, so
/// a token claiming another issuer never makes us contact that issuer.
pub fn check_issuer(jwt: &Jwt, expected: &str) -> Result<(), VerifyError> {
    if jwt.issuer() == Some(expected) {
        Ok(())
    } else {
        Err(VerifyError::Issuer {
            found: jwt.issuer().map(str::to_string),
            expected: expected.to_string(),
        })
    }
}

fn check_claims(jwt: &Jwt, expect: &Expectations, now: Timestamp) -> Result<(), VerifyError> {
    let leeway = expect.leeway;
    let exp = jwt.expires().ok_or(VerifyError::NoExpiry)?;
    if exp.seconds_after(now) + leeway < 0 {
        return Err(VerifyError::Expired {
            at: exp,
            ago: now.seconds_after(exp),
        });
    }
    if let Some(nbf) = jwt.not_before()
        && nbf.seconds_after(now) > leeway
    {
        return Err(VerifyError::NotYetValid(nbf));
    }
    if let Some(iat) = jwt.issued_at()
        && iat.seconds_after(now) > leeway
    {
        return Err(VerifyError::IssuedInFuture(iat));
    }
    if let Some(expected) = &expect.issuer {
        check_issuer(jwt, expected)?;
    }
    let audience = jwt.audience();
    if let Some(wanted) = &expect.audience
        && !audience.accepts(wanted)
    {
        return Err(VerifyError::Audience {
            found: audience.values().to_vec(),
            wanted: wanted.clone(),
        });
    }
    if let Some(first) = jwt.scopes().missing(&expect.scopes).first() {
        return Err(VerifyError::Scope(first.to_string()));
    }
    if let Some(wanted) = expect.profile {
        check_profile(jwt, wanted, audience.values().is_empty())?;
    }
    Ok(())
}

fn check_profile(jwt: &Jwt, wanted: Profile, no_audience: bool) -> Result<(), VerifyError> {
    let found = Profile::of(jwt);
    if found != wanted {
        return Err(VerifyError::Profile {
            found: found.name(),
            expected: wanted.name(),
        });
    }
    let required: &[&'static str] = match wanted {
        Profile::SciTokens2 => &["scope"],
        Profile::Wlcg1 => &["sub", "iat", "jti"],
        Profile::Unspecified => &[],
    };
    let missing_aud = no_audience && wanted != Profile::Unspecified;
    if missing_aud {
        return Err(VerifyError::ProfileClaim {
            profile: wanted.name(),
            claim: "aud",
        });
    }
    match required.iter().find(|c| !jwt.claims().contains_key(**c)) {
        Some(claim) => Err(VerifyError::ProfileClaim {
            profile: wanted.name(),
            claim,
        }),
        None => Ok(()),
    }
}
