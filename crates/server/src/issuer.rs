//! The local issuer: a signing key, its JWKS and discovery document, and tokens that
//! follow the SciTokens 2.0 or WLCG 1.0 profile.

use crate::config::{Algorithm, IssuerSection, TokenProfile};
use aws_lc_rs::encoding::AsDer;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use credkeeper_core::{Secret, Timestamp};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error(transparent)]
    Permissions(#[from] credkeeper_store::perm::PermError),
    #[error("issuer key file {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("signing failed: {0}")]
    Sign(String),
}

pub struct LocalIssuer {
    url: String,
    alg: jsonwebtoken::Algorithm,
    key: EncodingKey,
    kid: String,
    jwks: JwkSet,
    lifetime: i64,
    profile: TokenProfile,
}

/// What a signed token says.
pub struct Grant<'a> {
    pub subject: &'a str,
    pub audience: &'a str,
    pub scope: &'a str,
    pub lifetime: i64,
}

impl LocalIssuer {
    /// Load the key from `section.key_file`, or from (creating it if needed)
    /// `<state_dir>/issuer-<alg>.pem`.
    pub fn open(
        section: &IssuerSection,
        url: &str,
        state_dir: &Path,
    ) -> Result<LocalIssuer, IssuerError> {
        let alg = match section.algorithm {
            Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
            Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        };
        let path = section
            .key_file
            .clone()
            .unwrap_or_else(|| state_dir.join(format!("issuer-{alg:?}.pem").to_lowercase()));
        let key_err = |message: String| IssuerError::Key {
            path: path.clone(),
            message,
        };
        if section.key_file.is_none() && !path.exists() {
            generate(&path, section.algorithm).map_err(|e| key_err(e.to_string()))?;
        }
        let pem = credkeeper_store::perm::read_private(&path, "issuer key file")?;
        let key = match section.algorithm {
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
        }
        .map_err(|e| key_err(format!("not a {alg:?} private key in PEM: {e}")))?;
        let mut jwk = Jwk::from_encoding_key(&key, alg).map_err(|e| key_err(e.to_string()))?;
        let kid = section.key_id.clone().unwrap_or_else(|| thumbprint(&jwk));
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        Ok(LocalIssuer {
            url: url.trim_end_matches('/').to_string(),
            alg,
            key,
            kid,
            jwks: JwkSet { keys: vec![jwk] },
            lifetime: section.lifetime,
            profile: section.profile,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn lifetime(&self) -> i64 {
        self.lifetime
    }

    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// OpenID Provider metadata, enough for relying parties to find the keys.
    pub fn discovery(&self) -> Value {
        json!({
            "issuer": self.url,
            "jwks_uri": format!("{}/jwks", self.url),
            "token_endpoint": format!("{}/api/v1/token", self.url),
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [format!("{:?}", self.alg)],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            "grant_types_supported": ["client_credentials"],
        })
    }

    /// Sign a token for `grant`, valid from now.
    pub fn sign(&self, grant: &Grant<'_>) -> Result<(Secret, Timestamp), IssuerError> {
        let now = Timestamp::now();
        let exp = now.plus_secs(grant.lifetime.min(self.lifetime));
        let mut claims = json!({
            "iss": self.url,
            "sub": grant.subject,
            "aud": grant.audience,
            "scope": grant.scope,
            "iat": now.unix(),
            "nbf": now.unix(),
            "exp": exp.unix(),
            "jti": random_id(),
        });
        match self.profile {
            TokenProfile::Scitokens => claims["ver"] = json!("scitoken:2.0"),
            TokenProfile::Wlcg => claims["wlcg.ver"] = json!("1.0"),
        }
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        let token = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| IssuerError::Sign(e.to_string()))?;
        Ok((Secret::new(token), exp))
    }
}

fn random_id() -> String {
    let mut b = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// RFC 7638 JWK thumbprint: SHA-256 over the required members in lexicographic order.
fn thumbprint(jwk: &Jwk) -> String {
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

/// Generate a PKCS#8 private key in a new 0600 PEM file.
fn generate(path: &Path, alg: Algorithm) -> std::io::Result<()> {
    let fail = |_| std::io::Error::other("key generation failed");
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let der: Vec<u8> = match alg {
        Algorithm::ES256 => aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .map_err(fail)?
        .as_ref()
        .to_vec(),
        Algorithm::EdDSA => aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8v1(&rng)
            .map_err(fail)?
            .as_ref()
            .to_vec(),
        Algorithm::RS256 => aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .map_err(fail)?
            .as_der()
            .map_err(fail)?
            .as_ref()
            .to_vec(),
    };
    let b64 = STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(pem.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use credkeeper_core::Jwt;
    use credkeeper_core::verify::{Expectations, Profile, verify};

    #[test]
    fn each_algorithm_signs_tokens_its_own_jwks_verifies() {
        for (alg, profile) in [
            (Algorithm::ES256, Profile::SciTokens2),
            (Algorithm::RS256, Profile::Wlcg1),
            (Algorithm::EdDSA, Profile::SciTokens2),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let section = IssuerSection {
                algorithm: alg,
                profile: if profile == Profile::Wlcg1 {
                    TokenProfile::Wlcg
                } else {
                    TokenProfile::Scitokens
                },
                ..Default::default()
            };
            let issuer =
                LocalIssuer::open(&section, "https://broker.example/", dir.path()).unwrap();
            let key_file = std::fs::read_dir(dir.path())
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path();
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
                0o600
            );
            let (token, _) = issuer
                .sign(&Grant {
                    subject: "ci",
                    audience: "https://s",
                    scope: "read:/d",
                    lifetime: 60,
                })
                .unwrap();
            let jwt = Jwt::decode(token.expose()).unwrap();
            let expect = Expectations {
                issuer: Some("https://broker.example".into()),
                audience: Some("https://s".into()),
                profile: Some(profile),
                ..Default::default()
            };
            let v = verify(&jwt, issuer.jwks(), &expect, Timestamp::now())
                .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            assert_eq!(v.key_id.as_deref(), Some(issuer.kid.as_str()));
            // The same key file gives the same key id on the next start.
            let again = LocalIssuer::open(&section, "https://broker.example", dir.path()).unwrap();
            assert_eq!(again.kid, issuer.kid);
        }
    }
}
