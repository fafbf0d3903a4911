//! Signing a token: a private key parsed once, and the JWS compact serialization
//! (RFC 7515 §7.1) of a header and claims under it.
//!
//! jsonwebtoken's `encode` parses the private key from its DER again for every signature,
//! which was a third of a freshly signed vend (bench/README.md); here the key pair is
//! parsed when the key is loaded, and each signature is the crypto alone.

use crate::{Algorithm, IssuerError, NotAKey};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

/// A private key ready to sign with its algorithm (ES256 with the fixed-size `r‖s`
/// signature JWS asks for, RS256 as PKCS#1 v1.5, EdDSA as Ed25519).
pub(crate) enum SigningKey {
    Es256(EcdsaKeyPair),
    Rs256(RsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

impl SigningKey {
    /// The key pair of `key` (PKCS#8 for EC and Ed25519, PKCS#1 for RSA, as jsonwebtoken
    /// holds them).
    pub(crate) fn of(key: &EncodingKey, algorithm: Algorithm) -> Result<SigningKey, NotAKey> {
        let der = key.as_bytes();
        let rejected = |expected| move |source| NotAKey::Rejected { expected, source };
        match algorithm {
            Algorithm::ES256 => EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                .map(SigningKey::Es256)
                .map_err(rejected("a P-256 key")),
            Algorithm::RS256 => RsaKeyPair::from_der(der)
                .map(SigningKey::Rs256)
                .map_err(rejected("an RSA key")),
            Algorithm::EdDSA => Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                .map(SigningKey::EdDsa)
                .map_err(rejected("an Ed25519 key")),
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, IssuerError> {
        let failed = |e: aws_lc_rs::error::Unspecified| IssuerError::Sign(e.to_string());
        match self {
            SigningKey::Es256(pair) => Ok(pair
                .sign(&SystemRandom::new(), message)
                .map_err(failed)?
                .as_ref()
                .to_vec()),
            SigningKey::Rs256(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    message,
                    &mut signature,
                )
                .map_err(failed)?;
                Ok(signature)
            }
            SigningKey::EdDsa(pair) => Ok(pair.sign(message).as_ref().to_vec()),
        }
    }
}

/// `base64url(header).base64url(claims).base64url(signature)`.
pub(crate) fn encode(
    header: &Header,
    claims: &impl Serialize,
    key: &SigningKey,
) -> Result<String, IssuerError> {
    encode_under(&encoded_header(header)?, claims, key)
}

/// `base64url(header)`, for [`encode_under`]: a key's tokens share it.
pub(crate) fn encoded_header(header: &Header) -> Result<String, IssuerError> {
    let json = serde_json::to_vec(header).map_err(|e| IssuerError::Sign(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}

/// [`encode`] under a header already encoded.
pub(crate) fn encode_under(
    encoded_header: &str,
    claims: &impl Serialize,
    key: &SigningKey,
) -> Result<String, IssuerError> {
    let claims = serde_json::to_vec(claims).map_err(|e| IssuerError::Sign(e.to_string()))?;
    let mut token = String::with_capacity(encoded_header.len() + claims.len() * 4 / 3 + 96);
    token.push_str(encoded_header);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(claims, &mut token);
    let signature = key.sign(token.as_bytes())?;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    Ok(token)
}
