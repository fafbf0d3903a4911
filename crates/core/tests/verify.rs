//! `verify` as a specification: what a relying party may trust, and the one-line reason
//! for everything it must not.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use credkeeper_core::verify::{Expectations, Profile, VerifyError, verify};
use credkeeper_core::{Jwt, ScopeSet, Timestamp};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const NOW: i64 = 1_800_000_000;
const ISS: &str = "https://issuer.example";

fn key(alg: Algorithm) -> EncodingKey {
    match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(include_bytes!("keys/es256.pem")),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(include_bytes!("keys/rs256.pem")),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(include_bytes!("keys/eddsa.pem")),
        _ => unreachable!(),
    }
    .unwrap()
}

fn jwk(alg: Algorithm, kid: &str) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(&key(alg), alg).unwrap();
    jwk.common.key_id = Some(kid.into());
    jwk
}

fn keyset() -> JwkSet {
    JwkSet {
        keys: vec![
            jwk(Algorithm::ES256, "ec"),
            jwk(Algorithm::RS256, "rsa"),
            jwk(Algorithm::EdDSA, "ed"),
        ],
    }
}

fn claims() -> Value {
    json!({
        "iss": ISS, "sub": "robot", "aud": "https://storage.example",
        "iat": NOW - 10, "nbf": NOW - 10, "exp": NOW + 600, "jti": "1",
        "scope": "storage.read:/data storage.create:/data/out",
        "wlcg.ver": "1.0",
    })
}

fn sign(alg: Algorithm, kid: &str, claims: &Value) -> Jwt {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    Jwt::decode(&jsonwebtoken::encode(&header, claims, &key(alg)).unwrap()).unwrap()
}

fn expect() -> Expectations {
    Expectations {
        issuer: Some(ISS.into()),
        leeway: 30,
        ..Default::default()
    }
}

fn check(jwt: &Jwt, e: &Expectations) -> Result<(), VerifyError> {
    verify(jwt, &keyset(), e, Timestamp::from_unix(NOW)).map(|_| ())
}

/// A token with an arbitrary header and the signature of a real one.
fn forge(header: Value, claims: &Value, signature: &str) -> Jwt {
    let text = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        signature
    );
    Jwt::decode(&text).unwrap()
}

#[test]
fn rs256_es256_and_eddsa_tokens_verify_against_the_jwks() {
    for (alg, kid) in [
        (Algorithm::ES256, "ec"),
        (Algorithm::RS256, "rsa"),
        (Algorithm::EdDSA, "ed"),
    ] {
        let v = verify(
            &sign(alg, kid, &claims()),
            &keyset(),
            &expect(),
            Timestamp::from_unix(NOW),
        )
        .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(v.key_id.as_deref(), Some(kid));
        assert_eq!(v.profile, Profile::Wlcg1);
    }
}

#[test]
fn a_changed_claim_breaks_the_signature() {
    let good = sign(Algorithm::ES256, "ec", &claims());
    let mut c = claims();
    c["sub"] = json!("someone-else");
    let tampered = forge(json!({"alg": "ES256", "kid": "ec"}), &c, good.signature());
    assert_eq!(check(&tampered, &expect()), Err(VerifyError::BadSignature));
}

#[test]
fn a_token_signed_by_another_key_is_refused() {
    let other = EncodingKey::from_ec_pem(include_bytes!("keys/other-es256.pem")).unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("ec".into());
    let jwt = Jwt::decode(&jsonwebtoken::encode(&header, &claims(), &other).unwrap()).unwrap();
    assert_eq!(check(&jwt, &expect()), Err(VerifyError::BadSignature));
}

#[test]
fn alg_none_is_refused() {
    let jwt = forge(json!({"alg": "none"}), &claims(), "");
    assert_eq!(check(&jwt, &expect()), Err(VerifyError::Unsigned));
}

