//! credkeeper-issuer: the local issuer — a signing key, its JWKS and discovery document,
//! and tokens following the SciTokens 2.0 or WLCG 1.0 profile (or the bare claim set of
//! the scitokens-credmon's local mode).
//!
//! What it is for: minting tokens for the broker (`serve`) and for `credmon` local mode.
//! What it is not: policy. Who gets which scopes is decided by the caller.

use credkeeper_core::{Secret, Timestamp};
use jsonwebtoken::Header;
use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

mod jws;
mod keyfile;
mod x5c;

use jws::SigningKey;
use keyfile::{generate, parse};
pub use keyfile::{generate_pem, key_id_of};
pub use x5c::X5cSigner;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum Algorithm {
    #[default]
    ES256,
    RS256,
    EdDSA,
}

impl Algorithm {
    fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
            Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

/// The token-profile version claim a token carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionClaim {
    /// `ver: <value>`, e.g. `scitoken:2.0`.
    Ver(String),
    /// `wlcg.ver: <value>`, e.g. `1.0`.
    Wlcg(String),
}

/// What is wrong with a key file (or a key kept in the store).
#[derive(Debug, thiserror::Error)]
pub enum KeyProblem {
    #[error("not a {algorithm:?} private key in PEM: {reason}")]
    NotAKey {
        algorithm: Algorithm,
        reason: NotAKey,
    },
    #[error("its public key: {0}")]
    PublicKey(#[source] jsonwebtoken::errors::Error),
    #[error("cannot write a new key: {0}")]
    Generate(#[source] std::io::Error),
    #[error("{0}")]
    Certificates(#[source] rustls_pki_types::pem::Error),
    #[error("no PEM certificate in it")]
    NoCertificate,
}

/// Why a PEM holds no private key the algorithm can sign with.
#[derive(Debug, thiserror::Error)]
pub enum NotAKey {
    #[error("malformed PEM")]
    MalformedPem,
    /// A SEC1 `EC PRIVATE KEY` that is not on P-256.
    #[error("not a P-256 key")]
    NotP256,
    #[error("cannot convert the key")]
    Conversion,
    #[error(transparent)]
    Pem(#[from] jsonwebtoken::errors::Error),
    /// The crypto library refused it as the key type the algorithm needs.
    #[error("not {expected}: {source}")]
    Rejected {
        expected: &'static str,
        source: aws_lc_rs::error::KeyRejected,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error(transparent)]
    Permissions(#[from] credkeeper_sink::perm::PermError),
    #[error("issuer key file {path}: {problem}")]
    Key { path: PathBuf, problem: KeyProblem },
    #[error("signing failed: {0}")]
    Sign(String),
}

/// Where the key is and what the tokens look like.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The tokens' `iss`.
    pub url: String,
    pub algorithm: Algorithm,
    /// PKCS#8 (or, for EC, SEC1 `EC PRIVATE KEY`) PEM, mode 0600 or stricter.
    pub key_file: PathBuf,
    /// Create the key when the file does not exist.
    pub generate: bool,
    /// When generating, also write the public key (SubjectPublicKeyInfo PEM, 0644) here.
    pub public_key_file: Option<PathBuf>,
    /// Default: the RFC 7638 thumbprint of the public key.
    pub key_id: Option<String>,
    /// Longest lifetime, seconds.
    pub lifetime: i64,
    pub version: Option<VersionClaim>,
}

pub struct LocalIssuer {
    url: String,
    algorithm: Algorithm,
    /// Swapped whole when the keys rotate; signing takes a cheap `Arc` clone.
    keys: RwLock<Arc<Keys>>,
    lifetime: i64,
    version: Option<VersionClaim>,
}

/// The key tokens are signed with now, and every public key published beside it.
struct Keys {
    key: SigningKey,
    kid: String,
    /// The JWS header every token of this key carries, base64url-encoded once.
    header: String,
    jwks: Arc<JwkSet>,
}

/// A private key in PEM and the `kid` it goes by: one key of an issuer's set.
pub struct KeyPem<'a> {
    pub pem: &'a str,
    pub kid: &'a str,
}

/// What a signed token says.
pub struct Grant<'a> {
    pub subject: &'a str,
    pub scope: &'a str,
    /// The `aud` claim as it should appear (a string or a list); `None` for no `aud`.
    pub audience: Option<Value>,
    pub lifetime: i64,
}

impl LocalIssuer {
    pub fn open(settings: &Settings) -> Result<LocalIssuer, IssuerError> {
        let path = &settings.key_file;
        if settings.generate && !path.exists() {
            generate(
                path,
                settings.algorithm,
                settings.public_key_file.as_deref(),
            )
            .map_err(|e| IssuerError::Key {
                path: path.clone(),
                problem: KeyProblem::Generate(e),
            })?;
        }
        let pem = credkeeper_sink::perm::read_private(path, "issuer key file")?;
        LocalIssuer::from_pem(settings, &pem, path)
    }

    /// The issuer with the private key in `pem`; `origin` names where it came from in
    /// errors (a file, or the store).
    pub fn from_pem(
        settings: &Settings,
        pem: &str,
        origin: &Path,
    ) -> Result<LocalIssuer, IssuerError> {
        let kid = match &settings.key_id {
            Some(kid) => kid.clone(),
            None => key_id_of(pem, settings.algorithm, origin)?,
        };
        let keys = Keys::new(settings.algorithm, KeyPem { pem, kid: &kid }, &[], origin)?;
        Ok(LocalIssuer {
            url: settings.url.trim_end_matches('/').to_string(),
            algorithm: settings.algorithm,
            keys: RwLock::new(Arc::new(keys)),
            lifetime: settings.lifetime,
            version: settings.version.clone(),
        })
    }

    /// From now on sign with `signing`, and publish it and `also` (keys coming into use,
    /// or going out of it while tokens they signed are still valid) in the JWKS.
    pub fn use_keys(
        &self,
        signing: KeyPem<'_>,
        also: &[KeyPem<'_>],
        origin: &Path,
    ) -> Result<(), IssuerError> {
        let keys = Keys::new(self.algorithm, signing, also, origin)?;
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        Ok(())
    }

    fn keys(&self) -> Arc<Keys> {
        // A panic elsewhere cannot leave the `Arc` half-written.
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The `kid` tokens are signed with now.
    pub fn key_id(&self) -> String {
        self.keys().kid.clone()
    }

    pub fn lifetime(&self) -> i64 {
        self.lifetime
    }

    pub fn jwks(&self) -> Arc<JwkSet> {
        self.keys().jwks.clone()
    }

    /// OpenID Provider metadata, enough for relying parties to find the keys.
    pub fn discovery(&self) -> Value {
        json!({
            "issuer": self.url,
            "jwks_uri": format!("{}/jwks", self.url),
            "token_endpoint": format!("{}/api/v1/token", self.url),
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [format!("{:?}", self.algorithm.jwt())],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            "grant_types_supported": ["client_credentials"],
        })
    }

    /// Sign a token for `grant`, valid from now.
    pub fn sign(&self, grant: &Grant<'_>) -> Result<(Secret, Timestamp), IssuerError> {
        let now = Timestamp::now();
        let exp = now.plus_secs(grant.lifetime.min(self.lifetime));
        let jti = uuid4();
        let (ver, wlcg_ver) = match &self.version {
            Some(VersionClaim::Ver(v)) => (Some(v.as_str()), None),
            Some(VersionClaim::Wlcg(v)) => (None, Some(v.as_str())),
            None => (None, None),
        };
        let claims = Claims {
            aud: grant.audience.as_ref(),
            exp: exp.unix(),
            iat: now.unix(),
            iss: &self.url,
            jti: &jti,
            nbf: now.unix(),
            scope: grant.scope,
            sub: grant.subject,
            ver,
            wlcg_ver,
        };
        let keys = self.keys();
        let token = jws::encode_under(&keys.header, &claims, &keys.key)?;
        Ok((Secret::new(token), exp))
    }
}

/// A local token's claims, in the order a JSON map of them gives (alphabetical, as
/// `serde_json` sorts), written without building that map for every token.
#[derive(serde::Serialize)]
struct Claims<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a Value>,
    exp: i64,
    iat: i64,
    iss: &'a str,
    jti: &'a str,
    nbf: i64,
    scope: &'a str,
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ver: Option<&'a str>,
    #[serde(rename = "wlcg.ver", skip_serializing_if = "Option::is_none")]
    wlcg_ver: Option<&'a str>,
}

impl Keys {
    fn new(
        algorithm: Algorithm,
        signing: KeyPem<'_>,
        also: &[KeyPem<'_>],
        origin: &Path,
    ) -> Result<Keys, IssuerError> {
        let (key, jwk) = parse(signing.pem, algorithm, signing.kid, origin)?;
        let mut jwks = vec![jwk];
        for other in also.iter().filter(|k| k.kid != signing.kid) {
            jwks.push(parse(other.pem, algorithm, other.kid, origin)?.1);
        }
        let mut header = Header::new(algorithm.jwt());
        header.kid = Some(signing.kid.to_string());
        header.typ = Some("JWT".into());
        Ok(Keys {
            key,
            kid: signing.kid.to_string(),
            header: jws::encoded_header(&header)?,
            jwks: Arc::new(JwkSet { keys: jwks }),
        })
    }
}

/// A random (version 4) UUID, for `jti`.
pub fn new_jti() -> String {
    uuid4()
}

/// A random (version 4) UUID, as the scitokens library puts in `jti`.
fn uuid4() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut text = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        text.push(HEX[usize::from(byte >> 4)] as char);
        text.push(HEX[usize::from(byte & 0x0f)] as char);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use credkeeper_core::Jwt;
    use credkeeper_core::verify::{Expectations, Profile, verify};
    use std::os::unix::fs::PermissionsExt;

    fn settings(dir: &Path, algorithm: Algorithm, version: Option<VersionClaim>) -> Settings {
        Settings {
            url: "https://broker.example/".into(),
            algorithm,
            key_file: dir.join("key.pem"),
            generate: true,
            public_key_file: Some(dir.join("key.pub")),
            key_id: None,
            lifetime: 1200,
            version,
        }
    }

    #[test]
    fn a_rotated_issuer_signs_with_the_new_key_and_still_publishes_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), Algorithm::ES256, None);
        let issuer = LocalIssuer::open(&s).unwrap();
        let grant = Grant {
            subject: "ci",
            scope: "read:/d",
            audience: None,
            lifetime: 60,
        };
        let (old_token, _) = issuer.sign(&grant).unwrap();
        let old_pem = std::fs::read_to_string(&s.key_file).unwrap();
        let old_kid = issuer.key_id();
        let new_pem = generate_pem(Algorithm::ES256).unwrap();
        let new_kid = key_id_of(&new_pem, Algorithm::ES256, Path::new("new")).unwrap();
        assert_ne!(new_kid, old_kid);
        issuer
            .use_keys(
                KeyPem {
                    pem: &new_pem,
                    kid: &new_kid,
                },
                &[KeyPem {
                    pem: &old_pem,
                    kid: &old_kid,
                }],
                Path::new("store"),
            )
            .unwrap();
        let (new_token, _) = issuer.sign(&grant).unwrap();
        let jwks = issuer.jwks();
        let kids: Vec<_> = jwks
            .keys
            .iter()
            .map(|k| k.common.key_id.clone().unwrap())
            .collect();
        assert_eq!(kids, [new_kid.clone(), old_kid.clone()]);
        for (token, kid) in [(old_token, &old_kid), (new_token, &new_kid)] {
            let jwt = Jwt::decode(token.expose()).unwrap();
            assert_eq!(jwt.kid(), Some(kid.as_str()));
            verify(&jwt, &jwks, &Expectations::default(), Timestamp::now()).unwrap();
        }
        // Once the old key is dropped from the set, its tokens no longer verify.
        issuer
            .use_keys(
                KeyPem {
                    pem: &new_pem,
                    kid: &new_kid,
                },
                &[],
                Path::new("store"),
            )
            .unwrap();
        assert_eq!(issuer.jwks().keys.len(), 1);
    }

