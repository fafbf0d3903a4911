//! Key files: reading a private key PEM (PKCS#8, PKCS#1, or SEC1 as scitokens-credmon
//! writes it) into a signing key and its public JWK, the RFC 7638 thumbprint that names a
//! key, and new keys written 0600.

use crate::jws::SigningKey;
use crate::{Algorithm, IssuerError, KeyProblem, NotAKey};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::KeyPair;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::EncodingKey;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use serde_json::Value;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The private key in `pem` and its public JWK under `kid`.
pub(crate) fn parse(
    pem: &str,
    algorithm: Algorithm,
    kid: &str,
    origin: &Path,
) -> Result<(SigningKey, Jwk), IssuerError> {
    let alg = algorithm.jwt();
    let key_err = |problem: KeyProblem| IssuerError::Key {
        path: origin.to_path_buf(),
        problem,
    };
    let not_a_key = |reason| key_err(KeyProblem::NotAKey { algorithm, reason });
    let key = load_key(pem, algorithm).map_err(not_a_key)?;
    let mut jwk =
        Jwk::from_encoding_key(&key, alg).map_err(|e| key_err(KeyProblem::PublicKey(e)))?;
    jwk.common.key_id = Some(kid.to_string());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok((SigningKey::of(&key, algorithm).map_err(not_a_key)?, jwk))
}

/// The RFC 7638 thumbprint of the key in `pem`: the `kid` a key gets unless one is set.
pub fn key_id_of(pem: &str, algorithm: Algorithm, origin: &Path) -> Result<String, IssuerError> {
    let (_, jwk) = parse(pem, algorithm, "", origin)?;
    Ok(thumbprint(&jwk))
}

/// Parse a private key PEM. SEC1 `EC PRIVATE KEY` files (what scitokens-credmon and
/// `openssl ecparam -genkey` write) are converted to PKCS#8, which is what the JWT
/// library reads.
pub(crate) fn load_key(pem: &str, alg: Algorithm) -> Result<EncodingKey, NotAKey> {
    if pem.contains("-----BEGIN EC PRIVATE KEY-----") {
        let der = pem_body(pem, "EC PRIVATE KEY").ok_or(NotAKey::MalformedPem)?;
        let pair = aws_lc_rs::signature::EcdsaKeyPair::from_private_key_der(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &der,
        )
        .map_err(|_| NotAKey::NotP256)?;
        let pkcs8 = pair.to_pkcs8v1().map_err(|_| NotAKey::Conversion)?;
        return Ok(EncodingKey::from_ec_der(pkcs8.as_ref()));
    }
    Ok(match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
    }?)
}

pub(crate) fn pem_body(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = pem[start..].find(&end)? + start;
    let b64: String = pem[start..stop].split_whitespace().collect();
    STANDARD.decode(b64).ok()
}

pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

/// RFC 7638 JWK thumbprint: SHA-256 over the required members in lexicographic order.
pub(crate) fn thumbprint(jwk: &Jwk) -> String {
    let v = serde_json::to_value(jwk).unwrap_or_default();
    let members: &[&str] = match v.get("kty").and_then(Value::as_str) {
        Some("RSA") => &["e", "kty", "n"],
        Some("EC") => &["crv", "kty", "x", "y"],
        _ => &["crv", "kty", "x"],
    };
    // serde_json's map is ordered by key, which is the order RFC 7638 asks for.
    let required: serde_json::Map<String, Value> = members
        .iter()
        .filter_map(|m| v.get(*m).map(|x| (m.to_string(), x.clone())))
        .collect();
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        Value::Object(required).to_string().as_bytes(),
    );
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

pub(crate) fn create_new(path: &Path, mode: u32, contents: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

/// A new private key for `alg`, as PKCS#8 PEM.
pub fn generate_pem(alg: Algorithm) -> std::io::Result<String> {
    let (private, _) = generate_der(alg)?;
    Ok(pem_encode("PRIVATE KEY", &private))
}

/// Generate a private key in a new 0600 PKCS#8 PEM file, and its public key (0644) when
/// asked.
pub(crate) fn generate(path: &Path, alg: Algorithm, public: Option<&Path>) -> std::io::Result<()> {
    let (private, public_der) = generate_der(alg)?;
    create_new(path, 0o600, &pem_encode("PRIVATE KEY", &private))?;
    if let Some(public) = public {
        let _ = std::fs::remove_file(public);
        create_new(public, 0o644, &pem_encode("PUBLIC KEY", &public_der))?;
    }
    Ok(())
}

/// A new key pair: PKCS#8 private key and SubjectPublicKeyInfo, DER.
pub(crate) fn generate_der(alg: Algorithm) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    fn fail<E>(_: E) -> std::io::Error {
        std::io::Error::other("key generation failed")
    }
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let (private, public_der): (Vec<u8>, Vec<u8>) = match alg {
        Algorithm::ES256 => {
            let alg = &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
            let doc =
                aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).map_err(fail)?;
            let pair =
                aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(alg, doc.as_ref()).map_err(fail)?;
            let spki = pair.public_key().as_der().map_err(fail)?.as_ref().to_vec();
            (doc.as_ref().to_vec(), spki)
        }
        Algorithm::EdDSA => {
            let doc = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8v1(&rng).map_err(fail)?;
            let pair =
                aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(fail)?;
            let spki = pair.public_key().as_der().map_err(fail)?.as_ref().to_vec();
            (doc.as_ref().to_vec(), spki)
        }
        Algorithm::RS256 => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(fail)?;
            let private = pair.as_der().map_err(fail)?.as_ref().to_vec();
            let spki = pair.public_key().as_der().map_err(fail)?.as_ref().to_vec();
            (private, spki)
        }
    };
    Ok((private, public_der))
}