#[test]
fn hs256_keyed_with_the_public_key_is_refused() {
    // The classic confusion: sign with HMAC using the issuer's public key as the secret.
    let public = serde_json::to_vec(&jwk(Algorithm::RS256, "rsa")).unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa".into());
    let text =
        jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&public)).unwrap();
    let err = check(&Jwt::decode(&text).unwrap(), &expect()).unwrap_err();
    assert_eq!(err, VerifyError::Symmetric("HS256".into()));
    assert!(err.to_string().contains("public-key algorithm"));
}

#[test]
fn an_algorithm_that_does_not_fit_the_key_is_refused() {
    let es = sign(Algorithm::ES256, "ec", &claims());
    let jwt = forge(
        json!({"alg": "RS256", "kid": "ec"}),
        &claims(),
        es.signature(),
    );
    assert!(matches!(
        check(&jwt, &expect()),
        Err(VerifyError::KeyMismatch { .. })
    ));
}

#[test]
fn an_unknown_key_id_is_named() {
    let jwt = sign(Algorithm::ES256, "rotated-away", &claims());
    assert_eq!(
        check(&jwt, &expect()),
        Err(VerifyError::UnknownKey("rotated-away".into()))
    );
}

#[test]
fn expiry_not_before_and_issued_at_allow_a_small_leeway() {
    let mut c = claims();
    c["exp"] = json!(NOW - 20);
    assert_eq!(check(&sign(Algorithm::ES256, "ec", &c), &expect()), Ok(()));
    c["exp"] = json!(NOW - 31);
    let err = check(&sign(Algorithm::ES256, "ec", &c), &expect()).unwrap_err();
    assert!(matches!(err, VerifyError::Expired { ago: 31, .. }), "{err}");
    assert!(
        err.to_string()
            .contains("expired at 2027-01-15T07:59:29Z (31 seconds ago)"),
        "{err}"
    );

    let mut c = claims();
    c["nbf"] = json!(NOW + 120);
    assert!(matches!(
        check(&sign(Algorithm::ES256, "ec", &c), &expect()),
        Err(VerifyError::NotYetValid(_))
    ));
    let mut c = claims();
    c["iat"] = json!(NOW + 120);
    assert!(matches!(
        check(&sign(Algorithm::ES256, "ec", &c), &expect()),
        Err(VerifyError::IssuedInFuture(_))
    ));
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        check(&sign(Algorithm::ES256, "ec", &c), &expect()),
        Err(VerifyError::NoExpiry)
    );
}

#[test]
fn issuer_audience_and_scope_are_checked() {
    let jwt = sign(Algorithm::RS256, "rsa", &claims());
    let mut e = expect();
    e.issuer = Some("https://elsewhere.example".into());
    assert!(matches!(check(&jwt, &e), Err(VerifyError::Issuer { .. })));

    let mut e = expect();
    e.audience = Some("https://storage.example".into());
    e.scopes = ScopeSet::parse("storage.read:/data/run1 storage.create:/data/out/x");
    assert_eq!(check(&jwt, &e), Ok(()));
    e.audience = Some("https://compute.example".into());
    assert!(matches!(check(&jwt, &e), Err(VerifyError::Audience { .. })));

    let mut e = expect();
    e.scopes = ScopeSet::parse("storage.read:/database");
    assert_eq!(
        check(&jwt, &e),
        Err(VerifyError::Scope("storage.read:/database".into()))
    );
}

#[test]
fn profiles_are_told_apart_and_their_claims_required() {
    let wlcg = sign(Algorithm::ES256, "ec", &claims());
    let mut e = expect();
    e.profile = Some(Profile::Wlcg1);
    assert_eq!(check(&wlcg, &e), Ok(()));
    e.profile = Some(Profile::SciTokens2);
    assert!(matches!(check(&wlcg, &e), Err(VerifyError::Profile { .. })));

    let mut c = claims();
    c.as_object_mut().unwrap().remove("wlcg.ver");
    c["ver"] = json!("scitoken:2.0");
    c.as_object_mut().unwrap().remove("aud");
    let sci = sign(Algorithm::ES256, "ec", &c);
    let err = check(&sci, &e).unwrap_err();
    assert_eq!(
        err,
        VerifyError::ProfileClaim {
            profile: "scitokens:2.0",
            claim: "aud"
        }
    );
}