    #[test]
    fn each_algorithm_signs_tokens_its_own_jwks_verifies() {
        for (alg, version, profile) in [
            (
                Algorithm::ES256,
                Some(VersionClaim::Ver("scitoken:2.0".into())),
                Profile::SciTokens2,
            ),
            (
                Algorithm::RS256,
                Some(VersionClaim::Wlcg("1.0".into())),
                Profile::Wlcg1,
            ),
            (
                Algorithm::EdDSA,
                Some(VersionClaim::Ver("scitoken:2.0".into())),
                Profile::SciTokens2,
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let s = settings(dir.path(), alg, version);
            let issuer = LocalIssuer::open(&s).unwrap();
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&s.key_file), 0o600);
            assert_eq!(mode(s.public_key_file.as_ref().unwrap()), 0o644);
            let (token, _) = issuer
                .sign(&Grant {
                    subject: "ci",
                    scope: "read:/d",
                    audience: Some(json!("https://s")),
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
            let v = verify(&jwt, &issuer.jwks(), &expect, Timestamp::now())
                .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            assert_eq!(v.key_id.as_deref(), Some(issuer.key_id().as_str()));
            // The same key file gives the same key id on the next start.
            assert_eq!(LocalIssuer::open(&s).unwrap().key_id(), issuer.key_id());
        }
    }

    #[test]
    fn a_token_carries_its_header_and_claims_as_a_json_map_of_them_would_write_them() {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let dir = tempfile::tempdir().unwrap();
        for (version, extra) in [
            (None, json!({})),
            (
                Some(VersionClaim::Ver("scitoken:2.0".into())),
                json!({"ver": "scitoken:2.0"}),
            ),
            (
                Some(VersionClaim::Wlcg("1.0".into())),
                json!({"wlcg.ver": "1.0"}),
            ),
        ] {
            let issuer =
                LocalIssuer::open(&settings(dir.path(), Algorithm::ES256, version)).unwrap();
            for audience in [None, Some(json!("https://s")), Some(json!(["a", "b"]))] {
                let (token, exp) = issuer
                    .sign(&Grant {
                        subject: "ci",
                        scope: "read:/d \"x\"",
                        audience: audience.clone(),
                        lifetime: 60,
                    })
                    .unwrap();
                let parts: Vec<&str> = token.expose().split('.').collect();
                let part = |i: usize| {
                    String::from_utf8(URL_SAFE_NO_PAD.decode(parts[i]).unwrap()).unwrap()
                };
                let payload = part(1);
                let claims: serde_json::Map<String, Value> =
                    serde_json::from_str(&payload).unwrap();
                let jti = claims["jti"].as_str().unwrap();
                let iat = claims["iat"].as_i64().unwrap();
                let mut want = json!({
                    "sub": "ci",
                    "scope": "read:/d \"x\"",
                    "iss": issuer.url(),
                    "exp": exp.unix(),
                    "iat": iat,
                    "nbf": iat,
                    "jti": jti,
                });
                if let Some(aud) = &audience {
                    want["aud"] = aud.clone();
                }
                for (k, v) in extra.as_object().unwrap() {
                    want[k] = v.clone();
                }
                // Byte for byte what the map (keys in order) serializes to.
                assert_eq!(payload, want.to_string());
                let header: Value = serde_json::from_str(&part(0)).unwrap();
                assert_eq!(
                    header,
                    json!({"typ": "JWT", "alg": "ES256", "kid": issuer.key_id()})
                );
                // A version 4 UUID.
                let groups: Vec<usize> = jti.split('-').map(str::len).collect();
                assert_eq!(groups, [8, 4, 4, 4, 12], "{jti}");
                assert!(
                    jti.bytes()
                        .all(|b| b == b'-' || b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                );
                assert_eq!(&jti[14..15], "4");
                assert!("89ab".contains(&jti[19..20]), "{jti}");
            }
        }
        assert_ne!(uuid4(), uuid4());
    }

    #[test]
    fn a_key_file_the_algorithm_cannot_use_is_refused_naming_the_file_and_why() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            path
        };
        let open = |key_file: PathBuf, algorithm| {
            LocalIssuer::open(&Settings {
                key_file,
                generate: false,
                ..settings(dir.path(), algorithm, None)
            })
        };
        let garbage = write("garbage.pem", "-----BEGIN PRIVATE KEY-----\nnot base64\n");
        match open(garbage.clone(), Algorithm::ES256) {
            Err(IssuerError::Key {
                path,
                problem:
                    KeyProblem::NotAKey {
                        algorithm: Algorithm::ES256,
                        reason: NotAKey::Pem(_),
                    },
            }) => assert_eq!(path, garbage),
            other => panic!("a PEM that is not one: {:?}", other.err()),
        }
        let sec1 = write(
            "broken-sec1.pem",
            "-----BEGIN EC PRIVATE KEY-----\n%%%\n-----END EC PRIVATE KEY-----\n",
        );
        assert!(matches!(
            open(sec1, Algorithm::ES256),
            Err(IssuerError::Key {
                problem: KeyProblem::NotAKey {
                    reason: NotAKey::MalformedPem,
                    ..
                },
                ..
            })
        ));
        // An Ed25519 key where RS256 is configured: refused, not used for another algorithm.
        let ed = write("ed.pem", &generate_pem(Algorithm::EdDSA).unwrap());
        let err = open(ed.clone(), Algorithm::RS256).err().expect("refused");
        assert!(
            matches!(
                &err,
                IssuerError::Key {
                    problem: KeyProblem::NotAKey {
                        algorithm: Algorithm::RS256,
                        ..
                    },
                    ..
                }
            ),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.starts_with(&format!(
                "issuer key file {}: not a RS256 private key in PEM",
                ed.display()
            )),
            "{message}"
        );
    }

    #[test]
    fn sec1_ec_keys_as_scitokens_credmon_writes_them_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scitokens-private.pem");
        let out = std::process::Command::new("openssl")
            .args([
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
            ])
            .arg(&path)
            .status()
            .unwrap();
        assert!(out.success());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("BEGIN EC PRIVATE KEY")
        );
        let s = Settings {
            key_file: path,
            generate: false,
            key_id: Some("local".into()),
            ..settings(dir.path(), Algorithm::ES256, None)
        };
        let issuer = LocalIssuer::open(&s).unwrap();
        let (token, _) = issuer
            .sign(&Grant {
                subject: "bob",
                scope: "read:/user/bob",
                audience: None,
                lifetime: 1200,
            })
            .unwrap();
        let jwt = Jwt::decode(token.expose()).unwrap();
        assert_eq!(jwt.kid(), Some("local"));
        assert!(jwt.claims().get("aud").is_none() && jwt.claims().get("ver").is_none());
        let jti = jwt.str_claim("jti").unwrap();
        assert_eq!(jti.len(), 36);
        assert_eq!(&jti[14..15], "4");
        verify(
            &jwt,
            &issuer.jwks(),
            &Expectations::default(),
            Timestamp::now(),
        )
        .unwrap();
    }
}
